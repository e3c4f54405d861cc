"""A differentiable real spherical-harmonic transform on HEALPix, in torch.

Synthesis ``x = S a`` maps real spherical-harmonic coefficients ``a`` (degree
``l ≤ lmax``, order ``m ≤ min(l, mmax)``) to values at the HEALPix pixel
centres; analysis ``a = Sᵀ W x`` uses the pixel area ``W = 4π / n_pix`` (unit
sphere) as quadrature weight, optionally refined by Jacobi iterations
``a ← a + Sᵀ W (x − S a)`` as ``healpy.map2alm(iter=...)`` does
(Górski et al. 2005, doi:10.1086/427976, §6; Reinecke & Seljebotn 2013,
doi:10.1051/0004-6361/201321494 for the ring algorithm).

It lives below the networks (``meshclosure.sht``, re-exported as
``meshclosure.nn.HealpixSHT``) so that validation can compute angular power
spectra without importing :mod:`meshclosure.nn`.

Real harmonics and coefficient layout
-------------------------------------
With the orthonormal associated Legendre functions ``λ_lm(cos θ)``
(Condon–Shortley phase included, ``2π ∫ λ_lm(z)² dz = 1``, as in ``healpy``)

    x(θ, φ) = Σ_l c_l0 λ_l0 + Σ_{m>0} √2 λ_lm (c_lm cos mφ + s_lm sin mφ),

an orthonormal real basis of ``L²(S²)``. Coefficients are a tensor of shape
``(mmax + 1, lmax + 1, 2, n_channels)``: ``a[m, l, 0] = c_lm``,
``a[m, l, 1] = s_lm``; entries with ``l < m`` and ``a[0, :, 1]`` are not used
(synthesis ignores them, analysis returns 0 there). ``healpy``'s complex
``a_lm`` is ``(c_lm − i s_lm)/√2`` (``m > 0``) and ``c_l0`` (``m = 0``): see
:meth:`HealpixSHT.to_healpy` and :meth:`HealpixSHT.from_healpy`.

Algorithm
---------
Iso-latitude rings: per ``m`` a Legendre matrix product over rings (tables
precomputed in float64 by the stable three-term recursion in ``l`` with a
running scale, so nothing under- or overflows, then cast to the working
dtype; only the northern rings are stored, the southern ones follow from
``λ_lm(−z) = (−1)^{l+m} λ_lm(z)``, and the products are split by the parity
of ``l`` and by blocks of ``m`` that skip most zeros ``l < m``), then per
ring a real FFT of the ring's length with the ring's phase ``φ0``, aliasing
orders ``m ≥ N_ring / 2`` onto the ring's frequencies. Cost
``O(n_channels · lmax² · nside)`` for the Legendre part plus ``nside`` FFT
calls; table memory about ``0.55 (mmax+1) · 2 nside · (lmax+1)`` numbers
(290 MiB in float32 at nside 256, lmax 512; built in ~7 s, once per dtype).

Autograd: synthesis and analysis are :class:`torch.autograd.Function` s whose
backward is the exact adjoint of the forward linear map (``Sᵀ`` for
synthesis, ``W S`` for analysis), itself differentiable (double backward).

Accuracy: synthesis equals ``healpy.alm2map`` and analysis equals
``healpy.map2alm(use_weights=False, iter=k)`` to ~1e-14 on the same pixels;
``<S a, y> = <a, Sᵀ y>`` to rounding; the tables are orthonormal to 1e-11 up
to ``lmax = 767``. HEALPix pixel quadrature is not exact, so analysis∘synthesis
is the identity only approximately; measured relative error
``‖A S a − a‖/‖a‖`` for random ``a``:

=========  ======  ===========  ============
nside      lmax    iterations 0 iterations 3
=========  ======  ===========  ============
4          4       1.0e-2       1.2e-6
4          8       4.0e-2       1.6e-4
8          8       7.6e-3       4.5e-7
8          16      1.5e-2       3.0e-5
=========  ======  ===========  ============

(the mean, ``a_00``, is exact). Learned filters see the same operator in
training and inference, so the default is ``iterations=0``.

Sampling points: the transform samples the HEALPix pixel *centres* of
``healpy.pix2ang`` (the only points that lie on iso-latitude rings with
equal spacing). The finite-volume cell values of
:func:`meshclosure.mesh.healpix` are cell *averages* over pixels whose
centroids sit up to 9% of a pixel away from those centres; the transform
treats each average as the value at the pixel centre. For a band-limited
field the difference is a smoothing, close to isotropic (the pixel window
``healpy.pixwin``, ``1 − O((l/nside)²)``), which a learned isotropic filter
``h_l`` absorbs; the transform is exactly what it is on the pixel values,
and the closures built on it conserve exactly whatever it does.
"""
from __future__ import annotations

import functools
import math

import numpy as np
from scipy.special import xlogy
import torch
from torch import Tensor

from .mesh.healpix import check_nside

__all__ = ["HealpixSHT", "legendre_table", "get_sht", "n_rings"]


def n_rings(nside: int) -> int:
    """Number of iso-latitude rings, ``4 nside − 1``."""
    return 4 * nside - 1


def legendre_table(lmax: int, mmax: int, z: np.ndarray, mmin: int = 0) -> np.ndarray:
    """Orthonormal associated Legendre ``λ_lm(z)``, shape ``(mmax+1−mmin, len(z), lmax+1)``.

    Orders ``mmin ≤ m ≤ mmax`` (row ``m − mmin``), degrees ``0 ≤ l ≤ lmax``.
    ``λ_lm(cos θ) e^{imφ}`` is healpy's (and Condon–Shortley's) ``Y_lm``:
    ``λ_00 = 1/√(4π)``, ``λ_mm = −√((2m+1)/(2m)) sin θ λ_{m−1,m−1}``,
    ``λ_lm = √((4l²−1)/(l²−m²)) (z λ_{l−1,m} − b_{l−1,m} λ_{l−2,m})`` with
    ``b_{l−1,m} = √(((l−1)²−m²)/(4(l−1)²−1))``,
    evaluated with a per-entry running scale so that ``sinᵐθ`` never
    underflows; entries ``l < m`` are 0. float64.

    Examples
    --------
    >>> lam = legendre_table(2, 2, np.array([0.5]))           # z = cos θ = 0.5
    >>> expected = [math.sqrt(3 / (4 * math.pi)) * 0.5,         # λ_10
    ...             -math.sqrt(3 / (8 * math.pi)) * math.sqrt(0.75)]   # λ_11
    >>> np.allclose([lam[0, 0, 1], lam[1, 0, 1]], expected, rtol=1e-14, atol=0)
    True
    >>> bool(np.array_equal(legendre_table(2, 2, np.array([0.5]), mmin=1), lam[1:]))
    True
    >>> poles = legendre_table(2, 2, np.array([1.0, -1.0]))    # finite at the poles
    >>> np.allclose(poles[0, :, 2], math.sqrt(5 / (4 * math.pi)), rtol=1e-14), float(abs(poles[1:]).max())
    (True, 0.0)
    """
    z = np.asarray(z, dtype=np.float64)
    if lmax < 0 or not 0 <= mmin <= mmax <= lmax:
        raise ValueError(f"need 0 <= mmin <= mmax <= lmax; got lmax={lmax}, mmax={mmax}, "
                         f"mmin={mmin}.")
    sin = np.sqrt(np.maximum(0.0, (1 - z) * (1 + z)))
    m_all = np.arange(mmax + 1, dtype=np.float64)
    # log|λ_mm| = log(1/√4π) + Σ_{k≤m} ½ log((2k+1)/(2k)) + m log sinθ
    steps = np.concatenate([[0.0], 0.5 * np.log((2 * m_all[1:] + 1) / (2 * m_all[1:]))])
    m = m_all[mmin:]
    with np.errstate(divide="ignore"):
        log_scale = (-0.5 * math.log(4 * math.pi) + np.cumsum(steps)[mmin:])[:, None] \
            + xlogy(m[:, None], sin[None, :])                         # (M, R); 0 at m = 0
    p1 = np.where(m % 2 == 1, -1.0, 1.0)[:, None] * np.ones_like(z)[None, :]  # λ_{l−1,m}
    p2 = np.zeros_like(p1)                                                     # λ_{l−2,m}
    out = np.zeros((len(m), len(z), lmax + 1))
    rows = np.arange(len(m))
    with np.errstate(under="ignore"):
        out[rows, :, rows + mmin] = p1 * np.exp(log_scale)
        for k in range(1, lmax + 1):                  # l = m + k for every active m
            n = min(mmax, lmax - k) + 1 - mmin
            if n <= 0:
                break
            rows, ms = np.arange(n), m[:n]
            ll = ms + k
            p1, p2, log_scale = p1[:n], p2[:n], log_scale[:n]
            a = np.sqrt((4.0 * ll**2 - 1) / (ll**2 - ms**2))[:, None]
            b = np.sqrt(((ll - 1.0) ** 2 - ms**2) / (4.0 * (ll - 1.0) ** 2 - 1))[:, None]
            p2, p1 = p1, a * (z[None, :] * p1 - b * p2)
            out[rows, :, rows + mmin + k] = p1 * np.exp(log_scale)
            f = np.where(np.abs(p1) > 1e100, np.abs(p1), 1.0)   # keep the running scale
            p1, p2, log_scale = p1 / f, p2 / f, log_scale + np.log(f)
    return out


class _Rings:
    """Ring structure of HEALPix ``nside`` in RING order (precomputed with healpy)."""

    def __init__(self, nside: int) -> None:
        import healpy

        self.nside = nside
        self.n_pix = 12 * nside**2
        rings = np.arange(1, n_rings(nside) + 1)
        start, length, z, _, _ = healpy.ringinfo(nside, rings)
        _, phi0 = healpy.pix2ang(nside, start)
        self.start, self.length = start.astype(np.int64), length.astype(np.int64)
        self.z, self.phi0 = np.asarray(z, dtype=np.float64), np.asarray(phi0, dtype=np.float64)
        # rings grouped by length: (N, ring indices); polar pairs and the equatorial belt
        self.groups = []
        for n in np.unique(self.length):
            idx = np.nonzero(self.length == n)[0]
            pix = self.start[idx][:, None] + np.arange(n)[None, :]
            self.groups.append((int(n), idx, pix))


class HealpixSHT:
    """Real spherical-harmonic transform on HEALPix ``nside`` (see the module docstring).

    Parameters
    ----------
    nside : int
        HEALPix resolution (power of 2).
    lmax : int, optional
        Band limit; default ``2 nside``. At most ``3 nside − 1`` is sensible.
    mmax : int, optional
        Largest order; default ``lmax``.
    nest : bool
        Maps are NESTED (default, as :func:`meshclosure.mesh.healpix`) or RING ordered.

    Shapes: maps ``(n_pix, C)``; coefficients ``(mmax+1, lmax+1, 2, C)``
    (:meth:`coeff_shape`). 1-D maps / 3-D coefficients mean ``C = 1`` and
    keep their shape.

    Examples
    --------
    >>> import torch
    >>> sht = HealpixSHT(4, lmax=6)
    >>> a = sht.random_coefficients(3, generator=torch.Generator().manual_seed(0))
    >>> x = sht.synthesis(a)
    >>> x.shape, sht.coeff_shape(3)
    (torch.Size([192, 3]), (7, 7, 2, 3))
    >>> bool((sht.analysis(x, iterations=3) - a).abs().max() < 1e-3)
    True
    >>> sht.synthesis(torch.zeros(7, 6, 2, 3))
    Traceback (most recent call last):
    ...
    ValueError: coefficients must have shape (mmax+1=7, lmax+1=7, 2, C) ...
    """

    def __init__(self, nside: int, lmax: int | None = None, mmax: int | None = None,
                 nest: bool = True) -> None:
        self.nside = check_nside(nside)
        self.lmax = 2 * self.nside if lmax is None else int(lmax)
        self.mmax = self.lmax if mmax is None else int(mmax)
        if self.lmax < 0 or not 0 <= self.mmax <= self.lmax:
            raise ValueError(f"need 0 <= mmax <= lmax; got lmax={lmax}, mmax={mmax}. Use e.g. "
                             f"lmax=2*nside={2 * self.nside}.")
        self.nest = bool(nest)
        self.rings = _Rings(self.nside)
        self.n_pix = self.rings.n_pix
        #: quadrature weight of every pixel (unit sphere): ``4π / n_pix``
        self.weight = 4 * math.pi / self.n_pix
        import healpy

        if self.nest:   # ring pixel p holds nest pixel ring2nest[p]
            self._to_ring = torch.as_tensor(healpy.ring2nest(self.nside, np.arange(self.n_pix)))
            self._from_ring = torch.as_tensor(healpy.nest2ring(self.nside, np.arange(self.n_pix)))
        else:
            self._to_ring = self._from_ring = None
        self._cache: dict = {}

    # ------------------------------------------------------------ bookkeeping
    def coeff_shape(self, channels: int) -> tuple[int, int, int, int]:
        """``(mmax+1, lmax+1, 2, channels)``."""
        return (self.mmax + 1, self.lmax + 1, 2, channels)

    def mask(self, dtype: torch.dtype = torch.float64) -> Tensor:
        """``(mmax+1, lmax+1, 2)``: 1 on the coefficients in use, 0 on the structural zeros."""
        m = torch.arange(self.mmax + 1)[:, None]
        l_ = torch.arange(self.lmax + 1)[None, :]
        ok = (l_ >= m).to(dtype)
        out = torch.stack([ok, ok], -1)
        out[0, :, 1] = 0
        return out

    def degrees(self) -> Tensor:
        """``(mmax+1, lmax+1, 2)`` degree ``l`` of each coefficient (for filters by ``l``)."""
        return torch.arange(self.lmax + 1)[None, :, None].expand(self.mmax + 1, -1, 2)

    def random_coefficients(self, channels: int = 1, dtype: torch.dtype = torch.float64,
                            generator: torch.Generator | None = None) -> Tensor:
        """Gaussian coefficients (unit variance) on the used entries, 0 elsewhere."""
        a = torch.randn(self.coeff_shape(channels), dtype=dtype, generator=generator)
        return a * self.mask(dtype)[..., None]

    def _tables(self, dtype: torch.dtype, device: torch.device) -> dict:
        """Legendre blocks, phases and FFT folding indices for ``dtype`` on ``device`` (cached).

        The Legendre table ``g_m λ_lm(z_ring)`` (``g_0 = 1``, ``g_m = √2``) is
        split by the parity of ``l`` (halving the products: the southern rings
        follow from the northern ones) and into blocks of orders ``[m0, m1)``
        that keep only the degrees ``l ≥ m0`` (skipping most of the zeros ``l < m``).
        """
        key = (dtype, str(device))
        if key not in self._cache:
            r, nside = self.rings, self.nside
            north = 2 * nside                               # rings 0 .. 2 nside − 1 (equator)
            m = np.arange(self.mmax + 1)
            g = np.where(m == 0, 1.0, math.sqrt(2.0))
            size = max(8, -(-(self.mmax + 1) // 8))
            blocks = []
            for m0 in range(0, self.mmax + 1, size):     # one float64 block at a time
                m1 = min(m0 + size, self.mmax + 1)
                lam = legendre_table(self.lmax, m1 - 1, r.z[:north], mmin=m0)
                lam *= g[m0:m1, None, None]
                je, jo = (m0 + 1) // 2, m0 // 2             # first even / odd l >= m0
                blocks.append((m0, m1, je, jo) + tuple(
                    torch.as_tensor(np.ascontiguousarray(lam[:, :, p::2][:, :, j:]),
                                    dtype=dtype, device=device) for p, j in ((0, je), (1, jo))))
            phase = np.exp(1j * m[:, None] * r.phi0[None, :])          # (M, R)
            cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
            groups = []
            for n, idx, pix in r.groups:
                k = m % n
                mirror = k > n // 2
                target = np.where(mirror, n - k, k)
                fold = np.where((target > 0) & (target < n // 2), 0.5, 1.0)
                groups.append((n, torch.as_tensor(idx, device=device),
                               torch.as_tensor(pix.reshape(-1), device=device),
                               torch.as_tensor(mirror, device=device)[None, :, None],
                               torch.as_tensor(target, device=device),
                               torch.as_tensor(fold, dtype=dtype, device=device)[None, :, None]))
            self._cache[key] = {
                "blocks": blocks,
                "sign": torch.as_tensor((-1.0) ** m, dtype=dtype, device=device)[:, None, None],
                "phase": torch.as_tensor(phase, dtype=cdtype, device=device)[..., None],
                "groups": groups,
            }
        return self._cache[key]

    def table_bytes(self, dtype: torch.dtype = torch.float32) -> int:
        """Memory of the Legendre tables for ``dtype`` (built on first use)."""
        t = self._tables(dtype, torch.device("cpu"))
        return sum(b.numel() * b.element_size() for blk in t["blocks"] for b in blk[4:])

    # ------------------------------------------------------------ kernels (RING order, no grad)
    def _synthesis_kernel(self, a: Tensor) -> Tensor:
        """``(M, L, 2, C)`` -> ring-ordered ``(n_pix, C)``."""
        t = self._tables(a.dtype, a.device)
        M, L, _, C = a.shape
        A = a.reshape(M, L, 2 * C)
        Ae, Ao = A[:, 0::2], A[:, 1::2]
        Pe = A.new_empty(M, 2 * self.nside, 2 * C)      # even-l and odd-l parts, northern rings
        Po = torch.empty_like(Pe)
        for m0, m1, je, jo, lam_e, lam_o in t["blocks"]:
            torch.bmm(lam_e, Ae[m0:m1, je:], out=Pe[m0:m1])
            torch.bmm(lam_o, Ao[m0:m1, jo:], out=Po[m0:m1])
        south = (t["sign"] * (Pe - Po))[:, :-1].flip(1)   # λ_lm(−z) = (−1)^{l+m} λ_lm(z)
        G = torch.cat([Pe + Po, south], 1).reshape(M, -1, 2, C)             # (M, R, 2, C)
        H = torch.complex(G[:, :, 0], -G[:, :, 1]) * t["phase"]              # (M, R, C)
        out = a.new_empty(self.n_pix, C)
        for n, idx, pix, mirror, target, fold in t["groups"]:
            h = H[:, idx].transpose(0, 1)                                    # (g, M, C)
            h = torch.where(mirror, h.conj(), h) * fold
            spec = h.new_zeros(len(idx), n // 2 + 1, C)
            spec.index_add_(1, target, h)
            out[pix] = torch.fft.irfft(spec, n=n, dim=1, norm="forward").reshape(-1, C)
        return out

    def _adjoint_kernel(self, y: Tensor) -> Tensor:
        """Ring-ordered ``(n_pix, C)`` -> ``(M, L, 2, C)``: the exact transpose of synthesis."""
        t = self._tables(y.dtype, y.device)
        M, L, C = self.mmax + 1, self.lmax + 1, y.shape[1]
        R = n_rings(self.nside)
        Z = torch.empty(M, R, C, dtype=t["phase"].dtype, device=y.device)
        for n, idx, pix, mirror, target, fold in t["groups"]:
            spec = torch.fft.rfft(y[pix].reshape(len(idx), n, C), dim=1)     # (g, n/2+1, C)
            z = spec[:, target]                                              # (g, M, C)
            Z[:, idx] = torch.where(mirror, z.conj(), z).transpose(0, 1)
        Z = Z * t["phase"].conj()
        G = torch.stack([Z.real, -Z.imag], 2).reshape(M, R, 2 * C)
        north = G[:, :2 * self.nside]
        south = torch.cat([G[:, 2 * self.nside:].flip(1), G.new_zeros(M, 1, 2 * C)], 1)
        south = t["sign"] * south
        Se, So = north + south, north - south
        out = y.new_zeros(M, L, 2 * C)
        oe, oo = out[:, 0::2], out[:, 1::2]
        for m0, m1, je, jo, lam_e, lam_o in t["blocks"]:
            oe[m0:m1, je:] = torch.bmm(lam_e.transpose(1, 2), Se[m0:m1])
            oo[m0:m1, jo:] = torch.bmm(lam_o.transpose(1, 2), So[m0:m1])
        out = out.reshape(M, L, 2, C)
        out[0, :, 1] = 0
        return out

    # ------------------------------------------------------------ public transforms
    def _ring_index(self, pixels: Tensor | None, device) -> tuple[Tensor | None, Tensor | None]:
        """(gather map rows -> RING order, gather RING -> map rows)."""
        if pixels is None:
            if self._to_ring is None:
                return None, None
            return self._to_ring.to(device), self._from_ring.to(device)
        ring = torch.as_tensor(pixels, device=device)
        return torch.argsort(ring), ring

    def _check_coeff(self, a: Tensor) -> tuple[Tensor, bool]:
        squeeze = a.dim() == 3
        a = a[..., None] if squeeze else a
        if a.dim() != 4 or tuple(a.shape[:3]) != (self.mmax + 1, self.lmax + 1, 2):
            raise ValueError(f"coefficients must have shape (mmax+1={self.mmax + 1}, lmax+1="
                             f"{self.lmax + 1}, 2, C) (or without C); got {tuple(a.shape)}. "
                             f"Build them with coeff_shape(C).")
        return a, squeeze

    def _check_map(self, x: Tensor) -> tuple[Tensor, bool]:
        squeeze = x.dim() == 1
        x = x[:, None] if squeeze else x
        if x.dim() != 2 or x.shape[0] != self.n_pix:
            raise ValueError(f"map must have shape (n_pix={self.n_pix}, C) or (n_pix,); got "
                             f"{tuple(x.shape)}.")
        return x, squeeze

    def synthesis(self, a: Tensor, pixels: Tensor | None = None) -> Tensor:
        """Map values ``x = S a`` at the pixel centres.

        Parameters
        ----------
        a : Tensor, shape (mmax+1, lmax+1, 2, C) or (mmax+1, lmax+1, 2)
        pixels : LongTensor, shape (n_pix,), optional
            RING pixel index of each output row (default: NESTED or RING order
            as set by ``nest``).

        Returns
        -------
        Tensor, shape (n_pix, C) or (n_pix,)
        """
        a, squeeze = self._check_coeff(a)
        to_ring, from_ring = self._ring_index(pixels, a.device)
        x = _Synthesis.apply(a, self)
        x = x if from_ring is None else x[from_ring]
        return x[:, 0] if squeeze else x

    def adjoint(self, y: Tensor, pixels: Tensor | None = None) -> Tensor:
        """``Sᵀ y``: the transpose of :meth:`synthesis` (analysis without weights)."""
        y, squeeze = self._check_map(y)
        to_ring, _ = self._ring_index(pixels, y.device)
        a = _Analysis.apply(y if to_ring is None else y[to_ring], self, 1.0)
        return a[..., 0] if squeeze else a

    def analysis(self, x: Tensor, iterations: int = 0, pixels: Tensor | None = None) -> Tensor:
        """Coefficients ``a = Sᵀ W x`` (``W = 4π/n_pix``), plus ``iterations`` Jacobi steps.

        Parameters
        ----------
        x : Tensor, shape (n_pix, C) or (n_pix,)
        iterations : int
            ``a ← a + Sᵀ W (x − S a)`` repeated (``healpy.map2alm(iter=...)``).
        pixels : LongTensor, shape (n_pix,), optional
            RING pixel index of each input row.

        Returns
        -------
        Tensor, shape (mmax+1, lmax+1, 2, C) or (mmax+1, lmax+1, 2)
        """
        x, squeeze = self._check_map(x)
        to_ring, _ = self._ring_index(pixels, x.device)
        xr = x if to_ring is None else x[to_ring]
        a = _Analysis.apply(xr, self, self.weight)
        for _ in range(iterations):
            a = a + _Analysis.apply(xr - _Synthesis.apply(a, self), self, self.weight)
        return a[..., 0] if squeeze else a

    # ------------------------------------------------------------ healpy conversion
    def power_spectrum(self, a: Tensor) -> Tensor:
        """Angular power spectrum ``C_l`` of coefficients ``a (mmax+1, lmax+1, 2[, C])``.

        ``C_l = (c_l0² + Σ_{0<m≤min(l, mmax)} (c_lm² + s_lm²)) / (2l + 1)``, the mean
        squared coefficient per degree: ``healpy.alm2cl`` of :meth:`to_healpy`. The total
        ``Σ_l (2l+1) C_l`` is the squared l2 norm of ``a`` (Parseval), i.e. the integral of
        ``x²`` over the unit sphere for ``x = synthesis(a)``. Differentiable.

        Returns
        -------
        Tensor, shape (lmax+1,) or (lmax+1, C)

        Examples
        --------
        >>> sht = HealpixSHT(4, lmax=4)
        >>> a = torch.zeros(sht.coeff_shape(1), dtype=torch.float64)
        >>> a[1, 2, 0] = 5.0                      # one l = 2 harmonic: C_2 = 25 / 5
        >>> sht.power_spectrum(a)[:, 0].tolist()
        [0.0, 0.0, 5.0, 0.0, 0.0]
        >>> sht.power_spectrum(torch.zeros(3, 3))
        Traceback (most recent call last):
        ...
        ValueError: coefficients must have shape (mmax+1=5, lmax+1=5, 2, C) (or without C); got (3, 3). ...
        """
        a, squeeze = self._check_coeff(a)
        used = self.mask(a.dtype).to(a.device)[..., None]
        two_l_plus_1 = 2 * torch.arange(self.lmax + 1, dtype=a.dtype, device=a.device) + 1
        cl = (a.pow(2) * used).sum(dim=(0, 2)) / two_l_plus_1[:, None]
        return cl[:, 0] if squeeze else cl

    def angular_power_spectrum(self, x: Tensor, iterations: int = 3,
                               pixels: Tensor | None = None) -> Tensor:
        """``C_l`` of a map ``x (n_pix[, C])``: :meth:`power_spectrum` of :meth:`analysis`.

        For validation (spectra of fields and fluxes on HEALPix meshes) without
        importing the networks. ``iterations`` Jacobi refinements as in
        ``healpy.anafast(iter=3)``.

        Examples
        --------
        >>> sht = HealpixSHT(4, lmax=4)
        >>> x = torch.full((sht.n_pix,), 2.0, dtype=torch.float64)   # constant map
        >>> cl = sht.angular_power_spectrum(x, iterations=10)         # C_0 = 4π · 2²
        >>> round(float(cl[0]) / (16 * math.pi), 12), float(cl[1:].abs().max()) < 1e-20
        (1.0, True)
        """
        return self.power_spectrum(self.analysis(x, iterations=iterations, pixels=pixels))

    def to_healpy(self, a: Tensor) -> np.ndarray:
        """Complex healpy ``alm`` (``healpy.Alm`` layout, ``lmax``, ``mmax``) of one channel
        ``a (mmax+1, lmax+1, 2)``."""
        import healpy

        a = a.detach().cpu().double().numpy()
        alm = np.zeros(healpy.Alm.getsize(self.lmax, self.mmax), dtype=np.complex128)
        for m in range(self.mmax + 1):
            ls = np.arange(m, self.lmax + 1)
            idx = healpy.Alm.getidx(self.lmax, ls, m)
            alm[idx] = a[m, ls, 0] if m == 0 else (a[m, ls, 0] - 1j * a[m, ls, 1]) / math.sqrt(2)
        return alm

    def from_healpy(self, alm: np.ndarray, dtype: torch.dtype = torch.float64) -> Tensor:
        """Inverse of :meth:`to_healpy`: ``(mmax+1, lmax+1, 2)``."""
        import healpy

        out = np.zeros((self.mmax + 1, self.lmax + 1, 2))
        for m in range(self.mmax + 1):
            ls = np.arange(m, self.lmax + 1)
            v = alm[healpy.Alm.getidx(self.lmax, ls, m)]
            if m == 0:
                out[0, ls, 0] = v.real
            else:
                out[m, ls, 0], out[m, ls, 1] = math.sqrt(2) * v.real, -math.sqrt(2) * v.imag
        return torch.as_tensor(out, dtype=dtype)

    def __repr__(self) -> str:
        return (f"HealpixSHT(nside={self.nside}, lmax={self.lmax}, mmax={self.mmax}, "
                f"nest={self.nest})")


class _Synthesis(torch.autograd.Function):
    """``x = S a`` (RING order); backward ``Sᵀ g``."""

    @staticmethod
    def forward(ctx, a: Tensor, sht: HealpixSHT) -> Tensor:
        ctx.sht = sht
        return sht._synthesis_kernel(a)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return _Analysis.apply(grad.contiguous(), ctx.sht, 1.0), None


class _Analysis(torch.autograd.Function):
    """``a = w Sᵀ x`` (RING order, scalar weight ``w``); backward ``w S g``."""

    @staticmethod
    def forward(ctx, x: Tensor, sht: HealpixSHT, weight: float) -> Tensor:
        ctx.sht, ctx.weight = sht, weight
        out = sht._adjoint_kernel(x)
        return out if weight == 1.0 else out * weight

    @staticmethod
    def backward(ctx, grad: Tensor):
        g = _Synthesis.apply(grad.contiguous(), ctx.sht)
        return (g if ctx.weight == 1.0 else g * ctx.weight), None, None


@functools.lru_cache(maxsize=16)
def get_sht(nside: int, lmax: int, mmax: int | None = None) -> HealpixSHT:
    """A cached RING-ordered :class:`HealpixSHT` (for models; pass ``pixels`` to its methods)."""
    return HealpixSHT(nside, lmax, mmax, nest=False)
