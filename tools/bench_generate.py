"""Generation throughput of the truth scenarios: fine steps per second and samples per minute.

For each ``SCENARIO@MESH`` it runs ``meshclosure.data.generate`` (spin-up, then
``--samples`` samples, coarsening ``--factor``) into a temporary folder and
prints the timings the dataset records in its ``generation`` attribute.
Sampling-phase "fine steps/s" include computing the subgrid targets. With
``--trajectory`` each sample is a coarse step (``coarse_every`` fine steps,
with the step means over every fine stage), and the size of the file is shown.

    python tools/bench_generate.py [--threads 1] [--samples 6] [--factor 4] [--format zarr] \\
        [--trajectory] \\
        kinematic@cartesian:64 kinematic@healpix:16 kinematic@icosahedral:4 \\
        convection@cartesian:64x32 barotropic@cartesian:64

``--fine-step`` instead times a fine SSP-RK3 step of each scenario's truth run (the
mean over 64 steps of ``scenario.advance``, so the block-wise flow and forcing
synthesis is counted; then the solver, diffusion, sources)
against the bare solver step it wraps on the same mesh, in the same run (ratios
are what to compare; the machine is shared):

* ``kinematic``: ``TracerModel(fine, transport, scheme)`` with a TIME-DEPENDENT
  transport (a callable returning a precomputed ``U``; no diffusion, no relaxation),
  the reference the ratio uses; ``const`` is the same step with a constant tensor
  ``U``, which the solver turns into one assembled sparse matrix (a path a
  time-dependent flow can never take, shown for scale);
* ``barotropic``: ``BarotropicModel(fine, f, scheme)`` on the scenario's state
  (vorticity and the passive tracer), no forcing, drag, diffusion or relaxation;
* ``convection``: ``BoussinesqModel(fine, scheme)`` on ``(ζ, b)``, no boundary flux,
  diffusion or relaxation.

    python tools/bench_generate.py --fine-step [--threads 1] [--repeats 30] [--device cpu --device cuda]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from meshclosure.data import generate, get_scenario, read_dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import median_time  # noqa: E402

DEFAULT_CASES = ("kinematic@cartesian:64", "kinematic@healpix:16", "kinematic@icosahedral:4",
                 "convection@cartesian:64x32", "barotropic@cartesian:64")
FINE_STEP_CASES = ("kinematic@cartesian:64", "kinematic@healpix:16", "kinematic@icosahedral:4",
                   "barotropic@cartesian:64", "barotropic@healpix:16",
                   "barotropic@icosahedral:4", "kinematic@cubed:24", "barotropic@cubed:24",
                   "convection@cartesian:64x32")


BLOCK = 64
"""Fine steps per timed call of ``--fine-step`` (the synthesis block of
:class:`~meshclosure.data.random_flows.ModeSynthesis`)."""


def _scenario(name: str, mesh: str, factor: int, device: torch.device):
    """The scenario on ``device`` (older versions without a ``device`` keyword: CPU only)."""
    if device.type == "cpu":
        return get_scenario(name, mesh or None, factor=factor, seed=0)
    return get_scenario(name, mesh or None, factor=factor, seed=0, device=device)


def bare_steppers(scenario, state):
    """``{label: step()}``: the bare solver steps the scenario's fine step is compared
    with (see the module docstring); the first is the reference of the ratio."""
    from meshclosure.solver import BarotropicModel, TracerModel
    from meshclosure.solver.barotropic import BoussinesqModel
    from meshclosure.solver.steppers import ssprk3_step

    mesh, p, dt = scenario.fine, scenario.params, scenario.dt
    scheme = p.get("scheme", "linear")
    if scenario.name == "kinematic":
        U = scenario.transport(0.0, state)
        moving = TracerModel(mesh, lambda t: U, scheme=scheme)
        fixed = TracerModel(mesh, U, scheme=scheme)
        return {"bare": lambda: ssprk3_step(moving.rhs, 0.0, state, dt),
                "const": lambda: ssprk3_step(fixed.rhs, 0.0, state, dt)}
    if scenario.name == "barotropic":
        kw = {"omega": p["omega"]} if mesh.is_sphere else {"f0": p["f0"]}
        model = BarotropicModel(mesh, scheme=scheme, **kw)
    elif scenario.name == "convection":
        model = BoussinesqModel(mesh, scheme=scheme)
    else:
        raise ValueError(f"no bare solver step is defined for the {scenario.name!r} scenario")
    return {"bare": lambda: ssprk3_step(model.rhs, 0.0, state, dt)}


def fine_step(cases, factor: int, repeats: int, device: torch.device) -> None:
    """Print the fine-step table (``--fine-step``)."""
    print(f"{'scenario':11s} {'fine mesh':20s} {'cells':>6s} {'fine ms':>8s} {'bare ms':>8s} "
          f"{'ratio':>6s} {'const ms':>8s}")
    for case in cases:
        name, _, mesh = case.partition("@")
        scenario = _scenario(name, mesh, factor, device)
        state = scenario.initial_state()
        clock = {"t": 0.0, "state": state}

        def steps():
            clock["t"], clock["state"] = scenario.advance(clock["t"], clock["state"], BLOCK)

        # the mean over BLOCK steps: the flow and forcing are synthesised BLOCK OU samples
        # at a time (aligned blocks), so a single-step median would leave that cost out
        fine = median_time(steps, max(3, repeats // 10), device) / BLOCK
        bare = {k: median_time(f, repeats, device)
                for k, f in bare_steppers(scenario, scenario.initial_state()).items()}
        const = f"{1e3 * bare['const']:8.3f}" if "const" in bare else f"{'-':>8s}"
        print(f"{name:11s} {mesh or '(default)':20s} {scenario.fine.n_cells:6d} "
              f"{1e3 * fine:8.3f} {1e3 * bare['bare']:8.3f} {fine / bare['bare']:6.2f} {const}",
              flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="*", default=[],
                        help="SCENARIO@MESH, e.g. kinematic@healpix:32")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--samples", type=int, default=6)
    parser.add_argument("--factor", type=int, default=4)
    parser.add_argument("--format", choices=("netcdf", "zarr"), default="netcdf",
                        help="storage of the dataset (default netcdf)")
    parser.add_argument("--trajectory", action="store_true",
                        help="trajectory datasets: a sample at every coarse step")
    parser.add_argument("--fine-step", action="store_true",
                        help="time one fine step of each scenario against the bare solver step "
                             f"(default cases {' '.join(FINE_STEP_CASES)})")
    parser.add_argument("--repeats", type=int, default=30, help="timed steps (--fine-step)")
    parser.add_argument("--device", action="append", default=None,
                        help="device(s) of --fine-step (repeatable; default: cpu, and cuda "
                             "when a GPU is present)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.fine_step:
        devices = args.device or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
        if not torch.cuda.is_available():
            print("# no CUDA device here: CPU figures only")
        for name in devices:
            device = torch.device(name)
            print(f"# one fine SSP-RK3 step, median of {args.repeats}; {args.threads} "
                  f"thread(s); device {device}; torch {torch.__version__}")
            fine_step(args.cases or FINE_STEP_CASES, args.factor, args.repeats, device)
        return
    print(f"{'scenario':11s} {'fine mesh':20s} {'cells':>15s} {'every':>5s} "
          f"{'steps/s':>8s} {'samples/min':>11s} {'spin-up s':>9s} {'total s':>8s} {'MB':>7s}")
    with tempfile.TemporaryDirectory() as tmp:
        for k, case in enumerate(args.cases or DEFAULT_CASES):
            name, _, mesh = case.partition("@")
            scenario = get_scenario(name, mesh or None, factor=args.factor, seed=0)
            out = Path(tmp) / f"case{k}.{'zarr' if args.format == 'zarr' else 'nc'}"
            t0 = time.perf_counter()
            generate(scenario, out, n_samples=args.samples, progress=False,
                     trajectory=args.trajectory)
            total = time.perf_counter() - t0
            gen = read_dataset(out).attrs["generation"]
            gen = json.loads(gen) if isinstance(gen, str) else gen
            cells = f"{scenario.fine.n_cells}->{scenario.coarse.n_cells}"
            every = scenario.coarse_every if args.trajectory else scenario.config["sample_every"]
            size = (sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
                    if out.is_dir() else os.path.getsize(out))
            print(f"{name:11s} {mesh or '(default)':20s} {cells:>15s} "
                  f"{every:5d} {gen['fine_steps_per_s']:8.1f} "
                  f"{gen['samples_per_min']:11.1f} {gen['spin_up_s']:9.1f} {total:8.1f} "
                  f"{size / 2**20:7.2f}",
                  flush=True)


if __name__ == "__main__":
    main()
