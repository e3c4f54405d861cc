"""Irregular sphere meshes: Delaunay triangulations of clustered random points.

The meshes users make with their own tools (a Delaunay triangulation of
observation sites, a jittered or refined point set) are not the smooth families
meshclosure builds itself: they have *slivers* (triangles with a tiny angle)
and cell areas varying by orders of magnitude. :func:`irregular_sphere` makes
such a mesh, deterministically from a seed, to test the solver where it is
weakest (see :meth:`meshclosure.mesh.Mesh.quality` and the warning of
:meth:`meshclosure.mesh.Mesh.validate`).

The triangulation is the convex hull of the points (for points on a sphere the
hull's facets are exactly the spherical Delaunay triangles: no point lies
inside any facet's circumcircle on the sphere), each triangle oriented
counter-clockwise seen from outside, and the mesh is built by
:func:`~meshclosure.mesh.from_polygons` (exact spherical geometry).
"""
from __future__ import annotations

import numpy as np

from ..errors import ArgumentError
from ._mesh import Mesh

__all__ = ["irregular_sphere", "jittered_sphere"]


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def irregular_sphere(n_points: int, seed: int = 0, clusters: int = 4,
                     cluster_fraction: float = 0.5, spread: float = 0.15,
                     radius: float = 1.0) -> Mesh:
    """Delaunay triangulation of a clustered random point set on the sphere.

    ``n_points`` points: a fraction ``1 − cluster_fraction`` uniform on the
    sphere, the rest split evenly between ``clusters`` clusters, each a
    Gaussian blob of angular standard deviation ``spread`` (radians, in the
    tangent plane of a random centre, mapped back with the exponential map).
    The triangulation has ``2 n_points − 4`` triangles (Euler). Random points
    give slivers (a few thousand points give smallest angles well below 1°)
    and the clusters give areas varying by far more than 10³ (see
    :meth:`~meshclosure.mesh.Mesh.quality`); :meth:`Mesh.validate` warns on
    such meshes with :class:`~meshclosure.mesh.MeshQualityWarning`.

    Parameters
    ----------
    n_points : int
        Number of points (mesh vertices), ``>= 4``.
    seed : int
        Seed of the NumPy generator; the mesh is a pure function of the
        arguments (same seed, same mesh, bit for bit).
    clusters : int
        Number of clusters, ``>= 0`` (0: uniform random points).
    cluster_fraction : float
        Fraction of the points in clusters, in ``[0, 1]``.
    spread : float
        Angular standard deviation of each cluster in radians, ``> 0``.
    radius : float
        Sphere radius.

    Returns
    -------
    Mesh
        ``info = {"family": "irregular", "n_points": ..., "seed": ..., "clusters": ...,
        "cluster_fraction": ..., "spread": ...}``; ``2 n_points − 4`` triangular cells.

    Examples
    --------
    >>> mesh = irregular_sphere(500, seed=1)
    >>> mesh.n_cells, mesh.euler_characteristic()
    (996, 2)
    >>> q = mesh.quality()
    >>> q["min_angle"] < 5.0 and q["area_ratio"] > 100
    True
    >>> irregular_sphere(3)
    Traceback (most recent call last):
    ...
    meshclosure.errors.ArgumentError: n_points=3: must be an integer >= 4 (a closed triangulated sphere needs 4 points); pass e.g. n_points=2000.
    """
    from ._build import from_polygons

    if isinstance(n_points, bool) or not isinstance(n_points, (int, np.integer)) or n_points < 4:
        raise ArgumentError("n_points", n_points, "must be an integer >= 4 (a closed "
                            "triangulated sphere needs 4 points)", "pass e.g. n_points=2000")
    if isinstance(clusters, bool) or not isinstance(clusters, (int, np.integer)) or clusters < 0:
        raise ArgumentError("clusters", clusters, "must be an integer >= 0",
                            "pass e.g. clusters=4, or 0 for uniform random points")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ArgumentError("seed", seed, "must be an integer >= 0", "pass e.g. seed=0")
    for name, value in (("cluster_fraction", cluster_fraction), ("spread", spread)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer,
                                                             np.floating)):
            raise ArgumentError(name, value, "must be a number", f"pass e.g. {name}="
                                + ("0.5" if name == "cluster_fraction" else "0.15"))
    if not 0.0 <= float(cluster_fraction) <= 1.0:
        raise ArgumentError("cluster_fraction", cluster_fraction, "must lie in [0, 1]",
                            "pass e.g. cluster_fraction=0.5")
    if not (float(spread) > 0 and np.isfinite(spread)):
        raise ArgumentError("spread", spread, "must be a positive finite angle in radians",
                            "pass e.g. spread=0.15")
    rng = np.random.default_rng(seed)
    n_points = int(n_points)
    n_cluster = int(round(cluster_fraction * n_points)) if clusters else 0
    n_uniform = n_points - n_cluster
    points = [_unit(rng.standard_normal((n_uniform, 3)))]
    centres = _unit(rng.standard_normal((max(clusters, 1), 3)))
    sizes = np.full(max(clusters, 1), n_cluster // max(clusters, 1))
    sizes[: n_cluster - sizes.sum()] += 1
    for c, m in zip(centres, sizes if clusters else []):
        # orthonormal tangent basis at c, Gaussian offsets, exponential map
        e1 = _unit(np.cross(c, [1.0, 0.0, 0.0] if abs(c[0]) < 0.9 else [0.0, 1.0, 0.0]))
        e2 = np.cross(c, e1)
        xy = float(spread) * rng.standard_normal((int(m), 2))
        angle = np.linalg.norm(xy, axis=1, keepdims=True)
        direction = np.where(angle > 0, xy / np.where(angle > 0, angle, 1.0), 0.0)
        tangent = direction[:, :1] * e1 + direction[:, 1:] * e2
        points.append(_unit(np.cos(angle) * c + np.sin(angle) * tangent))
    v = np.concatenate(points)
    tri = _hull_triangles(v)
    if tri is None:                  # the origin outside the hull: the points surround it not
        raise ArgumentError("cluster_fraction", cluster_fraction, f"with spread={spread} "
                            f"leaves the {n_points} points in part of the sphere only (their "
                            "hull does not enclose the centre, so they triangulate no closed "
                            "sphere)", "lower cluster_fraction (keep uniform points) or raise "
                            "spread")
    info = {"family": "irregular", "n_points": n_points, "seed": int(seed),
            "clusters": int(clusters), "cluster_fraction": float(cluster_fraction),
            "spread": float(spread)}
    return from_polygons(v * float(radius), tri, radius=float(radius), info=info)


def _hull_triangles(v: np.ndarray):
    """Delaunay triangles of unit vectors ``v`` (their convex hull), counter-clockwise seen
    from outside, in a fixed order; ``None`` when the hull does not enclose the origin."""
    from scipy.spatial import ConvexHull

    hull = ConvexHull(v)
    if not (hull.equations[:, 3] < 0).all():
        return None
    tri = hull.simplices.astype(np.int64)
    # counter-clockwise seen from outside: (b - a) x (c - a) points away from the origin
    a, b, c = v[tri[:, 0]], v[tri[:, 1]], v[tri[:, 2]]
    flip = (np.cross(b - a, c - a) * (a + b + c)).sum(1) < 0
    tri[flip] = tri[flip][:, ::-1]
    return tri[np.lexsort(tri.T[::-1])]          # a fixed cell order, independent of qhull's


def jittered_sphere(n_points: int, jitter: float = 0.4, seed: int = 0,
                    radius: float = 1.0) -> Mesh:
    """Delaunay triangulation of a jittered quasi-uniform point set on the sphere.

    The ``n_points`` points of a Fibonacci (golden-spiral) lattice, each moved
    by up to ``jitter`` times the mean spacing ``sqrt(4π/n_points)`` in a random
    tangent direction (uniform in the disc), then triangulated (their convex
    hull). The result is what a user's own mesh generator gives: irregular
    connectivity (vertices of degree 4 to 8), triangles of varying shape,
    but a bounded size ratio, so that convergence under refinement can be
    measured (:func:`irregular_sphere` is the stress case: slivers and
    clustered sizes).

    Parameters
    ----------
    n_points : int
        Number of points, ``>= 12``; ``2 n_points − 4`` triangles.
    jitter : float
        Displacement bound in units of the mean spacing, in ``[0, 0.5]``.
    seed : int
        Seed of the NumPy generator (same arguments, same mesh).
    radius : float

    Returns
    -------
    Mesh
        ``info = {"family": "irregular", "n_points": ..., "seed": ..., "jitter": ...}``.

    Examples
    --------
    >>> mesh = jittered_sphere(1000, seed=2)
    >>> mesh.n_cells, mesh.euler_characteristic()
    (1996, 2)
    >>> q = mesh.quality()
    >>> q["area_ratio"] < 100 and q["min_angle"] > 1.0
    True
    >>> jittered_sphere(1000, jitter=0.8)
    Traceback (most recent call last):
    ...
    meshclosure.errors.ArgumentError: jitter=0.8: must be a number in [0, 0.5] (a fraction of the mean point spacing); pass e.g. jitter=0.4.
    """
    from ._build import from_polygons

    if isinstance(n_points, bool) or not isinstance(n_points, (int, np.integer)) \
            or n_points < 12:
        raise ArgumentError("n_points", n_points, "must be an integer >= 12",
                            "pass e.g. n_points=2000")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ArgumentError("seed", seed, "must be an integer >= 0", "pass e.g. seed=0")
    if isinstance(jitter, bool) or not isinstance(jitter, (int, float, np.integer, np.floating)) \
            or not 0.0 <= float(jitter) <= 0.5:
        raise ArgumentError("jitter", jitter, "must be a number in [0, 0.5] (a fraction of the "
                            "mean point spacing)", "pass e.g. jitter=0.4")
    n = int(n_points)
    k = np.arange(n) + 0.5
    z = 1.0 - 2.0 * k / n
    lon = np.pi * (1.0 + 5 ** 0.5) * k
    rho = np.sqrt(1.0 - z * z)
    p = np.stack([rho * np.cos(lon), rho * np.sin(lon), z], 1)
    rng = np.random.default_rng(seed)
    spacing = np.sqrt(4 * np.pi / n)
    angle = rng.uniform(0.0, 2 * np.pi, n)
    dist = float(jitter) * spacing * np.sqrt(rng.uniform(0.0, 1.0, n))
    e1 = _unit(np.cross(p, np.where(np.abs(p[:, :1]) < 0.9, [[1.0, 0.0, 0.0]],
                                    [[0.0, 1.0, 0.0]])))
    e2 = np.cross(p, e1)
    tangent = np.cos(angle)[:, None] * e1 + np.sin(angle)[:, None] * e2
    v = _unit(np.cos(dist)[:, None] * p + np.sin(dist)[:, None] * tangent)
    tri = _hull_triangles(v)
    info = {"family": "irregular", "n_points": n, "seed": int(seed), "jitter": float(jitter)}
    return from_polygons(v * float(radius), tri, radius=float(radius), info=info)
