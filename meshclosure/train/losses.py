"""Training losses on face fluxes and on the tendencies they produce.

All losses take batched tensors (a leading batch dim ``B``) and return a
scalar (the mean over every element), in the units of their inputs squared;
the trainer feeds them normalised targets (``Φ / flux_scale``), so they are
dimensionless there.

* :func:`flux_mse` — ``mean((Φ̂ − Φ)²)`` over samples, faces and variables.
* :func:`tendency` — ``s = −div(Φ)`` per cell, batched; :func:`tendency_mse`
  compares it with the subgrid tendency ``s^sgs`` (the quantity the solver
  feels). Because ``s`` is a fixed linear map of ``Φ``, the tendency loss
  ignores the part of ``Φ`` that the divergence annihilates (divergence-free
  face fluxes, e.g. a constant circulation around every cell); the flux loss
  constrains it.
* :func:`beta_nll` — the Gaussian negative log-likelihood of a
  heteroscedastic prediction ``N(μ, σ²)`` with the β-NLL weighting of Seitzer
  et al. (2022, "On the pitfalls of heteroscedastic uncertainty estimation with
  probabilistic neural networks", ICLR, https://openreview.net/forum?id=aPOpXlnV1T)::

      L = mean( sg[σ^{2β}] · (½ log σ² + (y − μ)² / (2σ²)) )

  with ``sg`` the stop-gradient; ``β = 0`` is the plain NLL (up to the
  constant ``½ log 2π``), ``β = 1`` gives the mean the gradient of the MSE.

Examples
--------
>>> import torch
>>> y = torch.zeros(2, 5, 1)
>>> float(flux_mse(y + 2.0, y))
4.0
>>> float(beta_nll(y, torch.zeros_like(y), y + 1.0, beta=0.0))    # ½ log 1 + ½
0.5
>>> beta_nll(y, torch.zeros_like(y), y, beta=2.0)
Traceback (most recent call last):
...
meshclosure.errors.ArgumentError: beta=2.0: must be a number in [0, 1] (0: plain Gaussian NLL, 1: MSE-like gradient for the mean); pass e.g. beta=0.5 (Seitzer et al. 2022).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..errors import ArgumentError
from ..fv.operators import divergence
from ..mesh import Mesh

__all__ = ["flux_mse", "tendency", "tendency_mse", "beta_nll"]


def _same_shape(name: str, a: Tensor, b: Tensor) -> None:
    if a.shape != b.shape:
        raise ArgumentError(name, tuple(a.shape), f"must have the target's shape {tuple(b.shape)}",
                            "predict one value per face (or cell) and variable of every sample")


def flux_mse(pred: Tensor, target: Tensor, weight: Optional[Tensor] = None) -> Tensor:
    """``mean((pred − target)²)``; ``weight`` (broadcast to the shape, e.g. ``(B, 1, 1)``
    per sample) makes it ``Σ w (pred − target)² / Σ w``.

    Shapes: ``pred``, ``target`` ``(B, n_faces, n_vars)`` (any shape, equal).
    """
    _same_shape("pred", pred, target)
    sq = (pred - target) ** 2
    if weight is None:
        return sq.mean()
    w = torch.broadcast_to(weight.to(sq), sq.shape)
    return (w * sq).sum() / w.sum()


def tendency(mesh: Mesh, flux: Tensor) -> Tensor:
    """``s = −div(Φ)`` per cell, batched.

    Parameters
    ----------
    mesh : Mesh
    flux : Tensor, shape (n_faces, n_vars) or (B, n_faces, n_vars)
        Integrated face fluxes, positive owner -> neighbour.

    Returns
    -------
    Tensor, shape (n_cells, n_vars) or (B, n_cells, n_vars)
    """
    if flux.dim() == 2:
        return -divergence(mesh, flux)
    if flux.dim() != 3:
        raise ArgumentError("flux", tuple(flux.shape), "must be (n_faces, n_vars) or "
                            "(B, n_faces, n_vars)", "stack samples along a first batch dim")
    out = -divergence(mesh, flux.permute(1, 0, 2).reshape(flux.shape[1], -1))
    return out.reshape(mesh.n_cells, flux.shape[0], flux.shape[2]).permute(1, 0, 2)


def tendency_mse(mesh: Mesh, pred_flux: Tensor, target_tendency: Tensor) -> Tensor:
    """``mean((−div Φ̂ − s^sgs)²)`` over samples, cells and variables.

    Shapes: ``pred_flux (B, n_faces, n_vars)``, ``target_tendency (B, n_cells, n_vars)``.
    """
    s = tendency(mesh, pred_flux)
    _same_shape("pred_flux", s, target_tendency)
    return ((s - target_tendency) ** 2).mean()


def beta_nll(mean: Tensor, log_var: Tensor, target: Tensor, beta: float = 0.5,
             weight: Optional[Tensor] = None) -> Tensor:
    """β-NLL of a Gaussian prediction (module docstring; Seitzer et al. 2022).

    Parameters
    ----------
    mean, log_var, target : Tensor, equal shapes, e.g. (B, n_faces, n_vars)
    beta : float in [0, 1]
        0: plain Gaussian NLL (without ``½ log 2π``).
    weight : Tensor, optional
        Broadcast to the shape; a weighted mean.
    """
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0.0 <= beta <= 1.0:
        raise ArgumentError("beta", beta, "must be a number in [0, 1] (0: plain Gaussian NLL, "
                            "1: MSE-like gradient for the mean)",
                            "pass e.g. {beta}=0.5 (Seitzer et al. 2022)")
    _same_shape("mean", mean, target)
    _same_shape("log_var", log_var, target)
    nll = 0.5 * (log_var + (target - mean) ** 2 * torch.exp(-log_var))
    if beta > 0:
        nll = nll * torch.exp(beta * log_var).detach()
    if weight is None:
        return nll.mean()
    w = torch.broadcast_to(weight.to(nll), nll.shape)
    return (w * nll).sum() / w.sum()
