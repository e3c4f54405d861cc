"""Validation metrics against hand-computed values on tiny inputs (issue 12, "Must show")."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from meshclosure.errors import ArgumentError
from meshclosure.train.skill import pooled_r2
from meshclosure.validate.metrics import (Skill, extremes_distance, percentiles, similarity,
                                          similarity_table, skill, spectrum_distance,
                                          wasserstein)

# 2 points x 3 times: point 0 predicted exactly; point 1 target (1, 2, 3), prediction (1, 1, 4)
PRED = np.array([[0.0, 1.0], [2.0, 1.0], [4.0, 4.0]])
TARGET = np.array([[0.0, 1.0], [2.0, 2.0], [4.0, 3.0]])
W = np.array([1.0, 3.0])


def test_skill_per_point_r2_and_correlation_match_hand_values():
    s = skill(PRED, TARGET, weights=W)
    # point 1: MSE = (0 + 1 + 1)/3 = 2/3, Var = 2/3 -> R² = 0;
    # deviations p − 2 = (−1, −1, 2), y − 2 = (−1, 0, 1): corr = 3/√(6·2) = √3/2
    assert isinstance(s, Skill)
    assert s.r2 == pytest.approx((1 * 1.0 + 3 * 0.0) / 4, abs=1e-15)
    assert s.corr == pytest.approx((1 * 1.0 + 3 * math.sqrt(3) / 2) / 4, abs=1e-15)
    assert s.rmse == pytest.approx(math.sqrt((1 * 0.0 + 3 * 2 / 3) / 4), abs=1e-15)
    assert (s.n, s.n_left_out) == (2, 0)
    # pooled, weights repeated over time: by hand from the 6 elements
    w = np.tile(W, (3, 1))
    ym = (w * TARGET).sum() / w.sum()
    pm = (w * PRED).sum() / w.sum()
    r2 = 1 - (w * (PRED - TARGET) ** 2).sum() / (w * (TARGET - ym) ** 2).sum()
    cov = (w * (PRED - pm) * (TARGET - ym)).sum()
    corr = cov / math.sqrt((w * (PRED - pm) ** 2).sum() * (w * (TARGET - ym) ** 2).sum())
    assert s.r2_pooled == pytest.approx(r2, abs=1e-14)
    assert s.corr_pooled == pytest.approx(corr, abs=1e-14)
    # unweighted pooled R² is the training package's pooled_r2; tensors are accepted
    u = skill(torch.tensor(PRED), torch.tensor(TARGET))
    assert u.r2_pooled == pytest.approx(pooled_r2(torch.tensor(PRED), torch.tensor(TARGET)),
                                        abs=1e-14)
    assert u.r2 == pytest.approx(0.5, abs=1e-15)


def test_skill_perfect_and_no_closure():
    rng = np.random.default_rng(0)
    y = rng.normal(0.3, 1.0, size=(5, 7))
    perfect = skill(y, y, weights=rng.uniform(0.5, 2.0, 7))
    assert perfect.r2 == 1.0 and perfect.r2_pooled == 1.0 and perfect.rmse == 0.0
    assert perfect.corr == pytest.approx(1.0, abs=1e-14)
    # no closure predicts 0: R²_i = 1 − mean_t y²/Var_t y = −ȳ_i²/Var_t y_i; corr 0
    none = skill(np.zeros_like(y), y)
    expected = np.mean(1 - (y ** 2).mean(0) / y.var(0))
    assert none.r2 == pytest.approx(expected, abs=1e-13)
    assert none.r2 == pytest.approx(np.mean(-y.mean(0) ** 2 / y.var(0)), abs=1e-13)
    assert none.corr == 0.0 and none.corr_pooled == 0.0


def test_skill_pooled_centre_reproduces_the_benchmark_code():
    """Ross et al.'s test_offline divides by mean_t (y − mean of all)²."""
    rng = np.random.default_rng(1)
    y = rng.normal(1.0, 1.0, size=(6, 4))
    p = y + rng.normal(0.0, 0.5, size=y.shape)
    s = skill(p, y, centre="pooled")
    expected = np.mean(1 - ((p - y) ** 2).mean(0) / ((y - y.mean()) ** 2).mean(0))
    assert s.r2 == pytest.approx(expected, abs=1e-14)
    assert s.r2 > skill(p, y).r2         # a larger denominator (the spatial mean's spread)


def test_skill_leaves_out_points_constant_in_time_and_counts_them():
    y = np.array([[1.0, 5.0, 0.0], [3.0, 5.0, 1.0]])
    p = np.array([[1.0, 4.0, 0.0], [3.0, 6.0, 0.0]])
    s = skill(p, y, weights=[1.0, 10.0, 1.0])
    # point 0 perfect (R² 1); point 1 constant target: left out; point 2: MSE 1/2, Var 1/4
    assert (s.n, s.n_left_out) == (2, 1)
    assert s.r2 == pytest.approx((1.0 + (1 - 0.5 / 0.25)) / 2, abs=1e-15)
    # ... but its error counts in the RMSE
    assert s.rmse == pytest.approx(math.sqrt((0 + 10 * 1.0 + 0.5) / 12), abs=1e-15)
    with pytest.raises(ArgumentError, match="must vary in time"):
        skill(p[:, 1:2], y[:, 1:2])


@pytest.mark.parametrize("kwargs, match", [
    (dict(pred=np.zeros((3, 2)), target=np.ones((3, 3))), "pred="),
    (dict(pred=np.zeros((1, 2)), target=np.ones((1, 2))), "T >= 2"),
    (dict(pred=np.zeros(3), target=np.ones(3)), "must have 2 dims"),
    (dict(pred=np.full((2, 2), np.nan), target=np.ones((2, 2))), "non-finite"),
    (dict(pred=PRED, target=TARGET, weights=[1.0, -1.0]), ">= 0"),
    (dict(pred=PRED, target=TARGET, weights=[1.0, 1.0, 1.0]), "broadcast"),
    (dict(pred=PRED, target=TARGET, centre="space"), "centre="),
])
def test_skill_rejects_bad_input(kwargs, match):
    with pytest.raises(ArgumentError, match=match):
        skill(**kwargs)


def test_wasserstein_of_shifted_distributions_is_the_shift():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(4, 50))
    area = rng.uniform(0.5, 1.5, size=50)           # cell areas, repeated over time
    assert wasserstein(a, a + 0.3) == pytest.approx(0.3, abs=1e-12)
    assert wasserstein(a, a - 0.7, area, area) == pytest.approx(0.7, abs=1e-12)
    # hand value: a = {0: 3/4, 1: 1/4}, b = {0: 1/2, 1: 1/2}: ∫|F_a − F_b| = 1/4
    assert wasserstein([0.0, 1.0], [0.0, 1.0], [3.0, 1.0]) == pytest.approx(0.25, abs=1e-15)
    # the two marginals may have different sizes
    assert wasserstein([0.0, 2.0], [1.0]) == pytest.approx(1.0, abs=1e-15)
    with pytest.raises(ArgumentError, match="weights_b"):
        wasserstein(a, a, weights_b=np.ones(3))


def test_percentiles_and_extremes():
    rng = np.random.default_rng(3)
    x = rng.normal(size=1000)
    np.testing.assert_allclose(percentiles(x, (50.0, 99.0, 99.9)),
                               np.percentile(x, (50.0, 99.0, 99.9), method="hazen"),
                               rtol=0, atol=1e-14)
    # weights: sample 1 holds 3/4 of the mass: positions 37.5 and 87.5
    assert percentiles([2.0, 1.0], 50.0, weights=[1.0, 3.0]) == pytest.approx(1.25, abs=1e-15)
    assert percentiles([2.0, 1.0], 10.0, weights=[1.0, 3.0]) == 1.0          # clamped
    # zero-weight values are ignored
    assert percentiles([1.0, 100.0], 100.0, weights=[1.0, 0.0]) == 1.0
    assert extremes_distance(x, x + 2.0) == pytest.approx(2.0, abs=1e-12)
    assert extremes_distance(x, 3 * x, q=(99.0,)) == pytest.approx(
        2 * np.percentile(x, 99.0, method="hazen"), abs=1e-12)
    with pytest.raises(ArgumentError, match="q="):
        percentiles(x, (-1.0,))


def test_similarity_scores_and_table():
    assert similarity(0.0, 2.0) == 1.0                 # like the truth
    assert similarity(2.0, 2.0) == 0.0                 # like no closure
    assert similarity(3.0, 2.0) == -0.5                # worse than no closure
    assert similarity(math.inf, 2.0) == -math.inf        # blew up inside the window
    for bad in (float("nan"), -1.0):
        with pytest.raises(ArgumentError, match="d_model"):
            similarity(bad, 1.0)
    for ref in (0.0, math.inf):
        with pytest.raises(ArgumentError, match="d_none"):
            similarity(0.5, ref)
    table = similarity_table({
        "none": {"wasserstein_q": 2.0, "spectrum_q": 4.0, "mean_q": 0.0},
        "learned": {"wasserstein_q": 1.0, "spectrum_q": 1.0, "mean_q": 0.1},
        "truth_replay": {"wasserstein_q": 0.0, "spectrum_q": 0.0, "mean_q": 0.0}})
    assert table["learned"] == {"wasserstein_q": 0.5, "spectrum_q": 0.75, "mean": 0.625}
    assert table["truth_replay"]["mean"] == 1.0
    assert table["none"] == {"wasserstein_q": 0.0, "spectrum_q": 0.0, "mean": 0.0}
    assert list(table["skipped"]) == ["mean_q"]
    with pytest.raises(ArgumentError, match="metrics of the 'none' row"):
        similarity_table({"none": {"a": 1.0}, "m": {"b": 1.0}})
    # one rule for every stage: inf -> -inf, d_none 0 or inf -> skipped and named,
    # a row with nothing left -> mean NaN with a note on that row
    table = similarity_table({"none": {"a": 2.0, "b": math.inf, "c": 0.0},
                              "blown": {"a": math.inf, "b": math.inf, "c": math.inf},
                              "good": {"a": 1.0, "b": 3.0, "c": 1.0}})
    assert table["blown"] == {"a": -math.inf, "mean": -math.inf}
    assert table["good"] == {"a": 0.5, "mean": 0.5}
    assert sorted(table["skipped"]) == ["b", "c"] and "inf" in table["skipped"]["b"]
    assert "notes" not in table
    table = similarity_table({"none": {"a": 0.0}, "m": {"a": 1.0}})
    assert math.isnan(table["m"]["mean"]) and math.isnan(table["none"]["mean"])
    assert "every metric (a)" in table["notes"]["m"]
    with pytest.raises(ArgumentError, match="d_model|distances"):
        similarity_table({"none": {"a": 1.0}, "m": {"a": float("nan")}})
    with pytest.raises(ArgumentError, match="'notes'"):
        similarity_table({"none": {"a": 1.0}, "notes": {"a": 1.0}})


def test_spectrum_distance_over_the_stated_band():
    k = np.arange(6)
    a = np.array([100.0, 1.0, 2.0, 3.0, 4.0, 50.0])
    b = np.array([0.0, 1.0, 4.0, 3.0, 4.0, 0.0])
    # 0 < k < 5: differences (0, 2, 0, 0) -> RMSE 1; k = 0 (the mean) and k >= kmax ignored
    assert spectrum_distance(k, a, b, kmax=5) == pytest.approx(1.0, abs=1e-15)
    assert spectrum_distance(k, a, b, kmax=2.5) == pytest.approx(math.sqrt(2.0), abs=1e-15)
    # on log10 power: log10(2) − log10(4) at k = 2 only
    assert spectrum_distance(k, a, b, kmax=5, log=True) == pytest.approx(
        math.log10(2.0) / 2, abs=1e-15)
    # default: 2/3 of the largest k (here 10/3: k = 1, 2, 3)
    assert spectrum_distance(k, a, b) == pytest.approx(math.sqrt(4 / 3), abs=1e-15)
    with pytest.raises(ArgumentError, match="positive power"):
        spectrum_distance(k, a - 2.0, b, kmax=5, log=True)
    with pytest.raises(ArgumentError, match="P_b"):
        spectrum_distance(k, a, b[:3], kmax=5)
