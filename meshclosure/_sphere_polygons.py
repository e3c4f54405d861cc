"""Sphere meshes as (lon, lat) polygons for map projections (used by :mod:`meshclosure.plot`).

Cells crossing the antimeridian come out twice (shifted by ±2π, to be clipped
by the map outline); cells touching or enclosing a pole are closed through
it; :func:`densify` adds points along long edges so projected chords follow
the curved map.
"""
from __future__ import annotations

import numpy as np

from .mesh import Mesh

__all__ = ["sphere_polygons", "polar_ring", "densify"]


def sphere_polygons(mesh: Mesh, values: np.ndarray | None):
    """Cell polygons in (lon, lat) radians, with antimeridian and polar cells fixed."""
    v = mesh.vertex_pos.detach().cpu().double().numpy()
    c = mesh.cell_center.detach().cpu().double().numpy()
    cells = mesh.cell_vertices.cpu().numpy()
    k = (cells >= 0).sum(1)
    cells = np.where(cells >= 0, cells, cells[np.arange(len(cells)), k - 1][:, None])
    lon = np.arctan2(v[:, 1], v[:, 0])
    lat = np.arcsin(np.clip(v[:, 2] / np.linalg.norm(v, axis=1), -1, 1))
    lon_c = np.arctan2(c[:, 1], c[:, 0])
    lon_v, lat_v = lon[cells], lat[cells]
    pole = np.abs(lat_v) > np.pi / 2 - 1e-9         # a pole vertex: any longitude will do
    wrap = lambda a: (a + np.pi) % (2 * np.pi) - np.pi  # noqa: E731
    winding = np.round(wrap(np.roll(lon_v, -1, 1) - lon_v).sum(1) / (2 * np.pi)).astype(int)
    lon_v = np.where(pole, lon_c[:, None], lon_c[:, None] + wrap(lon_v - lon_c[:, None]))
    polys, vals = [], []
    special = (winding != 0) | pole.any(1)
    normal = ~special
    xy = np.stack([lon_v[normal], lat_v[normal]], -1)
    polys.extend(xy)
    for shift in (-2 * np.pi, 2 * np.pi):             # copies of antimeridian cells
        cross = (xy[..., 0] + shift > -np.pi).any(1) & (xy[..., 0] + shift < np.pi).any(1)
        polys.extend(xy[cross] + [shift, 0])
        if values is not None:
            vals.append(values[normal][cross])
    for i in np.flatnonzero(special):                # cells around or touching a pole
        ring = polar_ring(lon[cells[i]], lat_v[i], pole[i], np.sign(c[i, 2]))
        for shift in (-2 * np.pi, 0, 2 * np.pi):
            polys.append(ring + [shift, 0])
            if values is not None:
                vals.append(values[i:i + 1])
    if values is not None:
        vals = np.concatenate([values[normal]] + vals)
    return polys, vals


def polar_ring(lon: np.ndarray, lat: np.ndarray, pole: np.ndarray,
                hemisphere: float) -> np.ndarray:
    """One polygon ``(m, 2)`` in (lon, lat) for a cell touching or enclosing a pole.

    Longitudes are unwrapped along the ring; a pole vertex becomes two points
    at the pole with its neighbours' longitudes, and a ring that winds around
    the pole is closed through it.
    """
    k = len(lon)
    start = int(np.flatnonzero(~pole)[0])
    first = cur = lon[start]
    last, pending, points = lon[start], None, []
    for j in [(start + i) % k for i in range(k)] + [start]:
        if pole[j]:
            pending = lat[j]
            points.append((cur, pending))
            continue
        cur = cur + (lon[j] - last + np.pi) % (2 * np.pi) - np.pi
        last = lon[j]
        if pending is not None:
            points.append((cur, pending))
            pending = None
        points.append((cur, lat[j]))
    ring = np.array(points)                           # ends with the first vertex, unwrapped
    if abs(cur - first) > np.pi:                      # winds around the pole: close through it
        side = hemisphere * np.pi / 2
        ring = np.r_[ring, [[cur, side], [first, side]]]
    return ring


def densify(poly: np.ndarray, step: float = np.radians(2.0)) -> np.ndarray:
    """``poly`` ``(m, 2)`` in (lon, lat) with points added along every edge longer than
    ``step``, so that its projected chords follow the curved map (and its outline)."""
    ahead = np.roll(poly, -1, 0)
    pieces = np.ceil(np.abs(ahead - poly).max(1) / step).astype(int)
    if (pieces <= 1).all():
        return poly
    return np.concatenate([a + np.arange(k)[:, None] / k * (b - a)
                           for a, b, k in zip(poly, ahead, np.maximum(pieces, 1))])
