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

from ..mesh import Mesh

__all__ = ["OrnsteinUhlenbeck", "fourier_basis", "spherical_harmonic_basis", "mode_basis",
           "band_variances"]


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
                waves.append((kx, ky))
    if not waves:
        raise ValueError(f"the band [{kmin}, {kmax}] (units of 2π/max(lx, ly)) holds no Fourier "
                         "mode of this periodic domain; widen it (e.g. kmax >= 1).")
    k = torch.tensor(waves, dtype=torch.float64)
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
