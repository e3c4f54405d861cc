"""Offline (a priori) skill of a closure on a dataset split: flux, tendency, bands, calibration.

For each variable ``v`` closed by the dataset, on the samples ``s`` of one
split (:func:`~meshclosure.train.diffusivity.load_table`; physical units,
float64):

* **flux**: the predicted face flux ``Φ̂`` against the stored subgrid flux
  ``Φ^sgs`` (both ``(S, n_faces)``), :func:`~meshclosure.validate.metrics.skill`
  with face weights ``A_f d_f`` (face area × centre distance: the volume a
  face stands for);
* **tendency**: ``−div Φ̂`` against ``−div Φ^sgs``
  (:func:`meshclosure.fv.divergence`), weights the cell volumes: per-cell
  ``R²`` and correlation over time, volume-averaged (Ross et al. 2023's
  ``spatial_skill``), pooled values and RMSE;
* **bands**: the same per scale band of the tendency
  (:func:`~meshclosure.validate.spectra.band_filter`; default edges
  :func:`~meshclosure.validate.spectra.default_band_edges`: ``k ≤ k_c/4``,
  ``k ≤ k_c/2``, the rest), and each band's share of the target's mean square;
* **calibration** (probabilistic closures only, on the face fluxes, pooled):
  interval coverage of the central 50 % and 90 % Gaussian intervals, CRPS and
  the spread–skill ratio (:mod:`meshclosure.train.uncertainty`). An
  :class:`~meshclosure.train.uncertainty.EnsembleClosure` is scored as the
  Gaussian ``N(μ̄, aleatoric + epistemic)`` for coverage, and by its members
  for CRPS (the fair estimator) and spread–skill (corrected for ``M``; the
  Gaussian's values are under ``crps_gaussian`` / ``spread_skill_gaussian``);
  a heteroscedastic model by its ``N(μ, σ²)`` (closed-form CRPS).

**Targets** (``target=``): the instantaneous ``Φ^sgs`` of each sample (default), the
step mean ``Φ̄^sgs`` over the coarse step that starts there (``"step_mean"``;
``sgs_flux_mean_<v>`` of a trajectory dataset, what the coarse model needs over
one step and what the demo trains on), or ``"both"``: the instantaneous keys
as they are plus every key again against the step mean, prefixed
``"step_mean."`` (``"step_mean.r2"``, ``"step_mean.q.tendency.r2"``, ...), from
one prediction.

Closures: ``None`` (no closure: flux 0), a
:class:`~meshclosure.closures.ModelClosure` (its mean; feed-forward models run
in batches on the dataset's stored inputs, so the OOD split sees the OOD
scenario's inputs), an ``EnsembleClosure``, or any closure
``(t, state, mesh[, transport]) -> {var: flux}`` (baselines). A variable the
closure does not close is scored as no closure (flux 0), as the coarse model
would run it. A cell-tendency closure (:class:`~meshclosure.closures.TendencyClosure`
of ``nodewise`` / ``nodewise_mean_free``, or anything with
``tendencies(t, state, mesh[, transport]) -> {var: (n_cells,)}``) is scored on
its tendency (and its bands) against the same ``−div Φ^sgs``; it has no face
flux, so its flux keys are left out and named under ``"skipped"`` (a
``TendencyClosure`` runs in batches on the stored inputs like a flux model).

Keys of the result (flat, floats): ``"{v}.flux.{m}"`` and ``"{v}.tendency.{m}"``
for ``m`` in ``r2, corr, r2_pooled, corr_pooled, rmse, n_left_out``;
``"{v}.tendency.band{b}.{r2, corr, r2_pooled, rmse, fraction, k_min}"`` (``rmse``
also where the band's target is constant and its R² is skipped);
``"{v}.coverage50"``, ``"{v}.coverage90"``, ``"{v}.crps"``, ``"{v}.spread_skill"``
(probabilistic closures); the headline ``"r2"`` and ``"corr"`` (mean over
variables of the tendency's per-cell, volume-averaged values) and
``"n_samples"``. Measures that are undefined (e.g. a band in which the target
does not vary) are left out and named, with the reason, under ``"skipped"``
(a ``{key: reason}`` dict, present only when something was skipped).
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from ..errors import ArgumentError
from ..fv import divergence
from ..train.diffusivity import batched_outputs
from ._online_runs import is_tendency
from .metrics import skill, weighted_rmse
from .spectra import band_filter, default_band_edges, spectral_kind

__all__ = ["offline_metrics", "offline_table", "Prediction", "predict_table",
           "predict_tendencies", "TARGETS"]

#: ``target=`` of :func:`offline_metrics`.
TARGETS = ("instantaneous", "step_mean", "both")


class Prediction(NamedTuple):
    """A closure's prediction of one variable's face flux on a split.

    Attributes
    ----------
    mean : Tensor, shape (S, n_faces)
        The flux the closure returns (its mean), physical units, float64.
    var : Tensor, shape (S, n_faces), or None
        Predictive variance (Gaussian; an ensemble's aleatoric + epistemic).
    members : Tensor, shape (M, S, n_faces), or None
        An ensemble's member means.
    """

    mean: Tensor
    var: Optional[Tensor]
    members: Optional[Tensor]


def _is_ensemble(closure: Any) -> bool:
    from ..train.uncertainty import EnsembleClosure

    return isinstance(closure, EnsembleClosure)


def _model_outputs(closure: Any, table: Any, batch_size: int
                   ) -> Tuple[Tensor, Optional[Tensor]]:
    """``(mean, log_var)`` ``(S, n_faces, V)`` of a closure with ``predict()``."""
    batched = batched_outputs(closure, table, batch_size)
    if batched is not None:
        return batched
    if callable(getattr(closure, "reset", None)):
        closure.reset()
    means, log_vars = [], []
    with torch.no_grad():
        for i in range(len(table)):
            mean, log_var = closure.predict(float(table.t[i]), table.sample(i), table.mesh,
                                            table.transport[i])
            means.append(mean.double())
            log_vars.append(None if log_var is None else log_var.double())
    lv = None if any(v is None for v in log_vars) else torch.stack(log_vars)
    return torch.stack(means), lv


def _generic_fluxes(closure: Any, table: Any) -> Dict[str, Tensor]:
    """``{var: (S, n_faces)}`` of any closure, one call per sample."""
    from ..closures import Closure, as_closure

    call = _call_with_transport(closure.fluxes if isinstance(closure, Closure)
                                else as_closure(closure).fn)
    out: Dict[str, List[Tensor]] = {}
    with torch.no_grad():
        for i in range(len(table)):
            t, state, U = float(table.t[i]), table.sample(i), table.transport[i]
            phi = call(t, state, table.mesh, U)
            for v, f in phi.items():
                out.setdefault(v, []).append(torch.as_tensor(f).detach().double().reshape(-1))
    return {v: torch.stack(f) for v, f in out.items() if len(f) == len(table)}


def predict_table(closure: Any, table: Any, batch_size: int = 16) -> Dict[str, Prediction]:
    """Every variable's :class:`Prediction` of ``closure`` on a SampleTable (zeros where the
    closure does not close the variable; ``closure=None``: no closure)."""
    S, nf = len(table), table.mesh.n_faces
    zero = Prediction(torch.zeros(S, nf, dtype=torch.float64), None, None)
    if closure is None:
        return {v: zero for v in table.variables}
    if _is_ensemble(closure):
        outs = [_model_outputs(m, table, batch_size) for m in closure.members]
        means = torch.stack([o[0] for o in outs])                       # (M, S, nf, V)
        hetero = [o[1] is not None for o in outs]
        if any(hetero) and not all(hetero):
            raise ArgumentError("closure", f"ensemble with {sum(hetero)} of {len(hetero)} "
                                "heteroscedastic members", "must have all or none "
                                "heteroscedastic", "build every member the same way")
        mu = means.mean(0)
        var = ((means - mu) ** 2).mean(0)
        if all(hetero):
            var = var + torch.exp(torch.stack([o[1] for o in outs])).mean(0)
        cols = list(closure.variables)
        return {v: (Prediction(mu[..., cols.index(v)], var[..., cols.index(v)],
                               means[..., cols.index(v)]) if v in cols else zero)
                for v in table.variables}
    if callable(getattr(closure, "predict", None)) and hasattr(closure, "variables"):
        mean, log_var = _model_outputs(closure, table, batch_size)
        cols = list(closure.variables)
        return {v: (Prediction(mean[..., cols.index(v)],
                               None if log_var is None else torch.exp(log_var[..., cols.index(v)]),
                               None) if v in cols else zero) for v in table.variables}
    fluxes = _generic_fluxes(closure, table)
    return {v: Prediction(fluxes[v], None, None) if v in fluxes else zero
            for v in table.variables}


def _is_tendency_closure(closure: Any) -> bool:
    """Whether ``closure`` predicts cell tendencies, not face fluxes
    (:func:`~meshclosure.validate._online_runs.is_tendency`)."""
    return closure is not None and is_tendency(closure)


def predict_tendencies(closure: Any, table: Any, batch_size: int = 16) -> Dict[str, Tensor]:
    """Every variable's cell tendency ``(S, n_cells)`` [var/time], float64, predicted by a
    cell-tendency closure on a SampleTable (zeros where it does not close the variable).

    A :class:`~meshclosure.closures.TendencyClosure` whose features are the dataset's
    inputs runs in batches of ``batch_size`` on the stored inputs; anything else with
    ``tendencies(t, state, mesh[, transport])`` is called once per sample.
    """
    from ..closures import TendencyClosure

    S, nc = len(table), table.mesh.n_cells
    if isinstance(closure, TendencyClosure):
        batched = batched_outputs(closure.inner, table, batch_size)
        if batched is not None:
            cols = list(closure.variables)
            return {v: (batched[0][..., cols.index(v)] if v in cols
                        else torch.zeros(S, nc, dtype=torch.float64)) for v in table.variables}
    out: Dict[str, List[Tensor]] = {}
    call = _call_with_transport(closure.tendencies)
    with torch.no_grad():
        for i in range(S):
            t, state, U = float(table.t[i]), table.sample(i), table.transport[i]
            s = call(t, state, table.mesh, U)
            for v, f in s.items():
                out.setdefault(v, []).append(torch.as_tensor(f).detach().double().reshape(-1))
    return {v: (torch.stack(out[v]) if v in out and len(out[v]) == S
                else torch.zeros(S, nc, dtype=torch.float64)) for v in table.variables}


def _tendency(mesh: Any, flux: Tensor) -> Tensor:
    """``−div Φ`` ``(S, n_cells)`` of face fluxes ``(S, n_faces)``."""
    return -divergence(mesh, flux.T.contiguous()).T


def _put_skill(out: Dict[str, Any], prefix: str, s: Any) -> None:
    for name in ("r2", "corr", "r2_pooled", "corr_pooled", "rmse"):
        out[f"{prefix}.{name}"] = float(getattr(s, name))
    out[f"{prefix}.n_left_out"] = float(s.n_left_out)


def _calibration(out: Dict[str, Any], v: str, pred: Prediction, target: Tensor) -> None:
    from ..train.uncertainty import (crps_ensemble, crps_gaussian, interval_coverage,
                                     spread_skill_ratio)

    if pred.var is None:
        return
    var = pred.var.clamp_min(0.0)
    out[f"{v}.coverage50"] = interval_coverage(pred.mean, var, target, 0.5)
    out[f"{v}.coverage90"] = interval_coverage(pred.mean, var, target, 0.9)
    gauss_crps = float(crps_gaussian(pred.mean, var.sqrt(), target).mean())
    gauss_ssr = spread_skill_ratio((pred.mean, var), target)
    if pred.members is not None and pred.members.shape[0] >= 2:
        out[f"{v}.crps"] = float(crps_ensemble(pred.members, target, fair=True).mean())
        out[f"{v}.spread_skill"] = spread_skill_ratio(pred.members, target)
        out[f"{v}.crps_gaussian"] = gauss_crps
        out[f"{v}.spread_skill_gaussian"] = gauss_ssr
    else:
        out[f"{v}.crps"] = gauss_crps
        out[f"{v}.spread_skill"] = gauss_ssr


def _rmse(pred: Any, target: Any, w: Any) -> float:
    """``sqrt(Σ_i w_i mean_t (p − y)² / Σ_i w_i)`` of ``(S, n)`` arrays (the RMSE of
    :func:`~meshclosure.validate.metrics.skill`)."""
    p, y = np.asarray(pred, dtype=np.float64), np.asarray(target, dtype=np.float64)
    w = np.broadcast_to(np.asarray(w, dtype=np.float64), p.shape)
    return float(weighted_rmse(p.reshape(-1), y.reshape(-1), w.reshape(-1)))


def _call_with_transport(fn: Any) -> Any:
    """``(t, state, mesh, U) -> fn(...)``: passes the face transport ``U`` where ``fn``'s
    signature takes one (a parameter ``transport``, ``**kwargs``, or a fourth positional
    parameter), else calls ``fn(t, state, mesh)``. Decided from the signature once: no
    call is retried on a TypeError, which would hide one raised inside the closure.

    >>> _call_with_transport(lambda t, s, m: "plain")(0, {}, None, 1)
    'plain'
    >>> _call_with_transport(lambda t, s, m, transport=None: transport)(0, {}, None, 1)
    1
    """
    import inspect

    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):          # no signature to read (a builtin): call plainly
        params = []
    if any(p.kind is p.VAR_KEYWORD or p.name == "transport" for p in params):
        return lambda t, state, mesh, U: fn(t, state, mesh, transport=U)
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if any(p.kind is p.VAR_POSITIONAL for p in params) or len(positional) >= 4:
        return lambda t, state, mesh, U: fn(t, state, mesh, U)
    return lambda t, state, mesh, U: fn(t, state, mesh)


def _bands(out: Dict[str, Any], skipped: Dict[str, str], mesh: Any, v: str,
           pred: Tensor, target: Tensor, edges: Sequence[float], V: Tensor) -> None:
    pb = band_filter(mesh, pred, edges)
    tb = band_filter(mesh, target, edges)
    w = V.numpy()
    total = float((tb.sum(0) ** 2 * w).sum())
    lo = (0.0,) + tuple(float(e) for e in edges)
    for b in range(tb.shape[0]):
        key = f"{v}.tendency.band{b}"
        out[f"{key}.k_min"] = lo[b]
        out[f"{key}.fraction"] = float((tb[b] ** 2 * w).sum()) / total if total > 0 else 0.0
        # defined even where the band's target is constant in time (its R² is not)
        out[f"{key}.rmse"] = _rmse(pb[b], tb[b], w)
        try:
            s = skill(pb[b], tb[b], weights=w)
        except ArgumentError as err:
            skipped[f"{key}.r2"] = f"undefined: {err.rule}"
            continue
        out[f"{key}.r2"], out[f"{key}.corr"] = s.r2, s.corr
        out[f"{key}.r2_pooled"] = s.r2_pooled


def _step_mean_flux(table: Any, target: str) -> Dict[str, Tensor]:
    """``table.flux_mean``, or the ArgumentError that says the dataset has none."""
    if table.flux_mean is None:
        raise ArgumentError("target", target, "needs the step-mean subgrid flux "
                            "(sgs_flux_mean_<var>), which only trajectory datasets hold; "
                            "this dataset has none",
                            "generate the data with trajectory=True, or pass "
                            "{target}='instantaneous'")
    return table.flux_mean


def _score(out: Dict[str, Any], skipped: Dict[str, str], table: Any, names: Sequence[str],
           targets: Mapping[str, Tensor], preds: Optional[Mapping[str, Prediction]],
           tends: Optional[Mapping[str, Tensor]], edges: Optional[Sequence[float]],
           prefix: str) -> None:
    """Every key of one target (flux ``targets``), prefixed ``prefix``; ``tends`` (cell
    tendencies) replaces ``preds`` for a tendency closure, whose flux keys are skipped."""
    mesh = table.mesh
    Wf = (mesh.face_area * mesh.cell_distance).double().cpu()
    Vc = mesh.cell_volume.double().cpu()
    for v in names:
        key, target = f"{prefix}{v}", targets[v].double()
        t_true = _tendency(mesh, target)
        if tends is None:
            pred = preds[v]
            _put_skill(out, f"{key}.flux", skill(pred.mean, target, weights=Wf))
            t_pred = _tendency(mesh, pred.mean)
        else:
            skipped[f"{key}.flux"] = ("a cell-tendency closure (nodewise) predicts no face "
                                      "flux: scored on its tendency only")
            t_pred = tends[v]
        _put_skill(out, f"{key}.tendency", skill(t_pred, t_true, weights=Vc))
        if edges is not None:
            _bands(out, skipped, mesh, key, t_pred, t_true, edges, Vc)
        if tends is None:
            _calibration(out, key, preds[v], target)
    out[f"{prefix}r2"] = float(np.mean([out[f"{prefix}{v}.tendency.r2"] for v in names]))
    out[f"{prefix}corr"] = float(np.mean([out[f"{prefix}{v}.tendency.corr"] for v in names]))


def offline_metrics(closure: Any, data: Any, split: str = "test",
                    variables: Optional[Sequence[str]] = None, bands: Any = None,
                    max_samples: Optional[int] = None, batch_size: int = 16,
                    target: str = "instantaneous") -> Dict[str, Any]:
    """Offline skill of ``closure`` on one split of a dataset (module docstring).

    Parameters
    ----------
    closure : ModelClosure, EnsembleClosure, TendencyClosure, closure, or None
        ``None`` scores no closure (flux 0). A cell-tendency closure is scored on
        its tendency only (its flux keys under ``"skipped"``).
    data : path, xarray.Dataset, SubgridDataset or SampleTable
        The dataset (:func:`~meshclosure.train.diffusivity.load_table`).
    split : {"test", "ood", "val", "train"}
    variables : sequence of str, optional
        Default: every variable of the dataset.
    bands : sequence of float, None or False
        Band edges of the tendency (wavenumbers in units of ``2π/L`` on planes,
        degrees on spheres); ``None``: :func:`~meshclosure.validate.spectra.default_band_edges`
        where the mesh has spectra (else skipped and said so); ``False``: none.
    max_samples : int, optional
        At most this many samples, evenly spread over the split.
    batch_size : int
        Samples per batch of a feed-forward model.
    target : {"instantaneous", "step_mean", "both"}
        Score against the instantaneous ``Φ^sgs`` (default), the step mean
        ``Φ̄^sgs`` of a trajectory dataset, or both (the step mean's keys
        prefixed ``"step_mean."``; the headline ``"r2"``/``"corr"`` stay the
        instantaneous ones).

    Returns
    -------
    dict
        Flat ``{key: float}`` (keys in the module docstring), plus ``"skipped"``
        when some measure was undefined or does not apply.

    Raises
    ------
    ArgumentError
        A split with fewer than 2 samples, an unknown variable, a target that
        does not vary in time anywhere, an unknown ``target``, or
        ``target="step_mean"``/``"both"`` on a dataset without the step-mean
        flux (not a trajectory dataset).

    Examples
    --------
    >>> offline_metrics(None, "missing.nc")
    Traceback (most recent call last):
    ...
    meshclosure.data.dataset.DatasetError: dataset 'missing.nc' does not exist ...
    >>> offline_metrics(None, "missing.nc", target="mean")
    Traceback (most recent call last):
    ...
    meshclosure.errors.ArgumentError: target='mean': must be one of ('instantaneous', ...); ...
    """
    from ..train.diffusivity import load_table

    if target not in TARGETS:
        raise ArgumentError("target", target, f"must be one of {TARGETS}",
                            "pass 'instantaneous' (Φ^sgs of each sample), 'step_mean' (its "
                            "mean over the coarse step) or 'both'")
    table = load_table(data, split, max_samples)
    if len(table) < 2:
        raise ArgumentError("split", split, f"must hold at least 2 samples (it holds "
                            f"{len(table)}): per-cell R² is over time",
                            "generate more samples or score another {split}")
    step_mean = _step_mean_flux(table, target) if target != "instantaneous" else None
    names = list(table.variables) if variables is None else list(variables)
    unknown = [v for v in names if v not in table.variables]
    if unknown or not names:
        raise ArgumentError("variables", variables, f"must name variables of the dataset "
                            f"{list(table.variables)}", "leave it out to score all of them")
    mesh = table.mesh
    skipped: Dict[str, str] = {}
    edges: Optional[Sequence[float]] = None
    if bands is not False:
        try:
            spectral_kind(mesh)
            edges = default_band_edges(mesh) if bands is None else bands
        except ArgumentError as err:
            if bands is not None:
                raise
            skipped["bands"] = f"{mesh.family} mesh: {err.rule}"
    preds: Optional[Dict[str, Prediction]] = None
    tends: Optional[Dict[str, Tensor]] = None
    if _is_tendency_closure(closure):
        tends = predict_tendencies(closure, table, batch_size)
        predicted = {v: tends[v] for v in names}
        what = "tendencies"
    else:
        preds = predict_table(closure, table, batch_size)
        predicted = {v: preds[v].mean for v in names}
        what = "fluxes"
    for v, p in predicted.items():
        if not torch.isfinite(p).all():
            raise ArgumentError("closure", type(closure).__name__, f"must predict finite "
                                f"{what} of {v!r} ({int((~torch.isfinite(p)).sum())} "
                                "non-finite)", "check the model and its inputs")
    out: Dict[str, Any] = {}
    if target in ("instantaneous", "both"):
        _score(out, skipped, table, names, table.flux, preds, tends, edges, "")
    if step_mean is not None:
        _score(out, skipped, table, names, step_mean, preds, tends, edges,
               "step_mean." if target == "both" else "")
    out["n_samples"] = float(len(table))
    if skipped:
        out["skipped"] = skipped
    return out


def offline_table(closures: Mapping[str, Any], data: Any, splits: Sequence[str] = ("test", "ood"),
                  target: str = "instantaneous", **kwargs: Any) -> Dict[str, Any]:
    """:func:`offline_metrics` of several closures on several splits.

    Parameters
    ----------
    closures : {name: closure}
        E.g. ``{"none": None, "power_law": ..., "learned": model.closure()}``.
    data : path, xarray.Dataset or SampleTable
    splits : sequence of str
    target : {"instantaneous", "step_mean", "both"}
        The flux scored against (:func:`offline_metrics`).
    **kwargs
        Passed to :func:`offline_metrics` (``variables``, ``bands``, ``max_samples``,
        ``batch_size``).

    Returns
    -------
    dict
        ``{split: {name: metrics}}``; a split the dataset lacks (or with fewer
        than 2 samples) is left out and named under ``"skipped": {split: reason}``.

    Examples
    --------
    >>> offline_table({}, "data.nc")
    Traceback (most recent call last):
    ...
    meshclosure.errors.ArgumentError: closures={}: must name at least one closure; ...
    """
    from ..train.diffusivity import load_table

    if not closures:
        raise ArgumentError("closures", closures, "must name at least one closure",
                            "pass e.g. {{'none': None, 'learned': closure}}")
    if target not in TARGETS:
        raise ArgumentError("target", target, f"must be one of {TARGETS}",
                            "pass 'instantaneous', 'step_mean' or 'both'")
    out: Dict[str, Any] = {}
    skipped: Dict[str, str] = {}
    for split in splits:
        table = load_table(data, split, kwargs.get("max_samples"))
        if len(table) < 2:
            skipped[split] = (f"the dataset holds {len(table)} {split!r} samples "
                              "(2 or more needed)")
            continue
        if target != "instantaneous":
            _step_mean_flux(table, target)         # before any closure runs
        out[split] = {name: offline_metrics(c, table, split, target=target, **kwargs)
                      for name, c in closures.items()}
    if skipped:
        out["skipped"] = skipped
    return out
