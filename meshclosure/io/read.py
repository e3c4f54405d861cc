"""Reading meshes: :func:`read_mesh` for every mesh file meshclosure writes, and
the UGRID topology of other files."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..mesh import Mesh, MeshError
from .exact import _has_exact_mesh, mesh_from_exact_variables
from .vtu import _exact_from_vtu


_NETCDF_SUFFIXES = (".nc", ".nc4", ".netcdf", ".cdf")


def _has_consolidated_metadata(path: Path) -> bool:
    """Whether the zarr store at ``path`` holds consolidated metadata (zarr v2
    ``.zmetadata``, or v3 ``consolidated_metadata`` in the root ``zarr.json``)."""
    if (path / ".zmetadata").is_file():
        return True
    root = path / "zarr.json"
    if root.is_file():
        try:
            return json.loads(root.read_text()).get("consolidated_metadata") is not None
        except (OSError, ValueError):
            return False
    return False


def _open_xarray(path: Path):
    """``path`` opened lazily with xarray (netCDF or zarr), integers and fill values kept."""
    import xarray as xr

    zarr = path.is_dir() or path.suffix.lower() == ".zarr"
    engine = "zarr" if zarr else "netcdf4"
    # a zarr store is opened with consolidated metadata exactly when it has some, so xarray
    # never tries the other way first (and never warns "Failed to open Zarr store with
    # consolidated metadata" for the stores meshclosure writes)
    extra = {"consolidated": _has_consolidated_metadata(path)} if zarr else {}
    try:
        return xr.open_dataset(path, engine=engine, mask_and_scale=False, chunks=None, **extra)
    except Exception as err:  # netCDF4/HDF5/zarr raise OSError, RuntimeError, ValueError...
        kind = "zarr store" if zarr else "netCDF file"
        raise MeshError(f"{kind} {str(path)!r} cannot be read ({type(err).__name__}: {err}); it "
                        f"is truncated or not a {kind}. Rewrite it.") from err


def read_mesh(path: str | os.PathLike) -> Mesh:
    """The mesh in any file meshclosure writes, or in any mesh file meshio reads.

    * ``.vtu`` from :func:`write_vtu`: the exact mesh stored in its field
      data (bit for bit); other VTU files through
      :func:`~meshclosure.mesh.from_meshio`;
    * netCDF (``.nc``) from :func:`write_ugrid` and datasets from
      :mod:`meshclosure.data` (``.nc`` or ``.zarr``): the exact ``mesh_*``
      arrays when present (bit for bit, float64), else the UGRID topology
      (:func:`mesh_from_ugrid`); only the mesh variables are read;
    * anything else meshio reads (``.msh``, ``.vtk``, ...): ``from_meshio``.

    Parameters
    ----------
    path : path-like

    Returns
    -------
    Mesh

    Raises
    ------
    MeshError
        Missing or unreadable file, a netCDF/zarr file with neither exact
        mesh arrays nor a UGRID mesh topology, or an invalid mesh.

    Examples
    --------
    >>> import tempfile, os, torch
    >>> from meshclosure.io import write_ugrid
    >>> from meshclosure.mesh import Coarsening, icosahedral
    >>> coarse = Coarsening.native(icosahedral(2), 2).coarse
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     write_ugrid(coarse, None, os.path.join(tmp, "c.nc"))
    ...     back = read_mesh(os.path.join(tmp, "c.nc"))
    >>> bool((back.face_area == coarse.face_area).all()), back.n_faces
    (True, 120)
    >>> read_mesh("no/such/mesh.nc")
    Traceback (most recent call last):
    ...
    meshclosure.mesh._mesh.MeshError: path='no/such/mesh.nc' does not exist; check the path ...
    """
    from ..mesh.meshio_adapter import from_meshio, read_meshio

    path = Path(path)
    if not path.exists():
        raise MeshError(f"path={str(path)!r} does not exist; check the path (a mesh file, a "
                        "UGRID .nc file or a dataset .nc/.zarr).")
    suffix = path.suffix.lower()
    if path.is_dir() or suffix == ".zarr" or suffix in _NETCDF_SUFFIXES:
        with _open_xarray(path) as ds:
            if _has_exact_mesh(ds):
                return mesh_from_exact_variables(ds)
            return mesh_from_ugrid(ds, source=str(path))
    if suffix == ".vtu":
        m = read_meshio(path)
        exact = _exact_from_vtu(m)
        return exact if exact is not None else from_meshio(m, info={"source": str(path)})
    return from_meshio(path)


def mesh_from_ugrid(ds, source: str = "dataset") -> Mesh:
    """Rebuild a :class:`~meshclosure.mesh.Mesh` from the UGRID-1.0 topology in ``ds``.

    The polygons of ``face_node_connectivity`` become cells (great-circle
    edges on the sphere, where the node coordinates are lon/lat in degrees,
    straight on the plane; ``period`` from the global attribute of
    :func:`write_ugrid`). In files meshclosure wrote (attribute
    ``meshclosure_info``) the exact ``face_areas`` are kept as cell volumes
    and ``radius`` is the sphere radius; otherwise the unit sphere. Coarse
    cells whose faces are chains of fine edges come back with straight or
    great-circle faces between their corners: read the exact ``mesh_*``
    arrays instead (:func:`read_mesh` does when present).

    Parameters
    ----------
    ds : xarray.Dataset
    source : str
        Named in error messages and stored as ``info["source"]``.

    Raises
    ------
    MeshError
        No variable with ``cf_role = "mesh_topology"``, or the polygons do not
        make a valid mesh.
    """
    from ..mesh import from_polygons

    topo = [name for name, v in ds.variables.items()
            if v.attrs.get("cf_role") == "mesh_topology"]
    if not topo:
        raise MeshError(f"{source!r} has neither meshclosure's exact mesh arrays "
                        "(mesh_cell_volume, ...) nor a UGRID mesh (a variable with cf_role = "
                        "'mesh_topology'); it is not a mesh file. Write meshes with "
                        "meshclosure.io.write_ugrid or write_vtu.")
    t = ds[topo[0]].attrs
    conn = ds[t["face_node_connectivity"]]
    cells = np.asarray(conn.values).astype(np.int64)
    if cells.ndim != 2:
        raise MeshError(f"{source!r}: face_node_connectivity must be 2-D; got shape {cells.shape}.")
    start = int(conn.attrs.get("start_index", 0))
    fill = conn.attrs.get("_FillValue", conn.encoding.get("_FillValue", -1))
    cells = np.where((cells == fill) | (cells < start), -1, cells - start)
    x_name, y_name = str(t["node_coordinates"]).split()[:2]
    x, y = (np.asarray(ds[n].values, np.float64) for n in (x_name, y_name))
    ours = "meshclosure_info" in ds.attrs
    info = {"family": "ugrid", "source": source}
    if ours:
        info = {**json.loads(ds.attrs["meshclosure_info"]), "source": source}
    units = str(ds[x_name].attrs.get("units", ""))
    spherical = units.startswith("degree") or ds[x_name].attrs.get("standard_name") == "longitude"
    kwargs = {}
    if ours and "face_areas" in ds.variables:
        kwargs["cell_volume"] = np.asarray(ds["face_areas"].values, np.float64)
    if spherical:
        radius = float(ds.attrs.get("radius", 1.0)) if ours else 1.0
        lon, lat = np.radians(x), np.radians(y)
        xyz = radius * np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon),
                                 np.sin(lat)], 1)
        return _rebuild(from_polygons, source, xyz, cells, radius=radius, info=info, **kwargs)
    period = ds.attrs.get("period")
    if period is not None:
        period = tuple(float(p) for p in np.atleast_1d(period))
        if not any(period):
            period = None
    return _rebuild(from_polygons, source, np.stack([x, y], 1), cells, period=period, info=info,
                    **kwargs)


def _rebuild(from_polygons, source: str, *args, **kwargs) -> Mesh:
    try:
        return from_polygons(*args, **kwargs)
    except MeshError as err:
        raise MeshError(f"the UGRID polygons of {source!r} do not make a valid mesh ({err}). "
                        "UGRID lists only each cell's corners, so large agglomerated coarse "
                        "cells can fold; write the file with meshclosure.io.write_ugrid(..., "
                        "exact=True) (the default), which stores the exact mesh that read_mesh "
                        "reads.", cells=err.cells, faces=err.faces) from err
