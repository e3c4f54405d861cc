"""Angular power spectra from meshclosure.sht (for validation), checked against healpy."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from meshclosure.sht import HealpixSHT

healpy = pytest.importorskip("healpy")


def _coefficients(sht, channels=2, seed=0):
    return sht.random_coefficients(channels, generator=torch.Generator().manual_seed(seed))


def test_power_spectrum_is_healpys_alm2cl():
    sht = HealpixSHT(8, lmax=12, mmax=10)
    a = _coefficients(sht)
    cl = sht.power_spectrum(a)
    ref = np.stack([healpy.alm2cl(sht.to_healpy(a[..., c]), lmax=12, mmax=10)
                    for c in range(2)], 1)
    np.testing.assert_allclose(cl.numpy(), ref, rtol=1e-12, atol=0)
    assert torch.equal(sht.power_spectrum(a[..., 0]), cl[:, 0])          # unbatched


def test_angular_power_spectrum_of_a_map_matches_anafast_and_parseval():
    sht = HealpixSHT(8, lmax=12, mmax=10)
    a = _coefficients(sht, seed=1)
    x = sht.synthesis(a)
    cl = sht.angular_power_spectrum(x, iterations=10)
    np.testing.assert_allclose(cl.numpy(), sht.power_spectrum(a).numpy(), rtol=1e-10)
    ring = healpy.reorder(x[:, 0].numpy(), n2r=True)
    ref = healpy.anafast(ring, lmax=12, mmax=10, iter=10)
    np.testing.assert_allclose(cl[:, 0].numpy(), ref, rtol=1e-10)
    # Parseval: Σ (2l+1) C_l = ‖a‖² = ∫ x² dΩ on the unit sphere (the pixel sum is only a
    # quadrature of the integral: equal to 1e-3 here)
    ell = torch.arange(13, dtype=torch.float64)
    total = ((2 * ell + 1)[:, None] * cl).sum(0)
    np.testing.assert_allclose(total.numpy(), (a**2).sum((0, 1, 2)).numpy(), rtol=1e-10)
    integral = (x**2).sum(0) * 4 * math.pi / sht.n_pix
    np.testing.assert_allclose(total.numpy(), integral.numpy(), rtol=1e-3)


def test_power_spectrum_is_differentiable_and_refuses_bad_shapes():
    sht = HealpixSHT(2, lmax=3)
    a = _coefficients(sht, channels=1).requires_grad_(True)
    sht.power_spectrum(a).sum().backward()
    assert torch.isfinite(a.grad).all() and float(a.grad.abs().sum()) > 0
    with pytest.raises(ValueError, match=r"coefficients must have shape \(mmax\+1=4"):
        sht.power_spectrum(torch.zeros(4, 4))
