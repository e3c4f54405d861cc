"""Cell polygons of a mesh as plain arrays, for the writers (VTU, UGRID) and the plots.

Shared by :mod:`meshclosure.io` and :mod:`meshclosure.plot`: polygons with the
periodic wrap undone per cell (for drawing and VTU) and polygons through each
cell's own corners (UGRID).

Examples
--------
>>> from meshclosure.mesh import cartesian
>>> points, cells = unwrapped_polygons(cartesian(3, 3, 3.0, 3.0))
>>> points.shape[1], cells.shape
(3, (9, 4))
>>> corner_polygons("not a mesh")
Traceback (most recent call last):
...
AttributeError: 'str' object has no attribute 'cell_vertices'
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .mesh import Mesh

__all__ = ["points3", "unwrapped_polygons", "corner_polygons"]


def points3(mesh: Mesh) -> np.ndarray:
    v = mesh.vertex_pos.detach().cpu().double().numpy()
    return np.c_[v, np.zeros((len(v), 3 - v.shape[1]))]


def unwrapped_polygons(mesh: Mesh) -> tuple[np.ndarray, np.ndarray]:
    """Points ``(n_points, 3)`` and padded cells with the periodic wrap undone per cell.

    Each cell's polygon is unwrapped from its first vertex, edge by edge (every
    edge is shorter than half a period); a vertex seen with a different
    periodic shift becomes a new point.
    """
    cells = mesh.cell_vertices.cpu().numpy()
    points = points3(mesh)
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


def corner_polygons(mesh: Mesh) -> tuple[np.ndarray, np.ndarray]:
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
