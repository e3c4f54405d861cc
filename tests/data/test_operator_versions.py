"""Operator versions in the data contract (issue 15 item 5; meshclosure.fv.versions).

``Φ^res_coarse`` and the gradient inputs depend on the stencils, so datasets,
feature pipelines and model files record the operator version; data from
before versions opens as ``"fv1"`` and replays exactly with the operators it
was made with; ``load_model`` and ``coarse_model`` refuse to mix versions and
name both; scenarios still select the old operators by name.
"""
from __future__ import annotations

import json

import pytest
import torch

from meshclosure.closures import FeaturePipeline, ModelClosure
from meshclosure.data import TrajectoryDataset, generate, read_dataset, write_dataset
from meshclosure.data.dataset import static_hash
from meshclosure.data.scenarios import Scenario, get_scenario
from meshclosure.data.trajectory import coarse_steps, replay
from meshclosure.errors import ArgumentError
from meshclosure.fv import gradient
from meshclosure.fv.versions import OPERATOR_VERSION, OperatorVersionError
from meshclosure.mesh import cartesian
from meshclosure.nn import CheckpointError, build_model, load_model, save_model
from meshclosure.solver import BoussinesqModel


def _scenario(**kw):
    return get_scenario("kinematic", mesh="cubed:8", factor=2, spinup_time=0.05, **kw)


def _rel_max(a, b, variables):
    return max(float((a[v] - b[v]).abs().max() / b[v].abs().max()) for v in variables)


def _stagewise(sc, t, state):
    """One fine step of ``sc`` coarse-grained per stage, and the restricted truth after it."""
    (_, end, step), = coarse_steps(sc, t, state, 1, every=1, keep_stages=True)
    return [step], {k: sc.coarsening.restrict(v) for k, v in end.items()}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A trajectory dataset made with fv1, and the same file as a pre-version writer
    left it: no ``operator_version``, no ``"operators"`` in any config."""
    folder = tmp_path_factory.mktemp("opv")
    new = generate(_scenario(operators="fv1"), folder / "fv1.nc", n_samples=4,
                   trajectory=True, progress=False)
    ds = read_dataset(new, chunks=None).load()
    ds.close()
    attrs = ds.attrs
    for key in ("source_path", "operator_version"):
        del attrs[key]
    cfg = json.loads(attrs["scenario_config"])
    del cfg["operators"]
    attrs["scenario_config"] = json.dumps(cfg, sort_keys=True)
    pipe = json.loads(attrs["feature_pipeline"])
    del pipe["operators"]
    del pipe["scenario_config"]["operators"]
    attrs["feature_pipeline"] = json.dumps(pipe, sort_keys=True)
    attrs["static_sha256"] = static_hash(ds)
    legacy = write_dataset(ds, folder / "legacy.nc")
    return new, legacy


def test_new_dataset_records_its_operator_version(data):
    ds = read_dataset(data[0])
    assert ds.attrs["operator_version"] == "fv1"
    assert json.loads(ds.attrs["scenario_config"])["operators"] == "fv1"
    pipe = json.loads(ds.attrs["feature_pipeline"])
    assert pipe["operators"] == pipe["scenario_config"]["operators"] == "fv1"
    assert "operator_version_filled" not in ds.attrs            # nothing was filled in
    assert TrajectoryDataset(data[0], "train").operators == "fv1"
    assert _scenario().config["operators"] == OPERATOR_VERSION == "fv2"


def test_legacy_dataset_opens_as_fv1_and_replays_exactly(data):
    ds = read_dataset(data[1])                          # static hash and every checksum pass
    assert ds.attrs["operator_version"] == "fv1"
    assert sorted(json.loads(ds.attrs["operator_version_filled"])) == [
        "feature_pipeline", "operator_version", "scenario_config"]
    assert FeaturePipeline.from_config(json.loads(ds.attrs["feature_pipeline"])).operators \
        == "fv1"
    traj = TrajectoryDataset(data[1], "train")
    assert traj.operators == "fv1" and traj.scenario_config["operators"] == "fv1"
    sc = Scenario.from_config(traj.scenario_config)
    assert sc.operators == "fv1"
    # the rebuilt scenario makes the stored targets bit for bit (the fv1 operators) ...
    t, state = sc.spin_up(sc.initial_state())
    (_, _, step), = coarse_steps(sc, t, state, 1)
    n = sc.coarse.n_faces
    assert torch.equal(torch.as_tensor(ds["sgs_flux_mean_q"].values[0, 0, :n]), step.flux["q"])
    # ... and its coarse model replays its own targets exactly, stage by stage
    steps, truth = _stagewise(sc, t, state)
    err = _rel_max(replay(sc, steps, stagewise=True)[-1], truth, sc.variables)
    assert err <= 1e-12


def test_versions_differ_on_the_cubed_sphere_and_each_replays_its_own_targets():
    """With the quadratic scheme (k-exact in fv2, a point fit in fv1) the two versions give
    different resolved fluxes on the cubed sphere; each replays its own targets exactly.
    (With the linear scheme fv2 is fv1 on meshes without slivers: see the next test.)"""
    scs = {v: _scenario(operators=v, scheme="quadratic") for v in ("fv1", "fv2")}
    t, state = scs["fv1"].advance(0.0, scs["fv1"].initial_state(), 5)   # same fine run
    U = scs["fv1"].transport(t, state)
    c = scs["fv1"].coarsening
    Q, Uc = c.restrict(state["q"]), scs["fv1"].coarse_transport(c, t, state, U)
    phi = {v: s.resolved_fluxes(s.coarse, t, {"q": Q}, Uc)["q"] for v, s in scs.items()}
    assert float((phi["fv1"] - phi["fv2"]).abs().max()) > 1e-3 * float(phi["fv1"].abs().max())
    err = {}
    for v, s in scs.items():
        steps, truth = _stagewise(s, t, state)
        for w, model in scs.items():
            err[v, w] = _rel_max(replay(model, steps, stagewise=True)[-1], truth, s.variables)
    assert err["fv1", "fv1"] <= 1e-12 and err["fv2", "fv2"] <= 1e-12, err
    # the targets of one version in the coarse model of the other: not exact by far
    assert min(err["fv1", "fv2"], err["fv2", "fv1"]) >= 1e3 * max(err["fv1", "fv1"],
                                                                   err["fv2", "fv2"]), err


def test_linear_scheme_is_the_same_under_both_versions_on_a_good_mesh():
    """fv2 fits the gradient over the face neighbours on meshes without slivers, as fv1:
    the linear scheme's resolved fluxes agree bit for bit there."""
    scs = {v: _scenario(operators=v) for v in ("fv1", "fv2")}
    t, state = scs["fv1"].advance(0.0, scs["fv1"].initial_state(), 3)
    U = scs["fv1"].transport(t, state)
    c = scs["fv1"].coarsening
    Q, Uc = c.restrict(state["q"]), scs["fv1"].coarse_transport(c, t, state, U)
    phi = {v: s.resolved_fluxes(s.coarse, t, {"q": Q}, Uc)["q"] for v, s in scs.items()}
    assert torch.equal(phi["fv1"], phi["fv2"])


def _planar_slivers():
    """A Delaunay triangulation of random points in the unit square (smallest angle 0.16°):
    a mesh Mesh.validate warns of, where fv2 fits gradients over the vertex neighbours."""
    import numpy as np
    from scipy.spatial import Delaunay

    from meshclosure.mesh import from_polygons

    rng = np.random.default_rng(0)
    pts = np.concatenate([rng.uniform(0, 1, (60, 2)), [[0, 0], [1, 0], [0, 1], [1, 1]]])
    tri = Delaunay(pts).simplices
    a, b, c = pts[tri[:, 0]], pts[tri[:, 1]], pts[tri[:, 2]]
    u, v = b - a, c - a
    flip = u[:, 0] * v[:, 1] - u[:, 1] * v[:, 0] < 0          # clockwise: reorder
    tri[flip] = tri[flip][:, ::-1]
    mesh = from_polygons(pts, tri)
    assert mesh.quality()["min_angle"] < 1.0
    return mesh


def test_features_record_and_use_their_version():
    sc = _scenario(operators="fv1")
    assert FeaturePipeline.from_scenario(sc).operators == "fv1"
    pipes = {v: FeaturePipeline(["q"], operators=v) for v in ("fv1", "fv2")}
    plane = cartesian(6, 5, 1.0, 1.0, periodic=False)
    x = plane.cell_center.double()
    for p in pipes.values():                                       # both exact for linear q
        g = p(plane, {"q": 2.0 * x[:, 0] - 3.0 * x[:, 1]})[:, 1:]
        assert torch.allclose(g, torch.tensor([2.0, -3.0], dtype=torch.float64), atol=1e-12)
    mesh = _planar_slivers()
    x = mesh.cell_center.double()
    q = torch.sin(3 * x[:, 0]) * x[:, 1]
    a, b = (pipes[v](mesh, {"q": q})[:, 1:] for v in ("fv1", "fv2"))
    assert float((a - b).abs().max()) > 1e-3 * float(a.abs().max())
    assert torch.equal(b, pipes["fv2"](mesh, {"q": q})[:, 1:])
    again = FeaturePipeline.from_config(pipes["fv2"].config())
    assert again.operators == "fv2"
    legacy = {k: v for k, v in pipes["fv2"].config().items() if k != "operators"}
    assert FeaturePipeline.from_config(legacy).operators == "fv1"       # saved before versions


def test_boussinesq_buoyancy_gradient_follows_the_version():
    mesh = _planar_slivers()
    x = mesh.cell_center.double()
    b = torch.sin(3 * x[:, 0]) * x[:, 1] ** 2
    zeta = torch.zeros(mesh.n_cells, dtype=torch.float64)
    out = {}
    for v in ("fv1", "fv2"):
        model = BoussinesqModel(mesh, operators=v)
        assert model.operators == v
        out[v] = model.rhs(0.0, {"zeta": zeta, "b": b})["zeta"]       # = ∂b/∂x here
        assert torch.allclose(out[v], gradient(mesh, b, operators=v)[:, 0], atol=1e-12)
    assert float((out["fv1"] - out["fv2"]).abs().max()) > 1e-3


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    sc = _scenario(operators="fv1")
    features = FeaturePipeline.from_scenario(sc)
    model = build_model("mgn", sc.coarse, in_features=features.n_features, hidden=8,
                        n_blocks=1)
    folder = tmp_path_factory.mktemp("opv_model")
    path = save_model(model, folder / "m.pt", features)
    payload = torch.load(path, weights_only=True)        # as a pre-version save_model wrote it
    del payload["operators"]
    feats = json.loads(payload["features"])
    del feats["operators"]
    payload["features"] = json.dumps(feats, sort_keys=True)
    torch.save(payload, folder / "legacy.pt")
    return sc, path, folder / "legacy.pt"


def test_load_model_records_and_refuses_another_version(saved):
    sc, path, legacy = saved
    for p in (path, legacy):                  # recorded, and "fv1" for a file without it
        loaded = load_model(p, sc.coarse, operators="fv1")
        assert loaded.operators == loaded.features.operators == "fv1"
        with pytest.raises(CheckpointError) as info:
            load_model(p, sc.coarse, operators="fv2")
        assert isinstance(info.value, OperatorVersionError)
        msg = str(info.value)
        assert "'fv1'" in msg and "'fv2'" in msg and "retrain" in msg
    with pytest.raises(ArgumentError, match="'fv1', 'fv2'"):
        load_model(path, sc.coarse, operators="fv3")
    with pytest.raises(ArgumentError, match="differs from the feature pipeline"):
        save_model(build_model("mgn", sc.coarse, in_features=3, hidden=8, n_blocks=1),
                   path.parent / "x.pt", load_model(path, sc.coarse).features, operators="fv2")


def test_coarse_model_refuses_a_closure_of_another_version(saved):
    sc1, path, _ = saved
    closure = load_model(path, sc1.coarse).closure()
    assert isinstance(closure, ModelClosure) and closure.operators == "fv1"
    sc1.coarse_model(closure=closure)                          # the same version: accepted
    sc2 = _scenario()
    plain = lambda t, s, mesh: {"q": torch.zeros(sc2.coarse.n_faces, dtype=torch.float64)}
    sc2.coarse_model(closure=plain)                            # records no version: accepted
    from meshclosure.train import EnsembleClosure

    class WithMethods:           # a closure whose `members` is a method, not a list of parts
        def members(self):
            return []

        def __call__(self, t, s, mesh):
            return {}
    sc2.coarse_model(closure=WithMethods())                    # records no version: accepted
    for bad in (closure, 0.5 * closure + plain, EnsembleClosure([closure, closure])):
        with pytest.raises(OperatorVersionError) as info:
            sc2.coarse_model(closure=bad)
        msg = str(info.value)
        assert "'fv1'" in msg and "'fv2'" in msg and "retrain" in msg


def test_unknown_version_names_the_known_ones():
    for make in (lambda: get_scenario("kinematic", "cartesian:16", operators="fv0"),
                 lambda: FeaturePipeline(["q"], operators="fv0"),
                 lambda: BoussinesqModel(cartesian(4, 4, 1.0, 1.0, periodic=(True, False)),
                                         operators="fv0")):
        with pytest.raises(ArgumentError, match=r"operators='fv0'.*\('fv1', 'fv2'\)"):
            make()


def test_multirun_configs_of_a_legacy_store_rebuild_fv1_runs():
    import xarray as xr

    from meshclosure.data.multirun import scenario_for_run

    configs = [get_scenario("kinematic", "cartesian:16", seed=s, operators="fv1").config
               for s in (3, 4)]
    for c in configs:
        del c["operators"]                               # as a pre-version store holds them
    ds = xr.Dataset({"x": ("n", [1.0])}, attrs={"run_configs": json.dumps(configs),
                                                "scenario_config": json.dumps(configs[0])})
    before = static_hash(ds)
    sc = scenario_for_run(ds, 1)
    assert (sc.operators, sc.seed) == ("fv1", 4)
    assert all(c["operators"] == "fv1" for c in json.loads(ds.attrs["run_configs"]))
    assert static_hash(ds) == before                     # the stored attributes are checked
