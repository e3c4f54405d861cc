"""The exact mesh as ``mesh_<field>`` variables: written with every dataset and mesh
file, read back bit for bit."""
from __future__ import annotations

import json

import numpy as np
import torch

from ..mesh import Mesh, MeshError


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
    arrays = {}
    for name in EXACT_MESH_DIMS:
        var = f"mesh_{name}"
        if var not in ds.variables:
            raise MeshError(f"ds has no exact mesh variable {var!r}; it was not written by "
                            "exact_mesh_variables (or was cut). Read the UGRID variables with "
                            "meshclosure.io.read_mesh instead, or rewrite the file.")
        a = np.array(ds[var].values)   # a writable copy
        dtype = torch.long if np.issubdtype(a.dtype, np.integer) else torch.float64
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
