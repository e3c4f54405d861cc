"""One ``plot(mesh, field)`` that draws a cell field the right way for each mesh.

* Cartesian grids: an image of the ``(ny, nx)`` array (``imshow``, origin lower).
* HEALPix: a Mollweide image projected by healpy (``healpy.projector.MollweideProj``).
* Any other sphere mesh (icosahedral, meshio, coarsened): cell polygons on
  matplotlib ``"mollweide"`` axes, cells crossing the antimeridian drawn twice
  (shifted by 2π and clipped by the map outline), cells around a pole closed
  through the pole.
* Planar meshes: cell polygons (periodic cells unwrapped, as in :func:`~meshclosure.io.write_vtu`).
* 1-D columns: the profile, field along x and z up.

``field=None`` draws the mesh edges. Figures are built without pyplot (an
Agg canvas), so nothing opens a window and nothing touches global state.

Examples
--------
>>> import torch
>>> from meshclosure.mesh import cartesian, icosahedral
>>> fig = plot(icosahedral(1), torch.arange(80.0), label="q")
>>> [ax.name for ax in fig.axes]
['mollweide', 'rectilinear']
>>> plot(cartesian(4, 4), torch.zeros(15))
Traceback (most recent call last):
...
ValueError: field must have shape (n_cells,) = (16,), one value per cell; got (15,) (float32). ...
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np
import torch

from .mesh import Mesh

__all__ = ["plot", "face_flux_density"]


def _field(mesh: Mesh, field: Any) -> np.ndarray:
    a = field.detach().cpu().numpy() if isinstance(field, torch.Tensor) else np.asarray(field)
    if a.shape != (mesh.n_cells,) or a.dtype.kind not in "biuf":
        raise ValueError(f"field must have shape (n_cells,) = ({mesh.n_cells},), one value per "
                         f"cell; got {a.shape} ({a.dtype}). Pass one real component, e.g. "
                         "q[:, 0], or field=None to draw the mesh.")
    return a.astype(np.float64)


def _new_figure(projection: str | None = None):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5) if projection else (6, 5), dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(projection=projection)


def _sphere_polygons(mesh: Mesh, values: np.ndarray | None):
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
        ring = _polar_ring(lon[cells[i]], lat_v[i], pole[i], np.sign(c[i, 2]))
        for shift in (-2 * np.pi, 0, 2 * np.pi):
            polys.append(ring + [shift, 0])
            if values is not None:
                vals.append(values[i:i + 1])
    if values is not None:
        vals = np.concatenate([values[normal]] + vals)
    return polys, vals


def _polar_ring(lon: np.ndarray, lat: np.ndarray, pole: np.ndarray,
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


def _polygons(ax, mesh: Mesh, values, cmap, kw: dict):
    from matplotlib.collections import PolyCollection

    if mesh.is_sphere:
        polys, vals = _sphere_polygons(mesh, values)
    else:
        from .io import _unwrapped_polygons

        points, cells = _unwrapped_polygons(mesh)
        polys = [points[row[row >= 0], :2] for row in cells]
        vals = values
        lo, hi = points[:, :2].min(0), points[:, :2].max(0)
        if mesh.period is not None:                  # copies of cells sticking out of the box
            period = np.array([p or 0.0 for p in mesh.period[:2]])
            origin = mesh.vertex_pos.detach().cpu().double().numpy().min(0)
            lo = np.where(period > 0, origin, lo)         # the box [0, lx] x [0, ly]
            hi = np.where(period > 0, lo + period, hi)
            box_lo = np.array([p.min(0) for p in polys])
            box_hi = np.array([p.max(0) for p in polys])
            eps = 1e-9 * (hi - lo)
            for sx in (-1, 0, 1) if period[0] else (0,):
                for sy in (-1, 0, 1) if period[1] else (0,):
                    shift = np.array([sx, sy]) * period
                    out = np.flatnonzero(((box_lo + shift < hi - eps)
                                          & (box_hi + shift > lo + eps)).all(1))
                    if sx or sy:
                        polys += [polys[i] + shift for i in out]
                        vals = None if values is None else np.r_[vals, values[out]]
        ax.set_xlim(lo[0], hi[0])  # add_collection(autolim=False) below
        ax.set_ylim(lo[1], hi[1])
        ax.set_aspect("equal")
    clim = kw.pop("vmin", None), kw.pop("vmax", None)
    if values is None:
        coll = PolyCollection(polys, facecolors="none", edgecolors=kw.pop("edgecolor", "k"),
                              linewidths=kw.pop("linewidth", 0.4), **kw)
    else:
        kw.setdefault("antialiased", False)  # antialiased polygons leave light seams
        coll = PolyCollection(polys, array=vals, cmap=cmap, edgecolors="face",
                              linewidths=kw.pop("linewidth", 0.0), **kw)
    ax.add_collection(coll, autolim=False)  # limits are fixed; autolim would project every path
    if values is not None:
        coll.set_clim(*clim)
    return coll if values is not None else None


def _healpix_image(ax, mesh: Mesh, values, cmap, kw: dict):
    import healpy
    from healpy.projector import MollweideProj

    nside = int(mesh.info["nside"])
    proj = MollweideProj(xsize=int(kw.pop("xsize", 800)), flipconv="geo")
    img = proj.projmap(values, lambda x, y, z: healpy.vec2pix(nside, x, y, z, nest=True))
    ax.set_axis_off()
    return ax.imshow(np.ma.masked_invalid(img), origin="lower", extent=proj.get_extent(),
                     cmap=cmap, interpolation="nearest", **kw)


def face_flux_density(mesh: Mesh, face_flux: torch.Tensor) -> torch.Tensor:
    """A cell field to draw face fluxes with: the mean of ``|Φ_f| / A_f`` over each
    cell's interior faces, ``(n_cells,)`` (0 for a cell without interior faces).

    ``Φ_f`` is an integrated flux (``[q]·length²/time`` on a surface), so
    ``|Φ_f| / A_f`` is the flux density ``|u q · n|``.

    >>> from meshclosure.mesh import cartesian
    >>> mesh = cartesian(4, 4, 1.0, 1.0)
    >>> face_flux_density(mesh, 0.25 * torch.ones(mesh.n_faces, dtype=torch.float64))[:3]
    tensor([1., 1., 1.], dtype=torch.float64)
    """
    density = (face_flux / mesh.face_area.to(face_flux)).abs()
    total = torch.zeros(mesh.n_cells, dtype=density.dtype, device=density.device)
    count = torch.zeros_like(total)
    for side in (0, 1):
        total.index_add_(0, mesh.face_cells[side], density)
        count.index_add_(0, mesh.face_cells[side], torch.ones_like(density))
    return total / count.clamp_min(1)


def plot(mesh: Mesh, field: Any = None, ax: Any = None, path: str | os.PathLike | None = None,
         title: str | None = None, cmap: str = "viridis", label: str | None = None, **kw):
    """Draw a cell field on ``mesh`` (or the mesh itself) and return the figure.

    Parameters
    ----------
    mesh : Mesh
    field : array or Tensor, shape (n_cells,), or {name: values}, optional
        Cell values; ``None`` draws the mesh edges.
    ax : matplotlib Axes, optional
        Draw into it (on the sphere it should have ``projection="mollweide"``
        unless the mesh is HEALPix); default: a new figure.
    path : path-like, optional
        Save the figure as PNG there, atomically (temporary file + rename).
    title : str, optional
    cmap : str
    label : str, optional
        Colorbar label (default: the dict key of ``field``).
    **kw
        Passed to ``imshow`` / ``PolyCollection`` / ``plot`` (e.g. ``vmin``, ``vmax``).

    Returns
    -------
    matplotlib.figure.Figure
    """
    if isinstance(field, Mapping):
        if len(field) != 1:
            raise ValueError(f"field as a dict must hold exactly one entry {{name: values}}; got "
                             f"keys {list(field)}. Plot one field at a time.")
        label, field = next(iter(field.items()))
    values = None if field is None else _field(mesh, field)
    family = mesh.family
    sphere_poly = mesh.is_sphere and not (family == "healpix" and values is not None)
    if ax is None:
        fig, ax = _new_figure("mollweide" if sphere_poly else None)
    else:
        fig = ax.figure
    artist = None
    if mesh.dim == 1:
        z = mesh.cell_center[:, 0].detach().cpu().numpy()
        if values is None:
            levels = mesh.vertex_pos[:, 0].cpu().numpy()
            ax.plot(np.zeros_like(levels), levels, "_", markersize=20, **kw)
        else:
            ax.plot(values, z, marker=".", **kw)
            ax.set_xlabel(label or "field")
        ax.set_ylabel("z")
    elif family == "cartesian" and values is not None:
        nx, ny, lx, ly = (mesh.info[k] for k in ("nx", "ny", "lx", "ly"))
        artist = ax.imshow(values.reshape(ny, nx), origin="lower", extent=(0, lx, 0, ly),
                           cmap=cmap, interpolation="nearest", **kw)
    elif family == "healpix" and values is not None:
        artist = _healpix_image(ax, mesh, values, cmap, kw)
    else:
        artist = _polygons(ax, mesh, values, cmap, kw)
        if sphere_poly and ax.name != "mollweide":   # a user's plain axes: lon/lat radians
            ax.set_xlim(-np.pi, np.pi)
            ax.set_ylim(-np.pi / 2, np.pi / 2)
        elif sphere_poly:
            ax.grid(True, linewidth=0.3, alpha=0.5)
            ax.set_xticklabels([])  # longitude labels would sit on the field
    if artist is not None:
        fig.colorbar(artist, ax=ax, label=label or "", shrink=0.7)
    if title is not None:
        ax.set_title(title)
    if path is not None:
        from .io import _atomic

        with _atomic(path, ".png") as tmp:
            fig.savefig(tmp, format="png", bbox_inches="tight")
    return fig
