"""Fall back to physics where the network does not know: a per-face blend on epistemic spread.

Per face ``f`` and variable ``v``, with ``σ_e`` the epistemic standard
deviation of an ensemble (√ of the variance of its member means,
:mod:`meshclosure.train.uncertainty`)::

    w_f = clip((σ_e,f − t₁) / (t₂ − t₁), 0, 1)
    Φ_f = (1 − w_f) Φ^learned_f + w_f Φ^baseline_f

the learned flux where ``σ_e ≤ t₁`` (exactly: those faces take the learned
value itself), the calibrated baseline's where ``σ_e ≥ t₂`` (exactly), linear
in between. The blend is one number per face, so the closure conserves
``Σ V Q`` exactly whatever ``w``; with an antisymmetric learned flux and a
down-gradient baseline it stays antisymmetric.

:func:`choose_thresholds` picks ``t₁ < t₂`` on the validation split by a grid
search: the candidates are the ``σ_e`` quantiles at ``quantiles`` (default
0, 0.05, ..., 1) plus the pair ``(max σ_e, 2 max σ_e)`` (never fall back on
anything seen in validation), and the pair that minimises the validation
MSE of the blended flux, ``mean(((1 − w) e_learned + w e_baseline)²)`` with
``e = Φ̂ − Φ^sgs``, wins (ties: the larger ``t₁``, i.e. the least fallback).
Where the two closures' errors are strongly correlated (both miss the same
unpredictable part of the flux) the best blend is close to a switch at the
``σ_e`` where the learned error overtakes the baseline's; where they are
independent it is a wide ramp, since a blend then also averages the two
errors. Either way the chosen pair is the best of the grid on validation.

Examples
--------
>>> import torch
>>> sigma = torch.tensor([0.0, 1.0, 1.5, 2.0, 3.0])
>>> fallback_weight(sigma, 1.0, 2.0).tolist()
[0.0, 0.0, 0.5, 1.0, 1.0]
>>> blend_fluxes(torch.ones(5), torch.zeros(5), sigma, 1.0, 2.0).tolist()
[1.0, 1.0, 0.5, 0.0, 0.0]
>>> fallback_weight(sigma, 2.0, 1.0)
Traceback (most recent call last):
...
meshclosure.errors.ArgumentError: t2=1.0: must be finite and > t1 = 2.0 (w rises from 0 at t1 to 1 at t2); choose thresholds with choose_thresholds() on the validation split.
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from ..closures import Closure, as_closure
from ..errors import ArgumentError, MeshclosureError
from .uncertainty import EnsembleClosure, _call_args

__all__ = ["fallback_weight", "blend_fluxes", "FallbackClosure", "ThresholdChoice",
           "choose_thresholds", "NonFiniteSpreadError"]

Threshold = Union[float, Sequence[float], Mapping[str, float]]


class NonFiniteSpreadError(MeshclosureError, FloatingPointError):
    """The ensemble's epistemic spread is NaN or Inf at some face (no blend weight exists)."""


def _check_pair(t1: Any, t2: Any) -> Tuple[float, float]:
    for name, value in (("t1", t1), ("t2", t2)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ArgumentError(name, value, "must be a number (an epistemic standard "
                                "deviation, in flux units)", "use choose_thresholds()")
    t1, t2 = float(t1), float(t2)
    if not (math.isfinite(t1) and t1 >= 0):
        raise ArgumentError("t1", t1, "must be finite and >= 0", "choose thresholds with "
                            "choose_thresholds() on the validation split")
    if not (math.isfinite(t2) and t2 > t1):
        raise ArgumentError("t2", t2, f"must be finite and > t1 = {t1} (w rises from 0 at t1 "
                            "to 1 at t2)", "choose thresholds with choose_thresholds() on the "
                            "validation split")
    return t1, t2


def fallback_weight(sigma_e: Tensor, t1: float, t2: float) -> Tensor:
    """``w = clip((σ_e − t₁)/(t₂ − t₁), 0, 1)``, elementwise: 0 learned, 1 baseline."""
    t1, t2 = _check_pair(t1, t2)
    return torch.clamp((sigma_e - t1) / (t2 - t1), 0.0, 1.0)


def blend_fluxes(learned: Tensor, baseline: Tensor, sigma_e: Tensor, t1: float,
                 t2: float) -> Tensor:
    """``(1 − w) Φ^learned + w Φ^baseline``, taking either flux itself where ``w`` is 0 or 1.

    Shapes: ``learned``, ``baseline``, ``sigma_e`` broadcast together, e.g. ``(n_faces,)``.
    """
    w = fallback_weight(sigma_e, t1, t2).to(learned.dtype)
    mixed = (1.0 - w) * learned + w * baseline
    return torch.where(w <= 0, learned, torch.where(w >= 1, baseline, mixed))


def _per_variable(name: str, value: Threshold, variables: Sequence[str]) -> Dict[str, float]:
    if isinstance(value, Mapping):
        missing = [v for v in variables if v not in value]
        if missing:
            raise ArgumentError(name, dict(value), f"must give a threshold for every variable "
                                f"{tuple(variables)} (missing {missing})",
                                "pass one number for all or a dict per variable")
        return {v: value[v] for v in variables}
    if isinstance(value, (list, tuple)):
        if len(value) != len(variables):
            raise ArgumentError(name, value, f"must give one threshold per variable "
                                f"{tuple(variables)}", "pass one number for all or one each")
        return dict(zip(variables, value))
    return {v: value for v in variables}


class FallbackClosure(torch.nn.Module, Closure):
    """The learned flux, blended per face into a baseline's as ``σ_e`` rises (module docstring).

    Parameters
    ----------
    learned : Closure
        The learned closure; an :class:`EnsembleClosure` also gives ``σ_e`` (one
        ensemble call serves both, in its own mode: mean or sampled).
    baseline : Closure
        The calibrated physics closure (e.g. a fitted
        :class:`~meshclosure.train.DiffusivityClosure`); a variable it does not
        close falls back to no closure (zero flux).
    t1, t2 : float, or one per variable (sequence or dict)
        Thresholds on ``σ_e`` in each variable's flux units, ``0 <= t1 < t2``.
    ensemble : EnsembleClosure, optional
        Where ``σ_e`` comes from when ``learned`` is not an ensemble.
    """

    def __init__(self, learned: Closure, baseline: Closure, t1: Threshold, t2: Threshold,
                 ensemble: Optional[EnsembleClosure] = None) -> None:
        torch.nn.Module.__init__(self)
        if ensemble is None and not isinstance(learned, EnsembleClosure):
            raise ArgumentError("ensemble", None, "must be an EnsembleClosure when learned is "
                                "not one (sigma_e comes from an ensemble)",
                                "pass {ensemble}=EnsembleClosure(members) or an ensemble as "
                                "learned")
        self.learned, self.baseline = as_closure(learned), as_closure(baseline)
        # a closure whose fluxes() takes the stepper stage (ModelClosure: a recurrent
        # model's memory advances at stage 0) is told it
        self._learned_stage = "stage" in inspect.signature(self.learned.fluxes).parameters
        self.ensemble = ensemble
        source = ensemble if ensemble is not None else learned
        self.variables = tuple(source.variables)
        t1s, t2s = _per_variable("t1", t1, self.variables), _per_variable("t2", t2, self.variables)
        self.t1, self.t2 = {}, {}
        for v in self.variables:
            self.t1[v], self.t2[v] = _check_pair(t1s[v], t2s[v])

    def parts(self, t: float, state: Any, mesh: Any, transport: Optional[Tensor] = None,
              stage: Optional[int] = None) -> Tuple[Dict[str, Tensor], Dict[str, Tensor],
                                                    Dict[str, Tensor]]:
        """``(learned, baseline, σ_e)`` per variable, each ``{var: (n_faces,)}``."""
        if self.ensemble is None:
            flux, split = self.learned.flux_and_split(t, state, mesh, transport, stage)
            learned = {v: flux[..., i] for i, v in enumerate(self.variables)}
        else:
            extra = {"stage": stage} if self._learned_stage else {}
            learned = self.learned.fluxes(t, state, mesh, transport, **extra)
            split = self.ensemble.split(t, state, mesh, transport, stage)
        sigma = torch.sqrt(split.epistemic)
        if not torch.isfinite(sigma).all():
            bad = torch.nonzero(~torch.isfinite(sigma))[:5, 0].tolist()
            raise NonFiniteSpreadError(f"the epistemic spread is not finite at faces {bad}: "
                                       "the ensemble's members produced NaN/Inf there; check "
                                       "the state (a blown-up run) or the members")
        sigma_e = {v: sigma[..., i] for i, v in enumerate(self.variables)}
        baseline = dict(self.baseline.fluxes(t, state, mesh, transport))
        extra = sorted(set(baseline) - set(self.variables))
        if extra:
            raise ArgumentError("baseline", extra, f"closes variables the learned closure does "
                                f"not ({self.variables})", "pass a baseline for the same "
                                "variables, or add it outside the fallback (a + b)")
        for v in self.variables:
            if v not in baseline:
                baseline[v] = torch.zeros_like(learned[v])
        ref = state.get(self.variables[0]) if hasattr(state, "get") else None
        if isinstance(ref, Tensor):          # the state's dtype, as every closure returns
            learned = {v: f.to(ref.dtype) for v, f in learned.items()}
            sigma_e = {v: f.to(ref.dtype) for v, f in sigma_e.items()}
        return learned, baseline, sigma_e

    def weights(self, t: float, state: Any, mesh: Any, transport: Optional[Tensor] = None,
                stage: Optional[int] = None) -> Dict[str, Tensor]:
        """The blend weight ``w`` per variable ``{var: (n_faces,)}`` (0 learned, 1 baseline)."""
        _, _, sigma_e = self.parts(t, state, mesh, transport, stage)
        return {v: fallback_weight(s, self.t1[v], self.t2[v]) for v, s in sigma_e.items()}

    def fluxes(self, t, state, mesh, transport=None, stage=None) -> Dict[str, Tensor]:
        learned, baseline, sigma_e = self.parts(t, state, mesh, transport, stage)
        out = {}
        for v in self.variables:
            b = baseline[v].to(learned[v].dtype)
            out[v] = blend_fluxes(learned[v], b, sigma_e[v].to(learned[v].dtype),
                                  self.t1[v], self.t2[v])
        return out

    def forward(self, *args, **kwargs) -> Dict[str, Tensor]:
        return self.fluxes(*_call_args(args, kwargs))

    __call__ = torch.nn.Module.__call__


@dataclass
class ThresholdChoice:
    """Thresholds chosen on the validation split, and the validation MSEs behind the choice.

    ``q1``/``q2`` are the ``σ_e`` quantiles of ``t1``/``t2`` (``nan`` for the
    never-fall-back pair); ``fraction_learned``/``fraction_baseline`` the share
    of validation faces with ``w = 0`` / ``w = 1``.
    """

    t1: float
    t2: float
    q1: float
    q2: float
    mse_blend: float
    mse_learned: float
    mse_baseline: float
    fraction_learned: float
    fraction_baseline: float


def _flat(name: str, x: Any, n: Optional[int] = None) -> np.ndarray:
    a = (x.detach().cpu().double().numpy() if isinstance(x, Tensor)
         else np.asarray(x, dtype=np.float64)).reshape(-1)
    if n is not None and a.size != n:
        raise ArgumentError(name, a.size, f"must hold one value per validation face like "
                            f"sigma_e_val ({n})", "flatten the same faces and samples alike")
    if not np.isfinite(a).all():
        raise ArgumentError(name, "<non-finite values>", "must be finite",
                            "drop NaN/Inf samples first")
    return a


def choose_thresholds(sigma_e_val: Any, err_learned_val: Any, err_baseline_val: Any,
                      quantiles: Optional[Sequence[float]] = None) -> ThresholdChoice:
    """``t1 < t2`` minimising the validation MSE of the blend, for one variable (module docstring).

    Parameters
    ----------
    sigma_e_val : array or Tensor, any shape (flattened)
        The ensemble's epistemic standard deviation at each validation face.
    err_learned_val, err_baseline_val : same size
        Signed errors ``Φ̂ − Φ^sgs`` of the learned and the baseline flux there.
    quantiles : sequence of float in [0, 1], optional
        The candidate quantiles (default ``0, 0.05, ..., 1``).

    Returns
    -------
    ThresholdChoice
    """
    s = _flat("sigma_e_val", sigma_e_val)
    el = _flat("err_learned_val", err_learned_val, s.size)
    eb = _flat("err_baseline_val", err_baseline_val, s.size)
    if s.size == 0 or (s < 0).any():
        raise ArgumentError("sigma_e_val", float(s.min()) if s.size else "<empty>",
                            "must be >= 0 at one or more faces", "pass sqrt(epistemic variance)")
    smax = float(s.max())
    if smax <= 0:
        raise ArgumentError("sigma_e_val", 0.0, "must be > 0 somewhere (the members agree "
                            "everywhere: no spread to act on)", "train members from different "
                            "seeds or bootstrap resamples")
    qs = np.linspace(0.0, 1.0, 21) if quantiles is None else np.asarray(quantiles, float)
    if qs.ndim != 1 or qs.size < 2 or (qs < 0).any() or (qs > 1).any():
        raise ArgumentError("quantiles", np.asarray(quantiles).tolist(), "must be >= 2 values "
                            "in [0, 1]", "pass e.g. numpy.linspace(0, 1, 21)")
    qs = np.unique(qs)
    values = np.quantile(s, qs)
    pairs = [(float(values[i]), float(values[j]), float(qs[i]), float(qs[j]))
             for i in range(len(qs)) for j in range(i + 1, len(qs)) if values[j] > values[i]]
    pairs.append((smax, 2.0 * smax, math.nan, math.nan))
    best = None
    for t1, t2, q1, q2 in pairs:
        w = np.clip((s - t1) / (t2 - t1), 0.0, 1.0)
        mse = float(np.mean(((1.0 - w) * el + w * eb) ** 2))
        key = (mse, -t1)
        if best is None or key < best[0]:
            best = (key, t1, t2, q1, q2, w)
    (mse, _), t1, t2, q1, q2, w = best
    return ThresholdChoice(t1, t2, q1, q2, mse, float(np.mean(el ** 2)), float(np.mean(eb ** 2)),
                           float(np.mean(w <= 0)), float(np.mean(w >= 1)))
