"""Eddy viscosities for vorticity: Smagorinsky- and Leith-type, fitted to subgrid face fluxes.

Both close the vorticity ``ζ`` of the barotropic model down its gradient,
``Φ_f = ν_f G_f`` with ``G_f = −(ζ_b − ζ_a) A_f / d_f``
(:func:`~meshclosure.train.baselines.face_gradient`), and a viscosity built
from the resolved flow and the grid scale ``Δ = √V`` (the cell's area;
averaged to the faces like the measures):

* Smagorinsky (1963, doi:10.1175/1520-0493(1963)091<0099:GCEWTP>2.3.CO;2):
  ``ν = (c_S Δ)² |S|``, ``|S| = √(2 S_ij S_ij)`` the resolved strain rate. From
  the streamfunction ψ of the coarse state (``∇²ψ = ζ``, the coarse Poisson
  solve) and its Hessian ``H = ∇∇ψ`` (tangent to the surface on the sphere,
  symmetrized), ``|S|² = (ψ_xx − ψ_yy)² + 4 ψ_xy² = 2 |H|² − (tr H)²`` in any
  orthonormal frame (curvature terms of order ``U/R`` left out on the sphere).
* Leith (1996, doi:10.1016/0167-2789(95)00249-9): ``ν = (c_L Δ)³ |∇ζ|``.

The coefficient enters linearly as ``θ = c^p`` (``p = 2`` Smagorinsky, ``3``
Leith): ``Φ ≈ θ · shape · G``, ``shape = Δ^p M`` (``M`` the face mean of
``|S|`` or ``|∇ζ|``), so ``θ ≥ 0`` is fitted exactly by constrained linear
least squares (:func:`~meshclosure.train.baselines.fit_constant`) and
``c = θ^{1/p}``; the interval of ``θ`` maps to ``c``'s.

Examples
--------
>>> import torch
>>> from meshclosure.mesh import cartesian
>>> mesh = cartesian(32, 32, 1.0, 1.0)
>>> x = mesh.cell_center.double()
>>> zeta = torch.sin(6.283185307179586 * x[:, 0]) * torch.cos(6.283185307179586 * x[:, 1])
>>> shape = viscosity_shape(mesh, "leith", zeta)
>>> G = face_gradient(mesh, zeta)
>>> fit = fit_eddy_viscosity("leith", shape, G, 0.3 ** 3 * shape * G)
>>> round(fit.c, 9)
0.3
>>> fit_eddy_viscosity("smagorinski", shape, G, G)
Traceback (most recent call last):
...
meshclosure.errors.ArgumentError: kind='smagorinski': must be one of ('smagorinsky', 'leith'); ...
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict

import torch
from torch import Tensor

from .._cache import per_mesh
from ..closures import Closure
from ..errors import ArgumentError
from ..fv import PoissonSolver, gradient
from ..mesh import Mesh
from .baselines import _flat, describe_range, face_gradient, face_mean, fit_constant

__all__ = ["KINDS", "strain_rate", "vorticity_gradient", "grid_scale", "viscosity_shape",
           "EddyViscosityFit", "fit_eddy_viscosity", "EddyViscosityClosure"]

#: The eddy viscosities and the power ``p`` of ``(c Δ)^p``.
KINDS = {"smagorinsky": 2, "leith": 3}


def _check_kind(kind: str) -> int:
    if kind not in KINDS:
        raise ArgumentError("kind", kind, f"must be one of {tuple(KINDS)}",
                            "use 'smagorinsky' (strain rate) or 'leith' (vorticity gradient)")
    return KINDS[kind]


def _tangent(mesh: Mesh, H: Tensor) -> Tensor:
    """``(n_cells, d, d)`` Hessians projected on the tangent plane (sphere), symmetrized."""
    if mesh.is_sphere:
        r = mesh.cell_center.to(H) / mesh.cell_center.to(H).norm(dim=1, keepdim=True)
        P = torch.eye(3, dtype=H.dtype, device=H.device) - r[:, :, None] * r[:, None, :]
        H = P @ H @ P
    return 0.5 * (H + H.transpose(1, 2))


def strain_rate(mesh: Mesh, zeta: Tensor) -> Tensor:
    """The resolved strain rate ``|S| (n_cells,)`` [1/time] of the flow with vorticity ``ζ``.

    ``ψ`` solves ``∇²ψ = ζ`` on ``mesh`` (:class:`~meshclosure.fv.PoissonSolver`,
    cached per mesh); ``|S| = √max(2 |H|² − (tr H)², 0)`` with ``H`` the
    least-squares Hessian of ``ψ`` (module docstring).
    """
    solver = per_mesh(mesh, ("train.eddy_viscosity.poisson",), lambda: PoissonSolver(mesh))
    psi = solver(zeta)
    H = _tangent(mesh, gradient(mesh, gradient(mesh, psi)))
    trace = torch.diagonal(H, dim1=1, dim2=2).sum(-1)
    return torch.sqrt(torch.clamp(2.0 * (H * H).sum((1, 2)) - trace ** 2, min=0.0))


def vorticity_gradient(mesh: Mesh, zeta: Tensor) -> Tensor:
    """``|∇ζ| (n_cells,)`` [1/(time·length)], least-squares cell gradients."""
    return gradient(mesh, zeta).norm(dim=1)


def grid_scale(mesh: Mesh) -> Tensor:
    """``Δ_f (n_faces,)``: the face mean of ``√V`` (the cells' length scale), [length]."""
    return face_mean(mesh, mesh.cell_volume.double().sqrt())


def viscosity_shape(mesh: Mesh, kind: str, zeta: Tensor) -> Tensor:
    """``Δ^p M (n_faces,)``: the viscosity per unit coefficient ``θ = c^p``, so that
    ``ν = θ · shape`` (``M`` the face mean of :func:`strain_rate` for ``"smagorinsky"``,
    of :func:`vorticity_gradient` for ``"leith"``)."""
    p = _check_kind(kind)
    M = strain_rate(mesh, zeta) if kind == "smagorinsky" else vorticity_gradient(mesh, zeta)
    return grid_scale(mesh).to(zeta) ** p * face_mean(mesh, M)


@dataclass
class EddyViscosityFit:
    """A fitted ``ν = (c Δ)^p M``: ``c`` with its 95 % interval, ``θ = c^p`` with its
    standard error, the sample count, the range of ``M`` at the faces
    (:func:`~meshclosure.train.baselines.describe_range`) and the RMSE of the flux."""

    kind: str
    c: float
    c_interval: tuple
    theta: float
    theta_se: float
    n: int
    measure_range: dict
    rmse: float


def fit_eddy_viscosity(kind: str, shape, G, flux, measure=None) -> EddyViscosityFit:
    """Fit ``flux ≈ c^p · shape · G`` with ``c ≥ 0`` (exact constrained least squares).

    Parameters
    ----------
    kind : {"smagorinsky", "leith"}
    shape : array or Tensor, shape (n_faces,) or (samples, n_faces)
        :func:`viscosity_shape` of each sample, [length²/time].
    G, flux : same shape
        ``face_gradient`` of ``ζ`` and the subgrid vorticity flux.
    measure : same shape, optional
        ``M`` at the faces (``|S|`` or ``|∇ζ|``), only for :attr:`EddyViscosityFit.measure_range`
        (default: the range of ``shape``).
    """
    p = _check_kind(kind)
    s = _flat("shape", shape)
    g = _flat("G", G, s)
    fit = fit_constant(s * g, flux, nonnegative=True)
    lo, hi = fit.interval
    root = lambda v: float(max(v, 0.0)) ** (1.0 / p)          # noqa: E731
    rng = describe_range(s if measure is None else _flat("measure", measure, s))
    return EddyViscosityFit(kind, root(fit.K), (root(lo), root(hi)), fit.K, fit.se, fit.n,
                            rng, fit.rmse)


class EddyViscosityClosure(Closure):
    """``Φ_f = (c Δ)^p M_f G_f`` for ``var`` (default ``"zeta"``), ``M`` from ``ζ``.

    Parameters
    ----------
    kind : {"smagorinsky", "leith"}
    c : float
        The coefficient (>= 0), e.g. :attr:`EddyViscosityFit.c`.
    var : str
        The variable closed; the viscosity always comes from ``state["zeta"]``.
    """

    def __init__(self, kind: str, c: float, var: str = "zeta") -> None:
        self.p = _check_kind(kind)
        if not (isinstance(c, (int, float)) and math.isfinite(c) and c >= 0):
            raise ArgumentError("c", c, "must be a finite coefficient >= 0",
                                "use the c of fit_eddy_viscosity")
        self.kind, self.c, self.var = kind, float(c), var

    def fluxes(self, t, state, mesh, transport=None) -> Dict[str, Tensor]:
        Q = state[self.var]
        nu = self.c ** self.p * viscosity_shape(mesh, self.kind, state["zeta"]).to(Q)
        return {self.var: nu * face_gradient(mesh, Q)}
