"""Run a comparison: :func:`compare` (see :mod:`meshclosure.compare`).

Layout of ``out``::

    arguments.json              the arguments (a rerun must repeat them)
    data/<mesh>_s<seed>.nc      one trajectory dataset per mesh and seed
    data/<mesh>_s<seed>_tilted.nc   with ``rotation``: its tilted twin (sphere meshes)
    work/<mesh>_s<seed>/        calibration.json, one training folder per model
    cells/<mesh>_s<seed>_<cell>.json   one finished cell each (a model, or "references")
    table.csv, table.md, similarity.png
"""
from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from .._files import atomic_path
from ..errors import ArgumentError
from .arguments import DEFAULT_TRAIN, FORMAT, check_arguments, check_out
from .measure import MEMORY_METHOD, PeakRSS, coarse_model_for, count_parameters, step_seconds
from .table import collect, md_columns, read_cells, write_table

__all__ = ["compare", "CompareResult", "DEFAULT_TRAIN", "REFERENCES"]

_log = logging.getLogger("meshclosure.compare")

#: The cell holding the calibrated baselines, no closure and the truth replay.
REFERENCES = "references"


@dataclass
class CompareResult:
    """What :func:`compare` did.

    Attributes
    ----------
    out : Path
    rows : list of dict
        The table (:func:`~meshclosure.compare.table.collect`): mesh, closure, kind,
        metric, mean, sd, n, seeds, values.
    computed : list of str
        Cells computed by this call (``"<mesh> seed <s> <cell>"``).
    skipped : list of str
        Cells already finished in ``out`` (resumed, not recomputed).
    trained : int
        Models trained by this call.
    unsupported : list of str
        ``"<model> on <mesh>: <reason>"`` for every model that cannot run on a mesh.
    notes : list of str
    paths : dict of str -> Path
        ``csv``, ``md``, ``figure``.
    wall_s : float
    """

    out: Path
    rows: List[dict]
    computed: List[str] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)
    trained: int = 0
    unsupported: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    paths: Dict[str, Path] = field(default_factory=dict)
    wall_s: float = 0.0

    def value(self, mesh: str, closure: str, metric: str) -> float:
        """The mean over seeds of one number (NaN if the table lacks it)."""
        for r in self.rows:
            if (r["mesh"], r["closure"], r["metric"]) == (mesh, closure, metric):
                return r["mean"]
        return float("nan")



def _generate_once(scenario, data: Path, args: Dict[str, Any], info: Path, progress: bool,
                   say) -> None:
    """Write the trajectory dataset ``data`` of ``scenario`` with the comparison's sizes,
    unless it exists (a rerun reuses it); its generation time goes to ``info``."""
    from ..data import generate

    if data.is_file():
        return
    t0 = time.perf_counter()
    generate(scenario, data, n_samples=args["n_samples"], ood_samples=args["ood_samples"],
             fractions=tuple(args["fractions"]), trajectory=True, progress=progress,
             allow_unconverged=args["allow_unconverged"])
    _write_json(info, {"generate_s": time.perf_counter() - t0})
    say(f"generated {data.name} ({time.perf_counter() - t0:.1f} s)")

def _tag(mesh: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", mesh).strip("-")


def _write_json(path: Path, obj: Any) -> None:
    with atomic_path(path, ".json") as tmp:
        Path(tmp).write_text(json.dumps(obj, indent=1, default=str))


# ------------------------------------------------------------------------ compare
def compare(scenario: str, models: Any, meshes: Any, seeds: int = 3, *,
            out: Any, factor: int = 4, n_samples: int = 200, ood_samples: int = 20,
            fractions: Sequence[float] = (0.4, 0.1, 0.5),
            train: Optional[Mapping[str, Any]] = None,
            model_config: Optional[Mapping[str, Mapping[str, Any]]] = None,
            scenario_config: Optional[Mapping[str, Any]] = None, n_initial: int = 3,
            n_steps: Optional[int] = None, audit_steps: int = 0,
            stages: Sequence[str] = ("offline", "online"), allow_unconverged: bool = False,
            rotation: Any = None, progress: bool = False,
            echo: Optional[Callable[[str], None]] = None
            ) -> CompareResult:
    """Train and validate every model on every mesh family it supports, over seeds, and
    write the comparison table (see :mod:`meshclosure.compare`).

    Parameters
    ----------
    scenario : str
        ``"kinematic"``, ``"barotropic"`` or ``"convection"``.
    models : str or list of str
        Registered model names (``"mgn,cnn"``); a model whose families exclude a mesh's
        coarse family is skipped there and named in the notes.
    meshes : str or list of str
        Fine-mesh specs (``"cartesian:32,healpix:8"``), coarsened by ``factor``.
    seeds : int
        Seeds ``0 .. seeds-1`` (>= 2; 3 or more for a published table): seed ``s`` is the
        scenario's seed (its own dataset) and every model's training seed.
    out : path
        The comparison folder; a rerun with the same arguments resumes it (finished cells
        are skipped), other arguments are refused.
    factor, n_samples, ood_samples, fractions
        The datasets (:func:`~meshclosure.data.generate` with ``trajectory=True``).
    train : dict, optional
        :class:`~meshclosure.train.TrainConfig` settings for every model, over
        :data:`DEFAULT_TRAIN` (equal updates: ``epochs × updates_per_epoch`` at one
        ``batch_size``; ``model`` and ``seed`` are set per cell, ``patience`` must be 0).
    model_config : {model: dict}, optional
        :func:`~meshclosure.nn.build_model` settings per model (default: its own).
    scenario_config : dict, optional
        Scenario parameters (:func:`~meshclosure.data.get_scenario`).
    n_initial, n_steps, audit_steps, stages
        Passed to :func:`~meshclosure.validate.validate` (offline and online by default).
    allow_unconverged : bool
        Passed to :func:`~meshclosure.data.generate` (``barotropic`` spin-ups).
    rotation : float or [tilt, azimuth], optional
        The symmetry test (degrees; ``kinematic`` and ``barotropic``): on every sphere mesh
        each seed also gets a TILTED dataset (same mesh, factor, seed and sizes, the
        scenario's ``rotation``), and every model trained at the default axis (its feature
        pipeline rebuilt for the tilted scenario, so it reads the tilted inputs) and every
        baseline calibrated there is validated on it: columns ``offline R² tilted`` and
        ``online similarity tilted`` (``tilted.*`` metrics in the CSV); n/a on planes. The
        meshes are not rotated with the physics, so an equivariant model keeps its skill
        only up to the mesh's own anisotropy.
    progress : bool
        Progress bars of training and validation.
    echo : callable, optional
        Receives one line per cell (also logged on ``meshclosure.compare``).

    Returns
    -------
    CompareResult

    Examples
    --------
    >>> compare("kinematic", "mgn,cnn", "cartesian:32", seeds=1, out="/tmp/never_written")
    Traceback (most recent call last):
    ...
    meshclosure.errors.ArgumentError: seeds=1: must be an integer >= 2 (a spread needs two seeds; ...
    """
    say = (lambda s: (_log.info("%s", s), echo(s))) if echo else (lambda s: _log.info("%s", s))
    start = time.perf_counter()
    args = check_arguments(scenario, models, meshes, seeds, factor, n_samples, ood_samples,
                      fractions, train, model_config, scenario_config, n_initial, n_steps,
                      audit_steps, stages, allow_unconverged, rotation)
    from ..data import get_scenario

    scenarios = {}
    for mesh in args["meshes"]:                          # bad specs fail before any work
        try:
            scenarios[mesh] = get_scenario(args["scenario"], mesh, factor=factor, seed=0,
                                           **args["scenario_config"])
        except ArgumentError:
            raise
        except (ValueError, TypeError) as err:
            raise ArgumentError("meshes", mesh, f"must build the scenario ({err})",
                                "pass a mesh spec the scenario accepts") from None
        if args["rotation"] is not None and scenarios[mesh].fine.is_sphere:
            get_scenario(args["scenario"], mesh, factor=factor, seed=0,     # refusals now
                         **args["scenario_config"], rotation=args["rotation"])
    runnable = {mesh: [] for mesh in args["meshes"]}
    unsupported = []
    for mesh in args["meshes"]:                          # and bad model settings too
        for m in args["models"]:
            reason = _unsupported(m, scenarios[mesh], args["model_config"].get(m, {}))
            if reason:
                unsupported.append(f"{m} on {mesh}: {reason}")
            else:
                runnable[mesh].append(m)
    out = Path(out)
    check_out(out, args)
    (out / "cells").mkdir(exist_ok=True)
    result = CompareResult(out=out, rows=[], unsupported=unsupported)
    for mesh in args["meshes"]:
        for seed in range(seeds):
            _mesh_seed(args, mesh, seed, runnable[mesh], out, result, say, progress)
    r2 = "step_mean." if args["train"].get("target") == "step_mean" else ""
    result.rows = collect(read_cells(out), args["meshes"], args["models"], range(seeds),
                          required=[k for k, _ in md_columns(
                              r2, tilted=args["rotation"] is not None)])
    for cell in read_cells(out):
        if cell.get("status") == "skipped":
            result.unsupported.append(f"{cell['cell']} on {cell['mesh']} (seed {cell['seed']}):"
                                      f" {cell['reason']}")
    result.notes = _notes(args, result, read_cells(out))
    header = _header(args, _compute_seconds(out, read_cells(out)))
    result.paths = write_table(result.rows, out, args["meshes"], result.notes, header, r2)
    result.wall_s = time.perf_counter() - start
    say(f"wrote {result.paths['md']} ({len(result.computed)} cells computed, "
        f"{len(result.skipped)} resumed, {result.wall_s:.1f} s)")
    return result


def _unsupported(model: str, scenario: Any, config: Mapping[str, Any]) -> str:
    """Why ``model`` cannot run on the scenario's coarse mesh ("" if it can): its families
    exclude the mesh's, or building it there raises :class:`UnsupportedMeshError`. Other
    errors of the build are bad ``model_config`` settings, refused here before any work."""
    from ..closures import FeaturePipeline
    from ..nn import build_model, model_families
    from ..nn.registry import UnsupportedMeshError

    mesh = scenario.coarse
    if mesh.family not in model_families(model):
        return f"supports {model_families(model)}, not the coarse family {mesh.family!r}"
    try:
        build_model(model, mesh, in_features=FeaturePipeline.from_scenario(scenario).n_features,
                    n_vars=len(scenario.variables), **config)
    except UnsupportedMeshError as err:
        return str(err)
    except (TypeError, ValueError) as err:
        raise ArgumentError("model_config", {model: dict(config)}, f"must hold settings "
                            f"{model} accepts on {mesh!r} ({err})",
                            "fix or drop them (see the model's docstring)") from None
    return ""


def _cell_path(out: Path, mesh: str, seed: int, cell: str) -> Path:
    return out / "cells" / f"{_tag(mesh)}_s{seed}_{cell}.json"


def _mesh_seed(args, mesh, seed, models, out, result, say, progress) -> None:
    """Every unfinished cell of one (mesh, seed): dataset, calibration, training, validation."""
    cells = list(models) + [REFERENCES]
    todo = [c for c in cells if not _cell_path(out, mesh, seed, c).is_file()]
    for c in cells:
        if c not in todo:
            result.skipped.append(f"{mesh} seed {seed} {c}")
    if not todo:
        return
    from ..data import get_scenario
    from ..nn.registry import UnsupportedMeshError
    from ..train import calibrate, save_calibration, train
    from ..validate import load_closure, validate

    tag = f"{_tag(mesh)}_s{seed}"
    work = out / "work" / tag
    work.mkdir(parents=True, exist_ok=True)
    (out / "data").mkdir(exist_ok=True)
    data = out / "data" / f"{tag}.nc"
    sc = get_scenario(args["scenario"], mesh, factor=args["factor"], seed=seed,
                      **args["scenario_config"])
    _generate_once(sc, data, args, work / "data_info.json", progress,
                   lambda s: say(f"{mesh} seed {seed}: {s}"))
    cal_path = work / "calibration.json"
    cal_info = work / "calibration_info.json"
    if not (cal_path.is_file() and cal_info.is_file()):
        t0 = time.perf_counter()
        with PeakRSS() as mem:
            cal = calibrate(str(data))
        save_calibration(cal, cal_path, overwrite=True)
        _write_json(cal_info, {"time_s": time.perf_counter() - t0,
                               "peak_memory_mib": mem.peak_growth_mib})
    cal = json.loads(cal_path.read_text())
    info_cal = json.loads(cal_info.read_text())

    trained: Dict[str, dict] = {}
    for m in [c for c in todo if c != REFERENCES]:
        folder = work / m
        info = folder / "compare_training.json"
        if not info.is_file() or not (folder / "model.pt").is_file():
            conf = {**args["train"], "model": m, "seed": seed,
                    "model_config": args["model_config"].get(m, {})}
            t0 = time.perf_counter()
            try:
                with PeakRSS() as mem:
                    res = train(str(data), folder, conf, resume=False, overwrite=True,
                                progress=progress)
            except UnsupportedMeshError as err:
                _write_json(_cell_path(out, mesh, seed, m),
                            {"format": FORMAT, "mesh": mesh, "seed": seed, "cell": m,
                             "status": "skipped", "reason": str(err), "rows": {}})
                result.computed.append(f"{mesh} seed {seed} {m}")
                say(f"{mesh} seed {seed}: {m} skipped ({err})")
                continue
            _write_json(info, {"train_time_s": time.perf_counter() - t0,
                               "peak_memory_mib": mem.peak_growth_mib,
                               "parameters": count_parameters(res.model),
                               "updates": args["train"]["epochs"]
                               * args["train"]["updates_per_epoch"]})
            result.trained += 1
            say(f"{mesh} seed {seed}: trained {m} ({time.perf_counter() - t0:.1f} s)")
        trained[m] = json.loads(info.read_text())

    closures = {m: load_closure(work / m / "model.pt", sc.coarse, sc.operators)[0]
                for m in trained}
    t0 = time.perf_counter()
    val = validate(str(data), closures=closures, baselines=cal, n_initial=args["n_initial"],
                   n_steps=args["n_steps"], audit_steps=args["audit_steps"],
                   stages=tuple(args["stages"]), progress=progress)
    wall = time.perf_counter() - t0
    tilted: Dict[str, Dict[str, float]] = {}
    if args["rotation"] is not None and sc.fine.is_sphere:
        t0 = time.perf_counter()
        tilted = _tilted(args, mesh, seed, list(trained), work, cal, out, say, progress)
        wall += time.perf_counter() - t0
    state, t, dt = _start_state(data, sc)
    from ..train import baseline_closures

    baselines = {k: v for k, v in baseline_closures(cal, sc).items() if k != "none"}
    stepped = dict(closures, **baselines)
    for name in list(trained) + ([REFERENCES] if REFERENCES in todo else []):
        if name == REFERENCES:
            rows = {}
            for b in baselines:
                rows[b] = {"kind": "baseline", **val.summary[b],
                           "parameters": _fitted_parameters(cal["baselines"][b]["closes"]),
                           "train_time_s": info_cal["time_s"],
                           "peak_memory_mib": info_cal["peak_memory_mib"],
                           "step_time_s": step_seconds(coarse_model_for(sc, stepped[b]),
                                                       state, t, dt)}
            rows["none"] = {"kind": "reference", **val.summary["none"], "parameters": 0,
                            "step_time_s": step_seconds(coarse_model_for(sc, None), state, t,
                                                        dt)}
            rows["replay"] = {"kind": "reference", **val.summary["replay"]}
        else:
            rows = {name: {"kind": "model", **val.summary[name], **{
                k: trained[name][k] for k in ("parameters", "train_time_s",
                                              "peak_memory_mib")},
                "step_time_s": step_seconds(coarse_model_for(sc, stepped[name]), state, t,
                                            dt)}}
        for row_name, row in rows.items():
            row.update({f"tilted.{k}": v for k, v in tilted.get(row_name, {}).items()})
        _write_json(_cell_path(out, mesh, seed, name),
                    {"format": FORMAT, "mesh": mesh, "seed": seed, "cell": name,
                     "status": "done", "rows": rows, "validate_wall_s": wall,
                     "notes": list(val.notes)})
        result.computed.append(f"{mesh} seed {seed} {name}")
    say(f"{mesh} seed {seed}: validated {', '.join(val.closures)} ({wall:.1f} s)")


def _tilted(args, mesh, seed, models, work, cal, out, say, progress) -> Dict[str, Dict]:
    """The symmetry test of one (mesh, seed): the tilted dataset (generated once), every
    model's closure with its feature pipeline rebuilt for the tilted scenario, the
    baselines calibrated at the default axis (``cal``; :func:`validate` rebuilds them for
    the tilted scenario of the data). Returns ``validate``'s summary ``{row: {metric}}``."""
    from ..data import get_scenario
    from ..validate import load_closure, validate

    sc = get_scenario(args["scenario"], mesh, factor=args["factor"], seed=seed,
                      **args["scenario_config"], rotation=args["rotation"])
    data = out / "data" / f"{_tag(mesh)}_s{seed}_tilted.nc"
    _generate_once(sc, data, args, work / "data_tilted_info.json", progress,
                   lambda s: say(f"{mesh} seed {seed}: {s}"))
    closures = {m: tilted_closure(load_closure(work / m / "model.pt", sc.coarse,
                                               sc.operators)[0], sc)
                for m in models}
    val = validate(str(data), closures=closures, baselines=cal, n_initial=args["n_initial"],
                   n_steps=args["n_steps"], audit_steps=args["audit_steps"],
                   stages=tuple(args["stages"]), progress=progress)
    return val.summary


def tilted_closure(closure: Any, scenario: Any) -> Any:
    """``closure`` (a loaded :class:`~meshclosure.closures.ModelClosure`) reading the
    inputs of ``scenario``: a saved model keeps the feature pipeline of its training data,
    whose scenario inputs (``N`` of kinematic, ``f`` of barotropic) would stay untilted on
    a tilted scenario; this rebuilds the pipeline with ``scenario.config`` (in place, and
    returns the closure). Closures without a feature pipeline are returned as they are.

    Examples
    --------
    >>> tilted_closure(None, None) is None
    True
    """
    from ..closures import FeaturePipeline

    features = getattr(closure, "features", None)
    if isinstance(features, FeaturePipeline):
        closure.features = FeaturePipeline.from_config({**features.config(),
                                                        "scenario_config": scenario.config})
    return closure


def _fitted_parameters(closes: Mapping[str, Any]) -> int:
    """Fitted numbers of a calibrated baseline: every ``X`` with an ``X_interval``."""
    n = 0
    for spec in closes.values():
        for k, v in spec.items():
            if f"{k}_interval" in spec:
                n += len(v) if isinstance(v, (list, tuple)) else 1
    return n


def _start_state(data: Path, sc: Any):
    """The first test state of ``data`` (float64), its model time and the coarse step."""
    import numpy as np
    import torch

    from ..data import read_dataset
    from ..data.dataset import SPLIT_CODES

    ds = read_dataset(data)
    codes = np.asarray(ds["split"].values)
    run, k = (int(i[0]) for i in np.nonzero(codes == SPLIT_CODES["test"]))
    state = {v: torch.as_tensor(np.asarray(ds[f"state_{v}"].isel(run=run, time=k).values,
                                           dtype=np.float64)) for v in sc.variables}
    t = float(ds["model_time"].isel(run=run, time=k).values)
    return state, t, float(sc.coarse_dt)


def _compute_seconds(out: Path, cells: Sequence[Mapping]) -> Dict[str, float]:
    """Seconds spent on the finished table, summed over (mesh, seed): data generation,
    calibration, training, validation (each validate() call once), step timing excluded."""
    total = {"generate": 0.0, "calibrate": 0.0, "train": 0.0, "validate": 0.0}
    groups: Dict[tuple, set] = {}
    for c in cells:
        if c.get("status") != "done":
            continue
        groups.setdefault((c["mesh"], c["seed"]), set()).add(c.get("validate_wall_s", 0.0))
        total["train"] += sum(r.get("train_time_s", 0.0) for r in c["rows"].values()
                              if r.get("kind") == "model")
    for (mesh, seed), walls in groups.items():
        work = out / "work" / f"{_tag(mesh)}_s{seed}"
        for name, key, into in (("data_info.json", "generate_s", "generate"),
                                ("data_tilted_info.json", "generate_s", "generate"),
                                ("calibration_info.json", "time_s", "calibrate")):
            try:
                total[into] += float(json.loads((work / name).read_text())[key])
            except (OSError, ValueError, KeyError):
                pass
        total["validate"] += sum(walls)
    return total


def _machine() -> str:
    import os
    import platform

    import torch

    return (f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPU cores, torch "
            f"{torch.__version__} with {torch.get_num_threads()} thread(s)")


def _header(args: Mapping[str, Any], seconds: Mapping[str, float]) -> List[str]:
    t = args["train"]
    parts = ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items())
    return ["# Architecture comparison", "",
            f"Scenario `{args['scenario']}`, meshes {', '.join(args['meshes'])} (factor "
            f"{args['factor']}), seeds 0–{args['seeds'] - 1}: mean ± standard deviation over "
            f"seeds (n seeds). Every model: {t['epochs']} epochs × {t['updates_per_epoch']} "
            f"updates at batch size {t['batch_size']}, target `{t.get('target')}`.", "",
            f"Compute time of the table: {sum(seconds.values()):.0f} s ({parts}); machine: "
            f"{_machine()}.", ""]


def _notes(args, result: CompareResult, cells) -> List[str]:
    notes = []
    for u in sorted(set(result.unsupported)):
        notes.append(f"skipped: {u}")
    notes += [
        "solver step: median wall time of one coarse SSP-RK3 step with the closure (the "
        "none row: without a closure), raw; replay reads stored fluxes (n/a)",
        f"peak memory: {MEMORY_METHOD}; models during training, baselines during their "
        "(joint) calibration",
        "training time: wall time of train(); baselines: of calibrate() (all baselines "
        "together)",
        "offline R²: " + ("against the step-mean subgrid flux (the training target)"
                          if args["train"].get("target") == "step_mean" else
                          "against the instantaneous subgrid flux"),
        "time to blow-up: ∞ = no blow-up within the run; similarity: 0 no closure, 1 truth"]
    if args["rotation"] is not None:
        notes.append(
            f"tilted (rotation={json.dumps(args['rotation'])}°): models trained and "
            "baselines calibrated at the default axis, tested on a dataset of the same mesh, "
            "seed and sizes whose axes (N, relaxation pattern, Ω) are tilted; the models "
            "read the tilted inputs. The mesh is not rotated with the physics, so even an "
            "equivariant model keeps its skill only approximately; planes: n/a (no axis to "
            "tilt)")
    seen = sorted({n for c in cells for n in c.get("notes", [])})
    notes += seen
    if args["seeds"] < 3:
        notes.append(f"only {args['seeds']} seeds: spreads are rough")
    return notes
