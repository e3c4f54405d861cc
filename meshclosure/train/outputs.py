"""What a training run leaves in its folder: metrics as CSV, the ensemble listing, and the
rule that a folder holds one run (resumed, or replaced only when asked).

Examples
--------
>>> load_ensemble("no_such_folder", None)
Traceback (most recent call last):
...
meshclosure.errors.ArgumentError: out='no_such_folder': holds no ensemble.json (written when an ensemble run finishes); ...
"""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import torch

from .._files import atomic_path
from ..errors import ArgumentError, OutputExistsError

__all__ = ["METRIC_COLUMNS", "write_metrics", "load_ensemble", "prepare_out"]

METRIC_COLUMNS = ("epoch", "updates", "lr", "rollout_steps", "train_loss", "train_flux",
                  "train_tendency", "train_weak_form", "train_dissipation", "train_online",
                  "val_loss", "val_flux_mse", "val_flux_r2", "val_online", "skipped_updates",
                  "wall_s")




def write_metrics(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """The per-epoch metrics as CSV, written atomically."""
    cols = list(METRIC_COLUMNS) + sorted({k for r in rows for k in r} - set(METRIC_COLUMNS))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, restval="")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    with atomic_path(path, ".csv") as tmp:
        Path(tmp).write_text(buf.getvalue())



def load_ensemble(out: Union[str, os.PathLike], mesh: Any, mode: str = "mean",
                  generator: Optional[torch.Generator] = None,
                  operators: Optional[str] = None):
    """The ensemble :func:`train` wrote to ``out`` (``ensemble.json`` and one ``model.pt``
    per member) as an :class:`~meshclosure.train.uncertainty.EnsembleClosure` on ``mesh``
    (each member checked against it, weights only; and against ``operators``, the
    data's operator version, when given: :func:`~meshclosure.nn.load_model`).

    Raises
    ------
    ArgumentError
        ``out`` holds no ``ensemble.json`` (not an ensemble run, or not finished).
    """
    from ..nn import load_model
    from .uncertainty import EnsembleClosure

    listing = Path(out) / "ensemble.json"
    if not listing.is_file():
        raise ArgumentError("out", str(out), "holds no ensemble.json (written when an ensemble "
                            "run finishes)", "train with ensemble=M > 1 (--ensemble M) into "
                            "this folder, or load a single model with meshclosure.nn.load_model")
    members = [load_model(Path(out) / m, mesh, operators=operators).closure()
               for m in json.loads(listing.read_text())["members"]]
    return EnsembleClosure(members, mode=mode, generator=generator)



_RUN_FILES = ("checkpoint.pt", "model.pt", "metrics.csv", "config.json")


def prepare_out(out: Path, resume: bool, overwrite: bool) -> None:
    """Create ``out``; refuse to mix with an earlier run's results unless resuming it
    or ``overwrite``.

    Called on rank 0 only (:func:`~meshclosure.train.train` waits for it at a barrier):
    with ``overwrite`` it deletes the earlier run's files, which must happen once.
    A ``member_*`` folder is an earlier run's only when it holds one of
    ``checkpoint.pt``, ``model.pt``, ``metrics.csv`` or ``config.json``.
    """
    if out.exists() and not out.is_dir():
        raise ArgumentError("out", str(out), "must be a folder", "pass a folder path")
    ours = ["model.pt", "checkpoint.pt", "metrics.csv", "config.json", "ensemble.json"]
    # a member folder counts only when it holds run files: an ensemble interrupted before
    # its first checkpoint leaves empty member_* folders, and a rerun must proceed
    found = [n for n in ours if (out / n).exists()] + sorted(
        p.name for p in out.glob("member_*") if p.is_dir() and any(
            (p / n).exists() for n in _RUN_FILES)) if out.is_dir() else []
    if found and not overwrite:
        if resume and ((out / "checkpoint.pt").is_file() or any(
                (p / "checkpoint.pt").is_file() for p in out.glob("member_*"))):
            return
        raise OutputExistsError(f"output folder {str(out)!r} already holds a training run "
                                f"({', '.join(found)}); pass overwrite=True (--overwrite) to "
                                "replace it, or choose another folder.")
    if found and overwrite:
        import shutil

        for n in found:
            p = out / n
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        tb = out / "tensorboard"
        if tb.is_dir():
            shutil.rmtree(tb)
    out.mkdir(parents=True, exist_ok=True)
