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
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from meshclosure.data import generate, get_scenario, read_dataset

DEFAULT_CASES = ("kinematic@cartesian:64", "kinematic@healpix:16", "kinematic@icosahedral:4",
                 "convection@cartesian:64x32", "barotropic@cartesian:64")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="*", default=list(DEFAULT_CASES),
                        help="SCENARIO@MESH, e.g. kinematic@healpix:32")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--samples", type=int, default=6)
    parser.add_argument("--factor", type=int, default=4)
    parser.add_argument("--format", choices=("netcdf", "zarr"), default="netcdf",
                        help="storage of the dataset (default netcdf)")
    parser.add_argument("--trajectory", action="store_true",
                        help="trajectory datasets: a sample at every coarse step")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"{'scenario':11s} {'fine mesh':20s} {'cells':>15s} {'every':>5s} "
          f"{'steps/s':>8s} {'samples/min':>11s} {'spin-up s':>9s} {'total s':>8s} {'MB':>7s}")
    with tempfile.TemporaryDirectory() as tmp:
        for k, case in enumerate(args.cases):
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
