"""Cartesian grids: doubly periodic, bounded, periodic-in-x channels, and 1-D columns.

Cell ``(j, i)`` (row ``j`` along y, column ``i`` along x) is cell
``j * nx + i``, so a field array of shape ``(ny, nx)`` maps to cells with
``field.reshape(-1)`` and back with ``values.reshape(ny, nx)``.
"""
from __future__ import annotations

import numpy as np
import torch

from ._build import from_polygons
from ._mesh import Mesh, MeshError

__all__ = ["cartesian", "grid_to_cells", "cells_to_grid"]


def _positive_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}. "
                         f"Pass e.g. {name}={max(minimum, 16)}.")
    return int(value)


def _positive_length(name: str, value) -> float:
    if not (isinstance(value, (int, float, np.floating)) and np.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite length; got {value!r}.")
    return float(value)


def cartesian(nx: int, ny: int | None = None, lx: float = 1.0, ly: float | None = None,
              periodic: bool | tuple[bool, bool] = True) -> Mesh:
    """A uniform Cartesian mesh of ``nx × ny`` square-ish cells on ``[0, lx] × [0, ly]``.

    Parameters
    ----------
    nx, ny : int
        Cells along x and y. ``ny=None`` gives a bounded 1-D column of ``nx``
        cells along the vertical coordinate on ``[0, lx]`` (``d = 1``; unit
        cross-section), with boundary faces ``"bottom"`` and ``"top"``.
    lx, ly : float
        Domain lengths (``ly`` defaults to ``lx * ny / nx``: square cells).
    periodic : bool or (bool, bool)
        Periodic in x and y (default), bounded (``False``; boundary faces
        tagged ``"west"``, ``"east"``, ``"south"``, ``"north"``), or per axis,
        e.g. ``(True, False)`` for a channel or an x–z slice with walls.
        A periodic axis needs at least 3 cells.

    Returns
    -------
    Mesh
        ``info = {"family": "cartesian", "nx", "ny", "lx", "ly", "periodic"}``.

    Examples
    --------
    >>> m = cartesian(8, 4, 2.0, 1.0)
    >>> m.n_cells, m.n_faces, m.euler_characteristic()
    (32, 64, 0)
    >>> cartesian(2, 4)
    Traceback (most recent call last):
    ...
    ValueError: nx must be an integer >= 3 when x is periodic; got 2. ...
    """
    lx = _positive_length("lx", lx)
    if ny is None:
        return _column(_positive_int("nx", nx, 1), lx)
    px, py = (periodic, periodic) if isinstance(periodic, bool) else tuple(map(bool, periodic))
    for name, n, p in (("nx", nx, px), ("ny", ny, py)):
        if p and isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n < 3:
            raise ValueError(f"{name} must be an integer >= 3 when "
                             f"{name[1]} is periodic; got {n}. Use {name} >= 3 or "
                             f"periodic=False.")
    nx, ny = _positive_int("nx", nx, 1), _positive_int("ny", ny, 1)
    ly = lx * ny / nx if ly is None else _positive_length("ly", ly)
    dx, dy = lx / nx, ly / ny
    vx, vy = nx if px else nx + 1, ny if py else ny + 1
    jj, ii = np.meshgrid(np.arange(vy), np.arange(vx), indexing="ij")
    vertices = np.stack([ii * dx, jj * dy], -1).reshape(-1, 2)
    j, i = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    i1, j1 = (i + 1) % vx, (j + 1) % vy
    cells = np.stack([j * vx + i, j * vx + i1, j1 * vx + i1, j1 * vx + i], -1).reshape(-1, 4)
    centers = np.stack([(i + 0.5) * dx, (j + 0.5) * dy], -1).reshape(-1, 2)
    names = ("west", "east", "south", "north")

    def tags(center, normal, loop):
        side = np.where(normal[:, 0] < -0.5, 0, np.where(normal[:, 0] > 0.5, 1,
                        np.where(normal[:, 1] < 0, 2, 3)))
        return side, names

    info = {"family": "cartesian", "nx": nx, "ny": ny, "lx": lx, "ly": ly,
            "periodic": f"{px},{py}", "domain_area": lx * ly}
    period = (lx if px else 0.0, ly if py else 0.0) if (px or py) else None
    return from_polygons(vertices, cells, period=period, cell_center=centers,
                         cell_volume=np.full(nx * ny, dx * dy), boundary_tags=tags, info=info)


def _column(nz: int, height: float) -> Mesh:
    """Bounded 1-D column: cells along z, faces at interior levels, unit cross-section."""
    dz = height / nz
    z_face = np.arange(nz + 1) * dz
    t = lambda a, dt=torch.float64: torch.as_tensor(np.ascontiguousarray(a), dtype=dt)  # noqa: E731
    interior = np.arange(1, nz)
    return Mesh(
        cell_center=t(((np.arange(nz) + 0.5) * dz)[:, None]),
        cell_volume=t(np.full(nz, dz)),
        face_cells=t(np.stack([interior - 1, interior]), torch.long),
        face_normal=t(np.ones((nz - 1, 1))),
        face_area=t(np.ones(nz - 1)),
        face_center=t(z_face[interior][:, None]),
        cell_distance=t(np.full(nz - 1, dz)),
        vertex_pos=t(z_face[:, None]),
        face_vertices=t(np.stack([interior, interior]), torch.long),
        cell_vertices=t(np.stack([np.arange(nz), np.arange(1, nz + 1)], 1), torch.long),
        boundary_face_cell=t([0, nz - 1], torch.long),
        boundary_face_vertices=t([[0, nz], [0, nz]], torch.long),
        boundary_face_normal=t([[-1.0], [1.0]]),
        boundary_face_area=t([1.0, 1.0]),
        boundary_face_center=t([[0.0], [height]]),
        boundary_face_tag=t([0, 1], torch.long),
        boundary_tag_names=("bottom", "top"),
        info={"family": "column", "nz": nz, "height": height, "domain_area": height},
    )


def grid_to_cells(mesh: Mesh, field) -> torch.Tensor:
    """A ``(..., ny, nx)`` array as cell values ``(n_cells, ...)``."""
    nx, ny = mesh.info["nx"], mesh.info["ny"]
    field = torch.as_tensor(field)
    if field.shape[-2:] != (ny, nx):
        raise MeshError(f"field must end with shape (ny, nx) = ({ny}, {nx}); got "
                        f"{tuple(field.shape)}.")
    return field.reshape(*field.shape[:-2], ny * nx).movedim(-1, 0)


def cells_to_grid(mesh: Mesh, values) -> torch.Tensor:
    """Cell values ``(n_cells, ...)`` as a ``(..., ny, nx)`` array."""
    nx, ny = mesh.info["nx"], mesh.info["ny"]
    values = torch.as_tensor(values)
    return values.movedim(0, -1).reshape(*values.shape[1:], ny, nx)
