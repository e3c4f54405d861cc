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

Trajectory datasets (``generate(..., trajectory=True)``, attribute
``trajectory = 1``) hold a sample at EVERY coarse step (``coarse_every``
fine steps apart; attributes ``coarse_every``, ``coarse_dt``, ``stepper``,
``stage_times``), and what the coarse model needs from each state to the next
(:mod:`meshclosure.data.trajectory`):

=============================  ========================  ========================================
``sgs_flux_mean_<var>``        (run, time, n_edge)       step mean ``Φ̄^sgs`` over the coarse step
                                                         starting at the sample (then ``B̄^sgs``)
``forcing_mean_<var>``         (run, time, n_face)       step mean of the restricted random
                                                         forcing (scenarios that have one)
``transport_stages``           (run, time, stage,        coarse transport at the stage times
                               n_edge)                   ``t + stage_time · coarse_dt``
                                                         (prescribed flow: ``kinematic``)
=============================  ========================  ========================================

The attribute ``feature_pipeline`` (JSON) is the
:class:`~meshclosure.closures.FeaturePipeline` config that computes the
``state_*`` and ``input_*`` variables from a coarse state
(``FeaturePipeline.from_config``); ``ood_feature_pipeline`` that of the
out-of-distribution run (its scenario inputs, e.g. ``N``, follow the OOD
configuration).

* ``run`` 0 is the main run (split by time into train / val / test blocks,
  optionally with ``gap`` samples set aside between them, code 4), run 1 the
  out-of-distribution run (all code 3). Runs never share a time axis. A store
  of many runs (:func:`~meshclosure.data.multirun.generate_runs`, same layout
  version) holds main runs ``0 .. R-1`` (each split by time, or whole runs per
  split: attribute ``split_by``), then the OOD runs, with ``run_seed (run,)``,
  ``run_kind (run,)`` (0 main, 1 OOD) and the attribute ``run_configs`` (every
  run's scenario config; :func:`~meshclosure.data.multirun.scenario_for_run`).
  Readers index samples by ``(run, time index)`` and the split codes, so they
  read either.
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
``n_mesh_vertex``, ``n_mesh_coord``, ``n_mesh_cell_vertices``, ``two``, from
:func:`meshclosure.io.exact_mesh_variables`, so :func:`mesh_from_dataset`
rebuilds it bit for bit) and as UGRID-1.0 variables
(:func:`meshclosure.io.to_ugrid_dataset`: the coarse cells' own corners as
nodes), so the file opens in uxarray. Attributes: ``scenario_config`` (JSON),
``operator_version`` (the resolved operators' version, :mod:`meshclosure.fv.versions`,
also ``scenario_config["operators"]``: see below), ``seed``, ``versions``, ``created``
(UTC), ``split_boundaries``, ``normalization`` (training split only), ``static_sha256``
(every variable that is not per sample, including ``sample_checksum``) and the
per-sample ``sample_checksum``: together an integrity check that
:func:`read_dataset` verifies in one streaming pass and :class:`SubgridDataset`
per sample it reads.

Storage (:mod:`meshclosure.data.store`): netCDF-4 (one file) or zarr (a
folder store, ``.zarr``), both chunked along ``time`` and written atomically;
:func:`read_dataset` opens either lazily (dask arrays per chunk, or lazily
indexed arrays), so a dataset larger than memory can be inspected and trained
on (:class:`SubgridDataset`, :mod:`meshclosure.data.torch_dataset`). Their
names are importable from this module too.

Operator version: ``Φ^res_coarse`` in the targets and the gradient inputs depend
on the finite-volume stencils, so a dataset records their version
(``operator_version``, and ``"operators"`` in every scenario config and feature
pipeline it holds). A dataset written before versions existed has none:
:func:`read_dataset` fills in ``"fv1"`` (the attribute, ``scenario_config``,
``ood_config``, ``run_configs`` and the feature pipelines, in memory; the keys it
filled and their stored values are in ``operator_version_filled``, so
``static_sha256`` still checks the stored file), and every
``Scenario.from_config(...)`` of its configs rebuilds the operators the data was
made with.
"""
from __future__ import annotations

import datetime
import hashlib
import json
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import ArgumentError, MeshclosureError
from ..fv.versions import agree_operators
from ..mesh import Mesh
from .targets import SubgridSample

__all__ = ["DatasetError", "SPLITS", "SPLIT_CODES", "FORMAT_VERSION", "FORMATS",
           "split_boundaries", "max_gap", "check_split_arguments", "build_dataset",
           "write_dataset", "read_dataset", "dataset_format", "mesh_from_dataset",
           "check_compatible", "NormalizationStats", "SubgridDataset", "OPERATORS_ATTR",
           "LEGACY_OPERATORS", "fill_operator_version"]

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
    """The exact mesh (:func:`meshclosure.io.exact_mesh_variables`) with CF attributes."""
    from ..io import exact_mesh_variables

    exact = exact_mesh_variables(mesh)
    out = {}
    for name, v in exact.data_vars.items():
        attrs = {"long_name": f"exact coarse mesh: {_MESH_LONG_NAMES[name[len('mesh_'):]]}"}
        if v.dtype.kind == "f":
            attrs["units"] = _NONDIM
        out[name] = (v.dims, v.values, attrs)
    return out, dict(exact.attrs)


def _is_sample_variable(ds, name: str) -> bool:
    """A per-sample data variable: dims ``(run, time, X)`` (or ``(run, time, stage, X)``)."""
    return ds[name].dims[:2] == ("run", "time") and ds[name].ndim >= 3


def sample_variables(ds) -> list:
    """Names of the per-sample variables ``(run, time, ...)``, sorted (the checksum order)."""
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


OPERATORS_ATTR = "operator_version"
"""Global attribute: the operator version of the data (:mod:`meshclosure.fv.versions`)."""
LEGACY_OPERATORS = "fv1"
"""The operator version of datasets, configs and model files that record none (made
before versions existed)."""
_FILLED_ATTR = "operator_version_filled"
_UNHASHED_ATTRS = ("created", "source_path", "static_sha256", _FILLED_ATTR)


def _stored_attrs(ds) -> dict:
    """``ds.attrs`` as stored: the attributes :func:`read_dataset` filled in for a dataset
    from before operator versions (``operator_version_filled``: ``{key: stored value or
    None}``) back at their stored values, so :func:`static_hash` checks the file."""
    attrs = dict(ds.attrs)
    filled = attrs.get(_FILLED_ATTR)
    if isinstance(filled, str):
        for key, value in json.loads(filled).items():
            if value is None:
                attrs.pop(key, None)
            else:
                attrs[key] = value
    return attrs


def _attr_json(value: Any) -> str:
    """An attribute as JSON, the same whether netCDF or zarr stored it (arrays as lists)."""
    if isinstance(value, np.ndarray) and value.size == 1 and value.ndim:
        value = value.reshape(())                 # netCDF reads 1-element lists as arrays
    plain = value.tolist() if isinstance(value, (np.ndarray, np.generic)) else value
    if isinstance(plain, list) and len(plain) == 1:
        plain = plain[0]
    return json.dumps(plain, sort_keys=True, default=str)


def static_hash(ds) -> str:
    """SHA-256 of the global attributes (but ``created``) and of every variable that is not
    per sample (mesh, split, times, checksums...)."""
    h = hashlib.sha256()
    attrs = _stored_attrs(ds)
    for key in sorted(k for k in attrs if k not in _UNHASHED_ATTRS):
        h.update(f"@{key}={_attr_json(attrs[key])};".encode())
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
                  run_every: Optional[Sequence[int]] = None,
                  operators: Optional[str] = None):
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
    operators : str, optional
        Operator version the samples were made with (recorded as the attribute
        ``operator_version`` and in the feature pipelines). Default
        ``config["operators"]`` (a scenario's config has it), else the current version.

    Returns
    -------
    xarray.Dataset
        In memory (numpy arrays); write it with :func:`write_dataset`.

    Raises
    ------
    ArgumentError
        Bad ``fractions`` or ``gap``; an unknown ``operators``, or one other than
        ``config["operators"]``.
    DatasetError
        Samples that differ in variables or inputs, non-monotonic times, or
        non-finite values (never written silently).
    """
    import xarray as xr

    if len(samples) < 3:
        raise ArgumentError("n_samples", len(samples), "must be an integer >= 3 (train, val and "
                            "test each get a block)", "generate at least 3 samples")
    check_split_arguments(len(samples), fractions, gap)
    version = _dataset_operators(config, operators)
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
    longest = int(np.argmax([len(r) for r in runs]))     # the time axis spans every run
    offsets = model_time[longest] - start_time[longest]

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
    if samples[0].step_flux:
        _trajectory_variables(ds, runs, coarse, variables, n_time)
        ds.attrs["trajectory"] = 1
    present = split >= 0
    for name in sample_variables(ds):
        if not np.isfinite(ds[name].values[present]).all():
            bad = np.argwhere(~np.isfinite(ds[name].values).reshape(n_runs, n_time, -1).all(-1)
                              & present)
            raise DatasetError(f"{name} holds non-finite values (run, time index: "
                               f"{bad[:5].tolist()}); a dataset never stores NaN or inf silently."
                               " Check the scenario's time step and spin-up.")
    exact, exact_attrs = _mesh_variables(coarse)
    for name, value in exact.items():
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
        OPERATORS_ATTR: version,
        "ood_config": json.dumps(dict(ood_config or {}), sort_keys=True),
        "seed": int(seed), "versions": json.dumps(_versions()),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "split_fractions": json.dumps([float(x) for x in fractions]),
        "split_boundaries": json.dumps(bounds), "split_gap": int(gap),
        "n_samples": len(samples), "n_ood": len(ood_samples),
        **exact_attrs,            # mesh_radius, mesh_period, mesh_boundary_tag_names, mesh_info
        "mesh_signature": json.dumps(coarse.signature(), sort_keys=True),
    })
    ds.attrs["feature_pipeline"] = json.dumps(
        _pipeline_config(variables, inputs, config, version), sort_keys=True)
    if ood_config:
        ds.attrs["ood_feature_pipeline"] = json.dumps(
            _pipeline_config(variables, inputs, ood_config, version), sort_keys=True)
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


def _dataset_operators(config: Mapping[str, Any], operators: Optional[str]) -> str:
    """The operator version :func:`build_dataset` records (see its ``operators``)."""
    return agree_operators(operators, config.get("operators"),
                           "config['operators'], the scenario's operator version")


def _pipeline_config(variables, inputs, config, operators: str) -> dict:
    """The :class:`~meshclosure.closures.FeaturePipeline` config whose ``names`` are the
    dataset's ``state_*`` and ``input_*`` variables, in order (gradients of ``operators``)."""
    grads = [f"grad_{v}_{k}" for v in variables for k in (1, 2)]
    gradients = all(g in inputs for g in grads)
    extra = [n for n in inputs if not (gradients and n in grads)]
    return {"variables": list(variables), "gradients": gradients, "extra": extra,
            "scenario_config": dict(config) if extra else None, "operators": operators}


def fill_operator_version(ds) -> str:
    """The dataset's operator version; a dataset from before versions gets ``"fv1"``.

    Every config it holds without ``"operators"`` (``scenario_config``, ``ood_config``,
    ``run_configs``, ``feature_pipeline``, ``ood_feature_pipeline`` and their scenario
    configs) gets the dataset's version, in ``ds.attrs`` (memory only); the filled keys
    and their stored values go to ``operator_version_filled``, which
    :func:`static_hash` uses to check the attributes as stored.
    :func:`~meshclosure.data.read_dataset` calls it on every dataset it opens.

    Examples
    --------
    >>> import xarray as xr
    >>> ds = xr.Dataset(attrs={"scenario_config": '{"scenario": "kinematic"}'})
    >>> fill_operator_version(ds), json.loads(ds.attrs["scenario_config"])["operators"]
    ('fv1', 'fv1')
    >>> sorted(json.loads(ds.attrs["operator_version_filled"]))
    ['operator_version', 'scenario_config']
    """
    attrs = ds.attrs
    filled = json.loads(attrs[_FILLED_ATTR]) if isinstance(attrs.get(_FILLED_ATTR), str) else {}
    version = attrs.get(OPERATORS_ATTR)
    if version is None:
        version = LEGACY_OPERATORS
        filled.setdefault(OPERATORS_ATTR, None)
        attrs[OPERATORS_ATTR] = version
    version = str(version)

    def scenario(cfg: Any) -> bool:          # fill a scenario config in place; True if filled
        if isinstance(cfg, dict) and cfg.get("scenario") and "operators" not in cfg:
            cfg["operators"] = version
            return True
        return False

    def pipeline(cfg: Any) -> bool:
        if not isinstance(cfg, dict) or "variables" not in cfg:
            return False
        changed = scenario(cfg.get("scenario_config"))
        if "operators" not in cfg:
            cfg["operators"] = version
            changed = True
        return changed

    fills = {"scenario_config": scenario, "ood_config": scenario,
             "run_configs": lambda cfgs: isinstance(cfgs, list) and any(
                 [scenario(c) for c in cfgs]),
             "feature_pipeline": pipeline, "ood_feature_pipeline": pipeline}
    for key, fill in fills.items():
        stored = attrs.get(key)
        if not isinstance(stored, str):
            continue
        value = json.loads(stored)
        if fill(value):
            filled.setdefault(key, stored)
            attrs[key] = json.dumps(value, sort_keys=True)
    if filled:
        attrs[_FILLED_ATTR] = json.dumps(filled, sort_keys=True)
    return version


def _trajectory_variables(ds, runs, coarse: Mesh, variables, n_time: int) -> None:
    """``sgs_flux_mean_<v>``, ``forcing_mean_<v>`` and ``transport_stages`` (module docstring)."""
    first = runs[0][0]
    keys = (tuple(first.step_flux), tuple(first.step_forcing), first.transport_stages is None)
    for r, run in enumerate(runs):
        for k, s in enumerate(run):
            if (tuple(s.step_flux), tuple(s.step_forcing), s.transport_stages is None) != keys:
                raise DatasetError(f"all trajectory samples must hold the same step means; run {r}"
                                   f" sample {k} differs from the first. Generate the runs with "
                                   "the same scenario.")
    unit = {"units": _NONDIM}
    edge, cell = ("run", "time", "n_edge"), ("run", "time", "n_face")
    for var in variables:
        ds[f"sgs_flux_mean_{var}"] = (
            edge, _pad(runs, lambda s: _edge(coarse, s.step_flux[var],
                                             s.step_boundary_flux.get(var)), n_time),
            {**unit, "long_name": f"step-mean subgrid flux of {var} over the coarse step that "
             "starts at the sample (stepper-weighted mean over every fine stage): interior edges "
             "owner -> neighbour, then boundary edges outward"})
    for var in first.step_forcing:
        ds[f"forcing_mean_{var}"] = (
            cell, _pad(runs, lambda s: s.step_forcing[var], n_time),
            {**unit, "long_name": f"step mean of the restricted random forcing of {var} over the "
             "coarse step that starts at the sample"})
    if first.transport_stages is not None:
        ds["transport_stages"] = (
            ("run", "time", "stage", "n_edge"),
            _pad(runs, lambda s: torch.stack([_edge(coarse, u, None)
                                              for u in s.transport_stages]), n_time),
            {**unit, "long_name": "coarse transport U_c at the stage times t + stage_time * "
             "coarse_dt of the coarse step that starts at the sample (interior edges owner -> "
             "neighbour, then 0 on boundary edges)"})


def _fill_cf_attributes(ds) -> None:
    """Give every variable a ``long_name``, and every float variable ``units``."""
    for name, v in ds.variables.items():
        if "long_name" not in v.attrs:
            v.attrs["long_name"] = _UGRID_LONG_NAMES.get(str(name), str(name).replace("_", " "))
        if v.dtype.kind == "f" and "units" not in v.attrs:
            v.attrs["units"] = _NONDIM


# the file I/O and the torch dataset live in their own modules; their names stay importable here
from .store import (check_compatible, dataset_format, mesh_from_dataset,  # noqa: E402
                    read_dataset, write_dataset)
from .torch_dataset import NormalizationStats, SubgridDataset  # noqa: E402
