"""Meshes and cell fields in and out: VTU for ParaView, HEALPix maps for healpy, UGRID netCDF
for uxarray, and :func:`read_mesh` for every mesh file meshclosure writes.

Every writer refuses an existing ``path`` unless ``overwrite=True``
(:class:`~meshclosure.errors.OutputExistsError`, the file left untouched) and
is atomic: it writes a temporary file in the destination folder and renames
it onto ``path`` (``os.replace``), so a failed write leaves an existing file
untouched and no temporary file behind. Fields are validated (name,
``n_cells`` rows, finite) before anything is written.

VTU and UGRID files carry the exact mesh (:func:`exact_mesh_variables`), so
:func:`read_mesh` returns it bit for bit; UGRID polygons list the cells' own
corners only (no hanging fine vertices on coarse meshes), so uxarray derives
the stored edges.

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
from ._files import refuse_existing as _refuse
from .mesh import Mesh, MeshError

__all__ = ["write_vtu", "read_vtu", "to_healpix_map", "from_healpix_map", "write_healpix_map",
           "read_healpix_map", "to_ugrid_dataset", "write_ugrid", "read_ugrid",
           "exact_mesh_variables", "mesh_from_exact_variables", "EXACT_MESH_DIMS", "read_mesh",
           "mesh_from_ugrid"]

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


def _corner_polygons(mesh: Mesh) -> tuple[np.ndarray, np.ndarray]:
    """Cell polygons through the cells' own corners only, for UGRID.

    A polygon vertex is a *corner* when it ends a face: an interior face
    (where the cell's neighbour changes, i.e. a vertex shared by >= 3 cells,
    or a boundary meets an interior face) or a boundary face (where the
    boundary tag or the cell along the boundary changes). The other polygon
    vertices are the hanging fine vertices that :class:`Coarsening` keeps
    along each coarse face; dropping them makes each face one polygon edge
    from ``face_vertices[0]`` to ``face_vertices[1]``, so uxarray derives
    exactly the stored edges. On family meshes every vertex is a corner.

    A face whose two ends coincide (a closed loop) or whose end pair is shared
    with another face would collapse; the cells along such faces keep all
    their vertices (then uxarray derives more edges than the file states).

    Returns
    -------
    nodes : ndarray, shape (n_node,)
        Mesh vertices used as UGRID nodes, ascending.
    polygons : ndarray, shape (n_cells, n_max_face_nodes)
        Corners of each cell in node numbering, counter-clockwise, -1 padded.
    """
    cv = mesh.cell_vertices.cpu().numpy()
    ends = np.concatenate([mesh.face_vertices.cpu().numpy(),
                           mesh.boundary_face_vertices.cpu().numpy()], 1)
    corner = np.zeros(mesh.n_vertices, bool)
    corner[ends.ravel()] = True
    pairs = np.sort(ends, 0)
    _, inverse, counts = np.unique(pairs, axis=1, return_inverse=True, return_counts=True)
    bad = (pairs[0] == pairs[1]) | (counts[inverse.reshape(-1)] > 1)
    if bad.any():
        cells = np.r_[mesh.face_cells.cpu().numpy().reshape(2, -1)[:, bad[:mesh.n_faces]].ravel(),
                      mesh.boundary_face_cell.cpu().numpy()[bad[mesh.n_faces:]]]
        keep = cv[cells]
        corner[keep[keep >= 0]] = True
    while True:   # a cell with fewer than 3 corners keeps all its vertices
        n_corner = (np.where(cv >= 0, corner[np.maximum(cv, 0)], False)).sum(1)
        few = n_corner < np.minimum(3, (cv >= 0).sum(1))
        if not few.any():
            break
        keep = cv[few]
        corner[keep[keep >= 0]] = True
    is_corner = np.where(cv >= 0, corner[np.maximum(cv, 0)], False)
    order = np.argsort(~is_corner, axis=1, kind="stable")    # corners first, in polygon order
    packed = np.take_along_axis(np.where(is_corner, cv, -1), order, axis=1)
    packed = packed[:, : max(int(is_corner.sum(1).max()), 1)]
    nodes = np.nonzero(corner)[0]
    renumber = np.full(mesh.n_vertices, -1)
    renumber[nodes] = np.arange(len(nodes))
    return nodes, np.where(packed >= 0, renumber[np.maximum(packed, 0)], -1)


# -------------------------------------------------------------------- VTU
def write_vtu(mesh: Mesh, fields: Fields | None, path: str | os.PathLike,
              compression: str | None = "zlib", overwrite: bool = False,
              exact: bool = True) -> None:
    """Write cell fields on ``mesh`` as VTU cell data (ParaView), atomically.

    Cells are grouped into meshio blocks by polygon size (``triangle``,
    ``quad``, ``polygon``); the int cell-data array ``cell_index`` gives each
    block row's original cell. A 1-D column is written as ``line`` cells
    along x = z; planar points get z = 0; on a periodic plane each cell's
    polygon is unwrapped from its first vertex (wrapped vertices duplicated),
    so the cells tile the rectangle without overlap.

    The polygons are the cells' full outlines (for coarse meshes with the fine
    vertices along coarse faces, so agglomerated, non-convex cells draw as they
    are). With ``exact`` (default) every mesh array is also stored as VTK
    ``FieldData`` (``meshclosure_mesh_<field>``, ignored by ParaView's
    rendering), so :func:`read_mesh` gives back the mesh bit for bit;
    :func:`~meshclosure.mesh.from_meshio` instead rebuilds a mesh from the
    polygons, which for agglomerated coarse cells has one face per fine edge
    and fails ``validate()`` where a cell is not convex.

    Parameters
    ----------
    mesh : Mesh
    fields : dict of str -> array or Tensor, shape (n_cells,) or (n_cells, k), or None
        Finite values; ``"cell_index"`` is reserved.
    path : path-like
        Destination ``.vtu``; its folder must exist.
    compression : {"zlib", "lzma", None}
    overwrite : bool
        Replace an existing ``path`` (default: refuse it).
    exact : bool
        Store the exact mesh arrays as field data (default; the file grows
        about 8x, e.g. 0.3 -> 2.9 MB at 20,480 cells; ``False`` for
        display-only files).

    Raises
    ------
    OutputExistsError
        ``path`` exists and ``overwrite`` is False (the file is left untouched).
    ValueError
        A field with the wrong shape, a reserved name, or NaN/Inf (nothing written).
    FileNotFoundError, PermissionError
        The destination folder is missing or not writable.
    """
    import meshio

    _refuse(path, overwrite, name="path")
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
        if exact:
            _add_vtu_field_data(tmp, _exact_arrays(mesh), compression)


_VTU_PREFIX = "meshclosure_mesh_"
_VTU_TYPES = {np.dtype(np.float64): "Float64", np.dtype(np.int64): "Int64",
              np.dtype(np.uint8): "UInt8"}


def _exact_arrays(mesh: Mesh) -> dict[str, np.ndarray]:
    """The exact mesh arrays, flattened, with one JSON byte array of shapes and attributes."""
    ds = exact_mesh_variables(mesh)
    arrays = {name: np.ascontiguousarray(ds[name].values) for name in ds.data_vars}
    meta = {"attrs": {k: _attr(v) for k, v in ds.attrs.items()},
            "shapes": {name: list(a.shape) for name, a in arrays.items()}}
    out = {_VTU_PREFIX + name[len("mesh_"):]: a.reshape(-1) for name, a in arrays.items()}
    out[_VTU_PREFIX + "json"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    return out


def _add_vtu_field_data(path: str, arrays: Mapping[str, np.ndarray],
                        compression: str | None) -> None:
    """Insert ``<FieldData>`` with ``arrays`` into the VTU file meshio wrote at ``path``,
    encoded as meshio/VTK binary (UInt32 headers, one block, compressed as the file)."""
    import base64
    import lzma
    import zlib

    blocks = []
    for name, a in arrays.items():
        raw = np.ascontiguousarray(a, a.dtype.newbyteorder("=")).tobytes()
        if compression:
            packed = {"zlib": zlib, "lzma": lzma}[compression].compress(raw)
            header = np.array([1, len(raw), len(raw), len(packed)], np.uint32)
            text = base64.b64encode(header.tobytes()).decode() + base64.b64encode(packed).decode()
        else:
            text = base64.b64encode(np.array(len(raw), np.uint32).tobytes() + raw).decode()
        blocks.append(f'<DataArray type="{_VTU_TYPES[a.dtype]}" Name="{name}" '
                      f'NumberOfTuples="{a.size}" format="binary">\n{text}\n</DataArray>\n')
    xml = Path(path).read_bytes()
    tag = b"<UnstructuredGrid>"
    at = xml.index(tag) + len(tag)
    note = (b"\n<!--meshclosure: FieldData meshclosure_mesh_* holds the exact finite-volume mesh "
            b"(flattened arrays; shapes and attributes in meshclosure_mesh_json). Read it with "
            b"meshclosure.io.read_mesh(path) or `meshclosure mesh PATH`: rebuilding cells from "
            b"the polygons (meshio, from_meshio) gives one face per polygon edge, and coarse "
            b"agglomerated cells are not convex.-->")
    Path(path).write_bytes(xml[:at] + note + b"\n<FieldData>\n" + "".join(blocks).encode()
                           + b"</FieldData>" + xml[at:])


def _exact_from_vtu(m) -> Mesh | None:
    """The exact mesh stored by :func:`write_vtu` in a meshio mesh's field data, or None."""
    import xarray as xr

    key = _VTU_PREFIX + "json"
    if key not in m.field_data:
        return None
    meta = json.loads(np.asarray(m.field_data[key], np.uint8).tobytes().decode())
    ds = xr.Dataset(attrs=meta["attrs"])
    for name, shape in meta["shapes"].items():
        a = np.asarray(m.field_data[_VTU_PREFIX + name[len("mesh_"):]]).reshape(shape)
        ds[name] = (tuple(f"{name}_{k}" for k in range(len(shape))), a)
    return mesh_from_exact_variables(ds)


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


def write_healpix_map(mesh: Mesh, values: Any, path: str | os.PathLike,
                      overwrite: bool = False) -> None:
    """Write cell values as a NESTED healpy FITS map (``healpy.write_map``), atomically.

    ``values`` of shape ``(n_cells,)`` or ``(n_cells, k)`` must be finite (use
    ``healpy.UNSEEN`` for masked pixels); their dtype is kept. An existing
    ``path`` is refused (:class:`~meshclosure.errors.OutputExistsError`, file
    untouched) unless ``overwrite``.
    """
    import healpy

    _refuse(path, overwrite, name="path")
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


def _area_notes(mesh: Mesh, polygons: np.ndarray, nodes: np.ndarray) -> dict:
    """Attributes of ``face_areas``: which areas are exact, and how the areas of the written
    polygons (what uxarray recomputes) differ from them."""
    from .mesh._build import _Geometry

    g = mesh.double().to("cpu")
    info = g.info
    if "coarsened_from" in info or info.get("family") == "coarsened":
        method = ("exact: each is the sum of the exact areas of the fine cells of the coarse "
                  "cell (meshclosure.mesh.Coarsening)")
    elif info.get("family") == "healpix":
        method = "exact: HEALPix equal pixel areas 4 pi R^2 / (12 nside^2)"
    elif g.is_sphere:
        method = "exact: spherical polygons with great-circle edges (Van Oosterom & Strackee 1983)"
    else:
        method = "exact: planar polygons (shoelace)"
    geo = _Geometry(g.radius, g.period)
    area, _ = geo.polygon_area_centroid(g.vertex_pos.numpy()[nodes], polygons)
    exact = g.cell_volume.numpy()
    rel = np.abs(np.abs(area) - exact) / exact
    total = abs(np.abs(area).sum() / exact.sum() - 1)
    edges = "great-circle" if g.is_sphere else "straight"
    notes = {
        "area_method": method,
        "polygon_area_max_rel_diff": float(rel.max()),
        "polygon_area_total_rel_diff": float(total),
        "polygon_area_note": (
            f"areas of the polygons in face_node_connectivity with {edges} edges between "
            f"their nodes differ from face_areas by at most {rel.max():.3g} per cell (relative) "
            f"and {total:.3g} in total"
            + ("; the nodes are the cells' corners only, so for coarse cells whose faces are "
               "chains of fine edges that do not lie on one great circle or line (HEALPix, "
               "agglomerated cells) the polygon is only an approximation of the cell"
               if "coarsened_from" in info or info.get("family") == "coarsened" else "")
            + ("; HEALPix pixel edges are not great circles" if info.get("family") == "healpix"
               or info.get("fine_family") == "healpix" else "")),
    }
    if g.is_sphere:
        notes["uxarray_note"] = (
            "uxarray Grid.compute_face_areas() recomputes areas of these great-circle polygons "
            "on the unit sphere: multiply by radius**2 to compare with face_areas; with "
            "quadrature_rule='gaussian', order=10 they equal the polygon areas above to "
            "rounding, with the default (triangular, order 4) to about 1e-6 on small cells "
            "and 1e-5 on cells of the size of an icosahedron face; Grid.face_areas is "
            "face_areas as stored")
    else:
        notes["uxarray_note"] = (
            "planar mesh: uxarray computes areas on the unit sphere only, so "
            "Grid.compute_face_areas() treats x/y as longitude/latitude in degrees and is not a "
            "planar area; use face_areas (uxarray's Grid.face_areas reads it)"
            + ("; cells across the periodic seam keep their wrapped connectivity" if
               g.period is not None else ""))
    return notes


def to_ugrid_dataset(mesh: Mesh, fields: Fields | None = None, exact: bool = False):
    """The mesh and cell fields as a UGRID-1.0 ``xarray.Dataset`` that uxarray opens.

    Nodes are the cells' corners (:func:`_corner_polygons`: on coarse meshes
    the fine vertices hanging along coarse faces are left out, so uxarray
    derives exactly the ``n_edge`` edges stored), edges our interior faces
    then our boundary faces, faces our cells. On the sphere node/edge/face
    coordinates are lon/lat in degrees. On the plane they are
    ``mesh_node_x``/``mesh_node_y`` (etc.) with ``standard_name =
    projection_x/y_coordinate``: uxarray opens the grid and warns that it is
    projected; its own geometry (areas on the unit sphere...) does not apply
    there, connectivity, fields and ``face_areas`` are right. Periodic planes
    keep their wrapped connectivity.

    ``face_areas`` are exact (attribute ``area_method``); the attributes
    ``polygon_area_max_rel_diff`` / ``polygon_area_total_rel_diff`` /
    ``polygon_area_note`` say how far the areas of the written polygons (what
    ``uxarray.Grid.compute_face_areas()`` recomputes, on the unit sphere: times
    ``radius**2``) are from them: to rounding on icosahedral and Cartesian
    meshes, a few per cent per cell on HEALPix (pixel edges are not great
    circles), more on agglomerated coarse cells (their faces zigzag).

    Parameters
    ----------
    mesh : Mesh
        A 2-D surface mesh (plane or sphere).
    fields : dict of str -> array, shape (n_cells,) or (time, n_cells), optional
        Data variables on ``("n_face",)`` or ``("time", "n_face")``.
    exact : bool
        Also store every mesh array (:func:`exact_mesh_variables`), so
        :func:`read_mesh` gives back the mesh bit for bit.

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
    nodes, polygons = _corner_polygons(g)
    nb = g.n_boundary_faces
    edge_nodes = np.searchsorted(nodes, np.concatenate([n(g.face_vertices),
                                                        n(g.boundary_face_vertices)], 1).T)
    edge_faces = np.concatenate([n(g.face_cells), np.stack([n(g.boundary_face_cell),
                                                            np.full(nb, -1)])], 1).T
    conn = {"_FillValue": -1, "start_index": 0}
    ds = xr.Dataset(attrs={"Conventions": "UGRID-1.0", "meshclosure_info": json.dumps(
        {k: _attr(v) for k, v in g.info.items()}), "n_interior_edge": g.n_faces})
    ds["face_node_connectivity"] = (("n_face", "n_max_face_nodes"), polygons.astype(np.int64),
                                    {**conn, "cf_role": "face_node_connectivity"})
    ds["edge_node_connectivity"] = (("n_edge", "two"), edge_nodes.astype(np.int64),
                                    {**conn, "cf_role": "edge_node_connectivity"})
    ds["edge_face_connectivity"] = (("n_edge", "two"), edge_faces.astype(np.int64),
                                    {**conn, "cf_role": "edge_face_connectivity"})
    vertex = n(g.vertex_pos)[nodes]
    if g.is_sphere:
        ds.attrs["radius"] = float(g.radius)
        names = ("lon", "lat")
        coords = {"node": _lonlat(vertex), "face": _lonlat(n(g.cell_center)),
                  "edge": _lonlat(np.concatenate([n(g.face_center), n(g.boundary_face_center)]))}
    else:
        names = ("x", "y")  # not edge_x/face_x: uxarray reserves those for 3-D Cartesian
        c = {"node": vertex, "face": n(g.cell_center),
             "edge": np.concatenate([n(g.face_center), n(g.boundary_face_center)])}
        coords = {k: (v[:, 0], v[:, 1]) for k, v in c.items()}
        if g.period is not None:
            ds.attrs["period"] = np.asarray([p or 0.0 for p in g.period], dtype=np.float64)
    for where, (a, b) in coords.items():
        for name, values in zip(names, (a, b)):
            if g.is_sphere:
                var = f"{where}_{name}"
                attrs = {"units": "degrees_east" if name == "lon" else "degrees_north",
                         "standard_name": "longitude" if name == "lon" else "latitude"}
            else:
                var = f"mesh_{where}_{name}"
                attrs = {"standard_name": f"projection_{name}_coordinate", "units": "1",
                         "long_name": f"{name} in the mesh's length unit"}
            ds[var] = ((f"n_{where}",), values, attrs)
    edge_tag = np.r_[np.full(g.n_faces, -1), n(g.boundary_face_tag)]
    ds["face_areas"] = (("n_face",), n(g.cell_volume), {
        "long_name": "cell area (exact)", "standard_name": "cell_area", "units": "1",
        "comment": "in the mesh's length unit squared (meshclosure meshes are non-dimensional; "
                   "on the sphere the unit is radius / R)", **_area_notes(g, polygons, nodes)})
    ds["edge_length"] = (("n_edge",), np.r_[n(g.face_area), n(g.boundary_face_area)],
                         {"long_name": "face length (great-circle arc on the sphere)"})
    ds["edge_normal"] = (("n_edge", "n_coord"), np.concatenate(
        [n(g.face_normal), n(g.boundary_face_normal)]),
        {"long_name": "unit normal from edge_face_connectivity[:, 0] to [:, 1] (outward on "
                      "boundary edges), Cartesian", "units": "1"})
    ds["edge_cell_distance"] = (("n_edge",), np.r_[n(g.cell_distance), np.zeros(nb)],
                                {"long_name": "distance between the centres of the two cells "
                                              "(0 on boundary edges)"})
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
    if exact:
        extra = exact_mesh_variables(g)
        ds = ds.merge(extra, combine_attrs="override")
        ds.attrs.update(extra.attrs)
    return ds


_UGRID_RESERVED = (
    "mesh", "face_node_connectivity", "edge_node_connectivity", "edge_face_connectivity",
    "face_areas", "edge_length", "edge_normal", "edge_cell_distance", "edge_boundary_tag",
    *(f"{pre}{w}_{c}" for pre in ("", "mesh_") for w in ("node", "face", "edge")
      for c in ("lon", "lat", "x", "y")))
"""Variable names the UGRID writer creates itself; fields may not use them."""


def write_ugrid(mesh: Mesh, fields: Fields | None, path: str | os.PathLike,
                overwrite: bool = False, exact: bool = True) -> None:
    """Write :func:`to_ugrid_dataset` to a netCDF-4 file, atomically.

    Parameters
    ----------
    mesh, fields
        As for :func:`to_ugrid_dataset`.
    path : path-like
        Destination ``.nc``; its folder must exist.
    overwrite : bool
        Replace an existing ``path`` (default: refuse it with
        :class:`~meshclosure.errors.OutputExistsError`, file untouched).
    exact : bool
        Also store the exact mesh arrays (default), so :func:`read_mesh`
        returns the mesh bit for bit; without them it rebuilds the mesh from
        the UGRID polygons.
    """
    _refuse(path, overwrite, name="path")
    ds = to_ugrid_dataset(mesh, fields, exact=exact)
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
    "cell_center": ("n_face", "n_mesh_coord"), "cell_volume": ("n_face",),
    "face_cells": ("two", "n_interior_edge"), "face_normal": ("n_interior_edge", "n_mesh_coord"),
    "face_area": ("n_interior_edge",), "face_center": ("n_interior_edge", "n_mesh_coord"),
    "cell_distance": ("n_interior_edge",),
    "vertex_pos": ("n_mesh_vertex", "n_mesh_coord"), "face_vertices": ("two", "n_interior_edge"),
    "cell_vertices": ("n_face", "n_mesh_cell_vertices"),
    "boundary_face_cell": ("n_boundary_edge",),
    "boundary_face_vertices": ("two", "n_boundary_edge"),
    "boundary_face_normal": ("n_boundary_edge", "n_mesh_coord"),
    "boundary_face_area": ("n_boundary_edge",),
    "boundary_face_center": ("n_boundary_edge", "n_mesh_coord"),
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
        a = np.array(ds[var].values)   # a writable copy
        dtype = torch.long if name in _INDEX_FIELDS else torch.float64
        arrays[name] = torch.as_tensor(a, dtype=dtype)
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


# --------------------------------------------------------- reading meshes
_NETCDF_SUFFIXES = (".nc", ".nc4", ".netcdf", ".cdf")


def _open_xarray(path: Path):
    """``path`` opened lazily with xarray (netCDF or zarr), integers and fill values kept."""
    import xarray as xr

    zarr = path.is_dir() or path.suffix.lower() == ".zarr"
    engine = "zarr" if zarr else "netcdf4"
    try:
        with warnings.catch_warnings():   # a store without consolidated metadata reads fine
            warnings.filterwarnings("ignore", "Failed to open Zarr store with consolidated",
                                    RuntimeWarning)
            return xr.open_dataset(path, engine=engine, mask_and_scale=False, chunks=None)
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
    from .mesh.meshio_adapter import from_meshio, read_meshio

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
    from .mesh import from_polygons

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
