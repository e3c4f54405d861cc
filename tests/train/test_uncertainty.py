"""Uncertainty: the exact variance split, β-NLL that recovers a known noise, calibration
metrics against closed forms and their statistical properties, ensembles as closures."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from meshclosure.closures import FeaturePipeline, ModelClosure, Normalizer
from meshclosure.errors import ArgumentError
from meshclosure.mesh import healpix
from meshclosure.nn import build_model
from meshclosure.testing import assert_conservative
from meshclosure.train.losses import beta_nll
from meshclosure.train.uncertainty import (EnsembleClosure, bootstrap_indices,
                                           calibration_summary, crps_ensemble, crps_gaussian,
                                           ensemble_predict, fit_variance_scale,
                                           interval_coverage, spread_skill_ratio,
                                           variance_split)

F64, F32 = torch.float64, torch.float32


def _gen(seed):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- the variance split
def test_variance_split_is_the_law_of_total_variance_exactly():
    # M members, each the empirical distribution of K samples: the pooled population
    # variance is the mixture's, so it must equal aleatoric + epistemic to rounding
    M, K, shape = 5, 7, (3, 11, 2)
    g = _gen(0)
    centres = 3.0 * torch.randn((M, 1) + shape, generator=g, dtype=F64)
    samples = centres + torch.rand((M, K) + shape, generator=g, dtype=F64) * 2.0
    means, variances = samples.mean(1), samples.var(1, unbiased=False)
    split = variance_split(means, variances)
    pooled = samples.reshape((M * K,) + shape)
    assert torch.allclose(split.mean, pooled.mean(0), rtol=1e-13, atol=0)
    assert torch.allclose(split.total, pooled.var(0, unbiased=False), rtol=1e-12, atol=0)
    assert torch.equal(split.total, split.aleatoric + split.epistemic)
    # epistemic: the variance of the member means with divisor M; deterministic members
    assert torch.allclose(split.epistemic, means.var(0, unbiased=False), rtol=1e-13)
    det = variance_split(means)
    assert torch.equal(det.aleatoric, torch.zeros_like(det.mean))
    assert torch.equal(det.total, split.epistemic)
    with pytest.raises(ArgumentError, match="variances"):
        variance_split(means, variances[:, :1])


# ---------------------------------------------------------------- β-NLL, synthetic noise
def test_beta_nll_recovers_a_known_input_dependent_noise_and_calibrates():
    """y = sin(3x) + σ(x) ε with σ from 0.05 to 0.3: a small MLP with a (mean, log_var)
    output trained with β-NLL (β = 0.5) predicts σ within 10 % on fresh x, and its
    50 % / 90 % intervals cover 40-60 % / 85-95 % after one variance scale fitted on a
    validation set (float32: twice as fast as float64 here, the same accuracy)."""
    torch.manual_seed(0)
    g = _gen(0)

    def sigma(x):
        return 0.05 + 0.125 * (x + 1.0)

    def data(n):
        x = torch.rand(n, 1, generator=g, dtype=F32) * 2.0 - 1.0
        return x, torch.sin(3.0 * x) + sigma(x) * torch.randn(n, 1, generator=g, dtype=F32)

    (xt, yt), (xv, yv), (xs, ys) = data(4000), data(4000), data(20000)
    net = torch.nn.Sequential(torch.nn.Linear(1, 32), torch.nn.Tanh(), torch.nn.Linear(32, 32),
                              torch.nn.Tanh(), torch.nn.Linear(32, 2))
    steps = 600
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        out = net(xt)
        loss = beta_nll(out[:, :1], out[:, 1:], yt, beta=0.5)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        out, val = net(xs), net(xv)
    sd = torch.exp(0.5 * out[:, 1:])
    mare = float(((sd - sigma(xs)) / sigma(xs)).abs().mean())
    assert mare <= 0.10, mare
    s = fit_variance_scale(val[:, :1], val[:, 1:].exp(), yv)
    assert 0.8 < s < 1.25
    var = s * out[:, 1:].exp()
    assert 0.85 <= interval_coverage(out[:, :1], var, ys, 0.9) <= 0.95
    assert 0.40 <= interval_coverage(out[:, :1], var, ys, 0.5) <= 0.60
    # a model blind to the input-dependence (one σ for all) is calibrated on average but
    # not per input: its 90 % interval over-covers the quiet half and under-covers the other
    flat = torch.full_like(var, float(var.mean()))
    quiet = xs[:, 0] < 0
    assert interval_coverage(out[quiet, :1], flat[quiet], ys[quiet], 0.9) > 0.95
    assert interval_coverage(out[~quiet, :1], flat[~quiet], ys[~quiet], 0.9) < 0.85


# ---------------------------------------------------------------- CRPS
def test_crps_gaussian_closed_form_against_integration_and_a_large_fair_ensemble():
    from scipy import integrate, stats

    mu, sd = torch.tensor([0.3, -1.0, 2.0], dtype=F64), torch.tensor([1.0, 0.5, 2.0], dtype=F64)
    y = torch.tensor([0.3, 0.0, -1.5], dtype=F64)
    closed = crps_gaussian(mu, sd, y)
    # the definition, ∫ (F(x) − 1{x >= y})² dx, by quadrature
    for m, s, t, c in zip(mu.tolist(), sd.tolist(), y.tolist(), closed.tolist()):
        left = integrate.quad(lambda x: stats.norm.cdf(x, m, s) ** 2, -np.inf, t)[0]
        right = integrate.quad(lambda x: stats.norm.sf(x, m, s) ** 2, t, np.inf)[0]
        assert abs(c - (left + right)) < 1e-8
    assert abs(float(closed[0]) - (math.sqrt(2) - 1) / math.sqrt(math.pi)) < 1e-14
    # many draws: the fair ensemble estimate agrees to 1 %
    draws = mu + sd * torch.randn(200_000, 3, generator=_gen(1), dtype=F64)
    assert float(((crps_ensemble(draws, y) - closed) / closed).abs().max()) < 0.01
    # a perfect deterministic forecast scores 0; std 0 is the absolute error
    assert torch.equal(crps_gaussian(mu, torch.zeros(3, dtype=F64), mu), torch.zeros(3, dtype=F64))
    assert torch.equal(crps_gaussian(mu, 0.0, y), (y - mu).abs())
    assert torch.equal(crps_ensemble(y.expand(4, 3), y), torch.zeros(3, dtype=F64))


def test_fair_crps_is_unbiased_whatever_the_ensemble_size():
    """Members and truth from N(0, 1): E[CRPS] = E|X − Y| − ½ E|X − X'| = 1/√π for the
    fair estimator at every M; the plain estimator is biased by a factor 1 + 1/M."""
    g, trials, exact = _gen(2), 200_000, 1.0 / math.sqrt(math.pi)
    for M in (2, 4, 16):
        members = torch.randn(M, trials, generator=g, dtype=F64)
        truth = torch.randn(trials, generator=g, dtype=F64)
        fair = crps_ensemble(members, truth)
        plain = crps_ensemble(members, truth, fair=False)
        se = float(fair.std()) / math.sqrt(trials)          # about 0.2 % of the mean
        assert abs(float(fair.mean()) - exact) < 4 * se, (M, float(fair.mean()), se)
        assert abs(float(plain.mean()) - exact * (1 + 1 / M)) < 4 * se, (M, float(plain.mean()))
        assert float(plain.mean()) - exact > 10 * se        # the bias is far outside the noise
    # the sorted-sum pairwise term equals the direct double sum
    x, t = members[:, :50], truth[:50]
    direct = (x - t).abs().mean(0) - (x[:, None] - x[None]).abs().sum((0, 1)) / (2 * 16 * 15)
    assert torch.allclose(crps_ensemble(x, t), direct, rtol=1e-12, atol=1e-14)
    with pytest.raises(ArgumentError, match="M >= 2"):
        crps_ensemble(x[:1], t)


# ---------------------------------------------------------------- spread-skill, coverage
def test_spread_skill_is_one_for_a_calibrated_ensemble():
    g, n, M = _gen(3), 50_000, 5
    centre = torch.randn(n, generator=g, dtype=F64)
    spread = 0.2 + torch.rand(n, generator=g, dtype=F64)
    truth = centre + spread * torch.randn(n, generator=g, dtype=F64)
    members = centre + spread * torch.randn(M, n, generator=g, dtype=F64)
    assert abs(spread_skill_ratio(members, truth) - 1) < 0.02
    # without Fortin's factor the ratio of a perfect ensemble is √(M/(M+1))
    assert abs(spread_skill_ratio(members, truth, correct=False) - math.sqrt(M / (M + 1))) < 0.02
    # the Gaussian form, and an over-dispersed ensemble
    assert abs(spread_skill_ratio((centre, spread ** 2), truth) - 1) < 0.02
    wide = centre + 2.0 * spread * torch.randn(M, n, generator=g, dtype=F64)
    assert spread_skill_ratio(wide, truth) > 1.6
    with pytest.raises(ArgumentError, match="prediction"):
        spread_skill_ratio(members[:1], truth)


def test_coverage_and_the_fitted_variance_scale_on_known_gaussians():
    g, n = _gen(4), 100_000
    mu = torch.randn(n, generator=g, dtype=F64)
    var = 0.1 + torch.rand(n, generator=g, dtype=F64)
    y = mu + var.sqrt() * torch.randn(n, generator=g, dtype=F64)
    for level in (0.5, 0.9):
        assert abs(interval_coverage(mu, var, y, level) - level) < 0.01
    # an over-confident prediction (variance 4x too small): the scale recovers 4
    s = fit_variance_scale(mu, var / 4, y)
    assert abs(s / 4 - 1) < 0.03
    assert interval_coverage(mu, var / 4, y, 0.9) < 0.65
    assert abs(interval_coverage(mu, s * var / 4, y, 0.9) - 0.9) < 0.01
    with pytest.raises(ArgumentError, match="var"):
        fit_variance_scale(mu, var - 1.0, y)
    with pytest.raises(ArgumentError, match="finite"):
        interval_coverage(mu, var, torch.full_like(y, float("nan")))
    with pytest.raises(ArgumentError, match="broadcast"):
        crps_gaussian(mu[:3], var[:3], y)


def test_calibration_summary_after_a_validation_scale():
    """Members that scatter like the truth (σ_e) and predict an aleatoric variance 3x too
    small (σ_a²/3): over-confident; one scale fitted on a validation split makes the test
    split's 50/90 % intervals and spread-skill calibrated. (With few members the sample
    epistemic variance is itself noisy and no single scale calibrates both levels; M = 32
    here.)"""
    g, M = _gen(6), 32

    def split_data(n):
        c = torch.randn(n, 3, generator=g, dtype=F64)
        s_e = 0.5 + torch.rand(n, 3, generator=g, dtype=F64)
        s_a = 0.2 + 0.5 * torch.rand(n, 3, generator=g, dtype=F64)
        means = c + s_e * torch.randn(M, n, 3, generator=g, dtype=F64)
        y = c + s_e * torch.randn(n, 3, generator=g, dtype=F64) + s_a * torch.randn(
            n, 3, generator=g, dtype=F64)
        return means, (s_a ** 2 / 3).expand(M, n, 3), y

    val, test = split_data(20_000), split_data(20_000)
    raw = calibration_summary(*test)
    assert raw["coverage_90"] < 0.87 and raw["spread_skill"] < 0.93
    split = variance_split(val[0], val[1])
    scale = fit_variance_scale(split.mean, split.total, val[2])
    summary = calibration_summary(*test, variance_scale=scale)
    assert abs(summary["coverage_90"] - 0.9) < 0.01 and abs(summary["coverage_50"] - 0.5) < 0.015
    # the scale calibrates mean((y − μ)²/var); the pooled ratio √(Σ var / Σ (y − μ)²)
    # weighs the wide elements more, so it lands near but not at 1 (1.04 here)
    assert abs(summary["spread_skill"] - 1) < 0.06
    assert summary["crps"] < raw["crps"]
    assert abs(summary["sigma_aleatoric"] ** 2 - float(test[1][0].mean())) < 1e-12
    with pytest.raises(ArgumentError, match="variance_scale"):
        calibration_summary(*test, variance_scale=-1.0)


# ---------------------------------------------------------------- ensembles as closures
def _member(mesh, seed, heteroscedastic=True, dtype=F64):
    torch.manual_seed(seed)
    pipe = FeaturePipeline(["q"])
    model = build_model("mgn", mesh, in_features=pipe.n_features, n_vars=1, hidden=8,
                        n_blocks=1, heteroscedastic=heteroscedastic).to(dtype)
    norm = Normalizer(pipe.names, [0.1] * 3, [2.0] * 3, ["q"], [2.5])
    return ModelClosure(model, pipe, norm)


@pytest.fixture(scope="module")
def hp_ensemble():
    mesh = healpix(2)
    members = [_member(mesh, seed) for seed in range(3)]
    q = torch.randn(mesh.n_cells, generator=_gen(5), dtype=F64)
    return mesh, members, q


def test_ensemble_closure_is_the_mean_of_its_members_and_splits_their_variance(hp_ensemble):
    mesh, members, q = hp_ensemble
    ens = EnsembleClosure(members)
    with torch.no_grad():
        flux = ens(0.0, {"q": q}, mesh)["q"]
        preds = [m.predict(0.0, {"q": q}, mesh) for m in members]
        split = ens.split(0.0, {"q": q}, mesh)
    mean = sum(p[0] for p in preds) / 3
    assert torch.allclose(flux, mean[:, 0], rtol=1e-14, atol=1e-15)
    alea = sum(p[1].exp() for p in preds) / 3
    epi = sum((p[0] - mean) ** 2 for p in preds) / 3
    assert torch.allclose(split.aleatoric, alea, rtol=1e-13)
    assert torch.allclose(split.epistemic, epi, rtol=1e-12)
    assert float(split.epistemic.min()) > 0
    assert_conservative(flux, mesh)
    # the offline path on a batch of two states gives the same numbers as the closure
    q2 = torch.stack([q, -2.0 * q])
    x = members[0].normalizer.normalize_inputs(members[0].features(mesh, {"q": q2}))
    with torch.no_grad():
        means, variances = ensemble_predict([m.model for m in members], mesh, x,
                                            normalizer=members[0].normalizer)
        other = EnsembleClosure(members).predict(0.0, {"q": -2.0 * q}, mesh)
    assert means.shape == (3, 2, mesh.n_faces, 1)
    assert torch.allclose(means[:, 0], torch.stack([p[0] for p in preds]), rtol=1e-12,
                          atol=1e-14)
    assert torch.allclose(variances[:, 1], other[1], rtol=1e-12)
    # deterministic members: no aleatoric part; mixing both kinds is refused
    det = [_member(mesh, 10 + s, heteroscedastic=False) for s in range(2)]
    with torch.no_grad():
        d_split = EnsembleClosure(det).split(0.0, {"q": q}, mesh)
    assert torch.equal(d_split.aleatoric, torch.zeros_like(d_split.mean))
    with pytest.raises(ArgumentError, match="all heteroscedastic"):
        EnsembleClosure(det + members[:1]).predict(0.0, {"q": q}, mesh)
    with pytest.raises(ArgumentError, match="mode"):
        EnsembleClosure(members, mode="median")


def test_sampled_ensemble_is_reproducible_conservative_and_draws_the_total_variance(
        hp_ensemble):
    mesh, members, q = hp_ensemble
    a = EnsembleClosure(members, mode="sample", generator=_gen(7))
    b = EnsembleClosure(members, mode="sample", generator=_gen(7))
    with torch.no_grad():
        first, again = a(0.0, {"q": q}, mesh)["q"], b(0.0, {"q": q}, mesh)["q"]
        assert torch.equal(first, again)
        draws = torch.stack([a(0.0, {"q": q}, mesh)["q"] for _ in range(400)])
        split = a.split(0.0, {"q": q}, mesh)
    assert not torch.equal(draws[0], draws[1])
    for d in draws[:5]:
        assert_conservative(d, mesh)
    sd = split.total[:, 0].sqrt()
    assert float(((draws.mean(0) - split.mean[:, 0]).abs() / sd).max()) < 4.5 / 20
    assert float((draws.std(0) / sd - 1).abs().mean()) < 0.1


# ---------------------------------------------------------------- bootstrap
def test_bootstrap_indices_are_seeded_independent_resamples():
    n, M = 1000, 4
    a, b = bootstrap_indices(n, M, seed=3), bootstrap_indices(n, M, seed=3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert all(len(x) == n and x.min() >= 0 and x.max() < n for x in a)
    assert not np.array_equal(a[0], a[1])
    assert not np.array_equal(a[0], bootstrap_indices(n, M, seed=4)[0])
    # member m does not depend on M; each holds about 1 − 1/e of the samples
    assert np.array_equal(bootstrap_indices(n, 2, seed=3)[1], a[1])
    unique = [len(np.unique(x)) / n for x in a]
    assert all(abs(u - (1 - math.exp(-1))) < 0.04 for u in unique)
    with pytest.raises(ArgumentError, match="M=0"):
        bootstrap_indices(n, 0)
