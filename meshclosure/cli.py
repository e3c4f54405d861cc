"""The ``meshclosure`` command.

Subcommands: ``demo`` (the end-to-end job on a small default), ``mesh``
(build or read a mesh, validate it, export it), ``generate`` (a subgrid
dataset from a truth scenario), ``calibrate`` (fit the physics baselines to
a dataset), ``train`` (train a closure; :mod:`meshclosure._cli_train`),
``validate`` (the validation hierarchy and its report; :mod:`meshclosure._cli_validate`)
and ``compare`` (architectures across mesh families over seeds, the comparison table;
:mod:`meshclosure._cli_compare`).

Conventions every subcommand follows
------------------------------------
* Global options ``--quiet``/``-q``, ``--verbose``/``-v`` go before or after
  the subcommand (``meshclosure -q generate ...`` = ``meshclosure generate
  ... -q``); ``--version`` goes before it. Results (the mesh summary, the
  demo's table) go to stdout; messages go through :mod:`logging` (loggers
  ``meshclosure.<module>``) to stderr: INFO by default, WARNING with
  ``--quiet`` (which also turns progress bars off), DEBUG with ``--verbose``
  (see :mod:`meshclosure._logging`). Progress bars only show on a terminal.
* Every argument is checked before any work: outputs (folder, suffix, an
  existing file) before a mesh is built or a sample is run.
* Errors are one line, ``meshclosure CMD: error: ...``, naming the flag
  (``--samples 2: must be an integer >= 3; ...``), never the Python
  parameter (``n_samples``, ``overwrite=True``); ``--verbose`` adds the
  traceback. :func:`cli_spelling` is the one translation table.
* Exit status: 0 success; 1 ``meshclosure mesh`` read or built a mesh that
  is invalid; 2 an error (bad argument, refused output, failed run); 130
  interrupted (Ctrl-C).

Examples
--------
>>> main(["generate", "--samples", "2", "--out", "/tmp/never_written.nc"])
2
"""
from __future__ import annotations

import argparse
import logging
import re
import sys
import traceback
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

from . import __version__
from ._cli_compare import COMPARE_FLAGS, add_compare_parser
from ._cli_train import TRAIN_FLAGS, add_train_parser
from ._cli_validate import VALIDATE_FLAGS, add_validate_parser
from .errors import ArgumentError, MeshclosureError
from .mesh.spec import parse_mesh_spec

__all__ = ["main", "build_parser", "parse_mesh_spec", "cli_spelling", "GENERATE_FLAGS",
           "MESH_FLAGS", "CALIBRATE_FLAGS", "TRAIN_FLAGS",
           "VALIDATE_FLAGS", "COMPARE_FLAGS"]

log = logging.getLogger("meshclosure.cli")

#: Python parameters of :func:`~meshclosure.data.generate` and
#: :func:`~meshclosure.data.get_scenario` -> the ``meshclosure generate`` flags.
GENERATE_FLAGS = {
    "name": "--scenario", "scenario": "--scenario", "mesh": "--mesh", "factor": "--factor",
    "seed": "--seed", "n_samples": "--samples", "every": "--every", "ood_samples": "--ood",
    "gap": "--gap", "format": "--format", "out": "--out", "overwrite": "--overwrite",
    "resume": "--no-resume", "progress": "--no-progress",
    "allow_unconverged": "--allow-unconverged", "trajectory": "--trajectory",
    "runs": "--runs", "workers": "--workers", "scheduler": "--scheduler",
    "ood_runs": "--ood-runs", "split_by": "--split-by", "threads": "--threads",
    "scheduler_timeout": "--scheduler-timeout", "device": "--device",
}

#: Parameters of ``generate`` that no flag sets (an error about one says so).
_NO_FLAG = {"fractions": "the train/val/test fractions (0.7, 0.15, 0.15)"}

#: Parameters of the mesh writers -> the ``meshclosure mesh`` flags (``path`` per writer).
MESH_FLAGS = {"spec": "SPEC", "overwrite": "--overwrite"}

#: Python spellings that mean a flag, in messages that are not an ArgumentError.
_SPELLINGS = (
    (re.compile(r"\b\w+=(?:True|False) \((--[\w-]+)\)"), r"\1"),   # "x=True (--x)" -> "--x"
    (re.compile(r"\boverwrite=True\b"), "--overwrite"),
    (re.compile(r"\bresume=False\b"), "--no-resume"),
    (re.compile(r"\ballow_unconverged=True\b"), "--allow-unconverged"),
    (re.compile(r"\bprogress=False\b"), "--no-progress"),
    (re.compile(r"(?<!\S)(--[\w-]+)="), r"\1 "),                   # "--vtu='x'" -> "--vtu 'x'"
)

#: Parameter names too common as words to re-spell in free text.
_NOT_IN_TEXT = {"name", "progress", "resume"}


def cli_spelling(text: str, flags: Mapping[str, str] = GENERATE_FLAGS) -> str:
    """``text`` with Python spellings of arguments replaced by the command-line flags.

    ``overwrite=True`` becomes ``--overwrite``, ``resume=False`` ``--no-resume``;
    ``name=value`` for a parameter in ``flags`` becomes ``--flag value``, and a
    parameter with an underscore (``n_samples``) is re-spelled wherever it
    stands as a word (plain words such as ``every`` only in ``every=``).

    >>> cli_spelling("out='x.nc' exists; pass overwrite=True (--overwrite) to replace it")
    "--out 'x.nc' exists; pass --overwrite to replace it"
    >>> cli_spelling("n_samples must be an integer >= 3; got 2. Or pass resume=False.")
    '--samples must be an integer >= 3; got 2. Or pass --no-resume.'
    >>> cli_spelling("factor=16 does not coarsen mesh cartesian (256 cells)")
    '--factor 16 does not coarsen mesh cartesian (256 cells)'
    """
    for pattern, repl in _SPELLINGS:
        text = pattern.sub(repl, text)
    for name in sorted(flags, key=len, reverse=True):
        flag = flags[name]
        if not flag.startswith("-") or name in _NOT_IN_TEXT:
            continue
        text = re.sub(rf"(?<![\w.-]){name}=", f"{flag} ", text)
        if "_" in name:
            text = re.sub(rf"(?<![\w.-]){name}\b", flag, text)
    return text


def _as_flags(err: BaseException, flags: Mapping[str, str]) -> str:
    """The message of ``err`` with the flags of the command in place of Python parameters."""
    if isinstance(err, ArgumentError):
        if err.argument in _NO_FLAG:
            return (f"{err} ({err.argument}: {_NO_FLAG[err.argument]}, has no command-line "
                    "flag; set it by calling meshclosure.data.generate from Python.)")
        return cli_spelling(str(err.renamed(dict(flags))), flags)
    return cli_spelling(str(err), flags)


# ------------------------------------------------------------------------- demo
def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo, run_tour

    if args.tour and args.quick:
        raise ArgumentError("quick", "--quick with --tour", "applies to the end-to-end demo "
                            "only", "pass one of --quick and --tour")
    if args.tour:
        run_tour(args.out, plots=not args.no_plots, test1_level=args.test1_level)
    else:
        run_demo(args.out, plots=not args.no_plots, quick=args.quick)
    return 0


# ------------------------------------------------------------------------- mesh
_VTU_SUFFIXES = (".vtu",)


def _check_output(path: str, flag: str, suffixes: Sequence[str], overwrite: bool) -> Path:
    """``path`` after checking its suffix, its folder and an existing file (nothing written).

    Raises ArgumentError / OutputExistsError / FileNotFoundError naming ``flag``."""
    from ._files import check_folder, refuse_existing

    p = Path(path)
    if p.suffix.lower() not in suffixes:
        kinds = ", ".join(suffixes[:-1]) + (" or " if len(suffixes) > 1 else "") + suffixes[-1]
        raise ArgumentError(flag, path, f"must end in {kinds} (the suffix picks the file "
                            "format)", f"write e.g. {flag} {p.with_suffix(suffixes[0]).name}")
    if p.is_dir():
        raise ArgumentError(flag, path, "is a folder", f"give a file name such as "
                            f"{flag} {str(p / ('mesh' + suffixes[0]))}")
    check_folder(p, name=flag)
    refuse_existing(p, overwrite, name=flag, flag="--overwrite")
    return p


def _cmd_mesh(args: argparse.Namespace) -> int:
    from .plot import FORMATS as PLOT_SUFFIXES

    # every output checked (suffix, folder, an existing file) before the mesh is built
    if args.vtu is not None:
        _check_output(args.vtu, "--vtu", _VTU_SUFFIXES, args.overwrite)
    if args.plot is not None:
        _check_output(args.plot, "--plot", tuple(PLOT_SUFFIXES), args.overwrite)
    mesh = parse_mesh_spec(args.spec)
    problems = mesh.validate(raise_on_error=False)
    print(mesh)
    print(f"  domain area {mesh.domain_area():.12g}, sum of cell volumes "
          f"{float(mesh.cell_volume.sum()):.12g}, Euler characteristic "
          f"{mesh.euler_characteristic()}, boundary tags {list(mesh.boundary_tag_names)}")
    print("  valid" if not problems else "  INVALID:\n  - " + "\n  - ".join(problems))
    if args.vtu:
        from .io import write_vtu

        _flagged(lambda: write_vtu(mesh, {}, args.vtu, overwrite=args.overwrite),
                 {"path": "--vtu"})
        log.info("wrote %s", args.vtu)
    if args.plot:
        from .plot import plot

        _flagged(lambda: plot(mesh, None, path=args.plot, title=args.spec,
                              overwrite=args.overwrite), {"path": "--plot"})
        log.info("wrote %s", args.plot)
    return 1 if problems else 0


def _flagged(call: Callable, names: Mapping[str, str]):
    """``call()``, with an ArgumentError's parameter names re-spelled as ``names`` says."""
    try:
        return call()
    except ArgumentError as err:
        raise err.renamed({**MESH_FLAGS, **names}) from None


# --------------------------------------------------------------------- generate
_GENERATE_EPILOG = """\
The default (kinematic scenario on its default mesh cartesian:64x64, 24 samples
plus 4 out-of-distribution ones, coarsening factor 4) runs in about a minute on
2 cores. Larger configurations, for real training sets (hours on a
workstation; use a GPU build of torch where available):

  meshclosure generate --scenario kinematic --mesh healpix:64 --factor 4 \\
      --samples 2000 --every 20 --ood 200 --out kinematic_hp64.zarr
  meshclosure generate --scenario barotropic --mesh cartesian:256x256 --factor 8 \\
      --samples 1000 --every 50 --ood 100 --out barotropic_256.nc
  meshclosure generate --scenario barotropic --mesh icosahedral:6 --factor 4 \\
      --samples 1000 --every 50 --out barotropic_ico6.nc
  meshclosure generate --scenario convection --factor 1 --samples 2000 --every 20 \\
      --out convection_column.nc

The storage format follows the suffix of --out: a .zarr name writes a zarr
store (a folder, chunked along time, for datasets larger than memory),
anything else netCDF-4; --format says it explicitly and must agree.

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
appears only when complete, and an existing one is replaced only with
--overwrite. Every argument is checked before the first sample runs.

Many runs in parallel (dask.distributed): --runs R writes R independent runs
(seeds from one SeedSequence of --seed) and --ood-runs K out-of-distribution
runs into one zarr store, one dask task per run:

  meshclosure generate --scenario kinematic --runs 8 --workers 4 --out runs.zarr
  meshclosure generate --scenario kinematic --runs 16 --scheduler tcp://A:8786 \
      --out /shared/data.zarr      # workers must see /shared at the same path

--split-by run puts whole runs into train/val/test (needs --runs >= 3). A
rerun of an interrupted command skips the runs already finished.
"""

#: flag -> (lowest value, what to do instead) for the integer flags that the scenario
#: constructor checks with a plain ValueError (generate's own are ArgumentErrors).
_INTEGER_FLAGS = {
    "factor": (1, "pass a coarsening factor such as --factor 4"),
    "seed": (0, "pass a seed such as --seed 0"),
}


def _check_generate_flags(args: argparse.Namespace) -> None:
    """The checks of flags that generate does not see: scenario name, factor, seed."""
    from .data.scenarios import SCENARIOS

    if args.scenario not in SCENARIOS:
        raise ArgumentError("--scenario", args.scenario, f"is not a scenario; the scenarios "
                            f"are {', '.join(sorted(SCENARIOS))}",
                            "pick one of them (meshclosure generate --help)")
    for dest, (low, fix) in _INTEGER_FLAGS.items():
        value = getattr(args, dest)
        if value < low:
            raise ArgumentError(f"--{dest}", value, f"must be an integer >= {low}", fix)


def _generate_module():
    """The module ``meshclosure.data.generate`` (the package attribute is the function)."""
    import importlib

    return importlib.import_module("meshclosure.data.generate")


#: The flags of many runs (dest -> flag); each needs --runs.
_RUNS_FLAGS = {"workers": "--workers", "scheduler": "--scheduler", "ood_runs": "--ood-runs",
               "split_by": "--split-by", "threads": "--threads",
               "scheduler_timeout": "--scheduler-timeout"}


def _cmd_generate_runs(args: argparse.Namespace, out: str) -> int:
    """``generate --runs R``: many runs on dask into one zarr store (:func:`generate_runs`)."""
    from .data.multirun import check_runs_arguments, generate_runs
    from .data.scenarios import get_scenario

    split_by = args.split_by or "time"
    threads = 1 if args.threads is None else args.threads
    timeout = 30.0 if args.scheduler_timeout is None else args.scheduler_timeout
    check_runs_arguments(args.runs, workers=args.workers, scheduler=args.scheduler,
                         ood_runs=args.ood_runs, ood_samples=args.ood, split_by=split_by,
                         threads=threads, scheduler_timeout=timeout)
    _generate_module().check_generate_arguments(
        n_samples=args.samples, every=args.every, ood_samples=args.ood,
        gap=0 if split_by == "run" else args.gap, format=args.format, out=out,
        overwrite=args.overwrite, resume=not args.no_resume, trajectory=args.trajectory)
    scenario = get_scenario(args.scenario, mesh=args.mesh, factor=args.factor, seed=args.seed,
                            device=args.device)
    try:
        generate_runs(scenario, out, runs=args.runs, n_samples=args.samples, every=args.every,
                      ood_samples=args.ood, ood_runs=args.ood_runs, split_by=split_by,
                      workers=args.workers, scheduler=args.scheduler, threads=threads,
                      gap=args.gap, overwrite=args.overwrite, resume=not args.no_resume,
                      progress=not (args.no_progress or args.quiet), trajectory=args.trajectory,
                      allow_unconverged=args.allow_unconverged,
                      scheduler_timeout=timeout)
    except KeyboardInterrupt:
        print(f"meshclosure generate: interrupted; nothing was written to {out}. The finished "
              f"runs are kept in {out}.partial/runs/: rerun the same command to compute only "
              "the missing ones (--no-resume starts afresh).", file=sys.stderr)
        return 130
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    from .data.scenarios import get_scenario

    gen = _generate_module()
    _check_generate_flags(args)
    if args.runs is not None:
        out = args.out or f"meshclosure_{args.scenario}.zarr"
        return _cmd_generate_runs(args, out)
    for dest, flag in _RUNS_FLAGS.items():
        if getattr(args, dest) is not None:
            raise ArgumentError(flag, getattr(args, dest), "applies to many runs only",
                                f"add --runs R (e.g. --runs 4) to use {flag}, or leave it out")
    out = args.out or f"meshclosure_{args.scenario}" + (".zarr" if args.format == "zarr"
                                                        else ".nc")
    # every check before the first sample (and before the fine mesh is built)
    checked = gen.check_generate_arguments(
        n_samples=args.samples, every=args.every, ood_samples=args.ood, gap=args.gap,
        format=args.format, out=out, overwrite=args.overwrite, resume=not args.no_resume,
        trajectory=args.trajectory)
    scenario = get_scenario(args.scenario, mesh=args.mesh, factor=args.factor, seed=args.seed,
                            device=args.device)
    kwargs = dict(n_samples=args.samples, every=args.every, overwrite=args.overwrite,
                  progress=not (args.no_progress or args.quiet), resume=not args.no_resume,
                  ood_samples=args.ood, allow_unconverged=args.allow_unconverged,
                  gap=args.gap, format=checked["format"], trajectory=args.trajectory)
    try:
        gen.generate(scenario, out, **kwargs)
    except KeyboardInterrupt:
        print(f"meshclosure generate: interrupted; nothing was written to {out}. The finished "
              f"samples are kept in {out}.partial/: rerun the same command to resume "
              "(--no-resume starts afresh).", file=sys.stderr)
        return 130
    return 0


# -------------------------------------------------------------------- calibrate
#: Python parameters of :func:`~meshclosure.train.calibrate` and the ``calibrate`` flags.
CALIBRATE_FLAGS = {"data": "--data", "source": "--data", "out": "--out", "path": "--out",
                   "overwrite": "--overwrite", "split": "--split", "n_nodes": "--nodes",
                   "max_samples": "--max-samples"}


def _cmd_calibrate(args: argparse.Namespace) -> int:
    """Fit every baseline on the dataset's training split; write ``OUT/calibration.json``."""
    from ._files import refuse_existing
    from .train.calibrate import calibrate, save_calibration, summary

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ArgumentError("out", str(out), "must be a folder (calibration.json is written "
                            "into it)", "choose a folder path")
    target = out / "calibration.json"
    if out.is_dir():                       # refuse before reading any data
        refuse_existing(target, args.overwrite, name="out", flag="--overwrite")
    data = Path(args.data)
    if not data.exists():
        raise ArgumentError("data", str(data), "must be an existing dataset (.nc file or .zarr "
                            "folder)", "write one with `meshclosure generate --out FILE` first")
    result = calibrate(str(data), split=args.split, n_nodes=args.nodes,
                       max_samples=args.max_samples)
    result["dataset"] = str(data)
    out.mkdir(parents=True, exist_ok=True)
    save_calibration(result, target, overwrite=args.overwrite)
    split = "val" if "val" in result["n_samples"] else args.split
    log.info("calibrated %s on %s (%d samples):\n%s", result["scenario"], args.split,
             result["n_samples"][args.split], summary(result, split))
    log.info("wrote %s", target)
    return 0


# ----------------------------------------------------------------------- parser
def _integer(flag: str) -> Callable[[str], int]:
    """An argparse ``type`` that reads a whole number and names ``flag`` when it is not one."""
    def read(text: str) -> int:
        try:
            return int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number; write e.g. "
                                             f"{flag} 4") from None
    read.__name__ = "integer"
    return read


def _global_options() -> argparse.ArgumentParser:
    """--quiet/--verbose, accepted before and after the subcommand (SUPPRESS: the
    subcommand's parser does not reset what the main parser read)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="only warnings and errors; no progress bars")
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="debug messages, and the traceback of an error")
    return common


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``meshclosure`` command (every subcommand)."""
    common = _global_options()
    parser = argparse.ArgumentParser(
        prog="meshclosure", parents=[common],
        description="Learned, exactly conservative subgrid closures on Earth-system meshes.",
        epilog="--quiet and --verbose may also follow the subcommand. Exit status: 0 done, "
        "1 the mesh is invalid (meshclosure mesh), 2 an error, 130 interrupted.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", parents=[common], help="run the end-to-end demo on a small "
                          "default",
                          description="Generate a small kinematic truth dataset, calibrate the "
                          "physics baselines, train a conservative closure, validate it "
                          "offline, partially coupled and online (three truth initial states, "
                          "a budget audit every step), write the report folder and print the "
                          "summary table. --quick: the same at CI size (about a minute). "
                          "--tour: the earlier tour of the parts (every mesh family, "
                          "Williamson test 1, a truth dataset, a trained closure).")
    demo.add_argument("--out", default="meshclosure_output",
                      help="output folder (default: %(default)s)")
    demo.add_argument("--quick", action="store_true",
                      help="the end-to-end demo at CI size")
    demo.add_argument("--tour", action="store_true",
                      help="the tour of the parts instead of the end-to-end demo")
    demo.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    demo.add_argument("--test1-level", type=_integer("--test1-level"), default=4,
                      help="with --tour: icosahedral level of the Williamson test 1 runs "
                      "(default: %(default)s)")
    demo.set_defaults(func=_cmd_demo)
    mesh = sub.add_parser("mesh", parents=[common],
                          help="build or read a mesh, validate and export it",
                          description="Build a mesh (cartesian:NXxNY, healpix:NSIDE, "
                          "icosahedral:LEVEL, icosahedral-dual:LEVEL) or read a mesh file, "
                          "print its geometry summary and validation result; exit status 1 if "
                          "it is invalid. The outputs are checked (suffix, folder, an existing "
                          "file) before the mesh is built, and written atomically.")
    mesh.add_argument("spec", metavar="SPEC", help="family:size, or a mesh file: .vtu, UGRID "
                      "or dataset .nc/.zarr, or any format meshio reads")
    mesh.add_argument("--vtu", metavar="FILE.vtu", help="write the mesh to this .vtu file")
    mesh.add_argument("--plot", "--png", dest="plot", metavar="FILE",
                      help="plot the mesh to this file; .png, .pdf or .svg (the suffix picks "
                      "the format; --png is the old name of this option)")
    mesh.add_argument("--overwrite", action="store_true",
                      help="replace existing output files (default: refuse, leave them as "
                      "they are)")
    mesh.set_defaults(func=_cmd_mesh)
    gen = sub.add_parser("generate", parents=[common],
                         help="generate a subgrid dataset (truth run, coarse-graining)",
                         description="Run a truth scenario on a fine mesh, spin it up, keep a "
                         "sample every EVERY fine steps, coarse-grain it by FACTOR and write the "
                         "coarse state, resolved inputs and subgrid flux/tendency targets, with "
                         "the coarse mesh, to a netCDF file or zarr store (train/val/test split "
                         "by time, plus an out-of-distribution run).",
                         epilog=_GENERATE_EPILOG,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    gen.add_argument("--scenario", default="kinematic",
                     help="kinematic, barotropic or convection (default: %(default)s)")
    gen.add_argument("--mesh", default=None,
                     help="fine mesh: cartesian:NXxNY, healpix:NSIDE or icosahedral:LEVEL "
                     "(convection: cartesian:NXxNZ, an x-z slice); default: the scenario's "
                     "own small mesh")
    gen.add_argument("--factor", type=_integer("--factor"), default=4,
                     help="coarsening factor in linear resolution (default: %(default)s)")
    gen.add_argument("--samples", type=_integer("--samples"), default=24,
                     help="time samples of the main run, >= 3 (default: %(default)s)")
    gen.add_argument("--every", type=_integer("--every"), default=None,
                     help="fine time steps between samples (default: the scenario's "
                     "sample_every: samples about as far apart as the flow decorrelates)")
    gen.add_argument("--device", default=None,
                     help="torch device of the fine run, e.g. cuda (default: the CPU); the "
                     "samples are written from the CPU either way. Results agree to rounding "
                     "across devices and bit for bit on one, so an interrupted run resumes "
                     "only on the same kind of device (and torch thread count)")
    gen.add_argument("--seed", type=_integer("--seed"), default=0,
                     help="random seed (default: %(default)s)")
    gen.add_argument("--ood", type=_integer("--ood"), default=4,
                     help="samples of the out-of-distribution run (default: %(default)s; 0: none)")
    gen.add_argument("--gap", type=_integer("--gap"), default=None,
                     help="samples set aside at the start of the val and test blocks "
                     "(default: 1 when val and test keep 2 samples each with it, else 0)")
    gen.add_argument("--out", default=None,
                     help="output file: .nc (netCDF) or .zarr (zarr store) (default: "
                     "meshclosure_SCENARIO.nc, or .zarr with --format zarr)")
    gen.add_argument("--format", choices=("netcdf", "zarr"), default=None,
                     help="storage format (default: from the suffix of --out; .zarr: zarr)")
    gen.add_argument("--overwrite", action="store_true", help="replace an existing output")
    gen.add_argument("--no-resume", action="store_true",
                     help="ignore the checkpoints of an interrupted run and start afresh")
    gen.add_argument("--no-progress", action="store_true", help="no progress bars")
    gen.add_argument("--allow-unconverged", action="store_true",
                     help="keep samples even if a spin-up that checks for statistical "
                     "equilibrium (barotropic) did not reach it (default: stop with an error)")
    gen.add_argument("--trajectory", action="store_true",
                     help="write a trajectory dataset: a sample at EVERY coarse step (the "
                     "scenario's coarse_every fine steps apart; leave --every out), each with "
                     "its subgrid targets and what the coarse model replays to the next sample "
                     "(step-mean subgrid flux, step-mean forcing, and for kinematic the coarse "
                     "transport at every stage time), so one file serves calibrate, train and "
                     "validate, and unrolled training (TrajectoryDataset)")
    many = gen.add_argument_group(
        "many runs in parallel (dask.distributed; one zarr store)",
        "R independent runs, one dask task each, into one zarr store with a run dimension")
    many.add_argument("--runs", type=_integer("--runs"), default=None, metavar="R",
                      help="main runs, >= 1, seeded from one SeedSequence of --seed (default: "
                      "one run, no dask)")
    many.add_argument("--workers", type=_integer("--workers"), default=None, metavar="N",
                      help="start a local dask cluster of N worker processes (default 1)")
    many.add_argument("--scheduler", default=None, metavar="ADDRESS",
                      help="submit to a running dask scheduler, e.g. tcp://host:8786 (its "
                      "workers must see the output folder at the same path)")
    many.add_argument("--scheduler-timeout", type=float, default=None, metavar="S",
                      help="seconds to wait for --scheduler to answer (default 30)")
    many.add_argument("--ood-runs", type=_integer("--ood-runs"), default=None, metavar="K",
                      help="out-of-distribution runs, the ood() variants of main runs 0..K-1, "
                      "--ood samples each (default: 1 when --ood > 0, else 0)")
    many.add_argument("--split-by", choices=("time", "run"), default=None,
                      help="time: every main run split by time (default); run: whole runs "
                      "to train/val/test (needs --runs >= 3)")
    many.add_argument("--threads", type=_integer("--threads"), default=None, metavar="T",
                      help="torch threads per run (default 1; the same count gives the same "
                      "bits)")
    gen.set_defaults(func=_cmd_generate, flags=GENERATE_FLAGS)
    cal = sub.add_parser("calibrate", parents=[common],
                         help="fit the physics baselines (constant, power law, Smagorinsky, "
                         "Leith, convective) to a dataset",
                         description="Fit every baseline closure that applies to the dataset's "
                         "scenario on its training split (least squares, 95 %% intervals, the "
                         "fitted range of N), evaluate MSE, R2 and the K_eff(N) error on every "
                         "split, and write OUT/calibration.json (atomically).")
    cal.add_argument("--data", required=True, metavar="FILE",
                     help="a dataset from `meshclosure generate` (.nc or .zarr)")
    cal.add_argument("--out", required=True, metavar="DIR",
                     help="output folder (created if missing); gets calibration.json")
    cal.add_argument("--split", default="train", choices=("train", "val", "test"),
                     help="the split fitted on (default: %(default)s)")
    cal.add_argument("--nodes", type=_integer("--nodes"), default=8,
                     help="nodes of the K_eff(N) curves (default: %(default)s)")
    cal.add_argument("--max-samples", type=_integer("--max-samples"), default=None,
                     help="use at most this many samples per split (default: all)")
    cal.add_argument("--overwrite", action="store_true",
                     help="replace an existing calibration.json (default: refuse)")
    cal.set_defaults(func=_cmd_calibrate, flags=CALIBRATE_FLAGS)
    add_train_parser(sub, common, _integer)
    add_validate_parser(sub, common, _integer)
    add_compare_parser(sub, common, _integer)
    return parser


# ------------------------------------------------------------------------- main
def _level(args: argparse.Namespace) -> int:
    if args.verbose:
        return logging.DEBUG
    return logging.WARNING if args.quiet else logging.INFO


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point of the ``meshclosure`` console script; returns the exit status."""
    from ._logging import cli_logging

    parser = build_parser()
    args = parser.parse_args(argv)
    args.quiet, args.verbose = getattr(args, "quiet", False), getattr(args, "verbose", False)
    if args.quiet and args.verbose:
        parser.error("--quiet and --verbose contradict each other; pass one of them")
    flags = getattr(args, "flags", MESH_FLAGS)
    with cli_logging(args.command, _level(args), spell=lambda t: cli_spelling(t, flags)):
        try:
            return args.func(args)
        except KeyboardInterrupt:
            print(f"meshclosure {args.command}: interrupted.", file=sys.stderr)
            return 130
        except (MeshclosureError, ValueError, OSError) as err:
            if args.verbose:
                traceback.print_exc(file=sys.stderr)
            print(f"meshclosure {args.command}: error: {_as_flags(err, flags)}", file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main())
