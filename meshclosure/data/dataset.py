"""Subgrid datasets on disk (netCDF-4 or zarr, read lazily) and as a torch dataset of PyG graphs.

File layout, version 2 (DESIGN.md §5)
-------------------------------------
Data variables live on the UGRID dimensions of the coarse mesh, so plain
xarray aligns them with ``face_areas``, ``face_lon``/``face_lat`` (sphere) or
``mesh_face_x``/``mesh_face_y`` (plane) and uxarray's grid without renaming:
``n_face`` (our cells), ``n_edge`` (our faces: the interior faces first, then
the boundary faces, as :func:`meshclosure.io.to_ugrid_dataset` numbers them).

=============================  ======================  ==========================================
``state_<var>``                (run, time, n_face)     coarse state ``Q = restrict(q)``
``transport``                  (run, time, n_edge)     coarse transport ``U_c``, owner -> neighbour;
                                                       0 on boundary edges (no flow)
``sgs_flux_<var>``             (run, time, n_edge)     ``Φ^sgs`` owner -> neighbour on interior
                                                       edges, then ``B^sgs`` outward
``sgs_tendency_<var>``         (run, time, n_face)     ``s^sgs`` (= ``−div(Φ^sgs, B^sgs)``)
``input_<name>``               (run, time, n_face)     resolved inputs (gradients, N, ...)
``split``                      (run, time)             -1 absent, 0 train, 1 val, 2 test,
                                                       3 ood, 4 gap
``model_time``                 (run, time)             model time of each sample
``sample_checksum``            (run, time)             64-bit SHA-256 prefix of the sample's data
``run_start_time``             (run,)                  model time of the run's first sample
``run_dt``, ``run_every``      (run,)                  fine step and fine steps between samples
=============================  ======================  ==========================================

* ``run`` 0 is the main run (split by time into train / val / test blocks,
  optionally with ``gap`` samples set aside between them, code 4), run 1 the
  out-of-distribution run (all code 3). Runs never share a time axis.
* ``time`` is the time since the run's first sample (identical for all
  runs when they share the sample interval ``every · dt``; the OOD run's
  ``every`` is chosen so that it does to within one fine step, and
  ``model_time`` is exact). It increases strictly along each run.
* A run shorter than the longest is padded at its end: ``split == -1``
  ("absent"), data NaN (the CF ``_FillValue``, which xarray masks); no
  reader here ever returns a padded sample.
* Every variable has CF ``units`` and ``long_name``. The scenarios are
  nondimensional (unit square or unit sphere, time in the scenario's time
  unit), so units are ``"1"``; the global attribute ``unit_system`` says so.
  No CF ``standard_name`` exists for these nondimensional quantities
  (lon/lat carry theirs).

The coarse mesh travels with the data twice: exactly (every
:class:`~meshclosure.mesh.Mesh` array as ``mesh_<field>`` on its own
dimensions, ``n_face``, ``n_interior_edge``, ``n_boundary_edge``,
``n_mesh_vertex``, ``n_mesh_coord``, ``n_mesh_cell_vertices``, ``two``, so
:func:`mesh_from_dataset` rebuilds it bit for bit) and as UGRID-1.0
variables (:func:`meshclosure.io.to_ugrid_dataset`), so the file opens in
uxarray. Attributes: ``scenario_config`` (JSON), ``seed``, ``versions``,
``created`` (UTC), ``split_boundaries``, ``normalization`` (training split
only), ``static_sha256`` (every variable that is not per sample, including
``sample_checksum``) and the per-sample ``sample_checksum``: together an
integrity check that :func:`read_dataset` verifies in one streaming pass and
:class:`SubgridDataset` per sample it reads.

Storage: netCDF-4 (one file) or zarr (a folder store, ``.zarr``), both
chunked along ``time`` and written atomically; :func:`read_dataset` opens
either lazily (dask arrays per chunk, or lazily indexed arrays), so a
dataset larger than memory can be inspected and trained on.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from .._files import check_folder, refuse_existing
from ..errors import ArgumentError, MeshclosureError
from ..mesh import Mesh
from ..mesh._mesh import _INDEX_FIELDS
from .targets import SubgridSample

__all__ = ["DatasetError", "SPLITS", "SPLIT_CODES", "FORMAT_VERSION", "FORMATS",
           "split_boundaries", "max_gap", "check_split_arguments", "build_dataset",
           "write_dataset", "read_dataset", "dataset_format", "mesh_from_dataset",
           "check_compatible", "NormalizationStats", "SubgridDataset"]

SPLITS = ("train", "val", "test", "ood")
"""Split names; the ``split`` variable stores their index."""
SPLIT_CODES = {"absent": -1, "train": 0, "val": 1, "test": 2, "ood": 3, "gap": 4}
"""Every code of the ``split`` variable (CF ``flag_values`` / ``flag_meanings``)."""
FORMAT_VERSION = 2
"""Version of the file layout (attribute ``meshclosure_dataset``)."""
FORMATS = ("netcdf", "zarr")
"""Storage formats of :func:`write_dataset`."""
MIN_BLOCK = 2
"""Samples the val and the test block each keep when a ``gap`` is set aside."""

_DIM = {"cell": "n_face", "face": "n_interior_edge", "boundary_face": "n_boundary_edge",
        "vertex": "n_mesh_vertex", "coord": "n_mesh_coord", "two": "two",
        "max_cell_vertices": "n_mesh_cell_vertices"}
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
_MESH_LONG_NAMES = {
    "cell_center": "coarse cell centre", "cell_volume": "coarse cell area (exact)",
    "face_cells": "owner (row 0) and neighbour (row 1) cell of each interior face",
    "face_normal": "unit normal of each interior face, owner -> neighbour",
    "face_area": "length of each interior face", "face_center": "centre of each interior face",
    "cell_distance": "owner-to-neighbour centre distance of each interior face",
    "vertex_pos": "mesh vertex position", "face_vertices": "end vertices of each interior face",
    "cell_vertices": "vertices of each cell, counter-clockwise, padded with -1",
    "boundary_face_cell": "cell of each boundary face",
    "boundary_face_vertices": "end vertices of each boundary face",
    "boundary_face_normal": "outward unit normal of each boundary face",
    "boundary_face_area": "length of each boundary face",
    "boundary_face_center": "centre of each boundary face",
    "boundary_face_tag": "boundary tag of each boundary face (see mesh_boundary_tag_names)",
}
_UGRID_LONG_NAMES = {
    "face_areas": "coarse cell area (exact, as mesh_cell_volume)",
    "edge_length": "face length: interior edges, then boundary edges",
    "edge_normal": "unit normal of each edge, edge_face_connectivity[:, 0] -> [:, 1] "
                   "(outward on boundary edges)",
    "edge_cell_distance": "owner-to-neighbour centre distance (0 on boundary edges)",
    "edge_boundary_tag": "boundary tag of each edge (-1 interior)",
    "mesh": "UGRID mesh topology", "face_node_connectivity": "nodes of each face (cell)",
    "edge_node_connectivity": "nodes of each edge", "edge_face_connectivity":
        "faces (cells) on each side of each edge, owner first; -1 outside the domain",
}
_NONDIM = "1"
_UNIT_SYSTEM = ("nondimensional: the scenarios are written in nondimensional units (unit "
                "square or unit sphere, time in the scenario's own time unit); units '1' "
                "mark nondimensional quantities")
_REGENERATE = ("Regenerate it with `meshclosure generate ... --out PATH --overwrite` (or "
               "meshclosure.data.generate(..., overwrite=True)).")


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
    meshclosure.errors.ArgumentError: fractions=(0.5, 0.5): must be three non-negative numbers ...
    """
    _check_fractions(fractions)
    f = tuple(float(x) for x in fractions)
    a = int(np.floor(f[0] * n + 0.5))
    b = int(np.floor((f[0] + f[1]) * n + 0.5))
    if n >= 3:   # keep every requested split non-empty
        a = min(max(a, 1 if f[0] > 0 else 0), n - (f[1] > 0) - (f[2] > 0))
        b = min(max(b, a + (1 if f[1] > 0 else 0)), n - (1 if f[2] > 0 else 0))
    return [0, a, max(a, min(b, n)), n]


def _check_fractions(fractions: Any) -> None:
    try:
        f = tuple(float(x) for x in fractions)
    except (TypeError, ValueError):
        f = ()
    if len(f) != 3 or not all(np.isfinite(f)) or min(f) < 0 or abs(sum(f) - 1) > 1e-9 \
            or f[0] <= 0:
        raise ArgumentError("fractions", tuple(fractions) if isinstance(fractions, (list, tuple))
                            else fractions,
                            "must be three non-negative numbers (train, val, test) summing to 1, "
                            "with a positive train fraction",
                            "pass e.g. {fractions}=(0.7, 0.15, 0.15)")


def max_gap(n: int, fractions: Sequence[float] = (0.7, 0.15, 0.15)) -> int:
    """Largest ``gap`` that leaves :data:`MIN_BLOCK` samples in the val and the test block.

    ``0`` when the blocks of ``n`` samples are too small for any gap (a gap of
    0 is always allowed).

    >>> max_gap(20), max_gap(40), max_gap(5)
    (1, 4, 0)
    """
    bounds = split_boundaries(n, fractions)
    sizes = [bounds[k + 1] - bounds[k] for k in (1, 2) if float(fractions[k]) > 0]
    return max(0, min(sizes, default=n) - MIN_BLOCK)


def check_split_arguments(n_samples: Any, fractions: Any, gap: Any) -> None:
    """Raise :class:`~meshclosure.errors.ArgumentError` unless ``fractions`` and ``gap`` fit
    ``n_samples`` (``n_samples`` itself checked by the caller).

    ``gap`` must be an integer >= 0 and, when positive, leave at least
    :data:`MIN_BLOCK` samples in each of the val and test blocks; the message
    gives the largest allowed gap and the fewest samples that allow ``gap``.

    >>> check_split_arguments(20, (0.7, 0.15, 0.15), 2)
    Traceback (most recent call last):
    ...
    meshclosure.errors.ArgumentError: gap=2: ... the largest gap for 20 samples is 1; pass ...
    """
    _check_fractions(fractions)
    if isinstance(gap, bool) or not isinstance(gap, (int, np.integer)) or gap < 0:
        raise ArgumentError("gap", gap, "must be an integer >= 0 (samples set aside at the start "
                            "of the val and of the test block)", "pass e.g. {gap}=1, or 0")
    if gap == 0:
        return
    limit = max_gap(n_samples, fractions)
    if gap > limit:
        need = n_samples + 1
        while max_gap(need, fractions) < gap and need < n_samples + 10**6:
            need += 1
        bounds = split_boundaries(n_samples, fractions)
        raise ArgumentError(
            "gap", int(gap),
            f"must leave at least {MIN_BLOCK} samples in each of the val and test blocks "
            f"(of {bounds[2] - bounds[1]} and {bounds[3] - bounds[2]} samples with fractions "
            f"{tuple(float(x) for x in fractions)}); the largest gap for "
            f"{n_samples} samples is {limit}",
            f"pass {{gap}} <= {limit}, or {{n_samples}} >= {need} to keep {{gap}}={gap}")


# -------------------------------------------------------------- building
def _np(x: Tensor) -> np.ndarray:
    return x.detach().cpu().numpy()


def _versions() -> dict:
    import xarray

    from .. import __version__
    return {"meshclosure": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "xarray": xarray.__version__}


def _mesh_variables(mesh: Mesh) -> dict:
    g = mesh.double().to("cpu")
    out = {}
    for name, dims in _MESH_DIMS.items():
        a = _np(getattr(g, name))
        attrs = {"long_name": f"exact coarse mesh: {_MESH_LONG_NAMES[name]}"}
        if a.dtype.kind == "f":
            attrs["units"] = _NONDIM
        out[f"mesh_{name}"] = (tuple(_DIM[d] for d in dims), a, attrs)
    return out


def _is_sample_variable(ds, name: str) -> bool:
    """A per-sample data variable: dims ``(run, time, X)``."""
    return ds[name].dims[:2] == ("run", "time") and ds[name].ndim == 3


def sample_variables(ds) -> list:
    """Names of the per-sample variables ``(run, time, X)``, sorted (the checksum order)."""
    return sorted(n for n in ds.data_vars if _is_sample_variable(ds, n))


def _digest(arrays: Mapping[str, np.ndarray]) -> np.uint64:
    """First 8 bytes of the SHA-256 of one sample's arrays (names, dtypes, shapes, bytes)."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        a = a.astype(a.dtype.newbyteorder("<"), copy=False)
        h.update(f"{name}:{a.dtype.str}:{a.shape};".encode())
        h.update(a.tobytes())
    return np.frombuffer(h.digest()[:8], dtype="<u8")[0]


def static_hash(ds) -> str:
    """SHA-256 of every variable that is not per sample (mesh, split, times, checksums...)."""
    h = hashlib.sha256()
    for name in sorted(str(n) for n in ds.variables):
        if name in ds.data_vars and _is_sample_variable(ds, name):
            continue
        a = np.asarray(ds[name].values)
        if a.dtype.kind in "OUS":
            a = np.asarray([str(x) for x in a.ravel()], dtype="U").reshape(a.shape)
        a = np.ascontiguousarray(a)
        a = a.astype(a.dtype.newbyteorder("<"), copy=False) if a.dtype.kind != "U" else a
        h.update(f"{name}:{a.dtype.str}:{a.shape};".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _pad(runs: Sequence[Sequence[SubgridSample]], get, n_time: int) -> np.ndarray:
    first = next(_np(get(s)) for r in runs for s in r)
    out = np.full((len(runs), n_time) + first.shape, np.nan, dtype=first.dtype)
    for r, samples in enumerate(runs):
        for k, s in enumerate(samples):
            out[r, k] = _np(get(s))
    return out


def _edge(coarse: Mesh, interior: Tensor, boundary: Optional[Tensor]) -> Tensor:
    """Interior-face values then boundary-face values: one value per UGRID edge."""
    if not coarse.n_boundary_faces:
        return interior
    b = boundary if boundary is not None else interior.new_zeros(coarse.n_boundary_faces)
    return torch.cat([interior, b.to(interior.dtype)])


def build_dataset(samples: Sequence[SubgridSample], coarse: Mesh, *, config: Mapping[str, Any],
                  seed: int, ood_samples: Sequence[SubgridSample] = (),
                  ood_config: Optional[Mapping[str, Any]] = None,
                  fractions: Sequence[float] = (0.7, 0.15, 0.15), gap: int = 0,
                  attrs: Optional[Mapping[str, Any]] = None,
                  run_dt: Optional[Sequence[float]] = None,
                  run_every: Optional[Sequence[int]] = None):
    """Collect subgrid samples into an ``xarray.Dataset`` (layout in the module docstring).

    Parameters
    ----------
    samples : sequence of SubgridSample
        The main run (run 0), in time order (split by time).
    coarse : Mesh
        The coarse mesh of the samples.
    config : dict
        Complete, JSON-serialisable scenario configuration.
    seed : int
    ood_samples : sequence of SubgridSample
        The out-of-distribution run (run 1, ``split == 3``); none: one run only.
    ood_config : dict, optional
        Configuration of the out-of-distribution scenario.
    fractions : (train, val, test)
    gap : int
        Samples set aside (``split == 4``, in no split) at the start of the
        val and of the test block, so that the blocks are separated by
        ``gap + 1`` sample intervals: choose about the slowest correlation
        time of the inputs divided by the sample spacing to keep neighbouring
        blocks from sharing the same large-scale state. Each block keeps at
        least :data:`MIN_BLOCK` samples, else :class:`~meshclosure.errors.ArgumentError`.
    attrs : dict, optional
        Further global attributes (JSON-serialised when not a str/number).
    run_dt, run_every : sequence, one per run, optional
        Fine time step and fine steps between samples of each run (recorded
        as ``run_dt``/``run_every``; NaN / -1 when not given).

    Returns
    -------
    xarray.Dataset
        In memory (numpy arrays); write it with :func:`write_dataset`.

    Raises
    ------
    ArgumentError
        Bad ``fractions`` or ``gap``.
    DatasetError
        Samples that differ in variables or inputs, non-monotonic times, or
        non-finite values (never written silently).
    """
    import xarray as xr

    if len(samples) < 3:
        raise ArgumentError("n_samples", len(samples), "must be an integer >= 3 (train, val and "
                            "test each get a block)", "generate at least 3 samples")
    check_split_arguments(len(samples), fractions, gap)
    runs = [list(samples)] + ([list(ood_samples)] if len(ood_samples) else [])
    variables = samples[0].variables
    inputs = tuple(samples[0].inputs)
    for r, run in enumerate(runs):
        for k, s in enumerate(run):
            if s.variables != variables or tuple(s.inputs) != inputs:
                raise DatasetError(f"all samples must have the same variables and inputs; run {r} "
                                   f"sample {k} has {s.variables}/{tuple(s.inputs)}, the first "
                                   f"{variables}/{inputs}.")
        times = np.array([s.t for s in run], np.float64)
        if len(times) > 1 and not np.all(np.diff(times) > 0):
            raise DatasetError(f"the times of run {r} must increase strictly; got {times.tolist()}"
                               ". Pass each run's samples in time order.")
    n_runs, n_time = len(runs), max(len(r) for r in runs)
    bounds = split_boundaries(len(samples), fractions)
    split = np.full((n_runs, n_time), SPLIT_CODES["absent"], np.int8)
    split[0, :len(samples)] = np.repeat(np.arange(3, dtype=np.int8), np.diff(bounds))
    for start in bounds[1:3]:                               # val and test blocks
        split[0, start:start + gap] = SPLIT_CODES["gap"]
    if n_runs > 1:
        split[1, :len(runs[1])] = SPLIT_CODES["ood"]
    model_time = np.full((n_runs, n_time), np.nan)
    for r, run in enumerate(runs):
        model_time[r, :len(run)] = [s.t for s in run]
    start_time = model_time[:, 0].copy()
    offsets = model_time[0] - start_time[0]

    unit = {"units": _NONDIM}
    ds = xr.Dataset(coords={
        "run": ("run", np.arange(n_runs, dtype=np.int32),
                {"long_name": "run index: 0 main run, 1 out-of-distribution run",
                 "flag_values": np.arange(2, dtype=np.int32), "flag_meanings": "main ood"}),
        "time": ("time", offsets, {**unit, "axis": "T", "long_name": (
            "time since the run's first sample (nondimensional model time; exact per run in "
            "model_time - run_start_time)")}),
    })
    ds["model_time"] = (("run", "time"), model_time, {**unit, "long_name": (
        "model time of the sample, from the start of the run's spin-up (NaN: absent)")})
    ds = ds.set_coords("model_time")
    ds["run_start_time"] = ("run", start_time, {**unit, "long_name": "model time of the run's "
                                                 "first sample"})
    ds["run_dt"] = ("run", np.asarray(run_dt if run_dt is not None else [np.nan] * n_runs,
                                      np.float64), {**unit, "long_name": "fine time step"})
    ds["run_every"] = ("run", np.asarray(run_every if run_every is not None else [-1] * n_runs,
                                         np.int64),
                       {"units": _NONDIM, "long_name": "fine time steps between samples "
                                                       "(-1: not recorded)"})
    ds["split"] = (("run", "time"), split, {
        "long_name": "split of each sample; absent samples are padding (data NaN)",
        "flag_values": np.array(sorted(SPLIT_CODES.values()), np.int8),
        "flag_meanings": " ".join(sorted(SPLIT_CODES, key=SPLIT_CODES.get))})
    cell, edge = ("run", "time", "n_face"), ("run", "time", "n_edge")
    ds["transport"] = (edge, _pad(runs, lambda s: _edge(coarse, s.transport, None), n_time),
                       {**unit, "long_name": "coarse integrated face transport U_c: interior "
                        "edges owner -> neighbour, then 0 on boundary edges (no normal flow)"})
    for var in variables:
        ds[f"state_{var}"] = (cell, _pad(runs, lambda s: s.state[var], n_time),
                              {**unit, "long_name": f"coarse-cell mean of {var} (restrict({var}))"})
        ds[f"sgs_flux_{var}"] = (
            edge, _pad(runs, lambda s: _edge(coarse, s.flux[var], s.boundary_flux.get(var)),
                       n_time),
            {**unit, "long_name": f"subgrid flux of {var} integrated over each face: interior "
             "edges owner -> neighbour (edge_face_connectivity[:, 0] -> [:, 1]), then boundary "
             "edges outward"})
        ds[f"sgs_tendency_{var}"] = (cell, _pad(runs, lambda s: s.tendency[var], n_time),
                                     {**unit, "long_name": f"subgrid tendency of {var}, "
                                      f"-div(sgs_flux_{var})"})
    for name in inputs:
        ds[f"input_{name}"] = (cell, _pad(runs, lambda s: s.inputs[name], n_time),
                               {**unit, "long_name": f"resolved input {name} (coarse cells)"})
    present = split >= 0
    for name in sample_variables(ds):
        if not np.isfinite(ds[name].values[present]).all():
            bad = np.argwhere(~np.isfinite(ds[name].values).reshape(n_runs, n_time, -1).all(-1)
                              & present)
            raise DatasetError(f"{name} holds non-finite values (run, time index: "
                               f"{bad[:5].tolist()}); a dataset never stores NaN or inf silently."
                               " Check the scenario's time step and spin-up.")
    for name, value in _mesh_variables(coarse).items():
        ds[name] = value
    if coarse.dim >= 2:
        from ..io import to_ugrid_dataset

        ugrid = to_ugrid_dataset(coarse)
        ds = ds.merge(ugrid, combine_attrs="override")   # keeps ds's (empty) attrs
        ds.attrs.update(ugrid.attrs)
    _fill_cf_attributes(ds)
    ds.attrs.update({
        "meshclosure_dataset": FORMAT_VERSION,
        "title": "meshclosure subgrid dataset: "
                 f"{config.get('scenario', config.get('name', 'scenario'))}",
        "unit_system": _UNIT_SYSTEM,
        "variables": json.dumps(list(variables)), "inputs": json.dumps(list(inputs)),
        "scenario_config": json.dumps(dict(config), sort_keys=True),
        "ood_config": json.dumps(dict(ood_config or {}), sort_keys=True),
        "seed": int(seed), "versions": json.dumps(_versions()),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "split_fractions": json.dumps([float(x) for x in fractions]),
        "split_boundaries": json.dumps(bounds), "split_gap": int(gap),
        "n_samples": len(samples), "n_ood": len(ood_samples),
        "mesh_radius": json.dumps(coarse.radius), "mesh_period": json.dumps(coarse.period),
        "mesh_boundary_tag_names": json.dumps(list(coarse.boundary_tag_names)),
        "mesh_info": json.dumps(coarse.info, sort_keys=True, default=str),
        "mesh_signature": json.dumps(coarse.signature(), sort_keys=True),
    })
    for k, v in (attrs or {}).items():
        ds.attrs[k] = v if isinstance(v, (str, int, float)) else json.dumps(v)
    ds.attrs["normalization"] = json.dumps(NormalizationStats.from_dataset(ds).to_dict())
    names = sample_variables(ds)
    arrays = {n: ds[n].values for n in names}
    checksum = np.array([[_digest({n: arrays[n][r, k] for n in names}) for k in range(n_time)]
                         for r in range(n_runs)], dtype=np.uint64)
    ds["sample_checksum"] = (("run", "time"), checksum, {
        "long_name": "first 8 bytes (little-endian uint64) of the SHA-256 of the sample's data "
                     "variables (sorted names, dtype, shape, little-endian bytes)"})
    ds.attrs["static_sha256"] = static_hash(ds)
    return ds


def _fill_cf_attributes(ds) -> None:
    """Give every variable a ``long_name``, and every float variable ``units``."""
    for name, v in ds.variables.items():
        if "long_name" not in v.attrs:
            v.attrs["long_name"] = _UGRID_LONG_NAMES.get(str(name), str(name).replace("_", " "))
        if v.dtype.kind == "f" and "units" not in v.attrs:
            v.attrs["units"] = _NONDIM


# ------------------------------------------------------------- file I/O
def dataset_format(path: str | os.PathLike, format: Optional[str] = None) -> str:
    """The storage format for ``path``: ``format`` if given, else ``"zarr"`` for a ``.zarr``
    name and ``"netcdf"`` otherwise.

    >>> dataset_format("run.zarr"), dataset_format("run.nc")
    ('zarr', 'netcdf')
    >>> dataset_format("run.nc", format="zarr")
    Traceback (most recent call last):
    ...
    meshclosure.errors.ArgumentError: format='zarr': ... name the store with a .zarr suffix ...
    """
    name = Path(path).name
    is_zarr = name.endswith(".zarr")
    if format is None:
        return "zarr" if is_zarr else "netcdf"
    if format not in FORMATS:
        raise ArgumentError("format", format, f"must be one of {FORMATS} (or None: from the "
                            "suffix of {out}, .zarr for zarr)", "pass {format}='netcdf' or 'zarr'")
    if (format == "zarr") != is_zarr:
        raise ArgumentError("format", format, f"does not match out={name!r}: a zarr store is "
                            "a folder named *.zarr, a netCDF file is not",
                            "name the store with a .zarr suffix for zarr, or use .nc for netCDF, "
                            "or leave {format} out to follow the suffix")
    return format


def _is_zarr_store(path: Path) -> bool:
    return path.is_dir() and any((path / m).is_file() for m in ("zarr.json", ".zgroup",
                                                                 ".zmetadata"))


def default_chunk_time(ds, target_bytes: int = 4 * 2**20) -> int:
    """Samples per chunk along ``time``: one sample per chunk, or a few small ones up to
    about ``target_bytes`` per chunk of the largest variable (at most 16)."""
    names = sample_variables(ds)
    per = max((ds[n].dtype.itemsize * ds[n].shape[2] for n in names), default=1)
    return int(max(1, min(16, target_bytes // max(per, 1), ds.sizes["time"])))


def _for_writing(ds):
    """A shallow copy without the encoding and storage attributes of an earlier read
    (``_FillValue``, ``coordinates``), so a dataset read back can be written again."""
    ds = ds.copy()
    for v in ds.variables.values():
        v.attrs = {k: a for k, a in v.attrs.items() if k not in ("_FillValue", "coordinates")}
        v.encoding = {}
    return ds


def _encoding(ds, format: str, chunk_time: int) -> dict:
    enc: Dict[str, dict] = {}
    key = "chunks" if format == "zarr" else "chunksizes"
    for name, v in ds.variables.items():
        e: Dict[str, Any] = {}
        if name.endswith("connectivity"):
            enc[str(name)] = {"_FillValue": -1}     # UGRID: -1 pads short faces
            continue
        if name in ds.data_vars and _is_sample_variable(ds, name):
            e = {"_FillValue": np.nan, key: (1, chunk_time, v.shape[2])}
            if format == "netcdf":
                e["zlib"] = False
        elif v.dtype.kind == "f" and name != "model_time":
            e = {"_FillValue": None}
        elif name == "model_time":
            e = {"_FillValue": np.nan}
        elif v.dtype.kind in "iu" and name in ds.data_vars:
            e = {"_FillValue": None}
        if e:
            enc[str(name)] = e
    return enc


def write_dataset(ds, path: str | os.PathLike, overwrite: bool = False,
                  format: Optional[str] = None, chunk_time: Optional[int] = None) -> Path:
    """Write a dataset to netCDF-4 or zarr atomically, chunked along ``time``.

    Parameters
    ----------
    ds : xarray.Dataset
        From :func:`build_dataset`.
    path : path-like
        A ``.nc`` file or a ``.zarr`` store (a folder).
    overwrite : bool
        Replace an existing file/store (the old one stays until the new one is complete).
    format : {"netcdf", "zarr"}, optional
        Default from the suffix (see :func:`dataset_format`).
    chunk_time : int, optional
        Samples per chunk along ``time`` (default :func:`default_chunk_time`).

    The data go to a temporary name next to ``path`` (a file, or a folder for
    zarr) and are renamed onto ``path`` only when complete: a reader never
    sees a half-written dataset, and a failure leaves an existing one untouched.

    Raises
    ------
    OutputExistsError
        ``path`` exists and ``overwrite`` is False (left untouched).
    ArgumentError
        ``format`` unknown or not matching the suffix.
    FileNotFoundError, PermissionError, IsADirectoryError
        The folder is missing or not writable; ``path`` is a folder that is not a zarr store.
    """
    path = Path(path)
    format = dataset_format(path, format)
    folder = check_folder(path, "path")
    if path.is_dir() and not _is_zarr_store(path):
        raise IsADirectoryError(f"path={str(path)!r} is a folder that is not a zarr store; "
                                "refusing to replace it. Choose another path.")
    refuse_existing(path, overwrite, name="path")
    ds = _for_writing(ds)
    chunk_time = int(chunk_time or default_chunk_time(ds))
    encoding = _encoding(ds, format, chunk_time)
    if format == "netcdf":
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp.nc", dir=folder)
        os.close(fd)
        try:
            ds.to_netcdf(tmp, format="NETCDF4", engine="netcdf4", encoding=encoding)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
            if path.is_dir():                    # a zarr store replaced by a netCDF file
                _replace_folder(path, None)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return path
    tmp = tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp.zarr", dir=folder)
    try:
        ds.to_zarr(tmp, mode="w", encoding=encoding, consolidated=False)
        os.chmod(tmp, 0o777 & ~_umask())
        _replace_folder(path, tmp)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _replace_folder(path: Path, new: Optional[str]) -> None:
    """Move ``new`` onto ``path`` (whatever ``path`` is now), the old one removed afterwards."""
    old = None
    if path.exists():
        old = tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent)
        os.rmdir(old)
        os.rename(path, old)
    try:
        if new is not None:
            os.rename(new, path)
    except BaseException:
        if old is not None:
            os.rename(old, path)
        raise
    if old is not None:
        (shutil.rmtree if os.path.isdir(old) else os.unlink)(old)


def _open(path: Path, chunks: Any):
    import xarray as xr

    kw = dict(mask_and_scale=False, decode_times=False, chunks=chunks)
    if path.is_dir():
        return xr.open_dataset(path, engine="zarr", consolidated=False, **kw)
    return xr.open_dataset(path, engine="netcdf4", **kw)


def read_dataset(path: str | os.PathLike, verify: Any = True, chunks: Any = "disk"):
    """Open a dataset written by :func:`write_dataset` lazily and check it.

    Nothing of the per-sample data is loaded into memory: the variables are
    dask arrays (one chunk per stored chunk, ``chunks="disk"``) or lazily
    indexed arrays (``chunks=None``). The small variables (mesh, split,
    times, checksums) are read.

    Parameters
    ----------
    path : path-like
        A netCDF file or a zarr store.
    verify : bool or "static"
        ``True``: check ``static_sha256`` and every sample's ``sample_checksum``
        in one streaming pass (memory: one chunk); ``"static"``: only the
        former (:class:`SubgridDataset` checks each sample as it reads it);
        ``False``: none.
    chunks : "disk", None or dict
        ``"disk"``: dask arrays chunked as stored; ``None``: no dask; a dict is
        passed on to ``xarray.open_dataset``.

    Raises
    ------
    DatasetError
        Missing, truncated or corrupt data, not a meshclosure dataset, or the
        old layout (version 1); the message names the path and says how to
        regenerate it.
    """
    path = Path(path)
    if not (path.is_file() or _is_zarr_store(path)):
        raise DatasetError(f"dataset {str(path)!r} does not exist or is not a file or zarr store; "
                           "check the path, or create it with `meshclosure generate`.")
    try:
        ds = _open(path, {} if chunks == "disk" else chunks)
    except Exception as err:  # netCDF4/HDF5/zarr raise OSError, RuntimeError, ValueError...
        raise DatasetError(f"dataset {str(path)!r} cannot be read ({type(err).__name__}: {err}); "
                           f"it is truncated or corrupt. {_REGENERATE}") from err
    version = ds.attrs.get("meshclosure_dataset")
    if version is None:
        ds.close()
        raise DatasetError(f"{str(path)!r} is a netCDF/zarr dataset but not a meshclosure dataset "
                           f"(no 'meshclosure_dataset' attribute). {_REGENERATE}")
    if int(version) != FORMAT_VERSION:
        ds.close()
        old = (" It has the old layout (version 1: dims time/cell/face, the out-of-distribution "
               "samples appended on the time axis); there is no converter." if int(version) == 1
               else "")
        raise DatasetError(f"dataset {str(path)!r} has format version {version}; this meshclosure "
                           f"reads version {FORMAT_VERSION}.{old} {_REGENERATE}")
    ds.attrs["source_path"] = str(path)
    for name, v in ds.variables.items():       # the small tables: mesh, split, times, checksums
        if not (name in ds.data_vars and _is_sample_variable(ds, name)):
            v.load()
    if verify:
        try:
            verify_dataset(ds, samples=verify != "static")
        except DatasetError:
            ds.close()
            raise
        except Exception as err:
            ds.close()
            raise DatasetError(f"dataset {str(path)!r} cannot be read ({type(err).__name__}: "
                               f"{err}); it is truncated or corrupt. {_REGENERATE}") from err
    return ds


def verify_dataset(ds, samples: bool = True) -> None:
    """Raise :class:`DatasetError` unless ``ds`` matches its ``static_sha256`` and, with
    ``samples``, every sample its ``sample_checksum`` (read one chunk of samples at a time)."""
    where = ds.attrs.get("source_path", "the dataset")
    if static_hash(ds) != ds.attrs.get("static_sha256"):
        raise DatasetError(f"dataset {where!r} is corrupt: its mesh, split, times or checksums "
                           f"do not match the stored checksum (static_sha256). {_REGENERATE}")
    if not samples:
        return
    expected = np.asarray(ds["sample_checksum"].values)
    names = sample_variables(ds)
    step = _chunk_time(ds)
    for r in range(ds.sizes["run"]):
        for t0 in range(0, ds.sizes["time"], step):
            block = {n: np.asarray(ds.variables[n][r, t0:t0 + step].values) for n in names}
            for k in range(next(iter(block.values())).shape[0] if block else 0):
                if _digest({n: a[k] for n, a in block.items()}) != expected[r, t0 + k]:
                    raise DatasetError(
                        f"dataset {where!r} is corrupt: sample (run {r}, time index {t0 + k}) "
                        f"does not match its checksum (sample_checksum). {_REGENERATE}")


def _chunk_time(ds) -> int:
    for n in sample_variables(ds):
        enc = ds[n].encoding
        c = enc.get("preferred_chunks", {}).get("time") or (enc.get("chunksizes") or (0, 0))[1]
        if c:
            return int(c)
    return 16


def mesh_from_dataset(ds) -> Mesh:
    """The coarse :class:`~meshclosure.mesh.Mesh` stored in a dataset (bit-identical, float64)."""
    arrays = {}
    for name in _MESH_DIMS:
        a = np.asarray(ds[f"mesh_{name}"].values)
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
        dataset = read_dataset(dataset, verify="static")
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
def _blocks(ds, mask: np.ndarray, step: int = 16) -> Iterator[Tuple[int, slice, np.ndarray]]:
    """``(run, time slice, mask within the slice)`` covering the True entries of ``mask``
    ``(run, time)`` in slices of at most ``step`` samples."""
    for r in range(mask.shape[0]):
        idx = np.nonzero(mask[r])[0]
        if not len(idx):
            continue
        for t0 in range(int(idx[0]), int(idx[-1]) + 1, step):
            sl = slice(t0, min(t0 + step, int(idx[-1]) + 1))
            m = mask[r, sl]
            if m.any():
                yield r, sl, m


class _Moments:
    """Count, mean and centred sum of squares, merged block by block (Chan et al. 1979)."""

    def __init__(self) -> None:
        self.n, self.mean, self.m2, self.sq = 0, 0.0, 0.0, 0.0

    def add(self, a: np.ndarray) -> None:
        a = np.asarray(a, np.float64).ravel()
        if not a.size:
            return
        n, mean = a.size, float(a.mean())
        m2 = float(((a - mean) ** 2).sum())
        total = self.n + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self.m2 += m2 + delta**2 * self.n * n / total
        self.sq += float((a * a).sum())
        self.n = total

    @property
    def std(self) -> float:
        return float(np.sqrt(self.m2 / self.n)) if self.n else 0.0

    @property
    def rms(self) -> float:
        return float(np.sqrt(self.sq / self.n)) if self.n else 0.0


@dataclass
class NormalizationStats:
    """Per-feature shift and scale from the TRAINING split only.

    Inputs are standardised, ``(x − mean) / scale``; the components of a
    gradient (``grad_<var>_1``, ``grad_<var>_2``: a vector in the local frame)
    are only scaled, all by one scale (their joint RMS), so a rotation of the
    frame stays a rotation. Targets (face fluxes and
    tendencies) are only scaled by one ``flux_scale`` per variable, the RMS
    of ``Φ^sgs`` over the interior faces; the same scale on ``s^sgs`` keeps
    ``s = −div(Φ)`` exact. ``transport_scale`` is the RMS of ``U_c`` (1 where
    it is zero). Computed in one streaming pass over the training samples.
    """

    input_names: list
    input_mean: list
    input_scale: list
    variables: list
    flux_scale: list
    transport_scale: float

    @staticmethod
    def from_dataset(ds) -> "NormalizationStats":
        train = np.asarray(ds["split"].values) == SPLIT_CODES["train"]
        if not train.any():
            raise DatasetError("the dataset has no training samples (split == 0); generate at "
                               "least 3 samples.")
        variables = json.loads(ds.attrs["variables"]) if "variables" in ds.attrs else [
            n[len("state_"):] for n in ds.data_vars if n.startswith("state_")]
        n_int = ds.sizes["n_interior_edge"]
        names = _input_variables(ds, variables)
        edge_names = [f"sgs_flux_{v}" for v in variables] + ["transport"]
        acc = {n: _Moments() for n in names + edge_names}
        for r, sl, m in _blocks(ds, train):
            for n in names:
                acc[n].add(np.asarray(ds.variables[n][r, sl].values)[m])
            for n in edge_names:
                acc[n].add(np.asarray(ds.variables[n][r, sl, :n_int].values)[m])
        mean, scale = [], []
        for name in names:
            if name.startswith("input_grad_"):
                stem = name.rsplit("_", 1)[0]
                parts = [n for n in names if n.rsplit("_", 1)[0] == stem
                         and n.startswith("input_grad_")]
                m, s = 0.0, float(np.sqrt(np.mean([acc[n].rms ** 2 for n in parts])))
            else:
                m, s = acc[name].mean, acc[name].std
            mean.append(m)
            scale.append(s if s > 0 else 1.0)
        fscale = [acc[f"sgs_flux_{v}"].rms or 1.0 for v in variables]
        u = acc["transport"].rms
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
    """Time samples of one split as ``torch_geometric`` graphs of the coarse mesh, read on demand.

    Parameters
    ----------
    source : path or xarray.Dataset
        A netCDF file or zarr store from :func:`write_dataset` (opened lazily;
        its mesh, splits and checksums checked), or a dataset.
    split : {"train", "val", "test", "ood", "all"}
        ``"all"``: every present sample (gap samples included, padding never).
    normalize : bool
        Apply the training-split :class:`NormalizationStats` (default).
    stats : NormalizationStats, optional
        Statistics to apply (default: the file's, computed from its training
        split when it was written; recomputed from the training split if
        missing).
    dtype : torch.dtype
        Floating dtype of the graphs (default float32).
    verify : bool
        Check each sample against its ``sample_checksum`` when it is read
        (default True; raises :class:`DatasetError` naming the sample).

    Only the mesh and the small per-sample tables are held; each item reads
    its sample from the file (the stored chunk that holds it, of which the
    last one read is kept: sequential access reads each chunk once), so a
    dataset larger than memory trains. Each
    item is ``to_graph(mesh, x)`` (see :func:`meshclosure.graph.to_graph`) with

    * ``x (n_cells, n_inputs)``: state and resolved inputs, :attr:`input_names`;
    * ``y (n_faces, n_vars)``: subgrid face flux ``Φ^sgs`` per variable;
    * ``y_tendency (n_cells, n_vars)``: ``s^sgs``, ``= −div(y)`` (same scale);
    * ``y_boundary (n_boundary_faces, n_vars)``: ``B^sgs``;
    * ``face_transport (n_faces,)``: ``U_c``;
    * ``t`` (model time), ``run`` and ``time_index`` (indices in the file).

    :attr:`indices` is ``(n_items, 2)``: the ``(run, time index)`` of each item.

    Examples
    --------
    >>> SubgridDataset("missing.nc")
    Traceback (most recent call last):
    ...
    meshclosure.data.dataset.DatasetError: dataset 'missing.nc' does not exist or is not a file ...
    """

    def __init__(self, source: Any, split: str = "train", normalize: bool = True,
                 stats: Optional[NormalizationStats] = None,
                 dtype: torch.dtype = torch.float32, verify: bool = True) -> None:
        super().__init__()
        if split not in SPLITS + ("all",):
            raise ValueError(f"split must be one of {SPLITS + ('all',)}; got {split!r}.")
        ds = (read_dataset(source, verify="static" if verify else False, chunks=None)
              if isinstance(source, (str, os.PathLike)) else source)
        self.ds = ds
        self.split = split
        self.mesh = mesh_from_dataset(ds)
        self.variables = tuple(json.loads(ds.attrs["variables"]))
        self.config = json.loads(ds.attrs["scenario_config"])
        codes = np.asarray(ds["split"].values)
        keep = codes >= 0 if split == "all" else codes == SPLIT_CODES[split]
        self.indices = np.argwhere(keep)               # (n, 2): run, time, in file order
        if stats is None:
            stats = (NormalizationStats.from_dict(json.loads(ds.attrs["normalization"]))
                     if "normalization" in ds.attrs else NormalizationStats.from_dataset(ds))
        self.stats = stats
        self.normalize = normalize
        self.input_names = tuple(stats.input_names)
        self.dtype = dtype
        self.verify = bool(verify) and "sample_checksum" in ds
        self._checksum = np.asarray(ds["sample_checksum"].values) if self.verify else None
        self._names = sample_variables(ds)
        self._step = _chunk_time(ds) if isinstance(source, (str, os.PathLike)) else 1
        self._block_key: Optional[Tuple[int, int]] = None
        self._block: Dict[str, np.ndarray] = {}
        self._times = np.asarray(ds["model_time"].values)
        self._n_int = self.mesh.n_faces
        self._graph = self.mesh.to(dtype=dtype).to_graph()

    def __len__(self) -> int:
        return len(self.indices)

    def read(self, run: int, time_index: int) -> Dict[str, np.ndarray]:
        """The raw arrays of one stored sample ``{name: (n_face,) or (n_edge,)}``, checked
        against its checksum when :attr:`verify`."""
        c = time_index // self._step                 # read one stored chunk, keep the last
        if self._block_key != (run, c):
            sl = slice(c * self._step, (c + 1) * self._step)
            self._block = {n: np.asarray(self.ds.variables[n][run, sl].values)
                           for n in self._names}
            self._block_key = (run, c)
        arrays = {n: a[time_index - c * self._step] for n, a in self._block.items()}
        if self.verify and _digest(arrays) != self._checksum[run, time_index]:
            where = self.ds.attrs.get("source_path", "the dataset")
            raise DatasetError(f"dataset {where!r} is corrupt: sample (run {run}, time index "
                               f"{time_index}) does not match its checksum. {_REGENERATE}")
        return arrays

    def __getitem__(self, i: int):
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for the {self.split!r} split of "
                             f"{len(self)} samples.")
        r, k = (int(v) for v in self.indices[i])
        a = self.read(r, k)
        st = self.stats
        t = lambda v: torch.as_tensor(np.ascontiguousarray(v), dtype=torch.float64)  # noqa: E731
        x = t(np.stack([a[n] for n in st.input_names], -1))
        edge = t(np.stack([a[f"sgs_flux_{v}"] for v in self.variables], -1))
        s = t(np.stack([a[f"sgs_tendency_{v}"] for v in self.variables], -1))
        u = t(a["transport"][:self._n_int])
        y, b = edge[:self._n_int], edge[self._n_int:]
        if self.normalize:
            x = (x - torch.as_tensor(st.input_mean, dtype=x.dtype)) / torch.as_tensor(
                st.input_scale, dtype=x.dtype)
            fs = torch.as_tensor(st.flux_scale, dtype=y.dtype)
            y, s, b = y / fs, s / fs, b / fs
            u = u / st.transport_scale
        g = self._graph.clone()
        g.x, g.y = x.to(self.dtype), y.to(self.dtype)
        g.y_tendency, g.y_boundary = s.to(self.dtype), b.to(self.dtype)
        g.face_transport = u.to(self.dtype)
        g.t = float(self._times[r, k])
        g.run, g.time_index = r, k
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
