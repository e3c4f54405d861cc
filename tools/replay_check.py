"""Do data, targets and coarse model agree? The stage-wise and step-mean replays, as a table.

    python tools/replay_check.py            # default sizes, 10 and 50 coarse steps
    python tools/replay_check.py --quick    # the small sizes of tests/data/test_coarse_models.py

For each scenario and mesh: the largest relative error of one stage-wise
replayed coarse step (coarse step = fine step, each stage's Φ^sgs; rounding
expected), and the area-weighted relative l2 error of the coarse model after
10 and 50 coarse steps of ``m = coarse_every`` fine steps when it replays the
step-mean Φ̄^sgs and forcing, replays the instantaneous Φ^sgs at each step's
start, or runs with no closure; the ratio no-closure / step-mean.
"""
from __future__ import annotations

import argparse
import time

import torch

from meshclosure.data.scenarios import get_scenario
from meshclosure.data.trajectory import coarse_steps, replay

DEFAULT = [("kinematic", "cartesian:64", 4, 3.0), ("kinematic", "healpix:16", 4, 3.0),
           ("kinematic", "icosahedral:4", 2, 3.0), ("barotropic", "cartesian:64", 4, 0.5),
           ("barotropic", "healpix:32", 4, 0.5), ("convection", "cartesian:64x32", 4, 5.0)]
QUICK = [("kinematic", "cartesian:32", 4, 3.0), ("kinematic", "healpix:8", 2, 3.0),
         ("kinematic", "icosahedral:3", 2, 3.0), ("barotropic", "cartesian:32", 4, 0.5),
         ("barotropic", "healpix:32", 4, 0.25), ("convection", "cartesian:32x16", 4, 5.0)]


def rel_l2(mesh, a, b, variables):
    V = mesh.cell_volume
    return max(float(((V * (a[v] - b[v]) ** 2).sum() / (V * b[v] ** 2).sum()).sqrt())
               for v in variables)


def run(name, mesh, factor, spin, n_steps):
    sc = get_scenario(name, mesh=mesh, factor=factor)
    c = sc.coarsening
    t, state = sc.advance(0.0, sc.initial_state(), int(round(spin / sc.dt)))
    # stage-wise, one fine step
    (_, s1, step1), = list(coarse_steps(sc, t, state, 1, every=1, keep_stages=True))
    exact = replay(sc, [step1], stagewise=True)[-1]
    truth1 = {k: c.restrict(v) for k, v in s1.items()}
    stage_err = max(float((exact[v] - truth1[v]).abs().max() / truth1[v].abs().max())
                    for v in sc.variables)
    steps, truth = [], []
    for _, s, step in coarse_steps(sc, t, state, n_steps):
        steps.append(step)
        truth.append({k: c.restrict(v) for k, v in s.items()})
    runs = {"step mean": replay(sc, steps), "instantaneous": replay(sc, steps, instantaneous=True),
            "no closure": replay(sc, steps, closure=False)}
    errs = {k: [rel_l2(sc.coarse, out[n - 1], truth[n - 1], sc.variables) for n in (10, n_steps)]
            for k, out in runs.items()}
    return sc, stage_err, errs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the test suite's small sizes")
    parser.add_argument("--steps", type=int, default=50, help="coarse steps (default 50)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    n = args.steps
    print(f"| scenario | mesh | factor | m | stage-wise | step mean @10 / @{n} | instantaneous "
          f"@10 / @{n} | no closure @10 / @{n} | ratio @10 / @{n} | wall |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, mesh, factor, spin in (QUICK if args.quick else DEFAULT):
        t0 = time.perf_counter()
        sc, stage, e = run(name, mesh, factor, spin, n)
        ratio = [e["no closure"][i] / e["step mean"][i] for i in (0, 1)]
        fmt = lambda v: f"{v[0]:.3g} / {v[1]:.3g}"  # noqa: E731
        print(f"| {name} | {mesh} | {factor} | {sc.coarse_every} | {stage:.1e} | "
              f"{fmt(e['step mean'])} | {fmt(e['instantaneous'])} | {fmt(e['no closure'])} | "
              f"{ratio[0]:.1f} / {ratio[1]:.1f} | {time.perf_counter() - t0:.0f} s |", flush=True)


if __name__ == "__main__":
    main()
