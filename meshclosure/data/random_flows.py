"""Seeded random fields for the truth scenarios: mode bases and Ornstein–Uhlenbeck amplitudes.

A random field is a finite sum of modes with time-dependent amplitudes ::

    φ(x, t) = Σ_k a_k(t) e_k(x)

* Modes ``e_k`` (:func:`mode_basis`): on a periodic plane ``[0, lx) × [0, ly)``
  the real Fourier modes ``√2 cos(k·x)``, ``√2 sin(k·x)`` with
  ``k = 2π (m/lx, n/ly)`` in one half-plane and ``|k|/k0`` in a band
  ``[kmin, kmax]``, ``k0 = 2π / max(lx, ly)``; on a sphere of radius ``R`` the real
  spherical harmonics ``√(4π) Y_l^m`` (orthonormal ones times ``√(4π)``) with
  ``lmin ≤ l ≤ lmax``. Every mode has unit mean square over the domain and
  is an eigenfunction of the Laplacian, ``∇² e_k = −λ_k e_k``, with
  ``λ_k = |k|²`` (plane) or ``l(l+1)/R²`` (sphere).
* Amplitudes ``a_k(t)`` (:class:`OrnsteinUhlenbeck`): independent stationary
  Ornstein–Uhlenbeck processes with variance ``σ_k²`` and correlation time
  ``τ_k``, ``⟨a_k(t) a_k(t+s)⟩ = σ_k² exp(−|s|/τ_k)``, sampled exactly on the
  grid ``t_n = n h`` (Gillespie 1996, doi:10.1103/PhysRevE.54.2084)::

      a_k(t_{n+1}) = ρ_k a_k(t_n) + σ_k √(1 − ρ_k²) ξ_{k,n},    ρ_k = exp(−h/τ_k)

  with ``ξ ~ N(0, 1)`` from a NumPy ``Generator`` seeded once, and linear in
  time between samples (so Runge–Kutta stages at ``t_n + h/2`` are defined).
  The sequence is a pure function of the seed: bit-for-bit reproducible,
  whatever order the times are asked in.

* Synthesis (:class:`ModeSynthesis`): ``φ`` at fixed points for a block of
  amplitude vectors at once, by an inverse FFT on uniform periodic grids and
  by a parity-reduced GEMM on spheres, equal to the dense sum to rounding
  (the scenarios synthesise blocks of OU samples aligned to absolute sample
  indices, :meth:`OrnsteinUhlenbeck.samples`).

:func:`band_variances` sets ``σ_k`` from a target rms of the velocity
``u = k × ∇ψ`` (for a streamfunction) or of the field itself, with a power-law
shell spectrum.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from ..errors import ArgumentError
from ..mesh import Mesh

__all__ = ["OrnsteinUhlenbeck", "fourier_basis", "spherical_harmonic_basis", "mode_basis",
           "ModeSynthesis", "band_variances"]


class OrnsteinUhlenbeck:
    """Independent stationary OU processes, sampled exactly every ``h``, linear in between.

    Parameters
    ----------
    sigma : array, shape (n_modes,)
        Stationary standard deviations ``σ_k``.
    tau : float or array, shape (n_modes,)
        Correlation times ``τ_k`` (time units, > 0).
    h : float
        Sampling interval (the model time step).
    seed : int or sequence of int
        Seed of the ``numpy.random.default_rng`` stream (e.g. ``[seed, stream]``).

    Examples
    --------
    >>> ou = OrnsteinUhlenbeck(np.ones(3), 0.5, 0.01, seed=[0, 1])
    >>> a0, a1 = ou.sample(0), ou.sample(1)
    >>> bool(np.array_equal(ou(0.005), 0.5 * (a0 + a1)))
    True
    >>> bool(np.array_equal(OrnsteinUhlenbeck(np.ones(3), 0.5, 0.01, seed=[0, 1]).sample(1), a1))
    True
    >>> OrnsteinUhlenbeck(np.ones(3), -1.0, 0.01, seed=0)
    Traceback (most recent call last):
    ...
    ValueError: tau must be positive and finite (a correlation time); got min -1.0. ...
    """

    def __init__(self, sigma, tau, h: float, seed, window: int = 16) -> None:
        self.sigma = np.asarray(sigma, dtype=np.float64).reshape(-1)
        tau = np.broadcast_to(np.asarray(tau, dtype=np.float64), self.sigma.shape).copy()
        if not (np.all(np.isfinite(tau)) and np.all(tau > 0)):
            raise ValueError(f"tau must be positive and finite (a correlation time); got min "
                             f"{tau.min() if tau.size else tau}. Pass e.g. tau=0.1.")
        if not (np.all(np.isfinite(self.sigma)) and np.all(self.sigma >= 0)):
            raise ValueError("sigma must be finite and >= 0 (standard deviations).")
        if not (math.isfinite(h) and h > 0):
            raise ValueError(f"h must be a positive sampling interval; got {h!r}.")
        self.tau, self.h, self.seed, self.window = tau, float(h), seed, int(window)
        self.rho = np.exp(-self.h / tau)
        self._innov = self.sigma * np.sqrt(-np.expm1(-2.0 * self.h / tau))
        self._reset()

    @property
    def n_modes(self) -> int:
        return int(self.sigma.size)

    def _reset(self) -> None:
        self._rng = np.random.default_rng(self.seed)
        self._head = 0
        self._value = self.sigma * self._rng.standard_normal(self.n_modes)
        self._recent = {0: self._value}

    def sample(self, n: int) -> np.ndarray:
        """Amplitudes ``a(t_n)`` ``(n_modes,)`` at sample index ``n >= 0`` (a fresh copy)."""
        if n < 0:
            raise ValueError(f"sample index n must be >= 0 (t >= 0); got {n}.")
        if n in self._recent:
            return self._recent[n].copy()
        if n < self._head:        # older than the window: replay the stream from the seed
            self._reset()
        while self._head < n:
            xi = self._rng.standard_normal(self.n_modes)
            self._value = self.rho * self._value + self._innov * xi
            self._head += 1
            self._recent[self._head] = self._value
            self._recent.pop(self._head - self.window, None)
        return self._value.copy()

    def samples(self, start: int, stop: int) -> np.ndarray:
        """Amplitudes ``a(t_n)`` for ``start <= n < stop``, shape ``(stop − start, n_modes)``:
        row ``n − start`` equals :meth:`sample` ``(n)`` bit for bit (a block API for
        synthesising many future samples at once; keep ``window >= stop − start`` plus
        the look-back you need, or older samples are replayed from the seed)."""
        if not (0 <= start <= stop):
            raise ValueError(f"need 0 <= start <= stop (sample indices); got start={start}, "
                             f"stop={stop}.")
        out = np.empty((stop - start, self.n_modes))
        for i, n in enumerate(range(start, stop)):
            out[i] = self._recent[n] if n in self._recent else self.sample(n)
        return out

    def stencil(self, t: float) -> Tuple[Tuple[int, float], ...]:
        """Sample indices and weights ``((n, w), ...)`` with ``a(t) = Σ w a(t_n)``:
        one pair on the sample grid, two (linear interpolation) in between.

        :meth:`__call__` combines the amplitudes so; a field linear in the
        amplitudes can instead cache its value per sample index and combine
        those (``KinematicScenario.psi_vertex`` does)."""
        x = float(t) / self.h
        n = math.floor(x + 1e-9)
        frac = x - n
        if abs(frac) < 1e-9:
            return ((n, 1.0),)
        return ((n, 1.0 - frac), (n + 1, frac))

    def __call__(self, t: float) -> np.ndarray:
        """Amplitudes at time ``t >= 0``: exact on the sample grid, linear in between."""
        st = self.stencil(t)
        if len(st) == 1:
            return self.sample(st[0][0])
        (n0, w0), (n1, w1) = st
        return w0 * self.sample(n0) + w1 * self.sample(n1)


def _fourier_waves(lx: float, ly: float, kmin: float, kmax: float) -> list:
    """Integer wave numbers ``(m, n)`` of :func:`fourier_basis`'s modes, in its order
    (``k = 2π (m/lx, n/ly)``; ``m >= 0``, and ``n > 0`` when ``m = 0``)."""
    k0 = 2 * math.pi / max(lx, ly)
    mmax, nmax = int(math.ceil(kmax * k0 * lx / (2 * math.pi))), \
        int(math.ceil(kmax * k0 * ly / (2 * math.pi)))
    waves = []
    for m in range(0, mmax + 1):
        for n in range(-nmax, nmax + 1):
            if m == 0 and n <= 0:
                continue
            kx, ky = 2 * math.pi * m / lx, 2 * math.pi * n / ly
            kk = math.hypot(kx, ky) / k0
            if kmin - 1e-9 <= kk <= kmax + 1e-9:
                waves.append((m, n))
    if not waves:
        raise ValueError(f"the band [{kmin}, {kmax}] (units of 2π/max(lx, ly)) holds no Fourier "
                         "mode of this periodic domain; widen it (e.g. kmax >= 1).")
    return waves


def fourier_basis(points: Tensor, lx: float, ly: float, kmin: float, kmax: float):
    """Real Fourier modes on the periodic plane with ``kmin ≤ |k|/k0 ≤ kmax``.

    Parameters
    ----------
    points : Tensor, shape (n, 2)
    lx, ly : float
        Periods.
    kmin, kmax : float
        Band in units of ``k0 = 2π / max(lx, ly)``.

    Returns
    -------
    values : Tensor, shape (n, n_modes)
        ``√2 cos(k·x)``, ``√2 sin(k·x)`` pairs (unit mean square).
    lam : Tensor, shape (n_modes,)
        ``|k|²``.
    kappa : Tensor, shape (n_modes,)
        ``|k|``.
    """
    waves = [(2 * math.pi * m / lx, 2 * math.pi * n / ly)
             for m, n in _fourier_waves(lx, ly, kmin, kmax)]
    k = torch.tensor(waves, dtype=torch.float64, device=points.device)
    phase = points.double() @ k.T
    values = math.sqrt(2.0) * torch.stack([torch.cos(phase), torch.sin(phase)], 2)
    values = values.reshape(points.shape[0], -1)
    kk = k.norm(dim=1).repeat_interleave(2)
    return values, kk**2, kk


def spherical_harmonic_basis(points: Tensor, radius: float, lmin: int, lmax: int):
    """Real spherical harmonics ``√(4π) Y_l^m``, ``lmin ≤ l ≤ lmax``, at points of a sphere.

    Fully normalised associated Legendre functions by the standard stable
    three-term recurrence in ``l`` (e.g. Holmes & Featherstone 2002,
    doi:10.1007/s00190-002-0216-2), so high degrees are accurate.

    Parameters
    ----------
    points : Tensor, shape (n, 3)
    radius : float
    lmin, lmax : int

    Returns
    -------
    values : Tensor, shape (n, n_modes)
        Unit mean square over the sphere (``n_modes = (lmax+1)² − lmin²``).
    lam : Tensor, shape (n_modes,)
        ``l(l+1)/R²``.
    kappa : Tensor, shape (n_modes,)
        ``√(l(l+1))/R``.

    Examples
    --------
    >>> x = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]], dtype=torch.float64)
    >>> v, lam, _ = spherical_harmonic_basis(x, 1.0, 1, 1)    # √3 (z, −x, −y) in this order
    >>> [round(float(a), 6) + 0.0 for a in v[1]], lam.tolist()
    ([0.0, -1.732051, 0.0], [2.0, 2.0, 2.0])
    """
    if not (0 <= lmin <= lmax):
        raise ValueError(f"need 0 <= lmin <= lmax; got lmin={lmin}, lmax={lmax}.")
    x = points.double()
    x = x / x.norm(dim=1, keepdim=True)
    z = x[:, 2].clamp(-1.0, 1.0)
    s = torch.sqrt(torch.clamp(1.0 - z * z, min=0.0))
    lon = torch.atan2(x[:, 1], x[:, 0])
    cols = {}
    pmm = torch.full_like(z, math.sqrt(1.0 / (4 * math.pi)))
    for m in range(0, lmax + 1):
        if m > 0:
            pmm = -math.sqrt((2 * m + 1) / (2 * m)) * s * pmm
        p_prev2, p_prev = None, pmm
        for ll in range(m, lmax + 1):
            if ll == m:
                p = pmm
            elif ll == m + 1:
                p = math.sqrt(2 * m + 3) * z * pmm
            else:
                a = math.sqrt((4 * ll * ll - 1) / (ll * ll - m * m))
                b = math.sqrt(((ll - 1) ** 2 - m * m) / (4 * (ll - 1) ** 2 - 1))
                p = a * (z * p_prev - b * p_prev2)
            if ll > m:
                p_prev2, p_prev = p_prev, p
            if ll >= lmin:
                scale = math.sqrt(4 * math.pi)
                if m == 0:
                    cols[(ll, 0, 0)] = scale * p
                else:
                    cols[(ll, m, 0)] = scale * math.sqrt(2.0) * p * torch.cos(m * lon)
                    cols[(ll, m, 1)] = scale * math.sqrt(2.0) * p * torch.sin(m * lon)
    keys = sorted(cols)
    values = torch.stack([cols[k] for k in keys], 1)
    lam = torch.tensor([k[0] * (k[0] + 1) / radius**2 for k in keys], dtype=torch.float64)
    return values, lam, lam.sqrt()


def mode_basis(mesh: Mesh, band: Sequence[float], points: Optional[Tensor] = None):
    """Modes of ``mesh``'s domain in ``band = (low, high)``, evaluated at ``points``.

    Plane (periodic in x and y): :func:`fourier_basis` with ``band`` in units of
    ``2π / max(lx, ly)``; sphere: :func:`spherical_harmonic_basis` with
    ``band`` the degrees ``(lmin, lmax)``. ``points`` defaults to the vertices.
    """
    pts = mesh.vertex_pos if points is None else points
    lo, hi = band
    if mesh.is_sphere:
        return spherical_harmonic_basis(pts, float(mesh.radius), int(lo), int(hi))
    if mesh.period is None or not all(mesh.period):
        raise ValueError(f"random Fourier modes need a doubly periodic plane or a sphere; got a "
                         f"{mesh.family} mesh with period={mesh.period}. Use cartesian(nx, ny) "
                         "(periodic=True), healpix(nside) or icosahedral(level).")
    lx, ly = (float(p) for p in mesh.period)
    return fourier_basis(pts, lx, ly, float(lo), float(hi))


class ModeSynthesis:
    """Fast, exact evaluation of ``φ = Σ_k a_k e_k`` at fixed points for many amplitude vectors.

    The same values as ``amplitudes @ mode_basis(mesh, band, points)[0].T`` (to
    rounding: the sums are reordered, ~1e-15 relative), at a fraction of the cost:

    * ``"fft"``: points on a uniform grid of a periodic plane (the vertices or
      the cell centres of ``cartesian:NXxNY``, in row-major order, any offset
      ``x0``): with ``k = 2π (m/lx, n/ly)`` and ``x = x0 + (i lx/nx, j ly/ny)``,
      ``√2 (a_c cos k·x + a_s sin k·x) = Re[√2 (a_c − i a_s) e^{ik·x0} e^{2πi(mi/nx + nj/ny)}]``,
      so ``φ`` is the real part of one inverse 2-D FFT of the coefficients
      binned at ``(n mod ny, m mod nx)`` (aliases add up in their bin).
    * ``"symmetric"``: points invariant under coordinate reflections
      (``x → −x``, ``y → −y``, ``z → −z`` on a sphere; HEALPix has all three,
      the icosahedral meshes ``y → −y`` and the inversion) under which every mode is
      even or odd (real spherical harmonics are): with the modes grouped by
      parity, each group is summed at one point per orbit only (one GEMM of
      ``1/2^s`` the size for ``s`` reflections) and the other orbit points get
      the signed sums of the groups.
    * ``"dense"``: one GEMM with the whole basis (any other point set).

    Parameters
    ----------
    mesh : Mesh
        Its domain sets the modes (:func:`mode_basis`).
    band : (float, float)
        As in :func:`mode_basis`.
    points : Tensor, shape (n_points, dim), optional
        Default: the vertices.
    device : torch.device or str, optional
        Where the synthesis runs (its tables are built on the CPU, then moved).
    method : {"fft", "symmetric", "dense"}, optional
        Force a method (an :class:`~meshclosure.errors.ArgumentError` where it does
        not apply); default: the fastest that applies (dense for few modes).

    Attributes
    ----------
    lam, kappa : Tensor, shape (n_modes,)
        As returned by :func:`mode_basis` (CPU).
    method : {"fft", "symmetric", "dense"}

    Examples
    --------
    >>> from meshclosure.mesh.spec import parse_mesh_spec
    >>> mesh = parse_mesh_spec("cartesian:8x4")
    >>> syn = ModeSynthesis(mesh, (1, 2), method="fft")
    >>> a = torch.linspace(-1, 1, 2 * syn.n_modes, dtype=torch.float64).reshape(2, -1)
    >>> B = mode_basis(mesh, (1, 2))[0]
    >>> syn.method, bool(torch.allclose(syn(a), a @ B.T, rtol=0, atol=1e-13))
    ('fft', True)
    >>> syn(torch.zeros(3))
    Traceback (most recent call last):
    ...
    ValueError: amplitudes must have shape (..., n_modes) = (..., 6); got (3,). ...
    """

    METHODS = ("fft", "symmetric", "dense")

    def __init__(self, mesh: Mesh, band: Sequence[float], points: Optional[Tensor] = None,
                 device=None, method: Optional[str] = None) -> None:
        if method is not None and method not in self.METHODS:
            raise ArgumentError("method", method, f"must be one of {list(self.METHODS)} or "
                                "None (the fastest that applies)", "leave {method} out")
        pts = (mesh.vertex_pos if points is None else points).detach().to("cpu", torch.float64)
        cpu_mesh = mesh.to("cpu")
        self._basis = lambda x: mode_basis(cpu_mesh, band, x)[0]   # (n, n_modes) at points x
        _, self.lam, self.kappa = mode_basis(cpu_mesh, band, pts[:1])
        self.n_points, self.n_modes = len(pts), len(self.lam)
        self.device = torch.device("cpu") if device is None else torch.device(device)
        # measured break-even (1 thread): a GEMM of the whole basis costs ~n·n_modes, an
        # FFT ~8 n log2(n) flops-equivalent, the parity reduction a fixed ~4 passes over
        # the output; few modes are fastest dense
        want = method or ("fft" if self.n_modes >= 8 * math.log2(max(self.n_points, 2))
                          and not mesh.is_sphere else
                          "symmetric" if self.n_modes >= 128 and mesh.is_sphere else "dense")
        self.method = "dense"
        if want == "fft" and not mesh.is_sphere and self._setup_fft(mesh, band, pts):
            self.method = "fft"
        elif want == "symmetric" and mesh.is_sphere and self._setup_symmetric(pts):
            self.method = "symmetric"
        elif method not in (None, "dense"):
            raise ArgumentError("method", method, "does not apply to these points ('fft': "
                                "a uniform grid of a periodic plane; 'symmetric': points of a "
                                "sphere invariant under a coordinate reflection)",
                                "leave {method} out")
        else:
            self._basis_t = self._basis(pts).T.contiguous().to(self.device)
        del self._basis                                   # holds a CPU copy of the mesh

    # -------------------------------------------------------------------- fft
    def _setup_fft(self, mesh: Mesh, band, pts: Tensor) -> bool:
        nx, ny = mesh.info.get("nx"), mesh.info.get("ny")
        if not nx or not ny or pts.shape != (int(nx) * int(ny), 2):
            return False
        nx, ny = int(nx), int(ny)
        lx, ly = (float(p) for p in mesh.period)
        x0 = pts[0]
        i = torch.arange(nx, dtype=torch.float64).repeat(ny)
        j = torch.arange(ny, dtype=torch.float64).repeat_interleave(nx)
        grid = torch.stack([x0[0] + i * lx / nx, x0[1] + j * ly / ny], 1)
        d = pts - grid
        d = d - torch.round(d / torch.tensor([lx, ly], dtype=torch.float64)) \
            * torch.tensor([lx, ly], dtype=torch.float64)
        if float(d.abs().max()) > 1e-9 * max(lx, ly):
            return False
        waves = _fourier_waves(lx, ly, float(band[0]), float(band[1]))
        m = torch.tensor([w[0] for w in waves], dtype=torch.float64)
        n = torch.tensor([w[1] for w in waves], dtype=torch.float64)
        phase = 2 * math.pi * (m * float(x0[0]) / lx + n * float(x0[1]) / ly)
        # c_w = √2 e^{ik·x0} (a_cos − i a_sin), binned at (n mod ny, m mod nx)
        self._fft_coef = (math.sqrt(2.0) * torch.polar(torch.ones_like(phase), phase)
                          ).to(self.device)
        bins = (torch.remainder(n, ny) * nx + torch.remainder(m, nx)).long().tolist()
        # aliases share a bin: add them layer by layer (layer j: the j-th wave of each bin),
        # each layer a copy to distinct bins, so the sum has a fixed order on every device
        seen: dict = {}
        layer = [seen.setdefault(b, []).append(w) or len(seen[b]) - 1
                 for w, b in enumerate(bins)]
        self._fft_layers = []
        for j in range(max(layer) + 1):
            waves_j = [w for w in range(len(bins)) if layer[w] == j]
            self._fft_layers.append((torch.tensor(waves_j, device=self.device),
                                     torch.tensor([bins[w] for w in waves_j],
                                                  device=self.device)))
        self._fft_shape = (ny, nx)
        return True

    def _fft(self, a: Tensor) -> Tensor:
        ny, nx = self._fft_shape
        c = torch.complex(a[:, 0::2], -a[:, 1::2]) * self._fft_coef          # (K, n_waves)
        X = torch.zeros(a.shape[0], ny * nx, dtype=torch.complex128, device=a.device)
        for j, (waves, bins) in enumerate(self._fft_layers):
            values = c.index_select(1, waves)
            X.index_copy_(1, bins, values if j == 0 else X.index_select(1, bins) + values)
        return torch.fft.ifft2(X.reshape(-1, ny, nx), norm="forward").real.reshape(-1, ny * nx)

    # -------------------------------------------------------------- symmetric
    def _setup_symmetric(self, pts: Tensor) -> bool:
        scale = float(pts.abs().max())
        key = lambda x: [tuple(r) for r in torch.round(x / scale * 1e8).long().tolist()]
        where = {k: i for i, k in enumerate(key(pts))}
        if len(where) != len(pts):
            return False
        # parities from a spread subset of the points (the modes are analytic and the
        # mirrored points match to rounding, so a mode even or odd there is so everywhere);
        # the basis is then evaluated at one point per orbit only (1/2^s of the memory)
        probe = torch.unique(torch.linspace(0, len(pts) - 1, min(len(pts), 512)).long())
        values = self._basis(pts[probe])
        tol = 1e-12 * max(float(values.abs().max()), 1.0)
        perms, parities, flips = [], [], []             # flips: the accepted reflections
        dim = pts.shape[1]
        candidates = [[-1.0 if a == b else 1.0 for b in range(dim)] for a in range(dim)]
        for flip in candidates + [[-1.0] * dim]:          # the axis reflections, the inversion
            if flip == [-1.0] * dim and len(flips) == dim:
                continue                                  # the product of the three: redundant
            flip_t = torch.tensor(flip, dtype=torch.float64)
            found = [where.get(k) for k in key(pts * flip_t)]
            if any(f is None for f in found):
                continue
            perm = torch.tensor(found)
            # the mirrored points must be the points to rounding (a few ulps), else the
            # values would differ from the dense sum by more than rounding
            if float((pts[perm] - pts * flip_t).abs().max()) > 8 * 2.2e-16 * scale:
                continue
            moved = self._basis(pts[perm[probe]])
            even = (moved - values).abs().amax(0) <= tol
            odd = (moved + values).abs().amax(0) <= tol
            if not bool((even | odd).all()):
                continue
            perms.append(perm)
            flips.append(flip)
            parities.append(torch.where(even, 1.0, -1.0).double())
        if not perms:
            return False
        s = len(perms)
        # group elements: subsets of the reflections (bit i: reflection i applied)
        elem_perm = []
        for e in range(2 ** s):
            perm = torch.arange(len(pts))
            for b in range(s):
                if e >> b & 1:
                    perm = perms[b][perm]
            elem_perm.append(perm)
        lists = [perm.tolist() for perm in elem_perm]
        owner, source, reps = [-1] * len(pts), [0] * len(pts), []
        for p in range(len(pts)):
            if owner[p] >= 0:
                continue
            reps.append(p)
            for e in range(2 ** s):
                q = lists[e][p]
                if owner[q] < 0:
                    owner[q], source[q] = len(reps) - 1, e     # point q = element e of the rep
        n_reps = len(reps)
        source = torch.tensor(source) * n_reps + torch.tensor(owner)  # into (element, rep)
        signature = torch.stack(parities, 1)            # (n_modes, s), ±1
        codes = ((signature < 0).long() * (2 ** torch.arange(s))).sum(1)
        reps_t = torch.tensor(reps)
        values = self._basis(pts[reps_t])                      # (n_reps, n_modes)
        classes, blocks, chars = [], [], []
        for c in sorted(set(codes.tolist())):
            modes = torch.nonzero(codes == c).reshape(-1)
            classes.append(modes)
            blocks.append(values[:, modes].T.contiguous())
            # χ_c(e) = Π_{b in e} parity_b(c)
            chars.append([(-1.0) ** bin(c & e).count("1") for e in range(2 ** s)])
        self._sym_order = torch.cat(classes).to(self.device)
        self._sym_sizes = [len(m) for m in classes]
        self._sym_blocks = [b.to(self.device) for b in blocks]
        self._sym_chars = torch.tensor(chars, dtype=torch.float64).T.contiguous().to(self.device)
        self._sym_source = source.to(self.device)
        self._sym_n_reps = n_reps
        self._sym_take: dict = {}
        return True

    def _symmetric(self, a: Tensor) -> Tensor:
        K, R = a.shape[0], self._sym_n_reps
        parts = torch.split(a.index_select(1, self._sym_order), self._sym_sizes, 1)
        F = a.new_empty((len(parts), K, R))                               # (c, K, reps)
        for c, (p, b) in enumerate(zip(parts, self._sym_blocks)):
            torch.mm(p, b, out=F[c])
        vals = self._sym_chars @ F.reshape(len(parts), K * R)             # (e, K·reps)
        # point p of row k is element e_p of rep r_p: flat index e_p·K·R + k·R + r_p
        index = self._sym_take.get(K)
        if index is None:
            e, r = torch.div(self._sym_source, R, rounding_mode="floor"), self._sym_source % R
            index = (e * K * R + r)[None, :] + (torch.arange(K, device=r.device) * R)[:, None]
            self._sym_take = {K: index}                                   # the last K only
        return torch.take(vals, index)

    # ------------------------------------------------------------------- call
    def __call__(self, amplitudes: Tensor) -> Tensor:
        """``φ`` at the points, shape ``(..., n_points)``, for ``amplitudes (..., n_modes)``
        (float64; on :attr:`device`)."""
        a = torch.as_tensor(amplitudes)
        if a.dim() == 0 or a.shape[-1] != self.n_modes:
            raise ValueError(f"amplitudes must have shape (..., n_modes) = (..., {self.n_modes}); "
                             f"got {tuple(a.shape)}. Pass one amplitude per mode (the last axis).")
        lead = a.shape[:-1]
        a = a.to(device=self.device, dtype=torch.float64).reshape(-1, self.n_modes)
        if self.method == "fft":
            out = self._fft(a)
        elif self.method == "symmetric":
            out = self._symmetric(a)
        else:
            out = a @ self._basis_t
        return out.reshape(lead + (self.n_points,))


def band_variances(lam: Tensor, kappa: Tensor, rms: float, slope: float = -5.0 / 3.0,
                   of: str = "velocity") -> np.ndarray:
    """Mode variances ``σ_k²`` giving a target domain-mean rms and a power-law shell spectrum.

    Per mode, the contribution to ``⟨|u|²⟩`` (``of="velocity"``, for a
    streamfunction: ``σ_k² λ_k``) or to ``⟨φ²⟩`` (``of="field"``: ``σ_k²``) is
    ``∝ |k|^(slope−1)`` (a shell of radius ``|k|`` holds ``∝ |k|`` modes, so the
    shell spectrum goes as ``|k|^slope``), normalised so the sum is ``rms²``.

    Returns
    -------
    ndarray, shape (n_modes,)
        ``σ_k²``.
    """
    lam_np = lam.double().numpy()
    k = kappa.double().numpy()
    share = k ** (slope - 1.0)
    share = share / share.sum() * rms**2
    if of == "velocity":
        return share / lam_np
    if of == "field":
        return share
    raise ValueError(f"of must be 'velocity' or 'field'; got {of!r}.")
