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
from ._online_runs import _Replay, check_bound, coarse_model_for, guarded_rollout
from ._online_truth import check_count
from .metrics import similarity_table, weighted_corr, weighted_rmse

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
        2023, doi:10.1029/2022MS003258, by
        :func:`~meshclosure.validate.metrics.similarity_table`); plus ``similarity``
        (mean over the evolved variables), ``blowup_step`` and ``blowup_time`` (the
        earliest blow-up over the members, NaN state or past the growth bound;
        ``inf`` when none). A closure with a member that blew up has
        ``rmse_mean = rmse_end = inf``, ``corr_mean`` NaN and similarity ``-inf``.
    series : dict
        ``{"<var>.rmse": {closure: (lead_time (L+1,), rmse (L+1,))}}``, RMS over the
        members alive at each lead (NaN once all blew up).
    evolved, prescribed : tuple of str
        The variables run by the closure, and those taken from the truth.
    window : dict
        ``split``, ``n_initial``, ``n_steps``, ``coarse_dt``, ``starts`` (model times),
        ``growth_bound``.
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


coarse_model_with = coarse_model_for
"""Old name of :func:`~meshclosure.validate._online_runs.coarse_model_for`."""
_check_count = check_count


def prescribed_flow(data: Any, closures: Optional[Mapping[str, Any]] = None,
                    split: str = "test", n_initial: int = 3,
                    n_steps: Optional[int] = None, growth_bound: float = 10.0) -> CoupledResult:
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
    growth_bound : float
        A member has blown up when ``max|q_v| > growth_bound · max|truth_v|`` over its
        window, or its state is not finite (the detector of the online stage,
        :func:`~meshclosure.validate._online_runs.guarded_rollout`). A closure with
        a member that blew up has ``rmse_mean``, ``rmse_end`` = ``inf``,
        ``corr_mean`` NaN and similarity ``-inf`` (it did not produce the run).

    Returns
    -------
    CoupledResult
    """
    from ..data import TrajectoryDataset, scenario_for_run
    from ..data.scenarios import Scenario

    n_initial = check_count("n_initial", n_initial)
    growth_bound = check_bound(growth_bound)
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
    n_steps = check_count("n_steps", n_steps)
    traj = TrajectoryDataset(data, split, n_steps)
    chosen = select_windows(traj, n_initial)
    scenario = Scenario.from_config(traj.scenario_config)
    by_run: Dict[int, Any] = {}

    def run_scenario(run: int):
        """The scenario of a window's run: its own seed, so its own prescribed flow
        (datasets of many runs, :func:`~meshclosure.data.generate_runs`)."""
        if run not in by_run:
            by_run[run] = scenario_for_run(traj.ds, run)
        return by_run[run]
    prescribed = PRESCRIBED[name]
    evolved = tuple(v for v in scenario.variables if v not in prescribed)
    runs: Dict[str, Any] = {"none": None, "replay": "replay", **closures}
    V = scenario.coarse.cell_volume.double()
    err: Dict[str, Dict[str, list]] = {n: {v: [] for v in evolved} for n in runs}
    corr: Dict[str, Dict[str, list]] = {n: {v: [] for v in evolved} for n in runs}
    blowup: Dict[str, Tuple[float, str]] = {n: (float("inf"), "") for n in runs}
    starts = []
    with torch.no_grad():
        for i in chosen:
            w = traj[i]
            starts.append(float(w["t"][0]))
            truth = {v: torch.cat([w["state"][v][None], w["states"][v]]) for v in w["state"]}
            for n, closure in runs.items():
                out, bad, why = _run(run_scenario(int(w["run"])), closure, w, truth,
                                     prescribed, evolved, growth_bound)
                if bad is not None and bad < blowup[n][0]:
                    blowup[n] = (float(bad), why)
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
        blown = np.isfinite(blowup[n][0])
        for v in evolved:
            e = torch.stack(err[n][v])                                   # (members, L+1)
            # the series: RMS over the members alive at each lead (NaN after all blew up)
            alive = torch.isfinite(e).sum(0)
            rms = torch.sqrt(torch.nan_to_num(e ** 2, nan=0.0).sum(0) / alive).numpy()
            rms[alive.numpy() == 0] = np.nan
            series.setdefault(f"{v}.rmse", {})[n] = (lead, rms)
            if blown:                            # it did not produce the window: no scores
                m[f"{v}.rmse_mean"] = m[f"{v}.rmse_end"] = float("inf")
                m[f"{v}.corr_mean"] = float("nan")
            else:
                m[f"{v}.rmse_mean"] = float(e[:, 1:].mean())
                m[f"{v}.rmse_end"] = float(rms[-1])
                m[f"{v}.corr_mean"] = float(torch.stack(corr[n][v])[:, 1:].nanmean())
        m["blowup_step"] = blowup[n][0]
        m["blowup_time"] = blowup[n][0] * traj.coarse_dt
        metrics[n] = m
    table = similarity_table({n: {v: m[f"{v}.rmse_mean"] for v in evolved}
                              for n, m in metrics.items()})
    for n, m in metrics.items():
        for v in evolved:
            if v in table[n]:
                m[f"{v}.similarity"] = table[n][v]
        m["similarity"] = table[n]["mean"]
        if n in table.get("notes", {}):
            notes.append(f"{n}: {table['notes'][n]}")
    if "skipped" in table:
        notes.append(f"left out of the similarity scores: {table['skipped']}")
    for n, (b, why) in blowup.items():
        if np.isfinite(b):
            notes.append(f"{n}: blew up at step {int(b)} (t = {b * traj.coarse_dt:.4g} after "
                         f"its start; {why}) inside the window: its rmse_mean and rmse_end "
                         "are inf, corr_mean NaN, similarity -inf (it did not produce the run)")
    window = {"split": split, "n_initial": len(chosen), "n_steps": n_steps,
              "coarse_dt": traj.coarse_dt, "starts": starts, "growth_bound": growth_bound}
    return CoupledResult(metrics, series, evolved, prescribed, window, notes)


class _Evolved:
    """The coarse model for the evolved variables, the prescribed ones taken from the
    truth, interpolated linearly in time between the stored steps."""

    def __init__(self, model, truth, t0: float, dt: float, prescribed, evolved) -> None:
        self.model, self.truth, self.t0, self.dt = model, truth, t0, dt
        self.prescribed, self.evolved, self.index = prescribed, evolved, 0

    def flow(self, ts: float) -> Dict[str, Tensor]:
        j = self.index
        theta = (ts - (self.t0 + j * self.dt)) / self.dt
        return {v: (1 - theta) * self.truth[v][j] + theta * self.truth[v][j + 1]
                for v in self.prescribed}

    def rhs(self, ts: float, state: Mapping[str, Tensor]) -> Dict[str, Tensor]:
        out = self.model.rhs(ts, {**self.flow(ts), **state})
        return {v: out[v] for v in self.evolved}

    def diagnose(self, ts: float, state: Mapping[str, Tensor]):
        diagnose = getattr(self.model, "diagnose", None)
        return diagnose(ts, {**self.flow(ts), **state}) if diagnose is not None else None


def _run(scenario, closure, w: Mapping[str, Any], truth: Mapping[str, Tensor],
         prescribed: Sequence[str], evolved: Sequence[str], growth_bound: float = 10.0
         ) -> Tuple[Dict[str, Tensor], Optional[int], str]:
    """One member: the evolved variables ``{v: (L+1, n_cells)}`` (NaN after a blow-up),
    the step of the blow-up (or None) and its reason."""
    t = [float(x) for x in w["t"]]
    L, dt = len(t) - 1, t[1] - t[0]
    rep = _Replay({v: w["flux_mean"][v] for v in evolved}) if isinstance(closure, str) \
        else None
    zero = {v: torch.zeros(scenario.coarse.n_cells, dtype=torch.float64) for v in prescribed}
    # the flow's own forcing never reaches the tracer: give the model none
    forcing = (lambda ts: zero) if prescribed else None
    model = _Evolved(coarse_model_for(scenario, rep.closure if rep else closure, forcing),
                     truth, t[0], dt, prescribed, evolved)
    if callable(getattr(closure, "reset", None)):
        closure.reset()
    out = {v: [truth[v][0]] for v in evolved}

    def keep(n: int, ts: float, state: Dict[str, Tensor]) -> None:
        for v in evolved:
            out[v].append(state[v])
        model.index = n
        if rep is not None:
            rep.index = n

    g = guarded_rollout(model, {v: truth[v][0] for v in evolved}, dt, L, t[0],
                        {v: float(truth[v].abs().max()) for v in evolved}, growth_bound, keep)
    kept = g.steps + 1 if g.blowup_step is None else g.blowup_step     # the bad step dropped
    pad = torch.full_like(truth[evolved[0]][0], float("nan"))
    return ({v: torch.stack(out[v][:kept] + [pad] * (L + 1 - kept)) for v in evolved},
            g.blowup_step, g.blowup_reason)
