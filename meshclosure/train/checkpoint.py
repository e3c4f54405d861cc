"""Training checkpoints: everything a run needs to resume, as plain data loaded weights-only.

A training checkpoint (``DIR/checkpoint.pt``) is a ``torch.save`` file of
tensors, numbers and JSON text only — never pickled objects — read back with
``torch.load(..., weights_only=True)``, so opening one cannot run code. It
holds the model's weights, the EMA weights, the best weights so far, the
optimiser and scheduler states, the RNG states (torch's global generator
and the trainer's shuffling generator), the epoch reached, the metrics so
far, the :class:`~meshclosure.train.TrainConfig`, the mesh signature and the
package versions. Writes are atomic (temporary file, then rename), so an
interrupted write leaves the previous checkpoint intact.

File layout (``format = "meshclosure-training"``, ``version = 1``)::

    config, mesh_signature, versions, metrics, extra     JSON text
    epoch, updates, best_epoch, stale                    int
    best_loss                                            float
    model, ema, best                                     state dicts (tensors)
    optimizer, scheduler                                 state dicts (plain data)
    rng_torch, rng_shuffle                               ByteTensor

Examples
--------
>>> load_training_checkpoint("no_such_checkpoint.pt")
Traceback (most recent call last):
...
meshclosure.nn.checkpoint.CheckpointError: training checkpoint 'no_such_checkpoint.pt' does not exist or is not a file; ...
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

import torch

from .._files import atomic_path
from ..mesh import Mesh
from ..nn.checkpoint import CheckpointError, load_weights_only, mesh_mismatch

__all__ = ["save_training_checkpoint", "load_training_checkpoint", "TRAINING_FORMAT"]

TRAINING_FORMAT = "meshclosure-training"
_VERSION = 1


def save_training_checkpoint(path: str | os.PathLike, payload: Mapping[str, Any]) -> Path:
    """Write ``payload`` (plain data: tensors, numbers, strings, lists and dicts of them)
    atomically, stamped with the format, version and package versions."""
    from .. import __version__

    data: Dict[str, Any] = dict(payload)
    data.update(format=TRAINING_FORMAT, version=_VERSION,
                versions=json.dumps({"meshclosure": __version__, "torch": torch.__version__}))
    path = Path(path)
    with atomic_path(path, ".pt") as tmp:
        torch.save(data, tmp)
    return path


def load_training_checkpoint(path: str | os.PathLike, mesh: Optional[Mesh] = None
                             ) -> Dict[str, Any]:
    """Read a training checkpoint weights-only; refuse pickled objects, other formats and
    (with ``mesh``) a checkpoint made for another mesh.

    Raises
    ------
    CheckpointError
        With a message that says what is wrong and what to do.
    """
    path = Path(path)
    where = repr(str(path))
    if not path.is_file():
        raise CheckpointError(f"training checkpoint {where} does not exist or is not a file; "
                              "check the path (meshclosure train writes DIR/checkpoint.pt).")
    data = load_weights_only(path, "training checkpoint", "meshclosure checkpoints",
                              "remove it or train with --no-resume",
                              "Start the training afresh (meshclosure train --no-resume), or "
                              "remove the file.")
    if not isinstance(data, Mapping) or data.get("format") != TRAINING_FORMAT:
        raise CheckpointError(f"{where} is a torch file but not a meshclosure training "
                              "checkpoint; point --out at the folder of a meshclosure train run.")
    if int(data.get("version", 0)) != _VERSION:
        raise CheckpointError(f"{where} has training-checkpoint version {data.get('version')}; "
                              f"this meshclosure reads version {_VERSION}. Train afresh.")
    if mesh is not None:
        saved = json.loads(data["mesh_signature"])
        diff = mesh_mismatch(saved, mesh)
        if diff:
            raise CheckpointError(
                f"training checkpoint {where} was made for another mesh (differences, saved vs "
                f"given: {diff}); resume it with the dataset it was trained on, or train afresh "
                "in a new output folder (or with --no-resume).")
    return dict(data)
