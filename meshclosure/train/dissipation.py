"""Variance production of a closure and the dissipation penalty (a soft constraint).

For any face flux ``Φ`` and cell field ``Q``::

    Σ_i V_i Q_i (−div Φ)_i = −Σ_i Q_i (Σ_{f: a_f=i} Φ_f − Σ_{f: b_f=i} Φ_f)
                          = −Σ_f Φ_f (Q_{a_f} − Q_{b_f}) = Σ_f Φ_f (Q_{b_f} − Q_{a_f}) =: P

(each interior face appears once with its owner ``a`` and once with its
neighbour ``b``; boundary faces carry no closure flux). So
:func:`variance_production` ``P`` is exactly the closure's contribution to
``d/dt ½ Σ_i V_i Q_i²``, and a down-gradient flux ``Φ_f = −K_f (Q_b − Q_a)``
with ``K_f ≥ 0`` gives ``P = −Σ K_f (Q_b − Q_a)² ≤ 0``. A subgrid closure of a
cascade to small scales should not produce resolved variance on average;
:func:`dissipation_penalty` is ``mean([P]_+²)`` (units ``([Q]² · volume / time)²``
unless the trainer passes a ``scale`` in the units of ``P``).

Examples
--------
>>> import torch
>>> from meshclosure.mesh import cartesian
>>> mesh = cartesian(8, 8)
>>> q = torch.sin(6.283185307179586 * mesh.cell_center[:, 0].double())
>>> a, b = mesh.face_cells
>>> up = q[b] - q[a]                                     # up-gradient: produces variance
>>> float(variance_production(mesh, up, q)) > 0, float(dissipation_penalty(mesh, up, q)) > 0
(True, True)
>>> variance_production(mesh, up[:3], q)
Traceback (most recent call last):
...
meshclosure.errors.ArgumentError: ...
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor

from ..errors import ArgumentError
from ..mesh import Mesh

__all__ = ["variance_production", "dissipation_penalty", "positive_production_fraction"]


def variance_production(mesh: Mesh, flux: Tensor, Q: Tensor) -> Tensor:
    """``P = Σ_f Φ_f (Q_b − Q_a)``: the closure's contribution to ``d/dt ½ Σ_i V_i Q_i²``.

    Equal to ``Σ_i V_i Q_i (−div Φ)_i`` exactly (proof in the module docstring).

    Parameters
    ----------
    mesh : Mesh
    flux : Tensor, shape (n_faces,), (B, n_faces) or (B, n_faces, n_vars)
        Integrated interior face fluxes, positive owner ``a`` -> neighbour ``b``.
    Q : Tensor, shape (n_cells,), (B, n_cells) or (B, n_cells, n_vars)
        The resolved field the flux transports.

    Returns
    -------
    Tensor, shape (), (B,) or (B, n_vars)
        Units [Φ]·[Q] (e.g. [Q]² · area / time on a surface).
    """
    if flux.dim() != Q.dim() or flux.dim() not in (1, 2, 3):
        raise ArgumentError("flux", tuple(flux.shape), f"must be (n_faces,), (B, n_faces) or "
                            f"(B, n_faces, n_vars) matching Q {tuple(Q.shape)}",
                            "pass flux and Q with the same batch and variable dims")
    single = flux.dim() == 1
    f, q = (flux.unsqueeze(0), Q.unsqueeze(0)) if single else (flux, Q)
    if (f.shape[1] != mesh.n_faces or q.shape[1] != mesh.n_cells or f.shape[0] != q.shape[0]
            or f.shape[2:] != q.shape[2:]):
        raise ArgumentError("flux", tuple(flux.shape), f"must have n_faces = {mesh.n_faces} "
                            f"where Q {tuple(Q.shape)} has n_cells = {mesh.n_cells}, and equal "
                            "batch and variable dims", "pass fluxes on the interior faces of mesh")
    a, b = mesh.face_cells.to(q.device)
    P = (f * (q[:, b] - q[:, a])).sum(1)
    return P[0] if single else P


def dissipation_penalty(mesh: Mesh, flux: Tensor, Q: Tensor, scale: Optional[Any] = None,
                        reduction: str = "mean") -> Tensor:
    """``mean(([P]_+ / scale)²)`` over samples (and variables), ``P`` the variance production.

    Zero for any flux that does not produce variance (down-gradient, ``K ≥ 0``);
    positive as soon as a sample's closure produces variance.

    Parameters
    ----------
    mesh, flux, Q
        As in :func:`variance_production`.
    scale : float or Tensor broadcastable to P, optional
        In the units of ``P``; default 1 (then the penalty has units of ``P²``).
    reduction : {"mean", "sum", "none"}

    Returns
    -------
    Tensor, scalar (or the shape of ``P`` with ``reduction="none"``)
    """
    if reduction not in ("mean", "sum", "none"):
        raise ArgumentError("reduction", reduction, "must be 'mean', 'sum' or 'none'",
                            "pass {reduction}='mean'")
    P = variance_production(mesh, flux, Q)
    if scale is not None:
        P = P / torch.as_tensor(scale, dtype=P.dtype, device=P.device)
    pen = torch.relu(P) ** 2
    return pen.mean() if reduction == "mean" else pen.sum() if reduction == "sum" else pen


def positive_production_fraction(mesh: Mesh, flux: Tensor, Q: Tensor) -> float:
    """Fraction of samples (and variables) with ``P > 0`` (a diagnostic, not a loss)."""
    with torch.no_grad():
        return float((variance_production(mesh, flux, Q) > 0).double().mean())
