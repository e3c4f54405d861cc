"""Tendency-form closures (``nodewise``, ``nodewise_mean_free``): trained by ``train`` on the
subgrid tendency, saved and loaded as a :class:`TendencyClosure`, run inside the coarse model
by :func:`with_tendency`; the mean-free variant keeps the global budget to rounding, plain
``nodewise`` does not (issue 12: "``nodewise`` and its mean-fixed variant run the same way,
and their residuals stand beside it")."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import small_kinematic
from meshclosure.closures import FeaturePipeline, ModelClosure, Normalizer
from meshclosure.closures.tendency import TendencyClosure, TendencyModel, with_tendency
from meshclosure.data import SubgridDataset
from meshclosure.errors import ArgumentError
from meshclosure.nn import build_model, load_model
from meshclosure.solver import rollout
from meshclosure.train import train

TINY = {"model_config": {"hidden": 16, "n_blocks": 1}, "batch_size": 4, "dtype": "float64"}


def _train_tendency_mse(closure, path) -> tuple:
    """MSE of the closure's physical tendency against the stored s^sgs over the training
    split, and the zero prediction's (both [q/time]²)."""
    ds = SubgridDataset(path, "train", normalize=False, dtype=torch.float64)
    err = zero = 0.0
    with torch.no_grad():
        for i in range(len(ds)):
            g = ds[i]
            state = {"q": g.x[:, list(ds.input_names).index("state_q")]}
            s = closure.tendencies(g.t, state, ds.mesh)["q"]
            err += float(((s - g.y_tendency[:, 0]) ** 2).mean())
            zero += float((g.y_tendency[:, 0] ** 2).mean())
    return err / len(ds), zero / len(ds)


@pytest.fixture(scope="module")
def trained(kinematic_traj, tmp_path_factory):
    out = tmp_path_factory.mktemp("nodewise") / "run"
    res = train(kinematic_traj, out, TINY | {"model": "nodewise", "epochs": 30, "lr": 3e-3},
                progress=False)
    return res, out


@pytest.mark.parametrize("name", ["nodewise", "nodewise_mean_free"])
def test_trained_tendency_model_beats_the_zero_prediction_on_train(kinematic_traj, trained,
                                                                   name):
    if name == "nodewise":
        res, _ = trained
    else:
        res = train(kinematic_traj, None, TINY | {"model": name, "epochs": 30, "lr": 3e-3},
                    progress=False)
    assert isinstance(res.closure, TendencyClosure)
    rows = res.metrics
    assert "val_tendency_r2" in rows[-1] and rows[-1]["val_flux_r2"] == ""
    assert rows[-1]["train_tendency"] < rows[0]["train_tendency"]
    mse, zero = _train_tendency_mse(res.closure, kinematic_traj)
    assert mse < zero, (mse, zero)


def test_saved_tendency_model_loads_as_a_tendency_closure(trained, kinematic_traj):
    res, out = trained
    assert sorted(p.name for p in out.iterdir() if p.suffix in (".pt", ".csv", ".json")) == \
        ["checkpoint.pt", "config.json", "metrics.csv", "model.pt"]
    ds = SubgridDataset(kinematic_traj, "val", normalize=False, dtype=torch.float64)
    loaded = load_model(out / "model.pt", ds.mesh).closure()
    assert isinstance(loaded, TendencyClosure)
    g = ds[0]
    state = {"q": g.x[:, list(ds.input_names).index("state_q")]}
    a = res.closure.tendencies(g.t, state, ds.mesh)["q"].detach()
    b = loaded.tendencies(g.t, state, ds.mesh)["q"].detach()
    assert torch.equal(a, b) and a.dtype == torch.float64
    with pytest.raises(ArgumentError, match="has no face fluxes.*with_tendency"):
        loaded(0.0, state, ds.mesh)                        # as a flux closure: refused


@pytest.mark.parametrize("setting", [{"dissipation_weight": 1.0}, {"weak_form_weight": 1.0},
                                     {"online_steps": 2}, {"ensemble": 2},
                                     {"model_config": {"heteroscedastic": True}}])
def test_settings_that_need_a_face_flux_are_refused(kinematic_traj, setting):
    name = next(iter(setting))
    with pytest.raises(ArgumentError, match=f"{name}=.*not supported by the tendency model "
                                            "'nodewise'"):
        train(kinematic_traj, None, TINY | {"model": "nodewise", "epochs": 1} | setting,
              progress=False)


# ------------------------------------------------------------------ runs in the model
def _run_totals(model, q0, dt, n):
    V = model.mesh.cell_volume.double()
    totals, scale = [], 0.0
    with torch.no_grad():
        for _, _, s in rollout(model, {"q": q0}, dt, n):
            totals.append(float((V * s["q"]).sum()))
            scale = max(scale, float((V * s["q"].abs()).sum()))
    return np.array(totals), scale


@pytest.fixture(scope="module")
def coarse_runs():
    """200 float64 coarse steps of ``kinematic`` without a closure, with an untrained flux
    closure (``mgn``) and with each untrained tendency model (output scale 0.05)."""
    sc = small_kinematic()
    base = sc.coarse_model()
    mesh = base.mesh
    features = FeaturePipeline.from_scenario(sc)
    F = len(features.names)
    norm = Normalizer(features.names, [0.0] * F, [1.0] * F, ["q"], [0.05])
    x = mesh.cell_center.double()
    q0 = 1.0 + 0.5 * torch.sin(2 * math.pi * x[:, 0]) * torch.cos(2 * math.pi * x[:, 1])
    dt, n = sc.coarse_dt, 200
    runs = {"none": _run_totals(base, q0, dt, n)}
    torch.manual_seed(0)
    mgn = build_model("mgn", mesh, in_features=F, n_vars=1, hidden=8, n_blocks=1).double()
    runs["mgn"] = _run_totals(sc.coarse_model(closure=ModelClosure(mgn, features, norm)), q0,
                              dt, n)
    for name in ("nodewise", "nodewise_mean_free"):
        torch.manual_seed(0)
        net = build_model(name, mesh, in_features=F, n_vars=1, hidden=8, n_blocks=1).double()
        model = with_tendency(sc.coarse_model(), TendencyClosure(net, features, norm))
        runs[name] = _run_totals(model, q0, dt, n)
    return runs


def test_mean_free_tendency_keeps_the_budget_nodewise_does_not(coarse_runs):
    ref, scale = coarse_runs["none"]
    resid = {k: float(np.abs(v[0] - ref).max() / scale) for k, v in coarse_runs.items()}
    assert resid["none"] == 0.0
    assert resid["mgn"] < 1e-12 and resid["nodewise_mean_free"] < 1e-12, resid
    assert resid["nodewise"] > 1e-8, resid
    assert resid["nodewise"] > 1e3 * max(resid["nodewise_mean_free"], 1e-16)


def test_with_tendency_adds_the_tendency_and_forwards_the_model():
    sc = small_kinematic()
    base = sc.coarse_model()
    mesh = base.mesh
    features = FeaturePipeline.from_scenario(sc)
    F = len(features.names)
    torch.manual_seed(1)
    net = build_model("nodewise", mesh, in_features=F, hidden=8, n_blocks=1).double()
    closure = TendencyClosure(net, features, Normalizer(features.names, [0.0] * F, [1.0] * F,
                                                        ["q"], [0.05]))
    model = with_tendency(base, closure)
    assert isinstance(model, TendencyModel) and model.mesh is base.mesh
    q = torch.linspace(0.0, 1.0, mesh.n_cells, dtype=torch.float64)
    with torch.no_grad():
        got = model.rhs(0.3, {"q": q})["q"]
        want = base.rhs(0.3, {"q": q})["q"] + closure.tendencies(0.3, {"q": q}, mesh)["q"]
    assert torch.equal(got, want)
    assert model.diagnose(0.3, {"q": q}) is None
    # a non-finite tendency is blamed on the closure
    found = with_tendency(base, TendencyClosure(_NaNTendency(), features)).diagnose(
        0.3, {"q": q})
    assert found.part == "closure" and found.where == "cells" and found.variable == "q"
    with pytest.raises(ArgumentError, match="must have rhs"):
        with_tendency(object(), closure)
    with pytest.raises(ArgumentError, match="cell tendencies"):
        TendencyClosure(build_model("mgn", mesh, in_features=F, hidden=8, n_blocks=1),
                        features)


class _NaNTendency(torch.nn.Module):
    """A tendency model that returns NaN everywhere."""

    output = "tendency"

    def forward(self, mesh, x):
        return torch.full(x.shape[:-1] + (1,), math.nan, dtype=x.dtype)
