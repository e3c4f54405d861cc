"""Build a :class:`Mesh` from vertices and cell polygons.

Every adapter ends here, so the geometry is computed in one place:

* plane: shoelace areas and centroids, straight faces; with ``period`` the
  minimum-image convention is used for every displacement;
* sphere: exact spherical-polygon areas (signed Van Oosterom & Strackee 1983
  solid angles, doi:10.1109/TBME.1983.325207), exact centroids
  (``∫ r̂ dA = ½ Σ_e θ_e û_e`` over the great-circle edges), great-circle face
  lengths, normals tangent to the sphere at the face midpoint.

Small cells keep their digits: every sum that would cancel is taken relative
to a local origin (the plane's shoelace and the sphere's solid angle from the
first vertex, the sphere's centroid from the vertex mean, see
:func:`_sphere_centroid`; arc lengths from ``a × (b − a)``), so the rounding
error stays at a few ulp of the coordinates instead of growing like ε/h.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch
from scipy.spatial import cKDTree

from ._mesh import Mesh, MeshError

__all__ = ["from_polygons", "PolygonGeometry"]

TagFn = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple]


def _pad_cells(cells, n_vertices: int) -> np.ndarray:
    """Cells as a padded int64 array ``(n_cells, max_k)`` with -1 padding."""
    if isinstance(cells, np.ndarray) and cells.ndim == 2:
        padded = cells.astype(np.int64, copy=True)
    else:
        cells = [np.asarray(c, dtype=np.int64).ravel() for c in cells]
        if not cells:
            raise MeshError("cells is empty: a mesh needs at least one cell. "
                            "Pass a list of vertex-index polygons.")
        width = max(len(c) for c in cells)
        padded = np.full((len(cells), width), -1, dtype=np.int64)
        for i, c in enumerate(cells):
            padded[i, : len(c)] = c
    n_per = (padded >= 0).sum(1)
    # padding must be trailing
    bad_pad = np.nonzero((padded[:, :-1] < 0) & (padded[:, 1:] >= 0))[0]
    if bad_pad.size:
        raise MeshError(f"cells {bad_pad[:10].tolist()} have -1 padding before real "
                        "vertices; pad only at the end of a row.", cells=bad_pad[:10])
    few = np.nonzero(n_per < 3)[0]
    if few.size:
        raise MeshError(f"cells {few[:10].tolist()} have fewer than 3 vertices "
                        f"(counts {n_per[few[:10]].tolist()}); every cell must be a polygon "
                        "with >= 3 vertices. Remove degenerate cells.", cells=few[:10])
    out = np.nonzero((padded >= n_vertices).any(1))[0]
    if out.size:
        raise MeshError(f"cells {out[:10].tolist()} refer to vertex indices >= n_vertices="
                        f"{n_vertices}; fix the connectivity.", cells=out[:10])
    return padded


def _next_index(padded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-slot next vertex (wrapping around each polygon) and a validity mask."""
    n_per = (padded >= 0).sum(1)
    k = np.arange(padded.shape[1])[None, :]
    mask = k < n_per[:, None]
    nxt_slot = np.where(k + 1 < n_per[:, None], k + 1, 0)
    nxt = np.take_along_axis(padded, nxt_slot, axis=1)
    return nxt, mask


class PolygonGeometry:
    """Displacements, lengths and polygon integrals for plane or sphere (NumPy).

    Parameters
    ----------
    radius : float or None
        Sphere radius; None for the plane.
    period : tuple of float or None
        Periodic lengths per axis on the plane (0 for a non-periodic axis).

    Examples
    --------
    >>> import numpy as np
    >>> geo = PolygonGeometry(None, None)
    >>> area, centroid = geo.polygon_area_centroid(
    ...     np.array([[0., 0.], [2., 0.], [2., 1.], [0., 1.]]), np.array([[0, 1, 2, 3]]))
    >>> float(area[0]), centroid[0].tolist()
    (2.0, [1.0, 0.5])
    >>> PolygonGeometry(None, (1.0,)).wrap(np.array([[0.75, 0.0]])).tolist()
    [[-0.25, 0.0]]
    """

    def __init__(self, radius: float | None, period) -> None:
        self.radius = radius
        self.period = None if period is None else tuple(period)

    def wrap(self, d: np.ndarray) -> np.ndarray:
        if self.period is None:
            return d
        d = d.copy()
        for axis, length in enumerate(self.period):
            if length:
                d[..., axis] -= length * np.round(d[..., axis] / length)
        return d

    def into_domain(self, x: np.ndarray) -> np.ndarray:
        if self.period is None:
            return x
        x = x.copy()
        for axis, length in enumerate(self.period):
            if length:
                x[..., axis] = np.mod(x[..., axis], length)
        return x

    def polygon_area_centroid(self, v: np.ndarray, padded: np.ndarray):
        """Signed areas ``(n_cells,)`` and centroids ``(n_cells, d)``."""
        nxt, mask = _next_index(padded)
        first = padded[:, :1]
        if self.radius is None:
            p0 = v[first[:, 0]]
            a = self.wrap(v[np.where(mask, padded, 0)] - p0[:, None])
            b = self.wrap(v[np.where(mask, nxt, 0)] - p0[:, None])
            cross = (a[..., 0] * b[..., 1] - b[..., 0] * a[..., 1]) * mask
            area = 0.5 * cross.sum(1)
            with np.errstate(divide="ignore", invalid="ignore"):
                cen = ((a + b) * cross[..., None]).sum(1) / (6.0 * area[:, None])
            return area, self.into_domain(p0 + cen)
        u = v / self.radius
        # signed solid angle of the fan (u0, u_k, u_k+1); the triple product is taken of
        # the differences from the apex u0 (the same number, without the cancellation)
        u0 = u[first[:, 0]]
        uk = u[np.where(mask, padded, 0)]
        uk1 = u[np.where(mask, nxt, 0)]
        num = np.einsum("cd,ckd->ck", u0, np.cross(uk - u0[:, None], uk1 - u0[:, None]))
        den = 1.0 + np.einsum("cd,ckd->ck", u0, uk) + (uk * uk1).sum(-1) \
            + np.einsum("cd,ckd->ck", u0, uk1)
        omega = 2.0 * np.arctan2(num, den) * mask
        area = omega.sum(1) * self.radius**2
        return area, self.radius * _sphere_centroid(uk, uk1, mask)

    def segment(self, p: np.ndarray, q: np.ndarray):
        """Length, midpoint and unit normal (right of p -> q) of faces."""
        if self.radius is None:
            t = self.wrap(q - p)
            length = np.linalg.norm(t, axis=1)
            mid = self.into_domain(p + 0.5 * t)
            with np.errstate(divide="ignore", invalid="ignore"):
                normal = np.stack([t[:, 1], -t[:, 0]], 1) / length[:, None]
            return length, mid, normal
        a, b = p / self.radius, q / self.radius
        ab = np.cross(a, b - a)        # = a x b, without cancellation for short arcs
        s = np.linalg.norm(ab, axis=1)
        length = self.radius * np.arctan2(s, (a * b).sum(1))
        mid = a + b
        mid = self.radius * mid / np.linalg.norm(mid, axis=1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            normal = -ab / s[:, None]
        return length, mid, normal

    def distance(self, p: np.ndarray, q: np.ndarray) -> np.ndarray:
        if self.radius is None:
            return np.linalg.norm(self.wrap(q - p), axis=1)
        a, b = p / self.radius, q / self.radius
        return self.radius * np.arctan2(np.linalg.norm(np.cross(a, b - a), axis=1),
                                        (a * b).sum(1))


def _theta_minus_sin(theta: np.ndarray) -> np.ndarray:
    """``θ − sin θ`` to full relative precision (Taylor series below 1, direct above)."""
    t2 = theta * theta
    series = np.zeros_like(theta)
    for k in range(10, 0, -1):         # Σ_k (−1)^(k+1) θ^(2k+1) / (2k+1)!, Horner in θ²
        series = t2 * (1.0 / math.factorial(2 * k + 1) * (-1) ** (k + 1) + series)
    series = theta * series
    return np.where(theta < 1.0, series, theta - np.sin(theta))


def _norm2_minus_1(u: np.ndarray) -> np.ndarray:
    """``|u|² − 1`` of near-unit vectors ``(..., 3)`` to ~ε² (error-free products and sums).

    Each coordinate is split into 26-bit halves (Veltkamp), so ``x² = h² + 2hl + l²``
    with each product exact; the nine products are added with TwoSum (Knuth),
    carrying the errors.
    Deterministic in plain float64 arithmetic (no FMA, no extended precision).
    """
    hi = u * 134217729.0
    hi = hi - (hi - u)
    lo = u - hi
    total = np.full(u.shape[:-1], -1.0)
    err = np.zeros(u.shape[:-1])
    for i in range(u.shape[-1]):             # nine exact products, added with TwoSum
        for x in (hi[..., i] * hi[..., i], 2.0 * hi[..., i] * lo[..., i], lo[..., i] * lo[..., i]):
            s_ = total + x
            bb = s_ - total
            err += (total - (s_ - bb)) + (x - bb)
            total = s_
    return total + err


def _sphere_centroid(uk: np.ndarray, uk1: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Unit centroid directions ``(n_cells, 3)`` of spherical polygons with near-unit corners.

    ``∫ r̂ dA = ½ Σ_e θ_e (a_e × b_e) / sin θ_e`` over the great-circle edges
    ``a -> b``. For a small cell each term is O(h) and the sum O(h²), so the
    plain sum loses digits (relative error ε/h). It is evaluated relative to the
    local origin ``c`` (the vertex mean), with ``d = a − c`` and ``w = θ / sin θ``:
    ``a × b = c × (b − a) + d_a × d_b`` and ``Σ_e (b − a) = 0`` around a closed
    loop give ::

        Σ_e w_e a_e × b_e = c × Σ_e (w_e − 1)(d_b − d_a) + Σ_e w_e d_a × d_b

    whose terms are O(h³) and O(h²), with ``w − 1 = (θ − sin θ)/sin θ`` from its
    series and ``θ = 2 asin(|d_b − d_a| / 2)``. The offsets ``d`` are those of the
    exactly normalised corners, ``d = a − c − ½(|a|² − 1) a`` with ``|a|² − 1``
    from :func:`_norm2_minus_1`: a corner off the unit sphere by ε would
    otherwise shift the result by ε/h. Exact for any ``c``; the choice only sets
    the rounding, which stays at ε relative to the cell size (ε h²/A for a
    sliver of area A ≪ h², where the centroid itself is that ill-conditioned).
    """
    m = mask[..., None]
    c = (uk * m).sum(1) / m.sum(1)
    du = 0.5 * _norm2_minus_1(uk)[..., None]
    d = (uk - c[:, None] - du * uk) * m
    d1 = np.take_along_axis(d, _roll_index(mask)[..., None], axis=1) * m
    edge = d1 - d
    theta = 2.0 * np.arcsin(np.minimum(0.5 * np.linalg.norm(edge, axis=-1), 1.0))
    sin = np.sin(theta)
    with np.errstate(divide="ignore", invalid="ignore"):
        w_minus_1 = np.where(sin > 0, _theta_minus_sin(theta) / sin, 0.0)
    direction = 0.5 * (np.cross(c, (w_minus_1[..., None] * edge).sum(1))
                       + ((1.0 + w_minus_1)[..., None] * np.cross(d, d1)).sum(1))
    size = np.linalg.norm(direction, axis=1, keepdims=True)
    fallback = (uk * m).sum(1)
    direction = np.where(size > 0, direction, fallback)
    return direction / np.linalg.norm(direction, axis=1, keepdims=True)


def _roll_index(mask: np.ndarray) -> np.ndarray:
    """Slot of the next corner of each polygon slot ``(n_cells, k)`` (wrapping per polygon)."""
    n_per = mask.sum(1)
    k = np.arange(mask.shape[1])[None, :]
    return np.where(k + 1 < n_per[:, None], k + 1, 0)


def _check_vertices(v: np.ndarray, radius: float | None) -> np.ndarray:
    bad = np.nonzero(~np.isfinite(v).all(1))[0]
    if bad.size:
        raise MeshError(f"vertices {bad[:10].tolist()} have NaN or infinite coordinates "
                        f"(e.g. {v[bad[0]].tolist()}); every vertex needs finite coordinates. "
                        "Fix or remove them before building the mesh.")
    if radius is not None:
        r = np.linalg.norm(v, axis=1)
        off = np.nonzero(np.abs(r - radius) > 1e-6 * radius)[0]
        if off.size:
            raise MeshError(f"vertices {off[:10].tolist()} lie at distance {r[off[:3]].tolist()} "
                            f"from the origin, not on the sphere radius={radius}; pass "
                            "radius=None for a planar mesh or project the vertices.")
        v = v * (radius / r)[:, None]
    scale = np.ptp(v, axis=0).max() if len(v) > 1 else 1.0
    pairs = cKDTree(v).query_pairs(r=1e-9 * max(scale, 1e-300), output_type="ndarray")
    if len(pairs):
        raise MeshError(f"duplicated vertices: {pairs[:5].tolist()} (index pairs) sit at the same "
                        f"position, e.g. {v[pairs[0, 0]].tolist()}; merge them (meshio: "
                        "mesh.remove_orphaned_nodes / deduplicate points) so that neighbouring "
                        "cells share one vertex.")
    return v


def _faces_from_edges(padded: np.ndarray, n_vertices: int):
    """Undirected faces from the directed cell edges; checks manifoldness and orientation."""
    nxt, mask = _next_index(padded)
    cell = np.broadcast_to(np.arange(len(padded))[:, None], padded.shape)[mask]
    v_from, v_to = padded[mask], nxt[mask]
    if np.any(v_from == v_to):
        bad = np.unique(cell[v_from == v_to])
        raise MeshError(f"cells {bad[:10].tolist()} repeat a vertex on consecutive corners; "
                        "remove the repeated vertex.", cells=bad[:10])
    key = np.minimum(v_from, v_to) * n_vertices + np.maximum(v_from, v_to)
    order = np.argsort(key, kind="stable")
    key, cell, v_from, v_to = key[order], cell[order], v_from[order], v_to[order]
    start = np.r_[0, np.nonzero(np.diff(key))[0] + 1]
    count = np.diff(np.r_[start, len(key)])
    if np.any(count > 2):
        g = start[count > 2][0]
        cells = cell[g: g + count[count > 2][0]]
        raise MeshError(f"the face between vertices {v_from[g]} and {v_to[g]} is shared by "
                        f"{len(cells)} cells {cells.tolist()}; a face joins at most two cells. "
                        "Remove the overlapping cells or split the non-manifold edge.",
                        cells=cells)
    two, one = start[count == 2], start[count == 1]
    same_dir = v_from[two] == v_from[two + 1]
    if np.any(same_dir):
        bad = np.unique(np.c_[cell[two][same_dir], cell[two + 1][same_dir]])
        raise MeshError(f"cells {bad[:10].tolist()} are inconsistently oriented: neighbours "
                        "traverse their shared face in the same direction. List every cell's "
                        "vertices counter-clockwise (seen from outside the sphere).",
                        cells=bad[:10])
    c0, c1 = cell[two], cell[two + 1]
    if np.any(c0 == c1):
        bad = np.unique(c0[c0 == c1])
        raise MeshError(f"cells {bad[:10].tolist()} contain the same edge twice; "
                        "fix their connectivity.", cells=bad[:10])
    swap = c0 > c1          # owner = smaller cell index, for locality
    owner = np.where(swap, c1, c0)
    neigh = np.where(swap, c0, c1)
    fv0 = np.where(swap, v_from[two + 1], v_from[two])
    fv1 = np.where(swap, v_to[two + 1], v_to[two])
    order = np.lexsort((neigh, owner))
    interior = (np.stack([owner, neigh])[:, order], np.stack([fv0, fv1])[:, order])
    border = np.argsort(cell[one], kind="stable")
    boundary = (cell[one][border], np.stack([v_from[one], v_to[one]])[:, border])
    return interior, boundary


def _boundary_loops(bverts: np.ndarray) -> np.ndarray:
    """Connected component of each boundary face (through shared vertices)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    nb = bverts.shape[1]
    if nb == 0:
        return np.zeros(0, dtype=np.int64)
    verts, inv = np.unique(bverts.ravel(), return_inverse=True)
    inv = inv.reshape(2, nb)
    rows = np.r_[np.arange(nb), np.arange(nb)]
    cols = np.r_[inv[0], inv[1]] + nb
    n = nb + len(verts)
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    _, comp = np.unique(labels[:nb], return_inverse=True)
    return comp


def from_polygons(vertices, cells, *, radius: float | None = None, period=None,
                  cell_center=None, cell_volume=None, boundary_tags: TagFn | None = None,
                  info: dict | None = None, dtype: torch.dtype = torch.float64) -> Mesh:
    """Build a :class:`Mesh` from vertex coordinates and polygon cells.

    Parameters
    ----------
    vertices : array, shape (n_vertices, d)
        ``d = 2`` for the plane, ``d = 3`` for a sphere (``radius`` given).
    cells : list of int arrays, or int array shape (n_cells, k) padded with -1
        Vertex indices of each polygon, all counter-clockwise or all clockwise
        (seen from outside the sphere); clockwise meshes are flipped.
    radius : float, optional
        Sphere radius; vertices must lie on it (to 1e-6) and are projected.
    period : (lx, ly), optional
        Periodic lengths of a periodic plane; ``None`` or ``0`` for an axis
        that is not periodic.
    cell_center, cell_volume : array, optional
        Override the polygon centroids / areas (HEALPix uses its pixel centres
        and exact equal areas).
    boundary_tags : callable, optional
        ``f(face_center, face_normal, loop_id) -> (tags (n_b,) int, names)``.
        By default each boundary loop is a tag: ``"outer"`` for the loop(s)
        enclosing the domain, ``"hole_k"`` for the others.
    info : dict, optional
        Family and parameters stored on the mesh.

    Returns
    -------
    Mesh

    Raises
    ------
    MeshError
        Non-finite or duplicated vertices, faces shared by three cells,
        inconsistent orientation, zero-area cells.
    """
    v = np.asarray(vertices, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] not in (2, 3):
        raise MeshError(f"vertices must have shape (n_vertices, 2) or (n_vertices, 3); got "
                        f"{v.shape}. Use 2 columns for a plane, 3 for a sphere.")
    if v.shape[1] == 3 and radius is None:
        raise MeshError("vertices have 3 coordinates but radius=None; meshclosure handles "
                        "planar (x, y) meshes and spheres: pass radius=R for a sphere or drop "
                        "the z column for a plane.")
    if radius is not None and not (isinstance(radius, (int, float, np.floating))
                                   and np.isfinite(radius) and radius > 0):
        raise MeshError(f"radius must be a positive finite length; got radius={radius!r}. "
                         "Pass e.g. radius=1.0 (unit sphere) or 6.371e6 (Earth, metres).")
    info = dict(info or {})
    v = _check_vertices(v, radius)
    padded = _pad_cells(cells, len(v))
    geo = PolygonGeometry(radius, period)

    area, centroid = geo.polygon_area_centroid(v, padded)
    scale = np.abs(area).mean()
    tiny = np.nonzero(~(np.abs(area) > 1e-12 * scale))[0]
    if tiny.size:
        raise MeshError(f"cells {tiny[:10].tolist()} have zero area (areas "
                        f"{area[tiny[:5]].tolist()}); every cell needs a positive area. Remove "
                        "collapsed cells or fix their vertices.", cells=tiny[:10])
    negative = area < 0
    if negative.all():
        n_per = (padded >= 0).sum(1, keepdims=True)
        k = np.arange(padded.shape[1])[None, :]
        padded = np.take_along_axis(padded, np.where(k < n_per, n_per - 1 - k, k), axis=1)
        area = -area
    elif negative.any():
        minority = np.nonzero(negative if negative.sum() <= (~negative).sum() else ~negative)[0]
        raise MeshError(f"cells {minority[:10].tolist()} are oriented opposite to the rest "
                        f"({int(negative.sum())} clockwise, {int((~negative).sum())} "
                        "counter-clockwise); list every cell's vertices counter-clockwise.",
                        cells=minority[:10])

    (face_cells, face_vertices), (bcell, bverts) = _faces_from_edges(padded, len(v))
    length, mid, normal = geo.segment(v[face_vertices[0]], v[face_vertices[1]])
    blength, bmid, bnormal = geo.segment(v[bverts[0]], v[bverts[1]])
    if cell_center is None:
        cell_center = centroid
    if cell_volume is None:
        cell_volume = area
    cell_center = np.asarray(cell_center, dtype=np.float64)
    cell_volume = np.asarray(cell_volume, dtype=np.float64)
    dist = geo.distance(cell_center[face_cells[0]], cell_center[face_cells[1]])

    loops = _boundary_loops(bverts)
    if boundary_tags is not None:
        tags, names = boundary_tags(bmid, bnormal, loops)
        tags = np.asarray(tags, dtype=np.int64)
    else:
        tags, names = _default_tags(v, bverts, loops, geo)
    t = lambda a, dt=dtype: torch.as_tensor(np.ascontiguousarray(a), dtype=dt)  # noqa: E731
    return Mesh(
        cell_center=t(cell_center), cell_volume=t(cell_volume),
        face_cells=t(face_cells, torch.long), face_normal=t(normal), face_area=t(length),
        face_center=t(mid), cell_distance=t(dist), vertex_pos=t(v),
        face_vertices=t(face_vertices, torch.long), cell_vertices=t(padded, torch.long),
        boundary_face_cell=t(bcell, torch.long), boundary_face_vertices=t(bverts, torch.long),
        boundary_face_normal=t(bnormal.reshape(-1, v.shape[1])),
        boundary_face_area=t(blength), boundary_face_center=t(bmid.reshape(-1, v.shape[1])),
        boundary_face_tag=t(tags, torch.long), boundary_tag_names=tuple(names),
        radius=None if radius is None else float(radius),
        period=None if period is None else tuple(float(p) if p else 0.0 for p in period),
        info=info,
    )


def _default_tags(v, bverts, loops, geo) -> tuple[np.ndarray, Sequence[str]]:
    """One tag per boundary loop: 'outer' for enclosing loops, 'hole_k' otherwise."""
    n_loops = int(loops.max()) + 1 if loops.size else 0
    if n_loops == 0:
        return np.zeros(0, dtype=np.int64), ()
    if geo.radius is not None or geo.period is not None:
        names = [f"boundary_{k}" for k in range(n_loops)]
        return loops, names
    p, q = v[bverts[0]], v[bverts[1]]
    signed = np.bincount(loops, 0.5 * (p[:, 0] * q[:, 1] - q[:, 0] * p[:, 1]), n_loops)
    names, hole = [], 0
    for k in range(n_loops):
        if signed[k] > 0:
            names.append("outer" if (signed > 0).sum() == 1 else f"outer_{k}")
        else:
            names.append(f"hole_{hole}")
            hole += 1
    return loops, names
