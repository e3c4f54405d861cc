"""The closure bridge, measured: training throughput against batch size, and the cost of a
coarse-model step with a network closure.

1. Samples per second of forward + backward (the MSE of the face flux, Adam step
   excluded) for ``mgn``, ``chebnet`` and ``cnn`` against the batch size B, on the
   coarse mesh of a scenario's default configuration (Cartesian 16x16 from
   ``cartesian:64`` factor 4; HEALPix nside 4 from ``healpix:16``; the ratio column
   divides by B = 1 in the same run).
2. One SSP-RK3 step of each scenario's coarse model (``scenario.coarse_model``)
   with a ``ModelClosure`` (``mgn``, default width) against the same step with no
   closure, per mesh family: the ratio is what the network costs online.

    python tools/bench_bridge.py [--threads 1] [--repeats 5] [--batches 1,4,16,64]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from meshclosure.closures import FeaturePipeline, ModelClosure
from meshclosure.data.scenarios import get_scenario
from meshclosure.nn import build_model, model_families
from meshclosure.solver.steppers import ssprk3_step

MESHES = {"cartesian 16x16": ("kinematic", "cartesian:64", 4),
          "healpix nside 4": ("kinematic", "healpix:16", 4),
          "icosahedral L2": ("kinematic", "icosahedral:4", 2)}
STEP_CASES = [("kinematic", "cartesian:64", 4), ("kinematic", "healpix:16", 4),
              ("kinematic", "icosahedral:4", 2), ("barotropic", "cartesian:64", 4),
              ("convection", "cartesian:64x32", 4)]


def _time(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def throughput(batches, repeats):
    rows = []
    for label, (name, spec, factor) in MESHES.items():
        mesh = get_scenario(name, mesh=spec, factor=factor).coarse
        for model_name in ("mgn", "chebnet", "cnn"):
            if mesh.family not in model_families(model_name):
                continue
            torch.manual_seed(0)
            try:
                model = build_model(model_name, mesh, in_features=3, n_vars=1)
            except ValueError as err:
                rows.append((label, model_name, None, str(err)[:60]))
                continue
            base = None
            for B in batches:
                x = torch.randn(B, mesh.n_cells, 3)
                y = torch.randn(B, mesh.n_faces, 1)

                def step():
                    model.zero_grad(set_to_none=True)
                    out = model(mesh, x)
                    out = out[0] if isinstance(out, tuple) else out
                    ((out - y) ** 2).mean().backward()

                rate = B / _time(step, repeats)
                base = rate if base is None else base
                rows.append((label, model_name, B, f"{rate:10.1f} samples/s  x{rate / base:5.2f}"))
    return rows


def step_cost(repeats):
    rows = []
    for name, spec, factor in STEP_CASES:
        sc = get_scenario(name, mesh=spec, factor=factor)
        pipe = FeaturePipeline.from_scenario(sc)
        torch.manual_seed(0)
        model = build_model("mgn", sc.coarse, in_features=pipe.n_features,
                            n_vars=len(sc.variables)).double()
        closure = ModelClosure(model, pipe)
        state = {k: sc.coarsening.restrict(v) for k, v in sc.initial_state().items()
                 if k in sc.variables}
        plain, hybrid = sc.coarse_model(), sc.coarse_model(closure=closure)
        with torch.no_grad():
            t0 = _time(lambda: ssprk3_step(plain.rhs, 1.0, state, sc.coarse_dt), repeats)
            t1 = _time(lambda: ssprk3_step(hybrid.rhs, 1.0, state, sc.coarse_dt), repeats)
        rows.append((name, spec, sc.coarse.n_cells, t0 * 1e3, t1 * 1e3, t1 / t0))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batches", default="1,4,16,64")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    batches = [int(b) for b in args.batches.split(",")]
    print(f"# training throughput (forward+backward, float32, {args.threads} thread(s))")
    print("| mesh | model | B | samples/s, ratio to B=1 |\n|---|---|---|---|")
    for row in throughput(batches, args.repeats):
        print("| " + " | ".join("" if v is None else str(v) for v in row) + " |", flush=True)
    print("\n# one coarse-model SSP-RK3 step, float64: no closure vs ModelClosure(mgn)")
    print("| scenario | mesh | coarse cells | no closure (ms) | with mgn (ms) | ratio |")
    print("|---|---|---|---|---|---|")
    for name, spec, n, t0, t1, r in step_cost(args.repeats):
        print(f"| {name} | {spec} | {n} | {t0:.2f} | {t1:.2f} | {r:.1f} |", flush=True)


if __name__ == "__main__":
    main()
