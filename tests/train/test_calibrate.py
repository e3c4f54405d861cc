"""Calibration on datasets, baseline closures rebuilt from JSON, and K_eff(N) of any closure."""
from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch

from meshclosure.data import SubgridDataset, generate, read_dataset
from meshclosure.data.scenarios import Scenario, get_scenario
from meshclosure.errors import ArgumentError, OutputExistsError
from meshclosure.fv import divergence
from meshclosure.train import DiffusivityClosure, binned_diffusivity, fit_power_law
from meshclosure.train.calibrate import (_predict, baseline_closures, calibrate,
                                         load_calibration, save_calibration, summary)
from meshclosure.train.diffusivity import (effective_diffusivity, keff_error, load_table,
                                           plot_effective_diffusivity)

SCENARIOS = {
    "kinematic": (dict(mesh="cartesian:32", factor=4, spinup_time=0.5), 12, 3),
    "barotropic": (dict(mesh="cartesian:32", factor=4, spinup_min_time=0.5, spinup_window=0.5,
                        spinup_max_time=1.0), 6, 0),
    "convection": (dict(spinup_time=5.0), 6, 0),
}


def _make(tmp_path_factory, name):
    config, n, ood = SCENARIOS[name]
    out = tmp_path_factory.mktemp("cal") / f"{name}.nc"
    with warnings.catch_warnings():      # the tiny barotropic spin-up does not converge
        warnings.simplefilter("ignore", RuntimeWarning)
        generate(get_scenario(name, **config), out, n_samples=n, ood_samples=ood,
                 progress=False, allow_unconverged=True)
    return out


@pytest.fixture(scope="module")
def kin(tmp_path_factory):
    return _make(tmp_path_factory, "kinematic")


@pytest.fixture(scope="module")
def datasets(tmp_path_factory, kin):
    return {"kinematic": kin, "barotropic": _make(tmp_path_factory, "barotropic"),
            "convection": _make(tmp_path_factory, "convection")}


@pytest.fixture(scope="module")
def kin_cal(kin):
    return calibrate(kin)


def test_kinematic_calibration_power_law_keff_and_json_round_trip(kin, kin_cal, tmp_path):
    cal = kin_cal
    assert cal["scenario"] == "kinematic" and set(cal["baselines"]) == {"none", "constant",
                                                                       "power_law"}
    assert cal["n_samples"] == {"train": 8, "val": 2, "test": 2, "ood": 3}
    law = cal["baselines"]["power_law"]["closes"]["q"]
    # the same fit as fit_power_law on the training faces, N = face mean of input N
    table = load_table(kin, "train")
    from meshclosure.train.baselines import face_gradient, face_mean
    G = face_gradient(table.mesh, table.state["q"].T).T
    N = face_mean(table.mesh, table.inputs["N"].T).T
    direct = fit_power_law(N, G, table.flux["q"])
    assert law["alpha"] == pytest.approx(direct.alpha, rel=1e-12)
    assert law["beta"] == pytest.approx(direct.beta, rel=1e-12)
    assert law["alpha_interval"][0] < law["alpha"] < law["alpha_interval"][1]
    assert law["N_range"]["min"] <= law["N_range"]["p50"] <= law["N_range"]["max"]
    assert law["N_range"]["n"] == 8 * table.mesh.n_faces
    for split in ("train", "val", "test", "ood"):
        e = cal["keff"]["q"][split]["error"]["power_law"]
        assert math.isfinite(e) and e >= 0
        errs = cal["baselines"]["none"]["errors"][split]["q"]
        # no closure: MSE is the mean square of the flux, R2 = -mean^2/var <= 0
        f = load_table(kin, split).flux["q"]
        assert errs["mse"] == pytest.approx(float((f ** 2).mean()), rel=1e-12)
        assert errs["r2"] <= 0
    # OOD curves span the OOD run's N (N_mean doubled), the others the training range
    k = cal["keff"]["q"]
    assert k["val"]["nodes"] == k["nodes"] and k["nodes"][-1] == k["train_range"][1]
    assert k["ood"]["nodes"][-1] > 1.5 * k["train_range"][1]
    # least squares on the training faces cannot do worse than K = 0 there
    assert cal["baselines"]["constant"]["errors"]["train"]["q"]["r2"] >= -1e-12
    path = save_calibration(cal, tmp_path / "calibration.json")
    back = load_calibration(path)
    assert back == json.loads(json.dumps(cal))
    with pytest.raises(OutputExistsError):
        save_calibration(cal, path)
    assert "power_law" in summary(back)


@pytest.mark.parametrize("name", ["kinematic", "barotropic", "convection"])
def test_closures_from_json_reproduce_the_fits_conserve_and_run(name, datasets, tmp_path):
    cal = calibrate(datasets[name])
    expected = {"kinematic": {"none", "constant", "power_law"},
                "barotropic": {"none", "constant", "power_law", "smagorinsky", "leith"},
                "convection": {"none", "constant", "convective"}}[name]
    assert set(cal["baselines"]) == expected
    for bname, entry in cal["baselines"].items():   # a coefficient clipped to 0 says why
        for spec in entry["closes"].values():
            if spec.get("K") == 0.0 or spec.get("c") == 0.0:
                assert "not down-gradient on average" in spec["warning"]
                assert any(w.startswith(bname + ": ") for w in cal["warnings"])
    back = load_calibration(save_calibration(cal, tmp_path / "c.json"))
    for entry in back["baselines"].values():         # tiny runs may fit c = 0: test c > 0
        for spec in entry["closes"].values():
            for key in ("K", "c", "K0"):
                if spec.get(key) == 0.0:
                    spec[key] = 0.1
    closures = baseline_closures(back)
    assert closures["none"] is None
    table = load_table(datasets[name], "val")
    mesh = table.mesh
    V = mesh.cell_volume.double()
    scenario = Scenario.from_config(cal["scenario_config"])
    for bname, closure in closures.items():
        if closure is None:
            continue
        for i in range(len(table)):
            phi = closure(float(table.t[i]), table.sample(i), mesh)
            for var, spec in back["baselines"][bname]["closes"].items():
                want = _predict(var, spec, table)[i]
                assert float(want.abs().max()) > 0
                assert torch.allclose(phi[var], want, rtol=1e-9,
                                      atol=1e-12 * float(want.abs().max() + 1e-300))
                tend = -divergence(mesh, phi[var])
                assert abs(float((V * tend).sum())) <= 1e-13 * float((V * tend.abs()).sum()
                                                                     + 1e-300)
    # in the coarse model, each adds exactly -div(Φ) to the tendency; sums compose
    t0, s0 = float(table.t[0]), table.sample(0)
    bare = scenario.coarse_model().rhs(t0, s0)
    for closure in [c for c in closures.values() if c is not None] + [
            closures["constant"] + 0.5 * closures["constant"]]:
        rhs = scenario.coarse_model(closure=closure).rhs(t0, s0)
        for var, phi in closure(t0, s0, mesh).items():
            want = bare[var] - divergence(mesh, phi)
            assert torch.allclose(rhs[var], want, rtol=1e-9,
                                  atol=1e-9 * float(want.abs().max()))


def test_effective_diffusivity_of_the_truth_is_the_binned_regression(kin):
    nodes, K = effective_diffusivity(None, kin, "train")
    # independently, from the file's arrays (as tests/data/test_kinematic_physics.py does)
    ds = read_dataset(kin)
    train = np.asarray(ds["split"].values) == 0
    sub = SubgridDataset(kin, "train")
    mesh = sub.mesh
    a, b = (mesh.face_cells[k].numpy() for k in (0, 1))
    Q = np.asarray(ds["state_q"].values)[train]
    N = np.asarray(ds["input_N"].values)[train]
    flux = np.asarray(ds["sgs_flux_q"].values)[train][:, :mesh.n_faces]
    G = -(Q[:, b] - Q[:, a]) * (mesh.face_area / mesh.cell_distance).numpy()
    Nf = 0.5 * (N[:, a] + N[:, b])
    assert nodes == pytest.approx(np.linspace(Nf.min(), Nf.max(), 8), rel=1e-12)
    assert K == pytest.approx(binned_diffusivity(flux, G, Nf, nodes), rel=1e-10)


@pytest.mark.parametrize("split", ["train", "ood"])
def test_a_constant_diffusivity_has_K_in_every_bin(kin, split):
    nodes, K = effective_diffusivity(DiffusivityClosure("q", K=0.37), kin, split)
    assert np.all(np.isfinite(K)) and K == pytest.approx(np.full(len(nodes), 0.37), rel=1e-12)
    assert keff_error(K, np.full(len(nodes), 0.37)) < 1e-12


def test_effective_diffusivity_of_a_learned_closure(kin):
    from meshclosure.closures import FeaturePipeline, ModelClosure, Normalizer
    from meshclosure.nn import build_model

    sub = SubgridDataset(kin, "train")
    scenario = Scenario.from_config(sub.config)
    features = FeaturePipeline.from_scenario(scenario)
    torch.manual_seed(0)
    net = build_model("mgn", sub.mesh, in_features=len(sub.input_names), n_vars=1)
    closure = ModelClosure(net, features, Normalizer.from_stats(sub.stats))
    nodes, K = effective_diffusivity(closure, kin, "train")
    # the same regression on fluxes computed sample by sample
    table = load_table(kin, "train")
    with torch.no_grad():
        phi = torch.stack([closure(float(table.t[i]), table.sample(i), table.mesh)["q"]
                           for i in range(len(table))]).double()
    from meshclosure.train.baselines import face_gradient, face_mean
    G = face_gradient(table.mesh, table.state["q"].T).T
    N = face_mean(table.mesh, table.inputs["N"].T).T
    assert np.all(np.isfinite(K)) and np.abs(K).max() > 0
    # batched on the stored inputs = the closure called sample by sample (float32 model)
    assert K == pytest.approx(binned_diffusivity(phi, G, N, nodes), rel=1e-5, abs=1e-12)
    _, K_one = effective_diffusivity(closure, kin, "train", nodes=nodes, batch_size=1)
    assert K_one == pytest.approx(K, rel=1e-5, abs=1e-12)


def test_keff_error_and_the_figure(kin, kin_cal, tmp_path):
    k = kin_cal["keff"]["q"]
    truth = np.array(k["train"]["truth"], dtype=float)
    assert keff_error(truth, truth) == 0.0
    assert keff_error(2 * truth, truth) == pytest.approx(1.0)
    nodes = np.array(k["nodes"])
    inside = keff_error(2 * truth, truth, nodes, (nodes[0], nodes[2]))
    assert inside == pytest.approx(1.0)
    curves = {"truth": (nodes, truth), "power law": (nodes, np.array(k["train"]["power_law"])),
              "constant": (nodes, np.array(k["train"]["constant"]))}
    _, ood_truth = effective_diffusivity(None, kin, "ood")
    nodes_ood, _ = effective_diffusivity(None, kin, "ood")
    curves["truth (OOD)"] = (nodes_ood, ood_truth)
    path = tmp_path / "keff.png"
    fig = plot_effective_diffusivity(curves, train_range=k["train_range"],
                                     ood_range=(nodes_ood[0], nodes_ood[-1]), path=path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and len(fig.axes[0].lines) == 4
    with pytest.raises(OutputExistsError):
        plot_effective_diffusivity(curves, path=path)
    with pytest.raises(ArgumentError, match="must end in .png, .pdf, .svg"):
        plot_effective_diffusivity(curves, path=tmp_path / "keff.jpg")
    with pytest.raises(ArgumentError, match="K=\\(2,\\)"):
        keff_error([1.0, 2.0], [1.0, 2.0, 3.0])


def test_bad_arguments_name_themselves(kin, tmp_path):
    with pytest.raises(ArgumentError, match="n_nodes=1"):
        calibrate(kin, n_nodes=1)
    with pytest.raises(ValueError, match="split must be one of"):
        calibrate(kin, split="training")
    with pytest.raises(ArgumentError, match="var='zeta'"):
        effective_diffusivity(None, kin, var="zeta")
    with pytest.raises(ArgumentError, match="measure='speed'"):
        effective_diffusivity(None, kin, measure="speed")
    with pytest.raises(ArgumentError, match="calibrate\\(\\) result"):
        baseline_closures({"baselines": {}})
    with pytest.raises(ArgumentError, match="calibration"):
        load_calibration(_write(tmp_path / "x.json", {"format": "other"}))


def _write(path, obj):
    path.write_text(json.dumps(obj))
    return path
