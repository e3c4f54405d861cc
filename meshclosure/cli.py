"""The ``meshclosure`` command.

Subcommands: ``demo`` (the end-to-end job on a small default), ``mesh``
(build or read a mesh, validate it, export it) and ``generate`` (a subgrid
dataset from a truth scenario). ``train``, ``calibrate``, ``validate`` and
``compare`` join as their parts land.
"""
from __future__ import annotations

import argparse
import sys

from .mesh.spec import parse_mesh_spec

__all__ = ["main", "parse_mesh_spec"]


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(args.out, plots=not args.no_plots, test1_level=args.test1_level)
    return 0


def _cmd_mesh(args: argparse.Namespace) -> int:
    mesh = parse_mesh_spec(args.spec)
    problems = mesh.validate(raise_on_error=False)
    print(mesh)
    print(f"  domain area {mesh.domain_area():.12g}, sum of cell volumes "
          f"{float(mesh.cell_volume.sum()):.12g}, Euler characteristic "
          f"{mesh.euler_characteristic()}, boundary tags {list(mesh.boundary_tag_names)}")
    print("  valid" if not problems else "  INVALID:\n  - " + "\n  - ".join(problems))
    if args.vtu:
        from .io import write_vtu

        write_vtu(mesh, {}, args.vtu)
        print(f"  wrote {args.vtu}")
    if args.png:
        from .plot import plot

        plot(mesh, None, path=args.png, title=args.spec)
        print(f"  wrote {args.png}")
    return 1 if problems else 0


_GENERATE_EPILOG = """\
The default (kinematic scenario on its default mesh cartesian:64x64, 24 samples
plus 4 out-of-distribution ones, coarsening factor 4) runs in about a minute on
2 cores. Larger configurations, for real training sets (hours on a
workstation; use a GPU build of torch where available):

  meshclosure generate --scenario kinematic --mesh healpix:64 --factor 4 \\
      --samples 2000 --every 20 --ood 200 --out kinematic_hp64.nc
  meshclosure generate --scenario barotropic --mesh cartesian:256x256 --factor 8 \\
      --samples 1000 --every 50 --ood 100 --out barotropic_256.nc
  meshclosure generate --scenario barotropic --mesh icosahedral:6 --factor 4 \\
      --samples 1000 --every 50 --out barotropic_ico6.nc
  meshclosure generate --scenario convection --factor 1 --samples 2000 --every 20 \\
      --out convection_column.nc

The barotropic spin-up runs until energy and enstrophy are flat (relative
drift over the last 300/drag time units below 15 %, see BarotropicScenario);
its default (cartesian:64x64) takes about two minutes. If the spin-up misses
equilibrium, generate stops with an error before keeping any sample; rerun
with --allow-unconverged to keep them anyway. The convection column is held
statistically steady (mixed layer ~0.4 of the depth under a stable layer) by
relaxing the mean buoyancy profile, so long runs like the one above keep an
N^2 signal throughout.

An interrupted run keeps its checkpoints in OUT.partial/; rerunning the same
command resumes from the last sample (--no-resume starts afresh). The output
file appears only when complete, and an existing one is replaced only with
--overwrite.
"""


def _cmd_generate(args: argparse.Namespace) -> int:
    from .data.generate import SpinUpError, check_output_path, generate
    from .data.scenarios import SCENARIOS, get_scenario

    if args.scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {args.scenario!r}; choose one of "
                         f"{sorted(SCENARIOS)} (meshclosure generate --help).")
    out = args.out or f"meshclosure_{args.scenario}.nc"
    check_output_path(out, args.overwrite)           # before any long computation
    scenario = get_scenario(args.scenario, mesh=args.mesh, factor=args.factor, seed=args.seed)
    try:
        generate(scenario, out, n_samples=args.samples, every=args.every,
                 overwrite=args.overwrite, progress=not args.no_progress,
                 resume=not args.no_resume, ood_samples=args.ood, echo=print,
                 allow_unconverged=args.allow_unconverged, gap=args.gap)
    except SpinUpError as err:
        print(f"meshclosure generate: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"meshclosure generate: interrupted; nothing was written to {out}. The finished "
              f"samples are kept in {out}.partial/: rerun the same command to resume.",
              file=sys.stderr)
        return 130
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meshclosure",
        description="Learned, exactly conservative subgrid closures on Earth-system meshes.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the end-to-end demo on a small default",
                          description="Build every mesh family at a small size, validate and "
                          "coarsen it, print one line per mesh, write a PNG and a .vtu per "
                          "mesh into the output folder, then run Williamson test 1 and print "
                          "its errors.")
    demo.add_argument("--out", default="meshclosure_output",
                      help="output folder (default: %(default)s)")
    demo.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    demo.add_argument("--test1-level", type=int, default=4,
                      help="icosahedral level of the Williamson test 1 runs (default: %(default)s)")
    demo.set_defaults(func=_cmd_demo)
    mesh = sub.add_parser("mesh", help="build or read a mesh, validate and export it",
                          description="Build a mesh (cartesian:NXxNY, healpix:NSIDE, "
                          "icosahedral:LEVEL, icosahedral-dual:LEVEL) or read a mesh file, "
                          "print its geometry summary and validation result; exit status 1 if "
                          "it is invalid.")
    mesh.add_argument("spec", help="family:size or a mesh file path")
    mesh.add_argument("--vtu", help="write the mesh to this .vtu file")
    mesh.add_argument("--png", help="plot the mesh to this PNG file")
    mesh.set_defaults(func=_cmd_mesh)
    gen = sub.add_parser("generate", help="generate a subgrid dataset (truth run, coarse-graining)",
                         description="Run a truth scenario on a fine mesh, spin it up, keep a "
                         "sample every EVERY fine steps, coarse-grain it by FACTOR and write the "
                         "coarse state, resolved inputs and subgrid flux/tendency targets, with "
                         "the coarse mesh, to a netCDF file (train/val/test split by time, plus "
                         "an out-of-distribution split from a second run).",
                         epilog=_GENERATE_EPILOG,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    gen.add_argument("--scenario", default="kinematic",
                     help="kinematic, barotropic or convection (default: %(default)s)")
    gen.add_argument("--mesh", default=None,
                     help="fine mesh: cartesian:NXxNY, healpix:NSIDE or icosahedral:LEVEL "
                     "(convection: cartesian:NXxNZ, an x-z slice); default: the scenario's "
                     "own small mesh")
    gen.add_argument("--factor", type=int, default=4,
                     help="coarsening factor in linear resolution (default: %(default)s)")
    gen.add_argument("--samples", type=int, default=24,
                     help="time samples of the main run (default: %(default)s)")
    gen.add_argument("--every", type=int, default=None,
                     help="fine time steps between samples (default: the scenario's "
                     "sample_every: samples about as far apart as the flow decorrelates)")
    gen.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    gen.add_argument("--ood", type=int, default=4,
                     help="samples of the out-of-distribution run (default: %(default)s; 0: none)")
    gen.add_argument("--gap", type=int, default=1,
                     help="samples set aside between the train, val and test blocks "
                     "(default: %(default)s)")
    gen.add_argument("--out", default=None,
                     help="output netCDF file (default: meshclosure_SCENARIO.nc)")
    gen.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    gen.add_argument("--no-resume", action="store_true",
                     help="ignore the checkpoints of an interrupted run")
    gen.add_argument("--no-progress", action="store_true", help="no progress bars")
    gen.add_argument("--allow-unconverged", action="store_true",
                     help="keep samples even if a spin-up that checks for statistical "
                     "equilibrium (barotropic) did not reach it (default: stop with an error)")
    gen.set_defaults(func=_cmd_generate)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``meshclosure`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError) as err:
        print(f"meshclosure {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
