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
from meshclosure.train.baselines import ConvectiveClosure, fit_convective
from meshclosure.train.eddy_viscosity import (EddyViscosityClosure, fit_eddy_viscosity,
                                              strain_rate, viscosity_shape, vorticity_gradient)


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


# ------------------------------------------------------------ convective limit
def _convective(rng, n, K0=0.05, alpha=0.01, beta=-0.7, noise=0.1):
    N2 = rng.uniform(-1.0, 4.0, n)
    G = rng.normal(0.0, 1.0, n)
    N2 = np.where(np.abs(N2) < 1e-3, 1e-3, N2)         # keep N away from 0 for the law
    K = np.where(N2 > 0, alpha * np.sqrt(np.abs(N2)) ** beta, K0)
    return N2, G, K * G + noise * alpha * rng.normal(0.0, 1.0, n)


def test_convective_fit_recovers_K0_alpha_beta_and_intervals_shrink():
    rng = np.random.default_rng(4)
    exact = fit_convective(*_convective(rng, 2000, noise=0.0))
    assert exact.K0 == pytest.approx(0.05, rel=1e-12)
    assert exact.power_law.alpha == pytest.approx(0.01, rel=1e-9)
    assert exact.power_law.beta == pytest.approx(-0.7, abs=1e-9)
    widths = []
    for n in (500, 50000):
        fit = fit_convective(*_convective(rng, n))
        assert fit.K0_interval[0] <= 0.05 <= fit.K0_interval[1]
        lo, hi = fit.power_law.beta_interval
        assert lo - 0.01 <= -0.7 <= hi + 0.01
        widths.append((fit.K0_interval[1] - fit.K0_interval[0],
                       fit.power_law.beta_interval[1] - fit.power_law.beta_interval[0]))
        assert 0.1 * n < fit.n_convective < 0.3 * n                  # N2 <= 0 on 1/5
        assert fit.N2_range["min"] < 0 < fit.N2_range["max"] and fit.N_range["min"] > 0
    # 100x the data: intervals ~10x narrower (1/sqrt(n))
    assert widths[1][0] < 0.2 * widths[0][0] and widths[1][1] < 0.2 * widths[0][1]
    K = exact.K(np.array([-1.0, 0.0, 4.0]))
    assert K.tolist() == pytest.approx([0.05, 0.05, 0.01 * 2.0 ** -0.7])


def test_convective_closure_matches_its_law_and_conserves():
    mesh = cartesian(3, 12, 1.0, 1.0, periodic=(True, False))
    z = mesh.cell_center[:, 1].double()
    b = torch.where(z < 0.4, torch.zeros_like(z), z - 0.4) + 0.01 * torch.sin(20 * z)
    N2cells = lambda t, s, m: torch.cos(10 * z) + 0 * s["b"]      # noqa: E731  (both signs)
    c = ConvectiveClosure("b", K0=0.05, alpha=0.01, beta=-0.7, measure=N2cells)
    phi = c(0.0, {"b": b}, mesh)["b"]
    N2f = face_mean(mesh, N2cells(0, {"b": b}, mesh))
    K = torch.where(N2f > 0, 0.01 * N2f.clamp_min(1e-300).sqrt() ** -0.7,
                    torch.full_like(N2f, 0.05))
    assert torch.allclose(phi, K * face_gradient(mesh, b), rtol=1e-14, atol=0)
    V = mesh.cell_volume.double()
    tend = -divergence(mesh, phi)
    assert abs(float((V * tend).sum())) <= 1e-13 * float((V * tend.abs()).sum())
    with pytest.raises(ArgumentError, match="K0=-1"):
        ConvectiveClosure("b", K0=-1.0, alpha=0.01, beta=1.0, measure=N2cells)
    with pytest.raises(ArgumentError, match="must be > 0 at some faces"):
        fit_convective(-np.ones(4), np.ones(4), np.ones(4))


# ------------------------------------------------------- Smagorinsky and Leith
def _flow(n=32):
    mesh = cartesian(n, n, 1.0, 1.0)
    x = mesh.cell_center.double()
    k = 2 * np.pi
    # psi = sin(kx) sin(ky) + 0.3 cos(2kx), zeta = lap(psi)
    zeta = -2 * k * k * torch.sin(k * x[:, 0]) * torch.sin(k * x[:, 1]) \
        - 0.3 * 4 * k * k * torch.cos(2 * k * x[:, 0])
    return mesh, x, zeta


def test_strain_rate_and_vorticity_gradient_converge_to_the_analytic_values():
    errs = []
    for n in (16, 32, 64):
        mesh = cartesian(n, n, 1.0, 1.0)
        x = mesh.cell_center.double()
        k = 2 * np.pi
        zeta = -2 * k * k * torch.sin(k * x[:, 0]) * torch.sin(k * x[:, 1])
        S = strain_rate(mesh, zeta)           # psi = sin sin: |S| = 2k^2 |cos cos|
        exact = 2 * k * k * (torch.cos(k * x[:, 0]) * torch.cos(k * x[:, 1])).abs()
        gz = vorticity_gradient(mesh, zeta)
        gexact = 2 * k ** 3 * torch.sqrt((torch.cos(k * x[:, 0]) * torch.sin(k * x[:, 1])) ** 2
                                         + (torch.sin(k * x[:, 0]) * torch.cos(k * x[:, 1])) ** 2)
        errs.append((float((S - exact).norm() / exact.norm()),
                     float((gz - gexact).norm() / gexact.norm())))
    assert errs[-1][0] < 5e-3 and errs[-1][1] < 5e-3
    for coarse, fine in zip(errs[:-1], errs[1:]):            # second order
        assert fine[0] < 0.35 * coarse[0] and fine[1] < 0.35 * coarse[1]


@pytest.mark.parametrize("kind", ["smagorinsky", "leith"])
def test_eddy_viscosity_fit_recovers_c_exactly_and_the_closure_reproduces_it(kind):
    mesh, x, zeta = _flow()
    shape = viscosity_shape(mesh, kind, zeta)
    G = face_gradient(mesh, zeta)
    p = {"smagorinsky": 2, "leith": 3}[kind]
    flux = 0.17 ** p * shape * G
    fit = fit_eddy_viscosity(kind, shape, G, flux)
    assert fit.c == pytest.approx(0.17, rel=1e-12) and fit.rmse < 1e-12 * float(flux.abs().max())
    closure = EddyViscosityClosure(kind, fit.c)
    phi = closure(0.0, {"zeta": zeta}, mesh)["zeta"]
    assert torch.allclose(phi, flux, rtol=1e-10, atol=0)
    tend = -divergence(mesh, phi)
    V = mesh.cell_volume.double()
    assert abs(float((V * tend).sum())) <= 1e-13 * float((V * tend.abs()).sum())
    assert float((V * zeta * tend).sum()) < 0                 # it dissipates enstrophy
    # the shape is (Δ)^p times the face-mean measure, Δ = √V of the 1/32 cells
    M = strain_rate(mesh, zeta) if kind == "smagorinsky" else vorticity_gradient(mesh, zeta)
    assert torch.allclose(shape, (1 / 32) ** p * face_mean(mesh, M), rtol=1e-12)


def test_eddy_viscosity_intervals_shrink_and_c_stays_nonnegative():
    rng = np.random.default_rng(5)
    widths = []
    for n in (400, 40000):
        shape = rng.uniform(0.5, 2.0, n)
        G = rng.normal(size=n)
        flux = 0.2 ** 2 * shape * G + 0.01 * rng.normal(size=n)
        fit = fit_eddy_viscosity("smagorinsky", shape, G, flux)
        assert fit.c_interval[0] <= 0.2 <= fit.c_interval[1]
        widths.append(fit.c_interval[1] - fit.c_interval[0])
    assert widths[1] < 0.2 * widths[0]
    anti = fit_eddy_viscosity("leith", shape, G, -flux)       # up-gradient: c clipped to 0
    assert anti.c == 0.0 and anti.c_interval[0] == 0.0
    with pytest.raises(ArgumentError, match="c=-0.1"):
        EddyViscosityClosure("leith", -0.1)
