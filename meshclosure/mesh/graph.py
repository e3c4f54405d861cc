"""A :class:`~meshclosure.mesh.Mesh` and cell fields as a ``torch_geometric`` graph.

Public as :mod:`meshclosure.graph`; it lives in the mesh package so that
:meth:`Mesh.to_graph` needs no late import of a module above the mesh.

Directed edges (DESIGN.md §2): ``edge_index = cat([face_cells, face_cells.flip(0)], 1)``,
so directed edge ``f`` and ``f + n_faces`` are the two senses of face ``f``.

Edge features are expressed in the local frame of the source cell, so they do
not depend on where the cell sits in global coordinates: on the plane the
frame is (x, y); on the sphere it is the local (east, north) tangent frame
(at the poles, where east is undefined, east is taken as ŷ × r̂).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

import torch
from torch import Tensor

if TYPE_CHECKING:                  # the mesh builds its graph with this module: no runtime import
    from ._mesh import Mesh

__all__ = ["to_graph", "local_frame", "EDGE_FEATURES"]

#: Names of the columns of ``edge_attr``.
EDGE_FEATURES = ("dx_1", "dx_2", "normal_1", "normal_2", "face_area", "cell_distance")


def local_frame(mesh: Mesh, points: Tensor) -> tuple[Tensor, Tensor]:
    """Unit tangent basis ``(e1, e2)`` at ``points (n, d)``: (x, y) on the plane,
    (east, north) on the sphere."""
    if not mesh.is_sphere:
        eye = torch.eye(2, dtype=points.dtype, device=points.device)
        return eye[0].expand(len(points), 2), eye[1].expand(len(points), 2)
    r = points / points.norm(dim=1, keepdim=True)
    z = torch.zeros_like(r)
    z[:, 2] = 1.0
    east = torch.linalg.cross(z, r)
    polar = east.norm(dim=1) < 1e-12
    if polar.any():
        xaxis = torch.zeros_like(r[polar])
        xaxis[:, 1] = 1.0
        east[polar] = torch.linalg.cross(xaxis, r[polar])
    east = east / east.norm(dim=1, keepdim=True)
    north = torch.linalg.cross(r, east)
    return east, north


def _stack_fields(mesh: Mesh, fields: Any) -> tuple[Tensor, tuple[str, ...]]:
    if fields is None:
        return torch.zeros(mesh.n_cells, 0, dtype=mesh.dtype, device=mesh.device), ()
    if isinstance(fields, Mapping):
        cols, names = [], []
        for name, value in fields.items():
            v = torch.as_tensor(value, device=mesh.device)
            if v.shape[:1] != (mesh.n_cells,):
                raise ValueError(f"field {name!r} must have n_cells = {mesh.n_cells} rows; got "
                                 f"shape {tuple(v.shape)}. Give one value (or row) per cell.")
            v = v.reshape(mesh.n_cells, -1).to(mesh.dtype)
            cols.append(v)
            names += [name] if v.shape[1] == 1 else [f"{name}_{k}" for k in range(v.shape[1])]
        return torch.cat(cols, 1), tuple(names)
    x = torch.as_tensor(fields, device=mesh.device)
    if x.shape[:1] != (mesh.n_cells,):
        raise ValueError(f"fields must have n_cells = {mesh.n_cells} rows; got shape "
                         f"{tuple(x.shape)}. Pass (n_cells,) or (n_cells, n_features), or a dict.")
    x = x.reshape(mesh.n_cells, -1).to(mesh.dtype)
    return x, tuple(f"x_{k}" for k in range(x.shape[1]))


def to_graph(mesh: Mesh, fields: Any = None):
    """Build a ``torch_geometric.data.Data`` for ``mesh``.

    Parameters
    ----------
    mesh : Mesh
    fields : Tensor (n_cells,) or (n_cells, n_features), or dict of name -> Tensor, optional
        Node features.

    Returns
    -------
    torch_geometric.data.Data
        ``x (n_cells, n_features)``; ``edge_index (2, 2 n_faces)``;
        ``edge_attr (2 n_faces, 6)`` with columns :data:`EDGE_FEATURES`: the
        source→target centre displacement and the face normal (pointing
        source→target) in the source cell's local frame, face area and centre
        distance; ``pos (n_cells, d)``; ``volume (n_cells,)``; ``face_sign
        (2 n_faces,)`` (+1 for the owner→neighbour sense, -1 for the other);
        ``n_faces``; ``feature_names``.

    Examples
    --------
    >>> from meshclosure.mesh import cartesian
    >>> g = to_graph(cartesian(4, 4), {"q": torch.arange(16.0)})
    >>> g.edge_index.shape[1] == 2 * 32, float(g.x[5, 0])
    (True, 5.0)
    """
    from torch_geometric.data import Data

    x, names = _stack_fields(mesh, fields)
    fc = mesh.face_cells
    edge_index = torch.cat([fc, fc.flip(0)], 1)
    src, dst = edge_index
    disp = mesh.cell_center[dst] - mesh.cell_center[src]
    if mesh.period is not None:
        for axis, length in enumerate(mesh.period):
            if length:
                disp[:, axis] -= length * torch.round(disp[:, axis] / length)
    ones = torch.ones(mesh.n_faces, dtype=mesh.dtype, device=mesh.device)
    sign = torch.cat([ones, -ones])
    normal = torch.cat([mesh.face_normal, mesh.face_normal]) * sign[:, None]
    if mesh.dim == 1:
        geom = [disp[:, :1], torch.zeros_like(disp[:, :1]), normal[:, :1],
                torch.zeros_like(normal[:, :1])]
    else:
        e1, e2 = local_frame(mesh, mesh.cell_center[src])
        geom = [(disp * e1).sum(1, keepdim=True), (disp * e2).sum(1, keepdim=True),
                (normal * e1).sum(1, keepdim=True), (normal * e2).sum(1, keepdim=True)]
    area = torch.cat([mesh.face_area, mesh.face_area])[:, None]
    dist = torch.cat([mesh.cell_distance, mesh.cell_distance])[:, None]
    edge_attr = torch.cat(geom + [area, dist], 1)
    return Data(x=x, edge_index=edge_index, edge_attr=edge_attr, pos=mesh.cell_center,
                volume=mesh.cell_volume, face_sign=sign, n_faces=mesh.n_faces,
                feature_names=names, num_nodes=mesh.n_cells)
