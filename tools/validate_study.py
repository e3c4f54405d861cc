"""Issue 12, the validation hierarchy's findings: learned closures against the calibrated
baselines, offline, partially coupled and online, over seeds.

Cases (``--cases``):

* ``demo`` — the demo configuration (:data:`meshclosure.demo.DEMO`: ``kinematic``
  on Cartesian 32² → 8², a trajectory run of 600 coarse steps split 40/10/50 plus
  60 OOD steps), per seed ``s`` the dataset with scenario seed ``s``, the
  baselines calibrated on its training split, ``mgn`` trained with seed ``s``, and
  the reference models ``nodewise`` and ``nodewise_mean_free`` (a per-cell
  tendency: not in flux form); :func:`meshclosure.validate.validate` with three
  truth initial states and ``--audit`` more steps (default 10⁴) for the budget.
* ``column`` — ``convection`` on its default mesh: per seed the dataset, the
  calibration and ``mgn`` (vertical fluxes), then the single-column model with
  each closure against the horizontally averaged truth.
* ``baro-plane``, ``baro-sphere`` — ``barotropic`` (closures for ζ and q) on
  ``cartesian:64`` and ``healpix:16`` (factor 4): a training run (seed 0, 60
  coarse steps) and a held-out run (seed 1000, 100 coarse steps, 92 % test);
  ``mgn`` trained with seeds ``s``; validated on the held-out run against the
  baselines calibrated on the training run.

Per case the learned − power-law (or − Smagorinsky) paired differences over seeds
of ``offline.r2`` and ``online.similarity_mean`` (and of the column's profile RMSE),
with their standard errors. Outputs (atomic): ``tools/results/validate_study.json``
and ``validate_study.md``. Work files go to ``--work``; a rerun reuses finished
datasets, models and validations.

    OMP_NUM_THREADS=1 python tools/validate_study.py [--cases demo,column]
        [--seeds 0 1 2] [--audit 10000] [--work /tmp/validate_study] [--quick]
"""
from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from meshclosure._files import atomic_path
from meshclosure.data import generate, get_scenario
from meshclosure.demo import DEMO, QUICK
from meshclosure.train import calibrate, save_calibration, train
from meshclosure.train.skill import paired_difference
from meshclosure.validate import validate

CASES = ("demo", "column", "baro-plane", "baro-sphere")
BARO_MESH = {"baro-plane": "cartesian:64", "baro-sphere": "healpix:16"}


def _data(path: Path, scenario, **kw) -> Path:
    if not path.exists():
        t0 = time.perf_counter()
        generate(scenario, path, trajectory=True, progress=False, **kw)
        print(f"  generated {path.name} in {time.perf_counter() - t0:.0f} s", flush=True)
    return path


def _cal(data: Path, path: Path) -> dict:
    if not path.exists():
        save_calibration(calibrate(str(data)), path)
    return json.loads(path.read_text())


def _model(data: Path, out: Path, config: dict) -> Path:
    if not (out / "model.pt").exists():
        t0 = time.perf_counter()
        train(str(data), out, config, resume=True, progress=False)
        print(f"  trained {out.name} in {time.perf_counter() - t0:.0f} s", flush=True)
    return out / "model.pt"


def _summary(result) -> dict:
    return {name: {k: (None if isinstance(v, float) and math.isnan(v) else v)
                   for k, v in m.items()} for name, m in result.summary.items()}


def _validate(work: Path, data: Path, models: dict, cal: dict, **kw) -> dict:
    key = work / "validation.json"
    if key.exists():
        return json.loads(key.read_text())
    from meshclosure.validate.hierarchy import load_closure
    from meshclosure.data import read_dataset
    from meshclosure.data.scenarios import Scenario

    ds = read_dataset(data)
    mesh = Scenario.from_config(json.loads(ds.attrs["scenario_config"])).coarse
    closures = {name: load_closure(path, mesh)[0] for name, path in models.items()}
    t0 = time.perf_counter()
    result = validate(str(data), closures=closures, baselines=cal, **kw)
    out = {"summary": _summary(result), "notes": result.notes, "timings": result.timings,
           "wall_s": time.perf_counter() - t0,
           "online_window": getattr(result.online, "window", None)}
    if result.online is not None:
        out["online"] = {name: {k: m.get(k) for k in ("distances", "similarity",
                                                      "blowup_step", "blowup_reason")}
                         for name, m in result.online.metrics.items()}
    if result.column is not None:
        out["column"] = {k: v for k, v in result.column.metrics.items()}
    with atomic_path(key, ".json") as tmp:
        Path(tmp).write_text(json.dumps(out, indent=1, default=str))
    return out


def run_demo_case(seed: int, work: Path, cfg: dict, audit: int) -> dict:
    w = work / f"demo_s{seed}"
    w.mkdir(parents=True, exist_ok=True)
    sc = get_scenario(cfg["scenario"], cfg["mesh"], factor=cfg["factor"], seed=seed)
    data = _data(w / "truth.nc", sc, n_samples=cfg["n_samples"],
                 ood_samples=cfg["ood_samples"], fractions=cfg["fractions"])
    cal = _cal(data, w / "calibration.json")
    models = {}
    for name in ("mgn", "nodewise", "nodewise_mean_free"):
        conf = {**cfg["train"], "model": name, "seed": seed}
        if name != "mgn":
            conf["model_config"] = dict(cfg["train"]["model_config"])
        models[name] = _model(data, w / name, conf)
    return _validate(w, data, models, cal, n_initial=cfg["n_initial"], audit_steps=audit)


def run_column_case(seed: int, work: Path, quick: bool) -> dict:
    w = work / f"column_s{seed}"
    w.mkdir(parents=True, exist_ok=True)
    sc = get_scenario("convection", seed=seed)
    data = _data(w / "truth.nc", sc, n_samples=40 if quick else 160,
                 fractions=(0.5, 0.1, 0.4))
    cal = _cal(data, w / "calibration.json")
    conf = {"model": "mgn", "seed": seed, "epochs": 4 if quick else 30, "batch_size": 8,
            "lr": 3e-3, "model_config": {"hidden": 16 if quick else 32, "n_blocks": 2}}
    models = {"mgn": _model(data, w / "mgn", conf)}
    return _validate(w, data, models, cal, stages=("offline", "coupled"))


def run_baro_case(case: str, seed: int, work: Path, quick: bool) -> dict:
    mesh = BARO_MESH[case]
    base = work / case
    base.mkdir(parents=True, exist_ok=True)
    kw = {"allow_unconverged": True}
    train_data = _data(base / "train.nc", get_scenario("barotropic", mesh, factor=4, seed=0),
                       n_samples=24 if quick else 60, **kw)
    held = _data(base / "heldout.nc", get_scenario("barotropic", mesh, factor=4, seed=1000),
                 n_samples=20 if quick else 100, fractions=(0.04, 0.04, 0.92), **kw)
    cal = _cal(train_data, base / "calibration.json")
    w = base / f"s{seed}"
    w.mkdir(parents=True, exist_ok=True)
    conf = {"model": "mgn", "seed": seed, "epochs": 4 if quick else 30, "batch_size": 4,
            "lr": 1e-3, "model_config": {"hidden": 16 if quick else 32, "n_blocks": 2}}
    # the same network with the tendency −div Φ in the loss too: the flux of a
    # flux-trained mgn is good (val R² 0.7) but its divergence is not
    models = {"mgn": _model(train_data, w / "mgn", conf),
              "mgn_tendency": _model(train_data, w / "mgn_tendency",
                                     {**conf, "tendency_weight": 1.0})}
    return _validate(w, held, models, cal, n_initial=3)


def _paired(per_seed: list, a: str, b: str, key: str):
    xa = [r["summary"].get(a, {}).get(key) for r in per_seed]
    xb = [r["summary"].get(b, {}).get(key) for r in per_seed]
    pairs = [(x, y) for x, y in zip(xa, xb) if x is not None and y is not None
             and math.isfinite(x) and math.isfinite(y)]
    if len(pairs) < 2:
        return None
    d = paired_difference([p[0] for p in pairs], [p[1] for p in pairs])
    return {"a": a, "b": b, "metric": key, "mean": d.mean, "se": d.se, "n": d.n,
            "beyond_2se": abs(d.mean) > 2 * d.se}


def _fmt(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return "∞" if math.isinf(v) else f"{v:.3g}"
    return str(v)


def _markdown(results: dict, command: str, wall: float) -> str:
    lines = ["# Validation study (issue 12)", "", f"Command: `{command}`  ",
             f"Wall time of this invocation: {wall:.0f} s on this machine (2 shared CPU "
             "cores); a rerun reuses the datasets, models and validations of --work, so the "
             "per-seed times below are what the runs cost.", ""]
    keys = ("offline.r2", "offline.ood.r2", "online.similarity_mean", "online.time_to_blowup",
            "online.conservation_drift")
    for case, entry in results.items():
        lines += [f"## {case}", ""]
        per_seed = entry["per_seed"]
        names = sorted({n for r in per_seed for n in r["summary"]})
        extra = sorted({k for r in per_seed for m in r["summary"].values() for k in m
                        if k.startswith(("column.", "coupled.", "online.similarity_mean."))
                        and not k.endswith("_se")})
        cols = list(keys) + extra
        lines.append("| closure | " + " | ".join(cols) + " |")
        lines.append("|---|" + "---|" * len(cols))
        for n in names:
            cells = []
            for k in cols:
                vals = [r["summary"].get(n, {}).get(k) for r in per_seed]
                vals = [v for v in vals if isinstance(v, (int, float))]
                if not vals:
                    cells.append("n/a")
                elif len(vals) == 1:
                    cells.append(_fmt(float(vals[0])))
                else:
                    arr = np.asarray(vals, dtype=float)
                    fin = arr[np.isfinite(arr)]
                    cells.append(_fmt(float(fin.mean())) + f" ± {fin.std(ddof=1):.2g}"
                                 if fin.size > 1 else _fmt(float(arr.mean())))
            lines.append(f"| {n} | " + " | ".join(cells) + " |")
        lines.append("")
        lines.append(f"Seeds: {entry['seeds']} (mean ± standard deviation over seeds). "
                     "validate() wall time per seed: " + ", ".join(
                         f"{r.get('wall_s', float('nan')):.0f} s" for r in per_seed)
                     + "; online audit steps per seed: " + ", ".join(
                         str((r.get("online_window") or {}).get("audit_steps", "n/a"))
                         for r in per_seed) + ".")
        for d in entry["paired"]:
            if d:
                lines.append(f"- {d['a']} − {d['b']} on {d['metric']}: {d['mean']:+.4g} ± "
                             f"{d['se']:.2g} (SE, n={d['n']}); "
                             f"{'beyond' if d['beyond_2se'] else 'within'} 2 SE")
        notes = sorted({n for r in per_seed for n in r.get("notes", [])})
        lines += [f"- note: {n}" for n in notes] + [""]
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--audit", type=int, default=10_000, help="budget-audit steps (demo case)")
    p.add_argument("--work", default="/tmp/validate_study")
    p.add_argument("--out", default="tools/results")
    p.add_argument("--quick", action="store_true", help="tiny sizes to test the script")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    work = Path(args.work)
    start = time.perf_counter()
    results = {}
    for case in args.cases.split(","):
        print(f"case {case}", flush=True)
        per_seed = []
        for seed in args.seeds:
            if case == "demo":
                r = run_demo_case(seed, work, QUICK if args.quick else DEMO,
                                  200 if args.quick else args.audit)
            elif case == "column":
                r = run_column_case(seed, work, args.quick)
            elif case in BARO_MESH:
                r = run_baro_case(case, seed, work, args.quick)
            else:
                raise SystemExit(f"--cases: unknown case {case!r}; choose from {CASES}")
            per_seed.append(r)
            print(f"  seed {seed}: " + ", ".join(
                f"{n} sim {_fmt(m.get('online.similarity_mean'))} R² {_fmt(m.get('offline.r2'))}"
                for n, m in r["summary"].items()), flush=True)
        ref = {"demo": "power_law", "column": "convective"}.get(case, "smagorinsky")
        keys = ["offline.r2", "offline.step_mean.r2", "offline.ood.r2",
                "online.similarity_mean"]
        keys += sorted({k for r in per_seed for m in r["summary"].values() for k in m
                        if k.startswith("online.similarity_mean.")})
        if case == "column":
            keys += ["column.profile_rmse", "column.profile_rmse_end", "column.depth_error",
                     "column.growth_error", "column.similarity"]
        paired = [_paired(per_seed, "mgn", ref, k) for k in keys]
        if case in BARO_MESH:
            paired += [_paired(per_seed, "mgn_tendency", ref, k) for k in keys]
        results[case] = {"seeds": args.seeds, "per_seed": per_seed, "paired": paired}
    wall = time.perf_counter() - start
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = "OMP_NUM_THREADS=1 python tools/validate_study.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    stem = "validate_study_quick" if args.quick else "validate_study"
    with atomic_path(out / f"{stem}.json", ".json") as tmp:
        Path(tmp).write_text(json.dumps({"command": command, "wall_s": wall,
                                         "results": results}, indent=1, default=str))
    with atomic_path(out / f"{stem}.md", ".md") as tmp:
        Path(tmp).write_text(_markdown(results, command, wall))
    print(_markdown(results, command, wall))


if __name__ == "__main__":
    main()
