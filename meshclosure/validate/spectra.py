"""Power spectra and scale bands of cell fields on periodic planes and spheres.

* Doubly periodic Cartesian meshes (``mesh.info`` with ``nx, ny, lx, ly`` and a
  period on both axes): the 2-D FFT of the ``(ny, nx)`` grid, binned by the
  wavenumber magnitude ``|k| = √((i L/lx)² + (j L/ly)²)`` in units of ``2π/L``
  (``L = max(lx, ly)``; ``i, j`` the integer FFT frequencies), rounded to the
  nearest integer. Normalised by Parseval::

      P(k) = Σ_{round|k'| = k} |f̂_k'|² / N²,    Σ_k P(k) = (1/N) Σ_i f_i²

  the area mean of ``f²`` (uniform cells). A mode ``cos(2π·3x/L)`` has all of
  its power ``1/2`` at ``k = 3``.
* HEALPix meshes: ``healpy.anafast`` (3 Jacobi iterations) of the map in RING
  order (cells are reordered from their centres, whatever their order),
  ``P(l) = (2l + 1) C_l / (4π)``, so that ``Σ_l P(l)`` is the mean of ``f²``
  over the sphere up to the pixel quadrature's error and the power above
  ``lmax``. Default ``lmax = 2 nside``: below it the pixel quadrature is
  accurate (a single ``Y_4^m`` on nside 8 leaks ``4e-13`` of its power to
  other degrees; at healpy's default ``3 nside − 1`` it leaks ``5e-7``).
  anafast reads each cell value as the value at the pixel *centre*; the
  finite-volume cells' centroids sit up to 9% of a pixel away, a smoothing of
  order ``(l/nside)²`` (``method="lsq"`` fits at the centroids instead).
* Other sphere meshes (icosahedral, dual, meshio spheres): the volume-weighted
  least-squares projection of the field on the real spherical harmonics
  ``√(4π) Y_l^m`` (unit mean square;
  :func:`~meshclosure.data.random_flows.spherical_harmonic_basis`) of degree
  ``l ≤ lmax`` at the cell centres, ``P(l) = Σ_m c_lm²`` (the mean square of the
  degree-``l`` part of the fit). Largest ``lmax = ⌊√(n_cells/2)⌋`` (half as many
  unknowns as cells, ``(lmax + 1)² ≈ n_cells/2``), which keeps the
  projection well conditioned (Gram condition number 1–7 on icosahedral
  meshes and their duals); the default is that, capped at 40 (memory
  ``n_cells (lmax+1)²`` doubles). A field in the span is recovered to
  rounding; power above ``lmax`` aliases into the fit.

Other meshes (columns, bounded planes and channels, planar meshio meshes) have
no spectrum here: :class:`~meshclosure.errors.ArgumentError`.

:func:`band_filter` splits a field into scale bands that sum back to it
exactly: FFT masks on the same integer bins on planes (the bands are
orthogonal in the area-weighted inner product), the spherical-harmonic
least-squares fit split by degree on spheres (the last band is the rest,
``field − fit``).

Examples
--------
>>> import math, torch
>>> from meshclosure.mesh import cartesian
>>> m = cartesian(16, 16)
>>> k, P = power_spectrum(m, torch.cos(2 * math.pi * 3 * m.cell_center[:, 0]))
>>> int(k[P.argmax()]), round(float(P.sum()), 12), round(float(P[3]), 12)
(3, 0.5, 0.5)
>>> power_spectrum(cartesian(8, 8, periodic=False), torch.zeros(64))
Traceback (most recent call last):
...
meshclosure.errors.ArgumentError: mesh='cartesian (bounded)': must be a doubly periodic Cartesian plane or a sphere to have a power spectrum; ...
"""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence, Tuple

import numpy as np

from ..errors import ArgumentError
from ..mesh import Mesh

__all__ = ["power_spectrum", "band_filter", "spectrum_kmax", "default_band_edges",
           "default_lmax", "spectral_kind"]

#: Largest acceptable condition number of the harmonic Gram matrix on a sphere.
MAX_CONDITION = 1e8


def _field(mesh: Mesh, field: Any) -> np.ndarray:
    f = field.detach().cpu().double().numpy() if hasattr(field, "detach") \
        else np.asarray(field, dtype=np.float64)
    if f.ndim < 1 or f.shape[-1] != mesh.n_cells:
        raise ArgumentError("field", f"array of shape {f.shape}", f"must end with n_cells = "
                            f"{mesh.n_cells}", "pass cell values (..., n_cells) of this mesh")
    if not np.isfinite(f).all():
        raise ArgumentError("field", f"array with {int((~np.isfinite(f)).sum())} non-finite "
                            "values", "must be finite", "drop the states holding NaN/Inf")
    return f


def spectral_kind(mesh: Mesh) -> str:
    """``"plane"``, ``"healpix"`` or ``"sphere"``: how this module takes spectra on ``mesh``.

    Raises :class:`ArgumentError` for meshes without spectra.
    """
    if not isinstance(mesh, Mesh):
        raise ArgumentError("mesh", type(mesh).__name__, "must be a meshclosure.mesh.Mesh",
                            "build one with meshclosure.mesh.cartesian/healpix/icosahedral")
    info = mesh.info
    if mesh.is_sphere:
        return "healpix" if "nside" in info and mesh.n_cells == 12 * int(info["nside"]) ** 2 \
            else "sphere"
    periodic = mesh.period is not None and all(p > 0 for p in mesh.period)
    if periodic and all(key in info for key in ("nx", "ny", "lx", "ly")) \
            and mesh.n_cells == int(info["nx"]) * int(info["ny"]):
        return "plane"
    what = f"{mesh.family} ({'periodic' if periodic else 'bounded'})"
    raise ArgumentError("mesh", what, "must be a doubly periodic Cartesian plane or a sphere "
                        "to have a power spectrum", "spectra exist on cartesian(nx, ny) with "
                        "periodic=True, healpix, icosahedral and meshio sphere meshes; compare "
                        "other meshes by maps, PDFs and Wasserstein distances")


# ------------------------------------------------------------------------- planes
def _grid(mesh: Mesh) -> Tuple[np.ndarray, int, int, np.ndarray]:
    """The cell index of each grid point ``(ny·nx,)`` (row-major ``(j, i)``), ``nx``, ``ny``,
    and the integer bin of ``|k|`` of each FFT coefficient ``(ny, nx)``."""
    info = mesh.info
    nx, ny, lx, ly = int(info["nx"]), int(info["ny"]), float(info["lx"]), float(info["ly"])
    c = mesh.cell_center.detach().cpu().double().numpy()
    i = np.floor(c[:, 0] / (lx / nx)).astype(np.int64) % nx
    j = np.floor(c[:, 1] / (ly / ny)).astype(np.int64) % ny
    flat = j * nx + i
    order = np.full(nx * ny, -1, np.int64)
    order[flat] = np.arange(mesh.n_cells)
    if (order < 0).any():
        raise ArgumentError("mesh", f"{mesh.family} {nx}x{ny}", "must have one cell per grid "
                            "square (cell centres at ((i + ½) lx/nx, (j + ½) ly/ny))",
                            "build the plane with meshclosure.mesh.cartesian")
    L = max(lx, ly)
    kx = np.fft.fftfreq(nx, 1.0 / nx) * (L / lx)
    ky = np.fft.fftfreq(ny, 1.0 / ny) * (L / ly)
    kbin = np.rint(np.hypot(kx[None, :], ky[:, None])).astype(np.int64)
    return order, nx, ny, kbin


def _plane_fft(mesh: Mesh, f: np.ndarray):
    order, nx, ny, kbin = _grid(mesh)
    grid = f[..., order].reshape(f.shape[:-1] + (ny, nx))
    return np.fft.fft2(grid), order, kbin


def _plane_spectrum(mesh: Mesh, f: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    F, order, kbin = _plane_fft(mesh, f)
    N = kbin.size
    power = (np.abs(F) ** 2 / N**2).reshape(f.shape[:-1] + (N,))
    nk = int(kbin.max()) + 1
    onehot = np.zeros((N, nk))
    onehot[np.arange(N), kbin.reshape(-1)] = 1.0
    return np.arange(nk, dtype=np.float64), power @ onehot


# ------------------------------------------------------------------------ spheres
#: Cap of the default least-squares ``lmax`` (memory ``n_cells (lmax + 1)²`` doubles).
LSQ_LMAX_CAP = 40


def default_lmax(mesh: Mesh, method: str = "auto") -> int:
    """The default largest degree of a sphere's spectrum: ``2 nside`` for ``anafast`` on
    HEALPix; for the least-squares projection ``min(⌊√(n_cells / 2)⌋, 40)`` (the first
    term is also the largest ``lmax`` it accepts; the cap bounds its memory)."""
    if method != "lsq" and spectral_kind(mesh) == "healpix":
        return 2 * int(mesh.info["nside"])
    return min(_lsq_top(mesh), LSQ_LMAX_CAP)


def _lsq_top(mesh: Mesh) -> int:
    return max(1, int(math.isqrt(mesh.n_cells // 2)))


def _harmonic_fit(mesh: Mesh, lmax: int):
    """Cached per mesh: ``√(4π) Y_l^m`` at the cell centres ``(n_cells, (lmax+1)²)``, each
    column's degree, the cell volumes and the Cholesky factor of the volume-weighted Gram
    matrix (refused when its condition number reaches :data:`MAX_CONDITION`)."""
    from scipy.linalg import cho_factor

    from .._cache import per_mesh
    from ..data.random_flows import spherical_harmonic_basis

    def build():
        values, lam, _ = spherical_harmonic_basis(mesh.cell_center.detach().cpu().double(),
                                                  float(mesh.radius), 0, lmax)
        R = float(mesh.radius)
        ell = np.rint((-1.0 + np.sqrt(1.0 + 4.0 * lam.numpy() * R * R)) / 2).astype(np.int64)
        B = values.numpy()
        V = mesh.cell_volume.detach().cpu().double().numpy()
        gram = (B * V[:, None]).T @ B
        cond = np.linalg.cond(gram)
        if not cond < MAX_CONDITION:
            raise ArgumentError("lmax", lmax, f"gives an ill-conditioned harmonic fit on this "
                                f"{mesh.family} mesh (condition number {cond:.3g} >= "
                                f"{MAX_CONDITION:g})", "pass a smaller {lmax}")
        return B, ell, V, cho_factor(gram)

    return per_mesh(mesh, ("validate.spectra.harmonic_fit", lmax), build)


def _sphere_fit(mesh: Mesh, f: np.ndarray, lmax: int) -> Tuple[np.ndarray, np.ndarray,
                                                                np.ndarray]:
    """Least-squares coefficients ``(..., M)`` of ``f`` on the harmonics, the basis, degrees."""
    from scipy.linalg import cho_solve

    if isinstance(lmax, bool) or not isinstance(lmax, (int, np.integer)) or lmax < 0:
        raise ArgumentError("lmax", lmax, "must be an integer >= 0", "pass e.g. lmax=8")
    top = _lsq_top(mesh)
    if lmax > top:
        raise ArgumentError("lmax", lmax, f"must be <= {top} on this {mesh.family} mesh of "
                            f"{mesh.n_cells} cells (⌊√(n_cells/2)⌋: the least-squares fit needs "
                            "about twice as many cells as harmonics)",
                            f"pass {{lmax}} <= {top}, or a finer mesh")
    B, ell, V, factor = _harmonic_fit(mesh, int(lmax))
    rhs = (f.reshape(-1, mesh.n_cells) * V) @ B                     # (S, M)
    coef = cho_solve(factor, rhs.T).T
    return coef.reshape(f.shape[:-1] + (B.shape[1],)), B, ell


def _ring_order(mesh: Mesh) -> Tuple[int, np.ndarray]:
    """``nside`` and the cell of each RING pixel, found from the cell centres."""
    import healpy

    nside = int(mesh.info["nside"])
    c = mesh.cell_center.detach().cpu().double().numpy()
    ring = healpy.vec2pix(nside, c[:, 0], c[:, 1], c[:, 2], nest=False)
    order = np.full(mesh.n_cells, -1, np.int64)
    order[ring] = np.arange(mesh.n_cells)
    if (order < 0).any():
        raise ArgumentError("mesh", f"healpix nside={nside}", "must have one cell per pixel",
                            "build it with meshclosure.mesh.healpix")
    return nside, order


def _healpix_spectrum(mesh: Mesh, f: np.ndarray, lmax: Optional[int]
                      ) -> Tuple[np.ndarray, np.ndarray]:
    import healpy

    nside, order = _ring_order(mesh)
    lmax = 2 * nside if lmax is None else lmax
    if isinstance(lmax, bool) or not isinstance(lmax, (int, np.integer)) \
            or not 0 <= lmax <= 4 * nside:
        raise ArgumentError("lmax", lmax, f"must be an integer in [0, {4 * nside}] at "
                            f"nside={nside}", f"leave it out (2 nside = {2 * nside})")
    maps = f[..., order].reshape(-1, mesh.n_cells)
    ell = np.arange(lmax + 1, dtype=np.float64)
    out = np.empty((maps.shape[0], lmax + 1))
    for s, m in enumerate(maps):
        cl = healpy.anafast(m, lmax=int(lmax), iter=3, pol=False)
        out[s] = (2 * ell + 1) * cl / (4 * math.pi)
    return ell, out.reshape(f.shape[:-1] + (lmax + 1,))


# ------------------------------------------------------------------------- public
def power_spectrum(mesh: Mesh, field: Any, lmax: Optional[int] = None, method: str = "auto"
                   ) -> Tuple[np.ndarray, np.ndarray]:
    """Isotropic power spectrum of cell fields (module docstring).

    Parameters
    ----------
    mesh : Mesh
        A doubly periodic Cartesian plane or a sphere.
    field : array or Tensor, shape (..., n_cells)
        Cell values (e.g. ``(T, n_cells)`` snapshots; average ``P`` over time yourself).
    lmax : int, optional
        Spheres: the largest degree (default :func:`default_lmax`: HEALPix
        ``2 nside``, other spheres ``min(⌊√(n_cells/2)⌋, 40)``; at most
        ``⌊√(n_cells/2)⌋``).
    method : {"auto", "anafast", "lsq"}
        Spheres: ``healpy.anafast`` (HEALPix only; the default there) or the
        least-squares harmonic projection (the default on other spheres).

    Returns
    -------
    k : numpy.ndarray, shape (n_k,)
        Planes: ``|k|`` in units of ``2π/L`` (``0, 1, 2, ...``; multiply by
        ``2π/L`` for radians per length); spheres: the degree ``l``.
    P : numpy.ndarray, shape (..., n_k)
        Power per bin in units of ``field²``; ``Σ_k P`` is the area mean of
        ``field²`` (exactly on planes).

    Raises
    ------
    ArgumentError
        The mesh has no spectrum here (columns, bounded planes), a bad shape,
        non-finite values, or an ``lmax`` the mesh cannot resolve.
    """
    kind = spectral_kind(mesh)
    f = _field(mesh, field)
    if method not in ("auto", "anafast", "lsq"):
        raise ArgumentError("method", method, "must be 'auto', 'anafast' or 'lsq'",
                            "leave it at 'auto'")
    if kind == "plane":
        return _plane_spectrum(mesh, f)
    if method == "anafast" and kind != "healpix":
        raise ArgumentError("method", method, "needs a HEALPix mesh", "use method='lsq'")
    if kind == "healpix" and method != "lsq":
        return _healpix_spectrum(mesh, f, lmax)
    lmax = default_lmax(mesh, "lsq") if lmax is None else lmax
    coef, _, ell = _sphere_fit(mesh, f, lmax)
    P = np.zeros(f.shape[:-1] + (int(lmax) + 1,))
    for l_ in range(int(lmax) + 1):
        P[..., l_] = (coef[..., ell == l_] ** 2).sum(-1)
    return np.arange(int(lmax) + 1, dtype=np.float64), P


def _edges(edges: Any) -> np.ndarray:
    e = np.asarray(edges, dtype=np.float64).reshape(-1) if edges is not None else np.zeros(0)
    if e.size < 1 or not np.isfinite(e).all() or (e <= 0).any() or (np.diff(e) <= 0).any():
        raise ArgumentError("edges", edges, "must be one or more increasing positive "
                            "wavenumbers (degrees on spheres)",
                            "pass e.g. edges=(4, 8): bands |k| < 4, 4 <= |k| < 8, |k| >= 8")
    return e


def band_filter(mesh: Mesh, field: Any, edges: Sequence[float]) -> np.ndarray:
    """Split cell fields into scale bands that sum back to the field.

    Band ``b`` holds the wavenumbers ``e_b ≤ k < e_{b+1}`` with ``e_0 = 0``,
    ``e_n = ∞`` and ``edges = (e_1, ..., e_{n−1})``; ``k`` the integer bin of
    :func:`power_spectrum` on planes (so band ``b`` has the power
    ``Σ_{e_b ≤ k < e_{b+1}} P(k)``), the degree ``l`` on spheres.

    * Planes: FFT masks; the bands are orthogonal in ``Σ_i V_i a_i b_i``.
    * Spheres: the least-squares fit on the harmonics of degree
      ``l < e_{n−1}`` (:func:`power_spectrum`), split by degree; the last band
      is ``field − fit`` (everything from ``e_{n−1}`` up, and the fit's residual).

    Parameters
    ----------
    mesh : Mesh
    field : array or Tensor, shape (..., n_cells)
    edges : sequence of float, increasing, > 0
        In units of ``2π/L`` on planes, degrees on spheres.

    Returns
    -------
    numpy.ndarray, shape (n_bands, ..., n_cells), float64
        ``n_bands = len(edges) + 1``; ``bands.sum(0)`` equals ``field`` to rounding.

    Examples
    --------
    >>> import math, torch
    >>> from meshclosure.mesh import cartesian
    >>> m = cartesian(8, 8)
    >>> x = m.cell_center[:, 0].double()
    >>> b = band_filter(m, torch.sin(2 * math.pi * x) + torch.sin(2 * math.pi * 3 * x), [2])
    >>> [round(float(abs(band - torch.sin(2 * math.pi * k * x).numpy()).max()), 12)
    ...  for band, k in zip(b, (1, 3))]
    [0.0, 0.0]
    >>> band_filter(m, x, [2, 1])
    Traceback (most recent call last):
    ...
    meshclosure.errors.ArgumentError: edges=[2, 1]: must be one or more increasing positive wavenumbers (degrees on spheres); ...
    """
    kind = spectral_kind(mesh)
    f = _field(mesh, field)
    e = _edges(edges)
    lo = np.concatenate([[0.0], e])
    hi = np.concatenate([e, [np.inf]])
    if kind == "plane":
        F, order, kbin = _plane_fft(mesh, f)
        out = np.empty((len(lo),) + f.shape)
        for b, (a, z) in enumerate(zip(lo, hi)):
            mask = (kbin >= a) & (kbin < z)
            grid = np.fft.ifft2(F * mask).real.reshape(f.shape[:-1] + (-1,))
            out[b][..., order] = grid
        return out
    lfit = int(math.ceil(e[-1])) - 1
    if lfit < 0:
        raise ArgumentError("edges", edges, "must reach degree 1 on a sphere (the last edge "
                            "> 1)", "pass e.g. edges=(4, 8)")
    coef, B, ell = _sphere_fit(mesh, f, lfit)
    out = np.empty((len(lo),) + f.shape)
    for b, (a, z) in enumerate(zip(lo[:-1], hi[:-1])):
        sel = (ell >= a) & (ell < z)
        out[b] = coef[..., sel] @ B[:, sel].T
    out[-1] = f - out[:-1].sum(0)
    return out


def spectrum_kmax(mesh: Mesh) -> float:
    """2/3 of the mesh's Nyquist wavenumber: the upper bound of Ross et al. 2023's spectral RMSE.

    Planes: ``(2/3) · min(nx L/lx, ny L/ly)/2`` in units of ``2π/L``; spheres:
    ``(2/3)`` of the default spectrum's largest degree (:func:`default_lmax`:
    ``2 nside`` on HEALPix, ``min(⌊√(n_cells/2)⌋, 40)`` on other spheres).

    >>> from meshclosure.mesh import cartesian
    >>> round(spectrum_kmax(cartesian(48, 48)), 12)
    16.0
    """
    kind = spectral_kind(mesh)
    if kind == "plane":
        info = mesh.info
        L = max(float(info["lx"]), float(info["ly"]))
        nyq = min(int(info["nx"]) * L / float(info["lx"]),
                  int(info["ny"]) * L / float(info["ly"])) / 2
        return 2.0 / 3.0 * nyq
    return 2.0 / 3.0 * default_lmax(mesh)


def default_band_edges(mesh: Mesh) -> Tuple[float, ...]:
    """Band edges ``(⌊k_c/4⌋ + 1, ⌊k_c/2⌋ + 1)``: a large band ``k ≤ k_c/4`` (issue 11's),
    a middle band ``k ≤ k_c/2`` and the rest (``k_c``: Nyquist, ``= 1.5 ×``
    :func:`spectrum_kmax`); at least 2 for the first edge, duplicates dropped.

    >>> from meshclosure.mesh import cartesian
    >>> default_band_edges(cartesian(32, 32)), default_band_edges(cartesian(8, 8))
    ((5.0, 9.0), (2.0, 3.0))
    """
    kc = 1.5 * spectrum_kmax(mesh)
    edges = sorted({max(2.0, math.floor(kc / 4 + 1e-9) + 1.0),
                    max(2.0, math.floor(kc / 2 + 1e-9) + 1.0)})
    if spectral_kind(mesh) != "plane":
        edges = [e for e in edges if e - 1 <= _lsq_top(mesh)] or [2.0]
    return tuple(edges)
