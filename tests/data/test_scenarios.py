"""Truth scenarios: exact flux bookkeeping on every family, determinism, the physics
each scenario promises (OU statistics, N-dependent eddies, equilibrium, convection)."""
import json
import math

import numpy as np
import pytest
import torch

from meshclosure.data.random_flows import OrnsteinUhlenbeck, mode_basis
from meshclosure.data.scenarios import (SCENARIOS, KinematicScenario, Scenario, get_scenario,
                                        ood_seed)
from meshclosure.fv import divergence
from meshclosure.testing import small_meshes

TINY = {
    ("kinematic", "cartesian"): dict(mesh="cartesian:16", factor=4),
    ("kinematic", "healpix"): dict(mesh="healpix:4", factor=2),
    ("kinematic", "icosahedral"): dict(mesh="icosahedral:2", factor=2),
    ("kinematic", "cubed"): dict(mesh="cubed:4", factor=2),
    ("barotropic", "cartesian"): dict(mesh="cartesian:16", factor=4),
    ("barotropic", "healpix"): dict(mesh="healpix:4", factor=2),
    ("barotropic", "icosahedral"): dict(mesh="icosahedral:2", factor=2),
    ("barotropic", "cubed"): dict(mesh="cubed:4", factor=2),
    ("convection", "slice"): dict(mesh="cartesian:16x8", factor=2),
}
_BUILT = {}


def tiny(key, **extra):
    k = (key, tuple(sorted(extra.items())))
    if k not in _BUILT:
        _BUILT[k] = get_scenario(key[0], **TINY[key], **extra)
    return _BUILT[k]


def _evolved(s: Scenario, n: int = 6):
    """A state a few steps in (not the special initial one)."""
    t, st = s.advance(0.0, s.initial_state(), n)
    return t, st


def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


@pytest.mark.parametrize("key", list(TINY), ids=lambda k: "-".join(k))
def test_flux_bookkeeping_is_exact(key):
    s = tiny(key)
    t, st = _evolved(s)
    fine, coarse, c = s.fine, s.coarse, s.coarsening
    U = s.transport(t, st)
    # the fine flow is exactly non-divergent, and so is its restriction
    scale = float((U.abs() / fine.face_area).max())
    assert float(divergence(fine, U).abs().max()) < 1e-12 * scale / _dx(fine)
    Uc = c.restrict_flux(U)
    assert float(divergence(coarse, Uc).abs().max()) < 1e-12 * scale / _dx(fine)
    flux = s.resolved_fluxes(fine, t, st, U)
    bflux = s.boundary_fluxes(fine, t, st)
    assert set(flux) == set(s.variables)
    rhs, src = s.rhs(t, st), s.sources(t, st)
    for v in s.variables:
        bf = None if bflux is None else bflux[v]
        tend = -divergence(fine, flux[v], bf)
        # resolved fluxes + sources reproduce the model's own tendency
        assert _rel(tend + src[v], rhs[v]) < 1e-12, v
        # the flux part conserves the total: Σ V (−div Φ) = −Σ boundary flux
        total = float((fine.cell_volume * tend).sum())
        expected = 0.0 if bf is None else -float(bf.sum())
        ref = float((fine.cell_volume * tend.abs()).sum())
        assert abs(total - expected) < 1e-12 * ref, v
        # restrict(−div_fine Φ) = −div_coarse(restrict_flux Φ) (DESIGN §5)
        bfc = None if bf is None else c.restrict_boundary_flux(bf)
        assert _rel(c.restrict(tend), -divergence(coarse, c.restrict_flux(flux[v]), bfc)) < 1e-12
    # the coarse resolved flux exists on the coarse mesh and differs from the restricted
    # fine flux (a non-zero subgrid flux), and the identity holds for Φ^sgs
    stc = {k: c.restrict(x) for k, x in st.items()}
    flux_c = s.resolved_fluxes(coarse, t, stc, Uc)
    for v in s.variables:
        sgs = c.restrict_flux(flux[v]) - flux_c[v]
        assert torch.isfinite(sgs).all()
        assert float(sgs.abs().max()) > 1e-6 * float(flux_c[v].abs().max() + 1e-300), v
        s_sgs = c.restrict(-divergence(fine, flux[v])) + divergence(coarse, flux_c[v])
        assert _rel(s_sgs, -divergence(coarse, sgs)) < 1e-11
    inputs_f = s.resolved_inputs(fine, t, st, U)
    inputs_c = s.resolved_inputs(coarse, t, stc, Uc)
    for name, x in inputs_c.items():
        assert x.shape == (coarse.n_cells,) and inputs_f[name].shape == (fine.n_cells,)
        assert torch.isfinite(x).all()


def _dx(mesh):
    return float(mesh.cell_distance.min())


@pytest.mark.parametrize("name", ["kinematic", "barotropic", "convection"])
def test_determinism(name):
    fam = "slice" if name == "convection" else "cartesian"
    short = {"spinup_time": 0.05} if name != "barotropic" else {
        "spinup_min_time": 0.1, "spinup_window": 0.2, "spinup_max_time": 0.4,
        "spinup_tol": 10.0, "diagnostic_every": 0.01, "spinup_check": 0.01}

    def run(seed):
        s = get_scenario(name, **TINY[(name, fam)], seed=seed, **short)
        t, st = s.spin_up(s.initial_state())
        return s.advance(t, st, 3)[1]

    a, b, c = run(3), run(3), run(4)
    for v in a:
        assert torch.equal(a[v], b[v]), v
    assert any(not torch.allclose(a[v], c[v]) for v in a)


def test_kinematic_healpix_determinism_and_config_round_trip():
    s = tiny(("kinematic", "healpix"))
    s2 = Scenario.from_config(json.loads(json.dumps(s.config)))
    assert s2.config == s.config
    a = s.advance(0.0, s.initial_state(), 4)[1]["q"]
    b = s2.advance(0.0, s2.initial_state(), 4)[1]["q"]
    assert torch.equal(a, b)


def test_ou_variance_and_correlation_time():
    sigma = np.linspace(0.5, 2.0, 400)
    tau, h = 0.2, 0.02
    ou = OrnsteinUhlenbeck(sigma, tau, h, seed=[7, 1])
    a = np.stack([ou.sample(n) for n in range(3000)])          # (time, mode)
    var = (a**2).mean(0) / sigma**2
    assert abs(var.mean() - 1) < 0.03                        # ±3 % (expected scatter ~1 %)
    z = a / sigma
    for lag in (1, 5, 10):
        r = (z[lag:] * z[:-lag]).mean() / (z * z).mean()
        assert abs(r - math.exp(-lag * h / tau)) < 0.02, lag
    rho1 = (z[1:] * z[:-1]).mean() / (z * z).mean()
    assert abs(-h / math.log(rho1) / tau - 1) < 0.05           # correlation time ±5 %
    # replay: asking for an old sample regenerates the same stream
    assert np.array_equal(ou.sample(5), a[5])
    assert np.array_equal(ou(5.5 * h), 0.5 * (a[5] + a[6]))


def test_kinematic_eddy_intensity_follows_N():
    s = get_scenario("kinematic", "cartesian:32", factor=4)
    m = s.fine
    from meshclosure.fv import transport_from_streamfunction

    u2, g2 = [], []
    for k in range(12):
        t = 0.41 * k
        U = transport_from_streamfunction(m, s.psi_vertex(t, ("small",)))
        u2.append((U / m.face_area) ** 2)
        g2.append(s.modulation(s.N(m.face_center, t), s.params["N0"]) ** 2)
    u2, g2 = torch.cat(u2), torch.cat(g2)
    edges = torch.quantile(g2, torch.linspace(0, 1, 5, dtype=torch.float64))
    means = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (g2 >= lo) & (g2 <= hi)
        means.append(float(u2[sel].mean()))
        # normal-velocity variance = g(N)² u_small² / 2 within 20 %
        assert abs(float(u2[sel].mean() / g2[sel].mean()) / (s.params["u_small"] ** 2 / 2)
                   - 1) < 0.2
    assert all(b > a for a, b in zip(means, means[1:]))
    assert means[-1] > 3 * means[0]
    # documented K(N): increasing, saturating, not a power law
    N = torch.tensor([0.25, 0.5, 1.0, 2.0, 4.0], dtype=torch.float64)
    K = s.eddy_diffusivity(N)
    assert torch.all(K[1:] > K[:-1])
    slopes = torch.diff(torch.log(K)) / torch.diff(torch.log(N))
    assert slopes[0] > 1.7 and slopes[-1] < 0.3            # 2/(1 + N²) at both ends


def test_barotropic_spin_up_reaches_equilibrium():
    s = tiny(("barotropic", "cartesian"))
    t, st = s.spin_up(s.initial_state())
    info = s.spinup_info
    assert info["converged"] is True and t == pytest.approx(info["t"])
    p = s.params
    assert t >= p["spinup_min_time"] + p["spinup_window"] - 1e-9 and t < p["spinup_max_time"]
    assert info["window"] == p["spinup_window"] and info["tolerance"] == p["spinup_tol"]
    for k in ("energy", "enstrophy"):
        # no drift beyond the tolerance, AND measured precisely enough to see one
        assert info[f"{k}_trend"] + p["spinup_sigmas"] * info[f"{k}_trend_se"] <= p["spinup_tol"]
        assert 2 * info[f"{k}_trend_se"] <= p["spinup_tol"]
    # the reported energy is the window mean of a real, grown flow (initial noise: tiny E)
    assert info["energy"] > 100 * info["energy_series"][0] > 0
    assert info["energy"] == pytest.approx(np.mean([e for tt, e in zip(info["times"],
                                                    info["energy_series"])
                                                    if tt > t - p["spinup_window"] + 1e-9]))
    json.dumps({k: v for k, v in info.items()})


def test_barotropic_spin_up_warns_when_not_flat():
    s = get_scenario("barotropic", **TINY[("barotropic", "cartesian")], spinup_min_time=0.2,
                     spinup_window=0.2, spinup_max_time=0.4, spinup_tol=0.0, spinup_check=0.05)
    with pytest.warns(RuntimeWarning, match="did not reach equilibrium"):
        s.spin_up(s.initial_state())
    assert not s.spinup_info["converged"]


def test_convection_heats_deepens_and_stratifies():
    # without the relaxation (relax_rate=0) the buoyancy budget is the wall fluxes only
    s = get_scenario("convection", "cartesian:32x16", factor=2, relax_rate=0.0)
    st0 = s.initial_state()
    h0 = s.mixed_layer_depth(st0)
    t, st = s.spin_up(st0)
    assert s.spinup_info["converged"] is None                  # a fixed time checks nothing
    t, st = s.advance(t, st, int(round(3.0 / s.dt)))
    V = s.fine.cell_volume
    gained = float((V * st["b"]).sum() - (V * st0["b"]).sum())
    p = s.params
    expected = (p["buoyancy_flux"] + p["kappa"] * p["stratification"]) * s.fine.info["lx"] * t
    assert abs(gained - expected) < 1e-12 * float((V * st["b"].abs()).sum())
    assert s.mixed_layer_depth(st) > h0 + 0.05
    U = s.transport(t, st)
    stc = {"b": s.coarsening.restrict(st["b"])}
    n2 = s.resolved_inputs(s.coarse, t, stc, s.coarsening.restrict_flux(U))["N2"]
    z = s.coarse.cell_center[:, 1]
    N2 = s.params["stratification"]
    assert torch.all(n2[z > 0.85] > 0.3 * N2)                  # stable layer above
    assert float(n2[z < 0.2].max()) < 0.1 * N2                 # convective layer below
    # the eddy flux carries buoyancy upward in the convective layer: Φ^sgs > 0 there
    flux = s.resolved_fluxes(s.fine, t, st, U)["b"]
    sgs = s.coarsening.restrict_flux(flux) - s.resolved_fluxes(
        s.coarse, t, stc, s.coarsening.restrict_flux(U))["b"]
    zf = s.coarse.face_center[:, 1]
    assert float(sgs[zf < 0.3].mean()) > 0
    # the coarse column transport is zero through every level
    assert float(s.coarsening.restrict_flux(U).abs().max()) < 1e-12 * float(U.abs().max())


def test_ood_changes_the_documented_parameter():
    for (name, fam), key in ((("kinematic", "cartesian"), "N_mean"),
                             (("barotropic", "cartesian"), "epsilon"),
                             (("convection", "slice"), "buoyancy_flux")):
        s = tiny((name, fam))
        o = s.ood()
        factor = {"N_mean": 2.0, "epsilon": 4.0, "buoyancy_flux": 2.0}[key]
        assert o.config[key] == pytest.approx(factor * s.config[key])
        assert o.config["seed"] == ood_seed(s.config["seed"]) != s.config["seed"]
        changed = {k for k in s.config if s.config[k] != o.config[k]}
        assert changed <= {key, "seed", "dt", "sample_every", "coarse_every"} and key in changed
        assert o.dt <= s.dt                                     # stronger flow, re-derived dt
        assert o.dt * o.config["sample_every"] == pytest.approx(
            s.dt * s.config["sample_every"], rel=0.5)
        assert Scenario.from_config(o.config).config == o.config


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="name must be one of"):
        get_scenario("kinetic")
    with pytest.raises(ValueError, match="mesh='hexagonal:3'.*families"):
        get_scenario("kinematic", "hexagonal:3")
    with pytest.raises(ValueError, match="mesh='healpix:x'"):
        get_scenario("kinematic", "healpix:x")
    with pytest.raises(ValueError, match="factor=3: does not coarsen"):
        get_scenario("kinematic", "healpix:4", factor=3)
    with pytest.raises(ValueError, match="factor=0: must be an integer >= 1"):
        get_scenario("kinematic", "cartesian:16", factor=0)
    with pytest.raises(ValueError, match="unknown 'barotropic' scenario parameter"):
        get_scenario("barotropic", "cartesian:16", forcing=2.0)
    with pytest.raises(ValueError, match="x–z slice"):
        get_scenario("convection", "healpix:4")
    with pytest.raises(ValueError, match="factor=3 must divide"):
        get_scenario("convection", "cartesian:16x8", factor=3)
    with pytest.raises(ValueError, match="seed=-1: must be"):
        get_scenario("kinematic", "cartesian:16", seed=-1)
    assert sorted(SCENARIOS) == ["barotropic", "convection", "kinematic"]


def test_family_defaults_and_config_is_complete():
    s = get_scenario("kinematic", "healpix", factor=4)
    assert s.config["mesh"] == "healpix:16" and s.fine.n_cells == 12 * 16**2
    for v in s.config.values():
        assert v is not None
    assert set(KinematicScenario.parameters) <= set(s.config)
    assert {"scenario", "mesh", "factor", "seed", "dt"} <= set(s.config)


def test_mode_bases_are_orthonormal_on_the_plane():
    mesh = small_meshes()["cartesian-8x8"]
    v, lam, k = mode_basis(mesh, (1, 2), mesh.cell_center)
    gram = (v * mesh.cell_volume[:, None]).T @ v
    assert torch.allclose(gram, torch.eye(v.shape[1], dtype=torch.float64), atol=1e-12)
    assert torch.allclose(lam, k**2)
