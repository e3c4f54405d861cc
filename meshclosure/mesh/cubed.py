"""Equiangular gnomonic cubed sphere (Ronchi, Iacono & Paolucci 1996, doi:10.1006/jcph.1996.0047;
the grid of FV3, CAM-SE and E3SM).

Each of the 6 faces of the cube ``[-1, 1]³`` is an ``n × n`` grid whose lines
sit at equal central angles ``ξ_i = -π/4 + i π/(2n)``, i.e. at the cube
coordinates ``tan ξ_i``; the grid is projected radially onto the sphere. Every
grid line lies in a plane through the centre, so every cell edge is a
great-circle arc and :func:`~meshclosure.mesh._build.from_polygons` computes
the exact spherical areas and centroids of the curved quadrilaterals.

Conventions
-----------
* Panels ``p = 0..5``: ``+x, +y, -x, -y, +z, -z``. Panel ``p`` has outward
  normal ``N_p`` and in-panel axes ``(U_p, V_p)`` with ``U_p × V_p = N_p``;
  the cube point of grid node ``(i, j)`` is ``N_p + t_i U_p + t_j V_p``,
  ``t_i = tan ξ_i``.
* Cell ``(p, j, i)`` (``0 <= i, j < n``) has index ``p n² + j n + i`` and
  corners ``(i, j), (i+1, j), (i+1, j+1), (i, j+1)``: counter-clockwise seen
  from outside.
* ``t`` is computed once and mirrored (``t_{n-i} = -t_i``, ``t_0 = -1``,
  ``t_n = 1`` exactly), so a node on a cube edge has bit-identical cube
  coordinates on both panels; the nodes are merged by those coordinates and
  every vertex is shared exactly (``6n² + 2`` vertices, Euler characteristic 2).
* Nesting: the level-``n/k`` grid lines are every ``k``-th level-``n`` line,
  so cell ``(p, j, i)`` of ``cubed_sphere(n)`` lies in cell
  ``(p, j // k, i // k)`` of ``cubed_sphere(n // k)`` (see :func:`cubed_parent`).
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import ArgumentError
from ._mesh import Mesh

__all__ = ["cubed_sphere", "cubed_sphere_arrays", "cubed_parent", "MAX_N"]

MAX_N = 2048
"""Largest accepted cells per panel edge (6 · 2048² ≈ 2.5·10⁷ cells)."""

#: (outward normal N, axis U, axis V) of panels +x, +y, -x, -y, +z, -z; U × V = N.
_PANELS = np.array([
    [[1, 0, 0], [0, 1, 0], [0, 0, 1]],
    [[0, 1, 0], [-1, 0, 0], [0, 0, 1]],
    [[-1, 0, 0], [0, -1, 0], [0, 0, 1]],
    [[0, -1, 0], [1, 0, 0], [0, 0, 1]],
    [[0, 0, 1], [0, 1, 0], [-1, 0, 0]],
    [[0, 0, -1], [0, 1, 0], [1, 0, 0]],
], dtype=np.float64)


def _check_n(n, name: str = "n") -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= MAX_N:
        raise ArgumentError(name, n, f"the number of cells per panel edge must be an integer "
                            f"from 1 to {MAX_N} (the cubed sphere has 6 n² cells)",
                            "pass e.g. n=16 (1,536 cells) or n=32 (6,144 cells)")
    return int(n)


def _tangents(n: int) -> np.ndarray:
    """Cube coordinates ``tan(-π/4 + i π/(2n))``, ``i = 0..n``, exactly antisymmetric."""
    i = np.arange(n + 1)
    t = np.tan(-math.pi / 4 + i * (math.pi / (2 * n)))
    half = (n + 1) // 2
    t[n - np.arange(half)] = -t[:half]
    t[0], t[n] = -1.0, 1.0
    if n % 2 == 0:
        t[n // 2] = 0.0
    return t


def cubed_sphere_arrays(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Vertices and cells of the equiangular cubed sphere on the unit sphere.

    Parameters
    ----------
    n : int
        Cells per panel edge, ``1 <= n <= MAX_N``.

    Returns
    -------
    vertices : ndarray, shape (6 n² + 2, 3), float64
        Unit vectors, each shared by every cell that touches it.
    cells : ndarray, shape (6 n², 4), int64
        Corner indices, counter-clockwise seen from outside; cell
        ``p n² + j n + i`` is cell ``(i, j)`` of panel ``p``.

    Examples
    --------
    >>> v, c = cubed_sphere_arrays(2)
    >>> v.shape, c.shape
    ((26, 3), (24, 4))
    """
    n = _check_n(n)
    t = _tangents(n)
    N, U, V = _PANELS[:, 0], _PANELS[:, 1], _PANELS[:, 2]        # (6, 3) each
    # cube point of node (p, j, i): N_p + t_i U_p + t_j V_p; only one term per
    # coordinate is nonzero (U, V, N are signed unit axes), so edge nodes are exact
    cube = (N[:, None, None, :] + t[None, None, :, None] * U[:, None, None, :]
            + t[None, :, None, None] * V[:, None, None, :])       # (6, n+1, n+1, 3)
    cube = cube.reshape(-1, 3) + 0.0                              # -0.0 -> 0.0
    unique, inverse = np.unique(cube, axis=0, return_inverse=True)
    node = inverse.reshape(6, n + 1, n + 1)                      # [p, j, i]
    cells = np.stack([node[:, :-1, :-1], node[:, :-1, 1:], node[:, 1:, 1:], node[:, 1:, :-1]],
                     -1).reshape(-1, 4)
    # renumber vertices in order of first use, for locality
    first = np.full(len(unique), len(cells) * 4)
    np.minimum.at(first, cells.ravel(), np.arange(cells.size))
    order = np.argsort(first, kind="stable")
    renumber = np.empty_like(order)
    renumber[order] = np.arange(len(order))
    vertices = unique[order]
    vertices /= np.linalg.norm(vertices, axis=1, keepdims=True)
    return vertices, renumber[cells].astype(np.int64)


def cubed_sphere(n: int, radius: float = 1.0) -> Mesh:
    """Equiangular gnomonic cubed sphere with ``n × n`` cells per panel.

    Parameters
    ----------
    n : int
        Cells per panel edge, ``1 <= n <= 2048``: ``6 n²`` cells,
        ``12 n²`` faces, ``6 n² + 2`` vertices.
    radius : float
        Sphere radius (length units).

    Returns
    -------
    Mesh
        Cells are exact spherical quadrilaterals with great-circle edges
        (areas summing to ``4πR²``, exact centroids), in the order
        ``p n² + j n + i`` of the module docstring;
        ``info = {"family": "cubed", "n": n}``. Cells nest: the parent of
        cell ``(p, j, i)`` in ``cubed_sphere(n // k)`` is ``(p, j // k, i // k)``
        (:func:`meshclosure.mesh.native_parent`).

    Raises
    ------
    ArgumentError
        ``n`` not an integer in ``1..2048``, or ``radius`` not a positive finite length.

    Examples
    --------
    >>> m = cubed_sphere(4)
    >>> m.n_cells, m.n_faces, m.n_vertices, m.euler_characteristic()
    (96, 192, 98, 2)
    >>> m.family, m.info["n"]
    ('cubed', 4)
    >>> cubed_sphere(0)
    Traceback (most recent call last):
    ...
    meshclosure.errors.ArgumentError: n=0: the number of cells per panel edge must be an integer from 1 to 2048 (the cubed sphere has 6 n² cells); pass e.g. n=16 (1,536 cells) or n=32 (6,144 cells).
    """
    from ._build import from_polygons

    n = _check_n(n)
    if isinstance(radius, bool) or not isinstance(radius, (int, float, np.floating, np.integer)) \
            or not (math.isfinite(radius) and radius > 0):
        raise ArgumentError("radius", radius, "must be a positive finite length",
                            "pass e.g. radius=1.0 (unit sphere) or 6.371e6 (Earth, metres)")
    vertices, cells = cubed_sphere_arrays(n)
    return from_polygons(vertices * float(radius), cells, radius=float(radius),
                         info={"family": "cubed", "n": n})


def cubed_parent(n: int, factor: int) -> np.ndarray:
    """Parent map ``(6 n²,)`` from ``cubed_sphere(n)`` to ``cubed_sphere(n // factor)``.

    Examples
    --------
    >>> cubed_parent(4, 2)[:8].tolist()
    [0, 0, 1, 1, 0, 0, 1, 1]
    >>> cubed_parent(6, 4)
    Traceback (most recent call last):
    ...
    meshclosure.errors.ArgumentError: factor=4: must divide the cells per panel edge n=6 for nested cubed-sphere coarsening; use one of 1, 2, 3, 6.
    """
    n = _check_n(n)
    if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or factor < 1 \
            or n % factor:
        divisors = [k for k in range(1, n + 1) if n % k == 0]
        raise ArgumentError("factor", factor, f"must divide the cells per panel edge n={n} for "
                            "nested cubed-sphere coarsening",
                            f"use one of {', '.join(map(str, divisors))}")
    m = n // factor
    idx = np.arange(6 * n * n)
    p, j, i = idx // (n * n), (idx // n) % n, idx % n
    return p * m * m + (j // factor) * m + i // factor
