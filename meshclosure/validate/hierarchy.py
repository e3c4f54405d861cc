"""The whole validation hierarchy in one call: :func:`validate` (DESIGN.md §9).

Offline skill on the test and out-of-distribution splits
(:mod:`~meshclosure.validate.offline`), the partially coupled stage (the tracer
under the truth's flow, :mod:`~meshclosure.validate.coupled`; the single-column
model for ``convection``, :mod:`~meshclosure.validate.column`), and long online
runs from several truth initial states with the blow-up detector, the budget
audit and the emergent statistics (:mod:`~meshclosure.validate.online`), for a
learned closure next to the calibrated baselines, no closure (the zero of every
similarity score) and the truth replay (its upper bound). :func:`validate`
returns a :class:`ValidationResult`; with ``out`` it also writes the report
folder (:mod:`~meshclosure.validate.report`).
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from ..errors import ArgumentError

__all__ = ["ValidationResult", "validate", "load_closure", "HEADLINE"]

_log = logging.getLogger("meshclosure.validate")

#: The headline numbers every closure gets in ``metrics.json`` / ``metrics.csv`` (NaN
#: where a stage does not apply). ``offline.r2`` / ``offline.corr``: against the
#: instantaneous subgrid flux; ``offline.step_mean.r2``: against the step-mean flux of a
#: trajectory dataset (what the coarse model needs over one step; the replay scores 1).
HEADLINE = ("offline.r2", "offline.corr", "offline.step_mean.r2", "offline.ood.r2",
            "offline.ood.corr",
            "online.similarity_mean", "online.time_to_blowup", "online.conservation_drift")

#: Closures every table carries besides the learned ones.
REFERENCE_ROWS = ("replay", "none")


@dataclass
class ValidationResult:
    """What :func:`validate` measured.

    Attributes
    ----------
    scenario : str
        The dataset's scenario.
    closures : list of str
        Row names: the learned closure(s), the baselines, ``"none"``, ``"replay"``.
    summary : dict
        ``{closure: {metric: value}}``: :data:`HEADLINE` and the stage headlines
        (``coupled.*``, ``column.*``), floats (NaN: not applicable).
    offline : dict
        ``{split: {closure: offline metrics}}`` (:func:`~meshclosure.validate.offline_table`).
    online, coupled, column : result objects or None
        :class:`~meshclosure.validate.online.OnlineResult`,
        the prescribed-flow and single-column results (``None`` where the stage
        does not apply; ``notes`` say why).
    keff : dict or None
        ``{"nodes", "curves": {name: K}, "train_range"}`` of the primary
        variable on the training split (scenarios with an ``N``).
    training : list of dict
        The model folder's ``metrics.csv`` rows (empty when there is none).
    notes : list of str
    timings : dict
        Seconds per stage.
    info : dict
        Dataset, model and settings.
    """

    scenario: str
    closures: List[str]
    summary: Dict[str, Dict[str, float]]
    offline: Dict[str, Any]
    online: Any = None
    coupled: Any = None
    column: Any = None
    keff: Optional[dict] = None
    training: List[dict] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    timings: Dict[str, float] = field(default_factory=dict)
    info: Dict[str, Any] = field(default_factory=dict)
    mesh: Any = None
    out: Optional[Path] = None

    def rows(self) -> List[dict]:
        """Every number as ``{closure, stage, metric, variable, split, value}`` rows."""
        rows: List[dict] = []
        for name, metrics in self.summary.items():
            for key, value in metrics.items():
                stage, _, metric = key.partition(".")
                rows.append({"closure": name, "stage": stage, "metric": metric,
                             "variable": "", "split": "", "value": _float(value)})
        for split, table in self.offline.items():
            for name, metrics in table.items():
                if not isinstance(metrics, Mapping):
                    continue
                for key, value in metrics.items():
                    if isinstance(value, (int, float)) and not isinstance(value, bool):
                        var, metric = _split_key(key)
                        rows.append({"closure": name, "stage": "offline", "metric": metric,
                                     "variable": var, "split": split, "value": float(value)})
        for stage, result in (("online", self.online), ("coupled", self.coupled),
                              ("column", self.column)):
            if result is not None and hasattr(result, "rows"):
                for row in result.rows():
                    rows.append({"closure": row.get("closure", ""), "stage": stage,
                                 "metric": row.get("metric", ""),
                                 "variable": row.get("variable", "") or "",
                                 "split": row.get("split", "") or "",
                                 "value": _float(row.get("value"))})
        return rows

    def table(self, columns: Sequence[str] = HEADLINE, fmt: str = "{:.3g}") -> str:
        """The summary as a Markdown table (one row per closure)."""
        head = "| closure | " + " | ".join(columns) + " |"
        lines = [head, "|" + "---|" * (len(columns) + 1)]
        for name in self.closures:
            cells = []
            for c in columns:
                v = self.summary.get(name, {}).get(c, float("nan"))
                cells.append("n/a" if v is None or (isinstance(v, float) and math.isnan(v))
                             else fmt.format(v))
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        return "\n".join(lines)


def _float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _split_key(key: str):
    """``"q.tendency.r2"`` -> ``("q", "tendency.r2")``; ``"r2"`` -> ``("", "r2")``;
    ``"step_mean.q.tendency.r2"`` -> ``("q", "step_mean.tendency.r2")`` (the target prefix
    stays on the metric)."""
    prefix = ""
    if key.startswith("step_mean."):
        prefix, key = "step_mean.", key[len("step_mean."):]
    head, _, rest = key.partition(".")
    if rest and head and not head.startswith(("band", "flux", "tendency", "coverage")) \
            and head not in ("r2", "corr", "rmse", "crps", "n_samples"):
        return head, prefix + rest
    return "", prefix + key


# ---------------------------------------------------------------------------- loading
def load_closure(model: Any, mesh: Any, operators: Optional[str] = None):
    """A learned closure from ``model``: a ``model.pt`` file, a training folder (its
    ``model.pt``, or its ``ensemble.json`` for an ensemble), or a closure object
    (returned as it is). Returns ``(closure, folder or None, name)``. ``operators``:
    the data's operator version; a model file of another one is refused
    (:func:`~meshclosure.nn.load_model`)."""
    from ..closures import Closure
    from ..nn import load_model
    from ..train import load_ensemble

    if isinstance(model, Closure) or callable(model) and not isinstance(model, (str, os.PathLike)):
        return model, None, type(model).__name__
    path = Path(model)
    if path.is_dir():
        if (path / "ensemble.json").is_file():
            return (load_ensemble(path, mesh, operators=operators), path,
                    _model_name(path) + " ensemble")
        path = path / "model.pt"
    if not path.is_file():
        raise ArgumentError("model", str(model), "must be a model.pt file from `meshclosure "
                            "train`, or its folder", "train one with `meshclosure train "
                            "--data FILE --out DIR` and pass DIR/model.pt")
    loaded = load_model(path, mesh, operators=operators)
    return loaded.closure(), path.parent, _model_name(path.parent)


def _model_name(folder: Path) -> str:
    try:
        return str(json.loads((folder / "config.json").read_text()).get("model", "learned"))
    except (OSError, ValueError):
        return "learned"


def _training_rows(folder: Optional[Path]) -> List[dict]:
    if folder is None or not (folder / "metrics.csv").is_file():
        return []
    import csv

    with open(folder / "metrics.csv", newline="") as fh:
        return [{k: _maybe_float(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def _maybe_float(v: str) -> Any:
    try:
        return float(v)
    except (TypeError, ValueError):
        return v


def _calibration(baselines: Any, data: Any) -> dict:
    from ..train import calibrate, load_calibration

    if baselines is None:
        return calibrate(data)
    if isinstance(baselines, Mapping):
        return dict(baselines)
    path = Path(baselines)
    if path.is_dir():
        path = path / "calibration.json"
    if not path.is_file():
        raise ArgumentError("baselines", str(baselines), "must be a folder holding "
                            "calibration.json (or the file itself)",
                            "write one with `meshclosure calibrate --data FILE --out DIR`")
    return load_calibration(path)


# ---------------------------------------------------------------------------- validate
def validate(data: Any, model: Any = None, *, closures: Optional[Mapping[str, Any]] = None,
             baselines: Any = None, out: Any = None, overwrite: bool = False,
             split: str = "test", n_initial: int = 3, n_steps: Optional[int] = None,
             audit_steps: int = 0, audit_members: Optional[int] = 1,
             kmax: Optional[float] = None, stages: Sequence[str] = (
                 "offline", "coupled", "online"), progress: bool = False,
             echo: Optional[Callable[[str], None]] = None) -> ValidationResult:
    """Run the validation hierarchy for a learned closure and its references.

    Parameters
    ----------
    data : path or xarray.Dataset
        A TRAJECTORY dataset (``meshclosure generate --trajectory``): the online
        and partially coupled stages compare with its coarse-grained truth at
        every coarse step and replay its step-mean subgrid flux.
    model : path or Closure, optional
        ``DIR/model.pt`` (or ``DIR``; an ensemble folder gives its
        :class:`~meshclosure.train.EnsembleClosure`) from ``meshclosure train``;
        its row is named after the model (``config.json``).
    closures : {name: closure}, optional
        More closures to validate (e.g. several seeds).
    baselines : folder, calibration.json or dict, optional
        The calibrated baselines (``meshclosure calibrate``); default: calibrated
        on ``data`` now.
    out : path, optional
        Write the report folder there (:func:`~meshclosure.validate.write_report`).
    overwrite : bool
        Replace an existing report folder.
    split : str
        The split the online and coupled stages start from (default ``"test"``).
    n_initial : int
        Truth initial states of the online ensemble (>= 3 by default rule).
    n_steps : int, optional
        Coarse steps compared with the truth (default: to the end of the split).
    audit_steps : int
        More steps past the truth (stability and budget only).
    audit_members : int or None
        How many members (from the first initial state on) continue past the
        truth for the audit (default 1; ``None``: all).
    kmax : float, optional
        Highest wavenumber / degree of the spectrum distance.
    stages : sequence of str
        Any of ``"offline"``, ``"coupled"``, ``"online"`` (the single-column
        model is the coupled stage of ``convection``).
    progress : bool
    echo : callable, optional
        Receives one line per stage.

    Returns
    -------
    ValidationResult
    """
    from ..data import read_dataset
    from ..data.dataset import fill_operator_version
    from ..data.scenarios import Scenario

    say = echo or (lambda s: _log.info("%s", s))
    unknown = set(stages) - {"offline", "coupled", "online"}
    if unknown or isinstance(stages, str) or not len(stages):
        raise ArgumentError("stages", list(stages) if not isinstance(stages, str) else stages,
                            "must be a list of 'offline', 'coupled', 'online'",
                            "pass e.g. stages=('offline', 'online')")
    if isinstance(n_initial, bool) or not isinstance(n_initial, int) or n_initial < 1:
        raise ArgumentError("n_initial", n_initial, "must be a whole number >= 1 (3 or more "
                            "for an ensemble)", "pass e.g. n_initial=3")
    if out is not None:
        from .report import check_out

        check_out(out, overwrite)                  # refuse before any work
    ds = read_dataset(data) if isinstance(data, (str, os.PathLike)) else data
    fill_operator_version(ds)          # a dataset from before versions: its configs are fv1
    if {"coupled", "online"} & set(stages) and int(ds.attrs.get("trajectory", 0)) != 1:
        raise ArgumentError("data", str(data) if isinstance(data, (str, os.PathLike)) else
                            "dataset", "must be a trajectory dataset for the coupled and online "
                            "stages (they compare with the truth at every coarse step and "
                            "replay its step-mean flux)", "generate it with trajectory=True "
                            "(`meshclosure generate ... --trajectory`), or pass "
                            "stages=('offline',)")
    config = json.loads(ds.attrs["scenario_config"]) if isinstance(
        ds.attrs.get("scenario_config"), str) else ds.attrs.get("scenario_config")
    scenario = Scenario.from_config(config)
    mesh = scenario.coarse
    timings: Dict[str, float] = {}
    notes: List[str] = []

    t0 = time.perf_counter()
    cal = _calibration(baselines, data)
    rows: Dict[str, Any] = {}
    folder = None
    if model is not None:
        learned, folder, name = load_closure(model, mesh, scenario.operators)
        rows[name] = learned
    baseline_rows = {k: v for k, v in _baselines(cal, scenario).items() if k != "none"}
    for name, c in (closures or {}).items():
        if name in REFERENCE_ROWS + ("truth",) or name in rows or name in baseline_rows:
            raise ArgumentError("closures", name, f"must not repeat a row name (reserved: "
                                f"{REFERENCE_ROWS + ('truth',)}, the model {list(rows)}, the "
                                f"baselines {sorted(baseline_rows)})", "rename it")
        rows[name] = c
    clash = set(rows) & set(baseline_rows)
    if clash:
        raise ArgumentError("model", sorted(clash), "must not be named like a baseline row",
                            "pass the model as closures={'learned': ...} instead")
    rows.update(baseline_rows)
    timings["load_and_calibrate"] = time.perf_counter() - t0
    names = list(rows) + ["none", "replay"]
    summary: Dict[str, Dict[str, float]] = {n: {k: float("nan") for k in HEADLINE}
                                            for n in names}

    offline: Dict[str, Any] = {}
    if "offline" in stages:
        t0 = time.perf_counter()
        offline = _offline(rows, cal, scenario, data, ds, summary, notes)
        timings["offline"] = time.perf_counter() - t0
        r2 = ", ".join(f"{n} R² {summary[n]['offline.r2']:.3f}" for n in names)
        say(f"offline: {r2} ({timings['offline']:.1f} s)")

    coupled = column = None
    if "coupled" in stages:
        t0 = time.perf_counter()
        coupled, column = _coupled(rows, cal, scenario, data, split, n_initial, summary,
                                   notes, progress)
        timings["coupled"] = time.perf_counter() - t0
        line = _stage_line(summary, names, "column.profile_rmse" if column is not None
                           else "coupled.similarity")
        if coupled is None and column is None:
            line = (f"{scenario.name}: the flow is prescribed, so this stage coincides with "
                    "the online run")
        say(f"partially coupled: {line} ({timings['coupled']:.1f} s)")

    online = None
    if "online" in stages:
        from .online import online_validation

        t0 = time.perf_counter()
        online = online_validation(data, rows, split=split, n_initial=n_initial,
                                   n_steps=n_steps, audit_steps=audit_steps,
                                   audit_members=audit_members, kmax=kmax,
                                   progress=progress)
        for name, m in online.metrics.items():
            s = summary.setdefault(name, {k: float("nan") for k in HEADLINE})
            for key in ("similarity_mean", "time_to_blowup", "conservation_drift"):
                if key in m:
                    s[f"online.{key}"] = _float(m[key])
            # per variable too: one metric whose no-closure distance is tiny can dominate
            # the mean over every metric and variable
            for var, scores in (m.get("similarity") or {}).items():
                finite = [v for v in scores.values() if isinstance(v, (int, float))]
                if finite and len(m.get("similarity")) > 1:
                    s[f"online.similarity_mean.{var}"] = _float(sum(finite) / len(finite))
        notes += [f"online: {n}" for n in getattr(online, "notes", [])]
        timings["online"] = time.perf_counter() - t0
        say(f"online: {_stage_line(summary, names, 'online.similarity_mean')} "
            f"({timings['online']:.1f} s)")

    keff = _keff(rows, cal, data)
    result = ValidationResult(
        scenario=scenario.name, closures=names, summary=summary, offline=offline,
        online=online, coupled=coupled, column=column, keff=keff,
        training=_training_rows(folder), notes=notes, timings=timings, mesh=mesh,
        info={"data": str(data) if isinstance(data, (str, os.PathLike)) else "<dataset>",
              "model": str(model) if isinstance(model, (str, os.PathLike)) else
              (type(model).__name__ if model is not None else None),
              "baselines": sorted(baseline_rows), "split": split, "n_initial": n_initial,
              "n_steps": n_steps, "audit_steps": audit_steps, "audit_members": audit_members,
              "scenario_config": scenario.config,
              "calibration": {k: cal["baselines"][k]["closes"] for k in cal["baselines"]}})
    if out is not None:
        from .report import write_report

        t0 = time.perf_counter()
        result.out = write_report(result, out, overwrite=overwrite)
        result.timings["report"] = time.perf_counter() - t0
        say(f"report: {result.out / 'index.html'}")
    return result


def _stage_line(summary, names, key) -> str:
    parts = []
    for n in names:
        hits = [k for k in summary.get(n, {}) if k.startswith(key)]
        if hits:
            parts.append(f"{n} {hits[0].split('.', 1)[-1]} {summary[n][hits[0]]:.3g}")
    return ", ".join(parts) or "nothing to report"


def _baselines(cal: Mapping, scenario: Any) -> Dict[str, Any]:
    from ..train import baseline_closures

    return baseline_closures(cal, scenario)


def _offline(rows, cal, scenario, data, ds, summary, notes) -> Dict[str, Any]:
    """Offline metrics on the test and OOD splits (the OOD baselines read the OOD
    scenario's inputs)."""
    import numpy as np

    from ..data.dataset import SPLIT_CODES
    from ..train.diffusivity import load_table
    from .offline import offline_metrics

    codes = np.asarray(ds["split"].values)
    out: Dict[str, Any] = {}
    for split in ("test", "ood"):
        if not (codes == SPLIT_CODES[split]).any():
            notes.append(f"offline: the dataset has no {split!r} split; skipped")
            continue
        closures = dict(rows)
        if split == "ood":
            closures.update({k: v for k, v in _baselines(cal, scenario.ood()).items()
                             if k != "none" and k in rows})
        samples = load_table(data, split)                  # read the split once
        target = "both" if samples.flux_mean is not None else "instantaneous"
        table = {}
        for name, closure in list(closures.items()) + [("none", None)]:
            table[name] = offline_metrics(closure, samples, split=split, target=target)
        if samples.flux_mean is not None:
            table["replay"] = _replay_offline(samples)
        out[split] = table
        prefix = "offline." if split == "test" else "offline.ood."
        for name, m in table.items():
            for key in ("r2", "corr", "step_mean.r2", "step_mean.corr"):
                if key in m or not key.startswith("step_mean"):
                    summary[name][prefix + key] = _float(m.get(key))
    return out


def _replay_offline(samples) -> Dict[str, float]:
    """The replay's offline scores: its prediction is the stored step-mean flux, so it
    scores 1 against the step mean; against the instantaneous flux it is measured (the
    part of the subgrid flux that varies within a coarse step)."""
    import numpy as np

    from ..fv import divergence
    from .metrics import skill

    mesh = samples.mesh
    V = mesh.cell_volume.double()
    out: Dict[str, float] = {}
    for v in samples.variables:
        pred = -divergence(mesh, samples.flux_mean[v].T.contiguous()).T
        true = -divergence(mesh, samples.flux[v].T.contiguous()).T
        s = skill(pred, true, weights=V)
        out[f"{v}.tendency.r2"], out[f"{v}.tendency.corr"] = s.r2, s.corr
    out["r2"] = float(np.mean([out[f"{v}.tendency.r2"] for v in samples.variables]))
    out["corr"] = float(np.mean([out[f"{v}.tendency.corr"] for v in samples.variables]))
    out["step_mean.r2"] = out["step_mean.corr"] = 1.0
    return out


def _coupled(rows, cal, scenario, data, split, n_initial, summary, notes, progress):
    from ..data.trajectory import PRESCRIBED_FLOW

    coupled = column = None
    if scenario.name == "convection":
        from .column import single_column

        # from rest: the truth's mixed layer deepens, so its growth can be compared; one
        # truth run per seed (scenario seed, seed + 1, ...), n_initial of them
        column = single_column(scenario, rows, n_seeds=max(n_initial, 1))
        for name, m in column.metrics.items():
            s = summary.setdefault(name, {k: float("nan") for k in HEADLINE})
            for key, value in m.items():
                s[f"column.{key}"] = _float(value)
        notes += [f"column: {n}" for n in getattr(column, "notes", [])]
    elif scenario.name in PRESCRIBED_FLOW:
        notes.append(f"partially coupled: {scenario.name}: the flow is prescribed in every "
                     "coarse run, so the partially coupled stage coincides with the online "
                     "run (see the online rows)")
    else:
        from .coupled import prescribed_flow

        coupled = prescribed_flow(data, rows, split=split, n_initial=n_initial)
        for name, m in coupled.metrics.items():
            s = summary.setdefault(name, {k: float("nan") for k in HEADLINE})
            for key, value in m.items():
                s[f"coupled.{key}"] = _float(value)
        notes += [f"partially coupled: {n}" for n in getattr(coupled, "notes", [])]
    return coupled, column


def _keff(rows, cal, data) -> Optional[dict]:
    """K_eff(N) of the truth, the baselines (from the calibration) and the learned rows."""
    from ..train import effective_diffusivity

    keff = cal.get("keff") or {}
    if not keff:
        return None
    var = next(iter(keff))
    entry = keff[var].get("train")
    if not entry:
        return None
    nodes = entry["nodes"]
    curves = {"truth": entry["truth"]}
    curves.update({k: v for k, v in entry.items() if k in cal["baselines"] and k != "none"})
    for name, closure in rows.items():
        if name in curves or name in cal["baselines"]:
            continue
        try:
            _, K = effective_diffusivity(closure, data, "train", nodes=nodes, var=var)
        except (ArgumentError, ValueError, TypeError) as err:   # e.g. a tendency closure
            _log.info("K_eff of %s skipped: %s", name, err)
            continue
        curves[name] = [float(k) for k in K]
    return {"var": var, "measure": keff[var].get("measure"), "nodes": list(nodes),
            "curves": {k: list(map(float, v)) for k, v in curves.items()},
            "train_range": keff[var].get("train_range")}
