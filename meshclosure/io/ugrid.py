"""UGRID-1.0 netCDF for uxarray: the mesh topology, cell fields and exact mesh arrays."""
from __future__ import annotations

import json
import os

import numpy as np

from .._files import atomic_path as _atomic
from .._files import refuse_existing as _refuse
from .._polygons import corner_polygons as _corner_polygons
from ..mesh import Mesh, MeshError, PolygonGeometry
from ._common import Fields, _attr, _check_fields, _check_file, _lonlat
from .exact import exact_mesh_variables


def _area_notes(mesh: Mesh, polygons: np.ndarray, nodes: np.ndarray) -> dict:
    """Attributes of ``face_areas``: which areas are exact, and how the areas of the written
    polygons (what uxarray recomputes) differ from them."""
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
    geo = PolygonGeometry(g.radius, g.period)
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
