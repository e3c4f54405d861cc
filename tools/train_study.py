"""Issue 11, offline findings: a learned closure against calibrated ones, 3 seeds, 5 cases.

Per case (kinematic on a Cartesian, a HEALPix and an icosahedral mesh;
convection on its column; barotropic on its plane) and per seed ``s``:

1. generate the dataset with scenario seed ``s`` (main run split 70/15/15 by
   time into train/val/test, plus an out-of-distribution run, ``scenario.ood()``);
2. calibrate every baseline of the scenario on the training split
   (:func:`meshclosure.train.calibrate.calibrate`: constant K, power law
   ``α N^β``; convection: ``K₀`` + power law; barotropic vorticity:
   Smagorinsky and Leith);
3. train one learned closure with training seed ``s`` (``mgn``, hidden 32,
   2 blocks; MSE on the instantaneous subgrid face flux; fixed budget
   :data:`TRAIN`);
4. score every closure (and no closure) on the test split and on the OOD run:
   pooled R² of the face flux, large-band R² of the subgrid tendency
   ``−div Φ`` (:func:`meshclosure.train.skill.large_band_r2`) and the mean
   relative error of ``K_eff(N)`` against the truth's over the bins of the
   TRAINING range of ``N`` (the same nodes for every closure and split).

Outputs (atomic): ``tools/results/train_study_offline.csv`` (one row per case,
variable, closure, split and metric: the mean over seeds, the per-seed
values, and the paired difference learned − closure with its SE and whether
``|diff| > 2 SE``), ``train_study_offline.md`` (the table for the closing
note, with the command and wall time), and one ``K_eff(N)`` figure per
kinematic mesh, ``train_study_keff_<mesh>.png``. Work files (datasets,
calibrations, models, per-(case, seed) results) go to ``--work``; a rerun
reuses finished steps.

    OMP_NUM_THREADS=1 python tools/train_study.py [--quick] [--cases kin-cart,conv]
        [--seeds 0 1 2] [--work /tmp/train_study] [--out tools/results] [--collect-only]
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import shlex
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from meshclosure._files import atomic_path
from meshclosure.closures import as_closure
from meshclosure.data import SubgridDataset, generate
from meshclosure.data.scenarios import Scenario, get_scenario
from meshclosure.train import train
from meshclosure.train.baselines import binned_diffusivity, face_gradient, face_mean
from meshclosure.train.calibrate import baseline_closures, calibrate
from meshclosure.train.diffusivity import (_closure_fluxes, keff_error, load_table,
                                           plot_effective_diffusivity)
from meshclosure.train.losses import tendency
from meshclosure.train.skill import large_band_r2, paired_difference, pooled_r2

#: case -> (scenario, fine mesh or None for the default, main samples, OOD samples)
CASES = {
    "kin-cart": ("kinematic", "cartesian:64", 40, 8),
    "kin-healpix": ("kinematic", "healpix:16", 40, 8),
    "kin-ico": ("kinematic", "icosahedral:4", 40, 8),
    "conv": ("convection", None, 40, 8),
    "baro": ("barotropic", None, 24, 6),
}
QUICK = {"kin-cart": ("kinematic", "cartesian:32", 10, 3), "conv": ("convection", None, 8, 3)}

#: The learned closure's fixed training budget (the same for every case and seed).
TRAIN = dict(model="mgn", model_config={"hidden": 32, "n_blocks": 2}, epochs=60, batch_size=4,
             lr=1e-3, schedule="cosine", ema_decay=0.99, patience=0, target="instantaneous",
             flux_weight=1.0, tendency_weight=0.0)
QUICK_TRAIN = dict(TRAIN, epochs=3)

METRICS = ("pooled_r2", "band_r2", "keff_error", "keff_l1_train", "keff_l1_beyond")
BETTER = {"pooled_r2": 1, "band_r2": 1, "keff_error": -1, "keff_l1_train": -1,
          "keff_l1_beyond": -1}                                  # +1: higher is better
SPLITS = ("test", "ood")
N_NODES = 8


def _learned_fluxes(model, path, split):
    """``{var: (S, n_faces)}`` physical flux of the trained network on the split's inputs
    (the file's features, normalised with the training statistics)."""
    ds = SubgridDataset(path, split)
    out = []
    with torch.no_grad():
        for i in range(0, len(ds), 16):
            b = ds.collate([ds[j] for j in range(i, min(i + 16, len(ds)))])
            pred = model(ds.mesh, b.x.to(next(model.parameters()).dtype))
            pred = pred if isinstance(pred, torch.Tensor) else pred.mean   # FluxPrediction
            out.append(pred.double() * torch.as_tensor(ds.stats.flux_scale, dtype=torch.float64))
    y = torch.cat(out)                                            # (S, n_faces, V)
    return {v: y[..., k] for k, v in enumerate(ds.variables)}


def _safe(fn, *args, **kw):
    try:
        v = fn(*args, **kw)
        return float(v) if v is not None and math.isfinite(v) else float("nan")
    except Exception as err:        # an undefined measure is recorded as NaN, with its reason
        return f"undefined: {err}".split("\n")[0][:200]


def run_one(case, seed, spec, work, train_settings, log):
    """Generate, calibrate, train and score one (case, seed); returns the result dict."""
    res_path = work / f"{case}_s{seed}.json"
    if res_path.exists():
        return json.loads(res_path.read_text())
    scen_name, mesh, n_main, n_ood = spec
    scenario = get_scenario(scen_name, mesh=mesh, seed=seed)
    data = work / f"{case}_s{seed}.nc"
    t0 = time.time()
    if not data.exists():
        generate(scenario, data, n_samples=n_main, ood_samples=n_ood, progress=False)
    t_gen = time.time() - t0
    t0 = time.time()
    cal = calibrate(data, n_nodes=N_NODES)
    t_cal = time.time() - t0
    t0 = time.time()
    torch.manual_seed(seed)
    result = train(data, work / f"{case}_s{seed}_model", dict(train_settings, seed=seed),
                   progress=False, overwrite=True, resume=False)
    t_train = time.time() - t0
    model = result.model.eval()
    t0 = time.time()
    scen = Scenario.from_config(cal["scenario_config"])
    out = {"case": case, "seed": seed, "scenario": scen_name, "mesh": mesh or
           cal["scenario_config"].get("mesh"), "n_samples": cal["n_samples"],
           "coarse_cells": None, "baselines": {}, "scores": {}, "curves": {},
           "best_epoch": result.best_epoch, "wall_s": {}}
    for name, b in cal["baselines"].items():
        out["baselines"][name] = b["closes"]
    tables = {sp: load_table(data, sp) for sp in SPLITS}
    train_table = load_table(data, "train")
    out["coarse_cells"] = train_table.mesh.n_cells
    for var, k in cal["keff"].items():
        nodes = np.asarray(k["nodes"])
        measure = k["measure"]
        Ns = {sp: face_mean(t.mesh, t.measure(measure).T).T for sp, t in tables.items()}
        ood_range = [float(Ns["ood"].min()), float(Ns["ood"].max())]
        lo, hi = min(k["train_range"][0], ood_range[0]), max(k["train_range"][1], ood_range[1])
        wide = np.linspace(lo, hi, 14)
        out["curves"][var] = {"train_range": k["train_range"], "ood_range": ood_range,
                              "nodes": wide.tolist(), "measure": measure}
        for sp, table in tables.items():
            closures = baseline_closures(cal, scen if sp != "ood" else scen.ood())
            learned = _learned_fluxes(model, data, sp)
            truth = table.flux[var]
            G = face_gradient(table.mesh, table.state[var].T).T
            N = Ns[sp]
            preds = {"learned": learned[var], "none": torch.zeros_like(truth)}
            for name, c in closures.items():
                if c is not None and var in cal["baselines"][name]["closes"]:
                    preds[name] = _closure_fluxes(c, table, var)
            s_true = tendency(table.mesh, truth.unsqueeze(-1))[..., 0]
            K_true = binned_diffusivity(truth, G, N, nodes)
            out["curves"][var][f"{sp}:truth"] = binned_diffusivity(truth, G, N, wide).tolist()
            for name, p in preds.items():
                s_pred = tendency(table.mesh, p.unsqueeze(-1))[..., 0]
                K = binned_diffusivity(p, G, N, nodes)
                out["scores"].setdefault(var, {}).setdefault(name, {})[sp] = {
                    "pooled_r2": _safe(pooled_r2, p, truth),
                    "band_r2": _safe(large_band_r2, table.mesh, s_pred, s_true),
                    "keff_error": (_safe(keff_error, K, K_true) if name != "none"
                                   else float("nan")),
                }
                if name in ("learned", "power_law", "convective", "smagorinsky", "constant"):
                    out["curves"][var][f"{sp}:{name}"] = binned_diffusivity(
                        p, G, N, wide).tolist()
    out["wall_s"] = {"generate": t_gen, "calibrate": t_cal, "train": t_train,
                     "score": time.time() - t0}
    with atomic_path(res_path, ".json") as tmp:
        Path(tmp).write_text(json.dumps(_jsonable(out), indent=1))
    log(f"{case} seed {seed}: generate {t_gen:.0f} s, calibrate {t_cal:.0f} s, train "
        f"{t_train:.0f} s, score {out['wall_s']['score']:.0f} s")
    return out


def run_step_mean(case, seed, spec, work, log):
    """Kinematic addendum: the study's closures of (case, seed) scored against the
    instantaneous AND the step-mean subgrid flux of a trajectory dataset (same scenario
    and seed, a sample at every coarse step). The learned model and the calibration are
    the main study's (trained and fitted on the instantaneous flux of the main dataset);
    the network's inputs are normalised with the main dataset's training statistics."""
    from meshclosure.data import TrajectoryDataset
    from meshclosure.nn import load_model

    res_path = work / f"{case}_s{seed}_stepmean.json"
    if res_path.exists():
        return json.loads(res_path.read_text())
    scen_name, mesh, n_main, n_ood = spec
    main = work / f"{case}_s{seed}.nc"
    data = work / f"{case}_s{seed}_traj.nc"
    t0 = time.time()
    if not data.exists():
        generate(get_scenario(scen_name, mesh=mesh, seed=seed), data,
                 n_samples=2 * n_main, ood_samples=2 * n_ood, trajectory=True, progress=False)
    t_gen = time.time() - t0
    stats = SubgridDataset(main, "train").stats
    cal = calibrate(main, n_nodes=N_NODES)
    scen = Scenario.from_config(cal["scenario_config"])
    out = {"case": case, "seed": seed, "scores": {}, "n_samples": {}, "wall_s": {}}
    for sp in SPLITS:
        traj = TrajectoryDataset(data, sp, length=1, stats=stats)
        b = traj.collate([traj[i] for i in range(len(traj))])
        cmesh = traj.mesh
        model = load_model(work / f"{case}_s{seed}_model" / "model.pt", cmesh).model.eval()
        scale = torch.as_tensor(stats.flux_scale, dtype=torch.float64)
        with torch.no_grad():
            pred = model(cmesh, b["x"][:, 0].to(next(model.parameters()).dtype))
        pred = (pred if isinstance(pred, torch.Tensor) else pred.mean).double() * scale
        truth = {"instantaneous": b["y"][:, 0, :, 0].double() * scale[0],
                 "step_mean": b["flux_mean"]["q"][:, 0].double()}
        Q = b["state"]["q"]
        fluxes = {"learned": pred[..., 0], "none": torch.zeros_like(truth["step_mean"])}
        closures = baseline_closures(cal, scen if sp != "ood" else scen.ood())
        for name in ("constant", "power_law"):
            with torch.no_grad():
                fluxes[name] = torch.stack([
                    as_closure(closures[name])(float(b["t"][i, 0]), {"q": Q[i]}, cmesh,
                                               transport=b["transport_stages"][i, 0, 0])["q"]
                    for i in range(len(Q))]).double()
        out["n_samples"][sp] = len(Q)
        for name, f in fluxes.items():
            s_pred = tendency(cmesh, f.unsqueeze(-1))[..., 0]
            for target, y in truth.items():
                s_true = tendency(cmesh, y.unsqueeze(-1))[..., 0]
                out["scores"].setdefault(name, {}).setdefault(sp, {})[target] = {
                    "pooled_r2": _safe(pooled_r2, f, y),
                    "band_r2": _safe(large_band_r2, cmesh, s_pred, s_true)}
    out["wall_s"] = {"generate": t_gen, "total": time.time() - t0}
    with atomic_path(res_path, ".json") as tmp:
        Path(tmp).write_text(json.dumps(_jsonable(out), indent=1))
    log(f"{case} seed {seed} step-mean addendum: {out['wall_s']['total']:.0f} s")
    return out


def step_mean_markdown(extra):
    """The addendum's table: mean over seeds (per-seed values in brackets)."""
    if not extra:
        return []
    lines = ["## Kinematic addendum: R² against the instantaneous and the step-mean flux", "",
             "The same learned model and calibration (fitted on the instantaneous flux of "
             "the main dataset), scored on a trajectory dataset of the same scenario and seed "
             "(a sample at every coarse step; its test split and OOD run), against the "
             "instantaneous flux Φ and the step-mean flux Φ̄ of the coarse step that starts "
             "at each sample.", ""]
    for case in sorted({e["case"] for e in extra}):
        es = sorted([e for e in extra if e["case"] == case], key=lambda e: e["seed"])
        names = list(es[0]["scores"])
        lines += [f"### {case} (seeds {[e['seed'] for e in es]}; samples per seed "
                  + ", ".join(f"{k} {v}" for k, v in es[0]["n_samples"].items()) + ")", "",
                  "| split | target | metric | " + " | ".join(names) + " |",
                  "|---|---|---|" + "---|" * len(names)]
        for sp in SPLITS:
            for target in ("instantaneous", "step_mean"):
                for metric in ("pooled_r2", "band_r2"):
                    cells = []
                    for n in names:
                        v = [_num(e["scores"][n][sp][target][metric]) for e in es]
                        cells.append(f"{np.nanmean(v):.3g} [" + " ".join(f"{x:.3g}" for x in v)
                                     + "]" if any(math.isfinite(x) for x in v) else "n/a")
                    lines.append(f"| {sp} | {target} | {metric} | " + " | ".join(cells) + " |")
        lines += ["", "Wall per seed (s, trajectory generation and scoring): " + ", ".join(
            f"{e['wall_s']['total']:.0f}" for e in es) + ".", ""]
    return lines


def _jsonable(x):
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def _num(v):
    return float(v) if isinstance(v, (int, float)) and v is not None and math.isfinite(v) \
        else float("nan")


def _curve_errors(r):
    """Add the curve metrics to ``r["scores"]``, from the K_eff curves on the 14 wide nodes
    (spanning the training and OOD ranges): ``keff_l1_train`` = Σ|K − K_truth| / Σ|K_truth|
    over the nodes inside the training range of N, ``keff_l1_beyond`` the same over the
    nodes beyond it (OOD run only). Unlike ``keff_error`` (the mean of per-bin relative
    errors) these are not dominated by a bin where the truth's K_eff is near zero."""
    for var, c in r["curves"].items():
        nodes = np.asarray(c["nodes"])
        lo, hi = c["train_range"]
        inside = (nodes >= lo - 1e-12) & (nodes <= hi + 1e-12)
        for name, by_split in r["scores"][var].items():
            for sp in SPLITS:
                for metric, sel in (("keff_l1_train", inside), ("keff_l1_beyond", ~inside)):
                    key = f"{sp}:{name}"
                    val = "undefined: no K_eff curve kept for this closure"
                    if key in c:
                        T = np.array(c[f"{sp}:truth"], dtype=float)
                        K = np.array(c[key], dtype=float)
                        ok = sel & np.isfinite(T) & np.isfinite(K)
                        val = (float(np.abs(K[ok] - T[ok]).sum() / np.abs(T[ok]).sum())
                               if ok.any() and np.abs(T[ok]).sum() > 0 else
                               "undefined: no face of this split in these bins")
                    by_split[sp][metric] = val
    return r


def collect(results):
    """Rows: one per (case, var, closure, split, metric)."""
    results = [_curve_errors(r) for r in results]
    rows = []
    by_case = {}
    for r in results:
        by_case.setdefault(r["case"], []).append(r)
    for case, rs in by_case.items():
        rs = sorted(rs, key=lambda r: r["seed"])
        seeds = [r["seed"] for r in rs]
        for var in rs[0]["scores"]:
            for name in rs[0]["scores"][var]:
                for sp in SPLITS:
                    for metric in METRICS:
                        vals = [_num(r["scores"][var][name][sp][metric]) for r in rs]
                        notes = sorted({r["scores"][var][name][sp][metric] for r in rs
                                        if isinstance(r["scores"][var][name][sp][metric], str)})
                        ok = [v for v in vals if math.isfinite(v)]
                        row = {"case": case, "scenario": rs[0]["scenario"],
                               "mesh": rs[0]["mesh"], "var": var, "closure": name,
                               "split": sp, "metric": metric, "n_seeds": len(ok),
                               "mean": float(np.mean(ok)) if ok else float("nan"),
                               "per_seed": " ".join(f"{v:.4g}" for v in vals),
                               "seeds": " ".join(map(str, seeds)),
                               "learned_minus": "", "se": "", "significant": "",
                               "verdict": "", "note": "; ".join(notes)}
                        if name != "learned" and not (name == "none" and metric == "keff_error"):
                            lv = [_num(r["scores"][var]["learned"][sp][metric]) for r in rs]
                            pair = [(a, b) for a, b in zip(lv, vals)
                                    if math.isfinite(a) and math.isfinite(b)]
                            if name != "learned" and len(pair) >= 2:
                                d = paired_difference([a for a, _ in pair], [b for _, b in pair])
                                row.update(learned_minus=d.mean, se=d.se,
                                           significant=d.significant)
                                if not d.significant:
                                    row["verdict"] = "no difference"
                                else:
                                    good = d.mean * BETTER[metric] > 0
                                    row["verdict"] = "learned better" if good else \
                                        f"{name} better"
                        rows.append(row)
    return rows


COLUMNS = ("case", "scenario", "mesh", "var", "closure", "split", "metric", "n_seeds", "mean",
           "per_seed", "seeds", "learned_minus", "se", "significant", "verdict", "note")


def write_csv(rows, path):
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS)
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    with atomic_path(path, ".csv") as tmp:
        Path(tmp).write_text(buf.getvalue())


def _cell(rows, case, var, name, sp, metric):
    for r in rows:
        if (r["case"], r["var"], r["closure"], r["split"], r["metric"]) == \
                (case, var, name, sp, metric):
            if not math.isfinite(r["mean"]):
                return "n/a"
            s = f"{r['mean']:.3g}" if abs(r["mean"]) > 1e-12 else "0"
            if r["verdict"]:
                s += {"no difference": " (=)", "learned better": " (L+)"}.get(r["verdict"],
                                                                                " (L−)")
            return s
    return ""


def write_markdown(rows, results, path, commands, wall, settings, extra=()):
    lines = ["# Issue 11 offline study: learned vs calibrated closures", "",
             "Commands (in order):  ", *[f"`{c}`  " for c in commands],
             f"Wall time of the main study: {wall / 60:.1f} min "
             f"(per step and case below); {os.cpu_count()} CPU cores shared, "
             "OMP_NUM_THREADS=1.", "",
             "Learned closure: `" + json.dumps(settings) + "` — trained on the "
             "INSTANTANEOUS subgrid face flux (MSE), EMA weights of the best validation epoch.",
             "", "Metrics on the test split and on the out-of-distribution run (mean over "
             "seeds): `pooled_r2` of the face flux, `band_r2` the R² of the subgrid tendency "
             "projected on the large-scale band (|k| ≤ k_c/4, l ≤ l_c/4), `keff_error` the "
             "mean relative error of K_eff(N) against the truth's over the 8 bins of the "
             "training range of N (the issue's measure); `keff_l1_train` and "
             "`keff_l1_beyond` the normalised L1 distance Σ|K − K_truth| / Σ|K_truth| of "
             "the K_eff curves on 14 nodes spanning the training and OOD ranges, over the "
             "nodes inside the training range and beyond it (added because a bin where "
             "the truth's K_eff is near zero dominates the mean of per-bin relative "
             "errors; the truth's curve comes from the few samples of each split). "
             "Marks compare the learned closure with that column's "
             "closure, paired over seeds: (L+) learned better by more than 2 SE, (L−) "
             "learned worse by more than 2 SE, (=) |difference| ≤ 2 SE. n/a: undefined "
             "(e.g. no OOD face in the training range's bins).", ""]
    cases = []
    for r in rows:
        if (r["case"], r["var"]) not in cases:
            cases.append((r["case"], r["var"]))
    for case, var in cases:
        rs = [r for r in results if r["case"] == case]
        closures = [c for c in rs[0]["scores"][var]]
        closures = ["learned"] + [c for c in closures if c not in ("learned",)]
        ns = rs[0]["n_samples"]
        lines += [f"## {case}: {rs[0]['scenario']} on {rs[0]['mesh']} "
                  f"({rs[0]['coarse_cells']} coarse cells), variable `{var}`", "",
                  f"Seeds {sorted(r['seed'] for r in rs)}; samples per seed: "
                  + ", ".join(f"{k} {v}" for k, v in ns.items()), "",
                  "| split | metric | " + " | ".join(closures) + " |",
                  "|---|---|" + "---|" * len(closures)]
        for sp in SPLITS:
            for metric in METRICS:
                lines.append(f"| {sp} | {metric} | " + " | ".join(
                    _cell(rows, case, var, c, sp, metric) for c in closures) + " |")
        fits = []
        for name, closes in rs[0]["baselines"].items():
            spec = closes.get(var)
            if spec:
                keys = [k for k in ("K", "alpha", "beta", "K0", "c") if k in spec]
                fits.append(name + " " + ", ".join(
                    f"{k}={np.mean([r['baselines'][name][var][k] for r in rs]):.3g}"
                    for k in keys))
        walls = {k: np.mean([r["wall_s"][k] for r in rs]) for k in rs[0]["wall_s"]}
        lines += ["", "Fitted (mean over seeds): " + "; ".join(fits) + ".  ",
                  "Wall per seed (s): " + ", ".join(f"{k} {v:.0f}" for k, v in walls.items())
                  + "; best epoch " + ", ".join(str(r["best_epoch"]) for r in rs) + ".", ""]
    lines += step_mean_markdown(list(extra))
    with atomic_path(path, ".md") as tmp:
        Path(tmp).write_text("\n".join(lines) + "\n")


def draw(results, out_dir):
    paths = []
    for case in sorted({r["case"] for r in results}):
        rs = [r for r in results if r["case"] == case]
        if rs[0]["scenario"] != "kinematic":
            continue
        var = "q"
        c0 = rs[0]["curves"][var]
        curves = {}
        for key, label in (("test:truth", "truth (test)"), ("ood:truth", "truth (OOD)"),
                           ("test:power_law", "power law (test)"),
                           ("ood:power_law", "power law (OOD)"),
                           ("test:learned", "learned (test)"), ("ood:learned", "learned (OOD)")):
            with warnings.catch_warnings():          # a node no face reaches stays NaN
                warnings.simplefilter("ignore", RuntimeWarning)
                K = np.nanmean(np.array([r["curves"][var][key] for r in rs], dtype=float),
                               axis=0)
            curves[label] = (np.asarray(c0["nodes"]), K)
        tr = (min(r["curves"][var]["train_range"][0] for r in rs),
              max(r["curves"][var]["train_range"][1] for r in rs))
        od = (min(r["curves"][var]["ood_range"][0] for r in rs),
              max(r["curves"][var]["ood_range"][1] for r in rs))
        path = out_dir / f"train_study_keff_{case}.png"
        fig = plot_effective_diffusivity(curves, tr, od, path=path, overwrite=True,
                                         xlabel="N (face mean)", ylabel="K_eff(N)")
        ax = fig.axes[0]
        colours = {"truth": "k", "power law": "tab:blue", "learned": "tab:red"}
        for line in ax.get_lines():
            who, split = line.get_label().rsplit(" (", 1)
            line.set_color(colours[who])
            line.set_linestyle("-" if split.startswith("test") else "--")
            line.set_linewidth(2.0 if who == "truth" else 1.4)
        ax.legend(frameon=False, fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
        fig.set_size_inches(8.5, 4.0)
        fig.subplots_adjust(right=0.7)
        ax.set_title(f"{rs[0]['mesh']} (kinematic): K_eff(N), mean of {len(rs)} seeds; "
                     "solid test split, dashed OOD run", fontsize="small")
        from meshclosure.plot import save_figure
        save_figure(fig, path, overwrite=True)
        paths.append(path)
    return paths


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes to test the script")
    p.add_argument("--cases", default=None, help="comma-separated subset of " + ",".join(CASES))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--work", default="/tmp/train_study")
    p.add_argument("--out", default="tools/results")
    p.add_argument("--collect-only", action="store_true",
                   help="only assemble the tables and figures from finished work files")
    p.add_argument("--step-mean", action="store_true",
                   help="kinematic cases: also score against the step-mean flux of a "
                        "trajectory dataset (after the main study of that case and seed)")
    p.add_argument("--ran", action="append", default=[],
                   help="with --collect-only: a command that produced the work files (repeat)")
    p.add_argument("--wall", type=float, default=None,
                   help="total wall time (s) to report (default: this process's)")
    a = p.parse_args(argv)
    table = QUICK if a.quick else CASES
    names = list(table) if a.cases is None else a.cases.split(",")
    unknown = [n for n in names if n not in table]
    if unknown:
        p.error(f"--cases: unknown {unknown}; choose from {list(table)}")
    settings = QUICK_TRAIN if a.quick else TRAIN
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.time()

    def log(msg):
        print(time.strftime("%H:%M:%S"), msg, flush=True)

    results = []
    for case in names:
        for seed in a.seeds:
            if a.collect_only:
                f = work / f"{case}_s{seed}.json"
                if f.exists():
                    results.append(json.loads(f.read_text()))
                continue
            log(f"start {case} seed {seed}")
            try:
                results.append(run_one(case, seed, table[case], work, settings, log))
            except Exception as err:        # report it and go on with the other cases
                log(f"FAILED {case} seed {seed}: {type(err).__name__}: {err}")
    extra = []
    for case in names:
        if table[case][0] != "kinematic":
            continue
        for seed in a.seeds:
            f = work / f"{case}_s{seed}_stepmean.json"
            if a.step_mean and not a.collect_only and not f.exists() and \
                    (work / f"{case}_s{seed}.json").exists():
                try:
                    run_step_mean(case, seed, table[case], work, log)
                except Exception as err:
                    log(f"FAILED step-mean {case} seed {seed}: {type(err).__name__}: {err}")
            if f.exists():
                extra.append(json.loads(f.read_text()))
    if not results:
        p.error("no finished (case, seed) results in --work")
    rows = collect(results)
    stem = "train_study_offline" + ("_quick" if a.quick else "")
    wall = a.wall if a.wall is not None else time.time() - t_start
    command = "OMP_NUM_THREADS=1 python tools/train_study.py " + shlex.join(
        argv if argv is not None else sys.argv[1:])
    write_csv(rows, out_dir / f"{stem}.csv")
    write_markdown(rows, results, out_dir / f"{stem}.md", a.ran + [command], wall, settings,
                   extra)
    figs = draw(results, out_dir) if not a.quick else []
    log(f"wrote {out_dir / stem}.csv/.md and {len(figs)} figures in {wall:.0f} s")


if __name__ == "__main__":
    main()
