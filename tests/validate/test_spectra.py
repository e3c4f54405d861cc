"""Spectra and scale bands against known solutions (issue 12, "Must show")."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import sph_harm_y

from conftest import MESH_CASES
from meshclosure.errors import ArgumentError
from meshclosure.mesh import cartesian, healpix, icosahedral
from meshclosure.validate.spectra import (band_filter, default_band_edges, default_lmax,
                                          power_spectrum, spectral_kind, spectrum_kmax)


def _real_ylm(points: np.ndarray, ell: int, m: int) -> np.ndarray:
    """√2 Re Y_l^m (m > 0) from scipy: unit L2 norm on the unit sphere (∫ f² dΩ = 1)."""
    x = points / np.linalg.norm(points, axis=1, keepdims=True)
    theta, phi = np.arccos(np.clip(x[:, 2], -1, 1)), np.arctan2(x[:, 1], x[:, 0])
    return math.sqrt(2.0) * np.real(sph_harm_y(ell, m, theta, phi))


def test_single_fourier_mode_puts_all_power_at_its_wavenumber():
    m = cartesian(16, 16)
    x = m.cell_center[:, 0].double()
    k, P = power_spectrum(m, torch.cos(2 * math.pi * 3 * x))
    assert k[3] == 3.0 and P[3] == pytest.approx(0.5, abs=1e-14)
    assert np.abs(np.delete(P, 3)).max() < 1e-28
    # an oblique mode (3, 4) has |k| = 5; units of 2π/L with L the longest side
    y = m.cell_center[:, 1].double()
    _, P = power_spectrum(m, torch.sin(2 * math.pi * (3 * x + 4 * y)))
    assert P[5] == pytest.approx(0.5, abs=1e-14)
    rect = cartesian(16, 8, 2.0, 1.0)
    yr = rect.cell_center[:, 1].double()
    _, P = power_spectrum(rect, torch.cos(2 * math.pi * yr / 1.0))   # one wave along ly = L/2
    assert P[2] == pytest.approx(0.5, abs=1e-14)


def test_plane_spectrum_satisfies_parseval_for_batches():
    m = cartesian(16, 12, 2.0, 1.5)
    f = np.random.default_rng(0).normal(size=(3, 2, m.n_cells))
    k, P = power_spectrum(m, f)
    assert P.shape == (3, 2, k.size)
    np.testing.assert_allclose(P.sum(-1), (f ** 2).mean(-1), rtol=1e-13)
    assert (np.diff(k) == 1).all() and k[0] == 0


def test_plane_spectrum_does_not_depend_on_the_cell_order():
    """Cells are placed on the grid from their centres (coarsened planes, any order)."""
    import dataclasses

    from meshclosure.mesh import Coarsening

    coarse = Coarsening.native(cartesian(16, 16), 2).coarse
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(0))
    shuffled = dataclasses.replace(coarse, cell_center=coarse.cell_center[perm])
    for mesh in (coarse, shuffled):
        assert spectral_kind(mesh) == "plane"
        c = mesh.cell_center.double()
        f = torch.cos(2 * math.pi * 2 * c[:, 0]) + torch.sin(2 * math.pi * c[:, 1])
        _, P = power_spectrum(mesh, f)
        assert P[1] == pytest.approx(0.5, abs=1e-14) and P[2] == pytest.approx(0.5, abs=1e-14)
        bands = band_filter(mesh, f, [2])
        np.testing.assert_allclose(bands[0], torch.sin(2 * math.pi * c[:, 1]), atol=1e-14)


def test_single_harmonic_on_healpix_has_its_power_at_its_degree():
    """anafast of √2 Re Y_4^2 at the pixel centres: P(4) = 1/(4π); leakage ~1e-13."""
    import healpy

    mesh = healpix(8)
    centres = np.array(healpy.pix2vec(8, np.arange(mesh.n_cells), nest=True)).T
    f = _real_ylm(centres, 4, 2)
    ell, P = power_spectrum(mesh, f)
    assert ell[-1] == 16 == default_lmax(mesh)
    assert abs(P.sum() - P[4]) < 1e-10 * P.sum()
    assert P[4] == pytest.approx(1 / (4 * math.pi), rel=1e-6)      # pixel quadrature, iter=3
    # the least-squares projection at the cell centroids fits the same field exactly
    fc = _real_ylm(mesh.cell_center.double().numpy(), 4, 2)
    _, P = power_spectrum(mesh, fc, method="lsq", lmax=8)
    assert abs(P.sum() - P[4]) < 1e-12 * P.sum()
    assert P[4] == pytest.approx(1 / (4 * math.pi), rel=1e-12)


@pytest.mark.parametrize("name", ["icosahedral-2", "dual-2-R0.3", "icosahedral-2-R6371",
                                  "meshio-cubed-4-R1"])
def test_single_harmonic_on_other_spheres_by_least_squares(name):
    """A field in the span of the harmonics is recovered to rounding: all power at l = 4
    (tolerance 1e-12 relative, measured 0 to 1e-16)."""
    mesh = MESH_CASES[name].mesh()
    f = _real_ylm(mesh.cell_center.double().numpy(), 4, 3)
    ell, P = power_spectrum(mesh, torch.as_tensor(f))
    assert ell[-1] == default_lmax(mesh) == int(math.isqrt(mesh.n_cells // 2))
    assert abs(P.sum() - P[4]) < 1e-12 * P.sum()
    assert P[4] == pytest.approx(1 / (4 * math.pi), rel=1e-12)


@pytest.mark.parametrize("mesh", [cartesian(8, 8, periodic=False), cartesian(8),
                                  cartesian(8, 4, periodic=(True, False))],
                         ids=["bounded", "column", "channel"])
def test_meshes_without_spectra_are_refused_with_the_meshes_that_have_them(mesh):
    with pytest.raises(ArgumentError, match="doubly periodic Cartesian plane or a sphere"):
        power_spectrum(mesh, torch.zeros(mesh.n_cells))
    with pytest.raises(ArgumentError, match="doubly periodic"):
        band_filter(mesh, torch.zeros(mesh.n_cells), [2])


def test_bad_fields_and_degrees_are_refused():
    m = cartesian(8, 8)
    with pytest.raises(ArgumentError, match="n_cells = 64"):
        power_spectrum(m, torch.zeros(10))
    with pytest.raises(ArgumentError, match="non-finite"):
        power_spectrum(m, torch.full((64,), float("nan")))
    ico = icosahedral(1)
    with pytest.raises(ArgumentError, match="lmax=20"):
        power_spectrum(ico, torch.zeros(ico.n_cells), lmax=20)
    with pytest.raises(ArgumentError, match="HEALPix"):
        power_spectrum(ico, torch.zeros(ico.n_cells), method="anafast")


def test_plane_bands_sum_to_the_field_and_are_orthogonal():
    m = cartesian(16, 12, 2.0, 1.5)
    f = np.random.default_rng(1).normal(size=(2, m.n_cells))
    edges = (2, 4, 7)
    bands = band_filter(m, f, edges)
    assert bands.shape == (4, 2, m.n_cells)
    np.testing.assert_allclose(bands.sum(0), f, rtol=0, atol=1e-12)
    V = m.cell_volume.double().numpy()
    gram = np.einsum("asc,bsc,c->ab", bands, bands, V)
    off = gram - np.diag(np.diag(gram))
    assert np.abs(off).max() < 1e-12 * np.trace(gram)
    # each band's mean square is its share of the spectrum
    k, P = power_spectrum(m, f)
    lo, hi = (0,) + edges, edges + (np.inf,)
    for b in range(4):
        share = P[:, (k >= lo[b]) & (k < hi[b])].sum(-1)
        np.testing.assert_allclose((bands[b] ** 2).mean(-1), share, rtol=1e-12)


@pytest.mark.parametrize("name", ["healpix-8", "icosahedral-3"])
def test_sphere_bands_split_harmonics_by_degree_and_sum_to_the_field(name):
    mesh = MESH_CASES[name].mesh()
    c = mesh.cell_center.double().numpy()
    low, mid = _real_ylm(c, 1, 1), _real_ylm(c, 4, 2)
    noise = np.random.default_rng(2).normal(size=mesh.n_cells)
    f = low + mid + noise
    bands = band_filter(mesh, torch.as_tensor(f), (3, 6))
    np.testing.assert_allclose(bands.sum(0), f, rtol=0, atol=1e-12)
    smooth = band_filter(mesh, low + mid, (3, 6))
    np.testing.assert_allclose(smooth[0], low, atol=1e-12)
    np.testing.assert_allclose(smooth[1], mid, atol=1e-12)
    assert np.abs(smooth[2]).max() < 1e-12


def test_default_edges_and_kmax():
    assert spectrum_kmax(cartesian(48, 48)) == pytest.approx(16.0)
    assert spectrum_kmax(cartesian(16, 8, 2.0, 1.0)) == pytest.approx(2 / 3 * 8)
    assert default_band_edges(cartesian(32, 32)) == (5.0, 9.0)     # k <= 4 = k_c/4; k <= 8
    assert spectrum_kmax(healpix(8)) == pytest.approx(2 / 3 * 16)
    for mesh in (healpix(8), icosahedral(2)):
        edges = default_band_edges(mesh)
        assert 2 <= edges[0] and edges[-1] - 1 <= default_lmax(mesh, "lsq")
        band_filter(mesh, torch.zeros(mesh.n_cells), edges)        # accepted as they are
