"""Online validation: long hybrid runs of the coarse model with a closure (DESIGN.md §9.3).

:func:`online_validation` starts the coarse model
(``scenario.coarse_model(closure=...)``, rebuilt from a trajectory dataset) from
``n_initial`` coarse-grained truth states of one split (an ensemble), runs it
with :func:`~meshclosure.solver.integrate.rollout` and judges it three ways:

* **Stability.** A member stops at the first step whose state is not finite
  (rollout's NaN guard) or exceeds the growth bound
  ``max|q_v| > growth_bound · max|truth_v|`` (the truth's maximum over the
  split); ``time_to_blowup`` is the model time from the member's start to that
  step (``inf`` when none). A closure that raises a
  :class:`~meshclosure.errors.MeshclosureError` after the first step (it refuses
  the state the run reached) stops its member the same way, with the reason. A
  run that blows up is reported, never dropped.
* **Conservation.** Every step the budget residual
  ``T^{n+1} − T^n − Δt Σ_s b_s (∫S^(s) − outflow^(s))`` of each variable's total
  ``T = Σ_i V_i q_i`` (stage weights ``b_s`` of ``STAGES["ssprk3"]``, sources and
  outflow from :func:`budget_terms`) is accumulated and, at the end, divided
  by ``Σ_i V_i |q_i|``. Any flux-form closure leaves rounding; a per-cell
  tendency (:class:`~meshclosure.closures.tendency.TendencyClosure`, the ``nodewise``
  references, run through :func:`~meshclosure.closures.tendency.with_tendency`) does not.
  The audit needs no truth, so it continues ``audit_steps`` past it.
* **Emergent statistics** over the window the truth spans, members against the
  truth at the same times (:mod:`~meshclosure.validate._online_stats`): time-mean
  and variance maps, spectra, the Wasserstein distance of the marginal
  distributions, the 99th and 99.9th percentiles; per metric the similarity
  ``1 − d(model, truth) / d(none, truth)`` (Ross et al. 2023,
  doi:10.1029/2022MS003258) and its mean; RMSE against lead time; for an
  :class:`~meshclosure.train.uncertainty.EnsembleClosure`, each of its members
  runs on its own, and a sampling closure (``mode="sample"``) runs
  ``realizations`` times: the ensemble's spread–skill ratio against lead time.

Two rows are always there: ``"none"`` (no closure: similarity 0 by definition)
and ``"replay"`` (the truth's stored step-mean subgrid flux replayed,
:func:`~meshclosure.data.trajectory.replay`: the upper bound, over the
truth's span only).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch

from ..errors import ArgumentError
from . import _online_stats as stats
from ._online_runs import Run, budget_terms, check_bound, is_tendency, run_member
from ._online_truth import Truth, load_truth, member_starts
from .metrics import similarity_table

__all__ = ["online_validation", "OnlineResult", "budget_terms", "REFERENCE_ROWS"]

REFERENCE_ROWS = ("none", "replay")
"""The rows every online table carries: no closure (the zero) and the truth replay (the
upper bound)."""


# ------------------------------------------------------------------------- result
@dataclass
class OnlineResult:
    """What :func:`online_validation` measured.

    ``name`` runs over the closures given, ``"none"`` and ``"replay"``; ``var`` over
    the scenario's variables; ``"truth"`` is added where noted.

    Attributes
    ----------
    metrics : {name: dict}
        ``time_to_blowup`` (float: model time from a member's start to its blow-up,
        the earliest member; ``inf`` if none), ``blowup_step`` (int or None),
        ``blowup_reason`` (str), ``conservation_drift`` (float: the largest
        |accumulated budget residual / Σ V|q|| over members and variables),
        ``budget_residual`` ``{var: float}`` (the largest-magnitude member's),
        ``distances`` and ``similarity`` ``{var: {metric: float}}`` (metrics
        ``mean_rmse``, ``variance_rmse``, ``spectrum`` (planes and spheres),
        ``wasserstein``, ``p99``, ``p99.9``; ``inf`` / ``-inf`` for a closure that
        blew up inside the window), ``similarity_mean`` (float), ``complete``
        (bool: every member lasted the window), ``members`` (list of dict:
        ``start`` (index), ``t0``, ``steps``, ``blowup_step``, ``time_to_blowup``,
        ``budget_residual`` ``{var: float}``).
    error_growth : {name: {var: (lead_time (L+1,), rmse (L+1,))}}
        Area-weighted RMSE against the truth, averaged over the members alive at each
        lead (lead 0 is 0).
    spread_skill : {name: {var: (lead_time (L,), ratio (L,))}}
        Ensembles only: :class:`~meshclosure.train.uncertainty.EnsembleClosure` rows and
        stochastic closures (``mode="sample"``).
    spectra : {name or "truth": {var: (k (n_k,), P (n_k,))}}
        Time-mean power spectra over the window (absent on meshes without spectra).
    maps : {name or "truth": {var: {"mean": (n_cells,), "variance": (n_cells,)}}}
    values : {name or "truth": {var: (≤ 20,000,)}}
        Area-weighted draws of the states over the window, for PDFs.
    budget_series : {name: {var: (step (S,), |residual| / Σ V|q| (S,))}}
        The worst member at every step, audit steps included.
    window : dict
        ``t0``, ``t1``, ``n_steps``, ``coarse_dt``, ``relaxation_times`` (when the
        scenario relaxes), ``split``, ``run``, ``starts`` (times), ``member_steps``,
        ``audit_steps``, ``audit_members``, ``kmax``, ``growth_bound``.
    notes : list of str
    """

    metrics: Dict[str, Dict[str, Any]]
    error_growth: Dict[str, Dict[str, Tuple[np.ndarray, np.ndarray]]]
    spectra: Dict[str, Dict[str, Tuple[np.ndarray, np.ndarray]]]
    maps: Dict[str, Dict[str, Dict[str, np.ndarray]]]
    values: Dict[str, Dict[str, np.ndarray]]
    budget_series: Dict[str, Dict[str, Tuple[np.ndarray, np.ndarray]]]
    spread_skill: Dict[str, Dict[str, Tuple[np.ndarray, np.ndarray]]]
    window: Dict[str, Any]
    notes: List[str] = field(default_factory=list)

    def rows(self) -> List[Dict[str, Any]]:
        """Every number as ``{closure, metric, variable, value}`` (for ``metrics.csv``):
        the headline values (``variable`` empty; ``blowup_step`` is ``inf`` when no
        member blew up, like ``time_to_blowup``), then per variable the budget residual,
        each distance (``distance.<metric>``) and similarity (``similarity.<metric>``)."""
        out: List[Dict[str, Any]] = []
        for name, m in self.metrics.items():
            for key in ("time_to_blowup", "blowup_step", "conservation_drift",
                        "similarity_mean"):
                value = m.get(key)
                out.append({"closure": name, "metric": key, "variable": "",
                            "value": math.inf if value is None else float(value)})
            for var, r in m.get("budget_residual", {}).items():
                out.append({"closure": name, "metric": "budget_residual", "variable": var,
                            "value": float(r)})
            for kind, label in (("distances", "distance"), ("similarity", "similarity")):
                for var, row in m.get(kind, {}).items():
                    for metric, value in row.items():
                        out.append({"closure": name, "metric": f"{label}.{metric}",
                                    "variable": var, "value": float(value)})
        return out


# --------------------------------------------------------------------- validation
def _check_arguments(closures: Any, n_steps: Any, audit_steps: Any, growth_bound: Any,
                     kmax: Any) -> Dict[str, Any]:
    if not isinstance(closures, Mapping):
        raise ArgumentError("closures", type(closures).__name__, "must be a dict {name: "
                            "closure}", "pass e.g. {{'learned': closure}} (or {{}} for the "
                            "reference rows only)")
    rows: Dict[str, Any] = {}
    for name, c in closures.items():
        if not isinstance(name, str) or not name:
            raise ArgumentError("closures", name, "must have non-empty string names",
                                "name each closure")
        if name in ("replay", "truth") or (name == "none" and c is not None):
            raise ArgumentError("closures", name, f"must not use the reserved names "
                                f"{REFERENCE_ROWS} (added by online_validation) or 'truth' (the "
                                "truth's row of spectra, maps and values)",
                                "rename the closure")
        if c is not None and not callable(c) and not is_tendency(c):
            raise ArgumentError("closures", f"{name}={type(c).__name__}", "must map names to "
                                "closures (callable (t, state, mesh) -> {{var: face flux}}) "
                                "or tendency closures", "wrap a function with as_closure")
        if name != "none":
            rows[name] = c
    for name, value, low in (("n_steps", n_steps, 1), ("audit_steps", audit_steps, 0)):
        if value is None and name == "n_steps":
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ArgumentError(name, value, f"must be a whole number >= {low}",
                                f"pass e.g. {{{name}}}={max(low, 100)}")
    check_bound(growth_bound)
    if kmax is not None and not (isinstance(kmax, (int, float)) and kmax > 0):
        raise ArgumentError("kmax", kmax, "must be a positive wavenumber / degree or None",
                            "pass e.g. {kmax}=8, or None for 2/3 of the largest")
    return {"none": None, **rows, "replay": "replay"}


def _summarise(truth: Truth, runs: List[List[Run]], n_truth: Dict[int, int],
               truth_stats: Dict[str, Dict[str, Any]], kmax: Optional[float]
               ) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Metrics and series of one closure from its runs (realizations × starts)."""
    dt, V = truth.coarse_dt, truth.mesh.cell_volume.double()
    flat = [r for real in runs for r in real]
    blown = [r for r in flat if r.blowup_step is not None]
    first = min(blown, key=lambda r: r.blowup_step) if blown else None
    scaled = [r.scaled() for r in flat]
    residual = {v: max((s[v] for s in scaled), key=abs) for v in truth.variables}
    m: Dict[str, Any] = {
        "time_to_blowup": first.blowup_step * dt if first is not None else math.inf,
        "blowup_step": first.blowup_step if first is not None else None,
        "blowup_reason": first.blowup_reason if first is not None else "",
        "conservation_drift": max(abs(x) for x in residual.values()),
        "budget_residual": residual,
        "members": [{"start": r.start, "t0": float(truth.t[r.start]), "steps": r.steps,
                     "blowup_step": r.blowup_step,
                     "time_to_blowup": (r.blowup_step * dt if r.blowup_step is not None
                                        else math.inf),
                     "budget_residual": r.scaled()} for r in flat],
    }
    complete = all(len(r.states[truth.variables[0]]) == n_truth[r.start] + 1 for r in flat)
    m["complete"] = complete
    series: Dict[str, Any] = {"budget": {}, "growth": {}, "stats": {}, "spread": {}}
    for v in truth.variables:
        longest = max(len(r.residual[v]) for r in flat)
        worst = np.zeros(longest)
        for r, s in zip(flat, scaled):
            x = np.abs(np.asarray(r.residual[v])) / r.scale[v]
            worst[:len(x)] = np.maximum(worst[:len(x)], x)
        series["budget"][v] = (np.arange(1, longest + 1, dtype=np.float64), worst)
        xs = [torch.stack(r.states[v]) for r in flat]
        ys = [truth.states[v][r.start:r.start + len(x)] for r, x in zip(flat, xs)]
        series["growth"][v] = stats.error_growth(V, xs, ys, dt)
        if len(runs) > 1:
            ens, tru = [], []
            for j, s in enumerate(sorted({r.start for r in flat})):
                members = [x for r, x in zip(flat, xs) if r.start == s]
                L = min(len(x) for x in members)
                ens.append(torch.stack([x[:L] for x in members]))
                tru.append(truth.states[v][s:s + L])
            series["spread"][v] = stats.spread_skill(V, ens, tru, dt)
        pairs = [x[1:] for x in xs if len(x) > 1]
        if pairs:
            series["stats"][v] = stats.field_statistics(truth.mesh, torch.cat(pairs))
    m["distances"] = {}
    for v in truth.variables:
        if complete and v in series["stats"]:
            m["distances"][v] = stats.distances(series["stats"][v], truth_stats[v], V, kmax)
        else:
            m["distances"][v] = {k: math.inf for k in
                                 stats.distances(truth_stats[v], truth_stats[v], V, kmax)}
    return m, series


def online_validation(data: Any, closures: Mapping[str, Any], split: str = "test",
                      n_initial: int = 3, n_steps: Optional[int] = None, audit_steps: int = 0,
                      growth_bound: float = 10.0, kmax: Optional[float] = None,
                      realizations: int = 4, replay_forcing: str = "model",
                      audit_members: Optional[int] = None,
                      progress: bool = False) -> OnlineResult:
    """Long hybrid runs of each closure from truth states: stability, budget, statistics.

    Parameters
    ----------
    data : path or xarray.Dataset
        A TRAJECTORY dataset (``generate(..., trajectory=True)``); the scenario and its
        coarse model are rebuilt from its ``scenario_config`` (``ood_config`` for the
        OOD split).
    closures : {name: closure}
        Closures for ``scenario.coarse_model(closure=...)``, a
        :class:`~meshclosure.closures.tendency.TendencyClosure` (a per-cell tendency,
        e.g. ``nodewise``; anything with ``tendencies(t, state, mesh, transport)``,
        run with :func:`~meshclosure.closures.tendency.with_tendency`), or an
        :class:`~meshclosure.train.uncertainty.EnsembleClosure` (each member runs on
        its own: an ensemble of runs per initial state; in ``mode="sample"`` the
        whole ensemble samples, see ``realizations``). ``"none"`` (no closure) and
        ``"replay"`` (the truth's step-mean flux, see ``replay_forcing``) are always added.
    split : {"test", "train", "val", "ood"}
        The truth the runs start from and are compared with (one contiguous block).
    n_initial : int
        Initial states, evenly spaced over the first half of the split
        (:func:`~meshclosure.validate._online_truth.member_starts`).
    n_steps : int, optional
        Coarse steps per member (default: to the end of the split's truth); the
        statistics use the steps the truth covers.
    audit_steps : int
        More steps after those, with no truth: stability and budget only (not for
        ``"replay"``, which exists only over the truth).
    growth_bound : float
        A member has blown up when ``max|q_v| > growth_bound · max|truth_v|``.
    kmax : float, optional
        Highest wavenumber (units 2π/L) / degree of the spectrum distance (exclusive);
        default :func:`~meshclosure.validate.spectra.spectrum_kmax`, 2/3 of the
        mesh's Nyquist wavenumber (as pyqg_parameterization_benchmarks).
    realizations : int
        Runs per initial state of a stochastic closure (one with ``mode == "sample"``:
        a sampling ``ModelClosure`` or ``EnsembleClosure``), each drawing its own
        noise: its ensemble (>= 2).
    audit_members : int, optional
        Only the first this many initial states run the ``audit_steps`` (default: all).
        The budget needs no truth, and one long run per closure is the audit the
        issue asks for: ``audit_members=1`` cuts a 10⁴-step audit's cost by
        ``n_initial`` (a learned ``mgn`` of 32 × 3 on 8² cells: about 8 ms a step).
    replay_forcing : {"model", "replay"}
        The ``"replay"`` row's random forcing. ``"model"`` (default): the coarse
        model's own ``restrict(F(t))`` at its stage times, the forcing every other
        row runs with, so the row differs from ``"none"`` by the closure alone (the
        issue's "step-mean subgrid flux replayed"). ``"replay"``: the truth's stored
        step mean as well (:func:`~meshclosure.data.trajectory.replay`'s default);
        on ``barotropic`` it tracks the truth far worse where the forcing
        decorrelates within a coarse step (``cartesian:16`` factor 2: ζ RMSE 0.05
        against 0.002 with the model's forcing after 5 steps; ``healpix:4``
        factor 2, ``coarse_dt ≈ 3 tau_forcing``: worse than no closure).
    progress : bool
        A progress bar over the runs.

    Returns
    -------
    OnlineResult
        Stability, budget, distances and similarity scores per closure
        (``metrics``), and the series, spectra, maps and values behind them (see
        :class:`OnlineResult`).

    Examples
    --------
    >>> online_validation("missing.nc", {}, n_initial=0)
    Traceback (most recent call last):
    ...
    meshclosure.errors.ArgumentError: n_initial=0: must be a whole number >= 1 (3 or more for an ensemble); pass e.g. n_initial=3.
    """
    from ..data.trajectory import PRESCRIBED_FLOW
    from ..train.uncertainty import EnsembleClosure

    if isinstance(n_initial, bool) or not isinstance(n_initial, int) or n_initial < 1:
        member_starts(1, n_initial)                     # raises the ArgumentError
    rows = _check_arguments(closures, n_steps, audit_steps, growth_bound, kmax)
    if replay_forcing not in ("replay", "model"):
        raise ArgumentError("replay_forcing", replay_forcing, "must be 'replay' or 'model'",
                            "pass {replay_forcing}='model' for the coarse model's own forcing")
    if isinstance(realizations, bool) or not isinstance(realizations, int) or realizations < 2:
        raise ArgumentError("realizations", realizations, "must be a whole number >= 2 (runs "
                            "of a stochastic closure per initial state: an ensemble)",
                            "pass e.g. {realizations}=4")
    if audit_members is not None and (isinstance(audit_members, bool) or not isinstance(
            audit_members, int) or audit_members < 1):
        raise ArgumentError("audit_members", audit_members, "must be a whole number >= 1 or "
                            "None (all)", "pass e.g. {audit_members}=1")
    truth = load_truth(data, split)
    starts = member_starts(truth.n_steps, n_initial)
    wanted = {s: (truth.n_steps - s if n_steps is None else int(n_steps)) for s in starts}
    n_truth = {s: min(wanted[s], truth.n_steps - s) for s in starts}
    notes = [truth.note] if truth.note else []
    sc = truth.scenario
    if sc.name in PRESCRIBED_FLOW:
        notes.append(f"{sc.name}: the flow is prescribed, so the partially coupled stage and "
                     "this online run coincide")
    full = {v: torch.cat([truth.states[v][s + 1:s + 1 + n_truth[s]] for s in starts])
            for v in truth.variables}
    truth_stats = {v: stats.field_statistics(truth.mesh, full[v]) for v in truth.variables}
    spectral = all(truth_stats[v]["spectrum"] is not None for v in truth.variables)
    if not spectral:
        why = next(truth_stats[v].get("spectrum_note", "") for v in truth.variables)
        notes.append(f"no spectra on this mesh, the spectrum distance is left out ({why})")
    elif kmax is None:
        from .spectra import spectrum_kmax

        kmax = float(spectrum_kmax(truth.mesh))
    plans = []
    for name, c in rows.items():
        if getattr(c, "mode", None) == "sample":
            parts = [c] * int(realizations)
        elif isinstance(c, EnsembleClosure):
            parts = list(c.members)
        else:
            parts = [c]
        plans.append((name, c, parts))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(len(p) for _, _, p in plans) * len(starts), desc="online",
                   unit="run", leave=False, disable=None)
    metrics: Dict[str, Dict[str, Any]] = {}
    series: Dict[str, Dict[str, Any]] = {}
    try:
        for name, c, parts in plans:
            runs = []
            for part in parts:
                real = []
                for j, s in enumerate(starts):
                    replay = replay_forcing if name == "replay" else None
                    audit = audit_members is None or j < audit_members
                    total = n_truth[s] if replay else wanted[s] + int(audit_steps) * audit
                    real.append(run_member(truth, None if replay else part, s, n_truth[s],
                                           total, float(growth_bound), replay=replay))
                    if bar is not None:
                        bar.update(1)
                runs.append(real)
            metrics[name], series[name] = _summarise(truth, runs, n_truth, truth_stats, kmax)
    finally:
        if bar is not None:
            bar.close()
    table = similarity_table({name: {f"{v}.{k}": d for v, row in m["distances"].items()
                                     for k, d in row.items()}
                              for name, m in metrics.items()})
    if "skipped" in table:
        notes.append(f"left out of the similarity scores (no closure is at distance 0 or "
                     f"inf from the truth there, so they cannot rank closures): "
                     f"{sorted(table['skipped'])}")
    for name, m in metrics.items():
        row = table[name]
        m["similarity"] = {v: {} for v in m["distances"]}
        for key, score in row.items():
            if key != "mean":
                v, _, k = key.partition(".")
                m["similarity"][v][k] = score
        m["similarity_mean"] = row["mean"]
        if name in table.get("notes", {}):
            notes.append(f"{name}: {table['notes'][name]}")
        if m["blowup_step"] is not None:
            where = "inside" if not m["complete"] else "after"
            notes.append(f"{name}: blew up at step {m['blowup_step']} (t = "
                         f"{m['time_to_blowup']:.4g} after its start; {m['blowup_reason']}), "
                         f"{where} the truth window" + ("; its statistics are inf (it did not "
                                                        "produce them)" if where == "inside"
                                                        else ""))
    t0, t1 = float(truth.t[starts[0]]), float(max(truth.t[s + n_truth[s]] for s in starts))
    window: Dict[str, Any] = {"t0": t0, "t1": t1, "n_steps": int(round((t1 - t0)
                                                                       / truth.coarse_dt)),
                              "coarse_dt": truth.coarse_dt, "split": split, "run": truth.run,
                              "starts": [float(truth.t[s]) for s in starts],
                              "member_steps": [n_truth[s] for s in starts],
                              "audit_steps": int(audit_steps),
                              "audit_members": len(starts) if audit_members is None
                              else min(int(audit_members), len(starts)), "kmax": kmax,
                              "growth_bound": float(growth_bound)}
    rate = sc.params.get("relax_rate")
    if rate:
        window["relaxation_times"] = (t1 - t0) * float(rate)
    if truth.forcing_mean:
        notes.append("replay: the truth's step-mean subgrid flux with " + (
            "its step-mean forcing" if replay_forcing == "replay" else
            "the coarse model's own forcing restrict(F(t)) at the stage times"))
    notes.append(f"statistics over t = {t0:.4g} … {t1:.4g} ({window['n_steps']} coarse steps"
                 + (f", {window['relaxation_times']:.3g} relaxation times" if rate else "")
                 + f"), {len(starts)} members against the truth at the same times; "
                 "'replay' covers the truth's span only")
    out = OnlineResult(metrics=metrics, error_growth={}, spectra={}, maps={}, values={},
                       budget_series={}, spread_skill={}, window=window, notes=notes)
    for name, st in [("truth", {"stats": truth_stats})] + list(series.items()):
        for v, s in st["stats"].items():
            if s.get("spectrum") is not None:
                out.spectra.setdefault(name, {})[v] = s["spectrum"]
            out.maps.setdefault(name, {})[v] = {"mean": s["mean"], "variance": s["variance"]}
            out.values.setdefault(name, {})[v] = stats.subsample(s["values"], s["weights"])
    for name, st in series.items():
        out.error_growth[name] = st["growth"]
        out.budget_series[name] = st["budget"]
        if st["spread"]:
            out.spread_skill[name] = st["spread"]
    return out
