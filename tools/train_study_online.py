"""Issue 11's online and uncertainty findings, measured: offline against offline-then-online
training, the dissipation penalty, and an ensemble's epistemic spread, coverage and fallback.

Usage::

    OMP_NUM_THREADS=1 python tools/train_study_online.py            # the full study (~45 min)
    OMP_NUM_THREADS=1 python tools/train_study_online.py --quick    # tiny meshes, code paths only
    python tools/train_study_online.py --report                     # rewrite tables from parts

Parts (``--parts``, default all):

``online``
    Per case (``kinematic`` on ``cartesian:64`` factor 4; ``barotropic`` on its default
    plane) and training seed ``s`` in {0, 1, 2}, on one trajectory dataset (data seed 0):
    an offline-only run and an offline-then-online run with the same model, batch size,
    epochs and optimiser updates per epoch (``updates_per_epoch``: equal updates). The
    online run switches to the online loss at ``online_start`` with a rollout-length
    curriculum. Both keep their final EMA weights (no best-epoch pick: the online run's
    validation loss changes meaning with ``K``). Evaluation on a held-out trajectory run
    (another data seed, its long test block): the coarse model unrolled from windows
    ``stride`` steps apart, the volume-weighted RMSE of each variable after 10 and 50 coarse
    steps divided by the training split's standard deviation of that variable, for the
    learned closures, no closure, and the replay of the true step-mean flux (the bounds).
    Paired differences (online − offline) over the seeds with their standard error;
    non-finite rollouts are counted as blow-ups, never dropped silently.
``dissipation``
    The offline runs above (``dissipation_weight`` 0) against the same training with
    ``dissipation_weight`` > 0: the fraction of samples whose learned flux produces
    variance, ``P = Σ_f Φ̂_f (Q_b − Q_a) > 0`` (:mod:`meshclosure.train.constraints`), on the
    training file's test split and on every sample of the held-out run.
``uncertainty``
    ``kinematic``: an ensemble of 5 heteroscedastic members on bootstrap resamples. The
    ratio of the mean epistemic standard deviation on the OOD run to the test split's;
    coverage of the 50 % and 90 % intervals of ``N(μ̄, s·(aleatoric + epistemic))`` pooled
    over faces and samples, with one scale ``s`` fitted on the validation split; CRPS
    (closed form) and the spread–skill ratio; the fallback to the calibrated power law with
    ``t1, t2`` chosen on the validation split, and the MSE of learned, baseline and blend.

Outputs (atomic): ``tools/results/train_study_online.{csv,md}`` (online, dissipation) and
``tools/results/train_study_uncertainty.{csv,md}``. Datasets and per-part results are kept
in ``--work`` (default ``/tmp/meshclosure_train_study_online``): a rerun reuses them, so a
part can be run alone (``--parts``) or in a second process, and ``--report`` assembles.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from meshclosure._files import atomic_path  # noqa: E402
from meshclosure.closures import ModelClosure  # noqa: E402
from meshclosure.data import SubgridDataset, TrajectoryDataset, generate, get_scenario  # noqa: E402
from meshclosure.data.scenarios import Scenario  # noqa: E402
from meshclosure.data.trajectory import replay_window  # noqa: E402
from meshclosure.train import TrainConfig, Trainer, face_gradient, face_mean, train  # noqa: E402
from meshclosure.train.calibrate import calibrate  # noqa: E402
from meshclosure.train.constraints import variance_production  # noqa: E402
from meshclosure.train.diffusivity import load_table  # noqa: E402
from meshclosure.train.fallback import blend_fluxes, choose_thresholds  # noqa: E402
from meshclosure.train.online import unroll  # noqa: E402
from meshclosure.train.uncertainty import (crps_gaussian, ensemble_predict,  # noqa: E402
                                           fit_variance_scale, interval_coverage,
                                           spread_skill_ratio, variance_split)

_log = logging.getLogger("train_study_online")
RESULTS = ROOT / "tools" / "results"

# ----------------------------------------------------------------------- settings
FULL = {
    "seeds": [0, 1, 2],
    "cases": {
        "kinematic": {"scenario": {"name": "kinematic", "mesh": "cartesian:64", "factor": 4},
                      "train": {"n_samples": 60, "ood_samples": 12},
                      "heldout": {"n_samples": 100, "fractions": [0.04, 0.04, 0.92]}},
        "barotropic": {"scenario": {"name": "barotropic"},
                       "train": {"n_samples": 60, "ood_samples": 0},
                       "heldout": {"n_samples": 100, "fractions": [0.04, 0.04, 0.92]}},
    },
    "horizons": [10, 50], "stride": 10, "max_windows": 5,
    "train": {"model": "mgn", "model_config": {"hidden": 32, "n_blocks": 2},
              "dtype": "float64", "batch_size": 4, "epochs": 10, "updates_per_epoch": 8,
              "lr": 1e-3, "schedule": "cosine", "ema_decay": 0.99},
    "online": {"online_start": 5, "online_steps": 1, "curriculum": [[5, 1], [7, 3], [9, 5]],
               "offline_weight": 0.0},
    "dissipation_weight": 1.0,
    "ensemble": {"ensemble": 5, "bootstrap": True,
                 "model_config": {"hidden": 32, "n_blocks": 2, "heteroscedastic": True},
                 "beta": 0.5},
}
QUICK = {
    "seeds": [0, 1],
    "cases": {
        "kinematic": {"scenario": {"name": "kinematic", "mesh": "cartesian:16", "factor": 2,
                                   "spinup_time": 0.5},
                      "train": {"n_samples": 24, "ood_samples": 4},
                      "heldout": {"n_samples": 16, "fractions": [0.15, 0.15, 0.7]}},
        "barotropic": {"scenario": {"name": "barotropic", "mesh": "cartesian:16", "factor": 2,
                                    "spinup_min_time": 0.2, "spinup_check": 0.2,
                                    "spinup_window": 0.2, "spinup_max_time": 0.4},
                       "train": {"n_samples": 24, "ood_samples": 0, "allow_unconverged": True},
                       "heldout": {"n_samples": 16, "fractions": [0.15, 0.15, 0.7],
                                   "allow_unconverged": True}},
    },
    "horizons": [2, 5], "stride": 2, "max_windows": 2,
    "train": {"model": "mgn", "model_config": {"hidden": 8, "n_blocks": 1},
              "dtype": "float64", "batch_size": 2, "epochs": 3, "updates_per_epoch": 2,
              "lr": 1e-3, "schedule": "cosine", "ema_decay": 0.99},
    "online": {"online_start": 1, "online_steps": 1, "curriculum": [[1, 1], [2, 2]],
               "offline_weight": 0.0},
    "dissipation_weight": 1.0,
    "ensemble": {"ensemble": 2, "bootstrap": True,
                 "model_config": {"hidden": 8, "n_blocks": 1, "heteroscedastic": True},
                 "beta": 0.5},
}


# --------------------------------------------------------------------------- data
def _scenario(spec: Mapping[str, Any], seed: int) -> Scenario:
    kw = dict(spec)
    return get_scenario(kw.pop("name"), seed=seed, **kw)


def dataset(work: Path, case: str, spec: Mapping[str, Any], role: str) -> Path:
    """The case's training (data seed 0) or held-out (data seed 1000) trajectory dataset,
    generated once into ``work``."""
    out = work / f"{case}_{role}.nc"
    if out.is_file():
        return out
    opts = dict(spec[role])
    seed = 0 if role == "train" else 1000
    t0 = time.perf_counter()
    generate(_scenario(spec["scenario"], seed), out, trajectory=True, progress=False,
             ood_samples=opts.pop("ood_samples", 0), **opts)
    _log.info("generated %s in %.0f s", out.name, time.perf_counter() - t0)
    _save_json(work / f"{case}_{role}.gen.json", {"wall_s": time.perf_counter() - t0,
                                                   "seed": seed, **spec[role]})
    return out


# ---------------------------------------------------------------------- training
def fit(path: Path, cfg: TrainConfig) -> Dict[str, Any]:
    """Train for exactly ``cfg.epochs`` epochs and keep the final EMA weights."""
    t0 = time.perf_counter()
    tr = Trainer(path, cfg, None, progress=False)
    for tr.epoch in range(cfg.epochs):
        tr.run_epoch()
    wall = time.perf_counter() - t0
    model = tr.eval_model.eval()
    closure = ModelClosure(model, tr.features, tr.normalizer, tr.data.variables)
    skipped = sum(int(r["skipped_updates"]) for r in tr.metrics)
    return {"model": model, "closure": closure, "trainer": tr, "wall_s": wall,
            "updates": tr.updates, "skipped": skipped, "metrics": tr.metrics}


# -------------------------------------------------------------------- evaluation
def _windows(path: Path, length: int, stride: int, limit: int) -> TrajectoryDataset:
    ds = TrajectoryDataset(path, "test", length, dtype=torch.float64)
    keep = [w for w in ds.windows if w[1] % stride == ds.windows[0][1] % stride][:limit]
    if not keep:
        raise RuntimeError(f"{path.name}: no test windows of {length} steps; generate more "
                           "held-out samples")
    ds.windows = keep
    return ds


def rollout_errors(scenario: Scenario, closure: Any, ds: TrajectoryDataset,
                   horizons: Sequence[int], scales: Mapping[str, float],
                   replay: bool = False) -> List[Dict[str, Any]]:
    """Per window and variable: the relative RMSE after each horizon, and the first step at
    which the rollout went non-finite (None if never)."""
    V = scenario.coarse.cell_volume.double()
    out = []
    for i in range(len(ds)):
        w = ds[i]
        with torch.no_grad():
            states = (replay_window(scenario, w) if replay
                      else unroll(scenario, closure, w, max(horizons)))
        for v in scenario.variables:
            bad = [j for j, s in enumerate(states) if not bool(torch.isfinite(s[v]).all())]
            row = {"window": i, "start": int(ds.windows[i][1]), "variable": v,
                   "blowup_step": (bad[0] + 1) if bad else None}
            for h in horizons:
                d = states[h - 1][v].double() - w["states"][v][h - 1].double()
                rmse = math.sqrt(float((V * d * d).sum() / V.sum()))
                row[f"err_{h}"] = rmse / scales[v] if math.isfinite(rmse) else math.nan
            out.append(row)
    return out


def _mean_errors(rows: List[Dict[str, Any]], horizons: Sequence[int]) -> Dict[str, Any]:
    """Mean over windows per variable; a window that blew up counts as a blow-up (its
    error is NaN and the mean over the finite windows is reported beside the count)."""
    res: Dict[str, Any] = {}
    for v in sorted({r["variable"] for r in rows}):
        sel = [r for r in rows if r["variable"] == v]
        res[v] = {"blowups": sum(r["blowup_step"] is not None for r in sel),
                  "windows": len(sel)}
        for h in horizons:
            vals = np.array([r[f"err_{h}"] for r in sel], float)
            res[v][f"err_{h}"] = float(np.nanmean(vals)) if np.isfinite(vals).any() else math.nan
            res[v][f"finite_{h}"] = int(np.isfinite(vals).sum())
    return res


def production_fraction(model: torch.nn.Module, normalizer: Any, path: Path, split: str,
                        stats: Any) -> Dict[str, float]:
    """Fraction of samples with positive variance production, per variable, for the learned
    flux and for the true ``Φ^sgs`` (physical units)."""
    norm = SubgridDataset(path, split, stats=stats, dtype=torch.float64)
    phys = SubgridDataset(path, split, normalize=False, dtype=torch.float64)
    if not len(norm):
        return {}
    b, p = (norm.collate([norm[i] for i in range(len(norm))]),
            phys.collate([phys[i] for i in range(len(phys))]))
    with torch.no_grad():
        out = model(norm.mesh, b.x)
        mean = out[0] if isinstance(out, tuple) else out
        flux = normalizer.denormalize_flux(mean).double()
    names = list(phys.input_names)
    res = {"n_samples": len(norm)}
    for i, v in enumerate(norm.variables):
        Q = p.x[..., names.index(f"state_{v}")]
        res[f"learned_{v}"] = float((variance_production(norm.mesh, flux[..., i], Q) > 0)
                                    .double().mean())
        res[f"truth_{v}"] = float((variance_production(norm.mesh, p.y[..., i], Q) > 0)
                                  .double().mean())
    return res


# ------------------------------------------------------------------------- parts
def part_online(work: Path, case: str, S: Mapping[str, Any]) -> Dict[str, Any]:
    spec = S["cases"][case]
    data, held = dataset(work, case, spec, "train"), dataset(work, case, spec, "heldout")
    H = S["horizons"]
    ds = _windows(held, max(H), S["stride"], S["max_windows"])
    sc_h = Scenario.from_config(ds.scenario_config)
    res: Dict[str, Any] = {"case": case, "windows": [list(w) for w in ds.windows],
                           "runs": [], "bounds": {}}
    scales = None
    for seed in S["seeds"]:
        for kind in ("offline", "online"):
            cfg = TrainConfig(**S["train"], seed=seed, **(S["online"] if kind == "online" else {}))
            r = fit(data, cfg)
            scales = r["trainer"].data.state_scale
            errs = rollout_errors(sc_h, r["closure"], ds, H, scales)
            res["runs"].append({"seed": seed, "kind": kind, "wall_s": r["wall_s"],
                                "updates": r["updates"], "skipped": r["skipped"],
                                "errors": _mean_errors(errs, H), "per_window": errs,
                                "final_train_loss": r["metrics"][-1]["train_loss"],
                                "final_train_online": r["metrics"][-1]["train_online"]})
            if kind == "offline":
                stats = r["trainer"].data.stats
                res.setdefault("production", []).append({
                    "seed": seed, "weight": 0.0, "wall_s": r["wall_s"],
                    "test": production_fraction(r["model"], r["trainer"].normalizer, data,
                                                "test", stats),
                    "heldout": production_fraction(r["model"], r["trainer"].normalizer, held,
                                                   "all", stats)})
            _log.info("%s seed %d %s: %.0f s, %s", case, seed, kind, r["wall_s"],
                      {v: {k: round(x, 4) for k, x in e.items() if k.startswith("err")}
                       for v, e in res["runs"][-1]["errors"].items()})
            _save_json(work / f"part_online_{case}.json", res)
    for name, closure, replay in (("none", None, False), ("replay", None, True)):
        errs = rollout_errors(sc_h, closure, ds, H, scales, replay=replay)
        res["bounds"][name] = {"errors": _mean_errors(errs, H), "per_window": errs}
    res["scales"] = scales
    _save_json(work / f"part_online_{case}.json", res)
    return res


def part_dissipation(work: Path, case: str, S: Mapping[str, Any]) -> Dict[str, Any]:
    """Per seed, the offline training without and with the dissipation penalty: the positive
    production fractions, the validation flux skill and the held-out rollout errors (what
    the penalty costs or buys)."""
    spec = S["cases"][case]
    data, held = dataset(work, case, spec, "train"), dataset(work, case, spec, "heldout")
    H = S["horizons"]
    ds = _windows(held, max(H), S["stride"], S["max_windows"])
    sc_h = Scenario.from_config(ds.scenario_config)
    res: Dict[str, Any] = {"case": case, "weight": S["dissipation_weight"], "runs": []}
    for seed in S["seeds"]:
        for weight in (0.0, S["dissipation_weight"]):
            cfg = TrainConfig(**S["train"], seed=seed, dissipation_weight=weight)
            r = fit(data, cfg)
            stats, last = r["trainer"].data.stats, r["metrics"][-1]
            errs = rollout_errors(sc_h, r["closure"], ds, H, r["trainer"].data.state_scale)
            res["runs"].append({
                "seed": seed, "weight": weight, "wall_s": r["wall_s"],
                "val_flux_mse": last["val_flux_mse"], "val_flux_r2": last["val_flux_r2"],
                "train_dissipation": last["train_dissipation"],
                "errors": _mean_errors(errs, H),
                "test": production_fraction(r["model"], r["trainer"].normalizer, data, "test",
                                            stats),
                "heldout": production_fraction(r["model"], r["trainer"].normalizer, held, "all",
                                               stats)})
            _log.info("%s seed %d dissipation %g: %s", case, seed, weight,
                      res["runs"][-1]["test"])
            _save_json(work / f"part_dissipation_{case}.json", res)
    return res


def _split_arrays(models, normalizer, path: Path, split: str):
    """Ensemble means/variances (physical), targets, and the sample table of a split."""
    ds = SubgridDataset(path, split, dtype=torch.float64)
    b = ds.collate([ds[i] for i in range(len(ds))])
    with torch.no_grad():
        means, var = ensemble_predict(models, ds.mesh, b.x, normalizer)
    y = normalizer.denormalize_flux(b.y)
    table = load_table(path, split)
    v0 = ds.variables[0]
    gap = float((table.flux[v0] - y[..., 0]).abs().max() / y[..., 0].abs().max())
    if gap > 1e-5:
        raise RuntimeError(f"{split}: the sample table and the dataset disagree ({gap:.2e})")
    return variance_split(means, var), y, table


def _power_law(cal: Mapping[str, Any], table, var: str) -> torch.Tensor:
    """The calibrated power law's flux ``α N_f^β G`` at the table's samples, (S, n_faces)."""
    spec = cal["baselines"]["power_law"]["closes"][var]
    G = face_gradient(table.mesh, table.state[var].T).T
    N = face_mean(table.mesh, table.measure(spec["measure"]).T).T
    return spec["alpha"] * N ** spec["beta"] * G


def part_uncertainty(work: Path, S: Mapping[str, Any]) -> Dict[str, Any]:
    case = "kinematic"
    data = dataset(work, case, S["cases"][case], "train")
    cfg = TrainConfig(**{**S["train"], **S["ensemble"]}, seed=0)
    t0 = time.perf_counter()
    ens = train(data, None, cfg, progress=False)
    wall = time.perf_counter() - t0
    models = [m.model.eval() for m in ens.members]
    normalizer = ens.normalizer.double()
    t1 = time.perf_counter()
    cal = calibrate(data)
    wall_cal = time.perf_counter() - t1
    out: Dict[str, Any] = {"case": case, "members": len(models), "wall_s": wall,
                           "calibrate_wall_s": wall_cal, "config": cfg.to_dict(), "splits": {}}
    arrays = {sp: _split_arrays(models, normalizer, data, sp) for sp in ("val", "test", "ood")}
    var = SubgridDataset(data, "val").variables[0]
    sv, yv, tv = arrays["val"]
    s = fit_variance_scale(sv.mean[..., 0], sv.total[..., 0], yv[..., 0])
    sig_v = torch.sqrt(sv.epistemic[..., 0])
    base_v = _power_law(cal, tv, var)
    choice = choose_thresholds(sig_v, sv.mean[..., 0] - yv[..., 0], base_v - yv[..., 0])
    out.update(variance_scale=s, thresholds={k: getattr(choice, k) for k in (
        "t1", "t2", "q1", "q2", "mse_blend", "mse_learned", "mse_baseline",
        "fraction_learned", "fraction_baseline")})
    for sp, (split, y, table) in arrays.items():
        mu, tot = split.mean[..., 0], split.total[..., 0]
        yy = y[..., 0]
        sig_e = torch.sqrt(split.epistemic[..., 0])
        base = _power_law(cal, table, var)
        blend = blend_fluxes(mu, base, sig_e, choice.t1, choice.t2)
        w = ((sig_e - choice.t1) / (choice.t2 - choice.t1)).clamp(0, 1)
        out["splits"][sp] = {
            "n_samples": int(yy.shape[0]), "n_values": int(yy.numel()),
            "mean_epistemic_std": float(sig_e.mean()),
            "mean_aleatoric_std": float(torch.sqrt(split.aleatoric[..., 0]).mean()),
            "rms_target": float(torch.sqrt((yy ** 2).mean())),
            "coverage50_raw": interval_coverage(mu, tot, yy, 0.5),
            "coverage90_raw": interval_coverage(mu, tot, yy, 0.9),
            "coverage50": interval_coverage(mu, s * tot, yy, 0.5),
            "coverage90": interval_coverage(mu, s * tot, yy, 0.9),
            "crps": float(crps_gaussian(mu, torch.sqrt(s * tot), yy).mean()),
            "crps_mean_only": float((yy - mu).abs().mean()),
            "spread_skill": spread_skill_ratio((mu, s * tot), yy),
            "mse_learned": float(((mu - yy) ** 2).mean()),
            "mse_baseline": float(((base - yy) ** 2).mean()),
            "mse_blend": float(((blend - yy) ** 2).mean()),
            "mse_none": float((yy ** 2).mean()),
            "fraction_learned": float((w <= 0).double().mean()),
            "fraction_baseline": float((w >= 1).double().mean()),
        }
    out["epistemic_ratio_ood_test"] = (out["splits"]["ood"]["mean_epistemic_std"]
                                       / out["splits"]["test"]["mean_epistemic_std"])
    _save_json(work / "part_uncertainty.json", out)
    return out


# ------------------------------------------------------------------------ report
def _save_json(path: Path, obj: Any) -> None:
    with atomic_path(path, ".json") as tmp:
        Path(tmp).write_text(json.dumps(obj, indent=1, default=_jsonable))


def _jsonable(x: Any) -> Any:
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, torch.Tensor):
        return x.tolist()
    raise TypeError(type(x).__name__)


def _write(path: Path, text: str) -> None:
    with atomic_path(path, path.suffix) as tmp:
        Path(tmp).write_text(text)


def _csv(rows: List[Mapping[str, Any]]) -> str:
    cols: List[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, restval="", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    return buf.getvalue()


def _f(x: Any, nd: int = 4) -> str:
    if x is None or x == "":
        return "–"
    if isinstance(x, float):
        return "nan" if not math.isfinite(x) else f"{x:.{nd}g}"
    return str(x)


def _paired(a: Sequence[float], b: Sequence[float]) -> Dict[str, float]:
    d = np.asarray(b, float) - np.asarray(a, float)
    n = int(np.isfinite(d).sum())
    d = d[np.isfinite(d)]
    mean = float(d.mean()) if n else math.nan
    se = float(d.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    return {"mean": mean, "se": se, "n": n,
            "verdict": ("online better" if mean < -2 * se else "offline better"
                        if mean > 2 * se else "no difference (|d| <= 2 SE)")
            if n > 1 else "n/a"}


def _case_parts(work: Path, S: Mapping[str, Any], part: str, md: List[str], missing: str):
    """``(case, results)`` for each case whose ``part_<part>_<case>.json`` exists in ``work``;
    for a case without it, ``missing`` (formatted with ``case``) and a blank line go to
    ``md`` in its place."""
    for case in S["cases"]:
        p = work / f"part_{part}_{case}.json"
        if not p.is_file():
            md += [missing.format(case=case), ""]
            continue
        yield case, json.loads(p.read_text())


def report_online(work: Path, S: Mapping[str, Any], command: str) -> None:
    H = S["horizons"]
    rows: List[Dict[str, Any]] = []
    md = ["# Online vs offline training, and the dissipation penalty (issue 11)", "",
          f"Command: `{command}`", "",
          "Settings (both runs of a seed): " + json.dumps(S["train"]) + "; the online run "
          "adds " + json.dumps(S["online"]) + " (pure online loss from `online_start`, no "
          "offline mixing). Equal optimiser updates and batch size; both keep their final "
          "EMA weights. Training data: one trajectory dataset per case (data seed 0); seeds "
          "below are training seeds. Evaluation: held-out trajectory run (data seed 1000), "
          f"windows of {max(H)} coarse steps from its test block, starts {S['stride']} steps "
          "apart (overlapping windows are correlated); relative RMSE = volume-weighted RMSE of "
          "the variable / the training split's standard deviation of it. Bounds: `none` (no "
          "closure) and `replay` (the true step-mean flux, the best a closure can do). "
          "Float64 networks (the coarse model steps float64 states).", ""]
    for case, res in _case_parts(work, S, "online", md, "## {case}: online part not run"):
        gen = {role: _load(work / f"{case}_{role}.gen.json") for role in ("train", "heldout")}
        md += [f"## {case}", "",
               f"Data: {json.dumps(S['cases'][case])}; generation wall time "
               f"{_f(gen['train'].get('wall_s'), 3)} s (train) and "
               f"{_f(gen['heldout'].get('wall_s'), 3)} s (held-out); "
               f"{len(res['windows'])} held-out windows (run, start) {res['windows']}.", ""]
        variables = sorted(res["runs"][0]["errors"]) if res["runs"] else []
        head = "| run | seed | " + " | ".join(f"{v} @{h}" for v in variables for h in H) + \
            " | blow-ups | updates (skipped) | train wall s |"
        md += [head, "|" + "---|" * (head.count("|") - 1)]
        for r in res["runs"]:
            errs = r["errors"]
            md.append(f"| {r['kind']} | {r['seed']} | " + " | ".join(
                _f(errs[v][f"err_{h}"]) for v in variables for h in H) +
                f" | {sum(errs[v]['blowups'] for v in variables)} | {r['updates']} "
                f"({r['skipped']}) | {r['wall_s']:.1f} |")
            for v in variables:
                for h in H:
                    rows.append({"part": "online", "case": case, "run": r["kind"],
                                 "seed": r["seed"], "variable": v, "steps": h,
                                 "rel_rmse": errs[v][f"err_{h}"],
                                 "finite_windows": errs[v][f"finite_{h}"],
                                 "blowups": errs[v]["blowups"], "windows": errs[v]["windows"],
                                 "updates": r["updates"], "skipped_updates": r["skipped"],
                                 "train_wall_s": r["wall_s"]})
        for name, b in res.get("bounds", {}).items():
            errs = b["errors"]
            md.append(f"| {name} | – | " + " | ".join(
                _f(errs[v][f"err_{h}"]) for v in variables for h in H) +
                f" | {sum(errs[v]['blowups'] for v in variables)} | – | – |")
            for v in variables:
                for h in H:
                    rows.append({"part": "online", "case": case, "run": name, "seed": "",
                                 "variable": v, "steps": h, "rel_rmse": errs[v][f"err_{h}"],
                                 "finite_windows": errs[v][f"finite_{h}"],
                                 "blowups": errs[v]["blowups"], "windows": errs[v]["windows"]})
        seeds = sorted({r["seed"] for r in res["runs"]})
        md += ["", "Paired difference online − offline over training seeds (mean ± SE; "
               "'better' needs |mean| > 2 SE):", ""]
        md += ["| variable | steps | offline mean | online mean | online − offline | SE | "
               "verdict |", "|---|---|---|---|---|---|---|"]
        for v in variables:
            for h in H:
                get = {k: [next((r["errors"][v][f"err_{h}"] for r in res["runs"]
                                 if r["seed"] == s and r["kind"] == k), math.nan)
                           for s in seeds] for k in ("offline", "online")}
                pd = _paired(get["offline"], get["online"])
                md.append(f"| {v} | {h} | {_f(float(np.nanmean(get['offline'])))} | "
                          f"{_f(float(np.nanmean(get['online'])))} | {_f(pd['mean'])} | "
                          f"{_f(pd['se'])} | {pd['verdict']} (n={pd['n']}) |")
                rows.append({"part": "online_paired", "case": case, "variable": v,
                             "steps": h, "diff_online_minus_offline": pd["mean"],
                             "se": pd["se"], "n_seeds": pd["n"], "verdict": pd["verdict"]})
        walls = {k: [r["wall_s"] for r in res["runs"] if r["kind"] == k]
                 for k in ("offline", "online")}
        if walls["offline"] and walls["online"]:
            md += ["", f"Training wall time (s, mean over seeds): offline "
                   f"{np.mean(walls['offline']):.1f}, online {np.mean(walls['online']):.1f}.", ""]
    # dissipation
    md += ["## Dissipation penalty: fraction of samples with positive variance production", "",
           f"Same offline training (settings above), `dissipation_weight` 0 vs "
           f"{S['dissipation_weight']} (the trainer's penalty `([P / P_rms]_+)²` per sample and "
           "variable, mean over the batch, `P_rms` the RMS of the truth's P over up to 32 "
           "training samples), final EMA weights. P = Σ_f Φ̂_f (Q_b − Q_a), "
           "the closure's contribution to d/dt ½ Σ V Q². `test`: the training file's test "
           "split; `held-out`: every sample of the held-out run; `truth`: the true Φ^sgs. "
           "Also the cost: validation flux R² (normalised, pooled over faces, samples and "
           "variables) and the held-out rollout errors as above.", ""]
    for case, res in _case_parts(work, S, "dissipation", md, "{case}: not run"):
        runs = res["runs"]
        variables = sorted(k[len("learned_"):] for k in runs[0]["test"]
                           if k.startswith("learned_"))
        head = ("| variable | seed | weight | test P>0 | held-out P>0 | truth test | truth "
                "held-out | val flux R² | " + " | ".join(f"err @{h}" for h in H) +
                " | train wall s |")
        md += [f"### {case}", "", head, "|" + "---|" * (head.count("|") - 1)]
        for r in runs:
            for v in variables:
                e = r["errors"][v]
                md.append(f"| {v} | {r['seed']} | {r['weight']} | {_f(r['test']['learned_' + v])}"
                          f" | {_f(r['heldout'].get('learned_' + v))} | "
                          f"{_f(r['test'].get('truth_' + v))} | "
                          f"{_f(r['heldout'].get('truth_' + v))} | {_f(r['val_flux_r2'])} | " +
                          " | ".join(_f(e[f'err_{h}']) for h in H) + f" | {r['wall_s']:.1f} |")
                rows.append({"part": "dissipation", "case": case, "variable": v,
                             "seed": r["seed"], "dissipation_weight": r["weight"],
                             "positive_fraction_test": r["test"]["learned_" + v],
                             "positive_fraction_heldout": r["heldout"].get("learned_" + v),
                             "truth_positive_fraction_test": r["test"].get("truth_" + v),
                             "truth_positive_fraction_heldout": r["heldout"].get("truth_" + v),
                             "n_test": r["test"].get("n_samples"),
                             "n_heldout": r["heldout"].get("n_samples"),
                             "val_flux_r2": r["val_flux_r2"], "val_flux_mse": r["val_flux_mse"],
                             **{f"rel_rmse_{h}": e[f"err_{h}"] for h in H},
                             "blowups": e["blowups"], "train_wall_s": r["wall_s"]})
        md += ["", "Paired differences (with − without penalty) over seeds, mean ± SE:", "",
               "| variable | quantity | with − without | SE | |d| > 2 SE |", "|---|---|---|---|---|"]
        seeds = sorted({r["seed"] for r in runs})
        for v in variables:
            quantities = [("test P>0", lambda r: r["test"]["learned_" + v]),
                          ("held-out P>0", lambda r: r["heldout"].get("learned_" + v)),
                          ("val flux R²", lambda r: r["val_flux_r2"])]
            quantities += [(f"err @{h}", lambda r, h=h: r["errors"][v][f"err_{h}"]) for h in H]
            for name, get in quantities:
                pick = {w: [next((get(r) for r in runs if r["seed"] == s and
                                  (r["weight"] > 0) == w), math.nan) for s in seeds]
                        for w in (False, True)}
                d = _paired(pick[False], pick[True])
                sig = "yes" if d["n"] > 1 and abs(d["mean"]) > 2 * d["se"] else "no"
                md.append(f"| {v} | {name} | {_f(d['mean'])} | {_f(d['se'])} | {sig} |")
                rows.append({"part": "dissipation_paired", "case": case, "variable": v,
                             "quantity": name, "diff_with_minus_without": d["mean"],
                             "se": d["se"], "n_seeds": d["n"], "beyond_2se": sig})
        md.append("")
    RESULTS.mkdir(parents=True, exist_ok=True)
    _write(RESULTS / "train_study_online.csv", _csv(rows))
    _write(RESULTS / "train_study_online.md", "\n".join(md) + "\n")


def report_uncertainty(work: Path, S: Mapping[str, Any], command: str) -> None:
    p = work / "part_uncertainty.json"
    if not p.is_file():
        return
    res = json.loads(p.read_text())
    rows = []
    md = ["# Ensemble uncertainty and the fallback (issue 11)", "", f"Command: `{command}`", "",
          f"kinematic ({json.dumps(S['cases']['kinematic'])}), data seed 0; ensemble of "
          f"{res['members']} members (config {json.dumps(S['ensemble'])} on "
          f"{json.dumps(S['train'])}, float64, offline, instantaneous target; best-val-epoch "
          f"EMA weights per member). Training wall time {res['wall_s']:.1f} s; "
          f"calibration {res['calibrate_wall_s']:.1f} s. Units: physical face flux. Predictive "
          "distribution: N(mean of member means, s·(aleatoric + epistemic)), "
          f"s = {res['variance_scale']:.4g} fitted on the validation split.", "",
          f"**Epistemic std ratio OOD / test (in distribution): "
          f"{res['epistemic_ratio_ood_test']:.4g}**", "",
          "| split | samples | mean σ_e | mean σ_a | cover 50 % (raw) | cover 90 % (raw) | "
          "cover 50 % | cover 90 % | CRPS | mean |err| | spread–skill |",
          "|---|---|---|---|---|---|---|---|---|---|---|"]
    for sp, m in res["splits"].items():
        md.append(f"| {sp} | {m['n_samples']} | {_f(m['mean_epistemic_std'])} | "
                  f"{_f(m['mean_aleatoric_std'])} | {_f(m['coverage50_raw'])} | "
                  f"{_f(m['coverage90_raw'])} | {_f(m['coverage50'])} | {_f(m['coverage90'])} | "
                  f"{_f(m['crps'])} | {_f(m['crps_mean_only'])} | {_f(m['spread_skill'])} |")
        rows.append({"part": "uncertainty", "split": sp, **m,
                     "variance_scale": res["variance_scale"],
                     "epistemic_ratio_ood_test": res["epistemic_ratio_ood_test"],
                     "ensemble_wall_s": res["wall_s"]})
    t = res["thresholds"]
    md += ["", f"Fallback to the calibrated power law: t1 = {_f(t['t1'])}, t2 = {_f(t['t2'])} "
           f"(σ_e quantiles {_f(t['q1'])}, {_f(t['q2'])}; chosen on val: blend MSE "
           f"{_f(t['mse_blend'])}, learned {_f(t['mse_learned'])}, baseline "
           f"{_f(t['mse_baseline'])}).", "",
           "| split | MSE learned | MSE power law | MSE blend | MSE no closure | "
           "faces learned | faces baseline |", "|---|---|---|---|---|---|---|"]
    for sp, m in res["splits"].items():
        md.append(f"| {sp} | {_f(m['mse_learned'])} | {_f(m['mse_baseline'])} | "
                  f"{_f(m['mse_blend'])} | {_f(m['mse_none'])} | {_f(m['fraction_learned'])} | "
                  f"{_f(m['fraction_baseline'])} |")
    rows.append({"part": "fallback", **{f"t_{k}": v for k, v in t.items()}})
    RESULTS.mkdir(parents=True, exist_ok=True)
    _write(RESULTS / "train_study_uncertainty.csv", _csv(rows))
    _write(RESULTS / "train_study_uncertainty.md", "\n".join(md) + "\n")


def _load(path: Path) -> Dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


# -------------------------------------------------------------------------- main
def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny meshes and budgets")
    ap.add_argument("--parts", default="online,dissipation,uncertainty")
    ap.add_argument("--cases", default=None, help="comma list (default: all)")
    ap.add_argument("--work", default=None, help="datasets and per-part results")
    ap.add_argument("--report", action="store_true", help="only rewrite the tables")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("meshclosure.train").setLevel(logging.WARNING)
    S = QUICK if a.quick else FULL
    work = Path(a.work or f"/tmp/meshclosure_train_study_online{'_quick' if a.quick else ''}")
    work.mkdir(parents=True, exist_ok=True)
    global RESULTS
    if a.quick:
        RESULTS = work / "results"
    cases = a.cases.split(",") if a.cases else list(S["cases"])
    parts = a.parts.split(",")
    command = "OMP_NUM_THREADS=1 python tools/train_study_online.py" + (" --quick" if a.quick
                                                                       else "")
    torch.set_num_threads(1)
    if not a.report:
        for case in cases:
            if "online" in parts:
                part_online(work, case, S)
            if "dissipation" in parts:
                part_dissipation(work, case, S)
        if "uncertainty" in parts and "kinematic" in cases:
            part_uncertainty(work, S)
    report_online(work, S, command)
    report_uncertainty(work, S, command)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
