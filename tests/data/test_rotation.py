"""The ``rotation`` parameter of the sphere scenarios (issue 13, the symmetry test): 0 is
today's scenario bit for bit; a tilt R rotates N, the tracer pattern q* and the planetary
axis (each pattern p becomes p(Rᵀx)) and nothing else; config round trip; refusals."""
import json
import math

import numpy as np
import pytest
import torch

from meshclosure.data import generate, read_dataset
from meshclosure.data.scenarios import Scenario, get_scenario, rotation_matrix
from meshclosure.errors import ArgumentError
from meshclosure.fv import divergence

MESHES = {"healpix": ("healpix:4", 2), "icosahedral": ("icosahedral:2", 2)}
TILTS = [30, [40, 110]]
_BUILT = {}


def sc(name, family="healpix", rotation=None, **extra):
    mesh, factor = MESHES[family]
    kw = {} if rotation is None else {"rotation": rotation}
    key = (name, family, json.dumps(rotation), tuple(sorted(extra.items())))
    if key not in _BUILT:
        _BUILT[key] = get_scenario(name, mesh, factor=factor, seed=5, **kw, **extra)
    return _BUILT[key]


def _same(a, b):
    assert set(a) == set(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k


# ------------------------------------------------------------------ the rotation itself
@pytest.mark.parametrize("rotation", [30, [40, 110], [-75, 200]])
def test_rotation_matrix_is_a_rotation_that_moves_the_pole(rotation):
    R = rotation_matrix(rotation)
    tilt, az = (rotation, 0) if not isinstance(rotation, list) else rotation
    th, ph = math.radians(tilt), math.radians(az)
    assert torch.allclose(R @ R.T, torch.eye(3, dtype=torch.float64), atol=1e-15)
    assert float(torch.det(R)) == pytest.approx(1.0, abs=1e-14)
    pole = torch.tensor([math.sin(th) * math.cos(ph), math.sin(th) * math.sin(ph),
                         math.cos(th)], dtype=torch.float64)
    assert torch.allclose(R[:, 2], pole, atol=1e-15)
    axis = torch.tensor([-math.sin(ph), math.cos(ph), 0.0], dtype=torch.float64)
    assert torch.allclose(R @ axis, axis, atol=1e-15)   # the axis (−sin φ, cos φ, 0)


def test_rotation_matrix_zero_is_the_identity_and_about_y_by_default():
    assert torch.equal(rotation_matrix(0), torch.eye(3, dtype=torch.float64))
    assert torch.equal(rotation_matrix([0, 75]), torch.eye(3, dtype=torch.float64))
    c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
    expected = torch.tensor([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=torch.float64)
    assert torch.allclose(rotation_matrix(30), expected, atol=1e-16)
    assert torch.equal(rotation_matrix([30, 0]), rotation_matrix(30.0))


@pytest.mark.parametrize("bad", ["30", [1, 2, 3], [30], float("nan"), [30, float("inf")],
                                 True, None])
def test_bad_rotation_values_are_refused_with_the_argument_named(bad):
    with pytest.raises(ArgumentError, match="rotation=") as err:
        get_scenario("kinematic", "healpix:4", factor=2, rotation=bad)
    assert err.value.argument == "rotation"


# ---------------------------------------------------------------- 0: today, bit for bit
@pytest.mark.parametrize("name", ["kinematic", "barotropic"])
@pytest.mark.parametrize("zero", [0, 0.0, [0, 90]])
def test_rotation_zero_is_the_default_scenario_bit_for_bit(name, zero):
    a, b = sc(name), sc(name, rotation=zero)
    assert a.config == b.config and a.config["rotation"] == 0.0 and a.rotation is None
    _same(a.initial_state(), b.initial_state())
    ta, sa = a.advance(0.0, a.initial_state(), 3)
    tb, sb = b.advance(0.0, b.initial_state(), 3)
    assert ta == tb
    _same(sa, sb)
    c = a.coarsening
    cs = {k: c.restrict(v) for k, v in sa.items()}
    _same(a.coarse_model().rhs(ta, cs), b.coarse_model().rhs(tb, cs))
    U = a.transport(ta, sa)
    _same(a.resolved_inputs(a.coarse, ta, cs, c.restrict_flux(U)),
          b.resolved_inputs(b.coarse, tb, cs, c.restrict_flux(U)))


def test_rotation_zero_keeps_the_documented_default_patterns():
    """q* = (z + x/2)/R, f = 2Ω z/R (the BarotropicModel's own f), N's axis at 45° from z."""
    k, bt = sc("kinematic"), sc("barotropic")
    x = k.fine.cell_center.double()
    assert torch.equal(k.initial_state()["q"], (x[:, 2] + 0.5 * x[:, 0]) / k.fine.radius)
    assert torch.equal(bt.base.f, 2 * bt.params["omega"] * x[:, 2] / bt.fine.radius)
    axis = torch.tensor([math.sin(math.pi / 4), 0.0, math.cos(math.pi / 4)],
                        dtype=torch.float64)
    p = k.params
    assert torch.allclose(k.N(x, 0.0), p["N_mean"] * (1 + p["N_amplitude"] * x @ axis),
                          rtol=1e-15, atol=1e-15)


# ------------------------------------------------------------------ a tilt: p(Rᵀx)
def _q_star_default(y, radius):
    return (y[:, 2] + 0.5 * y[:, 0]) / radius


@pytest.mark.parametrize("family", list(MESHES))
@pytest.mark.parametrize("rotation", TILTS, ids=json.dumps)
def test_tracer_target_is_the_default_pattern_at_rotated_points(family, rotation):
    for name in ("kinematic", "barotropic"):
        s = sc(name, family, rotation)
        R = rotation_matrix(rotation)
        for mesh in (s.fine, s.coarse):
            x = mesh.cell_center.double()
            expected = _q_star_default(x @ R, mesh.radius)              # rows: Rᵀ x
            assert torch.allclose(s._target(mesh), expected, rtol=0, atol=1e-14)
        assert torch.allclose(s.initial_state()["q"], _q_star_default(
            s.fine.cell_center.double() @ R, s.fine.radius), rtol=0, atol=1e-14)
        # and it is really tilted: far from the default pattern
        q0 = _q_star_default(s.fine.cell_center.double(), s.fine.radius)
        assert float((s.initial_state()["q"] - q0).abs().max()) > 0.2
    # the coarse model relaxes to restrict(q*) of the tilted pattern: at q = that, no source
    k = sc("kinematic", family, rotation)
    target = k.coarsening.restrict(k._target(k.fine))
    src = k.sources(0.0, {"q": k._target(k.fine)})["q"]
    assert float(src.abs().max()) == 0.0
    assert float(target.abs().max()) > 0.3


@pytest.mark.parametrize("rotation", TILTS, ids=json.dumps)
def test_N_is_the_default_N_at_rotated_points(rotation):
    s, s0 = sc("kinematic", rotation=rotation), sc("kinematic")
    R = rotation_matrix(rotation)
    for pts in (s.fine.cell_center, s.fine.vertex_pos, s.coarse.cell_center):
        x = pts.double()
        for t in (0.0, 1.7, 6.3):
            assert torch.allclose(s.N(x, t), s0.N(x @ R, t), rtol=0, atol=1e-14)
    got = s.resolved_inputs(s.coarse, 2.0, {}, None)["N"]
    assert torch.allclose(got, s0.N(s.coarse.cell_center.double() @ R, 2.0), atol=1e-14)
    assert float((got - s0.N(s.coarse.cell_center, 2.0)).abs().max()) > 0.1   # really moved


@pytest.mark.parametrize("family", list(MESHES))
@pytest.mark.parametrize("rotation", TILTS, ids=json.dumps)
def test_coriolis_is_about_the_tilted_axis_in_every_model(family, rotation):
    s = sc("barotropic", family, rotation)
    pole = rotation_matrix(rotation) @ torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    omega = s.params["omega"]
    for mesh in (s.fine, s.coarse):
        expected = 2 * omega * (mesh.cell_center.double() @ pole) / mesh.radius
        assert torch.allclose(s.coriolis(mesh), expected, rtol=0, atol=1e-14)
        assert torch.allclose(s.resolved_inputs(mesh, 0.0, {}, None)["f"], expected, atol=1e-14)
    # the fine model, the coarse model and the coarse transport model all use it
    assert torch.allclose(s.base.f.double(), s.coriolis(s.fine), atol=1e-14)
    coarse = s.coarse_model()
    assert torch.allclose(coarse.base.f.double(), s.coriolis(s.coarse), atol=1e-14)
    t, st = s.advance(0.0, s.initial_state(), 2)
    s.coarse_transport(s.coarsening, t, st, s.transport(t, st))
    assert torch.allclose(s._cache(s.coarse)["transport_model"].f.double(),
                          s.coriolis(s.coarse), atol=1e-14)
    # really tilted: the default f = 2Ω z/R differs by O(Ω)
    f0 = 2 * omega * s.fine.cell_center.double()[:, 2] / s.fine.radius
    assert float((s.coriolis(s.fine) - f0).abs().max()) > 0.5 * omega


@pytest.mark.parametrize("rotation", TILTS, ids=json.dumps)
def test_tilted_coarse_model_sees_the_tilted_f_in_its_fluxes(rotation):
    """The coarse model's vorticity flux advects ζ + f with the tilted f: its rhs equals
    the scenario's own resolved fluxes (with coriolis) plus sources, and is conservative."""
    s = sc("barotropic", rotation=rotation)
    t, st = s.advance(0.0, s.initial_state(), 2)
    c = s.coarsening
    cs = {k: c.restrict(v) for k, v in st.items()}
    model = s.coarse_model(forcing=lambda t: {"zeta": torch.zeros(s.coarse.n_cells,
                                                                  dtype=torch.float64)})
    rhs = model.rhs(t, cs)
    U = model.base.transport(cs["zeta"])
    flux = s.resolved_fluxes(s.coarse, t, cs, U)
    expected = -divergence(s.coarse, flux["zeta"]) - s.params["drag"] * cs["zeta"]
    assert torch.allclose(rhs["zeta"], expected, rtol=1e-12, atol=1e-12)
    V = s.coarse.cell_volume.double()
    drag = -s.params["drag"] * cs["zeta"]
    assert abs(float((V * (rhs["zeta"] - drag)).sum())) < 1e-12 * float(V.sum())
    # and the untilted model gives a different tendency from the same state
    s0 = sc("barotropic")
    rhs0 = s0.coarse_model(forcing=lambda t: {"zeta": torch.zeros(
        s.coarse.n_cells, dtype=torch.float64)}).rhs(t, cs)
    assert float((rhs0["zeta"] - rhs["zeta"]).abs().max()) > 1e-3 * float(rhs["zeta"].abs().max())


def test_tilted_run_keeps_the_seeded_flow_and_forcing():
    """Only the physics rotates: the OU flow of kinematic, the forcing of barotropic and the
    initial vorticity are those of the default scenario, bit for bit."""
    k, k0 = sc("kinematic", rotation=30), sc("kinematic")
    for t in (0.0, 0.5):
        assert torch.equal(k.psi_vertex(t, ("large",)), k0.psi_vertex(t, ("large",)))
    b, b0 = sc("barotropic", rotation=30), sc("barotropic")
    assert torch.equal(b.forcing(0.3), b0.forcing(0.3))
    assert torch.equal(b.initial_state()["zeta"], b0.initial_state()["zeta"])


# --------------------------------------------------------------- config and refusals
@pytest.mark.parametrize("name", ["kinematic", "barotropic"])
@pytest.mark.parametrize("rotation,recorded", [(30, 30.0), ([30, 0], 30.0), ([40, 110],
                                                                               [40.0, 110.0])])
def test_config_records_rotation_and_round_trips(name, rotation, recorded):
    s = sc(name, rotation=rotation)
    assert s.config["rotation"] == recorded
    again = Scenario.from_config(json.loads(json.dumps(s.config)))
    assert again.config == s.config
    assert torch.equal(again.rotation, s.rotation)
    _same(again.initial_state(), s.initial_state())
    assert s.ood().config["rotation"] == recorded           # the OOD run keeps the tilt
    if name == "barotropic":
        assert torch.equal(again.coriolis(again.coarse), s.coriolis(s.coarse))


def test_config_without_rotation_key_rebuilds_the_default():
    """Datasets written before the parameter existed have no ``rotation``: tilt 0."""
    cfg = dict(sc("kinematic").config)
    del cfg["rotation"]
    assert Scenario.from_config(cfg).config["rotation"] == 0.0


@pytest.mark.parametrize("name", ["kinematic", "barotropic"])
def test_plane_refuses_a_rotation(name):
    with pytest.raises(ArgumentError, match=r"rotation=30: .*not a sphere") as err:
        get_scenario(name, "cartesian:16", factor=4, rotation=30)
    assert err.value.argument == "rotation" and "healpix" in str(err.value)
    assert get_scenario(name, "cartesian:16", factor=4, rotation=0).config["rotation"] == 0.0


def test_column_scenario_refuses_any_rotation():
    with pytest.raises(ArgumentError, match="rotation=0: .*'convection' scenario has none"):
        get_scenario("convection", "cartesian:16x8", factor=2, rotation=0)
    with pytest.raises(ArgumentError) as err:
        get_scenario("convection", "cartesian:16x8", factor=2, rotation=30)
    assert err.value.argument == "rotation"


# ------------------------------------------------------------------------ a dataset
def test_generated_dataset_records_rotation_and_its_inputs_are_tilted(tmp_path):
    s = get_scenario("kinematic", "healpix:4", factor=2, seed=5, rotation=[40, 110],
                     spinup_time=0.05)
    out = generate(s, tmp_path / "tilted.nc", n_samples=3, every=2, progress=False)
    ds = read_dataset(out)
    cfg = json.loads(ds.attrs["scenario_config"])
    assert cfg["rotation"] == [40.0, 110.0] and cfg == s.config
    back = Scenario.from_config(cfg)
    assert torch.equal(back.rotation, s.rotation)
    # the stored N is the tilted N at the coarse centres, at each sample's time
    s0 = sc("kinematic")
    R = rotation_matrix([40, 110])
    x = s.coarse.cell_center.double()
    for k, t in enumerate(np.asarray(ds["model_time"].values[0])):
        got = torch.as_tensor(np.asarray(ds["input_N"].values[0, k]))
        assert torch.allclose(got, s0.N(x @ R, float(t)), atol=1e-12)
    pipe = json.loads(ds.attrs["feature_pipeline"])        # the online features are tilted too
    assert pipe["scenario_config"]["rotation"] == [40.0, 110.0]
