"""Partially coupled validation: the closure runs prognostically for the tracer while the
flow is prescribed from the coarse-grained truth (DESIGN.md §9, issue 12 item 2a).

For ``barotropic`` the coarse model is prognostic in ``ζ`` and ``q``. Here only
the tracer is evolved::

    dq/dt = rhs_q(t, q) = coarse_model.rhs(t, {"zeta": ζ_truth(t), "q": q})["q"]

with ``ζ_truth(t)`` the stored coarse-grained vorticity of a trajectory
dataset (one state at every coarse step), interpolated linearly in time
between the stored steps at the stepper's stage times (SSP-RK3 stages at
``t``, ``t + Δt``, ``t + Δt/2``: the stored states and their mean). The
coarse transport is the one the coarse model computes from ``ζ_truth`` (its
Poisson solve), and the closure sees the truth ``ζ`` too. A tracer closure
is thereby judged without the feedback through the flow, the step between
offline skill and the fully online run (Brenowitz & Bretherton 2019,
doi:10.1029/2019MS001711, for the hierarchy).

For ``kinematic`` the flow is prescribed in every coarse run, so this stage
and the online run (:mod:`meshclosure.validate.online`) coincide: the same
runs are made here and the result's ``notes`` say so. ``convection`` has no
horizontal flow on its column: use :func:`meshclosure.validate.column.single_column`.

Every table has the rows ``"none"`` (no closure: similarity 0 by definition)
and ``"replay"`` (the stored step-mean subgrid flux replayed,
:mod:`meshclosure.data.trajectory`: the upper bound).

Examples
--------
>>> prescribed_flow("missing.nc", {})
Traceback (most recent call last):
...
meshclosure.data.dataset.DatasetError: dataset 'missing.nc' does not exist or is not a file ...
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from ..errors import ArgumentError
from ..solver.steppers import ssprk3_step
from .metrics import similarity

__all__ = ["CoupledResult", "prescribed_flow", "PRESCRIBED"]

PRESCRIBED = {"barotropic": ("zeta",), "kinematic": ()}
"""Per scenario, the variables taken from the truth (the flow); the others are evolved."""

_KINEMATIC_NOTE = ("kinematic: the flow is prescribed in every coarse run, so the partially "
                   "coupled stage coincides with the online run (online_validation); the runs "
                   "here are the online runs from the same initial states")


@dataclass
class CoupledResult:
    """Result of :func:`prescribed_flow`.

    Attributes
    ----------
    metrics : dict
        ``{closure: {metric: value}}``; metrics of one variable are named
        ``"<var>.<metric>"``: ``rmse_mean`` (area-weighted RMSE against the truth,
        mean over lead times 1..L and members), ``rmse_end`` (at lead L),
        ``corr_mean`` (area-weighted pattern correlation, mean over leads and
        members), ``similarity`` (``1 − rmse_mean / rmse_mean(none)``, Ross et al.
        2023, doi:10.1029/2022MS003258); plus ``similarity`` (mean over the
        evolved variables) and ``blowup_step`` (first step with a non-finite
        state over the members, ``inf`` when none).
    series : dict
        ``{"<var>.rmse": {closure: (lead_time (L+1,), rmse (L+1,))}}``, RMS over members.
    evolved, prescribed : tuple of str
        The variables run by the closure, and those taken from the truth.
    window : dict
        ``split``, ``n_initial``, ``n_steps``, ``coarse_dt``, ``starts`` (model times).
    notes : list of str
    """

    metrics: Dict[str, Dict[str, float]]
    series: Dict[str, Dict[str, Tuple[np.ndarray, np.ndarray]]]
    evolved: Tuple[str, ...]
    prescribed: Tuple[str, ...]
    window: Dict[str, Any]
    notes: List[str] = field(default_factory=list)

    def rows(self) -> List[Dict[str, Any]]:
        """One dict per number, ``closure, metric, variable, value`` (for the CSV)."""
        return metric_rows(self.metrics)


def metric_rows(metrics: Mapping[str, Mapping[str, float]]) -> List[Dict[str, Any]]:
    """``{closure: {"var.metric" or "metric": value}}`` as rows ``closure, metric, variable,
    value`` (variable ``""`` for a metric of the whole run).

    >>> metric_rows({"none": {"q.rmse_mean": 2.0, "blowup_step": float("inf")}})
    [{'closure': 'none', 'metric': 'rmse_mean', 'variable': 'q', 'value': 2.0}, \
{'closure': 'none', 'metric': 'blowup_step', 'variable': '', 'value': inf}]
    """
    rows = []
    for name, values in metrics.items():
        for key, value in values.items():
            var, _, metric = key.rpartition(".")
            rows.append({"closure": name, "metric": metric, "variable": var,
                         "value": float(value)})
    return rows


def similarity_score(d: float, d_none: float) -> float:
    """:func:`meshclosure.validate.metrics.similarity` ``1 − d / d_none`` (Ross et al. 2023),
    NaN where it is undefined (``d_none == 0``, or a distance that is not finite
    because a run blew up): the callers say so in their notes.

    >>> similarity_score(0.5, 2.0), similarity_score(1.0, 0.0)
    (0.75, nan)
    """
    if not (np.isfinite(d) and np.isfinite(d_none)) or d_none == 0:
        return float("nan")
    return float(similarity(float(d), float(d_none)))


def weighted_rmse(a: Tensor, b: Tensor, V: Tensor) -> Tensor:
    """``sqrt(Σ V (a − b)² / Σ V)`` over the last dim: ``(..., n_cells) -> (...)``."""
    return torch.sqrt(((a - b) ** 2 * V).sum(-1) / V.sum())


def weighted_corr(a: Tensor, b: Tensor, V: Tensor) -> Tensor:
    """Area-weighted Pearson correlation over the last dim ``(..., n_cells) -> (...)``
    (NaN where either field is constant)."""
    w = V / V.sum()
    da = a - (w * a).sum(-1, keepdim=True)
    db = b - (w * b).sum(-1, keepdim=True)
    return (w * da * db).sum(-1) / torch.sqrt((w * da * da).sum(-1) * (w * db * db).sum(-1))


def select_windows(traj, n: int, argument: str = "n_initial") -> List[int]:
    """Indices of ``n`` windows of a :class:`~meshclosure.data.TrajectoryDataset` spread
    evenly over its windows (first and last included)."""
    if len(traj) < n:
        raise ArgumentError(argument, n, f"must be at most the {len(traj)} windows of "
                            f"{traj.length} steps in the {traj.split!r} split",
                            f"pass a smaller {{{argument}}} or n_steps, or a longer dataset")
    return sorted({int(i) for i in np.linspace(0, len(traj) - 1, n).round()})


def split_steps(one) -> int:
    """Coarse steps in the longest contiguous block of a split (states − 1), from its
    :class:`~meshclosure.data.TrajectoryDataset` of length 1."""
    best, last, count = 0, None, 0
    for r, k in one.windows:
        count = count + 1 if last == (r, k - 1) else 1
        best, last = max(best, count), (r, k)
    if best == 0:
        raise ArgumentError("split", one.split, "must hold at least 2 consecutive states of the "
                            "trajectory dataset", "choose another split or generate more samples")
    return best


def coarse_model_with(scenario, closure, forcing=None):
    """``scenario.coarse_model`` with ``closure``: face fluxes through the model's own
    divergence, or, for a cell-tendency closure (``tendencies(t, state, mesh)``, e.g.
    ``nodewise``), added to its right-hand side by
    :func:`~meshclosure.closures.tendency.with_tendency`."""
    if callable(getattr(closure, "tendencies", None)):
        from ..closures.tendency import with_tendency

        return with_tendency(scenario.coarse_model(forcing=forcing), closure)
    return scenario.coarse_model(closure=closure, forcing=forcing)


def _check_count(name: str, value: Any, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ArgumentError(name, value, f"must be an integer >= {low}",
                            f"pass e.g. {{{name}}}={max(low, 3)}")
    return int(value)


def prescribed_flow(data: Any, closures: Optional[Mapping[str, Any]] = None,
                    split: str = "test", n_initial: int = 3,
                    n_steps: Optional[int] = None) -> CoupledResult:
    """Run each closure for the tracer with the flow prescribed from the truth.

    Parameters
    ----------
    data : path or xarray.Dataset
        A trajectory dataset (``generate(..., trajectory=True)``) of the
        ``barotropic`` or ``kinematic`` scenario.
    closures : dict of str -> closure, optional
        ``{name: closure}`` (a :class:`~meshclosure.closures.Closure`, e.g. a
        ``ModelClosure``, or ``(t, state, mesh) -> {var: (n_faces,)}``, or a
        cell-tendency closure such as ``nodewise``'s, run through
        :func:`~meshclosure.closures.tendency.with_tendency`); the rows
        ``"none"`` and ``"replay"`` are always added.
    split : {"train", "val", "test", "ood"}
    n_initial : int
        Members: truth states of the split, spread evenly, each the start of a run.
    n_steps : int, optional
        Coarse steps per member; default half the split's block (at least 1).

    Returns
    -------
    CoupledResult
    """
    from ..data import TrajectoryDataset
    from ..data.scenarios import Scenario

    n_initial = _check_count("n_initial", n_initial)
    closures = dict(closures or {})
    for reserved in ("none", "replay"):
        if reserved in closures:
            raise ArgumentError("closures", sorted(closures), f"must not name a closure "
                                f"{reserved!r} (that row is added)", "rename it")
    probe = TrajectoryDataset(data, split, 1)
    name = probe.scenario_config.get("scenario")
    if name not in PRESCRIBED:
        raise ArgumentError("data", f"a {name!r} dataset", "must be a 'barotropic' or "
                            "'kinematic' trajectory dataset (a flow to prescribe)",
                            "for 'convection' use meshclosure.validate.column.single_column")
    if n_steps is None:
        n_steps = max(1, split_steps(probe) // 2)
    n_steps = _check_count("n_steps", n_steps)
    traj = TrajectoryDataset(data, split, n_steps)
    chosen = select_windows(traj, n_initial)
    scenario = Scenario.from_config(traj.scenario_config)
    prescribed = PRESCRIBED[name]
    evolved = tuple(v for v in scenario.variables if v not in prescribed)
    runs: Dict[str, Any] = {"none": None, "replay": "replay", **closures}
    V = scenario.coarse.cell_volume.double()
    err: Dict[str, Dict[str, list]] = {n: {v: [] for v in evolved} for n in runs}
    corr: Dict[str, Dict[str, list]] = {n: {v: [] for v in evolved} for n in runs}
    blowup = {n: float("inf") for n in runs}
    starts = []
    with torch.no_grad():
        for i in chosen:
            w = traj[i]
            starts.append(float(w["t"][0]))
            truth = {v: torch.cat([w["state"][v][None], w["states"][v]]) for v in w["state"]}
            for n, closure in runs.items():
                out, bad = _run(scenario, closure, w, truth, prescribed, evolved)
                if bad is not None:
                    blowup[n] = min(blowup[n], float(bad))
                for v in evolved:
                    err[n][v].append(weighted_rmse(out[v], truth[v], V))
                    corr[n][v].append(weighted_corr(out[v], truth[v], V))
    lead = np.arange(n_steps + 1) * traj.coarse_dt
    notes = [f"flow prescribed from the coarse-grained truth: {', '.join(prescribed)}; "
             f"evolved: {', '.join(evolved)}"] if prescribed else [_KINEMATIC_NOTE]
    metrics: Dict[str, Dict[str, float]] = {}
    series: Dict[str, Dict[str, Tuple[np.ndarray, np.ndarray]]] = {}
    for n in runs:
        m: Dict[str, float] = {}
        for v in evolved:
            e = torch.stack(err[n][v])                                   # (members, L+1)
            rms = torch.sqrt((e ** 2).nanmean(0)).numpy()
            series.setdefault(f"{v}.rmse", {})[n] = (lead, rms)
            m[f"{v}.rmse_mean"] = float(e[:, 1:].nanmean())
            m[f"{v}.rmse_end"] = float(rms[-1])
            m[f"{v}.corr_mean"] = float(torch.stack(corr[n][v])[:, 1:].nanmean())
        m["blowup_step"] = blowup[n]
        metrics[n] = m
    for n, m in metrics.items():
        scores = [similarity_score(m[f"{v}.rmse_mean"], metrics["none"][f"{v}.rmse_mean"])
                  for v in evolved]
        for v, s in zip(evolved, scores):
            m[f"{v}.similarity"] = s
        m["similarity"] = float(np.mean(scores))
        if not np.isfinite(scores).all():
            notes.append(f"{n}: similarity undefined (NaN) where no closure matches the "
                         "truth exactly or the run blew up")
    for n, b in blowup.items():
        if np.isfinite(b):
            notes.append(f"{n}: non-finite state at step {int(b)}; its errors count the "
                         "steps before it only")
    window = {"split": split, "n_initial": len(chosen), "n_steps": n_steps,
              "coarse_dt": traj.coarse_dt, "starts": starts}
    return CoupledResult(metrics, series, evolved, prescribed, window, notes)


def _run(scenario, closure, w: Mapping[str, Any], truth: Mapping[str, Tensor],
         prescribed: Sequence[str], evolved: Sequence[str]
         ) -> Tuple[Dict[str, Tensor], Optional[int]]:
    """One member: the evolved variables ``{v: (L+1, n_cells)}`` (NaN after a blow-up)
    and the step of the blow-up (or None)."""
    t = [float(x) for x in w["t"]]
    L, dt = len(t) - 1, t[1] - t[0]
    j = [0]
    if isinstance(closure, str):                     # the replay of the stored step means
        flux = w["flux_mean"]

        def closure(ts, state, mesh):
            return {v: flux[v][j[0]] for v in flux}
    zero = {v: torch.zeros(scenario.coarse.n_cells, dtype=torch.float64) for v in prescribed}
    # the flow's own forcing never reaches the tracer: give the model none
    forcing = (lambda ts: zero) if prescribed else None
    model = coarse_model_with(scenario, closure, forcing)

    def flow(ts: float) -> Dict[str, Tensor]:
        theta = (ts - t[j[0]]) / dt
        return {v: (1 - theta) * truth[v][j[0]] + theta * truth[v][j[0] + 1] for v in prescribed}

    def rhs(ts: float, state: Mapping[str, Tensor]) -> Dict[str, Tensor]:
        out = model.rhs(ts, {**flow(ts), **state})
        return {v: out[v] for v in evolved}

    state = {v: truth[v][0] for v in evolved}
    out = {v: [truth[v][0]] for v in evolved}
    bad = None
    for k in range(L):
        j[0] = k
        state = ssprk3_step(rhs, t[k], state, dt)
        if not all(bool(torch.isfinite(s).all()) for s in state.values()):
            bad = k + 1
            break
        for v in evolved:
            out[v].append(state[v])
    pad = torch.full_like(truth[evolved[0]][0], float("nan"))
    return {v: torch.stack(out[v] + [pad] * (L + 1 - len(out[v]))) for v in evolved}, bad
