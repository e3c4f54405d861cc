"""Spherical-harmonic transform on HEALPix and the "spectral" / "sfno" closures (issue 5, 2c, 2e).

Transform: exact adjoint, gradcheck, agreement with healpy (synthesis and
analysis, NESTED and RING), the addition theorem at an arbitrary axis, and the
measured accuracy of analysis∘synthesis. Closures: antisymmetry, conservation,
permutation equivariance, commuting with the 90° rotation about the pole
(with a coordinate-reading model and a cos/sin-asymmetric filter FAILING it),
isotropy under a tilted axis (with the per-(l, m) "lm" filter FAILING it),
gradients, and the mesh-family errors.
"""
from __future__ import annotations

import math

import healpy as hp
import numpy as np
import pytest
import torch
from scipy.special import eval_legendre

from meshclosure.graph import to_graph
from meshclosure.mesh import healpix, icosahedral
from meshclosure.nn import UnsupportedMeshError, build_model, list_models
from meshclosure.sht import HealpixSHT, _Analysis, _Synthesis, legendre_table
from meshclosure.nn.spectral import (SFNOClosure, SpectralClosure, SphericalHarmonicFilter,
                                     healpix_pixels)
from meshclosure.testing import (assert_antisymmetric, assert_commutes, assert_conservative,
                                 assert_equivariant, axis_rotation, rotate_mesh)

IN = 2
MESH = healpix(2)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _x(mesh, n=IN, seed=1, dtype=torch.float64):
    return torch.randn(mesh.n_cells, n, dtype=torch.float64, generator=_gen(seed)).to(dtype)


# ================================================================== transform
CASES = [(2, 4, None), (2, 5, 3), (4, 8, None), (4, 11, 7)]   # (nside, lmax, mmax)


@pytest.mark.parametrize("nside,lmax,mmax", CASES)
@pytest.mark.parametrize("nest", [True, False])
def test_adjoint_identity(nside, lmax, mmax, nest):
    """``<S a, y> = <a, Sᵀ y>`` to 1e-12 relative, and analysis = w Sᵀ."""
    sht = HealpixSHT(nside, lmax, mmax, nest=nest)
    a = sht.random_coefficients(3, generator=_gen(1))
    y = torch.randn(sht.n_pix, 3, dtype=torch.float64, generator=_gen(2))
    lhs, rhs = float((sht.synthesis(a) * y).sum()), float((a * sht.adjoint(y)).sum())
    scale = float(sht.synthesis(a).norm() * y.norm())
    assert abs(lhs - rhs) <= 1e-12 * scale, (lhs, rhs)
    assert abs(lhs) > 1e-3 * scale
    torch.testing.assert_close(sht.analysis(y), sht.weight * sht.adjoint(y), rtol=1e-14, atol=0)
    # structural zeros: analysis returns 0 there, synthesis ignores them
    unused = sht.mask() == 0
    assert float(sht.adjoint(y)[unused].abs().max()) == 0.0
    junk = a + 7.0 * unused[..., None]
    torch.testing.assert_close(sht.synthesis(junk), sht.synthesis(a), rtol=1e-14, atol=1e-14)


def test_gradcheck_both_functions():
    sht = HealpixSHT(2, lmax=4, nest=False)
    a = sht.random_coefficients(2, generator=_gen(3)).requires_grad_(True)
    x = torch.randn(sht.n_pix, 2, dtype=torch.float64, generator=_gen(4), requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: _Synthesis.apply(t, sht), (a,))
    assert torch.autograd.gradcheck(lambda t: _Analysis.apply(t, sht, sht.weight), (x,))
    assert torch.autograd.gradgradcheck(lambda t: _Synthesis.apply(t, sht), (a,))
    # the public, permuted (NESTED) path as well, at nside 4 with mmax < lmax
    sht4 = HealpixSHT(4, lmax=6, mmax=4)
    x4 = torch.randn(sht4.n_pix, 1, dtype=torch.float64, generator=_gen(5), requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: sht4.analysis(t, iterations=1), (x4,))


@pytest.mark.parametrize("nside,lmax,mmax", CASES)
def test_matches_healpy(nside, lmax, mmax):
    """alm2map / map2alm on the same pixels (pix2ang centres), RING and NESTED."""
    mmax_ = lmax if mmax is None else mmax
    ring, nest = HealpixSHT(nside, lmax, mmax, nest=False), HealpixSHT(nside, lmax, mmax)
    a = ring.random_coefficients(1, generator=_gen(6))[..., 0]
    alm = ring.to_healpy(a)
    torch.testing.assert_close(ring.from_healpy(alm), a, rtol=0, atol=1e-15)
    expected = hp.alm2map(alm, nside, lmax=lmax, mmax=mmax_)
    np.testing.assert_allclose(ring.synthesis(a).numpy(), expected, rtol=0, atol=1e-10)
    np.testing.assert_allclose(nest.synthesis(a).numpy(), hp.reorder(expected, r2n=True),
                               rtol=0, atol=1e-10)
    x = torch.randn(ring.n_pix, dtype=torch.float64, generator=_gen(7))
    for iterations in (0, 3):
        ref = hp.map2alm(x.numpy(), lmax=lmax, mmax=mmax_, iter=iterations, use_weights=False)
        got = ring.to_healpy(ring.analysis(x, iterations=iterations))
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-10)
        got = nest.to_healpy(nest.analysis(torch.as_tensor(hp.reorder(x.numpy(), r2n=True)),
                                           iterations=iterations))
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-10)


def test_legendre_tables_orthonormal():
    """``2π ∫ λ_lm λ_l'm dz = δ_ll'`` by Gauss–Legendre quadrature, including high orders
    whose ``sinᵐθ`` factor needs the running scale."""
    lmax = 160
    z, w = np.polynomial.legendre.leggauss(lmax + 2)
    lam = legendre_table(lmax, lmax, z)
    assert np.isfinite(lam).all()
    for m in (0, 1, 7, 80, 159, 160):
        A = lam[m][:, m:]
        gram = 2 * np.pi * (A.T * w) @ A
        np.testing.assert_allclose(gram, np.eye(lmax + 1 - m), rtol=0, atol=1e-12)
    assert float(np.abs(lam[5][:, :5]).max()) == 0.0        # l < m


def _real_harmonics_at(n, lmax):
    """Real basis functions of every coefficient at the unit vector ``n``: (M, L, 2)."""
    theta, phi = hp.vec2ang(np.asarray(n)[None])
    lam = legendre_table(lmax, lmax, np.cos(theta))[:, 0, :]              # (M, L)
    m = np.arange(lmax + 1)[:, None]
    g = np.where(m == 0, 1.0, math.sqrt(2))
    out = np.stack([g * lam * np.cos(m * phi[0]), g * lam * np.sin(m * phi[0])], -1)
    out[0, :, 1] = 0
    return torch.as_tensor(out)


def _zonal(sht, n, b):
    """Coefficients of ``f(r) = Σ_l b_l P_l(n·r)`` (addition theorem) and f at the pixels."""
    l_ = torch.arange(sht.lmax + 1, dtype=torch.float64)
    a = (4 * math.pi / (2 * l_ + 1) * b)[None, :, None] * _real_harmonics_at(n, sht.lmax)
    r = np.stack(hp.pix2vec(sht.nside, np.arange(sht.n_pix), nest=sht.nest), 1)
    values = sum(float(b[l]) * eval_legendre(l, r @ n) for l in range(sht.lmax + 1))
    return a, torch.as_tensor(values)


@pytest.mark.parametrize("nside,lmax", [(2, 5), (4, 11)])
def test_addition_theorem_any_axis(nside, lmax):
    """Synthesis of the zonal function about a random axis, against Legendre polynomials
    (independent of healpy)."""
    sht = HealpixSHT(nside, lmax)
    rng = np.random.default_rng(0)
    n = rng.normal(size=3)
    n /= np.linalg.norm(n)
    a, values = _zonal(sht, n, torch.as_tensor(rng.normal(size=lmax + 1)))
    torch.testing.assert_close(sht.synthesis(a), values, rtol=0, atol=1e-12)


# measured (nside, lmax): relative error ||analysis(synthesis(a)) − a|| / ||a|| for
# unit-variance a (4 channels, seed 0) with 0 and 3 Jacobi iterations. The equal-area
# pixel quadrature of HEALPix is not exact; iterating (healpy's map2alm(iter=3))
# converges for lmax <= 2 nside, fastest for lmax <= nside.
ROUND_TRIP = {(2, 2): (3.3e-2, 1.7e-5), (2, 4): (6.8e-2, 4.4e-4), (4, 4): (1.0e-2, 1.2e-6),
              (4, 8): (4.0e-2, 1.6e-4), (8, 8): (7.6e-3, 4.5e-7), (8, 16): (1.5e-2, 3.0e-5)}


@pytest.mark.parametrize("nside,lmax", list(ROUND_TRIP))
def test_round_trip_accuracy(nside, lmax):
    sht = HealpixSHT(nside, lmax)
    a = sht.random_coefficients(4, generator=_gen(0))
    x = sht.synthesis(a)
    errors = [float((sht.analysis(x, iterations=i) - a).norm() / a.norm()) for i in range(4)]
    bound0, bound3 = ROUND_TRIP[(nside, lmax)]
    assert bound0 / 1.5 <= errors[0] <= bound0 * 1.5 and errors[3] <= bound3 * 1.5, errors
    assert errors[0] > 3 * errors[1] > 9 * errors[2] > 27 * errors[3]   # Jacobi converges
    # the equal-area quadrature integrates every map's mean exactly: a_00 = √(4π) mean(x)
    torch.testing.assert_close(sht.analysis(x)[0, 0, 0], math.sqrt(4 * math.pi) * x.mean(0),
                               rtol=1e-14, atol=1e-14)


def test_float32_matches_float64():
    sht = HealpixSHT(4, 8)
    a = sht.random_coefficients(2, generator=_gen(8))
    x64, x32 = sht.synthesis(a), sht.synthesis(a.float())
    assert x32.dtype == torch.float32
    torch.testing.assert_close(x32.double(), x64, rtol=0, atol=1e-5 * float(x64.abs().max()))
    a64, a32 = sht.analysis(x64), sht.analysis(x64.float())
    torch.testing.assert_close(a32.double(), a64, rtol=0, atol=1e-5 * float(a64.abs().max()))


def test_transform_errors():
    sht = HealpixSHT(2, 4)
    with pytest.raises(ValueError, match="map must have shape"):
        sht.analysis(torch.zeros(47, 1))
    with pytest.raises(ValueError, match="mmax"):
        HealpixSHT(2, lmax=3, mmax=4)
    with pytest.raises(ValueError, match="power of 2"):
        HealpixSHT(3)


# ================================================================== closures
def _model(name, mesh=MESH, head="potential", seed=0, **kw):
    torch.manual_seed(seed)
    kw = {"in_features": IN, "n_vars": 2, "hidden": 8, "n_layers": 2, **kw}
    return build_model(name, mesh, head=head, **kw).double()


MODELS = [("spectral", {}), ("spectral", {"iterations": 2, "n_basis": 3}),
          ("sfno", {}), ("sfno", {"lmax": 4})]


@pytest.mark.parametrize("head", ["potential", "pairwise"])
@pytest.mark.parametrize("name,kw", MODELS)
def test_antisymmetric_conservative_permutation(name, kw, head):
    model, x = _model(name, head=head, **kw), _x(MESH)
    assert_antisymmetric(model, MESH, x)
    assert_conservative(model, MESH, x, tol=1e-12)
    assert_equivariant(model, MESH, x, transform="permutation", tol=1e-12)
    assert float(model(MESH, x).detach().abs().max()) > 1e-8
    model32 = model.float()
    assert_antisymmetric(model32, MESH, x.float())
    assert_conservative(model32, MESH.float(), x.float(), tol=1e-5)


QUARTER = axis_rotation([0, 0, 1], math.pi / 2)
MESH4 = healpix(4)


@pytest.mark.parametrize("head", ["potential", "pairwise"])
@pytest.mark.parametrize("name,kw", MODELS + [("sfno", {"mode_mixing": "lm"})])
def test_commutes_with_quarter_turn(name, kw, head):
    """Isotropic filters commute with the 90° turn about the pole (a cyclic shift of every
    ring). So does "lm": HEALPix's own symmetries act on each (c_lm, s_lm) pair alone."""
    for mesh in (MESH, MESH4):
        model = _model(name, mesh, head=head, **kw)
        assert_commutes(model, mesh, _x(mesh), QUARTER)


class _CosSinAsymmetric(SFNOClosure):
    """SFNO whose filters weight cos and sin coefficients differently: not invariant."""

    def __init__(self, mesh, **kw):
        super().__init__(mesh, **kw)
        for f in self.filters:
            f.filter_coefficients = self._asymmetric(f)

    @staticmethod
    def _asymmetric(f):
        def apply(a):
            out = SphericalHarmonicFilter.filter_coefficients(f, a)
            weight = torch.tensor([1.0, 0.3], dtype=a.dtype)      # on the (cos, sin) axis 2
            return out * weight.reshape(2, *[1] * (out.dim() - 3))
        return apply


class _WithCoordinate(torch.nn.Module):
    """A spectral closure fed the global x coordinate as an extra input."""

    def __init__(self, mesh):
        super().__init__()
        self.net = _model("spectral", mesh, in_features=IN + 1)

    def forward(self, mesh, x):
        return self.net(mesh, torch.cat([x, mesh.cell_center[:, :1].to(x.dtype)], 1))


def test_quarter_turn_check_can_fail():
    x = _x(MESH)
    torch.manual_seed(0)
    asym = _CosSinAsymmetric(MESH, in_features=IN, n_vars=2, hidden=8, n_layers=2).double()
    for model in (_WithCoordinate(MESH), asym):
        with pytest.raises(AssertionError, match="symmetry"):
            assert_commutes(model, MESH, x, QUARTER)


@pytest.mark.parametrize("mode_mixing", ["l", "lm"])
def test_isotropy_about_a_tilted_axis(mode_mixing):
    """A zonal field about any axis n stays zonal about n with profile ``h_l b_l`` under an
    isotropic filter; the per-(l, m) filter breaks this (it is not isotropic)."""
    sht = HealpixSHT(4, lmax=8)
    torch.manual_seed(0)
    layer = SphericalHarmonicFilter(1, 1, lmax=8, mode_mixing=mode_mixing, bias=False).double()
    rng = np.random.default_rng(1)
    n = rng.normal(size=3)
    n /= np.linalg.norm(n)
    b = torch.as_tensor(rng.normal(size=9))
    a, _ = _zonal(sht, n, b)
    got = sht.synthesis(layer.filter_coefficients(a[..., None]))[:, 0].detach()
    h = layer.response().detach()[..., 0, 0]
    h_l = h if mode_mixing == "l" else h[0]            # the m = 0 response
    _, expected = _zonal(sht, n, h_l * b)
    dev = float((got - expected).abs().max())
    if mode_mixing == "l":
        assert dev <= 1e-12 * float(expected.abs().max())
    else:
        assert dev > 1e-2 * float(expected.abs().max())


def test_smooth_response_is_low_rank():
    f = SphericalHarmonicFilter(2, 3, lmax=10, n_basis=4).double()
    h = f.response().detach()
    assert h.shape == (11, 2, 3)
    # rank <= 4 in l, and a cubic polynomial in l: 4th differences vanish
    assert int(torch.linalg.matrix_rank(h.reshape(11, 6))) <= 4
    assert float(torch.diff(h, n=4, dim=0).abs().max()) < 1e-12


def test_graph_input_matches_mesh():
    model, x = _model("spectral", head="pairwise"), _x(MESH)
    torch.testing.assert_close(model(to_graph(MESH), x), model(MESH, x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("head", ["potential", "pairwise"])
@pytest.mark.parametrize("name", ["spectral", "sfno"])
def test_forward_backward(name, head):
    model = _model(name, head=head, heteroscedastic=True)
    x = _x(MESH).requires_grad_(True)
    mean, log_var = model(MESH, x)
    assert mean.shape == log_var.shape == (MESH.n_faces, 2)
    (mean.square().sum() + log_var.sum()).backward()
    for pname, p in list(model.named_parameters()) + [("x", x)]:
        assert p.grad is not None and bool(torch.isfinite(p.grad).all()), pname
    for f in model.filters:
        assert float(f.weight.grad.abs().sum()) > 0


def test_families_and_errors():
    for name in ("spectral", "sfno"):
        assert name in list_models("healpix") and name not in list_models("icosahedral")
        with pytest.raises(UnsupportedMeshError,
                           match=r"supports mesh families \('healpix',\).*Use 'chebnet'"):
            build_model(name, icosahedral(1))
    with pytest.raises(UnsupportedMeshError, match="needs a HEALPix mesh.*'chebnet'"):
        SpectralClosure(icosahedral(1))
    with pytest.raises(ValueError, match="not HEALPix in its own frame"):
        healpix_pixels(rotate_mesh(MESH, axis_rotation([0, 0, 1], 0.3)))
    with pytest.raises(ValueError, match="head='vector'"):
        SFNOClosure(MESH, head="vector")
    with pytest.raises(ValueError, match="mode_mixing='m'"):
        SFNOClosure(MESH, mode_mixing="m")
