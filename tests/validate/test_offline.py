"""Offline metrics of closures on the tiny kinematic dataset (tests/conftest.py), against
values derived by hand: the truth scores 1, no closure −ȳ²/Var per cell, calibration
metrics of constructed Gaussian and two-member predictions."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from meshclosure.closures import FunctionClosure
from meshclosure.errors import ArgumentError
from meshclosure.fv import divergence
from meshclosure.train.diffusivity import load_table
from meshclosure.train.uncertainty import EnsembleClosure
from meshclosure.validate.offline import offline_metrics, offline_table, predict_table


@pytest.fixture(scope="module")
def tables(kinematic_traj):
    return {s: load_table(kinematic_traj, s) for s in ("test", "ood")}


def _lookup(table):
    """The stored Φ^sgs of the sample at time t: {t: (n_faces,)}."""
    return {round(float(t), 12): table.flux["q"][i] for i, t in enumerate(table.t)}


def truth_closure(*tabs, scale=1.0):
    fluxes = {}
    for tab in tabs:
        fluxes.update(_lookup(tab))
    return FunctionClosure(lambda t, state, mesh: {"q": scale * fluxes[round(float(t), 12)]})


def _per_cell_none_r2(table):
    """Volume-weighted mean over cells of 1 − mean_t y²/Var_t y, y = −div Φ^sgs."""
    y = (-divergence(table.mesh, table.flux["q"].T.contiguous()).T).numpy()
    V = table.mesh.cell_volume.double().numpy()
    var = y.var(0)
    keep = var > 0
    r2 = 1 - (y ** 2).mean(0)[keep] / var[keep]
    return float((V[keep] * r2).sum() / V[keep].sum()), y


def test_truth_scores_one_and_no_closure_its_hand_value(tables, kinematic_traj):
    table = tables["test"]
    truth = offline_metrics(truth_closure(table), table)
    assert truth["r2"] == 1.0 and truth["q.flux.r2"] == 1.0 and truth["q.flux.rmse"] == 0.0
    assert truth["corr"] == pytest.approx(1.0, abs=1e-12)
    assert truth["n_samples"] == 3.0 and "skipped" not in truth
    bands = sorted({k.split(".")[2] for k in truth if ".band" in k})
    assert bands == ["band0", "band1", "band2"]                     # 8x8 plane: edges (2, 3)
    for b in bands:
        assert truth[f"q.tendency.{b}.r2"] == pytest.approx(1.0, abs=1e-12)
    assert sum(truth[f"q.tendency.{b}.fraction"] for b in bands) == pytest.approx(1.0, abs=1e-12)

    none = offline_metrics(None, kinematic_traj, split="test")
    expected, y = _per_cell_none_r2(table)
    assert none["q.tendency.r2"] == pytest.approx(expected, abs=1e-12) and none["r2"] < 0
    assert none["corr"] == 0.0 and none["q.flux.corr"] == 0.0
    # the domain mean of a divergence is 0: the pooled R² of no closure is −ȳ²/Var = 0
    assert abs(none["q.tendency.r2_pooled"]) < 1e-12
    V = table.mesh.cell_volume.double().numpy()
    assert none["q.tendency.rmse"] == pytest.approx(
        math.sqrt((V * (y ** 2).mean(0)).sum() / V.sum()), rel=1e-12)
    # per band: the RMSE of no closure is the band's own RMS, the truth's 0
    from meshclosure.validate.spectra import band_filter, default_band_edges

    yb = np.asarray(band_filter(table.mesh, torch.as_tensor(y),
                                default_band_edges(table.mesh)))
    for b in range(3):
        assert truth[f"q.tendency.band{b}.rmse"] == pytest.approx(0.0, abs=1e-12)
        assert none[f"q.tendency.band{b}.rmse"] == pytest.approx(
            math.sqrt((V * (yb[b] ** 2).mean(0)).sum() / V.sum()), rel=1e-12)


def test_band_rmse_where_the_band_target_is_constant(tables):
    """A band whose target does not vary in time has no R² (skipped, named) but an RMSE."""
    from meshclosure.validate.offline import _bands
    from meshclosure.validate.spectra import default_band_edges

    mesh = tables["test"].mesh
    V = mesh.cell_volume.double()
    target = torch.zeros(3, mesh.n_cells, dtype=torch.float64)
    pred = target + 2.0 * torch.cos(2 * math.pi * mesh.cell_center[:, 0].double())
    out, skipped = {}, {}
    _bands(out, skipped, mesh, "q", pred, target, default_band_edges(mesh), V)
    assert {f"q.tendency.band{b}.r2" for b in range(3)} <= set(skipped)
    # cos(2πx) on the unit square: k = 1, band 0, RMS 2/√2; the other bands 0
    assert out["q.tendency.band0.rmse"] == pytest.approx(math.sqrt(2.0), rel=1e-10)
    assert out["q.tendency.band1.rmse"] == pytest.approx(0.0, abs=1e-10)


def test_a_type_error_inside_a_closure_is_raised_not_retried(tables):
    table = tables["test"]
    calls = []

    def broken(t, state, mesh, transport=None):
        calls.append(transport)
        raise TypeError("a bug inside the closure")

    with pytest.raises(TypeError, match="a bug inside"):
        offline_metrics(broken, table, bands=False)
    assert len(calls) == 1                                     # called once, not retried

    class Tend:
        def __init__(self, with_transport):
            self.seen = []
            if with_transport:
                self.tendencies = self._with
            else:
                self.tendencies = self._without

        def _with(self, t, state, mesh, transport=None):
            self.seen.append(transport)
            return {"q": torch.zeros(mesh.n_cells, dtype=torch.float64)}

        def _without(self, t, state, mesh):
            self.seen.append("none")
            raise TypeError("another bug")

    c = Tend(True)
    offline_metrics(c, table, bands=False)
    assert len(c.seen) == len(table) and all(u is not None for u in c.seen)
    c = Tend(False)
    with pytest.raises(TypeError, match="another bug"):
        offline_metrics(c, table, bands=False)
    assert c.seen == ["none"]


def test_half_the_truth_scores_its_hand_value(tables):
    table = tables["test"]
    half = offline_metrics(truth_closure(table, scale=0.5), table)
    # R²_i = 1 − mean_t (y/2)² / Var_t y = 1 − (1 − R²_i(none)) / 4, linear in R²_i
    expected_none, _ = _per_cell_none_r2(table)
    assert half["q.tendency.r2"] == pytest.approx(1 - (1 - expected_none) / 4, abs=1e-12)
    assert half["q.tendency.corr"] == pytest.approx(1.0, abs=1e-12)


def test_offline_table_over_splits_skips_a_missing_split(tables, kinematic_traj):
    from meshclosure.data import read_dataset

    closures = {"none": None, "truth": truth_closure(tables["test"], tables["ood"])}
    out = offline_table(closures, kinematic_traj, bands=False)
    assert set(out) == {"test", "ood"}
    assert out["ood"]["truth"]["r2"] == 1.0 and out["ood"]["none"]["r2"] < 0
    assert not any(".band" in k for k in out["test"]["truth"])
    one_run = read_dataset(kinematic_traj).isel(run=[0])          # no OOD run
    out = offline_table(closures, one_run, splits=("test", "ood"), bands=False)
    assert set(out) == {"test", "skipped"} and "ood" in out["skipped"]
    with pytest.raises(ArgumentError, match="variables"):
        offline_metrics(None, tables["test"], variables=["zeta"])


class _Gaussian:
    """A duck-typed probabilistic closure: mean = truth + e·σ, variance σ²."""

    variables = ("q",)

    def __init__(self, table, factors):
        self.flux, self.factors = _lookup(table), factors

    def sigma(self, y):
        return 0.01 + y.abs()

    def predict(self, t, state, mesh, transport=None, stage=None):
        y = self.flux[round(float(t), 12)]
        s = self.sigma(y)
        return (y + self.factors * s)[:, None], torch.log(s * s)[:, None]


def test_gaussian_closure_coverage_crps_and_spread_skill(tables):
    table = tables["test"]
    nf = table.mesh.n_faces
    sign = torch.where(torch.arange(nf) % 2 == 0, 1.0, -1.0).double()
    factors = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)[torch.arange(nf) % 3] * sign
    m = offline_metrics(_Gaussian(table, factors), table, bands=False)
    # |e| = 0.5σ inside both intervals (z50 = 0.674, z90 = 1.645), σ inside the 90 % only
    share = lambda k: float((torch.arange(nf) % 3 == k).double().mean())   # noqa: E731
    assert m["q.coverage50"] == pytest.approx(share(0), abs=1e-15)
    assert m["q.coverage90"] == pytest.approx(share(0) + share(1), abs=1e-15)
    y = table.flux["q"].numpy()
    s = 0.01 + np.abs(y)
    z = -factors.numpy()                                           # (y − μ)/σ
    crps = s * (z * (2 * norm.cdf(z) - 1) + 2 * norm.pdf(z) - 1 / math.sqrt(math.pi))
    assert m["q.crps"] == pytest.approx(crps.mean(), rel=1e-12)
    assert m["q.spread_skill"] == pytest.approx(
        math.sqrt((s ** 2).sum() / ((factors.numpy() * s) ** 2).sum()), rel=1e-12)


class _Member:
    """A deterministic ensemble member: truth + offset·δ."""

    variables = ("q",)

    def __init__(self, table, offset):
        self.flux, self.offset = _lookup(table), offset

    def predict(self, t, state, mesh, transport=None, stage=None):
        y = self.flux[round(float(t), 12)]
        return (y + self.offset * (1e-3 + 0.1 * y.abs()))[:, None], None


def test_two_member_ensemble_fair_crps_and_spread_skill(tables):
    """Members y + δ and y + 3δ: fair CRPS = 2δ − (2·2δ)/(2·2·1) = δ; spread² = 2δ²
    (divisor M − 1), error² of the mean 4δ²: ratio √(2/4)·√(3/2) = √3/2; the Gaussian
    N(y + 2δ, δ²) covers nothing at 90 %."""
    table = tables["test"]
    ens = EnsembleClosure([_Member(table, 1.0), _Member(table, 3.0)])
    m = offline_metrics(ens, table, bands=False)
    delta = 1e-3 + 0.1 * np.abs(table.flux["q"].numpy())
    assert m["q.crps"] == pytest.approx(delta.mean(), rel=1e-12)
    assert m["q.spread_skill"] == pytest.approx(math.sqrt(3) / 2, rel=1e-12)
    assert m["q.coverage90"] == 0.0 and m["q.coverage50"] == 0.0
    assert m["q.crps_gaussian"] > 0 and m["q.spread_skill_gaussian"] == pytest.approx(0.5)
    preds = predict_table(ens, table)
    assert torch.allclose(preds["q"].mean, table.flux["q"] + 2 * torch.as_tensor(delta),
                          rtol=1e-14, atol=1e-18)


def test_model_closure_batched_path_matches_the_per_sample_path(tables, kinematic_traj):
    from meshclosure.closures import FeaturePipeline, ModelClosure, Normalizer
    from meshclosure.data import read_dataset
    from meshclosure.nn import build_model

    ds = read_dataset(kinematic_traj)
    pipe = FeaturePipeline.from_config(json.loads(ds.attrs["feature_pipeline"]))
    table = tables["test"]
    torch.manual_seed(0)
    model = build_model("mgn", table.mesh, in_features=pipe.n_features, n_vars=1, hidden=8,
                        n_blocks=1, heteroscedastic=True).double()
    closure = ModelClosure(model, pipe, Normalizer.from_dataset(ds))

    class PerSample:                          # not a ModelClosure: one predict() per sample
        variables = closure.variables

        def predict(self, *args, **kwargs):
            return closure.predict(*args, **kwargs)

    batched = offline_metrics(closure, table, bands=False)
    single = offline_metrics(PerSample(), table, bands=False)
    for key in ("r2", "q.flux.r2", "q.coverage90", "q.crps", "q.spread_skill"):
        assert batched[key] == pytest.approx(single[key], rel=1e-9, abs=1e-12), key
    assert 0.0 <= batched["q.coverage50"] <= batched["q.coverage90"] <= 1.0


@pytest.fixture(scope="module")
def barotropic_sphere(tmp_path_factory):
    """``barotropic`` (vorticity and tracer) on HEALPix nside 8 -> 4: 8 samples, ~4 s."""
    import warnings

    from meshclosure.data import generate
    from meshclosure.data.scenarios import get_scenario

    out = tmp_path_factory.mktemp("validate_offline") / "barotropic_hp.nc"
    scenario = get_scenario("barotropic", "healpix:8", factor=2, spinup_min_time=0.1,
                            spinup_window=0.5, spinup_max_time=0.3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)           # a short, unconverged spin-up
        generate(scenario, out, n_samples=8, every=2, progress=False, allow_unconverged=True)
    return load_table(out, "train")


def test_two_variables_on_a_sphere(barotropic_sphere):
    table = barotropic_sphere
    assert table.variables == ("zeta", "q") and len(table) >= 3
    stored = {round(float(t), 12): {v: table.flux[v][i] for v in table.variables}
              for i, t in enumerate(table.t)}
    truth = FunctionClosure(lambda t, state, mesh: stored[round(float(t), 12)])
    only_q = FunctionClosure(lambda t, state, mesh: {"q": stored[round(float(t), 12)]["q"]})
    m = offline_metrics(truth, table, split="train")
    assert m["r2"] == 1.0 and m["zeta.flux.r2"] == 1.0 and m["q.flux.r2"] == 1.0
    for v in table.variables:            # HEALPix nside 4: bands l < 3, 3 <= l < 5, the rest
        assert [m[f"{v}.tendency.band{b}.k_min"] for b in range(3)] == [0.0, 3.0, 5.0]
        for b in range(3):
            assert m[f"{v}.tendency.band{b}.r2"] == pytest.approx(1.0, abs=1e-10)
    none = offline_metrics(None, table, split="train", bands=False)
    partial = offline_metrics(only_q, table, split="train", bands=False)
    V = table.mesh.cell_volume.double().numpy()
    for v in table.variables:
        y = (-divergence(table.mesh, table.flux[v].T.contiguous()).T).numpy()
        keep = y.var(0) > 0
        r2 = 1 - (y ** 2).mean(0)[keep] / y.var(0)[keep]
        assert none[f"{v}.tendency.r2"] == pytest.approx(
            (V[keep] * r2).sum() / V[keep].sum(), abs=1e-12)
    # headline: the mean over variables; a variable the closure leaves open scores as none
    assert none["r2"] == pytest.approx((none["zeta.tendency.r2"] + none["q.tendency.r2"]) / 2)
    assert partial["zeta.tendency.r2"] == none["zeta.tendency.r2"]
    assert partial["q.tendency.r2"] == 1.0


# ------------------------------------------------------------------ the step-mean target
def _hand_skill(p, y, w):
    """(r2, corr, r2_pooled, rmse) by hand: per-cell R² and Pearson correlation over time,
    weighted means over the cells whose target varies; pooled R²; weighted RMSE."""
    p, y = np.asarray(p, dtype=float), np.asarray(y, dtype=float)
    var = y.var(0)
    keep = var > 0
    r2 = 1 - ((p - y) ** 2).mean(0)[keep] / var[keep]
    dp, dy = p - p.mean(0), y - y.mean(0)
    corr = (dp * dy).mean(0)[keep] / np.sqrt((dp ** 2).mean(0)[keep] * var[keep])
    wk = w[keep]
    W = np.broadcast_to(w, y.shape)
    ym = (W * y).sum() / W.sum()
    pooled = 1 - (W * (p - y) ** 2).sum() / (W * (y - ym) ** 2).sum()
    rmse = math.sqrt((w * ((p - y) ** 2).mean(0)).sum() / w.sum())
    return ((wk * r2).sum() / wk.sum(), (wk * corr).sum() / wk.sum(), pooled, rmse)


def _div(table, flux):
    return (-divergence(table.mesh, flux.T.contiguous()).T).numpy()


def test_load_table_keeps_the_stored_step_mean_flux(tables, kinematic_traj):
    from meshclosure.data import read_dataset

    ds = read_dataset(kinematic_traj)
    table = tables["test"]
    nf = table.mesh.n_faces
    runs, times = np.nonzero(np.asarray(ds["split"].values) == 2)           # test: code 2
    stored = np.asarray(ds["sgs_flux_mean_q"].values)[runs, times][:, :nf]
    assert table.flux_mean is not None and table.flux_mean["q"].dtype == torch.float64
    np.testing.assert_array_equal(table.flux_mean["q"].numpy(), stored)
    # a different field from the instantaneous flux (else the tests below prove nothing)
    assert float((table.flux_mean["q"] - table.flux["q"]).abs().max()) > \
        0.1 * float(table.flux["q"].abs().max())


def test_step_mean_replay_scores_one_and_no_closure_its_hand_value(tables):
    table = tables["test"]
    mean = {round(float(t), 12): table.flux_mean["q"][i] for i, t in enumerate(table.t)}
    replay = FunctionClosure(lambda t, state, mesh: {"q": mean[round(float(t), 12)]})
    m = offline_metrics(replay, table, target="step_mean")
    assert m["r2"] == 1.0 and m["q.flux.r2"] == 1.0 and m["q.flux.rmse"] == 0.0
    assert m["corr"] == pytest.approx(1.0, abs=1e-12)
    for b in range(3):
        assert m[f"q.tendency.band{b}.r2"] == pytest.approx(1.0, abs=1e-12)
    # both at once: the instantaneous keys unchanged, the step mean's prefixed
    both = offline_metrics(replay, table, target="both")
    inst = offline_metrics(replay, table)
    assert {k: both[k] for k in inst} == inst
    assert both["step_mean.r2"] == 1.0 and both["step_mean.q.flux.r2"] == 1.0
    assert {k[len("step_mean."):] for k in both if k.startswith("step_mean.")} == \
        set(m) - {"n_samples"}
    # the step-mean replay against the instantaneous flux: its hand value
    V = table.mesh.cell_volume.double().numpy()
    r2, corr, pooled, rmse = _hand_skill(_div(table, table.flux_mean["q"]),
                                         _div(table, table.flux["q"]), V)
    assert both["q.tendency.r2"] == pytest.approx(r2, abs=1e-12) and both["r2"] == both[
        "q.tendency.r2"]
    assert both["q.tendency.corr"] == pytest.approx(corr, abs=1e-12)
    assert both["q.tendency.r2_pooled"] == pytest.approx(pooled, abs=1e-12)
    assert both["q.tendency.rmse"] == pytest.approx(rmse, rel=1e-12)
    # no closure against the step mean: 1 − mean_t ȳ²/Var_t ȳ per cell
    none = offline_metrics(None, table, target="both", bands=False)
    y = _div(table, table.flux_mean["q"])
    keep = y.var(0) > 0
    want = ((V[keep] * (1 - (y ** 2).mean(0)[keep] / y.var(0)[keep])).sum() / V[keep].sum())
    assert none["step_mean.r2"] == pytest.approx(want, abs=1e-12) and want < 0
    assert none["step_mean.q.tendency.rmse"] == pytest.approx(
        math.sqrt((V * (y ** 2).mean(0)).sum() / V.sum()), rel=1e-12)
    assert none["r2"] == pytest.approx(_per_cell_none_r2(table)[0], abs=1e-12)
    assert none["step_mean.corr"] == 0.0


def test_step_mean_needs_a_trajectory_dataset(barotropic_sphere, tables, kinematic_traj):
    assert barotropic_sphere.flux_mean is None
    for target in ("step_mean", "both"):
        with pytest.raises(ArgumentError, match="trajectory=True") as err:
            offline_metrics(None, barotropic_sphere, split="train", target=target)
        assert err.value.argument == "target"
    with pytest.raises(ArgumentError, match="sgs_flux_mean"):
        offline_table({"none": None}, barotropic_sphere, splits=("train",), target="both")
    with pytest.raises(ArgumentError, match="must be one of"):
        offline_metrics(None, tables["test"], target="mean")
    out = offline_table({"none": None}, kinematic_traj, target="both", bands=False)
    assert out["ood"]["none"]["step_mean.r2"] < 0 and "step_mean.q.flux.r2" in out["test"]["none"]


# ------------------------------------------------------------------ tendency closures
@pytest.mark.parametrize("name", ["nodewise", "nodewise_mean_free"])
def test_tendency_closure_scores_its_own_predictions_hand_value(tables, kinematic_traj, name):
    """An untrained tiny nodewise network: the offline tendency skill (batched on the
    stored inputs) equals the skill computed by hand from its per-sample tendencies
    (features from each state), against −div Φ^sgs and against the step mean; its flux
    keys are skipped with the reason."""
    from meshclosure.closures import FeaturePipeline, Normalizer, TendencyClosure
    from meshclosure.data import read_dataset
    from meshclosure.nn import build_model

    ds = read_dataset(kinematic_traj)
    pipe = FeaturePipeline.from_config(json.loads(ds.attrs["feature_pipeline"]))
    table = tables["test"]
    torch.manual_seed(0)
    net = build_model(name, table.mesh, in_features=pipe.n_features, n_vars=1, hidden=8,
                      n_blocks=1).double()
    closure = TendencyClosure(net, pipe, Normalizer.from_dataset(ds))
    with torch.no_grad():
        p = torch.stack([closure.tendencies(float(table.t[i]), table.sample(i), table.mesh,
                                            transport=table.transport[i])["q"]
                         for i in range(len(table))]).numpy()
    m = offline_metrics(closure, table, target="both")
    V = table.mesh.cell_volume.double().numpy()
    for prefix, flux in (("", table.flux["q"]), ("step_mean.", table.flux_mean["q"])):
        r2, corr, pooled, rmse = _hand_skill(p, _div(table, flux), V)
        assert m[f"{prefix}q.tendency.r2"] == pytest.approx(r2, rel=1e-9, abs=1e-12)
        assert m[f"{prefix}r2"] == m[f"{prefix}q.tendency.r2"]
        assert m[f"{prefix}corr"] == pytest.approx(corr, rel=1e-9, abs=1e-12)
        assert m[f"{prefix}q.tendency.r2_pooled"] == pytest.approx(pooled, rel=1e-9, abs=1e-12)
        assert m[f"{prefix}q.tendency.rmse"] == pytest.approx(rmse, rel=1e-9)
        assert "tendency" in m["skipped"][f"{prefix}q.flux"]
        assert not any(k.startswith(f"{prefix}q.flux") for k in m)
        assert {f"{prefix}q.tendency.band{b}.r2" for b in range(3)} <= set(m)
    assert abs(m["r2"]) > 1e-6 and m["n_samples"] == 3.0
    if name == "nodewise_mean_free":                   # its volume-weighted total is 0
        assert abs((V * p).sum(1)).max() < 1e-12 * (V * abs(p)).sum(1).max()


def test_a_tendency_replay_scores_one(tables):
    """Any object with ``tendencies(t, state, mesh)`` (called per sample): replaying
    −div Φ^sgs scores 1, and the step mean's replay 1 against the step mean."""
    table = tables["test"]

    class Replay:
        def __init__(self, flux):
            self.s = {round(float(t), 12): torch.as_tensor(_div(table, flux)[i])
                      for i, t in enumerate(table.t)}

        def tendencies(self, t, state, mesh):
            return {"q": self.s[round(float(t), 12)]}

    m = offline_metrics(Replay(table.flux["q"]), table, bands=False)
    assert m["r2"] == 1.0 and m["q.tendency.rmse"] == 0.0 and "q.flux" in m["skipped"]
    m = offline_metrics(Replay(table.flux_mean["q"]), table, bands=False, target="step_mean")
    assert m["r2"] == 1.0 and m["corr"] == pytest.approx(1.0, abs=1e-12)
