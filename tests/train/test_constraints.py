"""Soft constraints: the weak-form residual and the variance-production dissipation penalty.

Known solutions and invariants, not shapes: the stored step-mean subgrid flux
nearly closes one coarse step (its weak-form residual is a few per mille of
no closure's) and any perturbation of it grows the residual; the residual's
projections equal the projections of the replay's own one-step error; the
gradient matches finite differences; ``P = Σ_f Φ_f (Q_b − Q_a)`` equals
``Σ_i V_i Q_i (−div Φ)_i`` to rounding on every family; test functions are
orthonormal where the discrete Fourier/cosine/harmonic theory says so.
"""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from meshclosure.data import TrajectoryDataset, generate
from meshclosure.data.scenarios import Scenario, get_scenario
from meshclosure.data.trajectory import replay_window
from meshclosure.errors import ArgumentError
from meshclosure.fv import divergence
from meshclosure.mesh import cartesian, healpix, icosahedral
from meshclosure.train import constraints as C

TOL = {torch.float64: 1e-12, torch.float32: 1e-5}
SMALL = {"kinematic": dict(mesh="cartesian:16", factor=2, spinup_time=0.5),
         "convection": dict(mesh="cartesian:16x8", factor=2, spinup_time=0.05)}


@pytest.fixture(scope="module")
def traj(tmp_path_factory):
    """Trajectory datasets of both scenarios (about 1 s together): name -> path."""
    out = {}
    for name, kw in SMALL.items():
        path = tmp_path_factory.mktemp("constraints") / f"{name}.nc"
        generate(get_scenario(name, **kw), path, n_samples=8, trajectory=True, progress=False)
        out[name] = path
    return out


def _load(path, dtype=torch.float64, length=1):
    data = TrajectoryDataset(path, "train", length=length, dtype=dtype)
    sc = Scenario.from_config(data.scenario_config)
    batch = data.collate([data[i] for i in range(len(data))])
    return data, sc, batch


def _true_flux(sc, batch, step=0):
    return torch.stack([batch["flux_mean"][v][:, step] for v in sc.variables], -1)


# --------------------------------------------------------------------------- weak form
@pytest.mark.parametrize("name", ["kinematic", "convection"])
def test_true_step_mean_flux_nearly_closes_the_step_and_noise_grows_the_residual(traj, name):
    """Measured (n_samples=8 train windows): kinematic ratio 1.9e-3 (n=1, M=5; 2.0e-3 with
    n=2, M=13), convection 1.9e-6 (column of 4 cells, M=3): ≤ 5 % of no closure's."""
    _, sc, batch = _load(traj[name])
    flux = _true_flux(sc, batch)
    stages = batch["transport_stages"][:, 0] if "transport_stages" in batch else None
    nxt = {v: x[:, 0] for v, x in batch["states"].items()}
    per = C.weak_form_residual(sc, batch["state"], nxt, flux, sc.coarse_dt, batch["t"][:, 0],
                               forcing={v: f[:, 0] for v, f in batch["forcing_mean"].items()}
                               or None, transport_stages=stages)
    assert per.shape == (len(batch["t"]),)
    assert float(per.max()) <= 0.05, per                     # every window, not only the mean
    none = C.weak_form_loss(sc, batch, torch.zeros_like(flux))
    assert float(none) == pytest.approx(1.0, rel=1e-12)      # Φ̂ = 0 is the reference
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(flux.shape, generator=g, dtype=flux.dtype) * flux.std()
    eps = [0.0, 0.03, 0.1, 0.3, 1.0, 3.0]
    losses = [float(C.weak_form_loss(sc, batch, flux + e * noise)) for e in eps]
    assert losses[0] == pytest.approx(float(per.mean()), rel=1e-12)
    assert all(b > a for a, b in zip(losses, losses[1:])), losses
    if name == "kinematic":
        phi = C.test_functions(sc.coarse, n=2)
        assert float(C.weak_form_loss(sc, batch, flux, phi=phi)) <= 0.05


def test_projections_are_those_of_the_replays_one_step_error(traj):
    """With the stored step mean, R is exactly (truth − replay_window's first step) / Δ_c,
    and the stored stage transports give the coarse model's own values."""
    data, sc, batch = _load(traj["kinematic"])
    phi = C.test_functions(sc.coarse, n=2)
    flux = _true_flux(sc, batch)
    p = C.weak_form_projections(sc, batch["state"],
                                {"q": batch["states"]["q"][:, 0]}, flux, sc.coarse_dt,
                                batch["t"][:, 0], phi=phi)
    p_stages = C.weak_form_projections(sc, batch["state"], {"q": batch["states"]["q"][:, 0]},
                                       flux, sc.coarse_dt, batch["t"][:, 0],
                                       transport_stages=batch["transport_stages"][:, 0], phi=phi)
    V = sc.coarse.cell_volume
    for b in range(len(data)):
        w = data[b]
        step = replay_window(sc, w)[0]["q"]
        R = (w["states"]["q"][0] - step) / sc.coarse_dt
        ref = (phi * V) @ R
        scale = float(ref.abs().max())
        assert float((p[b, 0] - ref).abs().max()) <= 1e-10 * scale
        assert float((p_stages[b, 0] - ref).abs().max()) <= 1e-10 * scale
    # unbatched call = one row of the batched one
    one = C.weak_form_projections(sc, {"q": batch["state"]["q"][1]},
                                  {"q": batch["states"]["q"][1, 0]}, flux[1], sc.coarse_dt,
                                  float(batch["t"][1, 0]), phi=phi)
    assert torch.allclose(one, p[1], rtol=0, atol=1e-13 * float(p[1].abs().max()))


def test_weak_form_loss_gradient_matches_finite_differences(traj):
    _, sc, batch = _load(traj["kinematic"])
    small = {k: ({v: x[:1] for v, x in val.items()} if isinstance(val, dict) else val[:1])
             for k, val in batch.items() if k in ("state", "states", "t", "forcing_mean",
                                                  "transport_stages", "flux_mean")}
    flux = (_true_flux(sc, small) * 1.5).detach().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda f: C.weak_form_loss(sc, small, f), (flux,),
                                    eps=1e-6, atol=1e-8, rtol=1e-6)
    # the gradient is not zero: the loss sees the flux through the step
    g, = torch.autograd.grad(C.weak_form_loss(sc, small, flux), flux)
    assert float(g.abs().max()) > 0


def test_float32_inputs_give_the_float64_loss(traj):
    _, sc, b64 = _load(traj["kinematic"])
    _, _, b32 = _load(traj["kinematic"], dtype=torch.float32)
    f64 = _true_flux(sc, b64)
    f32 = _true_flux(sc, b32).requires_grad_(True)
    l32, l64 = C.weak_form_loss(sc, b32, f32 * 1.2), C.weak_form_loss(sc, b64, f64 * 1.2)
    assert l32.dtype == torch.float32
    assert float(l32.detach()) == pytest.approx(float(l64), rel=1e-4)
    l32.backward()
    assert f32.grad.dtype == torch.float32 and bool(torch.isfinite(f32.grad).all())


def test_weak_form_loss_uses_the_requested_step(traj):
    """Step 1 of 2-step windows equals step 0 of the windows that start one state later."""
    d2, sc, b2 = _load(traj["kinematic"], length=2)
    d1, _, b1 = _load(traj["kinematic"], length=1)
    assert d2.windows == d1.windows[:len(d2)] and len(d1) == len(d2) + 1
    f2 = _true_flux(sc, b2, step=1) * 0.7
    i = torch.arange(1, len(d2) + 1)                  # window k+1 of length 1 = step 1 of k
    b1s = {k: ({v: x[i] for v, x in val.items()} if isinstance(val, dict) else val[i])
           for k, val in b1.items() if k in ("state", "states", "t", "transport_stages")}
    b1s["forcing_mean"] = {}
    assert float(C.weak_form_loss(sc, b2, f2, step=1)) == pytest.approx(
        float(C.weak_form_loss(sc, b1s, f2)), rel=1e-12)
    with pytest.raises(ArgumentError, match="step=2: must be an integer in \\[0, 1\\]"):
        C.weak_form_loss(sc, b2, f2, step=2)


def test_weak_form_bad_arguments(traj):
    _, sc, batch = _load(traj["kinematic"])
    flux = _true_flux(sc, batch)
    with pytest.raises(ArgumentError, match="flux=.*must be \\(B, n_faces, n_vars\\)"):
        C.weak_form_loss(sc, batch, flux[:, :5])
    with pytest.raises(ArgumentError, match="scale='mean'"):
        C.weak_form_loss(sc, batch, flux, scale="mean")
    with pytest.raises(ArgumentError, match="dt=0"):
        C.weak_form_residual(sc, batch["state"], batch["state"], flux, 0, 0.0)
    _, conv, cb = _load(traj["convection"])
    with pytest.raises(ArgumentError, match="transport_stages=.*prescribed flow"):
        C.weak_form_residual(conv, cb["state"], {"b": cb["states"]["b"][:, 0]},
                             _true_flux(conv, cb), conv.coarse_dt, cb["t"][:, 0],
                             transport_stages=torch.zeros(len(cb["t"]), 3, conv.coarse.n_faces))
    # raw and stated scales are the same sum, rescaled
    raw = C.weak_form_residual(sc, batch["state"], {"q": batch["states"]["q"][:, 0]}, flux,
                               sc.coarse_dt, batch["t"][:, 0], scale=None)
    scaled = C.weak_form_residual(sc, batch["state"], {"q": batch["states"]["q"][:, 0]}, flux,
                                  sc.coarse_dt, batch["t"][:, 0], scale=2.0)
    assert torch.allclose(scaled, raw / 4, rtol=1e-14, atol=0)


# --------------------------------------------------------------------------- test functions
@pytest.mark.parametrize("mesh,n,M", [
    (lambda: cartesian(8, 8), 1, 5), (lambda: cartesian(8, 8), 2, 13),
    (lambda: cartesian(12, 6, 2.0, 1.0), 2, 7),                 # 1, (1, 0), (2, 0), (0, 1) pairs
    (lambda: cartesian(8, 8, periodic=False), 1, 6),            # cos j ≤ 2 per axis, |j| ≤ 2
    (lambda: cartesian(16, 8, 2.0, 1.0, periodic=(True, False)), 2, 9),
    (lambda: cartesian(16, None, 2.0), 2, 5),                   # cos(πjz/H), j ≤ 4
])
def test_plane_and_column_test_functions_are_orthonormal(mesh, n, M):
    m = mesh()
    phi = C.test_functions(m, n=n)
    assert phi.dtype == torch.float64 and phi.shape == (M, m.n_cells)
    gram = (phi * m.cell_volume) @ phi.T / float(m.cell_volume.sum())
    assert torch.allclose(gram, torch.eye(M, dtype=torch.float64), rtol=0, atol=1e-12)
    assert torch.equal(phi[0], torch.ones(m.n_cells, dtype=torch.float64))   # constant first
    assert C.test_functions(m, n=n) is phi                                   # cached per mesh


def test_column_of_the_convection_scenario_gets_cosines_in_z():
    sc = get_scenario("convection", **SMALL["convection"])
    col = sc.coarse                                          # 4 levels stored as a 2-D mesh
    phi = C.test_functions(col)
    z = col.cell_center[:, 1]
    H = 1.0
    ref = torch.stack([torch.ones_like(z)] + [math.sqrt(2) * torch.cos(math.pi * j * z / H)
                                              for j in (1, 2)])
    assert torch.allclose(phi, ref, rtol=0, atol=1e-14)


@pytest.mark.parametrize("mesh,degree,off", [(lambda: healpix(4), 3, 0.02),
                                             (lambda: icosahedral(2), 3, 1e-3),
                                             (lambda: healpix(8, radius=2.0), 6, 0.01)])
def test_sphere_test_functions_are_nearly_orthonormal_harmonics(mesh, degree, off):
    """Measured max |Gram/(4πR²) − I|: healpix:4 0.019, icosahedral:2 2.8e-4, healpix:8 0.007."""
    m = mesh()
    phi = C.test_functions(m, degree=degree)
    assert phi.shape == ((degree + 1) ** 2, m.n_cells)
    gram = (phi * m.cell_volume) @ phi.T / float(m.cell_volume.sum())
    assert float((gram - torch.eye(len(gram), dtype=gram.dtype)).abs().max()) <= off
    # degree 1 block: √3 (z, x, y)/R up to order and sign, i.e. spans the coordinates
    x = m.cell_center / m.radius
    block = phi[1:4]
    fit = torch.linalg.lstsq(block.T, math.sqrt(3) * x).solution
    assert float((block.T @ fit - math.sqrt(3) * x).abs().max()) < 1e-12


def test_test_functions_refuse_bad_input():
    with pytest.raises(ArgumentError, match="n=4: must be a number in \\(0, 2\\]"):
        C.test_functions(cartesian(8, 8), n=4)
    with pytest.raises(ArgumentError, match="n=0"):
        C.test_functions(cartesian(8, 8), n=0)
    with pytest.raises(ArgumentError, match="n=True"):
        C.test_functions(cartesian(8, 8), n=True)
    with pytest.raises(ArgumentError, match="degree=2.5: must be an integer in \\[1, 6\\]"):
        C.test_functions(healpix(4), degree=2.5)
    with pytest.raises(ArgumentError, match="degree=7"):
        C.test_functions(healpix(4), degree=7)
    with pytest.raises(ArgumentError, match="mesh='Tensor'"):
        C.test_functions(torch.zeros(3))
    curved = dataclasses.replace(healpix(1), radius=None)          # a 3-D surface, not a sphere
    with pytest.raises(ArgumentError, match="must be a sphere, a plane or a column"):
        C.test_functions(curved)
    m = cartesian(8, 8)
    with pytest.raises(ArgumentError, match="phi=\\(5, 63\\)"):
        C.project(m, torch.zeros(64), torch.zeros(5, 63))
    with pytest.raises(ArgumentError, match="field=\\(2, 63\\)"):
        C.project(m, torch.zeros(2, 63), C.test_functions(m))


def test_project_of_a_test_function_is_the_domain_area_on_its_own_mode():
    m = cartesian(8, 4, 2.0, 1.0)
    phi = C.test_functions(m, n=2)
    field = torch.stack([3.0 * phi[2], -phi[4]]).T.unsqueeze(0)        # (1, n_cells, 2)
    p = C.project(m, field, phi)                                         # (1, 2, M)
    expect = torch.zeros(2, len(phi), dtype=torch.float64)
    expect[0, 2], expect[1, 4] = 3.0 * 2.0, -2.0
    assert torch.allclose(p[0], expect, rtol=0, atol=1e-13)
    assert torch.allclose(C.project(m, field[..., 0], phi), p[:, 0], rtol=0, atol=1e-14)
    assert torch.allclose(C.project(m, field[0, :, 0].float(), phi), p[0, 0].float(), atol=1e-5)


# --------------------------------------------------------------------------- dissipation
MESHES = {"cartesian": lambda: cartesian(8, 6, 2.0, 1.5),
          "bounded": lambda: cartesian(6, 4, 3.0, 1.0, periodic=False),
          "healpix": lambda: healpix(4, radius=2.5), "icosahedral": lambda: icosahedral(2),
          "dual": lambda: icosahedral(1, dual=True)}


@pytest.mark.parametrize("family", list(MESHES))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_variance_production_is_the_closures_variance_tendency(family, dtype):
    m = MESHES[family]().to(dtype=dtype)
    g = torch.Generator().manual_seed(3)
    B, V = 3, 2
    flux = torch.randn(B, m.n_faces, V, generator=g, dtype=torch.float64).to(dtype)
    Q = torch.randn(B, m.n_cells, V, generator=g, dtype=torch.float64).to(dtype)
    P = C.variance_production(m, flux, Q)
    vol = m.cell_volume.to(dtype)
    for b in range(B):
        tend = -divergence(m, flux[b])                  # zero boundary flux on a bounded mesh
        ref = (vol[:, None] * Q[b] * tend).sum(0)
        size = (vol[:, None] * (Q[b] * tend).abs()).sum(0)
        assert torch.all((P[b] - ref).abs() <= 20 * TOL[dtype] * size), (P[b], ref)
    single = C.variance_production(m, flux[1, :, 0], Q[1, :, 0])       # unbatched, one variable
    size = float((vol * (Q[1, :, 0] * divergence(m, flux[1, :, 0])).abs()).sum())
    assert single.shape == () and float((single - P[1, 0]).abs()) <= 20 * TOL[dtype] * size


def test_dissipation_penalty_is_zero_down_gradient_and_positive_up_gradient():
    m = icosahedral(2)
    g = torch.Generator().manual_seed(4)
    Q = torch.randn(4, m.n_cells, generator=g, dtype=torch.float64)
    a, b = m.face_cells
    K = torch.rand(m.n_faces, generator=g, dtype=torch.float64) + 0.1
    down = -K * (Q[:, b] - Q[:, a]) * m.face_area / m.cell_distance
    P = C.variance_production(m, down, Q)
    assert bool((P < 0).all())
    assert float(C.dissipation_penalty(m, down, Q)) == 0.0
    assert C.positive_production_fraction(m, down, Q) == 0.0
    up = -down
    P_up = C.variance_production(m, up, Q)
    pen = C.dissipation_penalty(m, up, Q)
    assert float(pen) == pytest.approx(float((P_up ** 2).mean()), rel=1e-14) and float(pen) > 0
    assert float(C.dissipation_penalty(m, up, Q, scale=10.0)) == pytest.approx(float(pen) / 100,
                                                                                rel=1e-14)
    mixed = torch.cat([down[:2], up[2:]])
    assert C.positive_production_fraction(m, mixed, Q) == 0.5
    per = C.dissipation_penalty(m, mixed, Q, reduction="none")
    assert torch.equal(per[:2], torch.zeros(2, dtype=torch.float64)) and bool((per[2:] > 0).all())
    # gradient: 2 [P]_+ (Q_b − Q_a) / n_samples, pushing production down
    f = mixed.clone().requires_grad_(True)
    C.dissipation_penalty(m, f, Q, reduction="sum").backward()
    dQ = Q[:, b] - Q[:, a]
    expect = 2 * torch.relu(C.variance_production(m, mixed, Q))[:, None] * dQ
    assert torch.allclose(f.grad, expect, rtol=1e-13, atol=0)
    with pytest.raises(ArgumentError, match="reduction='max'"):
        C.dissipation_penalty(m, up, Q, reduction="max")
    with pytest.raises(ArgumentError, match="flux=\\(4, 10\\)"):
        C.variance_production(m, up[:, :10], Q)
