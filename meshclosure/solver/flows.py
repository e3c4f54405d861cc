"""Analytic test flows, initial conditions and error norms for transport tests.

Flows are given as vertex streamfunctions ``ψ`` (length²/time) turned into
exact, non-divergent face transports by
:func:`meshclosure.fv.transport_from_streamfunction` (``u = k × ∇ψ``:
``u = −∂ψ/∂y``, ``v = ∂ψ/∂x``; on the sphere ``u = −(1/R) ∂ψ/∂θ``,
``v = (1/(R cos θ)) ∂ψ/∂λ``, longitude ``λ``, latitude ``θ``).

* Williamson et al. (1992) test 1, doi:10.1016/S0021-9991(05)80016-6:
  solid-body rotation about an axis tilted by ``α`` from the pole,
  ``ψ = −R u0 (sin θ cos α − cos λ cos θ sin α)``, ``u0 = 2πR/(12 days)``,
  advecting the cosine bell ``h = (h0/2)(1 + cos(π r/R_b))`` for ``r < R_b = R/3``,
  ``h0 = 1000 m``, centred at ``(λ, θ) = (3π/2, 0)``.
* Nair & Lauritzen (2010) case 4, doi:10.1016/j.jcp.2010.08.014:
  ``ψ = R [k sin²λ' cos²θ cos(πt/T) − (2πR/T) sin θ]``, ``λ' = λ − 2πt/T``,
  ``k = 10R/T`` (= 2 for ``R = 1``, ``T = 5``); the tracer returns to its
  initial state at ``t = T``.
* Constant velocity on a periodic plane: ``U_f = (u·n_f) A_f`` (the
  streamfunction ``−u y + v x`` is not periodic).

Error norms (Williamson et al. 1992, eqs. 82–84), with ``I(·)`` the
area-weighted sum ``Σ_i V_i (·)_i``::

    l1 = I(|h − h_T|) / I(|h_T|),   l2 = sqrt(I((h − h_T)²) / I(h_T²)),
    l∞ = max|h − h_T| / max|h_T|
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Optional

import torch
from torch import Tensor

from ..fv.operators import transport_from_streamfunction
from ..mesh import Mesh

__all__ = [
    "DAY", "lonlat", "solid_body_streamfunction", "solid_body_transport",
    "rotate_about_axis", "cosine_bell", "williamson_test1_exact", "TEST1_SHAPES",
    "nair_lauritzen_streamfunction", "nair_lauritzen_transport", "gaussian_hills",
    "slotted_cylinders", "constant_transport", "error_norms", "williamson_test1",
]

DAY = 86400.0
"""Seconds per day."""


def _require_sphere(mesh: Mesh, what: str) -> float:
    if not mesh.is_sphere:
        raise ValueError(f"{what} needs a spherical mesh (mesh.radius set); got a "
                         f"{mesh.family} mesh with radius=None. Use healpix(...) or "
                         "icosahedral(...).")
    return float(mesh.radius)


def lonlat(x: Tensor) -> tuple[Tensor, Tensor]:
    """Longitude ``λ ∈ [0, 2π)`` and latitude ``θ`` of points ``x (n, 3)``."""
    lon = torch.remainder(torch.atan2(x[:, 1], x[:, 0]), 2 * math.pi)
    lat = torch.asin(torch.clamp(x[:, 2] / x.norm(dim=1), -1.0, 1.0))
    return lon, lat


def _axis(alpha: float, dtype, device) -> Tensor:
    return torch.tensor([-math.sin(alpha), 0.0, math.cos(alpha)], dtype=dtype, device=device)


def solid_body_streamfunction(mesh: Mesh, alpha: float = 0.0,
                              u0: Optional[float] = None) -> Tensor:
    """Williamson test-1 streamfunction at the vertices, ``(n_vertices,)``.

    ``ψ = −R u0 (sin θ cos α − cos λ cos θ sin α) = −u0 k'·x`` with the
    rotation axis ``k' = (−sin α, 0, cos α)``; angular velocity ``u0/R``.

    Parameters
    ----------
    mesh : Mesh
        Spherical mesh.
    alpha : float
        Tilt of the rotation axis from the pole (radians).
    u0 : float, optional
        Equatorial speed; default ``2πR/(12 days)`` (one revolution in 12 days).

    Examples
    --------
    >>> from meshclosure.mesh import cartesian
    >>> solid_body_streamfunction(cartesian(4, 4))
    Traceback (most recent call last):
    ...
    ValueError: solid-body rotation needs a spherical mesh (mesh.radius set); ...
    """
    R = _require_sphere(mesh, "solid-body rotation")
    u0 = 2 * math.pi * R / (12 * DAY) if u0 is None else float(u0)
    x = mesh.vertex_pos
    return -u0 * (x @ _axis(alpha, x.dtype, x.device))


def solid_body_transport(mesh: Mesh, alpha: float = 0.0, u0: Optional[float] = None) -> Tensor:
    """Exactly non-divergent face transports ``(n_faces,)`` of Williamson test 1."""
    return transport_from_streamfunction(mesh, solid_body_streamfunction(mesh, alpha, u0))


def rotate_about_axis(x: Tensor, axis: Tensor, angle: float) -> Tensor:
    """Rotate points ``x (n, 3)`` by ``angle`` about the unit ``axis`` (Rodrigues)."""
    c, s = math.cos(angle), math.sin(angle)
    return x * c + torch.cross(axis.expand_as(x), x, dim=1) * s \
        + axis * (x @ axis)[:, None] * (1 - c)


def cosine_bell(points: Tensor, radius: float, h0: float = 1000.0,
                center: tuple = (1.5 * math.pi, 0.0), bell_radius: Optional[float] = None) -> Tensor:
    """Williamson cosine bell ``(n,)`` at ``points (n, 3)`` on a sphere of ``radius``.

    ``h = (h0/2)(1 + cos(π r / R_b))`` for great-circle distance
    ``r < R_b = R/3``, else 0.
    """
    lon_c, lat_c = center
    c = torch.tensor([math.cos(lat_c) * math.cos(lon_c), math.cos(lat_c) * math.sin(lon_c),
                      math.sin(lat_c)], dtype=points.dtype, device=points.device)
    return _bell(points, radius, c, h0, radius / 3.0 if bell_radius is None else bell_radius)


def _bell(points: Tensor, radius: float, c: Tensor, h0: float, rb: float) -> Tensor:
    u = points / points.norm(dim=1, keepdim=True)
    r = radius * torch.acos(torch.clamp(u @ c, -1.0, 1.0))
    return torch.where(r < rb, 0.5 * h0 * (1 + torch.cos(math.pi * r / rb)),
                       torch.zeros_like(r))


#: Initial shapes of :func:`williamson_test1`.
TEST1_SHAPES = ("cosine_bell", "gaussian")


def _gaussian(points: Tensor, radius: float, c: Tensor, h0: float, rb: float) -> Tensor:
    """``h0 exp(−|x̂ − ĉ|² / (2 σ²))`` with chord width ``σ = R_b / (2R)`` (``1/6`` for ``R_b = R/3``)."""
    u = points / points.norm(dim=1, keepdim=True)
    sigma = rb / (2.0 * radius)
    return h0 * torch.exp(-((u - c) ** 2).sum(1) / (2.0 * sigma**2))


def williamson_test1_exact(mesh: Mesh, t: float, alpha: float = 0.0, h0: float = 1000.0,
                           u0: Optional[float] = None, shape: str = "cosine_bell") -> Tensor:
    """Exact test-1 solution at the cell centres ``(n_cells,)`` at time ``t``:
    the initial ``shape`` (see :func:`williamson_test1`) rotated by ``u0 t / R``
    about the tilted axis."""
    if shape not in TEST1_SHAPES:
        raise ValueError(f"shape must be one of {TEST1_SHAPES}; got {shape!r}.")
    R = _require_sphere(mesh, "Williamson test 1")
    u0 = 2 * math.pi * R / (12 * DAY) if u0 is None else float(u0)
    x = mesh.cell_center
    axis = _axis(alpha, x.dtype, x.device)
    c0 = torch.tensor([0.0, -1.0, 0.0], dtype=x.dtype, device=x.device)   # (3π/2, 0)
    c = rotate_about_axis(c0[None], axis, u0 * t / R)[0]
    return (_bell if shape == "cosine_bell" else _gaussian)(x, R, c, h0, R / 3.0)


def nair_lauritzen_streamfunction(mesh: Mesh, t: float, T: float = 5.0,
                                  k: Optional[float] = None) -> Tensor:
    """Nair & Lauritzen (2010) case-4 streamfunction at the vertices ``(n_vertices,)``.

    ``ψ = R [k sin²λ' cos²θ cos(πt/T) − (2πR/T) sin θ]``, ``λ' = λ − 2πt/T``,
    ``k = 10R/T`` by default (``k = 2`` for ``R = 1``, ``T = 5``).
    """
    R = _require_sphere(mesh, "Nair–Lauritzen case 4")
    k = 10.0 * R / T if k is None else float(k)
    lon, lat = lonlat(mesh.vertex_pos)
    lonp = lon - 2 * math.pi * t / T
    return R * (k * torch.sin(lonp) ** 2 * torch.cos(lat) ** 2 * math.cos(math.pi * t / T)
                - 2 * math.pi * R / T * torch.sin(lat))


def nair_lauritzen_transport(mesh: Mesh, T: float = 5.0,
                             k: Optional[float] = None) -> Callable[[float], Tensor]:
    """Time-dependent case-4 transports: a callable ``t -> U (n_faces,)`` for
    :class:`~meshclosure.solver.TracerModel`."""
    _require_sphere(mesh, "Nair–Lauritzen case 4")

    def transport(t: float) -> Tensor:
        return transport_from_streamfunction(mesh, nair_lauritzen_streamfunction(mesh, t, T, k))

    return transport


_NL_CENTERS = ((5 * math.pi / 6, 0.0), (7 * math.pi / 6, 0.0))


def _unit(lon: float, lat: float, like: Tensor) -> Tensor:
    return torch.tensor([math.cos(lat) * math.cos(lon), math.cos(lat) * math.sin(lon),
                         math.sin(lat)], dtype=like.dtype, device=like.device)


def gaussian_hills(mesh: Mesh, h_max: float = 0.95, b: float = 5.0) -> Tensor:
    """Two Gaussian hills ``Σ_i h_max exp(−b |x̂ − x̂_i|²)`` at ``(5π/6, 0)``, ``(7π/6, 0)``
    (Nair & Lauritzen 2010), ``(n_cells,)``."""
    _require_sphere(mesh, "gaussian_hills")
    x = mesh.cell_center / mesh.cell_center.norm(dim=1, keepdim=True)
    return sum(h_max * torch.exp(-b * ((x - _unit(lo, la, x)) ** 2).sum(1))
               for lo, la in _NL_CENTERS)


def slotted_cylinders(mesh: Mesh, r: float = 0.5, inside: float = 1.0,
                      background: float = 0.1) -> Tensor:
    """Two slotted cylinders of angular radius ``r`` (Nair & Lauritzen 2010), ``(n_cells,)``;
    slots of half-width ``r/6`` in longitude, opening south (first) and north (second)."""
    _require_sphere(mesh, "slotted_cylinders")
    x = mesh.cell_center / mesh.cell_center.norm(dim=1, keepdim=True)
    lon, lat = lonlat(x)
    out = torch.full_like(lon, background)
    for i, (lo, la) in enumerate(_NL_CENTERS):
        dist = torch.acos(torch.clamp(x @ _unit(lo, la, x), -1.0, 1.0))
        in_slot = (lon - lo).abs() < r / 6
        in_slot = in_slot & ((lat - la < -5 * r / 12) if i == 0 else (lat - la > 5 * r / 12))
        out = torch.where((dist <= r) & ~in_slot, torch.full_like(out, inside), out)
    return out


def constant_transport(mesh: Mesh, velocity: tuple) -> Tensor:
    """Face transports ``U_f = (u·n_f) A_f`` ``(n_faces,)`` of a constant velocity.

    Exactly non-divergent (the normals times lengths of a closed polygon sum to
    zero); use this on a periodic plane, where ``ψ = −u y + v x`` is not periodic.

    Examples
    --------
    >>> from meshclosure.mesh import cartesian
    >>> from meshclosure.fv import divergence
    >>> mesh = cartesian(6, 6)
    >>> U = constant_transport(mesh, (1.0, 0.5))
    >>> float(divergence(mesh, U).abs().max()) < 1e-12
    True
    >>> constant_transport(mesh, (1.0, 0.5, 0.0))
    Traceback (most recent call last):
    ...
    ValueError: velocity must have d = 2 components for this mesh; got 3. ...
    """
    u = torch.as_tensor(velocity, dtype=mesh.dtype, device=mesh.device).reshape(-1)
    if u.numel() != mesh.dim:
        raise ValueError(f"velocity must have d = {mesh.dim} components for this mesh; got "
                         f"{u.numel()}. Pass e.g. (u, v) on the plane.")
    return (mesh.face_normal @ u) * mesh.face_area


def error_norms(mesh: Mesh, h: Tensor, h_exact: Tensor) -> Dict[str, float]:
    """Normalized ``l1, l2, linf`` errors (Williamson et al. 1992, eqs. 82–84).

    Parameters
    ----------
    mesh : Mesh
    h, h_exact : Tensor, shape (n_cells,)

    Returns
    -------
    dict with keys ``"l1"``, ``"l2"``, ``"linf"``.

    Examples
    --------
    >>> import torch
    >>> from meshclosure.mesh import cartesian
    >>> mesh = cartesian(4, 4)
    >>> e = error_norms(mesh, torch.full((16,), 1.1, dtype=torch.float64),
    ...                 torch.ones(16, dtype=torch.float64))
    >>> {k: round(v, 12) for k, v in e.items()}
    {'l1': 0.1, 'l2': 0.1, 'linf': 0.1}
    >>> error_norms(mesh, torch.ones(16), torch.zeros(16))
    Traceback (most recent call last):
    ...
    ValueError: h_exact is zero everywhere; the normalized errors are undefined. ...
    """
    V = mesh.cell_volume.to(torch.float64)
    h, h_exact = h.detach().to(torch.float64), h_exact.detach().to(torch.float64)
    if not bool((h_exact != 0).any()):
        raise ValueError("h_exact is zero everywhere; the normalized errors are undefined. "
                         "Compare against a non-zero reference field.")
    d = h - h_exact
    return {
        "l1": float((V * d.abs()).sum() / (V * h_exact.abs()).sum()),
        "l2": float(torch.sqrt((V * d * d).sum() / (V * h_exact * h_exact).sum())),
        "linf": float(d.abs().max() / h_exact.abs().max()),
    }


def williamson_test1(mesh: Mesh, alpha: float = 0.0, scheme: str = "linear",
                     courant: Optional[float] = None, stepper: str = "ssprk3",
                     revolutions: float = 1.0, n_steps: Optional[int] = None,
                     dtype: torch.dtype = torch.float64, progress: bool = False,
                     shape: str = "cosine_bell", operators: Optional[str] = None) -> Dict:
    """Run Williamson test 1 on ``mesh`` and return its error norms.

    Parameters
    ----------
    mesh : Mesh
        Spherical mesh (any radius).
    alpha : float
        Tilt of the rotation axis (0 or ``π/2 − 0.05`` in the paper).
    scheme : {"linear", "limited", "upwind", "quadratic"}
    courant : float, optional
        Outflow Courant number; default ``1/k_max`` (the limited scheme's
        no-new-extrema bound). Ignored when ``n_steps`` is given.
    stepper : str
    revolutions : float
        Simulated time in revolutions (12 days each).
    n_steps : int, optional
        Number of steps (overrides ``courant``).
    shape : {"cosine_bell", "gaussian"}
        ``"cosine_bell"``: Williamson's bell of radius ``R/3`` (the paper's
        case). It is only C¹: its second derivative jumps at the bell's edge,
        which caps the l2 convergence order of the linear scheme at 1.77–1.79
        on HEALPix and the duals (asymptotically); the quadratic
        reconstruction reaches 1.9–2.0 there.
        ``"gaussian"``: a smooth (C^∞) hill of the same centre and height,
        ``h0 exp(−|x̂ − ĉ|² / (2 σ²))`` with ``σ = 1/6``, for measuring the
        scheme's order on smooth data.
    operators : str, optional
        Operator version (:mod:`meshclosure.fv.versions`); default the current one.

    Returns
    -------
    dict
        ``l1, l2, linf`` (normalized), ``min, max`` of the final field,
        ``n_cells, n_steps, dt, courant`` and ``h`` (final field), ``h_exact``.
    """
    from ..fv.advection import max_faces_per_cell, outflow_courant
    from .integrate import integrate
    from .tracer import TracerModel

    if shape not in TEST1_SHAPES:
        raise ValueError(f"shape must be one of {TEST1_SHAPES}; got {shape!r}. Use "
                         "'cosine_bell' (Williamson 1992) or 'gaussian' (smooth).")
    mesh = mesh.to(dtype=dtype)
    U = solid_body_transport(mesh, alpha)
    model = TracerModel(mesh, U, scheme=scheme, operators=operators)
    T = revolutions * 12 * DAY
    if n_steps is None:
        if courant is None:
            courant = 1.0 / max_faces_per_cell(mesh)
        n_steps = int(math.ceil(T / model.cfl_dt(courant)))
    dt = T / n_steps

    h_init = williamson_test1_exact(mesh, 0.0, alpha, shape=shape)
    out = integrate(model, {"q": h_init}, dt, n_steps, stepper=stepper, progress=progress)
    h = out.state["q"]
    exact = williamson_test1_exact(mesh, T, alpha, shape=shape)
    res = error_norms(mesh, h, exact)
    res.update(min=float(h.min()), max=float(h.max()), n_cells=mesh.n_cells, n_steps=n_steps,
               dt=dt, courant=float(outflow_courant(mesh, U, dt).max()), h=h, h_exact=exact)
    return res
