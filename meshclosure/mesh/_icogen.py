"""Generate the subdivided icosahedron and its Voronoi-like dual (pure numpy).

Conventions
-----------
*Orientation.* The level-0 icosahedron has a vertex at the north pole
``(0, 0, 1)`` and one at the south pole ``(0, 0, -1)``; the other ten lie on
two rings at latitude ``±atan(1/2)`` (about ±26.57°), the northern ring at
longitudes ``0°, 72°, ..., 288°`` and the southern ring at ``36°, 108°, ...,
324°``. This is the usual ICON/MPAS orientation (pole-centred, one northern
vertex on the prime meridian).

*Nesting.* Level ``L + 1`` is level ``L`` with every triangle split 1 -> 4 at
its edge midpoints, the midpoints projected radially onto the unit sphere
(``m = (a + b) / |a + b|``). Triangle ``t = (a, b, c)`` of level ``L`` has the
children ``4t = (a, m_ab, m_ca)``, ``4t + 1 = (m_ab, b, m_bc)``,
``4t + 2 = (m_ca, m_bc, c)`` and ``4t + 3 = (m_ab, m_bc, m_ca)`` (the centre),
so the level-``L`` ancestor of a level-``L + k`` triangle is ``index // 4**k``.
The vertices of level ``L`` are the first ``10 * 4**L + 2`` vertices of level
``L + 1``, bit for bit; the new midpoints follow, ordered by their sorted
parent-edge pair ``(lo, hi)``.

*Orientation of cells.* Every triangle, and every dual polygon, is
counter-clockwise seen from outside the sphere.

*Dual.* Dual cell ``i`` belongs to triangle-mesh vertex ``i``. Dual vertex
``t`` is the spherical circumcentre of triangle ``t`` (so dual vertices come in
triangle order). Dual cells are stored CSR-style: ``(offsets, connectivity)``
with ``connectivity[offsets[i]:offsets[i + 1]]`` the dual vertices of cell
``i``, counter-clockwise, starting with the lowest-numbered triangle around
vertex ``i``. Exactly 12 cells (the level-0 vertices) are pentagons, the rest
hexagons.
"""
from __future__ import annotations

import numpy as np

__all__ = [
    "icosahedral_triangles",
    "icosahedral_dual",
    "pad_polygons",
    "n_triangles",
    "n_vertices",
]


def n_triangles(level: int) -> int:
    """Number of triangles ``20 * 4**level`` of the level-``level`` mesh."""
    return 20 * 4**level


def n_vertices(level: int) -> int:
    """Number of vertices ``10 * 4**level + 2`` of the level-``level`` mesh."""
    return 10 * 4**level + 2


def _base_icosahedron() -> tuple[np.ndarray, np.ndarray]:
    """Level-0 icosahedron with a vertex at the north pole.

    Returns
    -------
    vertices : ndarray, shape (12, 3), float64
        Unit vectors: north pole, 5 northern-ring, 5 southern-ring vertices,
        south pole.
    triangles : ndarray, shape (20, 3), int64
        Counter-clockwise seen from outside: 5 northern cap, 10 belt
        (alternating up and down), 5 southern cap triangles.
    """
    z = 1.0 / np.sqrt(5.0)  # sin(atan(1/2))
    r = 2.0 / np.sqrt(5.0)  # cos(atan(1/2))
    k = np.arange(5)
    lon_n = 2.0 * np.pi * k / 5.0
    lon_s = lon_n + np.pi / 5.0
    north = np.stack([r * np.cos(lon_n), r * np.sin(lon_n), np.full(5, z)], axis=1)
    south = np.stack([r * np.cos(lon_s), r * np.sin(lon_s), np.full(5, -z)], axis=1)
    vertices = np.concatenate([[[0.0, 0.0, 1.0]], north, south, [[0.0, 0.0, -1.0]]])
    vertices /= np.linalg.norm(vertices, axis=1, keepdims=True)

    n = 1 + k  # northern ring indices
    n1 = 1 + (k + 1) % 5
    s = 6 + k  # southern ring indices (s[i] lies between n[i] and n1[i])
    s1 = 6 + (k + 1) % 5
    cap_n = np.stack([np.zeros(5, int), n, n1], axis=1)
    belt_up = np.stack([n, s, n1], axis=1)
    belt_down = np.stack([n1, s, s1], axis=1)
    cap_s = np.stack([np.full(5, 11), s1, s], axis=1)
    belt = np.stack([belt_up, belt_down], axis=1).reshape(10, 3)
    triangles = np.concatenate([cap_n, belt, cap_s]).astype(np.int64)
    return vertices, triangles


def _subdivide(vertices: np.ndarray, triangles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One nested 1 -> 4 subdivision step (see the module docstring)."""
    nv = len(vertices)
    a, b, c = triangles[:, 0], triangles[:, 1], triangles[:, 2]
    # the three edges of every triangle, as sorted pairs, keyed lo * nv + hi
    e0 = np.stack([a, b, c], axis=1)  # edge starts: ab, bc, ca
    e1 = np.stack([b, c, a], axis=1)
    lo, hi = np.minimum(e0, e1), np.maximum(e0, e1)
    keys = lo * np.int64(nv) + hi
    unique_keys, inverse = np.unique(keys.ravel(), return_inverse=True)
    mid_index = (nv + inverse).reshape(-1, 3)  # m_ab, m_bc, m_ca per triangle
    ulo, uhi = np.divmod(unique_keys, np.int64(nv))
    mids = vertices[ulo] + vertices[uhi]
    mids /= np.linalg.norm(mids, axis=1, keepdims=True)

    mab, mbc, mca = mid_index[:, 0], mid_index[:, 1], mid_index[:, 2]
    children = np.stack(
        [
            np.stack([a, mab, mca], axis=1),
            np.stack([mab, b, mbc], axis=1),
            np.stack([mca, mbc, c], axis=1),
            np.stack([mab, mbc, mca], axis=1),
        ],
        axis=1,
    ).reshape(-1, 3)
    return np.concatenate([vertices, mids]), children


def _check_level(level: int) -> int:
    if isinstance(level, bool) or not isinstance(level, (int, np.integer)) or level < 0:
        raise ValueError(
            f"Invalid level={level!r}: the subdivision level must be a "
            "non-negative integer (0 gives the 20-triangle icosahedron); pass e.g. level=4."
        )
    return int(level)


def icosahedral_triangles(level: int) -> tuple[np.ndarray, np.ndarray]:
    """Vertices and triangles of the icosahedron subdivided ``level`` times.

    Parameters
    ----------
    level : int
        Number of nested 1 -> 4 subdivisions, ``>= 0``.

    Returns
    -------
    vertices : ndarray, shape (n_vertices, 3), float64
        Unit vectors, ``n_vertices = 10 * 4**level + 2``; level ``L``'s
        vertices are the first vertices of level ``L + 1``, bit-identical.
    triangles : ndarray, shape (n_triangles, 3), int64
        Counter-clockwise from outside, ``n_triangles = 20 * 4**level``; the
        children of triangle ``t`` are ``4t .. 4t + 3`` one level up.

    Examples
    --------
    >>> v, t = icosahedral_triangles(2)
    >>> v.shape, t.shape
    ((162, 3), (320, 3))
    >>> icosahedral_triangles(-1)
    Traceback (most recent call last):
    ...
    ValueError: Invalid level=-1: the subdivision level must be a non-negative integer ...
    """
    level = _check_level(level)
    vertices, triangles = _base_icosahedron()
    for _ in range(level):
        vertices, triangles = _subdivide(vertices, triangles)
    return vertices, triangles


def _circumcentres(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Spherical circumcentres, shape (n_triangles, 3), of CCW triangles on the unit sphere."""
    a, b, c = (vertices[triangles[:, i]] for i in range(3))
    n = np.cross(b - a, c - a)
    return n / np.linalg.norm(n, axis=1, keepdims=True)


def icosahedral_dual(level: int) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Voronoi-like dual of :func:`icosahedral_triangles` (hexagons and 12 pentagons).

    Parameters
    ----------
    level : int
        Subdivision level of the underlying triangle mesh, ``>= 0``.

    Returns
    -------
    vertices : ndarray, shape (n_triangles, 3), float64
        Dual vertex ``t`` is the spherical circumcentre of triangle ``t``
        (unit vector), ``n_triangles = 20 * 4**level``.
    cells : tuple (offsets, connectivity)
        ``offsets`` : int64, shape (n_cells + 1,); ``connectivity`` : int64,
        shape (offsets[-1],). Cell ``i`` (one per triangle-mesh vertex,
        ``n_cells = 10 * 4**level + 2``) is
        ``connectivity[offsets[i]:offsets[i + 1]]``, counter-clockwise from
        outside, starting at the lowest-numbered triangle around vertex ``i``.
        Use :func:`pad_polygons` for a ``(n_cells, 6)`` array padded with -1.

    Examples
    --------
    >>> v, (offsets, conn) = icosahedral_dual(1)
    >>> v.shape, len(offsets) - 1, int((offsets[1:] - offsets[:-1] == 5).sum())
    ((80, 3), 42, 12)
    """
    tv, tri = icosahedral_triangles(level)
    nv, nt = len(tv), len(tri)
    # incidences (v, p, q, t): triangle t = (v, p, q) rotated so v comes first
    rot = np.stack([tri, np.roll(tri, -1, axis=1), np.roll(tri, -2, axis=1)], axis=1)
    inc = rot.reshape(-1, 3)  # row 3t + j: vertex tri[t, j] first
    inc_tri = np.repeat(np.arange(nt, dtype=np.int64), 3)
    v, p, q = inc[:, 0], inc[:, 1], inc[:, 2]
    # going counter-clockwise around v, triangle (v, p, q) is followed by (v, q, r)
    key = v * np.int64(nv) + p
    order = np.argsort(key, kind="stable")
    nxt = order[np.searchsorted(key[order], v * np.int64(nv) + q)]

    degree = np.bincount(v, minlength=nv)
    offsets = np.zeros(nv + 1, dtype=np.int64)
    np.cumsum(degree, out=offsets[1:])
    # start at the lowest-numbered triangle around each vertex (first incidence of v
    # in increasing triangle order), then follow nxt
    by_vertex = np.argsort(v, kind="stable")
    current = by_vertex[offsets[:-1]]
    walk = np.empty((nv, degree.max()), dtype=np.int64)
    for k in range(walk.shape[1]):
        walk[:, k] = inc_tri[current]
        current = nxt[current]
    mask = np.arange(walk.shape[1]) < degree[:, None]
    connectivity = walk[mask]
    return _circumcentres(tv, tri), (offsets, connectivity)


def pad_polygons(
    offsets: np.ndarray, connectivity: np.ndarray, width: int | None = None, fill: int = -1
) -> np.ndarray:
    """Ragged CSR polygons -> dense ``(n_cells, width)`` int64 array padded with ``fill``.

    Parameters
    ----------
    offsets : ndarray, shape (n_cells + 1,)
    connectivity : ndarray, shape (offsets[-1],)
    width : int, optional
        Columns of the result; defaults to the largest polygon size (6 for
        the icosahedral dual).
    fill : int
        Padding value after the last vertex of shorter polygons.

    Returns
    -------
    cells : ndarray, shape (n_cells, width), int64

    Examples
    --------
    >>> pad_polygons(np.array([0, 3, 7]), np.arange(7))
    array([[ 0,  1,  2, -1],
           [ 3,  4,  5,  6]])
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    sizes = np.diff(offsets)
    width = int(sizes.max(initial=0)) if width is None else int(width)
    if sizes.size and sizes.max() > width:
        raise ValueError(
            f"Invalid width={width}: the largest polygon has {int(sizes.max())} "
            "vertices; pass width=None to use the largest size."
        )
    out = np.full((len(sizes), width), fill, dtype=np.int64)
    mask = np.arange(width) < sizes[:, None]
    out[mask] = np.asarray(connectivity, dtype=np.int64)
    return out
