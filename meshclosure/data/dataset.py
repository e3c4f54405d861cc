"""Subgrid datasets on disk (xarray/netCDF) and as a torch dataset of PyG graphs.

File layout (one netCDF-4 file, written atomically; DESIGN.md §5)
-----------------------------------------------------------------
Dimensions ``time``, ``cell`` (coarse cells), ``face`` (coarse interior
faces), ``boundary_face`` (only for bounded meshes). Data variables:

==============================  =======================  ==========================================
``state_<var>``                 (time, cell)             coarse state ``Q = restrict(q)``
``transport``                   (time, face)             coarse transport ``U_c`` (``scenario.coarse_transport``)
``sgs_flux_<var>``              (time, face)             ``Φ^sgs``, positive owner -> neighbour
``sgs_tendency_<var>``          (time, cell)             ``s^sgs`` (= ``−div(Φ^sgs, B^sgs)``)
``sgs_boundary_flux_<var>``     (time, boundary_face)    ``B^sgs`` (outward)
``input_<name>``                (time, cell)             resolved inputs (gradients, N, ...)
``split``                       (time,)                  0 train, 1 val, 2 test, 3 ood, 4 gap
==============================  =======================  ==========================================

The coarse mesh travels with the data twice: exactly (every
:class:`~meshclosure.mesh.Mesh` array as ``mesh_<field>``, so
:func:`mesh_from_dataset` rebuilds it bit for bit) and as UGRID-1.0
variables from :func:`meshclosure.io.to_ugrid_dataset` (dims ``n_face`` =
``cell``, ``n_edge`` = interior then boundary faces, ``n_node``), so the
file opens in uxarray. Attributes: ``scenario_config`` (JSON), ``seed``,
``versions`` (meshclosure, torch, numpy, xarray), ``created`` (UTC),
``split_boundaries``, ``normalization`` (from the training split only) and
``content_sha256`` of the data, checked on reading.

Samples are split by time into contiguous train / val / test blocks (no
time index in two splits; optionally ``gap`` samples set aside between
blocks, in no split); the out-of-distribution samples (``split == 3``)
come from a separate run of ``scenario.ood()``.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from .._files import atomic_path
from ..errors import MeshclosureError
from ..mesh import Mesh
from ..mesh._mesh import _INDEX_FIELDS
from .targets import SubgridSample

__all__ = ["DatasetError", "SPLITS", "FORMAT_VERSION", "split_boundaries", "build_dataset",
           "write_dataset", "read_dataset", "mesh_from_dataset", "check_compatible",
           "NormalizationStats", "SubgridDataset"]

SPLITS = ("train", "val", "test", "ood")
"""Split names; the ``split`` variable stores their index."""
FORMAT_VERSION = 1
"""Version of the file layout (attribute ``meshclosure_dataset``)."""

_MESH_DIMS = {
    "cell_center": ("cell", "coord"), "cell_volume": ("cell",),
    "face_cells": ("two", "face"), "face_normal": ("face", "coord"), "face_area": ("face",),
    "face_center": ("face", "coord"), "cell_distance": ("face",),
    "vertex_pos": ("vertex", "coord"), "face_vertices": ("two", "face"),
    "cell_vertices": ("cell", "max_cell_vertices"),
    "boundary_face_cell": ("boundary_face",), "boundary_face_vertices": ("two", "boundary_face"),
    "boundary_face_normal": ("boundary_face", "coord"),
    "boundary_face_area": ("boundary_face",), "boundary_face_center": ("boundary_face", "coord"),
    "boundary_face_tag": ("boundary_face",),
}


class DatasetError(MeshclosureError, ValueError):
    """A dataset file is missing, truncated, corrupt, or does not fit its use."""


# ------------------------------------------------------------------ splits
def split_boundaries(n: int, fractions: Sequence[float] = (0.7, 0.15, 0.15)) -> list[int]:
    """Contiguous train/val/test blocks of ``n`` time samples: ``[0, a, b, n]``.

    Split ``k`` is ``range(bounds[k], bounds[k + 1])``. With ``n >= 3`` and
    positive fractions every split gets at least one sample. (``build_dataset``
    may then set the first ``gap`` samples of the val and test blocks aside.)

    >>> split_boundaries(10)
    [0, 7, 9, 10]
    >>> split_boundaries(10, (0.5, 0.5))
    Traceback (most recent call last):
    ...
    ValueError: fractions must be three non-negative numbers (train, val, test) summing to 1; ...
    """
    f = tuple(float(x) for x in fractions)
    if len(f) != 3 or min(f) < 0 or abs(sum(f) - 1) > 1e-9:
        raise ValueError("fractions must be three non-negative numbers (train, val, test) summing "
                         f"to 1; got {tuple(fractions)}.")
    a = int(np.floor(f[0] * n + 0.5))
    b = int(np.floor((f[0] + f[1]) * n + 0.5))
    if n >= 3:   # keep every requested split non-empty
        a = min(max(a, 1 if f[0] > 0 else 0), n - (f[1] > 0) - (f[2] > 0))
        b = min(max(b, a + (1 if f[1] > 0 else 0)), n - (1 if f[2] > 0 else 0))
    return [0, a, max(a, min(b, n)), n]


# -------------------------------------------------------------- building
def _np(x: Tensor) -> np.ndarray:
    return x.detach().cpu().numpy()


def _stack(samples: Sequence[SubgridSample], get) -> np.ndarray:
    return np.stack([_np(get(s)) for s in samples]) if samples else np.zeros((0, 0))


def _versions() -> dict:
    import xarray

    from .. import __version__
    return {"meshclosure": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "xarray": xarray.__version__}


def _mesh_variables(mesh: Mesh) -> dict:
    g = mesh.double().to("cpu")
    out = {}
    for name, dims in _MESH_DIMS.items():
        out[f"mesh_{name}"] = (dims, _np(getattr(g, name)))
    return out


def content_hash(ds) -> str:
    """SHA-256 of the data variables and the time axis (names, shapes and bytes, sorted)."""
    h = hashlib.sha256()
    for name in sorted(n for n in ds.variables if _is_data(n)):
        a = np.ascontiguousarray(ds[name].values)
        a = a.astype(a.dtype.newbyteorder("<"))
        h.update(f"{name}:{a.dtype.str}:{a.shape};".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _is_data(name: str) -> bool:
    return name in ("time", "split", "transport") or name.startswith(
        ("state_", "sgs_", "input_", "mesh_"))


def build_dataset(samples: Sequence[SubgridSample], coarse: Mesh, *, config: Mapping[str, Any],
                  seed: int, ood_samples: Sequence[SubgridSample] = (),
                  ood_config: Optional[Mapping[str, Any]] = None,
                  fractions: Sequence[float] = (0.7, 0.15, 0.15), gap: int = 0,
                  attrs: Optional[Mapping[str, Any]] = None):
    """Collect subgrid samples into an ``xarray.Dataset`` (layout in the module docstring).

    Parameters
    ----------
    samples : sequence of SubgridSample
        The in-distribution run, in time order (split by time).
    coarse : Mesh
        The coarse mesh of the samples.
    config : dict
        Complete, JSON-serialisable scenario configuration.
    seed : int
    ood_samples : sequence of SubgridSample
        Samples of the out-of-distribution run (``split == 3``).
    ood_config : dict, optional
        Configuration of the out-of-distribution scenario.
    fractions : (train, val, test)
    gap : int
        Samples set aside (``split == 4``, in no split) at the start of the
        val and of the test block, so that the blocks are separated by
        ``gap + 1`` sample intervals: choose about the slowest correlation
        time of the inputs divided by the sample spacing to keep neighbouring
        blocks from sharing the same large-scale state.
    attrs : dict, optional
        Further global attributes (JSON-serialised when not a str/number).

    Returns
    -------
    xarray.Dataset
    """
    import xarray as xr

    if not samples:
        raise ValueError("samples is empty; generate at least 3 samples (train, val, test).")
    variables = samples[0].variables
    inputs = tuple(samples[0].inputs)
    everything = list(samples) + list(ood_samples)
    for s in everything:
        if s.variables != variables or tuple(s.inputs) != inputs:
            raise ValueError("all samples must have the same variables and inputs; got "
                             f"{s.variables}/{tuple(s.inputs)} and {variables}/{inputs}.")
    if isinstance(gap, bool) or not isinstance(gap, int) or gap < 0:
        raise ValueError(f"gap must be an integer >= 0 (samples set aside between splits); got "
                         f"{gap!r}.")
    bounds = split_boundaries(len(samples), fractions)
    split = np.concatenate([np.repeat(np.arange(3, dtype=np.int8), np.diff(bounds)),
                            np.full(len(ood_samples), 3, np.int8)])
    for start, end in zip(bounds[1:3], bounds[2:4]):      # val and test blocks
        split[start:min(start + gap, end - 1)] = 4        # keep one sample in each block
    ds = xr.Dataset(coords={"time": ("time", np.array([s.t for s in everything], np.float64),
                                     {"long_name": "model time of the fine run"})})
    ds["split"] = ("time", split, {"flag_values": np.arange(5, dtype=np.int8),
                                   "flag_meanings": " ".join(SPLITS + ("gap",))})
    ds["transport"] = (("time", "face"), _stack(everything, lambda s: s.transport),
                       {"long_name": "coarse integrated face transport U_c, owner -> neighbour"})
    for var in variables:
        ds[f"state_{var}"] = (("time", "cell"), _stack(everything, lambda s: s.state[var]),
                              {"long_name": f"coarse state restrict({var})"})
        ds[f"sgs_flux_{var}"] = (("time", "face"), _stack(everything, lambda s: s.flux[var]),
                                 {"long_name": f"subgrid face flux of {var}, owner -> neighbour"})
        ds[f"sgs_tendency_{var}"] = (("time", "cell"),
                                     _stack(everything, lambda s: s.tendency[var]),
                                     {"long_name": f"subgrid tendency of {var}"})
        if coarse.n_boundary_faces:
            ds[f"sgs_boundary_flux_{var}"] = (
                ("time", "boundary_face"), _stack(everything, lambda s: s.boundary_flux[var]),
                {"long_name": f"subgrid outward boundary flux of {var}"})
    for name in inputs:
        ds[f"input_{name}"] = (("time", "cell"), _stack(everything, lambda s: s.inputs[name]))
    for name, value in _mesh_variables(coarse).items():
        ds[name] = value
    if coarse.dim >= 2:
        from ..io import to_ugrid_dataset

        ugrid = to_ugrid_dataset(coarse)
        ds = ds.merge(ugrid, combine_attrs="override")   # keeps ds's (empty) attrs
        ds.attrs.update(ugrid.attrs)
    ds.attrs.update({
        "meshclosure_dataset": FORMAT_VERSION,
        "title": "meshclosure subgrid dataset: "
                 f"{config.get('scenario', config.get('name', 'scenario'))}",
        "variables": json.dumps(list(variables)), "inputs": json.dumps(list(inputs)),
        "scenario_config": json.dumps(dict(config), sort_keys=True),
        "ood_config": json.dumps(dict(ood_config or {}), sort_keys=True),
        "seed": int(seed), "versions": json.dumps(_versions()),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "split_fractions": json.dumps([float(x) for x in fractions]),
        "split_boundaries": json.dumps(bounds), "split_gap": gap, "n_ood": len(ood_samples),
        "mesh_radius": json.dumps(coarse.radius), "mesh_period": json.dumps(coarse.period),
        "mesh_boundary_tag_names": json.dumps(list(coarse.boundary_tag_names)),
        "mesh_info": json.dumps(coarse.info, sort_keys=True, default=str),
        "mesh_signature": json.dumps(coarse.signature(), sort_keys=True),
    })
    for k, v in (attrs or {}).items():
        ds.attrs[k] = v if isinstance(v, (str, int, float)) else json.dumps(v)
    ds.attrs["normalization"] = json.dumps(NormalizationStats.from_dataset(ds).to_dict())
    ds.attrs["content_sha256"] = content_hash(ds)
    return ds


# ------------------------------------------------------------- file I/O
def write_dataset(ds, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write a dataset to netCDF-4 atomically (temporary file, then rename).

    Raises
    ------
    FileExistsError
        ``path`` exists and ``overwrite`` is False (the file is left untouched).
    FileNotFoundError, PermissionError
        The folder is missing or not writable.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{str(path)!r} exists; pass overwrite=True (--overwrite) to "
                              "replace it, or choose another path.")
    encoding = {n: {"_FillValue": None} for n in ds.data_vars
                if ds[n].dtype.kind == "f" or not n.endswith("connectivity")}
    with atomic_path(path, ".nc") as tmp:
        ds.to_netcdf(tmp, format="NETCDF4", engine="netcdf4", encoding=encoding)
    return path


def read_dataset(path: str | os.PathLike, verify: bool = True):
    """Read a dataset written by :func:`write_dataset` into memory and check it.

    Checks that the file opens, is a meshclosure dataset of a known format
    version and, with ``verify``, that its data match ``content_sha256``.

    Raises
    ------
    DatasetError
        Missing, truncated or corrupt file; the message names the path and
        says how to regenerate it.
    """
    import xarray as xr

    path = Path(path)
    fix = ("Regenerate it with `meshclosure generate ... --out PATH --overwrite` (or "
           "meshclosure.data.generate(..., overwrite=True)).")
    if not path.is_file():
        raise DatasetError(f"dataset {str(path)!r} does not exist or is not a file; check the "
                           "path, or create it with `meshclosure generate`.")
    try:
        with xr.open_dataset(path, engine="netcdf4", mask_and_scale=False) as f:
            ds = f.load()
    except Exception as err:  # netCDF4/HDF5 raise OSError, RuntimeError, ValueError...
        raise DatasetError(f"dataset {str(path)!r} cannot be read ({type(err).__name__}: {err}); "
                           f"it is truncated or corrupt. {fix}") from err
    version = ds.attrs.get("meshclosure_dataset")
    if version is None:
        raise DatasetError(f"{str(path)!r} is a netCDF file but not a meshclosure dataset (no "
                           f"'meshclosure_dataset' attribute). {fix}")
    if int(version) != FORMAT_VERSION:
        raise DatasetError(f"dataset {str(path)!r} has format version {version}; this meshclosure "
                           f"reads version {FORMAT_VERSION}. {fix}")
    if verify and content_hash(ds) != ds.attrs.get("content_sha256"):
        raise DatasetError(f"dataset {str(path)!r} is corrupt: its data do not match the stored "
                           f"checksum (content_sha256). {fix}")
    ds.attrs["source_path"] = str(path)
    return ds


def mesh_from_dataset(ds) -> Mesh:
    """The coarse :class:`~meshclosure.mesh.Mesh` stored in a dataset (bit-identical, float64)."""
    arrays = {}
    for name in _MESH_DIMS:
        a = ds[f"mesh_{name}"].values
        dtype = torch.long if name in _INDEX_FIELDS else torch.float64
        arrays[name] = torch.as_tensor(np.ascontiguousarray(a), dtype=dtype)
    radius = json.loads(ds.attrs["mesh_radius"])
    period = json.loads(ds.attrs["mesh_period"])
    return Mesh(**arrays, boundary_tag_names=tuple(json.loads(ds.attrs["mesh_boundary_tag_names"])),
                radius=radius, period=tuple(period) if period is not None else None,
                info=json.loads(ds.attrs["mesh_info"]))


_SIZE_KEYS = ("family", "nside", "level", "dual", "nx", "ny", "nz", "n_cells", "n_faces",
              "total_volume", "lx", "ly", "periodic")


def check_compatible(dataset: Any, mesh_or_model: Any) -> None:
    """Raise :class:`DatasetError` unless the dataset's coarse mesh is ``mesh_or_model``'s mesh.

    Parameters
    ----------
    dataset : SubgridDataset, xarray.Dataset, or path
    mesh_or_model : Mesh, a model from :func:`meshclosure.nn.build_model` (it
        records the ``mesh_signature`` it was built for, and its registry
        families), or any object with a ``mesh`` attribute

    Compares family, resolution (nside, level, nx, ny...), cell and face
    counts and total area; for a registered model also that it supports the
    dataset's mesh family.
    """
    if isinstance(dataset, (str, os.PathLike)):
        dataset = read_dataset(dataset)
    ds = dataset.ds if isinstance(dataset, SubgridDataset) else dataset
    theirs = json.loads(ds.attrs["mesh_signature"])
    families = getattr(mesh_or_model, "families", None)
    if families and theirs.get("family") not in families:
        raise DatasetError(
            f"model {getattr(mesh_or_model, 'name', type(mesh_or_model).__name__)!r} supports "
            f"mesh families {tuple(families)}, but the dataset's coarse mesh is "
            f"{_short(theirs)}. Build a model for that family (meshclosure.nn.list_models("
            f"{theirs.get('family')!r})).")
    ours = getattr(mesh_or_model, "mesh_signature", None)
    if not isinstance(ours, Mapping):
        mesh = mesh_or_model if isinstance(mesh_or_model, Mesh) else getattr(
            mesh_or_model, "mesh", None)
        if not isinstance(mesh, Mesh):
            raise TypeError(f"mesh_or_model must be a Mesh, a model from build_model, or have a "
                            f".mesh attribute; got {type(mesh_or_model).__name__}.")
        ours = mesh.signature()
    diff = {k: (theirs[k], ours[k]) for k in _SIZE_KEYS if k in theirs and k in ours
            and theirs[k] != ours[k]}
    missing = [k for k in ("family", "n_cells", "n_faces") if k not in theirs or k not in ours]
    if diff or missing:
        where = ds.attrs.get("source_path", "the dataset")
        raise DatasetError(
            f"{where} was made on the coarse mesh {_short(theirs)}, but the model/mesh is "
            f"{_short(ours)} (differences, dataset vs mesh: {diff}). Build the model on "
            "mesh_from_dataset(ds) (or the same family and resolution), or generate a dataset "
            "on this mesh.")


def _short(sig: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={sig[k]}" for k in _SIZE_KEYS if k in sig)


# ------------------------------------------------------------- normalization
@dataclass
class NormalizationStats:
    """Per-feature shift and scale from the TRAINING split only.

    Inputs are standardised, ``(x − mean) / scale``; the components of a
    gradient (``grad_<var>_1``, ``grad_<var>_2``: a vector in the local frame)
    are only scaled, all by one scale (their joint RMS), so a rotation of the
    frame stays a rotation. Targets (face fluxes and
    tendencies) are only scaled by one ``flux_scale`` per variable, the RMS
    of ``Φ^sgs``; the same scale on ``s^sgs`` keeps ``s = −div(Φ)`` exact.
    ``transport_scale`` is the RMS of ``U_c`` (1 where it is zero).
    """

    input_names: list
    input_mean: list
    input_scale: list
    variables: list
    flux_scale: list
    transport_scale: float

    @staticmethod
    def from_dataset(ds) -> "NormalizationStats":
        train = np.asarray(ds["split"].values) == 0
        if not train.any():
            raise DatasetError("the dataset has no training samples (split == 0); generate at "
                               "least 3 samples.")
        variables = json.loads(ds.attrs["variables"]) if "variables" in ds.attrs else None
        if variables is None:
            variables = [n[len("state_"):] for n in ds.data_vars if n.startswith("state_")]
        names, mean, scale = [], [], []
        vector_rms: dict = {}          # one scale per vector: mean square over its components
        for name in _input_variables(ds, variables):
            if name.startswith("input_grad_"):
                stem = name.rsplit("_", 1)[0]
                parts = [n for n in ds.data_vars if n.rsplit("_", 1)[0] == stem
                         and n.startswith("input_grad_")]
                if stem not in vector_rms:
                    vector_rms[stem] = float(np.sqrt(np.mean(
                        [np.mean(ds[n].values[train].astype(np.float64) ** 2) for n in parts])))
                m, s = 0.0, vector_rms[stem]
            else:
                a = ds[name].values[train].astype(np.float64)
                m = float(a.mean())
                s = float(np.sqrt(np.mean((a - m) ** 2)))
            names.append(name)
            mean.append(m)
            scale.append(s if s > 0 else 1.0)
        fscale = []
        for var in variables:
            s = float(np.sqrt(np.mean(ds[f"sgs_flux_{var}"].values[train].astype(np.float64) ** 2)))
            fscale.append(s if s > 0 else 1.0)
        u = float(np.sqrt(np.mean(ds["transport"].values[train].astype(np.float64) ** 2)))
        return NormalizationStats(names, mean, scale, list(variables), fscale, u if u > 0 else 1.0)

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> "NormalizationStats":
        return NormalizationStats(**d)


def _input_variables(ds, variables) -> list:
    inputs = json.loads(ds.attrs["inputs"]) if "inputs" in ds.attrs else sorted(
        n[len("input_"):] for n in ds.data_vars if n.startswith("input_"))
    return [f"state_{v}" for v in variables] + [f"input_{n}" for n in inputs]


# ------------------------------------------------------------ torch dataset
class SubgridDataset(torch.utils.data.Dataset):
    """Time samples of one split as ``torch_geometric`` graphs of the coarse mesh.

    Parameters
    ----------
    source : path or xarray.Dataset
        A file from :func:`write_dataset` (read and checked) or a dataset.
    split : {"train", "val", "test", "ood", "all"}
    normalize : bool
        Apply the training-split :class:`NormalizationStats` (default).
    stats : NormalizationStats, optional
        Statistics to apply (default: the file's, computed from its training
        split when it was written; recomputed from the training split if
        missing).
    dtype : torch.dtype
        Floating dtype of the graphs (default float32).

    Each item is ``to_graph(mesh, x)`` (see :func:`meshclosure.graph.to_graph`) with

    * ``x (n_cells, n_inputs)``: state and resolved inputs, :attr:`input_names`;
    * ``y (n_faces, n_vars)``: subgrid face flux ``Φ^sgs`` per variable;
    * ``y_tendency (n_cells, n_vars)``: ``s^sgs``, ``= −div(y)`` (same scale);
    * ``y_boundary (n_boundary_faces, n_vars)``: ``B^sgs``;
    * ``face_transport (n_faces,)``: ``U_c``;
    * ``t`` and ``time_index`` (index along the file's time axis).

    Examples
    --------
    >>> SubgridDataset("missing.nc")
    Traceback (most recent call last):
    ...
    meshclosure.data.dataset.DatasetError: dataset 'missing.nc' does not exist or is not a file; ...
    """

    def __init__(self, source: Any, split: str = "train", normalize: bool = True,
                 stats: Optional[NormalizationStats] = None,
                 dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        if split not in SPLITS + ("all",):
            raise ValueError(f"split must be one of {SPLITS + ('all',)}; got {split!r}.")
        ds = read_dataset(source) if isinstance(source, (str, os.PathLike)) else source
        self.ds = ds
        self.split = split
        self.mesh = mesh_from_dataset(ds)
        self.variables = tuple(json.loads(ds.attrs["variables"]))
        self.config = json.loads(ds.attrs["scenario_config"])
        codes = np.asarray(ds["split"].values)
        self.indices = (np.arange(len(codes)) if split == "all"
                        else np.nonzero(codes == SPLITS.index(split))[0])
        if stats is None:
            stats = (NormalizationStats.from_dict(json.loads(ds.attrs["normalization"]))
                     if "normalization" in ds.attrs else NormalizationStats.from_dataset(ds))
        self.stats = stats
        self.normalize = normalize
        self.input_names = tuple(stats.input_names)
        self.dtype = dtype
        x = np.stack([ds[n].values for n in stats.input_names], -1)   # (time, cell, n_in)
        y = np.stack([ds[f"sgs_flux_{v}"].values for v in self.variables], -1)
        s = np.stack([ds[f"sgs_tendency_{v}"].values for v in self.variables], -1)
        has_b = all(f"sgs_boundary_flux_{v}" in ds for v in self.variables)
        b = (np.stack([ds[f"sgs_boundary_flux_{v}"].values for v in self.variables], -1) if has_b
             else np.zeros((len(codes), 0, len(self.variables))))
        u = ds["transport"].values
        if normalize:
            x = (x - np.asarray(stats.input_mean)) / np.asarray(stats.input_scale)
            fs = np.asarray(stats.flux_scale)
            y, s, b = y / fs, s / fs, b / fs
            u = u / stats.transport_scale
        t = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=dtype)  # noqa: E731
        self._x, self._y, self._s, self._b, self._u = t(x), t(y), t(s), t(b), t(u)
        self._times = np.asarray(ds["time"].values)
        self._graph = self.mesh.to(dtype=dtype).to_graph()

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for the {self.split!r} split of "
                             f"{len(self)} samples.")
        k = int(self.indices[i])
        g = self._graph.clone()
        g.x, g.y = self._x[k], self._y[k]
        g.y_tendency, g.y_boundary, g.face_transport = self._s[k], self._b[k], self._u[k]
        g.t = float(self._times[k])
        g.time_index = k
        g.feature_names = self.input_names
        return g

    def denormalize_flux(self, y: Tensor) -> Tensor:
        """Undo the target scaling: ``(n_faces, n_vars)`` normalised -> physical units."""
        if not self.normalize:
            return y
        return y * torch.as_tensor(self.stats.flux_scale, dtype=y.dtype, device=y.device)

    def __repr__(self) -> str:
        return (f"SubgridDataset({self.config.get('scenario', '?')}, split={self.split!r}, "
                f"n={len(self)}, variables={self.variables}, n_inputs={len(self.input_names)}, "
                f"mesh={self.mesh!r})")
