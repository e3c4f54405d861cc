"""Training benchmark: samples per second per model, online step time and memory against K,
and the speed-up of two processes under torchrun.

Three parts (``--parts models,online,ddp``), each printed as a table:

* **models** — training samples per second (forward + backward + Adam step, one
  batch of ``--batch`` samples, float32, default widths) of every registered
  model (``meshclosure.nn.list_models(family)``) on the ``kinematic``
  scenario's coarse mesh of each family at its default size (Cartesian 64² →
  16², HEALPix nside 16 → 4, icosahedral level 4 → 2), on random inputs with
  the scenario's features; "/ mgn" divides by the same run's ``mgn`` on the
  same mesh, so the ratios compare across machines.
* **online** — one online-training update (the coarse hybrid model unrolled K
  coarse steps with ``mgn`` as its closure, :func:`meshclosure.train.online.online_loss`,
  backward, Adam step) on a ``kinematic`` trajectory dataset, K = 1, 2, 4, 8,
  without and with per-step gradient checkpointing; time per update and the
  peak tensor memory the update adds (each case in a fresh process; every
  allocation and free of torch's CPU allocator, from the profiler).
* **ddp** — wall time per epoch (median over the epochs after the first) of
  :func:`meshclosure.train.train` with the same global batch in one process
  (1 thread; also 2 threads with ``--compare-threads``) and in two processes
  under ``torchrun --standalone --nproc_per_node=2`` (1 thread each), offline
  and online (K = 2); speed-up = one process's time / two processes' time.

Times are medians of ``--repeats`` after a warm-up; nothing here asserts a time.
``--quick`` uses a smaller dataset (Cartesian 16² → 8²), fewer repeats and epochs.

    python tools/bench_train.py [--quick] [--parts models,online,ddp] [--threads 1]
        [--repeats 5] [--batch 8] [--models mgn,gru] [--device cpu] [--compare-threads]
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import median_time  # noqa: E402  (tools/_timing.py)

ROOT = Path(__file__).resolve().parents[1]
FAMILY_MESH = {"cartesian": "cartesian:64x64", "healpix": "healpix:16",
               "icosahedral": "icosahedral:4"}
KS = (1, 2, 4, 8)


# ------------------------------------------------------------------ models
def bench_models(models, batch: int, repeats: int, device: torch.device) -> list:
    from meshclosure.closures import FeaturePipeline
    from meshclosure.data.scenarios import get_scenario
    from meshclosure.nn import build_model, list_models

    rows = []
    gen = torch.Generator().manual_seed(0)
    for family, spec in FAMILY_MESH.items():
        scenario = get_scenario("kinematic", mesh=spec)
        mesh = scenario.coarse.to(device=device, dtype=torch.float32)
        n_in, n_vars = len(FeaturePipeline.from_scenario(scenario).names), 1
        label = f"{family} {mesh.n_cells} cells"
        x = torch.randn(batch, mesh.n_cells, n_in, generator=gen).to(device)
        y = torch.randn(batch, mesh.n_faces, n_vars, generator=gen).to(device)
        for name in list_models(family):
            if models and name not in models:
                continue
            torch.manual_seed(0)
            try:
                model = build_model(name, mesh, in_features=n_in, n_vars=n_vars).to(device)
            except (ValueError, TypeError) as err:
                rows.append(dict(mesh=label, model=name, error=str(err).splitlines()[0][:80]))
                continue
            opt = torch.optim.Adam(model.parameters(), lr=1e-4)

            def update():
                opt.zero_grad(set_to_none=True)
                out = model(mesh, x)
                out = out[0] if isinstance(out, tuple) else out
                ((out - y) ** 2).mean().backward()
                opt.step()

            t = median_time(update, repeats, device)
            rows.append(dict(mesh=label, model=name, params=sum(p.numel() for p in
                                                                model.parameters()),
                             ms=1e3 * t, samples_s=batch / t))
            print(f"  {label:24s} {name:12s} {1e3 * t:9.2f} ms/update "
                  f"{batch / t:9.1f} samples/s", flush=True)
    ref = {r["mesh"]: r for r in rows if r["model"] == "mgn" and "error" not in r}
    print(f"\n**Training throughput** (batch {batch}, float32, forward + backward + Adam step)\n")
    print("| mesh | model | parameters | ms / update | samples / s | samples/s ÷ mgn |")
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        if "error" in r:
            print(f"| {r['mesh']} | {r['model']} | | skipped: {r['error']} | | |")
            continue
        m = ref.get(r["mesh"])
        ratio = f"{r['samples_s'] / m['samples_s']:.2f}" if m else "–"
        print(f"| {r['mesh']} | {r['model']} | {r['params']} | {r['ms']:.1f} | "
              f"{r['samples_s']:.1f} | {ratio} |")
    return rows


# ------------------------------------------------------------------ data
def make_dataset(folder: Path, quick: bool) -> Path:
    """A ``kinematic`` trajectory dataset whose training split holds windows of 8 steps."""
    from meshclosure.data import generate
    from meshclosure.data.scenarios import get_scenario

    out = folder / ("kinematic_quick.nc" if quick else "kinematic.nc")
    if out.exists():
        return out
    scenario = (get_scenario("kinematic", mesh="cartesian:16", factor=2, spinup_time=0.5)
                if quick else get_scenario("kinematic", spinup_time=1.0))
    t0 = time.perf_counter()
    generate(scenario, out, n_samples=17, ood_samples=1, trajectory=True, progress=False)
    print(f"  dataset {out.name}: {scenario.coarse.n_cells} coarse cells, "
          f"{time.perf_counter() - t0:.1f} s to generate", flush=True)
    return out


# ------------------------------------------------------------------ online
def peak_allocated(fn) -> float:
    """Peak bytes of CPU tensor memory that ``fn()`` holds at once above what was live before
    (every allocation and free of torch's allocator, recorded by the profiler)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    cpu = torch._C._autograd.DeviceType.CPU
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]" and e.device_type() == cpu)
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return float(peak)


def online_case(data: str, k: int, checkpoint: bool, batch: int, repeats: int) -> dict:
    """One online update's time and added peak memory (run in a fresh process)."""
    import gc

    from meshclosure.closures import FeaturePipeline, ModelClosure, Normalizer
    from meshclosure.data import TrajectoryDataset
    from meshclosure.data.scenarios import Scenario
    from meshclosure.nn import build_model
    from meshclosure.train.online import online_loss

    ds = TrajectoryDataset(data, "train", k)
    scenario = Scenario.from_config(ds.scenario_config)
    features = FeaturePipeline.from_scenario(scenario)
    torch.manual_seed(0)
    model = build_model("mgn", ds.mesh, in_features=len(features.names),
                        n_vars=len(ds.variables))
    closure = ModelClosure(model, features, Normalizer.from_stats(ds.stats), ds.variables)
    window = ds.collate([ds[i % len(ds)] for i in range(batch)])
    opt = torch.optim.Adam(model.parameters(), lr=1e-5)

    def update():
        opt.zero_grad(set_to_none=True)
        loss, _ = online_loss(scenario, closure, window, k, checkpoint=checkpoint,
                              state_scale=ds.stats)
        loss.backward()
        opt.step()

    with torch.no_grad():                             # caches of the mesh and model, no graph
        online_loss(scenario, closure, window, k, state_scale=ds.stats)
    update()                                          # Adam's state, gradient buffers
    gc.collect()
    peak = peak_allocated(update)
    t = median_time(update, repeats, torch.device("cpu"))
    return dict(k=k, checkpoint=checkpoint, ms=1e3 * t, peak_mb=peak / 2**20,
                cells=ds.mesh.n_cells, batch=batch)


def bench_online(data: Path, batch: int, repeats: int, threads: int) -> list:
    rows = []
    for k in KS:
        for ck in (False, True):
            cmd = [sys.executable, __file__, "--_online", str(data), str(k), str(int(ck)),
                   "--batch", str(batch), "--repeats", str(repeats), "--threads", str(threads)]
            done = subprocess.run(cmd, env=_env(threads), capture_output=True, text=True)
            if done.returncode:
                print(done.stderr[-3000:])
                raise SystemExit(f"online case K={k} checkpoint={ck} failed")
            row = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"  K={k} checkpoint={ck!s:5s} {row['ms']:9.1f} ms/update "
                  f"+{row['peak_mb']:.1f} MiB peak", flush=True)
    print(f"\n**Online training** (mgn, {rows[0]['cells']} coarse cells, batch of "
          f"{rows[0]['batch']} windows, float32; memory: peak tensor bytes one update holds at once)\n")
    print("| K | ms / update | ms / update (checkpointed) | time ratio | "
          "peak MiB | peak MiB (checkpointed) | memory ratio |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for k in KS:
        a, b = [r for r in rows if r["k"] == k and not r["checkpoint"]][0], \
            [r for r in rows if r["k"] == k and r["checkpoint"]][0]
        mem = f"{b['peak_mb'] / a['peak_mb']:.2f}" if a["peak_mb"] > 0 else "–"
        print(f"| {k} | {a['ms']:.1f} | {b['ms']:.1f} | {b['ms'] / a['ms']:.2f} | "
              f"{a['peak_mb']:.1f} | {b['peak_mb']:.1f} | {mem} |")
    return rows


# ------------------------------------------------------------------ ddp
def ddp_case(data: str, config: str, out: str) -> None:
    """Train one config (in one process, or as one torchrun rank); rank 0 writes ``out``."""
    from meshclosure.train import train
    from meshclosure.train.distributed import shutdown

    train(data, out, json.loads(config), resume=False, overwrite=True, progress=False)
    shutdown()


def _epoch_time(out: Path) -> float:
    with open(out / "metrics.csv") as f:
        walls = [float(r["wall_s"]) for r in csv.DictReader(f)]
    return statistics.median(walls[1:] if len(walls) > 1 else walls)


def bench_ddp(data: Path, folder: Path, epochs: int, batch: int,
              compare_threads: bool = False) -> list:
    base = {"model": "mgn", "epochs": epochs, "batch_size": batch, "updates_per_epoch": 6,
            "schedule": "constant", "ema_decay": 0.0}
    cases = {"offline": base, "online K=2": base | {"online_steps": 2, "updates_per_epoch": 3}}
    rows = []
    for label, cfg in cases.items():
        times = {}
        ways = [("1 process, 1 thread", 1, 1), ("2 processes, 1 thread each", 2, 1)]
        if compare_threads:
            ways.insert(1, ("1 process, 2 threads", 1, 2))
        for how, procs, threads in ways:
            out = folder / f"ddp_{label.replace(' ', '_').replace('=', '')}_{procs}_{threads}"
            run = [__file__, "--_ddp", str(data), json.dumps(cfg), str(out)]
            cmd = ([sys.executable, "-m", "torch.distributed.run", "--standalone",
                    f"--nproc_per_node={procs}", *run] if procs > 1 else [sys.executable, *run])
            t0 = time.perf_counter()
            done = subprocess.run(cmd, env=_env(threads), capture_output=True, text=True)
            if done.returncode:
                print(done.stdout[-2000:], done.stderr[-4000:])
                raise SystemExit(f"ddp case {label} / {how} failed")
            times[how] = _epoch_time(out)
            print(f"  {label:11s} {how:27s} {times[how]:8.3f} s/epoch "
                  f"(whole run {time.perf_counter() - t0:.1f} s)", flush=True)
        rows.append(dict(case=label, **times))
    print(f"\n**Two processes under torchrun** (mgn, global batch {batch}, gloo, CPU; "
          "median wall time per epoch after the first)\n")
    cols = [c for c in ("1 process, 1 thread", "1 process, 2 threads") if c in rows[0]]
    print("| case | " + " | ".join(f"{c} (s)" for c in cols) + " | 2 processes (s) | "
          + " | ".join(f"speed-up vs {c}" for c in cols) + " |")
    print("|---|" + "---:|" * (2 * len(cols) + 1))
    for r in rows:
        two = r["2 processes, 1 thread each"]
        print(f"| {r['case']} | " + " | ".join(f"{r[c]:.3f}" for c in cols) + f" | {two:.3f} | "
              + " | ".join(f"{r[c] / two:.2f}" for c in cols) + " |")
    return rows


def _env(threads: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


# ------------------------------------------------------------------ main
def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--_online"]:                     # internal: one online case
        _, data, k, ck, *rest = argv
        p = argparse.ArgumentParser()
        p.add_argument("--batch", type=int)
        p.add_argument("--repeats", type=int)
        p.add_argument("--threads", type=int)
        a = p.parse_args(rest)
        torch.set_num_threads(a.threads)
        print(json.dumps(online_case(data, int(k), bool(int(ck)), a.batch, a.repeats)))
        return
    if argv[:1] == ["--_ddp"]:                        # internal: one training process
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        ddp_case(*argv[1:4])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="small dataset, 2 repeats, 3 epochs (a few minutes on 2 cores)")
    parser.add_argument("--parts", default="models,online,ddp")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--models", default=None, help="comma-separated subset of list_models()")
    parser.add_argument("--device", default="cpu", help="device of the models part")
    parser.add_argument("--compare-threads", action="store_true",
                        help="ddp part: also one process with 2 threads")
    parser.add_argument("--data-dir", default=None,
                        help="folder for the generated dataset (default: a temporary one)")
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))
    unknown = parts - {"models", "online", "ddp"}
    if unknown:
        parser.error(f"--parts {args.parts}: unknown part(s) {sorted(unknown)}; "
                     "use models, online and ddp")
    repeats = args.repeats or (2 if args.quick else 5)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), {os.cpu_count()} cores, "
          f"median of {repeats}{', quick' if args.quick else ''}", flush=True)
    if "models" in parts:
        bench_models(args.models.split(",") if args.models else None, args.batch, repeats,
                     torch.device(args.device))
    if parts & {"online", "ddp"}:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(args.data_dir) if args.data_dir else Path(tmp)
            folder.mkdir(parents=True, exist_ok=True)
            data = make_dataset(folder, args.quick)
            if "online" in parts:
                bench_online(data, 2 if args.quick else 4, repeats, args.threads)
            if "ddp" in parts:
                bench_ddp(data, folder, 3 if args.quick else 5, args.batch, args.compare_threads)


if __name__ == "__main__":
    main()
