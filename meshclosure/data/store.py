"""Dataset files: netCDF-4 or zarr, written atomically, opened lazily and checked.

The layout is described in :mod:`meshclosure.data.dataset`. :func:`write_dataset`
chunks the per-sample variables along ``time`` (one sample per chunk, or a few
small ones) and renames a complete temporary file or folder onto the final
name; :func:`read_dataset` opens either format without loading the samples
(dask arrays, or lazily indexed arrays) and checks the format version, the
``static_sha256`` of the small variables and, in one streaming pass, every
sample's ``sample_checksum``. A dataset written before operator versions existed
opens as ``"fv1"`` (:func:`~meshclosure.data.dataset.fill_operator_version`).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np

from .._files import check_folder, refuse_existing
from ..errors import ArgumentError
from ..mesh import Mesh
from .dataset import (_REGENERATE, FORMAT_VERSION, FORMATS, SPLIT_CODES, DatasetError,
                      _digest, _is_sample_variable, fill_operator_version, sample_variables,
                      static_hash)

__all__ = ["dataset_format", "default_chunk_time", "write_dataset", "read_dataset",
           "verify_dataset", "mesh_from_dataset", "check_compatible", "runs_template",
           "write_run_region"]


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
    per = max((ds[n].dtype.itemsize * int(np.prod(ds[n].shape[2:])) for n in names), default=1)
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
            e = {"_FillValue": np.nan, key: (1, chunk_time) + tuple(v.shape[2:])}
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


# ------------------------------------------------------------- many runs, one store
def runs_template(stores: Sequence[Any], kinds: Sequence[int], seeds: Sequence[int],
                  split: Optional[Sequence[Optional[int]]] = None):
    """One dataset of the runs of several single-run datasets: the small variables in
    memory, the samples as NaN placeholders (dask), for :func:`write_run_region`.

    Parameters
    ----------
    stores : sequence of xarray.Dataset, one per run
        Single-run datasets (``run`` size 1) of the same scenario and mesh; the
        first gives the mesh, the attributes and the variables.
    kinds, seeds : sequence of int, one per run
        ``run_kind`` (0 main, 1 out-of-distribution) and ``run_seed``.
    split : sequence of int or None, one per run, optional
        The split code of every present sample of the run; None: the run's own
        ``split`` (default for every run).

    Returns
    -------
    xarray.Dataset
        ``(run, time)`` with ``time`` the longest run's; shorter runs padded
        (split -1, the ``sample_checksum`` of NaN samples), ``model_time``,
        ``run_start_time``, ``run_dt``, ``run_every``, ``sample_checksum`` from the
        runs, ``run_seed``, ``run_kind``; the sample variables are NaN placeholders
        chunked one run per chunk (write with ``compute=False``, then each run's region).
    """
    import dask.array as da

    first = stores[0]
    n_runs, n_time = len(stores), max(s.sizes["time"] for s in stores)
    split = list(split) if split is not None else [None] * n_runs
    names = sample_variables(first)
    base = first.drop_vars([n for n, v in first.variables.items()
                            if "run" in v.dims or "time" in v.dims])
    base.attrs = {k: v for k, v in first.attrs.items() if k != "source_path"}
    model_time = np.full((n_runs, n_time), np.nan)
    codes = np.full((n_runs, n_time), SPLIT_CODES["absent"], np.int8)
    checksum = np.zeros((n_runs, n_time), np.uint64)
    pad = _digest({n: np.full(first[n].shape[2:], np.nan, first[n].dtype) for n in names})
    for r, ds in enumerate(stores):
        n = ds.sizes["time"]
        model_time[r, :n] = ds["model_time"].values[0]
        checksum[r, :n] = ds["sample_checksum"].values[0]
        checksum[r, n:] = pad
        codes[r, :n] = ds["split"].values[0] if split[r] is None else split[r]
    longest = int(np.argmax([ds.sizes["time"] for ds in stores]))   # spans every run
    out = base.assign_coords(
        run=("run", np.arange(n_runs, dtype=np.int32), {"long_name": "run index"}),
        time=("time", model_time[longest] - model_time[longest, 0], dict(first["time"].attrs)),
        model_time=(("run", "time"), model_time, dict(first["model_time"].attrs)))
    for k in ("run_start_time", "run_dt", "run_every"):
        out[k] = ("run", np.array([ds[k].values[0] for ds in stores]), dict(first[k].attrs))
    out["run_seed"] = ("run", np.asarray(seeds, np.int64), {"long_name": "seed of the run"})
    out["run_kind"] = ("run", np.asarray(kinds, np.int8),
                       {"long_name": "kind of run: 0 main, 1 out-of-distribution",
                        "flag_values": np.array([0, 1], np.int8), "flag_meanings": "main ood"})
    out["split"] = (("run", "time"), codes, dict(first["split"].attrs))
    out["sample_checksum"] = (("run", "time"), checksum, dict(first["sample_checksum"].attrs))
    for name in names:
        v = first[name]
        shape = (n_runs, n_time) + v.shape[2:]
        out[name] = (v.dims, da.full(shape, np.nan, dtype=v.dtype,
                                     chunks=(1, n_time) + v.shape[2:]), dict(v.attrs))
    return out


def write_run_region(target: str | os.PathLike, run: int, source: str | os.PathLike,
                     n_time: int, chunk_time: int) -> None:
    """Write the samples of the single-run dataset ``source`` as run ``run`` of the zarr
    store ``target`` (a :func:`runs_template` written with ``compute=False``), padded
    with NaN to ``n_time``; ``to_zarr(region={"run": slice(run, run + 1)})``, chunks of
    ``(1, chunk_time)``, so two runs never write the same chunk."""
    import xarray as xr

    ds = read_dataset(source, verify=False)
    out = xr.Dataset()
    for name in sample_variables(ds):
        v = ds[name].variable
        if n_time > v.shape[1]:
            v = v.pad(time=(0, n_time - v.shape[1]), constant_values=np.nan)
        v = v.chunk({"run": 1, "time": chunk_time})
        v.attrs, v.encoding = {}, {}
        out[name] = v
    out.to_zarr(target, region={"run": slice(run, run + 1)}, mode="r+", consolidated=False)
    ds.close()


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

    Returns
    -------
    xarray.Dataset
        Its attribute ``operator_version`` (and ``"operators"`` in every config it
        holds) says which operators made the data: ``"fv1"`` for a dataset written
        before versions existed (filled in here, in memory;
        :func:`~meshclosure.data.dataset.fill_operator_version`).

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
    fill_operator_version(ds)
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
        raise DatasetError(f"dataset {where!r} is corrupt: its attributes, mesh, split, times or "
                           f"checksums do not match the stored checksum (static_sha256). "
                           f"{_REGENERATE}")
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
    """The coarse :class:`~meshclosure.mesh.Mesh` stored in a dataset (bit-identical, float64;
    :func:`meshclosure.io.mesh_from_exact_variables`)."""
    from ..io import mesh_from_exact_variables

    return mesh_from_exact_variables(ds)


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
    ds = getattr(dataset, "ds", dataset)               # a SubgridDataset holds its dataset
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
