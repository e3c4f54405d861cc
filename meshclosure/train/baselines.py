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
* :func:`fit_convective` fits the convective limit ``K₀`` where ``N² ≤ 0`` and
  ``α N^β`` (``N = √N²``) elsewhere, as in a convective boundary layer.
* :class:`DiffusivityClosure` and :class:`ConvectiveClosure` run the fitted
  laws as closures in any solver model (and compose with other closures).
* :func:`describe_range` states the range of ``N`` a law was fitted on.

Eddy viscosities for vorticity (Smagorinsky, Leith) are in
:mod:`~meshclosure.train.eddy_viscosity`.

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

__all__ = ["face_gradient", "face_mean", "ConstantFit", "PowerLawFit", "ConvectiveFit",
           "fit_constant", "fit_power_law", "fit_convective", "describe_range",
           "binned_diffusivity", "DiffusivityClosure", "ConvectiveClosure"]


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


def fit_constant(G, flux, nonnegative: bool = False) -> ConstantFit:
    """Least-squares ``K`` in ``flux ≈ K G`` (through the origin), with its 95 % interval.

    ``nonnegative``: enforce ``K ≥ 0``. The loss is a parabola in ``K``, so the
    constrained optimum is ``max(K_ls, 0)`` exactly; the interval is clipped at 0.
    """
    g = _flat("G", G)
    f = _flat("flux", flux, g)
    gg = float(g @ g)
    if gg == 0:
        raise ArgumentError("G", "<all zero>", "must not vanish everywhere",
                            "fit on samples with a resolved gradient")
    K = float(g @ f) / gg
    if nonnegative and K < 0:
        K = 0.0
    r = f - K * g
    dof = max(len(g) - 1, 1)
    se = math.sqrt(float(r @ r) / dof / gg)
    lo_hi = (K - 1.96 * se, K + 1.96 * se)
    if nonnegative:
        lo_hi = (max(lo_hi[0], 0.0), max(lo_hi[1], 0.0))
    return ConstantFit(K, se, lo_hi, len(g), math.sqrt(float(r @ r) / len(g)))


def describe_range(N) -> dict:
    """The fitted range of a measure: ``min``, ``p5``, ``p50``, ``p95``, ``max`` and ``n``.

    >>> describe_range([1.0, 2.0, 3.0])["p50"]
    2.0
    """
    n = _flat("N", N)
    if not n.size:
        raise ArgumentError("N", "<empty>", "must hold at least one value",
                            "fit on a split with samples")
    q = np.percentile(n, [5, 50, 95])
    return {"min": float(n.min()), "p5": float(q[0]), "p50": float(q[1]), "p95": float(q[2]),
            "max": float(n.max()), "n": int(n.size)}


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
                       (float(np.exp(min(la - 1.96 * se[0], 700.0))),
                        float(np.exp(min(la + 1.96 * se[0], 700.0)))),
                       (beta - 1.96 * float(se[1]), beta + 1.96 * float(se[1])), len(g),
                       (float(n.min()), float(n.max())), rmse, cov.tolist())


@dataclass
class ConvectiveFit:
    """``K = K₀`` where ``N² ≤ 0`` (convective), ``α N^β`` with ``N = √N²`` elsewhere.

    ``K0`` with its standard error and 95 % interval (``K₀ ≥ 0``), the number of
    convective faces, the stable part's :class:`PowerLawFit`, and the ranges
    (:func:`describe_range`) of ``N²`` over all faces and of ``N`` where stable.
    """

    K0: float
    K0_se: float
    K0_interval: tuple
    n_convective: int
    power_law: PowerLawFit
    N2_range: dict
    N_range: dict

    def K(self, N2):
        """The fitted diffusivity at ``N²`` (array)."""
        N2 = np.asarray(N2, dtype=np.float64)
        stable = N2 > 0
        return np.where(stable, self.power_law.alpha
                        * np.sqrt(np.where(stable, N2, 1.0)) ** self.power_law.beta, self.K0)


def fit_convective(N2, G, flux) -> ConvectiveFit:
    """Fit ``flux ≈ K G`` with ``K = K₀`` where ``N² ≤ 0`` and ``α N^β`` elsewhere.

    The two parts share no face, so the joint least-squares problem splits:
    ``K₀ ≥ 0`` by :func:`fit_constant` on the convective faces, ``(α, β)`` by
    :func:`fit_power_law` on the stable ones, ``N = √N²``.

    Parameters
    ----------
    N2 : array or Tensor, shape (n_faces,) or (samples, n_faces)
        The resolved squared buoyancy frequency ``∂b/∂z`` at the faces
        (:func:`face_mean` of the cells'), [1/time²].
    G, flux : same shape
        :func:`face_gradient` of the buoyancy and the subgrid face flux.

    Examples
    --------
    >>> import numpy as np
    >>> N2 = np.linspace(-1.0, 4.0, 501); G = np.cos(np.arange(501.0))
    >>> fit = fit_convective(N2, G, np.where(N2 > 0, 0.1 * np.sqrt(np.abs(N2) + 1e-300) ** -0.5,
    ...                                      2.0) * G)
    >>> round(fit.K0, 9), round(fit.power_law.alpha, 9), round(fit.power_law.beta, 9)
    (2.0, 0.1, -0.5)
    >>> fit_convective(N2 + 2.0, G, G)
    Traceback (most recent call last):
    ...
    meshclosure.errors.ArgumentError: N2=1.0: must be <= 0 at some faces to fit the convective limit K0; ...
    """
    g = _flat("G", G)
    f = _flat("flux", flux, g)
    n2 = _flat("N2", N2, g)
    conv = n2 <= 0
    if not conv.any() or conv.all():
        raise ArgumentError("N2", float(n2.min() if not conv.any() else n2.max()),
                            "must be <= 0 at some faces to fit the convective limit K0"
                            if not conv.any() else "must be > 0 at some faces to fit K(N)",
                            "fit on samples that hold both convective and stable layers, "
                            "or fit a constant or a power law instead")
    k0 = fit_constant(g[conv], f[conv], nonnegative=True)
    law = fit_power_law(np.sqrt(n2[~conv]), g[~conv], f[~conv])
    return ConvectiveFit(k0.K, k0.se, k0.interval, int(conv.sum()), law, describe_range(n2),
                         describe_range(np.sqrt(n2[~conv])))


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


class ConvectiveClosure(Closure):
    """``Φ_f = K_f G_f`` with ``K = K₀`` where ``N²_f ≤ 0``, ``α N_f^β`` elsewhere.

    Parameters
    ----------
    var : str
        The variable closed (the buoyancy).
    K0 : float
        The convective-limit diffusivity (>= 0).
    alpha, beta : float
        The stable part's power law (``alpha > 0``), ``N = √N²``.
    measure : callable ``(t, state, mesh) -> (n_cells,)``
        The resolved ``N²`` at the cells (averaged to the faces).
    """

    def __init__(self, var: str, K0: float, alpha: float, beta: float,
                 measure: Callable[[float, Dict[str, Tensor], Mesh], Tensor]) -> None:
        if not (math.isfinite(K0) and K0 >= 0):
            raise ArgumentError("K0", K0, "must be a finite diffusivity >= 0",
                                "use the K0 of fit_convective")
        if not (math.isfinite(alpha) and alpha > 0 and math.isfinite(beta)) or measure is None:
            raise ArgumentError("alpha", alpha, "must be > 0, with a finite beta and a measure",
                                "use the power law of fit_convective and the scenario's N2")
        self.var, self.K0, self.alpha, self.beta, self.measure = var, K0, alpha, beta, measure

    def fluxes(self, t, state, mesh, transport=None) -> Dict[str, Tensor]:
        import torch

        Q = state[self.var]
        N2 = face_mean(mesh, self.measure(t, state, mesh).to(Q))
        stable = N2 > 0
        N = torch.sqrt(torch.where(stable, N2, torch.ones_like(N2)))
        K = torch.where(stable, self.alpha * N ** self.beta, torch.full_like(N2, self.K0))
        return {self.var: K * face_gradient(mesh, Q)}
