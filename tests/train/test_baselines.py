"""Fitted eddy diffusivities: known coefficients recovered, honest intervals, conservative
closures that dissipate."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from meshclosure.errors import ArgumentError
from meshclosure.fv import divergence
from meshclosure.mesh import cartesian, healpix
from meshclosure.train import (DiffusivityClosure, face_gradient, face_mean, fit_constant,
                               fit_power_law)


def _synthetic(rng, n=600, alpha=0.02, beta=1.3, noise=0.2):
    N = rng.uniform(0.2, 2.0, n)
    G = rng.normal(0.0, 1.0, n)
    K = alpha * N ** beta
    flux = K * G + noise * alpha * rng.normal(0.0, 1.0, n)
    return N, G, flux


def test_power_law_recovers_known_coefficients_and_its_intervals_cover_them():
    rng = np.random.default_rng(0)
    hits_a = hits_b = 0
    reps = 200
    for _ in range(reps):
        N, G, flux = _synthetic(rng)
        fit = fit_power_law(N, G, flux)
        hits_a += fit.alpha_interval[0] <= 0.02 <= fit.alpha_interval[1]
        hits_b += fit.beta_interval[0] <= 1.3 <= fit.beta_interval[1]
    # 95 % intervals: coverage within sampling error of 0.95 (±3 binomial sd ≈ ±0.046)
    assert 0.90 <= hits_a / reps <= 0.995 and 0.90 <= hits_b / reps <= 0.995
    N, G, flux = _synthetic(rng, n=20000)
    fit = fit_power_law(N, G, flux)
    assert fit.alpha == pytest.approx(0.02, rel=0.02) and fit.beta == pytest.approx(1.3, abs=0.02)
    assert fit.N_range[0] >= 0.2 and fit.N_range[1] <= 2.0 and fit.n == 20000


def test_alpha_stays_positive_even_for_up_gradient_data():
    rng = np.random.default_rng(1)
    N, G, flux = _synthetic(rng)
    fit = fit_power_law(N, G, -flux)            # an up-gradient flux: K < 0 would fit
    assert fit.alpha > 0
    assert fit.alpha < 1e-3 * 0.02 or fit.rmse >= 0.9 * float(np.sqrt(np.mean(flux ** 2)))


def test_constant_fit_is_exact_without_noise():
    rng = np.random.default_rng(2)
    G = rng.normal(size=500)
    fit = fit_constant(G, 0.07 * G)
    assert fit.K == pytest.approx(0.07, rel=1e-12) and fit.se < 1e-12 and fit.rmse < 1e-12
    noisy = fit_constant(G, 0.07 * G + 0.01 * rng.normal(size=500))
    assert noisy.interval[0] < 0.07 < noisy.interval[1]


@pytest.mark.parametrize("mesh", [cartesian(8, 6, 1.0, 1.0, periodic=(True, False)),
                                  healpix(2)], ids=["channel", "healpix"])
def test_closures_conserve_and_dissipate(mesh):
    gen = torch.Generator().manual_seed(3)
    Q = torch.randn(mesh.n_cells, dtype=torch.float64, generator=gen)
    V = mesh.cell_volume.double()
    measure = lambda t, s, m: 1.0 + s["q"] ** 2          # noqa: E731  (N > 0)
    for closure in (DiffusivityClosure("q", K=0.3),
                    DiffusivityClosure("q", alpha=0.2, beta=1.5, measure=measure),
                    0.5 * DiffusivityClosure("q", K=0.3)
                    + DiffusivityClosure("q", alpha=0.2, beta=1.5, measure=measure)):
        phi = closure(0.0, {"q": Q}, mesh)["q"]
        tend = -divergence(mesh, phi)
        assert abs(float((V * tend).sum())) <= 1e-13 * float((V * tend.abs()).sum())
        assert float((V * Q * tend).sum()) < 0           # variance decays: K >= 0
    # the face form: G is minus the difference across the face times A/d
    G = face_gradient(mesh, Q)
    a, b = mesh.face_cells
    assert torch.allclose(G, -(Q[b] - Q[a]) * mesh.face_area.double()
                          / mesh.cell_distance.double())
    assert torch.allclose(face_mean(mesh, Q), 0.5 * (Q[a] + Q[b]))


def test_bad_input_names_the_argument():
    G = np.ones(5)
    with pytest.raises(ArgumentError, match="N=-1.0: must be > 0"):
        fit_power_law(np.array([-1.0, 1, 1, 1, 1]), G, G)
    with pytest.raises(ArgumentError, match="must be finite"):
        fit_constant(G, np.array([1.0, np.nan, 1, 1, 1]))
    with pytest.raises(ArgumentError, match="K=-0.1"):
        DiffusivityClosure("q", K=-0.1)
    with pytest.raises(ArgumentError, match="either a constant K"):
        DiffusivityClosure("q")
    with pytest.raises(ArgumentError, match="alpha"):
        DiffusivityClosure("q", alpha=0.1, beta=1.0)
