"""Generate a subgrid dataset from a scenario: spin up, sample, coarse-grain, write.

:func:`generate` runs the fine model of a scenario, keeps a snapshot every
``every`` fine steps after the spin-up, turns each into coarse state, inputs
and subgrid targets (:func:`~meshclosure.data.targets.subgrid_targets`), and
writes one netCDF file (:mod:`meshclosure.data.dataset`).

Safety of the output
--------------------
* The output path is checked before any computation: its folder must exist
  and be writable, and an existing file is never replaced without
  ``overwrite=True``.
* The file appears only when complete: it is written to a temporary name
  in the same folder and renamed (``os.replace``).
* Work in progress lives in ``<out>.partial/``: the spun-up fine state, and
  after every sample that sample and the fine state it was taken from
  (each checkpoint itself written atomically). An interrupted run (Ctrl-C,
  a killed job) leaves only that folder; the next call with the same
  arguments resumes from the last sample and, because every scenario is a
  pure function of its seed and time, produces the same file as an
  uninterrupted run. The folder is removed once the file is written; a
  folder from different arguments, or written by other package versions
  (meshclosure, torch, numpy, xarray: recorded in its ``meta.json``), is
  discarded with a warning, so an upgrade never mixes code versions in one file.
* A scenario whose spin-up checks for statistical equilibrium
  (``barotropic``) and misses it stops the run with :class:`SpinUpError`
  before any sample is kept, unless ``allow_unconverged=True``.
"""
from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence

import torch

from .._files import atomic_path, check_folder
from ..errors import MeshclosureError
from .dataset import _versions, build_dataset, write_dataset
from .targets import SubgridSample, subgrid_targets

__all__ = ["generate", "check_output_path", "partial_dir", "SpinUpError"]

_PARTIAL_FORMAT = 2


class SpinUpError(MeshclosureError, RuntimeError):
    """The spin-up of a scenario that checks for statistical equilibrium did not reach it,
    so its samples would not be equilibrium truth (see :func:`generate`)."""


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


def check_output_path(out: str | os.PathLike, overwrite: bool = False) -> Path:
    """Raise a clear error unless ``out`` can be written (and replaced, with ``overwrite``).

    Raises
    ------
    FileExistsError
        ``out`` exists and ``overwrite`` is False.
    IsADirectoryError
        ``out`` is a folder.
    FileNotFoundError, PermissionError
        The folder of ``out`` is missing or not writable.

    Examples
    --------
    >>> check_output_path("/no/such/folder/data.nc")
    Traceback (most recent call last):
    ...
    FileNotFoundError: out='/no/such/folder/data.nc': the folder '/no/such/folder' does ...
    """
    out = Path(out)
    if out.is_dir():
        raise IsADirectoryError(f"out={str(out)!r} is a folder; give a file name such as "
                                f"{str(out / 'data.nc')!r}.")
    check_folder(out, "out")
    if out.exists() and not overwrite:
        raise FileExistsError(f"out={str(out)!r} exists; pass overwrite=True (--overwrite) to "
                              "replace it, or choose another path. The file was left untouched.")
    return out


def _save(obj: Any, path: Path) -> None:
    with atomic_path(path, ".pt") as tmp:
        torch.save(obj, tmp)


def _load(path: Path) -> Any:
    return torch.load(path, weights_only=True)


def _sample_dict(s: SubgridSample) -> dict:
    return {"t": s.t, "state": s.state, "transport": s.transport, "flux": s.flux,
            "tendency": s.tendency, "boundary_flux": s.boundary_flux, "inputs": s.inputs}


def _open_partial(folder: Path, meta: dict, resume: bool) -> None:
    """Create ``folder`` for this run, or keep it when it holds the same run and ``resume``."""
    meta_path = folder / "meta.json"
    if folder.exists():
        same = False
        if resume and meta_path.is_file():
            try:
                same = json.loads(meta_path.read_text()) == meta
            except (OSError, ValueError):
                same = False
        if same:
            return
        if resume:
            warnings.warn(f"discarding {str(folder)!r}: it holds an unfinished run with other "
                          "arguments (scenario config, every, samples or seed) or other package "
                          "versions (meshclosure, torch, numpy, xarray).", stacklevel=3)
        shutil.rmtree(folder)
    folder.mkdir()
    with atomic_path(meta_path, ".json") as tmp:
        Path(tmp).write_text(json.dumps(meta, sort_keys=True))


def _run(scenario, folder: Path, prefix: str, n: int, every: int, progress: bool, bar,
         callback, timing: dict, allow_unconverged: bool = False) -> list:
    """Spin up (or resume) and take ``n`` samples, checkpointing each; return the samples.

    Raises :class:`SpinUpError` after the spin-up (checkpointed first) when the
    scenario reports ``converged=False`` and ``allow_unconverged`` is False."""
    if n == 0:
        return []
    fine_path = folder / f"{prefix}_fine.pt"
    if fine_path.is_file():
        ck = _load(fine_path)
        t, state, done = float(ck["t"]), dict(ck["state"]), int(ck["done"])
        info = ck["spinup_info"]
    else:
        t0 = time.perf_counter()
        t, state = scenario.spin_up(scenario.initial_state(), progress=progress)
        timing["spin_up_s"] += time.perf_counter() - t0
        done = 0
        info = json.dumps(getattr(scenario, "spinup_info", {}), default=str)
        _save({"t": float(t), "state": state, "done": 0, "spinup_info": info}, fine_path)
    _check_spin_up(scenario, json.loads(info), prefix, allow_unconverged)
    if bar is not None:
        bar.update(done)
    coarsening = scenario.coarsening
    for i in range(done, n):
        t0 = time.perf_counter()
        t, state = scenario.advance(t, state, every, progress=False)
        t1 = time.perf_counter()
        U = scenario.transport(t, state)
        sample = subgrid_targets(scenario, coarsening, t, state, U)
        timing["steps"] += every
        timing["advance_s"] += t1 - t0
        timing["sample_s"] += time.perf_counter() - t0
        timing["samples"] += 1
        _save(_sample_dict(sample), folder / f"{prefix}_sample_{i:06d}.pt")
        _save({"t": float(t), "state": state, "done": i + 1, "spinup_info": info}, fine_path)
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
             allow_unconverged: bool = False, gap: int = 1) -> Path:
    """Run ``scenario`` and write its subgrid dataset to ``out`` (netCDF, atomically).

    Parameters
    ----------
    scenario : Scenario
        From :func:`meshclosure.data.get_scenario`; its ``config`` and seed
        go into the file.
    out : path-like
        Output ``.nc`` file; its folder must exist.
    n_samples : int
        Time samples of the main run (>= 3: split by time into train/val/test).
    every : int, optional
        Fine time steps between samples (>= 1); default the scenario's
        ``config["sample_every"]`` (chosen so successive samples are nearly
        independent), else 10.
    overwrite : bool
        Replace an existing ``out``.
    progress : bool
        Show tqdm progress bars (spin-up and samples).
    resume : bool
        Reuse the checkpoints of an interrupted run with the same arguments
        in ``<out>.partial`` (default); ``False`` starts afresh.
    ood_samples : int
        Samples of ``scenario.ood()`` (the out-of-distribution split); 0 for none.
    fractions : (train, val, test)
        Fractions of the main run's samples in each contiguous block.
    callback : callable ``(run, done, total)``, optional
        Called after every checkpointed sample (``run`` is ``"main"`` or ``"ood"``).
    echo : callable, optional
        Receives a one-line summary (default: ``print`` when ``progress``).
    allow_unconverged : bool
        Keep samples even when a scenario that checks for statistical
        equilibrium (``barotropic``) reports that its spin-up did not reach
        it (``spinup_info["converged"] is False``); default False: raise
        :class:`SpinUpError`. Fixed-time spin-ups (``converged`` None) are
        never refused.
    gap : int
        Samples set aside at the start of the val and test blocks (split
        code 4), so that no block starts right where the previous one ends
        (see :func:`~meshclosure.data.build_dataset`).

    Returns
    -------
    Path
        ``out``.

    Raises
    ------
    FileExistsError, FileNotFoundError, PermissionError, IsADirectoryError
        From :func:`check_output_path`, before any computation.
    ValueError
        Bad ``n_samples``, ``every`` or ``ood_samples``.
    SpinUpError
        A spin-up did not reach statistical equilibrium (the message gives the
        criterion, the measured trends and the fixes) and ``allow_unconverged``
        is False; the spun-up state stays checkpointed in ``<out>.partial``.
    """
    if every is None:
        every = int(scenario.config.get("sample_every") or 10)
    for name, value, low in (("n_samples", n_samples, 3), ("every", every, 1),
                             ("ood_samples", ood_samples, 0), ("gap", gap, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}; got {value!r}.")
    out = check_output_path(out, overwrite)
    folder = partial_dir(out)
    seed = int(scenario.config.get("seed", getattr(scenario, "seed", 0)))
    ood = scenario.ood() if ood_samples else None
    meta = {"format": _PARTIAL_FORMAT, "config": scenario.config, "every": every,
            "n_samples": n_samples, "ood_samples": ood_samples,
            "ood_config": ood.config if ood is not None else None,
            "versions": _versions()}      # an upgrade between interruption and resume: restart
    meta = json.loads(json.dumps(meta, sort_keys=True, default=str))
    _open_partial(folder, meta, resume)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_samples + ood_samples, desc=f"generate {scenario.name}", unit="sample")
    timing: Dict[str, Any] = {"spin_up_s": 0.0, "advance_s": 0.0, "sample_s": 0.0, "steps": 0,
                              "samples": 0}
    start = time.perf_counter()
    try:
        samples = _run(scenario, folder, "main", n_samples, every, progress, bar, callback,
                       timing, allow_unconverged)
        ood_list = (_run(ood, folder, "ood", ood_samples, every, progress, bar, callback, timing,
                         allow_unconverged) if ood is not None else [])
    finally:
        if bar is not None:
            bar.close()
    elapsed = time.perf_counter() - start
    rate = {"fine_steps_per_s": timing["steps"] / max(timing["advance_s"], 1e-12),
            "samples_per_min": 60 * timing["samples"] / max(timing["sample_s"], 1e-12)}
    ds = build_dataset(samples, scenario.coarse, config=scenario.config, seed=seed,
                       ood_samples=ood_list, ood_config=ood.config if ood is not None else None,
                       fractions=fractions, gap=gap,
                       attrs={"every": every, "dt": float(scenario.dt),
                              "fine_mesh_signature": scenario.fine.signature(),
                              "spinup_info": timing.pop("main_spinup_info", {}),
                              "ood_spinup_info": timing.pop("ood_spinup_info", {}),
                              "generation": {**timing, **rate, "wall_s": elapsed}})
    write_dataset(ds, out, overwrite=overwrite)
    shutil.rmtree(folder, ignore_errors=True)
    echo = echo if echo is not None else (print if progress else None)
    if echo is not None and timing["samples"]:
        echo(f"wrote {out}: {n_samples} samples (+{ood_samples} ood) on {scenario.coarse.n_cells} "
             f"coarse cells from {scenario.fine.n_cells} fine cells; "
             f"{rate['fine_steps_per_s']:.1f} fine steps/s, "
             f"{rate['samples_per_min']:.1f} samples/min, spin-up {timing['spin_up_s']:.1f} s, "
             f"total {elapsed:.1f} s")
    return out
