"""Models that rebuild themselves: ``save_model`` / ``load_model``, weights only.

A saved model is a ``torch.save`` file of plain data: tensors, strings and
numbers, with every configuration as JSON text. :func:`load_model` reads it
with ``torch.load(..., weights_only=True)``, so a file cannot run code when
loaded (a file that holds pickled Python objects is refused), then rebuilds
the model with :func:`~meshclosure.nn.build_model` from its recorded name and
configuration on the mesh the caller gives, refuses a mesh other than the one
the model was built for, and loads the weights: the rebuilt model's outputs
are bit-identical. The :class:`~meshclosure.closures.FeaturePipeline` and
:class:`~meshclosure.closures.Normalizer` the model was trained with travel
in the same file.

File layout (``format = "meshclosure-model"``, ``version = 1``)::

    name, config, mesh_signature, versions   JSON text
    dtype                                     "float32" / "float64"
    state_dict                                the model's tensors
    features, normalizer                      JSON text of their configs ("" if none)
    extra                                     JSON text (the caller's metadata)
    operators                                 operator version of the training data
                                              (:mod:`meshclosure.fv.versions`; files
                                              without it predate versions: "fv1")

A model learns the subgrid flux left by one operator version's resolved flux,
from that version's gradients: :func:`load_model` given the ``operators`` of the
data it is to run on refuses a model of another version
(:class:`OperatorMismatchError`, naming both).

Examples
--------
>>> import os, tempfile, torch
>>> from meshclosure.mesh import healpix
>>> from meshclosure.nn import build_model
>>> mesh = healpix(1)
>>> model = build_model("mgn", mesh, in_features=2, hidden=8, n_blocks=1)
>>> with tempfile.TemporaryDirectory() as tmp:
...     _ = save_model(model, os.path.join(tmp, "m.pt"))
...     again = load_model(os.path.join(tmp, "m.pt"), mesh).model
>>> x = torch.randn(12, 2)
>>> torch.equal(model(mesh, x), again(mesh, x))
True
>>> load_model("no_such_model.pt", mesh)
Traceback (most recent call last):
...
meshclosure.nn.checkpoint.CheckpointError: model file 'no_such_model.pt' does not exist or is not a file; ...
"""
from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Optional

import torch

from .._files import atomic_path, refuse_existing
from ..errors import ArgumentError, MeshclosureError
from ..fv.versions import (OPERATOR_VERSIONS, OperatorVersionError, agree_operators,
                           check_operators)
from ..mesh import Mesh
from .registry import build_model

__all__ = ["save_model", "load_model", "LoadedModel", "CheckpointError",
           "OperatorMismatchError", "FORMAT", "mesh_mismatch"]

FORMAT = "meshclosure-model"
_VERSION = 1
_SIZE_KEYS = ("family", "nside", "level", "dual", "nx", "ny", "nz", "n_cells", "n_faces",
              "total_volume", "lx", "ly", "periodic")


class CheckpointError(MeshclosureError, ValueError):
    """A model file is missing, unsafe, corrupt, or does not fit the mesh it is loaded on."""


class OperatorMismatchError(CheckpointError, OperatorVersionError):
    """A model file was trained on data of another operator version than it is loaded for
    (both a :class:`CheckpointError` and an
    :class:`~meshclosure.fv.versions.OperatorVersionError`)."""


class LoadedModel(NamedTuple):
    """What :func:`load_model` returns."""

    model: torch.nn.Module
    features: Any          # FeaturePipeline or None
    normalizer: Any        # Normalizer or None
    extra: dict            # the caller's metadata saved with the model
    operators: str = "fv1"  # operator version of its training data ("fv1": saved before versions)

    def closure(self, mode: str = "mean", generator: Optional[torch.Generator] = None):
        """The model as a :class:`~meshclosure.closures.ModelClosure` (needs its features);
        a cell-tendency model (``nodewise``) as a
        :class:`~meshclosure.closures.tendency.TendencyClosure` (``mode="mean"`` only)."""
        from ..closures import ModelClosure
        from ..closures.tendency import TendencyClosure, is_tendency_model

        if self.features is None:
            raise CheckpointError("this model was saved without its FeaturePipeline; save it "
                                  "with save_model(model, path, features=..., normalizer=...) "
                                  "to run it as a closure.")
        if is_tendency_model(self.model):
            if mode != "mean":
                raise ArgumentError("mode", mode, "must be 'mean' for a cell-tendency model",
                                    "call closure() without mode")
            return TendencyClosure(self.model, self.features, self.normalizer)
        return ModelClosure(self.model, self.features, self.normalizer, mode=mode,
                            generator=generator)


def _short(sig: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={sig[k]}" for k in _SIZE_KEYS if k in sig)


def mesh_mismatch(saved: Mapping[str, Any], mesh: Mesh) -> dict:
    """``{key: (saved, mesh)}`` for every size key on which ``mesh`` differs from ``saved``."""
    ours = mesh.signature()
    return {k: (saved[k], ours[k]) for k in _SIZE_KEYS if k in saved and k in ours
            and saved[k] != ours[k]}


def save_model(model: torch.nn.Module, path: str | os.PathLike, features: Any = None,
               normalizer: Any = None, extra: Optional[Mapping[str, Any]] = None,
               overwrite: bool = False, operators: Optional[str] = None) -> Path:
    """Save a model built by :func:`build_model` (with its pipeline and normalizer), atomically.

    Parameters
    ----------
    model : torch.nn.Module
        From :func:`~meshclosure.nn.build_model` (it records its name, config and mesh).
    path : path-like
    features : FeaturePipeline, optional
    normalizer : Normalizer, optional
    extra : dict, optional
        JSON-serialisable metadata (training config, metrics...).
    overwrite : bool
        Replace an existing file (default: refuse, leaving it untouched).
    operators : str, optional
        Operator version of the training data (:mod:`meshclosure.fv.versions`).
        Default: ``features.operators``, else the current version. Recorded.

    Raises
    ------
    ArgumentError
        A model not built by :func:`build_model`, ``extra`` not JSON-serialisable,
        an unknown ``operators``, or ``operators`` other than ``features.operators``.
    OutputExistsError
        ``path`` exists and ``overwrite`` is False.
    """
    build = getattr(model, "build_config", None)
    if not isinstance(build, Mapping) or "name" not in build:
        raise ArgumentError("model", type(model).__name__, "was not built by build_model, so "
                            "it cannot be rebuilt from a file", "build it with "
                            "meshclosure.nn.build_model(name, mesh, **config)")
    try:
        extra_json = json.dumps(dict(extra or {}), sort_keys=True)
    except TypeError as err:
        raise ArgumentError("extra", extra, f"must be JSON-serialisable ({err})",
                            "pass numbers, strings, lists and dicts") from None
    ops = _save_operators(features, operators)
    path = refuse_existing(path, overwrite, name="path")
    params = [p for p in model.state_dict().values() if p.is_floating_point()]
    dtype = str(params[0].dtype).replace("torch.", "") if params else "float32"
    from .. import __version__

    payload = {
        "format": FORMAT, "version": _VERSION, "name": str(build["name"]),
        "config": json.dumps(build.get("config", {}), sort_keys=True),
        "mesh_signature": json.dumps(getattr(model, "mesh_signature", {}), sort_keys=True),
        "dtype": dtype,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "features": json.dumps(features.config(), sort_keys=True) if features is not None
        else "",
        "normalizer": json.dumps(normalizer.config(), sort_keys=True) if normalizer is not None
        else "",
        "extra": extra_json,
        "versions": json.dumps({"meshclosure": __version__, "torch": torch.__version__}),
        "operators": ops,
    }
    with atomic_path(path, ".pt") as tmp:
        torch.save(payload, tmp)
    return path


def _save_operators(features: Any, operators: Optional[str]) -> str:
    """The operator version :func:`save_model` records (see its ``operators``)."""
    return agree_operators(operators, getattr(features, "operators", None),
                           "the feature pipeline's operator version (that of the training data)")


def load_weights_only(path: Path, what: str, kind: str, fix: str, fix_pickled: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, its failures as
    :class:`CheckpointError` naming the file and the fix (model files and training
    checkpoints share this error handling).

    Parameters
    ----------
    path : Path
        An existing file.
    what : str
        The file's kind in messages, e.g. ``"model file"``.
    kind : str
        The files that hold only tensors, numbers and text, e.g.
        ``"meshclosure model files"``.
    fix, fix_pickled : str
        The end of the message for an unreadable file, and for a file holding
        pickled Python objects.

    Returns
    -------
    object
        What the file holds (tensors, numbers, text and containers of them).

    Raises
    ------
    CheckpointError
        Pickled objects (loading them could run code), or not a readable torch file.

    Examples
    --------
    >>> import tempfile
    >>> bad = Path(tempfile.mkdtemp()) / "bad.pt"
    >>> _ = bad.write_bytes(b"not a checkpoint")
    >>> load_weights_only(bad, "model file", "model files", "save it again", "")
    Traceback (most recent call last):
    ...
    meshclosure.nn.checkpoint.CheckpointError: model file '...bad.pt' cannot be read ...
    """
    where = repr(str(path))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "Unsupported global" not in str(err):       # not pickled objects: garbage
            raise CheckpointError(f"{what} {where} cannot be read (not a torch file, or "
                                  f"truncated); {fix}.") from None
        raise CheckpointError(
            f"{what} {where} holds Python objects that weights-only loading refuses (loading "
            f"them could run code); {kind} hold only tensors, numbers and text. "
            f"{fix_pickled}") from None
    except Exception as err:  # truncated zip, not a torch file...
        raise CheckpointError(f"{what} {where} cannot be read ({type(err).__name__}: {err}); "
                              f"it is truncated or not a torch file: {fix}.") from None


def load_model(path: str | os.PathLike, mesh: Mesh,
               device: Optional[torch.device | str] = None,
               operators: Optional[str] = None) -> LoadedModel:
    """Rebuild a model saved by :func:`save_model` on ``mesh`` (weights only; no code runs).

    Parameters
    ----------
    path : path-like
    mesh : Mesh
        The mesh the model was built for (for a dataset: ``mesh_from_dataset``).
    device : torch.device or str, optional
    operators : str, optional
        The operator version of the data or scenario the model is loaded for
        (``dataset.operators``, ``scenario.operators``). Given, a model trained
        on another version is refused. ``None``: not checked.

    Returns
    -------
    LoadedModel
        ``.operators`` is the model's version (``"fv1"`` for files saved
        before versions existed).

    Raises
    ------
    CheckpointError
        Missing, truncated or unsafe file (pickled objects), not a meshclosure model
        file, or a mesh other than the one the model was built for (the message names
        both meshes).
    OperatorMismatchError
        (a CheckpointError and an OperatorVersionError) ``operators`` differs from the
        model's version; the message names both.
    """
    wanted = None if operators is None else check_operators(operators)
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"model file {str(path)!r} does not exist or is not a file; "
                              "check the path, or save one with meshclosure.nn.save_model.")
    payload = load_weights_only(path, "model file", "meshclosure model files",
                                 "save it again with meshclosure.nn.save_model",
                                 "Re-save the model with meshclosure.nn.save_model, from a "
                                 "source you trust.")
    if not isinstance(payload, Mapping) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{str(path)!r} is a torch file but not a meshclosure model file "
                              f"(format {payload.get('format') if isinstance(payload, Mapping) else None!r}); "
                              "save models with meshclosure.nn.save_model.")
    if int(payload.get("version", 0)) != _VERSION:
        raise CheckpointError(f"{str(path)!r} has model-file version {payload.get('version')}; "
                              f"this meshclosure reads version {_VERSION}. Save it again.")
    saved = json.loads(payload["mesh_signature"])
    diff = mesh_mismatch(saved, mesh)
    if diff:
        raise CheckpointError(
            f"model {payload['name']!r} in {str(path)!r} was built for the mesh {_short(saved)}, "
            f"but load_model was given {_short(mesh.signature())} (differences, saved vs given: "
            f"{diff}). Load it on the mesh it was trained on (for a dataset: "
            "meshclosure.data.mesh_from_dataset), or train a model for this mesh.")
    saved_ops = str(payload.get("operators") or "fv1")        # no key: saved before versions
    if saved_ops not in OPERATOR_VERSIONS:
        raise CheckpointError(f"model {payload['name']!r} in {str(path)!r} was trained with "
                              f"operator version {saved_ops!r}, which this meshclosure does not "
                              f"know (it knows {tuple(OPERATOR_VERSIONS)}); load it with the "
                              "meshclosure version that saved it.")
    if wanted is not None and saved_ops != wanted:
        raise OperatorMismatchError(
            f"model {payload['name']!r} in {str(path)!r} was trained on data made with "
            f"operator version {saved_ops!r}, but it is loaded for {wanted!r} data (its "
            f"inputs would be other gradients and its target another resolved flux's "
            f"remainder). Use data made with the model's operators (generate with "
            f"operators={saved_ops!r}, or Scenario.from_config(..., operators={saved_ops!r})), "
            f"or retrain the model on the {wanted!r} data.")
    model = build_model(payload["name"], mesh, **json.loads(payload["config"]))
    model = model.to(dtype=getattr(torch, payload["dtype"]))
    model.load_state_dict(payload["state_dict"])
    features = normalizer = None
    if payload.get("features"):
        from ..closures import FeaturePipeline

        features = FeaturePipeline.from_config({"operators": saved_ops,
                                                **json.loads(payload["features"])})
    if payload.get("normalizer"):
        from ..closures import Normalizer

        normalizer = Normalizer(**json.loads(payload["normalizer"]))
    if device is not None:
        model = model.to(device)
        normalizer = normalizer.to(device) if normalizer is not None else None
    return LoadedModel(model, features, normalizer, json.loads(payload.get("extra") or "{}"),
                       saved_ops)
