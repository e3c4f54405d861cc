"""The single-column model against the horizontally averaged truth (issue 12, item 2b).

The ``convection`` scenario's coarse model IS the single-column model: the
buoyancy ``b`` on the column of ``n_levels = nz / factor`` cells, heated
through the bottom face (``B``), the lid conducting ``κ N2``, relaxed to the
coarse reference profile, no resolved transport, and a closure's vertical
fluxes. Its truth is the fine slice's buoyancy restricted onto the column,
``restrict(b)``: the horizontal and level-group volume mean, which is what a
``convection`` dataset stores as ``state_b`` (tests/validate/test_column.py
checks it against a hand-computed average).

:func:`single_column` runs the column from the truth's first profile over the
truth's span with each closure (a learned vertical-flux closure, the
calibrated baselines of :func:`~meshclosure.train.calibrate.calibrate` —
constant ``K`` and the convective ``K₀`` / ``α N^β`` law — no closure, and the
replay of the stored step-mean subgrid flux, the upper bound) and compares
with the truth profile over time: profile RMSE (area-weighted over the
column cells), the mixed-layer depth (:func:`mixed_layer_depth_profile`),
its error and its growth rate (least-squares slope of depth against time).

Which truth. A ``convection`` dataset starts after the spin-up (25 time units
at the defaults), when the mixed layer already sits at its equilibrium depth
``h_e`` (about 0.40), so its depth does not grow. The growth is measured on
:func:`column_truth` runs, which start the fine model from rest with the
mixed layer at the reference depth ``h0 = 0.25`` (``initial="rest"``) and
restrict it at every coarse step: convection sets in from the noise after
~4 time units and deepens the layer towards ``h_e`` within ~15 (a
``generate()`` with ``spinup_time=0`` would not do: the scenario's initial
state is already mixed to ``h_e``). The report uses :func:`column_truth` runs
of three seeds (``single_column(scenario, ..., n_seeds=3)``, ``start_time``
skipping the onset if wanted); a dataset (``single_column(path, ...)``) gives
the steady-state comparison.

Examples
--------
>>> import numpy as np
>>> z = (np.arange(8) + 0.5) / 8
>>> mixed_layer_depth_profile(z, np.maximum(z - 0.5, 0.0), N2=1.0)
0.5625
>>> mixed_layer_depth_profile(z[::-1], z, N2=1.0)
Traceback (most recent call last):
...
meshclosure.errors.ArgumentError: z=...: must increase strictly (column cell heights, ...
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from ..errors import ArgumentError
from ._online_runs import _Replay, check_bound, coarse_model_for, guarded_rollout
from ._online_truth import check_count as _check_count
from .coupled import metric_rows, select_windows, split_steps
from .metrics import similarity_table, weighted_rmse

__all__ = ["ColumnTruth", "ColumnResult", "column_truth", "single_column",
           "mixed_layer_depth_profile", "growth_rate"]


def mixed_layer_depth_profile(z: Any, b: Any, N2: float, height: Optional[float] = None):
    """Mixed-layer depth of column profiles: the criterion of
    :meth:`ConvectionScenario.mixed_layer_depth` applied to a column.

    ``N² = ∂b/∂z`` at the cells (two-point differences between neighbouring
    cells, averaged to the cells; one-sided at the bottom and top cells), and
    the depth is the height of the lowest cell from which ``N² > N2/2`` at
    every cell up to the lid; ``z[0]`` when every cell is stable, ``height``
    when the top cell itself is not.

    Parameters
    ----------
    z : array, shape (n_levels,)
        Cell-centre heights, strictly increasing.
    b : array, shape (..., n_levels)
        Buoyancy profiles.
    N2 : float
        The reference stratification (``config["stratification"]``).
    height : float, optional
        Height of the lid (default ``z[-1] + (z[-1] − z[-2]) / 2``).

    Returns
    -------
    float or numpy.ndarray, shape (...)
    """
    z = np.asarray(z, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if z.ndim != 1 or z.size < 2 or not (np.diff(z) > 0).all():
        raise ArgumentError("z", z.tolist(), "must increase strictly (column cell heights, "
                            "bottom to top) with at least 2 cells",
                            "pass the column's cell-centre heights in order")
    if b.shape[-1:] != z.shape:
        raise ArgumentError("b", f"shape {b.shape}", f"must end with the {z.size} levels of z",
                            "pass profiles (..., n_levels)")
    if not np.isfinite(b).all():
        raise ArgumentError("b", "non-finite values", "must be finite",
                            "drop the steps after a blow-up")
    H = float(z[-1] + (z[-1] - z[-2]) / 2) if height is None else float(height)
    g = np.diff(b, axis=-1) / np.diff(z)                             # (..., n - 1)
    n2 = np.concatenate([g[..., :1], (g[..., 1:] + g[..., :-1]) / 2, g[..., -1:]], -1)
    unstable = n2 <= 0.5 * N2
    n = z.size
    last = np.where(unstable.any(-1), n - 1 - np.argmax(unstable[..., ::-1], -1), -1)
    depth = np.where(last < 0, z[0], np.where(last + 1 < n, z[np.minimum(last + 1, n - 1)], H))
    return float(depth) if depth.ndim == 0 else depth


def growth_rate(t: Any, h: Any) -> float:
    """Least-squares slope ``dh/dt`` of ``h (T,)`` against ``t (T,)`` (NaN entries left out).

    >>> growth_rate([0.0, 1.0, 2.0], [0.25, 0.35, 0.45])
    0.1
    """
    t, h = np.asarray(t, dtype=np.float64), np.asarray(h, dtype=np.float64)
    ok = np.isfinite(h)
    if ok.sum() < 2:
        return float("nan")
    return round(float(np.polyfit(t[ok], h[ok], 1)[0]), 14)


@dataclass
class ColumnTruth:
    """The horizontally averaged truth of one ``convection`` run.

    Attributes
    ----------
    scenario : ConvectionScenario
    t : numpy.ndarray, shape (T,)
        Model times of the profiles (one per coarse step).
    b : Tensor, shape (T, n_levels)
        ``restrict(b)``: the column profiles.
    flux : Tensor, shape (T - 1, n_column_faces), optional
        Step-mean subgrid flux ``Φ̄^sgs_b`` of each coarse step (for the replay).
    depth_fine : numpy.ndarray, shape (T,), optional
        ``scenario.mixed_layer_depth`` of the fine state (fine levels).
    source : str
        Where it came from.
    """

    scenario: Any
    t: np.ndarray
    b: Tensor
    flux: Optional[Tensor] = None
    depth_fine: Optional[np.ndarray] = None
    source: str = ""


def column_truth(scenario, n_coarse_steps: int, initial: str = "rest",
                 step_means: bool = True, start_time: float = 0.0) -> ColumnTruth:
    """Run the fine ``convection`` model and restrict it onto the column at every coarse step.

    Parameters
    ----------
    scenario : ConvectionScenario
    n_coarse_steps : int
        Coarse steps (``scenario.coarse_dt`` each).
    initial : {"rest", "scenario"}
        ``"rest"``: ``ζ = 0`` and ``b = b_r(z)`` (mixed layer of the reference depth
        ``h0``) plus the scenario's seeded noise below ``h0``, so the mixed layer
        grows towards the equilibrium depth; ``"scenario"``: the scenario's own
        initial state (already mixed to ``h_e``).
    step_means : bool
        Also keep the step-mean subgrid flux of every step (the replay needs it;
        :func:`~meshclosure.data.trajectory.coarse_steps`).
    start_time : float
        Fine-model time run before the first profile (``0``: the profiles start at
        the initial state; e.g. ``4`` skips the onset of convection from the noise
        at the defaults, when no subgrid flux exists yet).

    Returns
    -------
    ColumnTruth
    """
    from ..data.trajectory import coarse_steps

    if getattr(scenario, "name", None) != "convection":
        raise ArgumentError("scenario", getattr(scenario, "name", type(scenario).__name__),
                            "must be a 'convection' scenario (its coarse model is the column)",
                            "pass get_scenario('convection', ...)")
    n = _check_count("n_coarse_steps", n_coarse_steps)
    if initial not in ("rest", "scenario"):
        raise ArgumentError("initial", initial, "must be 'rest' or 'scenario'",
                            "pass {initial}='rest'")
    state = scenario.initial_state()
    if initial == "rest":
        p = scenario.params
        z = scenario.fine.cell_center[:, 1].double()
        br = scenario.reference_profile(scenario.fine)
        mixed = p["stratification"] * max(scenario.equilibrium_depth() - p["mixed_layer"], 0.0)
        noise = state["b"] - torch.clamp(br, min=mixed)
        state = {"zeta": torch.zeros_like(state["zeta"]),
                 "b": br + noise * (z < p["mixed_layer"])}
    if not (np.isfinite(start_time) and start_time >= 0):
        raise ArgumentError("start_time", start_time, "must be a finite time >= 0",
                            "pass e.g. {start_time}=4.0")
    t = 0.0
    if start_time > 0:
        t, state = scenario.advance(0.0, state, int(round(start_time / scenario.dt)))
    c = scenario.coarsening
    times, profiles = [t], [c.restrict(state["b"])]
    depth, fluxes = [scenario.mixed_layer_depth(state)], []
    with torch.no_grad():
        if step_means:
            for t, state, step in coarse_steps(scenario, t, state, n):
                fluxes.append(step.flux["b"])
                times.append(t)
                profiles.append(c.restrict(state["b"]))
                depth.append(scenario.mixed_layer_depth(state))
        else:
            for _ in range(n):
                t, state = scenario.advance(t, state, scenario.coarse_every)
                times.append(t)
                profiles.append(c.restrict(state["b"]))
                depth.append(scenario.mixed_layer_depth(state))
    return ColumnTruth(scenario, np.asarray(times), torch.stack(profiles),
                       torch.stack(fluxes) if fluxes else None, np.asarray(depth),
                       f"column_truth(seed={scenario.seed}, initial={initial!r}, "
                       f"n_coarse_steps={n}, start_time={times[0]:g})")


@dataclass
class ColumnResult:
    """Result of :func:`single_column`.

    Attributes
    ----------
    metrics : dict
        ``{closure: {metric: value}}``, means over the seeds (truths), each with
        ``<metric>_se`` (standard error over seeds) when there are >= 2:
        ``profile_rmse`` (area-weighted RMSE of ``b`` over the column, mean over
        the times after the start), ``profile_rmse_end``, ``depth_error`` (mean
        ``|h − h_truth|``), ``growth_rate`` (``dh/dt``, least squares),
        ``growth_error`` (``growth_rate − growth_rate(truth)``), ``similarity``
        (``1 − profile_rmse / profile_rmse(none)`` by
        :func:`~meshclosure.validate.metrics.similarity_table`), ``blowup_step`` and
        ``blowup_time`` (the earliest over the seeds, no ``_se``; ``inf``: none blew
        up). A run that blew up has errors ``inf`` and similarity ``-inf`` on that
        truth (``_se`` left out where a value is not finite). The ``"truth"``
        row has ``growth_rate``, ``depth_mean`` and, for :func:`column_truth` runs,
        ``growth_rate_fine`` (from the fine levels).
    per_seed : dict
        ``{closure: {metric: [value per seed]}}``.
    comparisons : dict
        ``{"a - b": {metric: {"mean", "se", "n", "better"}}}`` for ``profile_rmse`` and
        ``depth_error``: the paired difference over seeds
        (:func:`~meshclosure.train.skill.paired_difference`); ``better`` names the
        closure with the smaller error only where ``|mean| > 2 se``, else ``None``.
        Where either closure blew up on some truth (error ``inf``) the pair is not
        ranked: ``blown_up`` names it, ``mean``/``se`` NaN, ``n`` 0, a note says so.
    series : dict
        ``{"profile_rmse" | "mixed_layer_depth": {closure: (t (T,), value (T,))}}``,
        lead time from each truth's start, mean over seeds (``"truth"`` and
        ``"truth_fine"`` rows in the depth).
    z : numpy.ndarray, shape (n_levels,)
    profile_times : numpy.ndarray, shape (k,)
        Lead times of :attr:`profiles`.
    profiles : dict
        ``{closure: (k, n_levels)}`` of the first seed, ``"truth"`` included.
    notes : list of str
    """

    metrics: Dict[str, Dict[str, float]]
    per_seed: Dict[str, Dict[str, List[float]]]
    comparisons: Dict[str, Dict[str, Dict[str, Any]]]
    series: Dict[str, Dict[str, Tuple[np.ndarray, np.ndarray]]]
    z: np.ndarray
    profile_times: np.ndarray
    profiles: Dict[str, np.ndarray]
    notes: List[str] = field(default_factory=list)

    def rows(self) -> List[Dict[str, Any]]:
        """One dict per number, ``closure, metric, variable ("b"), value`` (for the CSV)."""
        rows = metric_rows({n: {f"b.{k}": v for k, v in m.items()}
                            for n, m in self.metrics.items()})
        for pair, values in self.comparisons.items():
            for metric, d in values.items():
                rows += [{"closure": pair, "metric": f"{metric}.paired_{k}", "variable": "b",
                          "value": float(d[k])} for k in ("mean", "se")]
        return rows


def _truths(data, split, n_seeds, n_steps, start_time) -> List[ColumnTruth]:
    from ..data import TrajectoryDataset
    from ..data.scenarios import Scenario

    if isinstance(data, ColumnTruth):
        return [data]
    if isinstance(data, (list, tuple)) and data and all(isinstance(d, ColumnTruth)
                                                          for d in data):
        return list(data)
    if getattr(data, "name", None) == "convection" and hasattr(data, "coarsening"):
        n_seeds = 3 if n_seeds is None else _check_count("n_seeds", n_seeds)
        steps = (int(round(data.params["spinup_time"] / data.coarse_dt)) if n_steps is None
                 else _check_count("n_steps", n_steps))
        return [column_truth(Scenario.from_config({**data.config, "seed": data.seed + k}),
                             steps, start_time=start_time) for k in range(n_seeds)]
    probe = TrajectoryDataset(data, split, 1)
    if probe.scenario_config.get("scenario") != "convection":
        raise ArgumentError("data", f"a {probe.scenario_config.get('scenario')!r} dataset",
                            "must be a 'convection' trajectory dataset (the column's truth)",
                            "for a flow use meshclosure.validate.coupled.prescribed_flow")
    n_seeds = 1 if n_seeds is None else _check_count("n_seeds", n_seeds)
    if n_steps is None:
        n_steps = max(1, (split_steps(probe) + 1) // n_seeds - 1)
    traj = TrajectoryDataset(data, split, _check_count("n_steps", n_steps))
    scenario = Scenario.from_config(traj.scenario_config)
    out = []
    for i in select_windows(traj, n_seeds, "n_seeds"):
        w = traj[i]
        out.append(ColumnTruth(scenario, w["t"].numpy(),
                               torch.cat([w["state"]["b"][None], w["states"]["b"]]),
                               w["flux_mean"]["b"], None,
                               f"{split} window {i} of {len(traj)} ({n_steps} steps)"))
    return out


def _run_column(truth: ColumnTruth, closure, growth_bound: float = 10.0
                ) -> Tuple[Tensor, Optional[int], str]:
    """The column from ``truth.b[0]`` over its times: ``(T, n_levels)`` (NaN from a
    blow-up on), the blow-up step or None, and its reason (the detector of every
    stage: :func:`~meshclosure.validate._online_runs.guarded_rollout`)."""
    rep = _Replay({"b": truth.flux}) if isinstance(closure, str) else None
    model = coarse_model_for(truth.scenario, rep.closure if rep else closure)
    if callable(getattr(closure, "reset", None)):
        closure.reset()
    out = [truth.b[0]]

    def keep(n: int, t: float, state: Dict[str, Tensor]) -> None:
        out.append(state["b"])
        if rep is not None:
            rep.index = n

    T = len(truth.t)
    g = guarded_rollout(model, {"b": truth.b[0]}, float(truth.t[1] - truth.t[0]), T - 1,
                        float(truth.t[0]), {"b": float(truth.b.abs().max())}, growth_bound,
                        keep)
    kept = g.steps + 1 if g.blowup_step is None else g.blowup_step     # the bad step dropped
    out = out[:kept] + [torch.full_like(truth.b[0], float("nan"))] * (T - kept)
    return torch.stack(out), g.blowup_step, g.blowup_reason


def _alive_mean(v: List[np.ndarray]) -> np.ndarray:
    """Mean over the truths of the runs alive at each time (NaN where none is)."""
    x = np.stack(v)
    alive = np.isfinite(x).sum(0)
    return np.where(alive > 0, np.nansum(x, 0) / np.maximum(alive, 1), np.nan)


def single_column(data: Any, closures: Optional[Mapping[str, Any]] = None,
                  n_seeds: Optional[int] = None, split: str = "test",
                  n_steps: Optional[int] = None, calibration: Any = None,
                  n_profiles: int = 4, start_time: float = 0.0,
                  growth_bound: float = 10.0) -> ColumnResult:
    """Run the single-column model with each closure against the averaged truth.

    Parameters
    ----------
    data : ConvectionScenario, ColumnTruth, list of ColumnTruth, path or xarray.Dataset
        The truth: a scenario (``n_seeds`` :func:`column_truth` runs from rest of
        the seeds ``seed, seed + 1, ...``, ``n_steps`` each, default the
        scenario's spin-up time), given truths, or a ``convection`` trajectory
        dataset (``n_seeds`` disjoint windows of ``split``, default 1).
    closures : dict of str -> closure, optional
        E.g. ``{"learned": load_model(dir, scenario.coarse).closure()}``; the rows
        ``"none"`` and (when the truth has step means) ``"replay"`` are added.
    n_seeds, n_steps : int, optional
        See ``data``.
    split : str
        The dataset split.
    calibration : dict or path, optional
        A :func:`~meshclosure.train.calibrate.calibrate` result: its baselines
        (``constant``, ``convective``) are added as closures.
    n_profiles : int
        Times of the profile figure (evenly spaced, start and end included).
    start_time : float
        For a scenario: :func:`column_truth`'s ``start_time`` (skip the onset).
    growth_bound : float
        A run has blown up when ``max|b| > growth_bound · max|b_truth|`` or its
        state is not finite (the detector of every stage). Its ``profile_rmse``,
        ``profile_rmse_end`` and ``depth_error`` are ``inf`` on that truth, its
        ``growth_rate`` / ``growth_error`` NaN, its similarity ``-inf``; it is named
        in the comparisons, never ranked.

    Returns
    -------
    ColumnResult
    """
    from ..train.skill import paired_difference

    growth_bound = check_bound(growth_bound)
    truths = _truths(data, split, n_seeds, n_steps, start_time)
    scenario = truths[0].scenario
    runs: Dict[str, Any] = {"none": None}
    if all(tr.flux is not None for tr in truths):
        runs["replay"] = "replay"
    if calibration is not None:
        from ..train.calibrate import baseline_closures, load_calibration

        cal = calibration if isinstance(calibration, Mapping) else load_calibration(calibration)
        runs.update({k: v for k, v in baseline_closures(cal, scenario).items() if k != "none"})
    for name, closure in (closures or {}).items():
        if name in runs or name == "truth":
            raise ArgumentError("closures", sorted(closures), f"must not name a closure "
                                f"{name!r} (that row exists already)", "rename it")
        runs[name] = closure
    z = scenario.coarse.cell_center[:, 1].double().numpy()
    V = scenario.coarse.cell_volume.double()
    N2, H = scenario.params["stratification"], scenario.params["height"]
    per_seed: Dict[str, Dict[str, List[float]]] = {n: {} for n in ["truth", *runs]}
    rmse_t: Dict[str, list] = {n: [] for n in runs}
    depth_t: Dict[str, list] = {n: [] for n in ["truth", "truth_fine", *runs]}
    notes = [f"truth: {tr.source}" for tr in truths]
    k_prof = np.unique(np.linspace(0, len(truths[0].t) - 1, max(2, n_profiles)).round()
                       .astype(int))
    profiles = {"truth": truths[0].b[k_prof].numpy()}

    def add(name, metric, value):
        per_seed[name].setdefault(metric, []).append(float(value))

    with torch.no_grad():
        for s, tr in enumerate(truths):
            lead = tr.t - tr.t[0]
            h_truth = mixed_layer_depth_profile(z, tr.b.numpy(), N2, H)
            g_truth = growth_rate(lead, h_truth)
            depth_t["truth"].append(h_truth)
            add("truth", "growth_rate", g_truth)
            add("truth", "depth_mean", h_truth.mean())
            if tr.depth_fine is not None:
                depth_t["truth_fine"].append(tr.depth_fine)
                add("truth", "growth_rate_fine", growth_rate(lead, tr.depth_fine))
            for name, closure in runs.items():
                b, bad, why = _run_column(tr, closure, growth_bound)
                ok = torch.isfinite(b).all(-1).numpy()
                e = weighted_rmse(b, tr.b, V).numpy()
                h = np.full(len(tr.t), np.nan)
                h[ok] = mixed_layer_depth_profile(z, b[ok].numpy(), N2, H)
                rmse_t[name].append(e)
                depth_t[name].append(h)
                if bad is None:
                    add(name, "profile_rmse", np.mean(e[1:]))
                    add(name, "profile_rmse_end", e[-1])
                    add(name, "depth_error", np.mean(np.abs(h - h_truth)[1:]))
                    add(name, "growth_rate", growth_rate(lead, h))
                    add(name, "growth_error", growth_rate(lead, h) - g_truth)
                else:                   # it did not produce the run: no error to average
                    for metric in ("profile_rmse", "profile_rmse_end", "depth_error"):
                        add(name, metric, float("inf"))
                    add(name, "growth_rate", float("nan"))
                    add(name, "growth_error", float("nan"))
                    notes.append(f"{name}: blew up at step {bad} (t = "
                                 f"{lead[min(bad, len(lead) - 1)]:.4g} after the start; {why}) "
                                 f"of truth {s}: profile_rmse, profile_rmse_end, depth_error "
                                 "inf, growth_rate and growth_error NaN, similarity -inf")
                add(name, "blowup_step", float("inf") if bad is None else bad)
                add(name, "blowup_time", float("inf") if bad is None
                    else bad * float(tr.t[1] - tr.t[0]))
                if s == 0:
                    profiles[name] = b[k_prof].numpy()
    for name in runs:
        per_seed[name]["similarity"] = []
    for s in range(len(truths)):
        table = similarity_table({name: {"profile_rmse": per_seed[name]["profile_rmse"][s]}
                                  for name in runs})
        for name in runs:
            per_seed[name]["similarity"].append(table[name]["mean"])
            if name in table.get("notes", {}):
                notes.append(f"{name}, truth {s}: {table['notes'][name]}")
    metrics: Dict[str, Dict[str, float]] = {}
    for name, values in per_seed.items():
        m = {}
        for metric, v in values.items():
            v = np.asarray(v)
            first = metric in ("blowup_step", "blowup_time")
            m[metric] = float(np.min(v) if first else np.mean(v))
            if len(v) >= 2 and not first and np.isfinite(v).all():
                m[f"{metric}_se"] = float(np.std(v, ddof=1) / np.sqrt(len(v)))
        metrics[name] = m
    comparisons: Dict[str, Dict[str, Dict[str, Any]]] = {}
    if len(truths) >= 2:
        for a, b in itertools.combinations([n for n in runs if n != "replay"], 2):
            out = {}
            for metric in ("profile_rmse", "depth_error"):
                x, y = per_seed[a][metric], per_seed[b][metric]
                blown = [n for n, v in ((a, x), (b, y)) if not np.isfinite(v).all()]
                if blown:               # no paired difference over inf: name, never rank
                    out[metric] = {"mean": float("nan"), "se": float("nan"), "n": 0,
                                   "better": None, "blown_up": blown}
                    continue
                d = paired_difference(x, y)
                better = (a if d.mean < 0 else b) if abs(d.mean) > 2 * d.se else None
                out[metric] = {"mean": float(d.mean), "se": float(d.se), "n": int(d.n),
                               "better": better}
            comparisons[f"{a} - {b}"] = out
            blown = sorted({n for d in out.values() for n in d.get("blown_up", [])})
            if blown:
                notes.append(f"{a} - {b}: not compared ({', '.join(blown)} blew up on some "
                             "truth; its errors are inf): blown_up names it, mean and se NaN")
    else:
        notes.append("one truth only: no paired differences (pass n_seeds >= 2)")
    lead0 = truths[0].t - truths[0].t[0]
    same = all(len(tr.t) == len(lead0) for tr in truths)
    series: Dict[str, Dict[str, Tuple[np.ndarray, np.ndarray]]] = {
        "profile_rmse": {}, "mixed_layer_depth": {}}
    if same:
        for name, v in rmse_t.items():
            series["profile_rmse"][name] = (lead0, _alive_mean(v))
        for name, v in depth_t.items():
            if v:
                series["mixed_layer_depth"][name] = (lead0, _alive_mean(v))
    else:
        notes.append("truths of different lengths: series of the first one only")
        for name, v in rmse_t.items():
            series["profile_rmse"][name] = (lead0, v[0])
        for name, v in depth_t.items():
            if v:
                series["mixed_layer_depth"][name] = (lead0, v[0])
    return ColumnResult(metrics, per_seed, comparisons, series, z, lead0[k_prof], profiles, notes)
