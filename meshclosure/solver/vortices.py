"""Nair & Jablonowski (2008) moving vortices on the sphere.

Nair, R. D. and Jablonowski, C. (2008), "Moving vortices on the sphere: a
test case for horizontal advection problems", Mon. Wea. Rev. 136, 699–711,
doi:10.1175/2007MWR2105.1.

The flow is the solid-body rotation of Williamson test 1 (period 12 days,
``u0 = 2πR/(12 days)``, axis ``k' = (−sin α, 0, cos α)`` tilted by ``α`` from
the pole; the paper's ``α = π/2`` carries the vortices over the poles) plus a
pair of vortices, antipodal, centred on ``c(t)`` and ``−c(t)``, where ``c(t)``
starts at ``(λ, θ) = (3π/2, 0)`` and is carried by the solid-body flow. In
coordinates ``(λ', θ')`` whose pole is the vortex centre, the vortex part is
a rotation about ``c`` at angular velocity::

    ω'(θ') = V_t / (R ρ'),   ρ' = ρ0 cos θ',   V_t = u0 (3√3/2) sech²ρ' tanh ρ'

(the paper sets ``ω' = 0`` at ``ρ' = 0``, the vortex frame's poles, where it multiplies
zero in both the velocity and ``q``; the code uses the limit), ``ρ0 = 3``, so the velocity is
``u = (u0/R) k' × x + ω'(θ') c(t) × x``. The tracer solution at every time is::

    q = 1 − tanh[(ρ'/γ) sin(λ' − ω'(θ') t)],   γ = 5,

with ``(λ', θ')`` measured in the vortex frame that the solid-body rotation
carries rigidly from its position at ``t = 0`` (there, ``λ'`` is the paper's
rotated longitude about ``(3π/2, 0)``). For ``α = 0`` this is the paper's
formula in the rotated coordinates of the moving centre; for ``α ≠ 0`` the
rigidly carried frame is the exact solution of the advection equation, while
the rotated coordinates recomputed at ``c(t)`` would turn by an extra angle
(by π as the centre crosses a pole when ``α = π/2``).

Streamfunction (``u = k × ∇ψ``, the convention of :mod:`.flows`): the vortex
part depends on ``θ'`` alone, ``u' = R ω' cos θ' = −(1/R) dψ_v/dθ'``, so::

    ψ_v(θ') = −(R u0 3√3 / (2 ρ0)) ∫_0^θ' h(ρ0 cos s) ds,   h(ρ) = sech²ρ tanh ρ.

The integrand ``g(s) = h(ρ0 cos s)`` is even, ``2π``-periodic, analytic in a
strip and odd under ``s → s + π``, so ``g = Σ_{k odd} a_k cos(ks)`` with
exponentially decaying ``a_k`` and ``∫_0^θ g = Σ_{k odd} (a_k/k) sin(kθ)``:
the coefficients come from an FFT of ``g`` sampled at 1024 points (decay rate
about ``e^{−0.5k}`` for ``ρ0 = 3``; the series is cut where ``|a_k|`` first
falls under ``1e-16 max|a|``, 46 terms), and the sine series is summed by
Clenshaw's recurrence. The result is smooth and exact to rounding (about
1e-16 relative to ``max|ψ_v|``, checked against adaptive quadrature).
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Callable, Dict, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import ArgumentError
from ..fv.operators import transport_from_streamfunction
from ..mesh import Mesh
from .flows import DAY, _axis, _require_sphere, error_norms, rotate_about_axis

__all__ = ["RHO0", "GAMMA", "ALPHA", "moving_vortices_streamfunction",
           "moving_vortices_transport", "moving_vortices_exact", "moving_vortices"]

RHO0 = 3.0
"""Vortex radius parameter ``ρ0``."""
GAMMA = 5.0
"""Stiffness parameter ``γ`` of the tracer field."""
ALPHA = math.pi / 2
"""The paper's tilt of the solid-body axis from the pole (flow over the poles)."""
_VT = 1.5 * math.sqrt(3.0)       # 3√3/2: max of (3√3/2) sech²ρ tanh ρ is 1


def _u0(R: float, u0: Optional[float]) -> float:
    return 2 * math.pi * R / (12 * DAY) if u0 is None else float(u0)


@lru_cache(maxsize=8)
def _sine_coefficients(rho0: float, n: int = 1024) -> np.ndarray:
    """``b_j = a_{2j+1} / (2j+1)``: ``∫_0^θ h(ρ0 cos s) ds = Σ_j b_j sin((2j+1)θ)``."""
    s = 2 * np.pi * np.arange(n) / n
    r = rho0 * np.cos(s)
    a = 2.0 * np.fft.rfft(np.tanh(r) / np.cosh(r) ** 2).real / n
    k = np.arange(1, n // 2, 2)
    a = a[k]
    small = np.nonzero(np.abs(a) < 1e-16 * np.abs(a).max())[0]  # rounding floor of the FFT
    J = small[0] if small.size else a.size
    return a[:J] / k[:J]


def _theta_integral(sin_t: Tensor, rho0: float) -> Tensor:
    """``∫_0^θ h(ρ0 cos s) ds`` for ``θ = asin(sin_t) ∈ [−π/2, π/2]`` (Clenshaw, odd sines).

    ``s_{j+1} = 2 cos(2θ) s_j − s_{j−1}`` for ``s_j = sin((2j+1)θ)``; only
    ``sin θ`` is needed (``cos 2θ = 1 − 2 sin²θ``, ``sin 3θ = sin θ (3 − 4 sin²θ)``).
    """
    b = _sine_coefficients(float(rho0))
    s2 = sin_t * sin_t
    two_c = 2.0 - 4.0 * s2                                 # 2 cos 2θ
    y1 = torch.zeros_like(sin_t)
    y2 = torch.zeros_like(sin_t)
    for bj in b[:0:-1]:                                    # j = J-1 … 1
        y1, y2 = torch.addcmul(float(bj) - y2, two_c, y1), y1
    return sin_t * (float(b[0]) + y1 * (3.0 - 4.0 * s2) - y2)


def _centre(t: float, alpha: float, R: float, u0: float, like: Tensor) -> Tensor:
    """Vortex centre ``c(t)`` (unit vector): ``(3π/2, 0)`` carried by the solid-body rotation."""
    return rotate_about_axis(_frame(like)[2:], _axis(alpha, like.dtype, like.device),
                             u0 * t / R)[0]


def _frame(like: Tensor) -> Tensor:
    """Rows ``e1, e2, e3``: the vortex frame at ``t = 0``, pole ``e3 = (3π/2, 0)``.

    ``cos θ' cos λ' = x̂·e1``, ``cos θ' sin λ' = x̂·e2``, ``sin θ' = x̂·e3``
    (the paper's rotated coordinates about ``(λ0, θ0) = (3π/2, 0)``).
    """
    return torch.tensor([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]],
                        dtype=like.dtype, device=like.device)


def _local(x: Tensor, t: float, alpha: float, R: float, u0: float):
    """Vortex-frame ``(cos θ' cos λ', cos θ' sin λ', sin θ')`` of points ``x (n, 3)`` at ``t``."""
    axis = _axis(alpha, x.dtype, x.device)
    y = rotate_about_axis(x / x.norm(dim=1, keepdim=True), axis, -u0 * t / R)
    p = y @ _frame(x).T
    return p[:, 0], p[:, 1], p[:, 2]


def _omega(cos_t: Tensor, R: float, u0: float, rho0: float) -> Tensor:
    """``ω'(θ') = V_t / (R ρ')`` (1/s); its limit ``(u0/R)(3√3/2)`` where ``ρ' = 0``."""
    rho = rho0 * cos_t
    small = rho.abs() < 1e-6
    ratio = torch.where(small, 1.0 - rho * rho / 3.0,
                        torch.tanh(rho) / torch.where(small, torch.ones_like(rho), rho))
    return (u0 / R) * _VT * ratio / torch.cosh(rho) ** 2


def _psi_points(x: Tensor, t: float, alpha: float, R: float, u0: float,
                rho0: float = RHO0) -> Tensor:
    """Streamfunction ``(n,)`` (m²/s) at points ``x (n, 3)`` on the sphere of radius ``R``."""
    xu = x / x.norm(dim=1, keepdim=True)
    psi_solid = -(u0 * R) * (xu @ _axis(alpha, x.dtype, x.device))
    return psi_solid + _psi_vortex(xu, t, alpha, R, u0, rho0)


def _psi_vortex(xu: Tensor, t: float, alpha: float, R: float, u0: float,
                rho0: float = RHO0) -> Tensor:
    """``ψ_v(θ')`` at unit vectors ``xu (n, 3)``: ``sin θ' = x̂·c(t)``."""
    sin_t = torch.clamp(xu @ _centre(t, alpha, R, u0, xu), -1.0, 1.0)
    return -(R * u0 * _VT / rho0) * _theta_integral(sin_t, rho0)


def _velocity_points(x: Tensor, t: float, alpha: float, R: float, u0: float,
                     rho0: float = RHO0) -> Tensor:
    """Analytic velocity ``(n, 3)`` (m/s): ``(u0/R) k' × x + ω'(θ') c(t) × x``."""
    axis = _axis(alpha, x.dtype, x.device)
    xs = R * x / x.norm(dim=1, keepdim=True)
    c = _centre(t, alpha, R, u0, x)
    p1, p2, _ = _local(x, t, alpha, R, u0)
    w = _omega(torch.sqrt(p1 * p1 + p2 * p2), R, u0, rho0)
    return (u0 / R) * torch.cross(axis.expand_as(xs), xs, dim=1) \
        + w[:, None] * torch.cross(c.expand_as(xs), xs, dim=1)


def moving_vortices_streamfunction(mesh: Mesh, t: float, alpha: float = ALPHA,
                                   u0: Optional[float] = None) -> Tensor:
    """Streamfunction ``ψ = ψ_solid + ψ_v(θ')`` at the vertices, ``(n_vertices,)`` (m²/s).

    ``ψ_solid = −u0 k'·x`` (Williamson test 1) and ``ψ_v`` the vortex pair's
    (see the module docstring); ``u = k × ∇ψ``.

    Parameters
    ----------
    mesh : Mesh
        Spherical mesh (any radius ``R``).
    t : float
        Time (s).
    alpha : float
        Tilt of the solid-body axis from the pole (radians); the paper's ``π/2``.
    u0 : float, optional
        Solid-body speed; default ``2πR/(12 days)``.

    Examples
    --------
    The vortex part is odd in ``θ'``, so ``ψ = ψ_solid`` on the vortex frame's
    equator ``θ' = 0``. At ``t = 0`` the centre is ``(0, −R, 0)``, so the north
    pole lies on that equator, and with ``α = 0`` ``ψ`` there is ``−u0 R``
    (``R = 1`` here):

    >>> import math
    >>> from meshclosure.mesh import icosahedral
    >>> mesh = icosahedral(1)
    >>> psi = moving_vortices_streamfunction(mesh, 0.0, alpha=0.0, u0=1.0)
    >>> pole = int(mesh.vertex_pos[:, 2].argmax())
    >>> round(float(psi[pole]), 12)
    -1.0
    >>> from meshclosure.mesh import cartesian
    >>> moving_vortices_streamfunction(cartesian(4, 4), 0.0)
    Traceback (most recent call last):
    ...
    ValueError: moving vortices needs a spherical mesh (mesh.radius set); ...
    """
    R = _require_sphere(mesh, "moving vortices")
    return _psi_points(mesh.vertex_pos, float(t), alpha, R, _u0(R, u0))


def moving_vortices_transport(mesh: Mesh, alpha: float = ALPHA,
                              u0: Optional[float] = None) -> Callable[[float], Tensor]:
    """Exactly non-divergent face transports: a callable ``t -> U (n_faces,)`` (m²/s)
    for :class:`~meshclosure.solver.TracerModel`.

    Examples
    --------
    >>> from meshclosure.mesh import healpix
    >>> from meshclosure.fv import divergence
    >>> mesh = healpix(4)
    >>> U = moving_vortices_transport(mesh)
    >>> float(divergence(mesh, U(3 * 86400.0)).abs().max()) < 1e-18
    True
    """
    R = _require_sphere(mesh, "moving vortices")
    u0 = _u0(R, u0)
    xu = mesh.vertex_pos / mesh.vertex_pos.norm(dim=1, keepdim=True)
    psi_solid = -(u0 * R) * (xu @ _axis(alpha, xu.dtype, xu.device))

    def transport(t: float) -> Tensor:
        psi = psi_solid + _psi_vortex(xu, float(t), alpha, R, u0)
        return transport_from_streamfunction(mesh, psi)

    return transport


def moving_vortices_exact(mesh: Mesh, t: float, alpha: float = ALPHA,
                          u0: Optional[float] = None, gamma: float = GAMMA) -> Tensor:
    """Exact tracer ``q = 1 − tanh[(ρ'/γ) sin(λ' − ω' t)]`` at the cell centres ``(n_cells,)``.

    Parameters
    ----------
    mesh : Mesh
        Spherical mesh.
    t : float
        Time (s).
    alpha, u0 : see :func:`moving_vortices_streamfunction`.
    gamma : float
        Stiffness ``γ`` of the tracer field (5 in the paper; ``ρ0`` is fixed at
        :data:`RHO0`, since the flow uses it).

    Examples
    --------
    ``q`` lies in ``(1 − tanh(ρ0/γ), 1 + tanh(ρ0/γ))`` (``tanh(0.6)`` in the paper):

    >>> from meshclosure.mesh import icosahedral
    >>> q = moving_vortices_exact(icosahedral(3), 4 * 86400.0)
    >>> bool(q.min() > 1 - math.tanh(0.6) and q.max() < 1 + math.tanh(0.6))
    True
    >>> moving_vortices_exact(icosahedral(1), 0.0, gamma=0.0)
    Traceback (most recent call last):
    ...
    meshclosure.errors.ArgumentError: gamma=0.0: must be > 0; pass the paper's 5.0.
    """
    if not gamma > 0:
        raise ArgumentError("gamma", gamma, "must be > 0", "pass the paper's 5.0")
    R = _require_sphere(mesh, "moving vortices")
    return _exact_points(mesh.cell_center, float(t), alpha, R, _u0(R, u0), gamma=gamma)


def _exact_points(x: Tensor, t: float, alpha: float, R: float, u0: float,
                  rho0: float = RHO0, gamma: float = GAMMA) -> Tensor:
    """Exact tracer ``(n,)`` at points ``x (n, 3)`` and time ``t`` (s)."""
    p1, p2, _ = _local(x, t, alpha, R, u0)
    cos_t = torch.sqrt(p1 * p1 + p2 * p2)
    lam = torch.atan2(p2, p1)
    rho = rho0 * cos_t
    return 1.0 - torch.tanh(rho / gamma * torch.sin(lam - _omega(cos_t, R, u0, rho0) * t))


def moving_vortices(mesh: Mesh, days: float = 12.0, scheme: str = "quadratic",
                    alpha: float = ALPHA, courant: Optional[float] = None,
                    operators: Optional[str] = None,
                    sample_days: Sequence[float] = (6.0, 12.0),
                    dtype: torch.dtype = torch.float64, progress: bool = False) -> Dict:
    """Run the moving-vortices test with SSP-RK3 and return the error norms.

    The run is split at the sample times; each segment gets the largest equal
    step not above the Courant step, the step being
    :meth:`TracerModel.cfl_dt` over the whole run (outflow Courant number
    ``courant``, default ``1/k_max`` as in :func:`.flows.williamson_test1`).

    Parameters
    ----------
    mesh : Mesh
        Spherical mesh.
    days : float
        Length of the run (days); 12 is one revolution.
    scheme : {"linear", "limited", "upwind", "quadratic"}
    alpha : float
        Tilt of the solid-body axis (the paper's ``π/2``).
    courant : float, optional
        Outflow Courant number.
    operators : str, optional
        Operator version (:mod:`meshclosure.fv.versions`); default the current one.
    sample_days : sequence of float
        Days (``0 < d ≤ days``) at which to measure the errors.
    dtype : torch.dtype
    progress : bool

    Returns
    -------
    dict
        ``errors``: ``{day: {"l1", "l2", "linf", "min", "max"}}``; ``n_cells``,
        ``n_steps`` (total), ``dt`` (largest step, s) and ``q`` (final field).

    Examples
    --------
    >>> from meshclosure.mesh import icosahedral
    >>> moving_vortices(icosahedral(1), sample_days=(13.0,))
    Traceback (most recent call last):
    ...
    meshclosure.errors.ArgumentError: sample_days=(13.0,): each day must lie in (0, days=12.0]; \
pass days within the run or a longer days.
    """
    from ..fv.advection import max_faces_per_cell
    from .integrate import integrate
    from .tracer import TracerModel

    if isinstance(days, bool) or not isinstance(days, (int, float)) \
            or not (math.isfinite(days) and days > 0):
        raise ArgumentError("days", days, "must be a positive finite number of days",
                            "pass e.g. days=12.0 (one revolution)")
    samples = sorted(float(d) for d in sample_days)
    if not samples or samples[0] <= 0 or samples[-1] > days:
        raise ArgumentError("sample_days", tuple(sample_days),
                            f"each day must lie in (0, days={float(days)}]",
                            "pass days within the run or a longer days")
    mesh = mesh.to(dtype=dtype)
    U = moving_vortices_transport(mesh, alpha)
    model = TracerModel(mesh, U, scheme=scheme, operators=operators)
    if courant is None:
        courant = 1.0 / max_faces_per_cell(mesh)
    dt_max = model.cfl_dt(courant, t=0.0, t1=days * DAY, n_samples=49)
    state = {"q": moving_vortices_exact(mesh, 0.0, alpha)}
    t, n_total, dt_used, errors = 0.0, 0, 0.0, {}
    for day in samples:
        span = day * DAY - t
        n = max(1, int(math.ceil(span / dt_max - 1e-9)))
        dt = span / n
        out = integrate(model, state, dt, n, t0=t, stepper="ssprk3", progress=progress)
        state, t = out.state, day * DAY
        n_total, dt_used = n_total + n, max(dt_used, dt)
        q = state["q"]
        e = error_norms(mesh, q, moving_vortices_exact(mesh, t, alpha))
        e.update(min=float(q.min()), max=float(q.max()))
        errors[day] = e
    return {"errors": errors, "n_cells": mesh.n_cells, "n_steps": n_total, "dt": dt_used,
            "q": state["q"]}
