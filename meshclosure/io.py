"""Cell fields in and out: VTU for ParaView, HEALPix maps for healpy, UGRID netCDF for uxarray.

Every writer is atomic: it writes a temporary file in the destination folder
and renames it onto ``path`` (``os.replace``), so a failed write leaves an
existing file untouched and no temporary file behind. Fields are validated
(name, ``n_cells`` rows, finite) before anything is written.

Vocabulary (DESIGN.md §2): our *cells*, *faces* and *vertices* are UGRID
*faces* (dim ``n_face``), *edges* (``n_edge``) and *nodes* (``n_node``).

Examples
--------
>>> import tempfile, os, torch
>>> from meshclosure.mesh import healpix
>>> mesh = healpix(1)
>>> q = torch.arange(12.0)
>>> with tempfile.TemporaryDirectory() as tmp:
...     write_vtu(mesh, {"q": q}, os.path.join(tmp, "q.vtu"))
...     _, fields = read_vtu(os.path.join(tmp, "q.vtu"))
>>> fields["q"].tolist() == q.tolist()
True
>>> to_healpix_map(mesh, torch.zeros(13))
Traceback (most recent call last):
...
ValueError: values must have n_cells=12 rows (one per cell); got shape (13,) and dtype float32. ...
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from ._files import atomic_path as _atomic
from .mesh import Mesh, MeshError

__all__ = ["write_vtu", "read_vtu", "to_healpix_map", "from_healpix_map", "write_healpix_map",
           "read_healpix_map", "to_ugrid_dataset", "write_ugrid", "read_ugrid",
           "exact_mesh_variables", "mesh_from_exact_variables", "EXACT_MESH_DIMS"]

Fields = Mapping[str, Any]


# ----------------------------------------------------------------- helpers
def _check_file(path: str | os.PathLike, what: str) -> None:
    if not Path(path).is_file():
        raise MeshError(f"{what} {str(path)!r} does not exist or is not a file; check the path.")


def _numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _check_values(name: str, values: Any, n_cells: int, time_first: bool = False) -> np.ndarray:
    """``values`` as an array with ``n_cells`` rows (or columns, ``time_first``), all finite."""
    a = _numpy(values)
    if a.dtype == bool:
        a = a.astype(np.int8)
    axis = a.ndim - 1 if time_first else 0
    shape = "(n_cells,) or (time, n_cells)" if time_first else "(n_cells,) or (n_cells, k)"
    if a.ndim not in (1, 2) or a.shape[axis] != n_cells or a.dtype.kind not in "biuf":
        raise ValueError(f"{name} must have n_cells={n_cells} rows (one per cell); got shape "
                         f"{a.shape} and dtype {a.dtype}. Pass a real array of shape {shape}.")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        bad = np.unique(np.nonzero(~np.isfinite(a))[axis])
        raise ValueError(f"{name} has non-finite values (NaN/Inf) in {len(bad)} cells, e.g. "
                         f"cells {bad[:10].tolist()}; nothing was written. Fill or mask them "
                         "first.")
    return a


def _check_fields(mesh: Mesh, fields: Fields | None, time_first: bool = False,
                  reserved: tuple = ()) -> dict[str, np.ndarray]:
    if fields is None:
        return {}
    if not isinstance(fields, Mapping):
        raise TypeError(f"fields must be a dict name -> cell values; got {type(fields).__name__}. "
                        "Pass e.g. {'q': q}.")
    out = {}
    for name, values in fields.items():
        if not isinstance(name, str) or not name or name in reserved:
            raise ValueError(f"field name {name!r} is not allowed: names are non-empty strings "
                             f"other than {list(reserved)}. Rename the field.")
        out[name] = _check_values(f"field {name!r}", values, mesh.n_cells, time_first)
    return out


def _points3(mesh: Mesh) -> np.ndarray:
    v = mesh.vertex_pos.detach().cpu().double().numpy()
    return np.c_[v, np.zeros((len(v), 3 - v.shape[1]))]


def _unwrapped_polygons(mesh: Mesh) -> tuple[np.ndarray, np.ndarray]:
    """Points ``(n_points, 3)`` and padded cells with the periodic wrap undone per cell.

    Each cell's polygon is unwrapped from its first vertex, edge by edge (every
    edge is shorter than half a period); a vertex seen with a different
    periodic shift becomes a new point.
    """
    cells = mesh.cell_vertices.cpu().numpy()
    points = _points3(mesh)
    if mesh.period is None or mesh.dim != 2:
        return points, cells
    period = np.array([p if p else 0.0 for p in mesh.period[:2]])
    safe = np.where(period > 0, period, 1.0)
    valid = cells >= 0
    last = cells[np.arange(len(cells)), valid.sum(1) - 1][:, None]
    pos = points[np.where(valid, cells, last), :2]           # (n_cells, k, 2), padding repeats
    step = np.diff(pos, axis=1)
    step -= np.where(period > 0, np.round(step / safe), 0) * period
    unwrapped = pos[:, :1] + np.concatenate([np.zeros_like(pos[:, :1]), np.cumsum(step, 1)], 1)
    shift = np.round((unwrapped - pos) / safe).astype(np.int64)  # periods added to each corner
    key = np.concatenate([np.where(valid, cells, last)[..., None], shift], -1)[valid]
    unique, inverse = np.unique(key, axis=0, return_inverse=True)
    base = points[unique[:, 0]]
    base[:, :2] += unique[:, 1:] * period
    new = np.full(cells.shape, -1, dtype=np.int64)
    new[valid] = inverse.reshape(-1)
    return base, new


# -------------------------------------------------------------------- VTU
def write_vtu(mesh: Mesh, fields: Fields | None, path: str | os.PathLike,
              compression: str | None = "zlib") -> None:
    """Write cell fields on ``mesh`` as VTU cell data (ParaView), atomically.

    Cells are grouped into meshio blocks by polygon size (``triangle``,
    ``quad``, ``polygon``); the int cell-data array ``cell_index`` gives each
    block row's original cell. A 1-D column is written as ``line`` cells
    along x = z; planar points get z = 0; on a periodic plane each cell's
    polygon is unwrapped from its first vertex (wrapped vertices duplicated),
    so the cells tile the rectangle without overlap.

    Parameters
    ----------
    mesh : Mesh
    fields : dict of str -> array or Tensor, shape (n_cells,) or (n_cells, k), or None
        Finite values; ``"cell_index"`` is reserved.
    path : path-like
        Destination ``.vtu``; its folder must exist.
    compression : {"zlib", "lzma", None}

    Raises
    ------
    ValueError
        A field with the wrong shape, a reserved name, or NaN/Inf (nothing written).
    FileNotFoundError, PermissionError
        The destination folder is missing or not writable.
    """
    import meshio

    data = _check_fields(mesh, fields, reserved=("cell_index",))
    points, cells = _unwrapped_polygons(mesh)
    sizes = (cells >= 0).sum(1)
    order = np.argsort(sizes, kind="stable")
    names = {3: "triangle", 4: "quad"}
    blocks, index = [], []
    for k in np.unique(sizes):
        rows = order[sizes[order] == k]
        kind = "line" if mesh.dim == 1 else names.get(int(k), "polygon")
        blocks.append((kind, cells[rows, :k].astype(np.int64)))
        index.append(rows)
    cell_data = {"cell_index": [r.astype(np.int64) for r in index]}
    cell_data.update({name: [a[r] for r in index] for name, a in data.items()})
    out = meshio.Mesh(points, blocks, cell_data=cell_data)
    with _atomic(path, ".vtu") as tmp:
        meshio.write(tmp, out, file_format="vtu", binary=True, compression=compression)


def read_vtu(path: str | os.PathLike) -> tuple[Any, dict[str, np.ndarray]]:
    """Read a VTU file written by :func:`write_vtu`.

    Returns
    -------
    meshio.Mesh
        The file's mesh; cells in block order (``cell_data["cell_index"]``
        gives each block row's original cell).
    dict of str -> ndarray, shape (n_cells,) or (n_cells, k)
        The cell fields in original cell order (without ``cell_index``).

    Raises
    ------
    MeshError
        Missing, unreadable or truncated file, or a bad ``cell_index``.
    """
    from .mesh.meshio_adapter import read_meshio

    m = read_meshio(path)
    n = sum(len(b.data) for b in m.cells)
    index = (np.concatenate(m.cell_data["cell_index"]).astype(np.int64)
             if "cell_index" in m.cell_data else np.arange(n))
    if not np.array_equal(np.sort(index), np.arange(n)):
        raise MeshError(f"VTU file {str(path)!r}: cell data 'cell_index' is not a permutation of "
                        f"range({n}); the file was not written by write_vtu or is corrupt.")
    fields = {}
    for name, blocks in m.cell_data.items():
        if name != "cell_index":
            a = np.concatenate(blocks)
            fields[name] = np.empty_like(a)
            fields[name][index] = a
    return m, fields


# ---------------------------------------------------------------- HEALPix
def _nside(mesh: Mesh) -> int:
    if mesh.family != "healpix" or not mesh.info.get("nest", True):
        raise ValueError(f"mesh must be a NESTED HEALPix mesh (info['family'] == 'healpix'); got "
                         f"{mesh!r}. Build it with meshclosure.mesh.healpix(nside), or use "
                         "write_vtu / write_ugrid for other meshes.")
    return int(mesh.info["nside"])


def to_healpix_map(mesh: Mesh, values: Any, nest: bool = True) -> np.ndarray:
    """Cell values on a HEALPix mesh as a healpy map.

    Parameters
    ----------
    mesh : Mesh
        From :func:`meshclosure.mesh.healpix` (cells are NESTED pixels).
    values : array or Tensor, shape (n_cells,) or (n_cells, k)
    nest : bool
        NESTED order (default: the cell order) or RING (``healpy.reorder``).

    Returns
    -------
    ndarray, shape (npix,) or (k, npix)
    """
    import healpy

    _nside(mesh)
    m = _check_values("values", values, mesh.n_cells).T.copy()
    return m if nest else np.asarray(healpy.reorder(m, n2r=True))


def from_healpix_map(mesh: Mesh, m: Any, nest: bool = True) -> torch.Tensor:
    """A healpy map (NESTED by default, RING with ``nest=False``) as cell values.

    Returns
    -------
    Tensor, shape (n_cells,) or (n_cells, k)
    """
    import healpy

    nside = _nside(mesh)
    a = _numpy(m)
    npix = a.shape[-1] if a.ndim else 0
    if a.ndim not in (1, 2) or npix != 12 * nside**2:
        got = f"nside {healpy.npix2nside(npix)}" if healpy.isnpixok(npix) else "no valid nside"
        raise ValueError(f"m must be a map of 12*nside**2 = {12 * nside**2} pixels for the mesh's "
                         f"nside={nside}; got shape {a.shape} ({got}). Use a map of the same "
                         "nside (healpy.ud_grade changes resolution).")
    if not nest:
        a = np.asarray(healpy.reorder(a, r2n=True))
    return torch.as_tensor(np.ascontiguousarray(a.T))


def write_healpix_map(mesh: Mesh, values: Any, path: str | os.PathLike) -> None:
    """Write cell values as a NESTED healpy FITS map (``healpy.write_map``), atomically.

    ``values`` of shape ``(n_cells,)`` or ``(n_cells, k)`` must be finite (use
    ``healpy.UNSEEN`` for masked pixels); their dtype is kept.
    """
    import healpy

    m = to_healpix_map(mesh, values)
    with _atomic(path, ".fits") as tmp:
        healpy.write_map(tmp, m, nest=True, overwrite=True, dtype=m.dtype)


def read_healpix_map(path: str | os.PathLike) -> np.ndarray:
    """Read a healpy FITS map in NESTED order (RING files are reordered).

    Returns
    -------
    ndarray, shape (npix,) or (k, npix)

    Raises
    ------
    MeshError
        Missing, unreadable or truncated file.
    """
    import healpy

    _check_file(path, "HEALPix map")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # astropy warns before it fails on a truncated file
            m = np.asarray(healpy.read_map(str(path), field=None, nest=True, dtype=None))
        return m.astype(m.dtype.newbyteorder("="))  # FITS is big-endian
    except Exception as err:  # astropy raises OSError, ValueError, TypeError...
        raise MeshError(f"HEALPix map {str(path)!r} cannot be read ({type(err).__name__}: {err}); "
                        "it is truncated or not a healpy FITS map. Rewrite it.") from err


# ------------------------------------------------------------------ UGRID
def _lonlat(xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Longitude in [-180, 180) and latitude in degrees of points ``(n, 3)``."""
    lon = np.degrees(np.arctan2(xyz[:, 1], xyz[:, 0]))
    lat = np.degrees(np.arcsin(np.clip(xyz[:, 2] / np.linalg.norm(xyz, axis=1), -1, 1)))
    return np.where(lon >= 180.0, lon - 360.0, lon), lat


def _attr(value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)
    return value if isinstance(value, (int, float, str, np.number)) else str(value)


def to_ugrid_dataset(mesh: Mesh, fields: Fields | None = None):
    """The mesh and cell fields as a UGRID-1.0 ``xarray.Dataset`` that uxarray opens.

    Nodes are our vertices, edges our interior faces then our boundary faces,
    faces our cells. On the sphere node/edge/face coordinates are lon/lat in
    degrees. On the plane they are ``mesh_node_x``/``mesh_node_y`` (etc.) with
    ``standard_name = projection_x/y_coordinate``: uxarray opens the grid,
    warns that it is projected, and its own geometry (great-circle areas...)
    does not apply; connectivity, fields and ``face_areas`` are right.
    Periodic planes keep their wrapped connectivity.

    uxarray takes ``face_areas`` from the file as ``Grid.face_areas`` (in our
    length units squared, so ``R² ×`` its unit-sphere areas when ``radius`` is
    not 1); ``Grid.compute_face_areas()`` recomputes its own.

    Parameters
    ----------
    mesh : Mesh
        A 2-D surface mesh (plane or sphere).
    fields : dict of str -> array, shape (n_cells,) or (time, n_cells), optional
        Data variables on ``("n_face",)`` or ``("time", "n_face")``.

    Returns
    -------
    xarray.Dataset
        With ``mesh`` (cf_role mesh_topology), ``face_node_connectivity``
        ``(n_face, n_max_face_nodes)`` (fill -1, start 0),
        ``edge_node_connectivity`` / ``edge_face_connectivity`` ``(n_edge, two)``,
        ``face_areas`` (our cell volumes, length units²), ``edge_length``,
        ``edge_normal`` ``(n_edge, n_coord)``, ``edge_cell_distance`` (0 on
        boundary edges), ``edge_boundary_tag`` (-1 interior), and global
        attributes ``meshclosure_info`` (JSON), ``radius``, ``n_interior_edge``.
    """
    import xarray as xr

    if mesh.dim == 1:
        raise ValueError(f"mesh must be a 2-D surface mesh for UGRID; got a 1-D column ({mesh!r}). "
                         "Write columns with write_vtu, or fields with numpy/xarray directly.")
    data = _check_fields(mesh, fields, time_first=True, reserved=_UGRID_RESERVED)
    g = mesh.double().to("cpu")
    n = lambda t: t.numpy()  # noqa: E731
    nb = g.n_boundary_faces
    edge_nodes = np.concatenate([n(g.face_vertices), n(g.boundary_face_vertices)], 1).T
    edge_faces = np.concatenate([n(g.face_cells), np.stack([n(g.boundary_face_cell),
                                                            np.full(nb, -1)])], 1).T
    conn = {"_FillValue": -1, "start_index": 0}
    ds = xr.Dataset(attrs={"Conventions": "UGRID-1.0", "meshclosure_info": json.dumps(
        {k: _attr(v) for k, v in g.info.items()}), "n_interior_edge": g.n_faces})
    ds["face_node_connectivity"] = (("n_face", "n_max_face_nodes"), n(g.cell_vertices).astype(
        np.int64), {**conn, "cf_role": "face_node_connectivity"})
    ds["edge_node_connectivity"] = (("n_edge", "two"), edge_nodes.astype(np.int64),
                                    {**conn, "cf_role": "edge_node_connectivity"})
    ds["edge_face_connectivity"] = (("n_edge", "two"), edge_faces.astype(np.int64),
                                    {**conn, "cf_role": "edge_face_connectivity"})
    if g.is_sphere:
        ds.attrs["radius"] = float(g.radius)
        names = ("lon", "lat")
        coords = {"node": _lonlat(n(g.vertex_pos)), "face": _lonlat(n(g.cell_center)),
                  "edge": _lonlat(np.concatenate([n(g.face_center), n(g.boundary_face_center)]))}
    else:
        names = ("x", "y")  # not edge_x/face_x: uxarray reserves those for 3-D Cartesian
        c = {"node": n(g.vertex_pos), "face": n(g.cell_center),
             "edge": np.concatenate([n(g.face_center), n(g.boundary_face_center)])}
        coords = {k: (v[:, 0], v[:, 1]) for k, v in c.items()}
        if g.period is not None:
            ds.attrs["period"] = np.asarray(g.period, dtype=np.float64)
    for where, (a, b) in coords.items():
        for name, values in zip(names, (a, b)):
            if g.is_sphere:
                var = f"{where}_{name}"
                attrs = {"units": "degrees_east" if name == "lon" else "degrees_north"}
            else:
                var = f"mesh_{where}_{name}"
                attrs = {"standard_name": f"projection_{name}_coordinate"}
            ds[var] = ((f"n_{where}",), values, attrs)
    edge_tag = np.r_[np.full(g.n_faces, -1), n(g.boundary_face_tag)]
    ds["face_areas"] = (("n_face",), n(g.cell_volume), {"long_name": "cell area (exact)"})
    ds["edge_length"] = (("n_edge",), np.r_[n(g.face_area), n(g.boundary_face_area)])
    ds["edge_normal"] = (("n_edge", "n_coord"), np.concatenate(
        [n(g.face_normal), n(g.boundary_face_normal)]),
        {"long_name": "unit normal from edge_face_connectivity[:, 0] to [:, 1] (outward on "
                      "boundary edges), Cartesian"})
    ds["edge_cell_distance"] = (("n_edge",), np.r_[n(g.cell_distance), np.zeros(nb)])
    ds["edge_boundary_tag"] = (("n_edge",), edge_tag, {
        "flag_values": np.arange(-1, len(g.boundary_tag_names)),
        "flag_meanings": " ".join(("interior",) + tuple(g.boundary_tag_names))})
    for name, a in data.items():
        ds[name] = (("n_face",) if a.ndim == 1 else ("time", "n_face"), a,
                    {"mesh": "mesh", "location": "face"})
    pre = "" if g.is_sphere else "mesh_"
    ds["mesh"] = ((), np.int32(-1), {
        "cf_role": "mesh_topology", "topology_dimension": 2,
        **{f"{w}_coordinates": f"{pre}{w}_{names[0]} {pre}{w}_{names[1]}"
           for w in ("node", "face", "edge")},
        "face_node_connectivity": "face_node_connectivity",
        "edge_node_connectivity": "edge_node_connectivity",
        "edge_face_connectivity": "edge_face_connectivity",
        "face_dimension": "n_face", "edge_dimension": "n_edge", "node_dimension": "n_node"})
    return ds


_UGRID_RESERVED = (
    "mesh", "face_node_connectivity", "edge_node_connectivity", "edge_face_connectivity",
    "face_areas", "edge_length", "edge_normal", "edge_cell_distance", "edge_boundary_tag",
    *(f"{pre}{w}_{c}" for pre in ("", "mesh_") for w in ("node", "face", "edge")
      for c in ("lon", "lat", "x", "y")))
"""Variable names the UGRID writer creates itself; fields may not use them."""


def write_ugrid(mesh: Mesh, fields: Fields | None, path: str | os.PathLike) -> None:
    """Write :func:`to_ugrid_dataset` to a netCDF-4 file, atomically."""
    ds = to_ugrid_dataset(mesh, fields)
    encoding = {name: {"_FillValue": None} for name in ds.data_vars
                if name not in ("face_node_connectivity", "edge_node_connectivity",
                                "edge_face_connectivity")}
    with _atomic(path, ".nc") as tmp:
        ds.to_netcdf(tmp, format="NETCDF4", engine="netcdf4", encoding=encoding)


def read_ugrid(path: str | os.PathLike):
    """Read a UGRID netCDF file into memory (integers kept, ``-1`` fill values kept).

    Returns
    -------
    xarray.Dataset

    Raises
    ------
    MeshError
        Missing, unreadable or truncated file.
    """
    import xarray as xr

    _check_file(path, "UGRID file")
    try:
        with xr.open_dataset(path, engine="netcdf4", mask_and_scale=False) as ds:
            return ds.load()
    except Exception as err:  # netCDF4/HDF5 raise OSError, RuntimeError, ValueError...
        raise MeshError(f"UGRID file {str(path)!r} cannot be read ({type(err).__name__}: {err}); "
                        "it is truncated or not netCDF. Rewrite it.") from err


# ------------------------------------------------------- exact mesh arrays
EXACT_MESH_DIMS = {
    "cell_center": ("n_face", "n_coord"), "cell_volume": ("n_face",),
    "face_cells": ("two", "n_interior_edge"), "face_normal": ("n_interior_edge", "n_coord"),
    "face_area": ("n_interior_edge",), "face_center": ("n_interior_edge", "n_coord"),
    "cell_distance": ("n_interior_edge",),
    "vertex_pos": ("n_mesh_vertex", "n_coord"), "face_vertices": ("two", "n_interior_edge"),
    "cell_vertices": ("n_face", "n_max_mesh_cell_vertices"),
    "boundary_face_cell": ("n_boundary_edge",),
    "boundary_face_vertices": ("two", "n_boundary_edge"),
    "boundary_face_normal": ("n_boundary_edge", "n_coord"),
    "boundary_face_area": ("n_boundary_edge",),
    "boundary_face_center": ("n_boundary_edge", "n_coord"),
    "boundary_face_tag": ("n_boundary_edge",),
}
"""Dims of every exact ``mesh_<field>`` variable. Cells share UGRID's ``n_face``; the
interior faces (``n_interior_edge``) and boundary faces (``n_boundary_edge``) have
their own dims, never ``n_edge`` (which is interior then boundary); ``n_mesh_vertex``
counts the mesh's own vertices, which for coarsened meshes include the fine vertices
along coarse faces that the UGRID nodes (``n_node``) leave out."""

EXACT_MESH_FORMAT = 1
"""Version of the exact-mesh layout (attribute ``meshclosure_mesh``)."""

_MESH_ATTRS = ("mesh_radius", "mesh_period", "mesh_boundary_tag_names", "mesh_info")


def exact_mesh_variables(mesh: Mesh):
    """Every array of ``mesh`` as ``mesh_<field>`` variables, so the mesh reads back bit for bit.

    Floating-point arrays are stored in float64, index arrays in int64. The
    scalars (radius, period, boundary tag names, info) are JSON global
    attributes ``mesh_radius``, ``mesh_period``, ``mesh_boundary_tag_names``,
    ``mesh_info``, and ``meshclosure_mesh`` holds the layout version.
    Merge the result into any dataset (``ds.merge(..., combine_attrs="override")``
    and ``ds.attrs.update(...)``); :func:`mesh_from_exact_variables` reads it back.

    Parameters
    ----------
    mesh : Mesh

    Returns
    -------
    xarray.Dataset
        Variables ``mesh_<field>`` with the dims in :data:`EXACT_MESH_DIMS`.

    Examples
    --------
    >>> from meshclosure.mesh import icosahedral
    >>> mesh = icosahedral(1)
    >>> ds = exact_mesh_variables(mesh)
    >>> ds["mesh_face_cells"].dims, ds.sizes["n_face"]
    (('two', 'n_interior_edge'), 80)
    >>> back = mesh_from_exact_variables(ds)
    >>> bool((back.cell_volume == mesh.cell_volume.double()).all())
    True
    >>> mesh_from_exact_variables(ds.drop_vars("mesh_face_area"))
    Traceback (most recent call last):
    ...
    meshclosure.mesh._mesh.MeshError: ds has no exact mesh variable 'mesh_face_area'; ...
    """
    import xarray as xr

    g = mesh.double().to("cpu")
    ds = xr.Dataset({f"mesh_{name}": (dims, getattr(g, name).numpy())
                     for name, dims in EXACT_MESH_DIMS.items()})
    ds.attrs.update({
        "meshclosure_mesh": EXACT_MESH_FORMAT,
        "mesh_radius": json.dumps(g.radius), "mesh_period": json.dumps(g.period),
        "mesh_boundary_tag_names": json.dumps(list(g.boundary_tag_names)),
        "mesh_info": json.dumps(g.info, sort_keys=True, default=str)})
    return ds


def _has_exact_mesh(ds) -> bool:
    return all(f"mesh_{name}" in ds.variables for name in EXACT_MESH_DIMS) and all(
        a in ds.attrs for a in _MESH_ATTRS)


def mesh_from_exact_variables(ds) -> Mesh:
    """The :class:`~meshclosure.mesh.Mesh` stored by :func:`exact_mesh_variables` (float64,
    bit-identical to the float64 mesh written).

    Parameters
    ----------
    ds : xarray.Dataset or mapping
        With every ``mesh_<field>`` variable and the ``mesh_*`` attributes.

    Raises
    ------
    MeshError
        A variable or attribute is missing (the message names it).
    """
    from .mesh._mesh import _INDEX_FIELDS

    arrays = {}
    for name in EXACT_MESH_DIMS:
        var = f"mesh_{name}"
        if var not in ds.variables:
            raise MeshError(f"ds has no exact mesh variable {var!r}; it was not written by "
                            "exact_mesh_variables (or was cut). Read the UGRID variables with "
                            "meshclosure.io.read_mesh instead, or rewrite the file.")
        a = np.asarray(ds[var].values)
        dtype = torch.long if name in _INDEX_FIELDS else torch.float64
        arrays[name] = torch.as_tensor(np.ascontiguousarray(a), dtype=dtype)
    missing = [a for a in _MESH_ATTRS if a not in ds.attrs]
    if missing:
        raise MeshError(f"ds has the exact mesh variables but not the attributes {missing}; "
                        "they were dropped (e.g. by a merge that discarded attributes). Copy the "
                        "attributes of exact_mesh_variables(mesh) onto the dataset.")
    period = json.loads(ds.attrs["mesh_period"])
    return Mesh(**arrays, boundary_tag_names=tuple(json.loads(ds.attrs["mesh_boundary_tag_names"])),
                radius=json.loads(ds.attrs["mesh_radius"]),
                period=tuple(period) if period is not None else None,
                info=json.loads(ds.attrs["mesh_info"]))
