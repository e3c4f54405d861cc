"""Uncertainty of learned closures: ensembles, the variance split, calibration metrics, bootstrap.

Ensembles
---------
An ensemble of ``M`` closures (different seeds and/or bootstrap resamples,
:func:`bootstrap_indices`), each predicting per face a mean ``μ_m`` and, for a
heteroscedastic head, a variance ``σ²_m``, is read as the equally weighted
mixture ``p(Φ) = (1/M) Σ_m N(μ_m, σ²_m)``. Its variance splits exactly by the
law of total variance (Lakshminarayanan et al. 2017, https://arxiv.org/abs/1612.01474;
Depeweg et al. 2018, https://arxiv.org/abs/1710.07283)::

    μ̄          = (1/M) Σ_m μ_m                       ensemble mean (the closure's flux)
    aleatoric  = (1/M) Σ_m σ²_m                      mean of predicted variances
    epistemic  = (1/M) Σ_m (μ_m − μ̄)²                variance of member means (divisor M)
    total      = aleatoric + epistemic               = Var of the mixture, exactly

The epistemic term uses the divisor ``M`` (not ``M − 1``): that is the variance
of the mixture, so ``total`` is the mixture's variance to rounding. Every term
is per face and per variable, in flux units squared.

:class:`EnsembleClosure` runs an ensemble in a solver (its flux ``μ̄`` is a
mean of antisymmetric face fluxes, so it conserves exactly; ``mode="sample"``
draws one value per face from ``N(μ̄, total)``, which conserves as well);
:func:`ensemble_predict` is the offline path on batches ``x (B, n_cells, F)``.

Calibration metrics
-------------------
* :func:`interval_coverage` — the fraction of targets inside the central
  Gaussian interval ``μ ± z σ``, ``z = Φ⁻¹((1 + level)/2)``.
* :func:`crps_gaussian` — the closed form for ``N(μ, σ²)`` (Gneiting & Raftery
  2007, https://doi.org/10.1198/016214506000001437)::

      CRPS = σ [ z (2 Φ(z) − 1) + 2 φ(z) − 1/√π ],   z = (y − μ)/σ

* :func:`crps_ensemble` — from ``M`` members ``x_m``::

      CRPS = (1/M) Σ_m |x_m − y| − 1/(2 M (M − 1)) Σ_m Σ_k |x_m − x_k|      (fair)

  the fair estimator (Ferro 2014, https://doi.org/10.1002/qj.2270; Zamo &
  Naveau 2018, https://doi.org/10.1007/s11004-017-9709-7), unbiased for the
  CRPS of the distribution the members are drawn from, whatever ``M``; it is
  the one WeatherBench 2 reports. ``fair=False`` uses ``1/(2 M²)``.
* :func:`spread_skill_ratio` — WeatherBench 2's ``√(mean spread² / mean
  squared error of the ensemble mean)`` (Rasp et al. 2024,
  https://doi.org/10.1029/2023MS004019), with the member variance unbiased
  (divisor ``M − 1``) and, here, multiplied by ``√((M + 1)/M)`` (Fortin et
  al. 2014, https://doi.org/10.1175/JHM-D-14-0008.1), so a perfectly reliable
  ``M``-member ensemble scores 1 (WeatherBench 2's "biased" ratio omits the
  factor; ``correct=False``). For a Gaussian prediction ``(mean, var)`` it is
  ``√(mean var / mean (y − μ)²)``.
* :func:`fit_variance_scale` — one factor ``s`` for which ``s·var`` is the
  maximum-likelihood Gaussian variance on a validation split:
  ``s = mean((y − μ)² / var)``.
* :func:`calibration_summary` — all of these for an ensemble's Gaussian
  predictive distribution ``N(μ̄, s·(aleatoric + epistemic))`` on one split.

Examples
--------
>>> import torch
>>> means = torch.tensor([[1.0], [3.0]])            # two members, one face
>>> split = variance_split(means, torch.tensor([[0.5], [1.5]]))
>>> split.mean.item(), split.aleatoric.item(), split.epistemic.item(), split.total.item()
(2.0, 1.0, 1.0, 2.0)
>>> round(float(crps_gaussian(torch.tensor(0.0), torch.tensor(1.0), torch.tensor(0.0))), 4)
0.2337
>>> interval_coverage(torch.zeros(3), torch.ones(3), torch.zeros(3), level=1.5)
Traceback (most recent call last):
...
meshclosure.errors.ArgumentError: level=1.5: must be a probability in (0, 1); pass e.g. 0.9 for the central 90 % interval.
"""
from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from ..closures import Closure
from ..errors import ArgumentError

__all__ = ["VarianceSplit", "variance_split", "EnsembleClosure", "ensemble_predict",
           "interval_coverage", "crps_gaussian", "crps_ensemble", "spread_skill_ratio",
           "fit_variance_scale", "calibration_summary", "bootstrap_indices"]

ArrayLike = Union[Tensor, np.ndarray, Sequence[float], float]


class VarianceSplit(NamedTuple):
    """The law-of-total-variance split of an ensemble, per face and variable.

    Attributes
    ----------
    mean : Tensor, shape (..., n_faces, n_vars)
        ``μ̄``, the mean of member means.
    aleatoric, epistemic, total : Tensor, same shape
        Mean of predicted variances, variance of member means (divisor ``M``),
        their sum (the mixture's variance). Flux units squared.
    """

    mean: Tensor
    aleatoric: Tensor
    epistemic: Tensor
    total: Tensor


def variance_split(means: Tensor, variances: Optional[Tensor] = None) -> VarianceSplit:
    """Split an ensemble's predictive variance (module docstring).

    Parameters
    ----------
    means : Tensor, shape (M, ...)
        Member means, e.g. ``(M, n_faces, n_vars)`` or ``(M, B, n_faces, n_vars)``.
    variances : Tensor, shape (M, ...), optional
        Member variances (``exp(log_var)``); ``None`` for deterministic members
        (aleatoric 0).
    """
    if means.dim() < 1 or means.shape[0] < 1:
        raise ArgumentError("means", tuple(means.shape), "must have a leading member dim M >= 1",
                            "stack the members' means along dim 0")
    mean = means.mean(0)
    epistemic = ((means - mean) ** 2).mean(0)
    if variances is None:
        aleatoric = torch.zeros_like(mean)
    else:
        if variances.shape != means.shape:
            raise ArgumentError("variances", tuple(variances.shape), f"must have the means' "
                                f"shape {tuple(means.shape)}", "pass one variance per mean")
        aleatoric = variances.mean(0)
    return VarianceSplit(mean, aleatoric, epistemic, aleatoric + epistemic)


def _call_args(args: Tuple[Any, ...], kwargs: Mapping[str, Any]) -> Tuple[Any, ...]:
    """``(t, state, mesh, transport, stage)`` of a closure call ``(t, state, mesh)`` or
    ``(context)`` (the solver's :class:`~meshclosure.solver.ClosureContext`)."""
    if len(args) == 1 and not kwargs and hasattr(args[0], "state"):
        ctx = args[0]
        return (ctx.t, ctx.state, ctx.mesh, getattr(ctx, "transport", None),
                getattr(ctx, "stage", None))
    if len(args) == 3:
        return args[0], args[1], args[2], kwargs.get("transport"), kwargs.get("stage")
    raise TypeError("a closure is called as closure(t, state, mesh) or closure(context); got "
                    f"{len(args)} positional arguments.")


def _member_output(out: Any) -> Tuple[Tensor, Optional[Tensor]]:
    return (out[0], out[1]) if isinstance(out, tuple) else (out, None)


def _stack(means: List[Tensor], log_vars: List[Optional[Tensor]], what: str
           ) -> Tuple[Tensor, Optional[Tensor]]:
    hetero = [lv is not None for lv in log_vars]
    if any(hetero) and not all(hetero):
        raise ArgumentError(what, f"{sum(hetero)} of {len(hetero)} heteroscedastic",
                            "must be all heteroscedastic or all deterministic",
                            "build every member with the same heteroscedastic setting")
    var = torch.stack([torch.exp(lv) for lv in log_vars]) if all(hetero) else None
    return torch.stack(means), var


def ensemble_predict(models: Sequence[torch.nn.Module], mesh: Any, x: Tensor,
                     normalizer: Optional[torch.nn.Module] = None
                     ) -> Tuple[Tensor, Optional[Tensor]]:
    """Every member on one batch: the offline path of an ensemble.

    Parameters
    ----------
    models : sequence of torch.nn.Module
        ``model(mesh, x)`` -> ``(B, n_faces, n_vars)`` or ``FluxPrediction(mean, log_var)``.
    mesh : Mesh
    x : Tensor, shape (B, n_cells, F) or (n_cells, F)
        Normalised inputs (as the dataset's batches hold them).
    normalizer : Normalizer, optional
        Given: means and variances come back in physical units; else in the
        models' normalised units. Call under ``torch.no_grad()`` for evaluation.

    Returns
    -------
    means : Tensor, shape (M, B, n_faces, n_vars) (or (M, n_faces, n_vars))
    variances : Tensor of the same shape, or None for deterministic members
    """
    if len(models) < 1:
        raise ArgumentError("models", len(models), "must hold at least one model",
                            "pass the ensemble's members")
    means, log_vars = [], []
    for model in models:
        mean, log_var = _member_output(model(mesh, x))
        if normalizer is not None:
            mean = normalizer.denormalize_flux(mean)
            log_var = None if log_var is None else normalizer.denormalize_log_var(log_var)
        means.append(mean)
        log_vars.append(log_var)
    return _stack(means, log_vars, "models")


class EnsembleClosure(torch.nn.Module, Closure):
    """An ensemble of closures as one closure (module docstring).

    Parameters
    ----------
    members : sequence of ModelClosure
        Each with ``predict(t, state, mesh, transport, stage) -> (mean, log_var)``
        in physical units, ``(n_faces, n_vars)``, on the same variables.
    mode : {"mean", "sample"}
        ``"mean"``: the flux is ``μ̄``. ``"sample"``: one draw per face and
        variable per call from the ensemble's Gaussian ``N(μ̄, aleatoric +
        epistemic)`` (a stochastic parameterization; one number per face, so
        still exactly conservative).
    generator : torch.Generator, optional
        For ``mode="sample"`` (a fixed generator makes runs reproducible).
    """

    def __init__(self, members: Sequence[Closure], mode: str = "mean",
                 generator: Optional[torch.Generator] = None) -> None:
        torch.nn.Module.__init__(self)
        members = list(members)
        if not members or not all(callable(getattr(m, "predict", None)) for m in members):
            raise ArgumentError("members", f"{len(members)} closures", "must be one or more "
                                "closures with predict() (ModelClosure)",
                                "wrap each trained model in a ModelClosure")
        if mode not in ("mean", "sample"):
            raise ArgumentError("mode", mode, "must be 'mean' or 'sample'",
                                "use 'sample' for one Gaussian draw per face (stochastic)")
        variables = {tuple(m.variables) for m in members}
        if len(variables) != 1:
            raise ArgumentError("members", sorted(variables), "must close the same variables "
                                "in the same order", "build every member from one dataset")
        self.members = (torch.nn.ModuleList(members)
                        if all(isinstance(m, torch.nn.Module) for m in members) else members)
        self.variables = variables.pop()
        self.mode, self.generator = mode, generator

    def predict(self, t: float, state: Any, mesh: Any, transport: Optional[Tensor] = None,
                stage: Optional[int] = None) -> Tuple[Tensor, Optional[Tensor]]:
        """Member means ``(M, n_faces, n_vars)`` and variances (same shape, or None)."""
        means, log_vars = [], []
        for m in self.members:
            mean, log_var = m.predict(t, state, mesh, transport, stage)
            means.append(mean)
            log_vars.append(log_var)
        return _stack(means, log_vars, "members")

    def split(self, t: float, state: Any, mesh: Any, transport: Optional[Tensor] = None,
              stage: Optional[int] = None) -> VarianceSplit:
        """:func:`variance_split` of the members at this state, per face ``(n_faces, n_vars)``."""
        return variance_split(*self.predict(t, state, mesh, transport, stage))

    def flux_and_split(self, t: float, state: Any, mesh: Any,
                       transport: Optional[Tensor] = None, stage: Optional[int] = None
                       ) -> Tuple[Tensor, VarianceSplit]:
        """The flux this closure returns ``(n_faces, n_vars)`` (mean or one draw) and the split."""
        split = self.split(t, state, mesh, transport, stage)
        flux = split.mean
        if self.mode == "sample":
            eps = torch.randn(flux.shape, dtype=flux.dtype, device=flux.device,
                              generator=self.generator)
            flux = flux + torch.sqrt(split.total) * eps
        return flux, split

    def fluxes(self, t, state, mesh, transport=None, stage=None):
        flux, _ = self.flux_and_split(t, state, mesh, transport, stage)
        ref = state.get(self.variables[0]) if hasattr(state, "get") else None
        if isinstance(ref, Tensor):
            flux = flux.to(ref.dtype)
        return {v: flux[..., i] for i, v in enumerate(self.variables)}

    def forward(self, *args, **kwargs):
        return self.fluxes(*_call_args(args, kwargs))

    __call__ = torch.nn.Module.__call__


# ---------------------------------------------------------------- calibration metrics
def _tensor(name: str, x: ArrayLike, like: Optional[Tensor] = None) -> Tensor:
    t = x if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x, dtype=np.float64))
    t = t.detach()
    if like is not None:
        t = t.to(like.dtype) if t.is_floating_point() else t.to(like)
        if t.shape != like.shape:
            try:
                t = torch.broadcast_to(t, like.shape)
            except RuntimeError:
                raise ArgumentError(name, tuple(t.shape), f"must broadcast to the target's "
                                    f"shape {tuple(like.shape)}", "pass one value per target")
    if not torch.isfinite(t).all():
        raise ArgumentError(name, "<non-finite values>", "must be finite",
                            "drop or fill NaN/Inf before scoring")
    return t


def _variance(name: str, var: ArrayLike, like: Tensor, positive: bool = True) -> Tensor:
    v = _tensor(name, var, like)
    if (v <= 0).any() if positive else (v < 0).any():
        raise ArgumentError(name, float(v.min()), "must be " + ("> 0" if positive else ">= 0")
                            + " everywhere", "pass exp(log_var) of the prediction")
    return v


def interval_coverage(mean: ArrayLike, var: ArrayLike, target: ArrayLike,
                      level: float = 0.9) -> float:
    """Fraction of ``target`` inside the central interval ``μ ± z σ`` of ``N(μ, var)``.

    ``z = Φ⁻¹((1 + level)/2)`` (1.645 for 90 %, 0.674 for 50 %); pooled over
    every element. A calibrated prediction covers ``level``.

    Shapes: ``mean``, ``var`` broadcast to ``target`` (any shape).
    """
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 < level < 1:
        raise ArgumentError("level", level, "must be a probability in (0, 1)",
                            "pass e.g. 0.9 for the central 90 % interval")
    y = _tensor("target", target)
    mu = _tensor("mean", mean, y)
    v = _variance("var", var, y, positive=False)
    z = NormalDist().inv_cdf(0.5 * (1.0 + level))
    return float(((y - mu).abs() <= z * torch.sqrt(v)).double().mean())


def crps_gaussian(mean: ArrayLike, std: ArrayLike, target: ArrayLike) -> Tensor:
    """Closed-form CRPS of ``N(mean, std²)`` at ``target``, elementwise (module docstring).

    ``std = 0`` gives ``|target − mean|`` (a deterministic forecast). Units of
    ``target``; average the result for a score.

    Shapes: ``mean``, ``std`` broadcast to ``target``; returns ``target``'s shape.
    """
    y = _tensor("target", target)
    y = y if y.is_floating_point() else y.double()
    mu = _tensor("mean", mean, y)
    s = _variance("std", std, y, positive=False)
    safe = torch.where(s > 0, s, torch.ones_like(s))
    z = (y - mu) / safe
    cdf = 0.5 * (1.0 + torch.erf(z / math.sqrt(2.0)))
    pdf = torch.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    crps = safe * (z * (2.0 * cdf - 1.0) + 2.0 * pdf - 1.0 / math.sqrt(math.pi))
    return torch.where(s > 0, crps, (y - mu).abs())


def crps_ensemble(members: ArrayLike, target: ArrayLike, fair: bool = True) -> Tensor:
    """CRPS of an ``M``-member ensemble at ``target``, elementwise (module docstring).

    Parameters
    ----------
    members : shape (M, ...)
        Ensemble members (draws), member dim first.
    target : shape (...)
    fair : bool
        The fair estimator (needs ``M >= 2``), else the empirical-distribution one.

    Returns
    -------
    Tensor, shape of ``target``. The pairwise sum is computed from the sorted
    members, ``Σ_m Σ_k |x_m − x_k| = 2 Σ_j (2j − M + 1) x_(j)`` (``j`` from 0),
    in ``O(M log M)`` per element.
    """
    y = _tensor("target", target)
    y = y if y.is_floating_point() else y.double()
    x = _tensor("members", members)
    if x.dim() != y.dim() + 1 or x.shape[1:] != y.shape:
        raise ArgumentError("members", tuple(x.shape), f"must be (M, *target.shape) = "
                            f"(M, {', '.join(map(str, y.shape))})", "stack members along dim 0")
    M = x.shape[0]
    if M < (2 if fair else 1):
        raise ArgumentError("members", f"M={M}", "the fair CRPS needs M >= 2 members",
                            "pass more members or {fair}=False")
    x = x.to(y.dtype)
    skill = (x - y).abs().mean(0)
    xs = torch.sort(x, dim=0).values
    j = torch.arange(M, dtype=y.dtype, device=y.device).reshape((M,) + (1,) * y.dim())
    pair_sum = 2.0 * ((2.0 * j - M + 1.0) * xs).sum(0)
    return skill - pair_sum / (2.0 * M * (M - 1) if fair else 2.0 * M * M)


def spread_skill_ratio(prediction: Union[Tensor, Tuple[ArrayLike, ArrayLike]],
                       target: ArrayLike, correct: bool = True) -> float:
    """WeatherBench 2's spread–skill ratio, pooled over every element (module docstring).

    Parameters
    ----------
    prediction : Tensor of shape (M, ...) (ensemble members), or a tuple (mean, var)
        Members: spread² is their unbiased variance (divisor ``M − 1``), skill²
        the squared error of their mean, and the ratio ``√(Σ spread² / Σ skill²)``
        is multiplied by ``√((M + 1)/M)`` when ``correct``. A Gaussian
        ``(mean, var)``: ``√(Σ var / Σ (y − μ)²)``.
    target : shape (...)

    Returns
    -------
    float
        About 1 for a calibrated prediction; < 1 over-confident, > 1 under-confident.
    """
    y = _tensor("target", target)
    y = y if y.is_floating_point() else y.double()
    if isinstance(prediction, tuple):
        if len(prediction) != 2:
            raise ArgumentError("prediction", f"tuple of {len(prediction)}", "must be members "
                                "(M, ...) or a tuple (mean, var)", "pass (mean, var)")
        mu = _tensor("mean", prediction[0], y)
        spread2 = _variance("var", prediction[1], y, positive=False)
        factor = 1.0
    else:
        x = _tensor("prediction", prediction).to(y.dtype)
        if x.dim() != y.dim() + 1 or x.shape[1:] != y.shape or x.shape[0] < 2:
            raise ArgumentError("prediction", tuple(x.shape), "must be members (M >= 2, "
                                "*target.shape) or a tuple (mean, var)",
                                "stack at least 2 members along dim 0")
        M = x.shape[0]
        mu, spread2 = x.mean(0), x.var(0, unbiased=True)
        factor = math.sqrt((M + 1) / M) if correct else 1.0
    skill2 = float(((y - mu) ** 2).sum())
    if skill2 == 0:
        raise ArgumentError("target", "<equal to the mean everywhere>", "must differ from the "
                            "predicted mean somewhere (the skill is 0)", "score more samples")
    return factor * math.sqrt(float(spread2.sum()) / skill2)


def fit_variance_scale(mean: ArrayLike, var: ArrayLike, target: ArrayLike) -> float:
    """The factor ``s = mean((y − μ)² / var)`` that calibrates ``s·var`` (validation split).

    It maximises the Gaussian likelihood ``Π N(y; μ, s·var)`` over ``s``. Fit
    it on the validation split, apply it to the test split.

    Shapes: ``mean``, ``var`` broadcast to ``target`` (any shape); ``var > 0``.
    """
    y = _tensor("target", target)
    y = y if y.is_floating_point() else y.double()
    mu = _tensor("mean", mean, y)
    v = _variance("var", var, y)
    return float(((y - mu) ** 2 / v).mean())


def calibration_summary(means: Tensor, variances: Optional[Tensor], target: ArrayLike,
                        variance_scale: float = 1.0) -> dict:
    """Calibration of an ensemble's Gaussian predictive distribution on one split.

    The prediction is ``N(μ̄, s·total)`` (:func:`variance_split`; ``s`` =
    ``variance_scale``, fitted on the validation split with
    :func:`fit_variance_scale` of ``(μ̄, total)``), pooled over every element.

    Parameters
    ----------
    means : Tensor, shape (M, ...)
        Member means (e.g. :func:`ensemble_predict`'s ``(M, B, n_faces, n_vars)``).
    variances : Tensor, shape (M, ...), or None
    target : shape (...)
        The true face fluxes, in the same units.
    variance_scale : float

    Returns
    -------
    dict of float
        ``coverage_50``, ``coverage_90``, ``crps`` (closed-form Gaussian, mean),
        ``crps_members`` (fair CRPS of the member means alone; ``nan`` for
        ``M = 1``), ``spread_skill`` (of the Gaussian), ``spread_skill_members``
        (of the member means, corrected; ``nan`` for ``M = 1``), ``rmse`` (of
        ``μ̄``), ``sigma_aleatoric`` / ``sigma_epistemic`` (√ of the mean
        variances, unscaled), ``variance_scale``.
    """
    if not (isinstance(variance_scale, (int, float)) and math.isfinite(variance_scale)
            and variance_scale > 0):
        raise ArgumentError("variance_scale", variance_scale, "must be a finite number > 0",
                            "fit it with fit_variance_scale on the validation split")
    split = variance_split(means.detach(), None if variances is None else variances.detach())
    y = _tensor("target", target, split.mean)
    var = variance_scale * split.total
    M = means.shape[0]
    nan = float("nan")
    return {
        "coverage_50": interval_coverage(split.mean, var, y, 0.5),
        "coverage_90": interval_coverage(split.mean, var, y, 0.9),
        "crps": float(crps_gaussian(split.mean, var.sqrt(), y).mean()),
        "crps_members": float(crps_ensemble(means.detach(), y).mean()) if M > 1 else nan,
        "spread_skill": spread_skill_ratio((split.mean, var), y),
        "spread_skill_members": spread_skill_ratio(means.detach(), y) if M > 1 else nan,
        "rmse": float(((split.mean - y) ** 2).mean().sqrt()),
        "sigma_aleatoric": float(split.aleatoric.mean().sqrt()),
        "sigma_epistemic": float(split.epistemic.mean().sqrt()),
        "variance_scale": float(variance_scale),
    }


def bootstrap_indices(n: int, M: int, seed: int = 0) -> List[np.ndarray]:
    """``M`` bootstrap resamples of ``range(n)``: ``n`` indices each, drawn with replacement.

    Member ``m`` draws from ``np.random.default_rng(SeedSequence(seed).spawn(M)[m])``,
    so the resamples are independent, reproducible, and member ``m``'s does not
    depend on ``M``. About ``1 − 1/e ≈ 63 %`` of the samples appear in each.

    Examples
    --------
    >>> [ix.tolist() for ix in bootstrap_indices(5, 2, seed=1)] == \\
    ...     [ix.tolist() for ix in bootstrap_indices(5, 2, seed=1)]
    True
    >>> bootstrap_indices(0, 2)
    Traceback (most recent call last):
    ...
    meshclosure.errors.ArgumentError: n=0: must be an integer >= 1 (the number of training samples); pass the training split's length.
    """
    for name, value, what in (("n", n, "the number of training samples"),
                              ("M", M, "the ensemble size")):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ArgumentError(name, value, f"must be an integer >= 1 ({what})",
                                "pass the training split's length" if name == "n"
                                else "pass e.g. 5 members")
    children = np.random.SeedSequence(int(seed)).spawn(int(M))
    return [np.random.default_rng(c).integers(0, n, size=n, dtype=np.int64) for c in children]
