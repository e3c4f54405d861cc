"""Generate a subgrid dataset from a scenario: spin up, sample, coarse-grain, write.

:func:`generate` runs the fine model of a scenario, keeps a snapshot every
``every`` fine steps after the spin-up, turns each into coarse state, inputs
and subgrid targets (:func:`~meshclosure.data.targets.subgrid_targets`), and
writes one netCDF file or zarr store (:mod:`meshclosure.data.dataset`). Every
argument is checked first (:func:`check_generate_arguments`), before any sample.

With ``trajectory=True`` the samples are consecutive coarse states, one at
every coarse step (``scenario.coarse_every`` fine steps apart, the first at
the end of the spin-up), each with its instantaneous targets and the step
means that lead to the next (:func:`~meshclosure.data.trajectory.trajectory_samples`;
layout in :mod:`meshclosure.data.dataset`), so one file serves calibration,
offline training, online (unrolled) training and validation.

Safety of the output
--------------------
* The output path is checked before any computation: its folder must exist
  and be writable, and an existing file is never replaced without
  ``overwrite=True``.
* The file (or zarr store) appears only when complete: it is written to a
  temporary name in the same folder and renamed.
* Work in progress lives in ``<out>.partial/``: the spun-up fine state, and
  after every sample that sample and the fine state it was taken from
  (each checkpoint itself written atomically). An interrupted run (Ctrl-C,
  a killed job) leaves only that folder; the next call with the same
  arguments resumes from the last sample and, because every scenario is a
  pure function of its seed and time, produces the same file as an
  uninterrupted run. The folder is removed once the file is written. A
  folder from different arguments, or written by other package versions
  (meshclosure, torch, numpy, xarray: recorded in its ``meta.json``), or
  with a missing or corrupt checkpoint, is refused with
  :class:`ResumeError` naming what differs and left untouched (an upgrade
  never mixes code versions in one file); ``resume=False`` (``--no-resume``)
  discards it.
* A scenario whose spin-up checks for statistical equilibrium
  (``barotropic``) and misses it stops the run with :class:`SpinUpError`
  before any sample is kept, unless ``allow_unconverged=True``.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence

import numpy as np
import torch

from .._files import atomic_path, check_folder, refuse_existing
from ..errors import ArgumentError, MeshclosureError
from ..solver import STAGES
from .dataset import _versions, build_dataset, check_split_arguments, max_gap
from .store import _is_zarr_store, _umask, dataset_format, write_dataset
from .targets import SubgridSample, subgrid_targets
from .trajectory import STEPPER, trajectory_samples

__all__ = ["generate", "check_generate_arguments", "check_output_path", "partial_dir",
           "SpinUpError", "ResumeError"]

_log = logging.getLogger("meshclosure.data.generate")

_PARTIAL_FORMAT = 2


class SpinUpError(MeshclosureError, RuntimeError):
    """The spin-up of a scenario that checks for statistical equilibrium did not reach it,
    so its samples would not be equilibrium truth (see :func:`generate`)."""


class ResumeError(MeshclosureError, RuntimeError):
    """The checkpoints of an unfinished run (``<out>.partial``) cannot be resumed: another
    run's, or missing or corrupt. The folder is left untouched; the message says to pass
    ``resume=False`` (``--no-resume``) or remove it."""


def _check_spin_up(scenario, info: dict, run: str, allow_unconverged: bool) -> None:
    """Raise :class:`SpinUpError` when ``info["converged"] is False`` (``None``: not checked)."""
    if info.get("converged") is not False or allow_unconverged:
        return
    trends = ", ".join(f"{k} {info[k]:.3g}" for k in ("energy_trend", "energy_trend_se",
                                                       "enstrophy_trend", "enstrophy_trend_se")
                       if isinstance(info.get(k), (int, float)))
    raise SpinUpError(
        f"the {run} run of the {scenario.name!r} scenario did not reach statistical equilibrium "
        f"by t={info.get('t', float('nan')):.4g}: criterion {info.get('criterion', '?')}; "
        f"measured (relative) {trends}. No samples were kept. Fix: a longer spin-up "
        "(raise spinup_max_time), a larger mesh (smaller relative fluctuations), or pass "
        "allow_unconverged=True (--allow-unconverged) to keep samples anyway; the spun-up "
        "state is checkpointed, so rerunning resumes from it.")


def partial_dir(out: str | os.PathLike) -> Path:
    """The folder of checkpoints of an unfinished run writing ``out``: ``<out>.partial``."""
    out = Path(out)
    return out.with_name(out.name + ".partial")


def check_output_path(out: str | os.PathLike, overwrite: bool = False,
                      format: Optional[str] = None) -> Path:
    """Raise a clear error unless ``out`` can be written (and replaced, with ``overwrite``).

    Raises
    ------
    OutputExistsError
        ``out`` exists and ``overwrite`` is False (a ``FileExistsError``).
    IsADirectoryError
        ``out`` is a folder (other than a zarr store named ``*.zarr``).
    FileNotFoundError, PermissionError
        The folder of ``out`` is missing or not writable.
    ArgumentError
        ``format`` unknown or not matching the suffix of ``out``.

    Examples
    --------
    >>> check_output_path("/no/such/folder/data.nc")
    Traceback (most recent call last):
    ...
    FileNotFoundError: out='/no/such/folder/data.nc': the folder '/no/such/folder' does ...
    """
    out = Path(out)
    fmt = dataset_format(out, format)
    if out.is_dir() and not (fmt == "zarr" and _is_zarr_store(out)):
        raise IsADirectoryError(f"out={str(out)!r} is a folder" + (
            " that is not a zarr store; refusing to replace it. Choose another path."
            if fmt == "zarr" else f"; give a file name such as {str(out / 'data.nc')!r}."))
    check_folder(out, "out")
    refuse_existing(out, overwrite, name="out")
    return out


def _integer(name: str, value: Any, low: int, fix: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ArgumentError(name, value, f"must be an integer >= {low}", fix)


def check_generate_arguments(scenario: Any = None, *, n_samples: Any = 24, every: Any = None,
                             ood_samples: Any = 0,
                             fractions: Any = (0.7, 0.15, 0.15), gap: Any = None,
                             format: Optional[str] = None,
                             out: Optional[str | os.PathLike] = None, overwrite: bool = False,
                             resume: Any = True, trajectory: Any = False) -> Dict[str, Any]:
    """Check every argument of :func:`generate` before any work; return the resolved ones.

    Called by :func:`generate` itself and by ``meshclosure generate`` before
    it builds anything, so no sample is computed with an argument that would
    be refused later. Bad values raise :class:`~meshclosure.errors.ArgumentError`
    whose ``argument`` is the parameter name (``n_samples``, ``every``,
    ``ood_samples``, ``fractions``, ``gap``, ``format``, ``resume``), so the CLI
    can re-spell it as its flag; ``out`` raises as :func:`check_output_path`.

    Parameters
    ----------
    scenario : Scenario, optional
        Gives the default ``every`` (``config["sample_every"]``); None: ``every``
        is only checked when given.
    n_samples, every, ood_samples, fractions, gap, format, out, overwrite, resume, trajectory
        As in :func:`generate`; ``out`` None skips the output checks. With
        ``trajectory`` ``every`` is the scenario's ``coarse_every`` (another
        value is refused).

    Returns
    -------
    dict
        ``n_samples``, ``every`` (None only without scenario and every), ``trajectory``,
        ``ood_samples``, ``fractions``, ``gap`` (None resolved: 1 when the val
        and test blocks keep 2 samples each with it, else 0), ``format``
        and ``out`` (a Path or None).

    Examples
    --------
    >>> check_generate_arguments(n_samples=4, gap=100)
    Traceback (most recent call last):
    ...
    meshclosure.errors.ArgumentError: gap=100: must leave at least 2 samples in each of ...
    """
    _integer("n_samples", n_samples, 3, "ask for at least 3 samples (train, val, test blocks), "
             "e.g. {n_samples}=24")
    if not isinstance(trajectory, bool):
        raise ArgumentError("trajectory", trajectory, "must be True or False",
                            "pass {trajectory}=True for a sample at every coarse step")
    if trajectory and scenario is not None:
        m = int(scenario.coarse_every)
        if every is not None and every != m:
            raise ArgumentError("every", every, f"must be left out for a trajectory dataset: "
                                f"it has a sample at every coarse step, coarse_every = {m} "
                                f"fine steps of the {scenario.name!r} scenario",
                                f"leave {{every}} out with {{trajectory}} (or pass {{every}}={m})")
        every = m
    if every is None and scenario is not None:
        every = int(scenario.config.get("sample_every") or 10)
    if every is not None:
        _integer("every", every, 1, "pass a positive number of fine steps between samples, "
                 "e.g. {every}=10")
    _integer("ood_samples", ood_samples, 0, "pass 0 for no out-of-distribution run, or a "
             "positive number of samples")
    if not isinstance(resume, bool):
        raise ArgumentError("resume", resume, "must be True or False", "pass {resume}=False to "
                            "start afresh")
    if gap is None:
        check_split_arguments(n_samples, fractions, 0)
        gap = 1 if max_gap(n_samples, fractions) >= 1 else 0
    check_split_arguments(n_samples, fractions, gap)
    fmt = dataset_format(out if out is not None else "data", format)
    path = check_output_path(out, overwrite, format) if out is not None else None
    return {"n_samples": int(n_samples), "every": every, "ood_samples": int(ood_samples),
            "fractions": tuple(float(f) for f in fractions), "gap": int(gap), "format": fmt,
            "out": path, "trajectory": trajectory}


def _device_kind(scenario) -> str:
    """``"cpu"`` or ``"cuda"``: where the fine run computes (a resume must match it)."""
    device = getattr(scenario, "device", None)
    return "cpu" if device is None else torch.device(device).type


def _save(obj: Any, path: Path) -> None:
    with atomic_path(path, ".pt") as tmp:
        torch.save(obj, tmp)


def _load(path: Path) -> Any:
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except FileNotFoundError:
        raise ResumeError(f"the checkpoint {str(path)!r} of an unfinished run is missing; "
                          f"{_RESUME_FIX.format(folder=path.parent)}") from None
    except Exception as err:   # truncated or foreign file: pickle, zip or torch errors
        raise ResumeError(f"the checkpoint {str(path)!r} of an unfinished run cannot be read "
                          f"({type(err).__name__}: {err}); it is truncated or corrupt. "
                          f"{_RESUME_FIX.format(folder=path.parent)}") from err


def _sample_dict(s: SubgridSample) -> dict:
    out = {"t": s.t, "state": s.state, "transport": s.transport, "flux": s.flux,
           "tendency": s.tendency, "boundary_flux": s.boundary_flux, "inputs": s.inputs}
    if s.step_flux:
        out.update(step_flux=s.step_flux, step_boundary_flux=s.step_boundary_flux,
                   step_forcing=s.step_forcing, transport_stages=s.transport_stages)
    return out


_RESUME_FIX = ("Pass resume=False (--no-resume) to discard {folder}/ and start afresh, or remove "
               "that folder yourself.")


def _differences(old: Any, new: Any, prefix: str = "") -> list:
    """``"key: old -> new"`` for every leaf where two JSON-like values differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new)):
            out += _differences(old.get(k, "<none>"), new.get(k, "<none>"), f"{prefix}{k}.")
        return out
    return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} there, {new!r} now"]


def _check_checkpoints(folder: Path) -> None:
    """Raise :class:`ResumeError` unless every checkpoint in ``folder`` loads and each run's
    samples ``0 .. done - 1`` are all there (before any computation is resumed)."""
    for prefix in ("main", "ood"):
        fine = folder / f"{prefix}_fine.pt"
        samples = sorted(folder.glob(f"{prefix}_sample_*.pt"))
        if not fine.is_file():
            if samples:
                raise ResumeError(f"the checkpoint {str(fine)!r} is missing although samples of "
                                  f"that run are there. {_RESUME_FIX.format(folder=folder)}")
            continue
        done = int(_load(fine).get("done", -1))
        for i in range(done):
            path = folder / f"{prefix}_sample_{i:06d}.pt"
            try:
                SubgridSample(**_load(path))
            except TypeError as err:
                raise ResumeError(f"the checkpoint {str(path)!r} is not a sample ({err}). "
                                  f"{_RESUME_FIX.format(folder=folder)}") from err


def _open_partial(folder: Path, meta: dict, resume: bool) -> None:
    """Create ``folder`` for this run, or keep it when it holds the same run and ``resume``.

    With ``resume`` a folder of another run (other arguments or package
    versions), or one whose ``meta.json`` is missing or unreadable, is never
    deleted: :class:`ResumeError` names what differs. ``resume=False``
    discards it."""
    meta_path = folder / "meta.json"
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()                   # an empty folder holds nothing to resume
    if folder.exists() and resume:
        try:
            old = json.loads(meta_path.read_text())
        except FileNotFoundError:
            raise ResumeError(f"{str(folder)!r} holds checkpoints but no meta.json, so it cannot "
                              f"be resumed safely. {_RESUME_FIX.format(folder=folder)}") from None
        except (OSError, ValueError) as err:
            raise ResumeError(f"{str(meta_path)!r} cannot be read ({type(err).__name__}: {err}). "
                              f"{_RESUME_FIX.format(folder=folder)}") from err
        if old == meta:
            _check_checkpoints(folder)
            return
        diff = _differences(old, meta)
        raise ResumeError(
            f"{str(folder)!r} holds an unfinished run with other arguments or package versions "
            f"({'; '.join(diff[:6])}{'; ...' if len(diff) > 6 else ''}); it was left untouched. "
            "Rerun with the arguments it was started with to resume it, or "
            + _RESUME_FIX.format(folder=folder)[0].lower() + _RESUME_FIX.format(folder=folder)[1:])
    if folder.exists():
        shutil.rmtree(folder)
    # the folder appears with its meta.json (a process killed in between leaves only a
    # temporary folder, never a folder of checkpoints without meta.json)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        (tmp / "meta.json").write_text(json.dumps(meta, sort_keys=True))
        os.chmod(tmp, 0o777 & ~_umask())
        os.rename(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _run(scenario, folder: Path, prefix: str, n: int, every: int, progress: bool, bar,
         callback, timing: dict, allow_unconverged: bool = False,
         trajectory: bool = False) -> list:
    """Spin up (or resume) and take ``n`` samples, checkpointing each; return the samples.

    With ``trajectory`` a sample is taken at every coarse step (``every`` is
    then ``scenario.coarse_every``), the first at the spun-up state, each
    holding the step means up to the next (:func:`trajectory_samples`).

    Raises :class:`SpinUpError` after the spin-up (checkpointed first) when the
    scenario reports ``converged=False`` and ``allow_unconverged`` is False."""
    if n == 0:
        return []
    fine_path = folder / f"{prefix}_fine.pt"
    if not fine_path.is_file() and any(folder.glob(f"{prefix}_sample_*.pt")):
        raise ResumeError(f"the checkpoint {str(fine_path)!r} is missing although samples of that "
                          f"run are there. {_RESUME_FIX.format(folder=folder)}")
    if fine_path.is_file():
        ck = _load(fine_path)
        device = getattr(scenario, "device", None)       # checkpoints live on the CPU
        t, done = float(ck["t"]), int(ck["done"])
        state = {k: v.to(device) if device is not None else v for k, v in ck["state"].items()}
        info = ck["spinup_info"]
    else:
        t0 = time.perf_counter()
        t, state = scenario.spin_up(scenario.initial_state(), progress=progress)
        timing["spin_up_s"] += time.perf_counter() - t0
        done = 0
        info = json.dumps(getattr(scenario, "spinup_info", {}), default=str)
        _save({"t": float(t), "state": {k: v.cpu() for k, v in state.items()}, "done": 0,
               "spinup_info": info}, fine_path)
    _check_spin_up(scenario, json.loads(info), prefix, allow_unconverged)
    if bar is not None:
        bar.update(done)
    coarsening = scenario.coarsening
    for i in range(done, n):
        t0 = time.perf_counter()
        if trajectory:
            ((t, state, sample),) = list(trajectory_samples(scenario, t, state, 1))
            t1 = time.perf_counter()
        else:
            t, state = scenario.advance(t, state, every, progress=False)
            t1 = time.perf_counter()
            U = scenario.transport(t, state)
            sample = subgrid_targets(scenario, coarsening, t, state, U)
        timing["steps"] += every
        timing["advance_s"] += t1 - t0
        timing["sample_s"] += time.perf_counter() - t0
        timing["samples"] += 1
        _save(_sample_dict(sample.to("cpu")), folder / f"{prefix}_sample_{i:06d}.pt")
        _save({"t": float(t), "state": {k: v.cpu() for k, v in state.items()}, "done": i + 1,
               "spinup_info": info}, fine_path)
        if bar is not None:
            bar.update(1)
        if callback is not None:
            callback(prefix, i + 1, n)
    timing[f"{prefix}_spinup_info"] = json.loads(info)
    return [SubgridSample(**_load(folder / f"{prefix}_sample_{i:06d}.pt")) for i in range(n)]


def generate(scenario, out: str | os.PathLike, n_samples: int = 24, every: Optional[int] = None,
             overwrite: bool = False, progress: bool = True, resume: bool = True,
             ood_samples: int = 0, fractions: Sequence[float] = (0.7, 0.15, 0.15),
             callback: Optional[Callable[[str, int, int], None]] = None,
             echo: Optional[Callable[[str], None]] = None,
             allow_unconverged: bool = False, gap: Optional[int] = None,
             format: Optional[str] = None, trajectory: bool = False) -> Path:
    """Run ``scenario`` and write its subgrid dataset to ``out`` (netCDF or zarr, atomically).

    Parameters
    ----------
    scenario : Scenario
        From :func:`meshclosure.data.get_scenario`; its ``config`` and seed
        go into the file.
    out : path-like
        Output ``.nc`` file, or ``.zarr`` store; its folder must exist.
    n_samples : int
        Time samples of the main run (>= 3: split by time into train/val/test).
    every : int, optional
        Fine time steps between samples (>= 1); default the scenario's
        ``config["sample_every"]`` (chosen so successive samples are nearly
        independent), else 10. The OOD run takes samples at the same time
        interval (to within one of its fine steps).
    overwrite : bool
        Replace an existing ``out``.
    progress : bool
        Show tqdm progress bars (spin-up and samples); they stay quiet when
        stderr is not a terminal.
    resume : bool
        Reuse the checkpoints of an interrupted run with the same arguments
        in ``<out>.partial`` (default); a folder of another run is refused,
        never deleted. ``False`` discards the folder and starts afresh.
    ood_samples : int
        Samples of ``scenario.ood()`` (run 1, the out-of-distribution split); 0 for none.
    fractions : (train, val, test)
        Fractions of the main run's samples in each contiguous block.
    callback : callable ``(run, done, total)``, optional
        Called after every checkpointed sample (``run`` is ``"main"`` or ``"ood"``).
    echo : callable, optional
        Also receives the one-line summary that is logged (INFO) on the
        ``meshclosure.data.generate`` logger.
    allow_unconverged : bool
        Keep samples even when a scenario that checks for statistical
        equilibrium (``barotropic``) reports that its spin-up did not reach
        it (``spinup_info["converged"] is False``); default False: raise
        :class:`SpinUpError`. Fixed-time spin-ups (``converged`` None) are
        never refused.
    gap : int, optional
        Samples set aside at the start of the val and test blocks (split
        code 4), so that no block starts right where the previous one ends
        (see :func:`~meshclosure.data.build_dataset`); each block keeps at
        least 2 samples. Default: 1 when that leaves 2 in each, else 0.
    format : {"netcdf", "zarr"}, optional
        Default from the suffix of ``out`` (``.zarr``: zarr).
    trajectory : bool
        Write a trajectory dataset: a sample at every coarse step
        (``scenario.coarse_every`` fine steps apart; ``every`` must be left
        out), each with the step-mean subgrid flux, the step-mean forcing
        (scenarios with a random forcing) and, for a prescribed flow, the
        coarse transport at every stage time of the step. Unroll windows:
        :func:`~meshclosure.data.trajectory.trajectory_windows`,
        :class:`~meshclosure.data.torch_dataset.TrajectoryDataset`.

    Returns
    -------
    Path
        ``out``.

    Raises
    ------
    ArgumentError
        A bad ``n_samples``, ``every``, ``ood_samples``, ``fractions``, ``gap``,
        ``format`` or ``resume`` (:func:`check_generate_arguments`), before any
        computation.
    OutputExistsError, FileNotFoundError, PermissionError, IsADirectoryError
        From :func:`check_output_path`, before any computation.
    ResumeError
        ``<out>.partial`` holds another run, or a missing or corrupt
        checkpoint, and ``resume`` is True (the folder is left untouched).
    SpinUpError
        A spin-up did not reach statistical equilibrium (the message gives the
        criterion, the measured trends and the fixes) and ``allow_unconverged``
        is False; the spun-up state stays checkpointed in ``<out>.partial``.
    """
    args = check_generate_arguments(scenario, n_samples=n_samples, every=every,
                                    ood_samples=ood_samples, fractions=fractions, gap=gap,
                                    format=format, out=out, overwrite=overwrite, resume=resume,
                                    trajectory=trajectory)
    out, every, gap, fmt = args["out"], args["every"], args["gap"], args["format"]
    folder = partial_dir(out)
    seed = int(scenario.config.get("seed", getattr(scenario, "seed", 0)))
    ood = scenario.ood() if ood_samples else None
    if ood is None:
        ood_every = None
    elif trajectory:
        ood_every = int(ood.coarse_every)
    else:
        ood_every = max(1, int(round(every * float(scenario.dt) / float(ood.dt))))
    meta = {"format": _PARTIAL_FORMAT, "config": scenario.config, "every": every,
            "n_samples": n_samples, "ood_samples": ood_samples, "ood_every": ood_every,
            "ood_config": ood.config if ood is not None else None,
            # the same bits need the same device kind and torch thread count
            "device": _device_kind(scenario), "threads": torch.get_num_threads(),
            "versions": _versions()}      # an upgrade between interruption and resume: refused
    if trajectory:
        meta["trajectory"] = True
    meta = json.loads(json.dumps(meta, sort_keys=True, default=str))
    _open_partial(folder, meta, resume)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_samples + ood_samples, desc=f"generate {scenario.name}", unit="sample",
                   disable=None)
    timing: Dict[str, Any] = {"spin_up_s": 0.0, "advance_s": 0.0, "sample_s": 0.0, "steps": 0,
                              "samples": 0}
    start = time.perf_counter()
    try:
        samples = _run(scenario, folder, "main", n_samples, every, progress, bar, callback,
                       timing, allow_unconverged, trajectory)
        ood_list = (_run(ood, folder, "ood", ood_samples, ood_every, progress, bar, callback,
                         timing, allow_unconverged, trajectory) if ood is not None else [])
    finally:
        if bar is not None:
            bar.close()
    elapsed = time.perf_counter() - start
    rate = {"fine_steps_per_s": timing["steps"] / max(timing["advance_s"], 1e-12),
            "samples_per_min": 60 * timing["samples"] / max(timing["sample_s"], 1e-12)}
    runs_dt = [float(scenario.dt)] + ([float(ood.dt)] if ood is not None else [])
    extra_attrs: Dict[str, Any] = {}
    if trajectory:
        extra_attrs = {"trajectory": 1, "coarse_every": int(scenario.coarse_every),
                       "coarse_dt": float(scenario.coarse_dt), "stepper": STEPPER,
                       "stage_times": [float(c) for c in STAGES[STEPPER].c],
                       "stage_weights": [float(b) for b in STAGES[STEPPER].b],
                       "ood_coarse_every": ood_every if ood is not None else -1}
    ds = build_dataset(samples, scenario.coarse, config=scenario.config, seed=seed,
                       ood_samples=ood_list, ood_config=ood.config if ood is not None else None,
                       fractions=args["fractions"], gap=gap, run_dt=runs_dt,
                       run_every=[every] + ([ood_every] if ood is not None else []),
                       attrs={"every": every, "dt": float(scenario.dt),
                              "fine_mesh_signature": scenario.fine.signature(),
                              "spinup_info": timing.pop("main_spinup_info", {}),
                              "ood_spinup_info": timing.pop("ood_spinup_info", {}),
                              "generation": {**timing, **rate, "wall_s": elapsed},
                              **extra_attrs})
    write_dataset(ds, out, overwrite=overwrite, format=fmt)
    shutil.rmtree(folder, ignore_errors=True)
    if timing["samples"]:
        line = (f"wrote {out}: {n_samples} {'coarse steps' if trajectory else 'samples'} "
                f"(+{ood_samples} ood) on "
                f"{scenario.coarse.n_cells} coarse cells from {scenario.fine.n_cells} fine cells; "
                f"{rate['fine_steps_per_s']:.1f} fine steps/s, "
                f"{rate['samples_per_min']:.1f} samples/min, spin-up {timing['spin_up_s']:.1f} s, "
                f"total {elapsed:.1f} s")
        _log.info(line)
        if echo is not None:
            echo(line)
    return out
