"""The fallback to physics: learned flux below t1 and the baseline's above t2 exactly, linear in
between, conservative on every family and dtype; thresholds chosen on validation data."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from meshclosure.closures import FeaturePipeline, ModelClosure, Normalizer, as_closure
from meshclosure.errors import ArgumentError
from meshclosure.fv import divergence
from meshclosure.mesh import cartesian, healpix, icosahedral
from meshclosure.nn import build_model
from meshclosure.solver import TracerModel
from meshclosure.testing import assert_conservative, budget_residual
from meshclosure.train import DiffusivityClosure
from meshclosure.train.fallback import (FallbackClosure, NonFiniteSpreadError, blend_fluxes,
                                        choose_thresholds, fallback_weight)
from meshclosure.train.uncertainty import EnsembleClosure

MESHES = {"cartesian": lambda: cartesian(8, 8), "healpix": lambda: healpix(2),
          "icosahedral": lambda: icosahedral(2)}
TOL = {torch.float64: 1e-12, torch.float32: 1e-5}


def _ensemble(mesh, dtype, n=3, mode="mean", generator=None):
    members = []
    for seed in range(n):
        torch.manual_seed(seed)
        pipe = FeaturePipeline(["q"])
        model = build_model("mgn", mesh, in_features=pipe.n_features, n_vars=1, hidden=8,
                            n_blocks=1).to(dtype)
        norm = Normalizer(pipe.names, [0.0] * 3, [1.0] * 3, ["q"], [0.5])
        members.append(ModelClosure(model, pipe, norm))
    return EnsembleClosure(members, mode=mode, generator=generator)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("family", list(MESHES))
def test_fallback_is_exact_at_both_ends_linear_between_and_conservative(family, dtype):
    mesh = MESHES[family]()
    ens = _ensemble(mesh, dtype)
    baseline = DiffusivityClosure("q", K=0.3)
    x = mesh.cell_center.double()
    q = (torch.sin(3.0 * x[:, 0]) + torch.cos(2.0 * x[:, 1])).to(dtype)
    state = {"q": q}
    with torch.no_grad():
        split = ens.split(0.0, state, mesh)
        sigma = split.epistemic[:, 0].sqrt()
        levels = torch.tensor([0.3, 0.7], dtype=torch.float64)
        t1, t2 = (float(v) for v in torch.quantile(sigma.double(), levels))
        fb = FallbackClosure(ens, baseline, t1, t2)
        out = fb(0.0, state, mesh)["q"]
        learned = ens(0.0, state, mesh)["q"]
    base = baseline(0.0, state, mesh)["q"]
    assert out.dtype == dtype
    low, high = sigma <= t1, sigma >= t2
    mid = ~(low | high)
    assert low.sum() > 0 and high.sum() > 0 and mid.sum() > 0
    assert torch.equal(out[low], learned[low])
    assert torch.equal(out[high], base[high])
    # in between: linear in σ_e, w computed independently in float64
    w = ((sigma[mid].double() - t1) / (t2 - t1))
    assert float(w.min()) > 0 and float(w.max()) < 1
    expected = (1 - w) * learned[mid].double() + w * base[mid].double()
    scale = float(torch.cat([learned, base]).abs().max())
    assert float((out[mid].double() - expected).abs().max()) <= 10 * TOL[dtype] * scale
    assert torch.equal(fb.weights(0.0, state, mesh)["q"], fallback_weight(sigma, t1, t2))
    # conservation: Σ V div(Φ) = 0 to rounding
    assert_conservative(out, mesh)
    V = mesh.cell_volume.to(dtype)
    budget = float((V * divergence(mesh, out)).sum())
    assert abs(budget) <= TOL[dtype] * float((V * divergence(mesh, out).abs()).sum())


def test_fallback_with_a_sampled_ensemble_a_separate_spread_and_per_variable_thresholds():
    mesh = healpix(2)
    q = torch.randn(mesh.n_cells, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ens = _ensemble(mesh, torch.float64)
    baseline = DiffusivityClosure("q", K=0.1)
    with torch.no_grad():
        sigma = ens.split(0.0, {"q": q}, mesh).epistemic[:, 0].sqrt()
        t1, t2 = float(sigma.median()), float(sigma.max()) * 1.01
        # a stochastic ensemble as the learned flux: the same draw below t1
        draws = []
        for _ in range(2):
            sampled = _ensemble(mesh, torch.float64, mode="sample",
                                generator=torch.Generator().manual_seed(9))
            fb = FallbackClosure(sampled, baseline, {"q": t1}, [t2])
            draws.append(fb(0.0, {"q": q}, mesh)["q"])
        again = _ensemble(mesh, torch.float64, mode="sample",
                          generator=torch.Generator().manual_seed(9))(0.0, {"q": q}, mesh)["q"]
    assert torch.equal(draws[0], draws[1])
    low = sigma <= t1
    assert torch.equal(draws[0][low], again[low])
    assert_conservative(draws[0], mesh)
    # the learned flux from one closure, the spread from another ensemble
    learned = as_closure(lambda t, s, m: {"q": torch.ones(mesh.n_faces, dtype=torch.float64)})
    with torch.no_grad():
        out = FallbackClosure(learned, baseline, t1, t2, ensemble=ens)(0.0, {"q": q}, mesh)["q"]
    assert torch.equal(out[low], torch.ones_like(out[low]))
    # a baseline silent on q falls back to no closure (zero flux)
    silent = as_closure(lambda t, s, m: {})
    with torch.no_grad():
        zero = FallbackClosure(ens, silent, 0.0, float(sigma.min()) * 0.5)(0.0, {"q": q}, mesh)
    assert torch.equal(zero["q"], torch.zeros_like(zero["q"]))


def test_a_sampled_fallback_in_a_solver_run_keeps_the_total_to_rounding():
    """Through the solver (called with its closure context at every stage): the total of q
    changes only by rounding over 20 SSP-RK3 steps, with a stochastic ensemble blended into
    a diffusivity baseline."""
    mesh = healpix(2)
    ens = _ensemble(mesh, torch.float64, mode="sample", generator=torch.Generator().manual_seed(3))
    x = mesh.cell_center.double()
    q = torch.exp(-4.0 * ((x - torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)) ** 2).sum(1))
    with torch.no_grad():
        sigma = ens.split(0.0, {"q": q}, mesh).epistemic[:, 0].sqrt()
        fb = FallbackClosure(ens, DiffusivityClosure("q", K=0.05), float(sigma.quantile(0.3)),
                             float(sigma.quantile(0.7)))
        U = 0.2 * mesh.face_area.double() * mesh.face_normal.double()[:, 2]
        model = TracerModel(mesh, U, closure=fb)
        V = mesh.cell_volume.double()
        residual, final = budget_residual(model, {"q": q}, 0.01, 20, lambda s: (V * s["q"]).sum(),
                                          lambda t, s: 0.0)
    assert abs(residual) <= 1e-12 * float((V * q.abs()).sum())
    assert float((final["q"] - q).abs().max()) > 1e-4        # the run did move q


def test_fallback_refuses_what_it_cannot_blend():
    mesh = cartesian(6, 6)
    ens = _ensemble(mesh, torch.float64, n=2)
    base = DiffusivityClosure("q", K=0.1)
    learned = as_closure(lambda t, s, m: {"q": torch.zeros(mesh.n_faces)})
    with pytest.raises(ArgumentError, match="t2"):
        FallbackClosure(ens, base, 1.0, 1.0)
    with pytest.raises(ArgumentError, match="t1"):
        FallbackClosure(ens, base, -1.0, 1.0)
    with pytest.raises(ArgumentError, match="missing"):
        FallbackClosure(ens, base, {"b": 0.1}, 1.0)
    with pytest.raises(ArgumentError, match="ensemble"):
        FallbackClosure(learned, base, 0.1, 1.0)
    q = torch.zeros(mesh.n_cells, dtype=torch.float64)
    extra = as_closure(lambda t, s, m: {"q": torch.zeros(mesh.n_faces, dtype=torch.float64),
                                        "b": torch.zeros(mesh.n_faces, dtype=torch.float64)})
    with pytest.raises(ArgumentError, match="closes variables"), torch.no_grad():
        FallbackClosure(ens, extra, 0.1, 1.0)(0.0, {"q": q}, mesh)
    with pytest.raises(NonFiniteSpreadError, match="not finite"), torch.no_grad():
        FallbackClosure(ens, base, 0.1, 1.0)(0.0, {"q": q + float("nan")}, mesh)
    # NaN in a baseline flux where w = 0 does not leak into the learned faces
    nan = torch.tensor([float("nan"), 2.0])
    assert torch.equal(blend_fluxes(torch.ones(2), nan, torch.tensor([0.0, 5.0]), 1.0, 2.0),
                       torch.tensor([1.0, 2.0]))


def test_thresholds_chosen_on_validation_beat_either_closure_alone():
    """The learned error grows with σ_e (3 σ_e η), the baseline's does not (η): learned is
    better below σ_e = 1/3. With the same η in both (errors fully correlated, as when both
    miss the same unpredictable part of the flux) the best blend is a switch at 1/3; with
    independent errors it is a wide ramp (the blend also averages the two errors). Either
    way the chosen blend beats both closures on the validation data."""
    rng = np.random.default_rng(0)
    n = 20_000
    sigma = rng.uniform(0.0, 1.0, n)
    eta = rng.normal(size=n)
    switch = choose_thresholds(sigma, 3.0 * sigma * eta, eta)
    assert switch.mse_blend < 0.8 * min(switch.mse_learned, switch.mse_baseline)
    assert 0.25 <= switch.t1 < 1 / 3 < switch.t2 <= 0.45
    assert abs(switch.fraction_learned - 0.3) < 0.03
    e_learned, e_base = 3.0 * sigma * rng.normal(size=n), rng.normal(size=n)
    choice = choose_thresholds(sigma, e_learned, e_base)
    assert choice.mse_blend < 0.8 * min(choice.mse_learned, choice.mse_baseline)
    assert choice.t1 < 1 / 3 < choice.t2
    # the blend MSE it reports is the blend's
    w = np.clip((sigma - choice.t1) / (choice.t2 - choice.t1), 0, 1)
    assert abs(np.mean(((1 - w) * e_learned + w * e_base) ** 2) - choice.mse_blend) < 1e-12
    # a learned closure better everywhere: never fall back on anything seen in validation
    never = choose_thresholds(sigma, 0.1 * e_learned, e_base)
    assert never.t1 == sigma.max() and never.fraction_learned == 1.0
    assert never.mse_blend == never.mse_learned
    with pytest.raises(ArgumentError, match="members agree"):
        choose_thresholds(np.zeros(5), np.ones(5), np.ones(5))
    with pytest.raises(ArgumentError, match="one value per validation face"):
        choose_thresholds(sigma, e_learned[:10], e_base)
