"""Offline skill of a closure: pooled R², large-band R² of the tendency, paired differences.

Three measures of how well a predicted subgrid quantity matches the truth,
used by ``tools/train_study.py`` (issue 11) and by validation:

* :func:`pooled_r2` — ``R² = 1 − Σ (p − y)² / Σ (y − ȳ)²`` over every element
  (samples, faces, ...): the skill on the raw face flux. On ``kinematic`` it is
  near zero for any deterministic closure, because the subgrid flux there is
  dominated by zero-mean eddy transport (issue 11, "What the data can show").
* :func:`large_band_r2` — the same R² after the L2 projection (volume-weighted
  least squares) of both tendencies onto the large-scale band spanned by the
  smooth test functions of the mesh
  (:func:`~meshclosure.train.constraints.test_functions`: Fourier modes with
  ``|k| ≤ k_c/4`` on periodic planes, real spherical harmonics ``l ≤ l_c/4`` on
  spheres, cosines on columns and bounded planes). On a uniform periodic plane
  the projection is exactly the Fourier low-pass ``|k| ≤ k_c/4``.
* :func:`paired_difference` — the mean and standard error of per-seed
  differences ``a_s − b_s``; "``a`` beats ``b``" in issue 11 means
  ``|mean| > 2 SE`` with ``n ≥ 3`` seeds (:attr:`PairedDifference.significant`).

Examples
--------
>>> pooled_r2(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 2.0, 3.0]))
1.0
>>> pooled_r2(torch.zeros(3), torch.tensor([1.0, 2.0, 3.0]))
-6.0
>>> d = paired_difference([0.1, 0.2, 0.3], [0.3, 0.5, 0.6])
>>> round(d.mean, 12), round(d.se, 12), d.n, d.significant
(-0.266666666667, 0.033333333333, 3, True)
>>> paired_difference([0.1], [0.2])
Traceback (most recent call last):
...
meshclosure.errors.ArgumentError: a=[0.1]: must hold at least 2 paired values (seeds); ...
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import ArgumentError
from ..mesh import Mesh
from .constraints import test_functions

__all__ = ["pooled_r2", "large_band_r2", "band_projection", "paired_difference",
           "PairedDifference"]


def _finite(name: str, x: Tensor) -> None:
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ArgumentError(name, f"tensor with {bad} non-finite values", "must be finite",
                            "drop or repair the samples holding NaN/Inf before scoring")


def _paired(pred_name: str, pred: Tensor, target_name: str, target: Tensor) -> tuple:
    """``pred`` and ``target`` as tensors, checked to have one shape and finite values."""
    pred, target = torch.as_tensor(pred), torch.as_tensor(target)
    if pred.shape != target.shape:
        raise ArgumentError(pred_name, tuple(pred.shape), f"must have the shape of "
                            f"{target_name} {tuple(target.shape)}",
                            "score predictions of the same samples")
    _finite(pred_name, pred.detach().double())
    _finite(target_name, target.detach().double())
    return pred, target


def pooled_r2(pred: Tensor, target: Tensor) -> float:
    """Pooled coefficient of determination over every element.

    ``R² = 1 − Σ_j (p_j − y_j)² / Σ_j (y_j − ȳ)²``, ``ȳ`` the mean of all
    elements ``j`` (samples × faces × ...), in float64. ``1`` is a perfect
    prediction; ``0`` the skill of predicting the pooled mean; no closure
    (``p = 0``) scores ``−ȳ²/Var(y)`` (≈ 0 for a zero-mean flux).

    Parameters
    ----------
    pred, target : Tensor, shape (...)
        The same shape (e.g. ``(n_samples, n_faces)`` face fluxes).

    Returns
    -------
    float

    Raises
    ------
    ArgumentError
        Shapes differ, a value is not finite, or ``target`` is constant
        (``R²`` undefined).

    >>> pooled_r2(torch.ones(4), torch.ones(4))
    Traceback (most recent call last):
    ...
    meshclosure.errors.ArgumentError: target='tensor of 4 equal values': must vary (R² divides by its variance); ...
    """
    pred, target = _paired("pred", pred, "target", target)
    p, y = pred.detach().double().reshape(-1), target.detach().double().reshape(-1)
    sst = float(((y - y.mean()) ** 2).sum())
    if not sst > 0:
        raise ArgumentError("target", f"tensor of {y.numel()} equal values",
                            "must vary (R² divides by its variance)",
                            "score on more samples, or report the MSE instead")
    return 1.0 - float(((p - y) ** 2).sum()) / sst


def band_projection(mesh: Mesh, field: Tensor, functions: Optional[Tensor] = None,
                    n: Optional[float] = None, degree: Optional[int] = None) -> Tensor:
    """The L2 projection of cell fields onto the span of smooth test functions.

    ``P s = Σ_m c_m φ_m`` with ``c = G⁻¹ b``, ``G_mn = Σ_i V_i φ_{m,i} φ_{n,i}``,
    ``b_m = Σ_i V_i φ_{m,i} s_i`` (``V_i`` the cell volumes): the volume-weighted
    least-squares fit of ``s`` by the band, exact even where the functions are
    only nearly orthogonal (spheres).

    Parameters
    ----------
    mesh : Mesh
    field : Tensor, shape (n_cells,) or (n_samples, n_cells)
    functions : Tensor, shape (M, n_cells), optional
        The band's basis; default ``test_functions(mesh, n=n, degree=degree)``.
    n, degree : optional
        Passed to :func:`~meshclosure.train.constraints.test_functions`.

    Returns
    -------
    Tensor, shape of ``field``, float64
    """
    phi = test_functions(mesh, n=n, degree=degree) if functions is None \
        else torch.as_tensor(functions).double()
    if phi.ndim != 2 or phi.shape[1] != mesh.n_cells:
        raise ArgumentError("functions", tuple(phi.shape), f"must have shape (M, n_cells="
                            f"{mesh.n_cells})", "pass test_functions(mesh) or leave it out")
    s = torch.as_tensor(field).detach().double()
    if s.ndim not in (1, 2) or s.shape[-1] != mesh.n_cells:
        raise ArgumentError("field", tuple(s.shape), f"must have shape (n_cells,) or "
                            f"(n_samples, n_cells) with n_cells={mesh.n_cells}",
                            "score one variable's cell tendency at a time")
    V = mesh.cell_volume.double()
    gram = (phi * V) @ phi.T                                      # (M, M)
    coef = torch.linalg.solve(gram, (phi * V) @ s.reshape(-1, mesh.n_cells).T)  # (M, S)
    return (coef.T @ phi).reshape(s.shape)


def large_band_r2(mesh: Mesh, pred_tendency: Tensor, target_tendency: Tensor,
                  functions: Optional[Tensor] = None, n: Optional[float] = None,
                  degree: Optional[int] = None) -> float:
    """R² of the large-scale band of a subgrid tendency.

    With ``P`` the band projection (:func:`band_projection`) and ``V_i`` the cell
    volumes, pooled over samples ``s`` and cells ``i``::

        R²_band = 1 − Σ_s Σ_i V_i (P ŝ − P s)_i² / Σ_s Σ_i V_i (P s − m)_i²

    ``m`` the volume-weighted mean of ``P s`` over all samples and cells. Any
    part of the prediction or of the target outside the band is ignored:
    the score is that of the smooth tendency the coarse model feels at large
    scale (issue 11: ``|k| ≤ k_c/4`` on planes, ``l ≤ l_c/4`` on spheres).

    Parameters
    ----------
    mesh : Mesh
    pred_tendency, target_tendency : Tensor, shape (n_cells,) or (n_samples, n_cells)
        ``−div Φ`` of one variable (:func:`~meshclosure.train.losses.tendency`),
        [variable units / time].
    functions, n, degree : optional
        The band (see :func:`band_projection`).

    Returns
    -------
    float

    Raises
    ------
    ArgumentError
        Shapes differ, a value is not finite, or the target has no variance
        inside the band.

    Examples
    --------
    >>> from meshclosure.mesh import cartesian
    >>> m = cartesian(16, 16)
    >>> x = m.cell_center[:, 0].double()
    >>> s = torch.sin(2 * math.pi * x)[None]              # |k| = 1: inside the band
    >>> large_band_r2(m, s + torch.sin(2 * math.pi * 7 * x)[None], s)   # outside ignored
    1.0
    >>> large_band_r2(m, s, torch.sin(2 * math.pi * 7 * x)[None])
    Traceback (most recent call last):
    ...
    meshclosure.errors.ArgumentError: target_tendency=...: must have variance inside the large-scale band; ...
    """
    pred, target = _paired("pred_tendency", pred_tendency, "target_tendency", target_tendency)
    Pp = band_projection(mesh, pred, functions, n, degree).reshape(-1, mesh.n_cells)
    Pt = band_projection(mesh, target, functions, n, degree).reshape(-1, mesh.n_cells)
    V = mesh.cell_volume.double()
    m = float((Pt * V).sum()) / (float(V.sum()) * Pt.shape[0])
    sst = float((((Pt - m) ** 2) * V).sum())
    scale = float(((target.double() ** 2).reshape(-1, mesh.n_cells) * V).sum())
    if not sst > 1e-24 * max(scale, 1e-300):
        raise ArgumentError("target_tendency", f"tensor with band variance {sst:.3g}",
                            "must have variance inside the large-scale band",
                            "score on more samples, or widen the band (n=, degree=)")
    return 1.0 - float((((Pp - Pt) ** 2) * V).sum()) / sst


class PairedDifference(NamedTuple):
    """``mean`` of ``a_s − b_s`` over ``n`` pairs and its standard error ``se``."""

    mean: float
    se: float
    n: int

    @property
    def significant(self) -> bool:
        """``|mean| > 2 se`` (issue 11's "beats", meaningful with ``n ≥ 3``)."""
        return abs(self.mean) > 2.0 * self.se


def paired_difference(a: Sequence[float], b: Sequence[float]) -> PairedDifference:
    """Mean and standard error of paired differences (e.g. one value per seed).

    ``d_s = a_s − b_s``, ``mean = (1/n) Σ d_s``,
    ``SE = sqrt(Σ (d_s − mean)² / (n − 1)) / √n``.

    Parameters
    ----------
    a, b : sequence of float, length n >= 2
        Paired values: ``a_s`` and ``b_s`` come from the same seed ``s``.

    Returns
    -------
    PairedDifference
        ``(mean, se, n)``; ``.significant`` is ``|mean| > 2 SE``.
    """
    x = np.asarray(a, dtype=np.float64).reshape(-1)
    y = np.asarray(b, dtype=np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ArgumentError("b", y.tolist(), f"must pair with a (length {x.size})",
                            "pass one value per seed in both")
    if x.size < 2:
        raise ArgumentError("a", x.tolist(), "must hold at least 2 paired values (seeds)",
                            "run the comparison with more seeds (issue 11 asks for >= 3)")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ArgumentError("a" if not np.isfinite(x).all() else "b",
                            (x if not np.isfinite(x).all() else y).tolist(), "must be finite",
                            "drop the seeds whose measure is undefined and say so")
    d = x - y
    return PairedDifference(float(d.mean()), float(d.std(ddof=1) / math.sqrt(d.size)),
                            int(d.size))
