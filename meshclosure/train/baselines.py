"""Calibrated physics baselines: eddy diffusivities fitted to subgrid face fluxes.

A down-gradient closure for a conserved quantity ``Q`` is, per coarse face,

    Φ_f = K_f · G_f,        G_f = −(Q_b − Q_a) A_f / d_f

(``a``/``b`` the owner/neighbour, ``A_f`` the face length or area, ``d_f``
the centre distance; ``G`` is the integrated down-gradient flux per unit
diffusivity, [Q] on a surface: the two-point face form of
:func:`meshclosure.fv.diffusive_flux`, without its non-orthogonal correction).
It is antisymmetric by construction, so it conserves ``Σ V Q`` exactly, and
``K ≥ 0`` makes it dissipate variance.

* :func:`fit_constant` fits one ``K`` (least squares through the origin).
* :func:`fit_power_law` fits ``K(N) = α N^β`` with ``N`` a resolved measure
  at the faces (:func:`face_mean` of a cell field), by
  ``scipy.optimize.least_squares`` in ``(log α, β)`` (so ``α > 0`` always),
  with 95 % confidence intervals from the Jacobian at the optimum.
* :class:`DiffusivityClosure` runs either as a closure in any solver model
  (and composes with other closures).

Examples
--------
>>> import torch
>>> from meshclosure.mesh import cartesian
>>> mesh = cartesian(16, 16)
>>> x = mesh.cell_center.double()
>>> Q = torch.sin(6.2832 * x[:, 0])
>>> N = 1.0 + x[:, 1]
>>> G, Nf = face_gradient(mesh, Q), face_mean(mesh, N)
>>> fit = fit_power_law(Nf, G, 0.3 * Nf ** 1.5 * G)
>>> round(fit.alpha, 6), round(fit.beta, 6)
(0.3, 1.5)
>>> fit_power_law(Nf, G, G[:3])
Traceback (most recent call last):
...
meshclosure.errors.ArgumentError: flux=(3,): must have the shape of G (512,); ...
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Sequence

import numpy as np
from torch import Tensor

from ..closures import Closure
from ..errors import ArgumentError
from ..mesh import Mesh

__all__ = ["face_gradient", "face_mean", "ConstantFit", "PowerLawFit", "fit_constant",
           "fit_power_law", "binned_diffusivity", "DiffusivityClosure"]


def face_gradient(mesh: Mesh, Q: Tensor) -> Tensor:
    """``G_f = −(Q_b − Q_a) A_f / d_f``, shape ``(n_faces, ...)`` for ``Q (n_cells, ...)``."""
    a, b = mesh.face_cells[0], mesh.face_cells[1]
    scale = (mesh.face_area / mesh.cell_distance).to(Q)
    return -(Q[b] - Q[a]) * scale.reshape((-1,) + (1,) * (Q.dim() - 1))


def face_mean(mesh: Mesh, N: Tensor) -> Tensor:
    """``½ (N_a + N_b)`` at every face: a cell field interpolated smoothly to the faces."""
    return 0.5 * (N[mesh.face_cells[0]] + N[mesh.face_cells[1]])


def _flat(name: str, x, like: Optional[np.ndarray] = None) -> np.ndarray:
    a = (x.detach().cpu().double().numpy() if isinstance(x, Tensor)
         else np.asarray(x, dtype=np.float64)).reshape(-1)
    if like is not None and a.shape != like.shape:
        raise ArgumentError(name, tuple(np.shape(x)), f"must have the shape of G {like.shape}",
                            "pass one value per face (and per sample) for G, flux and N")
    if not np.isfinite(a).all():
        raise ArgumentError(name, "<non-finite values>", "must be finite",
                            "drop or fill the NaN/Inf samples before fitting")
    return a


@dataclass
class ConstantFit:
    """``K`` (length²/time), its standard error, 95 % interval, sample count, RMSE."""

    K: float
    se: float
    interval: tuple
    n: int
    rmse: float


@dataclass
class PowerLawFit:
    """``K(N) = α N^β`` with 95 % intervals, the fitted ``N`` range and the RMSE."""

    alpha: float
    beta: float
    alpha_interval: tuple
    beta_interval: tuple
    n: int
    N_range: tuple
    rmse: float
    cov_log_alpha_beta: list = field(default_factory=list)

    def K(self, N):
        """The fitted diffusivity at ``N`` (array or tensor)."""
        return self.alpha * N ** self.beta


def fit_constant(G, flux) -> ConstantFit:
    """Least-squares ``K`` in ``flux ≈ K G`` (through the origin), with its interval."""
    g = _flat("G", G)
    f = _flat("flux", flux, g)
    gg = float(g @ g)
    if gg == 0:
        raise ArgumentError("G", "<all zero>", "must not vanish everywhere",
                            "fit on samples with a resolved gradient")
    K = float(g @ f) / gg
    r = f - K * g
    dof = max(len(g) - 1, 1)
    se = math.sqrt(float(r @ r) / dof / gg)
    return ConstantFit(K, se, (K - 1.96 * se, K + 1.96 * se), len(g),
                       math.sqrt(float(r @ r) / len(g)))


def fit_power_law(N, G, flux, x0: Sequence[float] = (0.0, 1.0)) -> PowerLawFit:
    """Fit ``flux ≈ α N^β G`` (``α > 0``) by ``scipy.optimize.least_squares``.

    Parameters
    ----------
    N : array or Tensor, shape (n_faces,) or (samples, n_faces)
        The resolved measure at the faces (> 0; :func:`face_mean`).
    G : same shape
        :func:`face_gradient` of the coarse state.
    flux : same shape
        The subgrid face flux ``Φ^sgs``.
    x0 : (log α, β)
        Starting point.

    Returns
    -------
    PowerLawFit
        Intervals at 95 % from the Gauss–Newton covariance ``s² (JᵀJ)⁻¹`` in
        ``(log α, β)`` (the ``α`` interval is the image of the ``log α`` one).
    """
    from scipy.optimize import least_squares

    g = _flat("G", G)
    f = _flat("flux", flux, g)
    n = _flat("N", N, g)
    if (n <= 0).any():
        raise ArgumentError("N", float(n.min()), "must be > 0 everywhere (K = α N^β)",
                            "fit only faces with N > 0, or fit a constant K0 where N <= 0")
    scale = float(np.sqrt(np.mean(f ** 2))) or 1.0
    logn = np.log(n)

    def residual(p):
        return (np.exp(p[0] + p[1] * logn) * g - f) / scale

    def jacobian(p):
        k = np.exp(p[0] + p[1] * logn) * g / scale
        return np.stack([k, k * logn], 1)

    sol = least_squares(residual, np.asarray(x0, dtype=np.float64), jac=jacobian, method="lm")
    la, beta = (float(v) for v in sol.x)
    J = sol.jac
    dof = max(len(g) - 2, 1)
    s2 = float(sol.fun @ sol.fun) / dof
    try:
        cov = s2 * np.linalg.inv(J.T @ J)
    except np.linalg.LinAlgError:
        cov = np.full((2, 2), np.inf)
    se = np.sqrt(np.clip(np.diag(cov), 0, None))
    rmse = float(np.sqrt(np.mean(sol.fun ** 2))) * scale
    return PowerLawFit(float(np.exp(la)), beta,
                       (float(np.exp(la - 1.96 * se[0])), float(np.exp(la + 1.96 * se[0]))),
                       (beta - 1.96 * float(se[1]), beta + 1.96 * float(se[1])), len(g),
                       (float(n.min()), float(n.max())), rmse, cov.tolist())


def binned_diffusivity(flux, G, N, nodes) -> np.ndarray:
    """The effective diffusivity ``K_eff(N_j) = Σ w_j Φ G / Σ w_j G²`` at each node ``N_j``.

    A weighted least-squares fit of ``Φ ≈ K G`` around each node, with hat
    weights ``w_j(N_f) = max(0, 1 − |N_f − N_j| / h)`` (``h`` the node spacing):
    soft bins, so the zero-mean stochastic part of a subgrid flux (for a
    non-divergent transport its projection on the gradient telescopes) leaks in
    only where the weights change, about tenfold less than with sharp bins. The
    same regression measures the truth's, a fitted law's or a learned closure's
    ``K_eff(N)``.

    Parameters
    ----------
    flux, G, N : array or Tensor, one value per face (any shape, flattened alike)
        Face fluxes ``Φ``, :func:`face_gradient` and the measure at the faces.
    nodes : sequence of float
        Equally spaced node values ``N_j`` (at least 2).

    Returns
    -------
    ndarray, shape (n_nodes,)
        ``nan`` at a node no face is near.

    Examples
    --------
    >>> import numpy as np
    >>> N = np.linspace(0.0, 2.0, 201); G = (-1.0) ** np.arange(201)
    >>> binned_diffusivity(0.5 * (1 + N) * G, G, N, [0.5, 1.0, 1.5]).round(3).tolist()
    [0.75, 1.0, 1.25]
    """
    g = _flat("G", G)
    f = _flat("flux", flux, g)
    n = _flat("N", N, g)
    nodes = np.asarray(nodes, dtype=np.float64)
    if nodes.ndim != 1 or len(nodes) < 2 or not np.all(np.diff(nodes) > 0):
        raise ArgumentError("nodes", nodes.tolist(), "must be at least 2 increasing values",
                            "pass e.g. np.linspace(N_min, N_max, 5)")
    h = float(nodes[1] - nodes[0])
    out = []
    for c in nodes:
        w = np.clip(1.0 - np.abs(n - c) / h, 0.0, None)
        den = float((w * g * g).sum())
        out.append(float((w * f * g).sum()) / den if den > 0 else float("nan"))
    return np.array(out)


class DiffusivityClosure(Closure):
    """``Φ_f = K_f G_f`` for one variable: a constant ``K`` or ``K(N) = α N^β``.

    Parameters
    ----------
    var : str
        The variable closed.
    K : float, optional
        A constant diffusivity (>= 0).
    alpha, beta : float, optional
        Power-law coefficients (``alpha > 0``); needs ``measure``.
    measure : callable ``(t, state, mesh) -> (n_cells,)``, optional
        The resolved ``N`` at the cells (averaged to the faces).
    """

    def __init__(self, var: str, K: Optional[float] = None, alpha: Optional[float] = None,
                 beta: Optional[float] = None,
                 measure: Optional[Callable[[float, Dict[str, Tensor], Mesh], Tensor]] = None
                 ) -> None:
        if (K is None) == (alpha is None):
            raise ArgumentError("K", K, "give either a constant K or alpha and beta",
                                "pass K=... or alpha=..., beta=..., measure=...")
        if K is not None and not (math.isfinite(K) and K >= 0):
            raise ArgumentError("K", K, "must be a finite diffusivity >= 0",
                                "a negative K would create variance")
        if alpha is not None and (not (alpha > 0 and math.isfinite(alpha)) or beta is None
                                  or measure is None):
            raise ArgumentError("alpha", alpha, "must be > 0, with beta and measure given",
                                "use a fit from fit_power_law and the scenario's N")
        self.var, self.K, self.alpha, self.beta, self.measure = var, K, alpha, beta, measure

    def fluxes(self, t, state, mesh, transport=None) -> Dict[str, Tensor]:
        Q = state[self.var]
        G = face_gradient(mesh, Q)
        if self.K is not None:
            return {self.var: self.K * G}
        N = face_mean(mesh, self.measure(t, state, mesh).to(Q))
        if (N <= 0).any():
            raise ArgumentError("measure", float(N.min()), "must be > 0 at every face for "
                                "K = alpha N^beta", "clip N or use a constant K0 there")
        return {self.var: self.alpha * N ** self.beta * G}
