"""Many independent truth runs, generated in parallel on dask.distributed, into one zarr store.

:func:`generate_runs` (``meshclosure generate ... --runs R``) runs ``R``
main runs of a scenario, seeded from one :class:`numpy.random.SeedSequence`
(:func:`run_seeds`), and ``K`` out-of-distribution runs (the
:meth:`~meshclosure.data.Scenario.ood` variants of main runs ``0 .. K-1``),
and writes them into ONE zarr store with the layout of
:mod:`meshclosure.data.dataset`: runs ``0 .. R-1`` main, then the OOD runs,
plus the per-run variables

=============================  ======================  ==========================================
``run_seed``                   (run,)                  seed of the run's scenario
``run_kind``                   (run,)                  0 main run, 1 out-of-distribution run
=============================  ======================  ==========================================

and the attributes ``run_configs`` (JSON list: every run's complete scenario
config; :func:`scenario_for_run` rebuilds run ``r``'s scenario from it),
``split_by`` (``"time"`` or ``"run"``), ``split_runs`` (which main runs are
train / val / test with ``split_by="run"``), ``n_runs``, ``n_main_runs``,
``n_ood_runs`` and ``generation`` (per-run timings, workers, wall time,
samples per minute). ``seed`` is the root seed of :func:`run_seeds`;
``scenario_config`` is run 0's and ``ood_config`` the first OOD run's (so a
reader that knows one run only rebuilds a valid one; use
:func:`scenario_for_run` for the others: the kinematic coarse transport and
the barotropic forcing depend on the run's own seed).

How it runs
-----------
* Each run is one dask task. It calls the single-run :func:`~meshclosure.data.generate`
  (spin-up, samples, per-sample checkpoints) for that run's scenario into
  ``<out>.partial/runs/run_XXX.zarr``, with ``torch.set_num_threads(threads)``
  inside the task, so its data equal a serial ``generate`` of that seed with
  the same thread count bit for bit.
* Then every run's region is written into one template store
  (``to_zarr(region={"run": slice(r, r + 1)})``, one task per run; chunks
  of 1 along ``run``, so regions never share a chunk), the training-split
  ``normalization`` is computed over the training samples of all runs
  (streamed), ``static_sha256`` is recomputed, the metadata consolidated,
  the store verified (:func:`~meshclosure.data.read_dataset` with
  ``verify=True``) and renamed onto ``out`` atomically.
* ``workers=N`` starts a :class:`distributed.LocalCluster` (``N`` processes,
  one thread each) and closes it at the end; ``scheduler=ADDRESS`` submits to
  a running dask scheduler instead, whose workers must see ``<out>.partial``
  at the same path (a shared filesystem): a worker that cannot raises
  :class:`SharedPathError` naming the path.

Fault tolerance
---------------
A task whose worker dies is rescheduled by dask (up to the scheduler's
``distributed.scheduler.allowed-failures``, default 3), a task that raises is
retried ``retries`` times, and because the run's own ``generate`` resumes
per sample from ``<out>.partial/runs/run_XXX.zarr.partial``, a retried run
continues where it stopped and ends bit-identical. An interrupted call
rerun with the same arguments skips the runs whose per-run store is
complete (verified) and computes only the missing ones; other arguments are
refused with :class:`~meshclosure.data.ResumeError` naming what differs
(``resume=False`` starts afresh).

Examples
--------
>>> run_seeds(0, 3) == run_seeds(0, 3) and len(set(run_seeds(0, 3))) == 3
True
>>> run_seeds(0, 0)
Traceback (most recent call last):
...
meshclosure.errors.ArgumentError: runs=0: must be an integer >= 1; ask for at least one run...
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import tempfile
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import numpy as np

from .._files import check_folder
from ..errors import ArgumentError, MeshclosureError
from .dataset import (SPLIT_CODES, DatasetError, _versions, fill_operator_version,
                      split_boundaries)
from .generate import (_PARTIAL_FORMAT, ResumeError, _open_partial, check_generate_arguments,
                       generate, partial_dir)
from .store import (_encoding, _for_writing, _replace_folder, _umask, default_chunk_time,
                    runs_template, write_run_region)

__all__ = ["generate_runs", "run_seeds", "scenario_for_run", "check_runs_arguments",
           "SharedPathError", "SPLIT_BY", "RUN_KINDS"]

_log = logging.getLogger("meshclosure.data.multirun")

SPLIT_BY = ("time", "run")
"""``split_by`` values: every main run split by time, or whole main runs per split."""
RUN_KINDS = {"main": 0, "ood": 1}
"""Codes of the ``run_kind`` variable."""


class SharedPathError(MeshclosureError, FileNotFoundError):
    """A dask worker cannot see the folder of work in progress (``<out>.partial``): with
    ``scheduler=ADDRESS`` every worker must see the same filesystem path as the caller."""


# ------------------------------------------------------------------ seeds, scenarios
def run_seeds(seed: int, runs: int) -> List[int]:
    """Seeds of ``runs`` independent main runs, spawned from ONE ``SeedSequence(seed)``.

    The children of the root's second child (``SeedSequence(seed,
    spawn_key=(1,)).spawn(runs)``; the first child is the stream of
    :func:`~meshclosure.data.scenarios.base.ood_seed`, the out-of-distribution
    run of a single-run dataset with the same ``seed``): run ``r``'s seed is the
    first 63 bits of ``children[r].generate_state(1, uint64)``. So the runs draw
    from independent streams, none shares the stream of ``seed``'s OOD run, and
    the list for ``runs`` is a prefix of the list for more runs.

    >>> from meshclosure.data.scenarios.base import ood_seed
    >>> a, b = run_seeds(7, 2), run_seeds(7, 4)
    >>> b[:2] == a and all(0 <= s < 2**63 for s in b) and ood_seed(7) not in b
    True
    """
    _integer("runs", runs, 1, "ask for at least one run, e.g. {runs}=4")
    _integer("seed", seed, 0, "pass a seed such as {seed}=0")
    # children of the root's SECOND child: the first child, spawn_key (0,), is the plain
    # run's OOD stream (ood_seed), which a main run must never share
    children = np.random.SeedSequence(int(seed), spawn_key=(1,)).spawn(int(runs))
    return [int(c.generate_state(1, np.uint64)[0] >> np.uint64(1)) for c in children]


def scenario_for_run(ds: Any, run: int):
    """The scenario of run ``run`` of a dataset (its own seed; OOD runs their OOD variant).

    Parameters
    ----------
    ds : xarray.Dataset or path
        A dataset from :func:`generate_runs` (attribute ``run_configs``) or from
        :func:`~meshclosure.data.generate` (run 0: ``scenario_config``, run 1:
        ``ood_config``).
    run : int
        Index along the ``run`` dimension.

    Returns
    -------
    Scenario
        ``Scenario.from_config`` of that run's complete config (with the operator
        version the data was made with, ``"fv1"`` for stores from before versions):
        validation and online training of run ``r`` need it (the kinematic coarse
        transport and the barotropic random forcing depend on the seed).

    Raises
    ------
    ArgumentError
        ``run`` is not an index of the dataset's runs.
    """
    from .scenarios import Scenario
    from .store import read_dataset

    if isinstance(ds, (str, os.PathLike)):
        ds = read_dataset(ds, verify="static")
    fill_operator_version(ds)        # read_dataset did; a dataset opened otherwise: "fv1" if none
    if "run_configs" in ds.attrs:
        configs = json.loads(ds.attrs["run_configs"])
    else:
        configs = [json.loads(ds.attrs["scenario_config"])]
        if int(ds.attrs.get("n_ood", 0)):
            configs.append(json.loads(ds.attrs["ood_config"]))
    n = len(configs)
    if isinstance(run, bool) or not isinstance(run, (int, np.integer)) or not 0 <= run < n:
        raise ArgumentError("run", run, f"must be an integer in 0 .. {n - 1} (the dataset "
                            f"holds {n} runs)", "pass one of the dataset's run indices")
    return Scenario.from_config(configs[int(run)])


# ------------------------------------------------------------------ arguments
def _integer(name: str, value: Any, low: int, fix: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ArgumentError(name, value, f"must be an integer >= {low}", fix)


def check_runs_arguments(runs: Any = 1, *, workers: Any = None, scheduler: Any = None,
                         ood_runs: Any = None, ood_samples: Any = 0, split_by: Any = "time",
                         threads: Any = 1, scheduler_timeout: Any = 30.0,
                         retries: Any = 1) -> Dict[str, Any]:
    """Check the arguments of :func:`generate_runs` that ``generate`` does not have.

    Returns ``runs``, ``workers`` (1 when neither ``workers`` nor ``scheduler``
    is given), ``scheduler``, ``ood_runs`` (default 1 when ``ood_samples`` > 0,
    else 0), ``split_by``, ``threads``, ``scheduler_timeout`` and ``retries``.

    Raises
    ------
    ArgumentError
        Naming the argument (``runs``, ``workers``, ``scheduler``, ``ood_runs``,
        ``ood_samples``, ``split_by``, ``threads``, ``scheduler_timeout``, ``retries``),
        the value, the rule and the fix.

    Examples
    --------
    >>> check_runs_arguments(2, split_by="run")
    Traceback (most recent call last):
    ...
    meshclosure.errors.ArgumentError: split_by='run': needs at least 3 main runs (one each ...
    """
    _integer("runs", runs, 1, "ask for at least one run, e.g. {runs}=4")
    if workers is not None and scheduler is not None:
        raise ArgumentError("workers", workers, f"cannot be combined with scheduler="
                            f"{scheduler!r}: the one starts a local cluster, the other uses a "
                            "running one", "pass only one of {workers} and {scheduler}")
    if workers is not None:
        _integer("workers", workers, 1, "pass a number of worker processes, e.g. {workers}=2")
    if scheduler is not None and (not isinstance(scheduler, str) or not scheduler.strip()):
        raise ArgumentError("scheduler", scheduler, "must be the address of a running dask "
                            "scheduler, e.g. 'tcp://host:8786'",
                            "start one with `dask scheduler` and pass its address")
    _integer("threads", threads, 1, "pass the torch threads per run, e.g. {threads}=1")
    _integer("retries", retries, 0, "pass {retries}=1 (a run that raises is tried once more)")
    _integer("ood_samples", ood_samples, 0, "pass 0 for no out-of-distribution run, or >= 3")
    if ood_runs is None:
        ood_runs = 1 if ood_samples else 0
    _integer("ood_runs", ood_runs, 0, "pass 0, or a number of out-of-distribution runs "
             "<= {runs}")
    if ood_runs > runs:
        raise ArgumentError("ood_runs", ood_runs, f"must be <= runs={runs}: the OOD runs are "
                            "the ood() variants of the first main runs, one each",
                            f"pass {{ood_runs}} <= {runs}, or more {{runs}}")
    if ood_runs and not ood_samples:
        raise ArgumentError("ood_runs", ood_runs, "needs ood_samples > 0 (samples of each "
                            "out-of-distribution run)", "pass {ood_samples} >= 3, or "
                            "{ood_runs}=0")
    if ood_runs and ood_samples < 3:
        raise ArgumentError("ood_samples", ood_samples, "must be 0 or >= 3 with several runs "
                            "(each OOD run is generated as a run of its own)",
                            "pass {ood_samples} >= 3, or 0")
    if split_by not in SPLIT_BY:
        raise ArgumentError("split_by", split_by, f"must be one of {SPLIT_BY}",
                            "pass {split_by}='time' (every run split by time) or 'run' (whole "
                            "runs per split)")
    if split_by == "run" and runs < 3:
        raise ArgumentError("split_by", split_by, f"needs at least 3 main runs (one each for "
                            f"train, val and test); got runs={runs}",
                            "pass {runs} >= 3, or {split_by}='time'")
    timeout = scheduler_timeout
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ArgumentError("scheduler_timeout", timeout, "must be a positive number of seconds",
                            "pass e.g. {scheduler_timeout}=30")
    return {"runs": int(runs), "workers": int(workers) if workers is not None else
            (None if scheduler is not None else 1), "scheduler": scheduler,
            "ood_runs": int(ood_runs), "split_by": split_by, "threads": int(threads),
            "scheduler_timeout": float(timeout), "retries": int(retries)}


# ------------------------------------------------------------------ dask tasks
def _run_path(folder: Path, r: int) -> Path:
    return folder / "runs" / f"run_{r:03d}.zarr"


def _check_visible(folder: str) -> None:
    if not Path(folder).is_dir():
        raise SharedPathError(
            f"the dask worker on {socket.gethostname()!r} cannot see {folder!r}, the folder of "
            "work in progress: every worker must see the output's folder at the same path "
            "(a shared filesystem mounted there). Mount it on the workers, or run on this "
            "machine with workers=N (--workers N).")


def _run_task(spec: Dict[str, Any]) -> Dict[str, Any]:
    """One run on a worker: the single-run :func:`generate` into its own zarr store.

    Any dask computation inside stays in the task (synchronous scheduler): a task
    that called the cluster would secede from its worker's thread, and runs would
    then share one core."""
    import dask

    with dask.config.set(scheduler="synchronous"):
        return _run(spec)


def _run(spec: Dict[str, Any]) -> Dict[str, Any]:
    import torch

    from .scenarios import Scenario
    from .store import read_dataset

    _check_visible(spec["folder"])
    torch.set_num_threads(spec["threads"])
    path = Path(spec["path"])
    start, started = time.perf_counter(), time.time()
    if not path.exists():
        scenario = Scenario.from_config(spec["config"], device=spec.get("device"))
        generate(scenario, path, n_samples=spec["n_samples"], every=spec["every"],
                 ood_samples=0, fractions=spec["fractions"], gap=spec["gap"], progress=False,
                 resume=True, allow_unconverged=spec["allow_unconverged"], format="zarr",
                 trajectory=spec["trajectory"])
    ds = read_dataset(path, verify=False)
    info = json.loads(ds.attrs["generation"])
    ds.close()
    try:
        from distributed import get_worker
        worker = get_worker().address
    except (ImportError, ValueError):
        worker = "local"
    return {"run": spec["run"], "wall_s": time.perf_counter() - start, "worker": worker,
            "started": started, "ended": time.time(),
            "host": socket.gethostname(), "samples": int(info.get("samples", 0)),
            "generation": info}


def _region_task(target: str, run: int, source: str, n_time: int, chunk_time: int) -> int:
    """:func:`~meshclosure.data.store.write_run_region` on a worker (no dask calls out)."""
    import dask

    with dask.config.set(scheduler="synchronous"):
        write_run_region(target, run, source, n_time, chunk_time)
    return run


# ------------------------------------------------------------------ the client
#: glibc's malloc trim threshold in our workers (bytes). dask's nannies set 64 KiB (memory
#: handed back to the OS at once), which made a kinematic cartesian:64 run 20-25 % slower
#: than in a plain process (measured: 3.6 s vs 2.9 s per 48 samples); 128 MiB gets most of
#: it back (3.4 s). Allocation only: the numbers computed are the same bits.
_MALLOC_TRIM = 2**27


@contextmanager
def _client(workers: Optional[int], scheduler: Optional[str], timeout: float) -> Iterator[Any]:
    """A dask client: to a new LocalCluster of ``workers`` processes, or to ``scheduler``."""
    from distributed import Client, LocalCluster

    if scheduler is not None:
        try:
            client = Client(scheduler, timeout=timeout, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as err:
            raise ArgumentError(
                "scheduler", scheduler, f"no dask scheduler answered there within {timeout:g} s "
                f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})",
                "start one (`dask scheduler`, then `dask worker ADDRESS` on each machine) and "
                "pass its address, or pass {workers}=N for a local cluster") from None
        try:
            yield client
        finally:
            client.close()
        return
    with warnings.catch_warnings():    # "Port 8787 is already in use": another port is taken
        warnings.filterwarnings("ignore", message="Port .* is already in use")
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=logging.ERROR,
                               env={"MALLOC_TRIM_THRESHOLD_": str(_MALLOC_TRIM)})
    client = Client(cluster, set_as_default=False)   # dask.compute here stays local
    try:
        yield client
    except BaseException:
        _stop_workers(cluster)      # an error or Ctrl-C: the runs stop now, checkpointed
        raise
    finally:
        client.close()
        cluster.close()


def _stop_workers(cluster) -> None:
    """Kill the worker processes of our own LocalCluster at once (a graceful close would
    let every running run finish first); their runs keep their per-sample checkpoints."""
    import signal

    for nanny in list(getattr(cluster, "workers", {}).values()):
        pid = getattr(getattr(getattr(nanny, "process", None), "process", None), "pid", None)
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def _per_run_specs(scenario, folder: Path, args: Dict[str, Any], gen: Dict[str, Any],
                   allow_unconverged: bool) -> List[Dict[str, Any]]:
    """One task spec per run: main runs 0..R-1 (seeds :func:`run_seeds`), then the OOD runs."""
    from .scenarios import Scenario

    seed = int(scenario.config.get("seed", getattr(scenario, "seed", 0)))
    seeds = run_seeds(seed, args["runs"])
    # a main run's config is the scenario's with its seed (nothing derived depends on the
    # seed), so only the OOD runs' scenarios are built here, not one full scenario per run
    mains = [{**scenario.config, "seed": int(s)} for s in seeds]
    fractions = (1.0, 0.0, 0.0) if args["split_by"] == "run" else gen["fractions"]
    gap = 0 if args["split_by"] == "run" else gen["gap"]
    specs = []
    common = {"folder": str(folder), "threads": args["threads"], "trajectory": gen["trajectory"],
              "allow_unconverged": bool(allow_unconverged),
              "device": str(getattr(scenario, "device", "cpu"))}   # every run on the same kind
    for r, config in enumerate(mains):
        specs.append({**common, "run": r, "kind": "main", "seed": seeds[r],
                      "config": config, "n_samples": gen["n_samples"],
                      "every": None if gen["trajectory"] else gen["every"],
                      "fractions": fractions, "gap": gap})
    for k in range(args["ood_runs"]):
        ood = Scenario.from_config(mains[k]).ood()
        every = None if gen["trajectory"] else max(1, int(round(
            gen["every"] * float(scenario.dt) / float(ood.dt))))
        specs.append({**common, "run": args["runs"] + k, "kind": "ood", "seed": int(ood.seed),
                      "config": ood.config, "n_samples": gen["ood_samples"], "every": every,
                      "fractions": (1.0, 0.0, 0.0), "gap": 0})
    for s in specs:
        s["path"] = str(_run_path(folder, s["run"]))
        s["config"] = json.loads(json.dumps(s["config"], sort_keys=True, default=str))
    return specs


def _complete(spec: Dict[str, Any]) -> bool:
    """Whether run ``spec``'s store exists, verifies and holds that run's config."""
    from .store import read_dataset

    path = Path(spec["path"])
    if not path.exists():
        return False
    try:
        ds = read_dataset(path, verify=True)
    except DatasetError as err:
        raise ResumeError(f"the finished run {spec['run']} in {str(path)!r} does not verify "
                          f"({err}). Pass resume=False (--no-resume) to start afresh, or remove "
                          "that store to recompute the run.") from err
    same = json.loads(ds.attrs["scenario_config"]) == spec["config"]
    ds.close()
    if not same:
        raise ResumeError(f"{str(path)!r} holds another run than run {spec['run']} (its "
                          "scenario config differs). Pass resume=False (--no-resume) to start "
                          "afresh.")
    return True


# ------------------------------------------------------------------ combining
def _combine(specs: List[Dict[str, Any]], folder: Path, out: Path, client, args: Dict[str, Any],
             gen: Dict[str, Any], attrs: Dict[str, Any], generation: Dict[str, Any],
             start: float, overwrite: bool) -> None:
    """Regions of every run into one store; normalization, hash, consolidation, verify, rename."""
    import zarr

    from .dataset import static_hash
    from .store import read_dataset
    from .torch_dataset import NormalizationStats

    stores = [read_dataset(s["path"], verify=False, chunks=None) for s in specs]
    n_main = args["runs"]
    blocks = split_boundaries(n_main, gen["fractions"]) if args["split_by"] == "run" else None
    codes = [SPLIT_CODES["ood"] if s["kind"] == "ood" else None if blocks is None else
             int(np.searchsorted(blocks, s["run"], side="right") - 1) for s in specs]
    tmpl = _for_writing(runs_template(stores, [RUN_KINDS[s["kind"]] for s in specs],
                                      [s["seed"] for s in specs], codes))
    tmpl["run"].attrs["long_name"] = (f"run index: 0 .. {n_main - 1} main runs, then the "
                                      "out-of-distribution runs (run_kind)")
    tmpl["run_seed"].attrs["long_name"] = ("seed of the run's scenario (main runs: run_seeds("
                                           "seed, n_main_runs); OOD run k: ood_seed of main "
                                           "run k)")
    chunk_time = default_chunk_time(tmpl)
    encoding = _encoding(tmpl, "zarr", chunk_time)
    ood = [s for s in specs if s["kind"] == "ood"]
    tmpl.attrs.update(attrs)
    tmpl.attrs["run_spinup_info"] = json.dumps([json.loads(s.attrs.get("spinup_info", "{}"))
                                                for s in stores])
    if ood:
        oattrs = stores[ood[0]["run"]].attrs
        tmpl.attrs.update({"ood_config": json.dumps(ood[0]["config"], sort_keys=True),
                           "n_ood": int(gen["ood_samples"]),
                           "ood_feature_pipeline": oattrs["feature_pipeline"],
                           "ood_spinup_info": oattrs.get("spinup_info", "{}")})
        if gen["trajectory"]:
            tmpl.attrs["ood_coarse_every"] = int(oattrs["coarse_every"])
    n_time = tmpl.sizes["time"]
    for s in stores:
        s.close()
    tmp = tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp.zarr", dir=out.parent)
    try:
        tmpl.to_zarr(tmp, mode="w", encoding=encoding, compute=False, consolidated=False)
        futures = [client.submit(_region_task, tmp, s["run"], s["path"], n_time, chunk_time,
                                 key=f"meshclosure-region-{s['run']:03d}-{os.path.basename(tmp)}",
                                 pure=False, retries=args["retries"]) for s in specs]
        client.gather(futures)
        ds = read_dataset(tmp, verify=False, chunks=None)
        ds.attrs["normalization"] = json.dumps(NormalizationStats.from_dataset(ds).to_dict())
        ds.attrs.pop("source_path", None)
        generation["wall_s"] = time.perf_counter() - start
        ds.attrs["generation"] = json.dumps(generation)
        final = {"normalization": ds.attrs["normalization"], "generation": ds.attrs["generation"],
                 "static_sha256": static_hash(ds)}
        ds.close()
        group = zarr.open_group(tmp, mode="r+")
        group.attrs.update(final)
        with warnings.catch_warnings():       # zarr 3: consolidated metadata is an extension
            warnings.simplefilter("ignore")
            zarr.consolidate_metadata(tmp)
        read_dataset(tmp, verify=True).close()
        os.chmod(tmp, 0o777 & ~_umask())
        if out.exists() and not overwrite:
            from ..errors import OutputExistsError
            raise OutputExistsError(f"out={str(out)!r} appeared while the runs were generated; "
                                    "it was left untouched. Pass overwrite=True (--overwrite) "
                                    "to replace it.")
        _replace_folder(out, tmp)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------ the public function
def generate_runs(scenario, out: str | os.PathLike, runs: int = 4, n_samples: int = 24,
                  every: Optional[int] = None, *, ood_samples: int = 0,
                  ood_runs: Optional[int] = None, split_by: str = "time",
                  workers: Optional[int] = None, scheduler: Optional[str] = None,
                  threads: int = 1, fractions: Sequence[float] = (0.7, 0.15, 0.15),
                  gap: Optional[int] = None, overwrite: bool = False, resume: bool = True,
                  progress: bool = True, trajectory: bool = False,
                  allow_unconverged: bool = False, scheduler_timeout: float = 30.0,
                  retries: int = 1,
                  callback: Optional[Callable[[int, int, int], None]] = None,
                  echo: Optional[Callable[[str], None]] = None) -> Path:
    """Generate ``runs`` independent runs (and ``ood_runs`` OOD runs) on dask into one zarr store.

    Parameters
    ----------
    scenario : Scenario
        The configuration of every run; its seed is the root of :func:`run_seeds`
        (run ``r`` is ``Scenario.from_config({**scenario.config, "seed": s_r})`` with
        ``s_r = run_seeds(seed, runs)[r]``: the scenario ``get_scenario`` builds with
        that seed, since no derived parameter (``dt``, ``sample_every``) depends on it).
    out : path-like
        The zarr store to write (``*.zarr``); its folder must exist.
    runs : int
        Main runs (>= 1).
    n_samples, every, fractions, gap, trajectory, allow_unconverged
        Per main run, as in :func:`~meshclosure.data.generate`.
    ood_samples : int
        Samples of each out-of-distribution run (0, or >= 3 with OOD runs).
    ood_runs : int, optional
        OOD runs: the ``ood()`` variants of main runs ``0 .. ood_runs-1``
        (default 1 when ``ood_samples`` > 0, else 0).
    split_by : {"time", "run"}
        ``"time"``: every main run split by time into train/val/test blocks
        (``fractions``, ``gap``); ``"run"``: whole main runs per split, the
        runs ``split_boundaries(runs, fractions)`` blocks (needs ``runs`` >= 3;
        ``gap`` unused).
    workers : int, optional
        Start a ``distributed.LocalCluster`` of ``workers`` processes (one
        thread each) and close it at the end; default 1 when no ``scheduler``.
    scheduler : str, optional
        Address of a running dask scheduler (``"tcp://host:8786"``); its
        workers must see ``out``'s folder at the same path (shared filesystem).
    threads : int
        ``torch.set_num_threads`` inside every run (the same count gives the
        same bits as a serial run).
    overwrite, resume, progress
        As in :func:`~meshclosure.data.generate`; ``progress`` shows one bar over runs.
    scheduler_timeout : float
        Seconds to wait for ``scheduler`` to answer.
    retries : int
        Retries of a run task that raises (a run whose worker dies is
        rescheduled by dask in any case).
    callback : callable ``(run, done, total)``, optional
        Called on the caller's side after each run finishes (``done`` runs of
        ``total`` to compute in this call).
    echo : callable, optional
        Also receives the one-line summary that is logged.

    Returns
    -------
    Path
        ``out``.

    Raises
    ------
    ArgumentError
        Bad arguments (:func:`check_runs_arguments`,
        :func:`~meshclosure.data.check_generate_arguments`), a netCDF ``out``,
        or a ``scheduler`` that does not answer within ``scheduler_timeout``.
    ResumeError
        ``<out>.partial`` holds runs of other arguments (left untouched).
    SharedPathError
        A worker cannot see ``<out>.partial``.
    """
    args = check_runs_arguments(runs, workers=workers, scheduler=scheduler, ood_runs=ood_runs,
                                ood_samples=ood_samples, split_by=split_by, threads=threads,
                                scheduler_timeout=scheduler_timeout, retries=retries)
    if split_by == "run" and gap not in (None, 0):
        raise ArgumentError("gap", gap, "applies to split_by='time' only (whole runs are "
                            "the blocks with split_by='run')", "leave {gap} out, or pass "
                            "{split_by}='time'")
    gen = check_generate_arguments(scenario, n_samples=n_samples, every=every,
                                   ood_samples=ood_samples, fractions=fractions,
                                   gap=0 if split_by == "run" else gap, out=out,
                                   overwrite=overwrite, resume=resume, trajectory=trajectory)
    if gen["format"] != "zarr":
        raise ArgumentError("out", str(out), "must be a zarr store (a name ending in .zarr) "
                            "with several runs: each run writes its own region of it",
                            "name the output e.g. data.zarr")
    out = gen["out"]
    check_folder(out, "out")
    folder = partial_dir(out)
    specs = _per_run_specs(scenario, folder, args, gen, allow_unconverged)
    meta = {"format": _PARTIAL_FORMAT, "multirun": 1, "config": scenario.config,
            "runs": args["runs"], "ood_runs": args["ood_runs"], "split_by": args["split_by"],
            "n_samples": gen["n_samples"], "every": gen["every"],
            "ood_samples": gen["ood_samples"], "fractions": list(gen["fractions"]),
            "gap": gen["gap"], "trajectory": gen["trajectory"], "threads": args["threads"],
            "device": str(getattr(scenario, "device", "cpu")),
            "versions": _versions()}      # an upgrade between interruption and resume: refused
    meta = json.loads(json.dumps(meta, sort_keys=True, default=str))
    start = time.perf_counter()
    with _client(args["workers"], args["scheduler"],
                 args["scheduler_timeout"]) as client:
        _open_partial(folder, meta, resume)            # after the scheduler answered
        (folder / "runs").mkdir(exist_ok=True)
        done = [s for s in specs if _complete(s)]
        todo = [s for s in specs if s not in done]
        results = _compute_runs(client, todo, len(specs), len(done), args["retries"],
                                f"generate {scenario.name} runs" if progress else None, callback)
        wall_runs = time.perf_counter() - start
        samples = sum(r["samples"] for r in results.values())
        per_run = [{"run": s["run"], "kind": s["kind"], "seed": s["seed"],
                    "skipped": s["run"] not in results,
                    **({k: results[s["run"]][k] for k in ("wall_s", "worker", "host", "samples")}
                       if s["run"] in results else {})} for s in specs]
        generation = {"runs": per_run, "n_runs": len(specs),
                      "workers": len(client.scheduler_info().get("workers", {})),
                      "scheduler": args["scheduler"] or "LocalCluster",
                      "threads": args["threads"], "computed_runs": sorted(results),
                      "skipped_runs": [s["run"] for s in done], "samples": samples,
                      "runs_wall_s": wall_runs,
                      "samples_per_min": 60 * samples / max(wall_runs, 1e-12)}
        attrs = {"seed": int(scenario.config.get("seed", getattr(scenario, "seed", 0))),
                 "run_configs": json.dumps([s["config"] for s in specs], sort_keys=True),
                 "n_runs": len(specs), "n_main_runs": args["runs"],
                 "n_ood_runs": args["ood_runs"], "split_by": args["split_by"],
                 "split_runs": json.dumps(_split_runs(args, gen["fractions"])),
                 "split_fractions": json.dumps([float(f) for f in gen["fractions"]])}
        if args["split_by"] == "run":
            attrs.update({"split_gap": 0, "split_boundaries": json.dumps(split_boundaries(
                args["runs"], gen["fractions"]))})
        _combine(specs, folder, out, client, args, gen, attrs, generation, start, overwrite)
    shutil.rmtree(folder, ignore_errors=True)
    line = (f"wrote {out}: {args['runs']} runs (+{args['ood_runs']} ood) of {n_samples} "
            f"samples on {generation['workers']} workers; computed {len(results)} runs "
            f"({samples} samples, {generation['samples_per_min']:.1f} samples/min), skipped "
            f"{len(done)} finished ones; total {generation['wall_s']:.1f} s")
    _log.info(line)
    if echo is not None:
        echo(line)
    return out


def _compute_runs(client, todo: List[Dict[str, Any]], total: int, skipped: int, retries: int,
                  desc: Optional[str], callback) -> Dict[int, Dict[str, Any]]:
    """Submit one task per run in ``todo``; gather their results as they finish (one bar).

    On any error or interruption the runs still queued are cancelled (a run
    already running on a worker of an external scheduler ends on its own)."""
    from distributed import as_completed

    bar = None
    if desc is not None:
        from tqdm.auto import tqdm
        bar = tqdm(total=total, initial=skipped, desc=desc, unit="run", disable=None)
    token = os.urandom(4).hex()
    futures = [client.submit(_run_task, s, key=f"meshclosure-run-{s['run']:03d}-{token}",
                             pure=False, retries=retries) for s in todo]
    results: Dict[int, Dict[str, Any]] = {}
    try:
        with client.as_current():                       # as_completed finds it
            finished = as_completed(futures)
        for k, fut in enumerate(finished, 1):
            res = fut.result()
            results[res["run"]] = res
            if bar is not None:
                bar.update(1)
            if callback is not None:
                callback(res["run"], k, len(todo))
    except BaseException:
        client.cancel(futures)
        raise
    finally:
        if bar is not None:
            bar.close()
    return results


def _split_runs(args: Dict[str, Any], fractions: Sequence[float]) -> Dict[str, List[int]]:
    """The main runs of each split with ``split_by="run"`` (every main run with "time")."""
    runs = list(range(args["runs"]))
    if args["split_by"] == "time":
        return {"train": runs, "val": runs, "test": runs}
    b = split_boundaries(args["runs"], fractions)
    return {name: runs[b[k]:b[k + 1]] for k, name in enumerate(("train", "val", "test"))}
