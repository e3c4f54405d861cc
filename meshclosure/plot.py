"""One ``plot(mesh, field)`` that draws a cell field the right way for each mesh.

* Cartesian grids: an image of the ``(ny, nx)`` array (``imshow``, origin lower),
  axes labelled ``x`` and ``y``.
* Every sphere mesh shares one map style: matplotlib ``"mollweide"`` axes with
  a graticule (meridians every 60°, parallels every 30°, labelled). HEALPix
  maps are sampled per image pixel by healpy (``healpy.projector.MollweideProj``,
  exact pixel shapes); any other sphere mesh (icosahedral, cubed, meshio, coarsened)
  is drawn as cell polygons, cells crossing the antimeridian drawn twice
  (shifted by 2π and clipped by the map outline), cells around a pole closed
  through the pole.
* Planar meshes: cell polygons (periodic cells unwrapped, as in
  :func:`~meshclosure.io.write_vtu`), axes labelled ``x`` and ``y``.
* 1-D columns: the profile, field along x and z up.

Every field gets a colorbar (or, for a column, an x label) reading
``name [units]``. ``field=None`` draws the mesh edges.

Figures are built without pyplot, so nothing opens a window and no figure
stays alive in scripts or tests; they render themselves as PNG in Jupyter
(a cell that ends in ``plot(...)`` shows the image, whatever the backend).
To combine panels, make the axes with :func:`subplot` (it picks the
projection for the mesh) and pass ``ax=``. :func:`save_figure` (and
``plot(..., path=...)``) writes PNG, PDF or SVG as the suffix says, atomically,
and refuses to replace an existing file unless ``overwrite=True``.

Examples
--------
>>> import torch
>>> from meshclosure.mesh import cartesian, icosahedral
>>> fig = plot(icosahedral(1), torch.arange(80.0), label="q", units="kg m-2")
>>> ax = fig.axes[0]
>>> ax.name, ax.collections[0].colorbar.ax.get_xlabel()
('mollweide', 'q [kg m-2]')
>>> plot(cartesian(4, 4), torch.zeros(15))
Traceback (most recent call last):
...
meshclosure.errors.ArgumentError: field=<array of shape (15,), float32>: must have shape (n_cells,) = (16,), one real value per cell; ...
>>> plot(cartesian(4, 4), torch.zeros(16), path="field.jpg")
Traceback (most recent call last):
...
meshclosure.errors.ArgumentError: path='field.jpg': must end in .png, .pdf or .svg (the suffix picks the file format); ...
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ._sphere_polygons import densify as _densify
from ._sphere_polygons import sphere_polygons as _sphere_polygons
from .errors import ArgumentError
from .mesh import Mesh

__all__ = ["plot", "plot_comparison", "new_figure", "save_figure", "subplot", "projection",
           "axis_label", "face_flux_density", "FORMATS", "MeshFigure"]

#: File suffixes :func:`save_figure` writes, and the format each one means.
FORMATS = {".png": "png", ".pdf": "pdf", ".svg": "svg"}


class _Shown:
    """A value shown in an error message as written (``repr`` gives ``text``)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


class MeshFigure(Figure):
    """A matplotlib Figure that Jupyter shows as PNG even without the inline backend."""

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        self.savefig(buf, format="png", bbox_inches="tight")
        return buf.getvalue()


def new_figure(figsize: tuple[float, float] = (8.0, 4.5)) -> MeshFigure:
    """A figure outside pyplot (an Agg canvas): no window, no global state, no leak.

    Jupyter shows it as PNG when a cell ends in it (or through ``display(fig)``);
    add panels with :func:`subplot`.
    """
    fig = MeshFigure(figsize=figsize, dpi=100)
    FigureCanvasAgg(fig)
    return fig


def projection(mesh: Mesh, region: Any = None) -> str | None:
    """The matplotlib projection :func:`plot` draws ``mesh`` on: ``"mollweide"`` for
    sphere meshes (plain lon/lat axes for a ``region``), ``None`` (plain axes) otherwise."""
    return "mollweide" if mesh.is_sphere and region is None else None


def subplot(fig, mesh: Mesh, *args, region: Any = None, **kw):
    """``fig.add_subplot(*args, projection=projection(mesh, region), **kw)``: a panel for ``mesh``.

    >>> from meshclosure.mesh import healpix
    >>> subplot(new_figure(), healpix(1), 1, 2, 1).name
    'mollweide'
    """
    return fig.add_subplot(*args, projection=projection(mesh, region), **kw)


def _check_path(path: str | os.PathLike, overwrite: bool) -> tuple[Path, str]:
    """``(path, format)`` after checking the suffix, the folder and an existing file."""
    from ._files import check_folder, refuse_existing

    p = Path(path)
    fmt = FORMATS.get(p.suffix.lower())
    if fmt is None:
        raise ArgumentError("path", str(path), "must end in .png, .pdf or .svg (the suffix "
                            "picks the file format)",
                            f"rename {{path}} to e.g. {p.with_suffix('.png').name!r}")
    check_folder(p, name="path")
    refuse_existing(p, overwrite, name="path")
    return p, fmt


def save_figure(fig, path: str | os.PathLike, overwrite: bool = False,
                dpi: float | None = None) -> Path:
    """Save ``fig`` to ``path`` in the format its suffix names (``.png``, ``.pdf``, ``.svg``).

    The file is written atomically (temporary file + rename) and an existing
    file is refused unless ``overwrite=True``.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
    path : path-like
        Ends in one of :data:`FORMATS`.
    overwrite : bool
        Replace an existing file.
    dpi : float, optional
        Resolution of a PNG (default: the figure's).

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    ArgumentError
        The suffix is not one of :data:`FORMATS` (nothing is written).
    OutputExistsError
        ``path`` exists and ``overwrite`` is False (it is left untouched).
    """
    from ._files import atomic_path

    p, fmt = _check_path(path, overwrite)
    with atomic_path(p, p.suffix) as tmp:
        fig.savefig(tmp, format=fmt, bbox_inches="tight", dpi=dpi or "figure")
    return p


def _field(mesh: Mesh, field: Any) -> np.ndarray:
    a = field.detach().cpu().numpy() if isinstance(field, torch.Tensor) else np.asarray(field)
    if a.shape != (mesh.n_cells,) or a.dtype.kind not in "biuf":
        raise ArgumentError("field", _Shown(f"<array of shape {a.shape}, {a.dtype}>"),
                            f"must have shape (n_cells,) = ({mesh.n_cells},), one real value "
                            "per cell", "pass one real component, e.g. q[:, 0], or "
                            "{field}=None to draw the mesh")
    return a.astype(np.float64)


def _check_region(mesh: Mesh, region: Any, ax: Any) -> tuple[float, ...] | None:
    if region is None:
        return None
    fix = "pass (lon_min, lon_max, lat_min, lat_max) in degrees, e.g. (-150, -30, -45, 45)"
    try:
        lon0, lon1, lat0, lat1 = (float(v) for v in region)
    except (TypeError, ValueError):
        raise ArgumentError("region", region, "must be four numbers", fix) from None
    if not (-180 <= lon0 < lon1 <= 180 and -90 <= lat0 < lat1 <= 90):
        raise ArgumentError("region", region, "must satisfy -180 <= lon_min < lon_max <= 180 "
                            "and -90 <= lat_min < lat_max <= 90 (degrees)", fix)
    if not mesh.is_sphere:
        raise ArgumentError("region", region, "is for sphere meshes (a lon/lat window)",
                            "zoom a planar plot with ax.set_xlim/ax.set_ylim instead")
    if ax is not None and ax.name != "rectilinear":
        raise ArgumentError("region", region, f"needs plain axes; got {ax.name!r} axes",
                            "make the panel with subplot(fig, mesh, ..., region=region)")
    return lon0, lon1, lat0, lat1


def _name_units(field: Any, label: str | None, units: str | None):
    """``(values, label, units)`` from a ``{name: values}`` dict or an xarray DataArray."""
    if isinstance(field, Mapping):
        if len(field) != 1:
            raise ArgumentError("field", _Shown(f"<dict with keys {list(field)}>"),
                                "as a dict must hold exactly one entry {name: values}",
                                "plot one field at a time")
        name, field = next(iter(field.items()))
        label = label if label is not None else name
    attrs = getattr(field, "attrs", None)
    if isinstance(attrs, Mapping) and hasattr(field, "values"):      # an xarray DataArray
        label = label if label is not None else (attrs.get("long_name")
                                                 or getattr(field, "name", None))
        units = units if units is not None else attrs.get("units")
        field = field.values
    return field, label, units


def axis_label(label: str | None, units: str | None) -> str:
    """``"name [units]"`` (``"name"`` without units; ``"field"`` without a name).

    >>> axis_label("h", "m"), axis_label("φ", "1"), axis_label(None, None)
    ('h [m]', 'φ [1]', 'field')
    """
    name = label or "field"
    return f"{name} [{units}]" if units not in (None, "") else name


_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def _power_of_ten(artist) -> int:
    """The power of ten the colour scale's ticks are written in: 0 for scales within
    1e-3 .. 1e4, else the exponent of the largest magnitude (ticks 1e-5 .. 7e-5 read
    1 .. 7 and the label says ``10⁻⁵``, rather than an offset text at the end)."""
    artist.autoscale_None()
    clim = [v for v in artist.get_clim() if v is not None and np.isfinite(v)]
    top = max((abs(float(v)) for v in clim), default=0.0)
    if top == 0.0:
        return 0
    e = int(np.floor(np.log10(top)))
    return e if e <= -3 or e >= 4 else 0


def _colorbar(fig, ax, artist, label: str, units: str | None, name: str | None):
    """A colorbar under a map, or right of a planar panel and as high as it; both
    made so that ``fig.tight_layout()`` makes room for them."""
    from matplotlib.ticker import FuncFormatter

    e = _power_of_ten(artist)
    if e:                                         # "ζ [10⁻⁵ s-1]" with ticks 1 .. 7
        scale = f"10{str(e).translate(_SUPERSCRIPT)}"
        label = label.replace(axis_label(name, units),
                              f"{name or 'field'} [{scale}{' ' + units if units else ''}]", 1)
    if ax.name == "mollweide":
        cb = fig.colorbar(artist, ax=ax, label=label, orientation="horizontal",
                          shrink=0.6, pad=0.05, aspect=30)
    else:
        from mpl_toolkits.axes_grid1 import make_axes_locatable

        cax = make_axes_locatable(ax).append_axes("right", size="4%", pad=0.1)
        cb = fig.colorbar(artist, cax=cax, label=label)
    if e:
        cb.formatter = FuncFormatter(lambda x, _: f"{x / 10.0 ** e:g}")
        cb.update_ticks()
    return cb


def _graticule(ax) -> None:
    """Meridians every 60° and parallels every 30°, labelled, on Mollweide axes."""
    from matplotlib import patheffects

    ax.set_longitude_grid(60)
    ax.set_latitude_grid(30)
    ax.grid(True, color="0.25", linewidth=0.4, alpha=0.6)
    ax.tick_params(labelsize=7)
    stroke = [patheffects.withStroke(linewidth=2.5, foreground="white")]
    for tick in ax.xaxis.get_major_ticks():        # longitudes sit on the map: outline them
        tick.label1.set_path_effects(stroke)


def _polygons(ax, mesh: Mesh, values, cmap, kw: dict):
    from matplotlib.collections import PolyCollection

    transform = None
    if mesh.is_sphere:
        polys, vals = _sphere_polygons(mesh, values)
        if ax.name == "mollweide":    # project all corners at once (edges: short chords)
            polys = [_densify(p) for p in polys]
            sizes = np.cumsum([len(p) for p in polys])[:-1]
            polys = np.split(ax.transProjection.transform(np.concatenate(polys)), sizes)
            transform = ax.transAffine + ax.transAxes
        else:                                        # plain axes: lon/lat in degrees
            polys = [np.degrees(p) for p in polys]
    else:
        from ._polygons import unwrapped_polygons as _unwrapped_polygons

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
    if transform is not None:
        kw.setdefault("transform", transform)
    if values is None:
        return ax.add_collection(PolyCollection(
            polys, facecolors="none", edgecolors=kw.pop("edgecolor", "k"),
            linewidths=kw.pop("linewidth", 0.4), **kw), autolim=False)
    kw.setdefault("antialiased", False)  # antialiased polygons leave light seams
    coll = PolyCollection(polys, array=np.ma.masked_invalid(vals), cmap=cmap,
                          edgecolors="face", linewidths=kw.pop("linewidth", 0.0), **kw)
    return ax.add_collection(coll, autolim=False)  # limits are fixed by the axes


def _healpix_image(ax, mesh: Mesh, values, cmap, kw: dict):
    """The NESTED map sampled per image pixel (healpy), placed on Mollweide axes.

    healpy's Mollweide plane is matplotlib's scaled by 1/√2, so the image's
    extent is healpy's times √2 in matplotlib's projected coordinates.
    """
    import healpy
    from healpy.projector import MollweideProj
    from matplotlib.image import AxesImage

    nside = int(mesh.info["nside"])
    proj = MollweideProj(xsize=int(kw.pop("xsize", 800)), flipconv="geo")
    img = proj.projmap(values, lambda x, y, z: healpy.vec2pix(nside, x, y, z, nest=True))
    extent = tuple(np.sqrt(2) * np.asarray(proj.get_extent()))
    image = AxesImage(ax, cmap=cmap, origin="lower", extent=extent,
                      interpolation=kw.pop("interpolation", "nearest"), **kw)
    image.set_data(np.ma.masked_invalid(img))          # outside the ellipse: -inf
    image.set_transform(ax.transAffine + ax.transAxes)
    image.set_clip_path(ax.patch)
    ax.add_image(image)
    return image


def face_flux_density(mesh: Mesh, face_flux: torch.Tensor) -> torch.Tensor:
    """A cell field to draw face fluxes with: the mean of ``|Φ_f| / A_f`` over each
    cell's interior faces, ``(n_cells,)`` (0 for a cell without interior faces).

    ``Φ_f`` is an integrated flux (``[q]·length²/time`` on a surface), so
    ``|Φ_f| / A_f`` is the flux density ``|u q · n|`` (``[q]·length/time``).

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
         title: str | None = None, cmap: str | None = None, label: str | None = None,
         units: str | None = None, *, diverging: bool = False, overwrite: bool = False,
         xlabel: str | None = None, ylabel: str | None = None,
         region: tuple[float, float, float, float] | None = None, **kw):
    """Draw a cell field on ``mesh`` (or the mesh itself) and return the figure.

    Parameters
    ----------
    mesh : Mesh
    field : array or Tensor, shape (n_cells,), {name: values} or xarray.DataArray, optional
        Cell values; ``None`` draws the mesh edges. A DataArray gives its
        ``long_name`` (or name) and ``units`` attributes as defaults for
        ``label`` and ``units``. Non-finite cells are left blank and counted
        in the colorbar label.
    ax : matplotlib Axes, optional
        Draw into it; make it with :func:`subplot` so a sphere mesh gets a
        ``"mollweide"`` panel (on plain axes a sphere is drawn in longitude
        and latitude, degrees). Default: a new figure.
    path : path-like, optional
        Save the figure there (see :func:`save_figure`): ``.png``, ``.pdf`` or
        ``.svg``, atomically; checked before anything is drawn.
    title : str, optional
    cmap : str, optional
        Colormap; default ``"viridis"``, or ``"RdBu_r"`` when ``diverging``.
    label, units : str, optional
        The field's name and units; the colorbar reads ``"label [units]"``
        (default name: the dict key of ``field``, else ``"field"``).
    diverging : bool
        Centre the colour scale on zero (``vmin = −vmax = −max|field|`` unless
        given), for signed fields such as errors and tendencies.
    overwrite : bool
        Replace an existing file at ``path``.
    xlabel, ylabel : str, optional
        Axis labels of planar meshes and columns (default ``x``/``y``, or the
        field and ``z`` for a column).
    region : (lon_min, lon_max, lat_min, lat_max), optional
        Sphere meshes only: draw this lon/lat window (degrees) on plain axes
        instead of the whole globe, e.g. to see a small feature.
    **kw
        Passed to ``imshow`` / ``PolyCollection`` / ``Axes.plot`` (e.g.
        ``vmin``, ``vmax``, ``xsize`` for the HEALPix image width in pixels).

    Returns
    -------
    matplotlib.figure.Figure
        ``ax.figure``, or a new figure that Jupyter displays as PNG.

    Raises
    ------
    ArgumentError
        ``field`` is not one real value per cell, or ``path`` has a suffix
        other than ``.png``/``.pdf``/``.svg`` (nothing is written).
    OutputExistsError
        ``path`` exists and ``overwrite`` is False (it is left untouched).
    """
    field, label, units = _name_units(field, label, units)
    values = None if field is None else _field(mesh, field)
    region = _check_region(mesh, region, ax)
    if path is not None:
        _check_path(path, overwrite)
    cmap = cmap or ("RdBu_r" if diverging else "viridis")
    vmin, vmax = kw.pop("vmin", None), kw.pop("vmax", None)
    cbar_label = axis_label(label, units)
    if values is not None:
        bad = int((~np.isfinite(values)).sum())
        if bad:
            cbar_label += f" ({bad} non-finite cell{'s' * (bad > 1)} blank)"
        finite = values[np.isfinite(values)]
        if diverging and finite.size and (vmin is None or vmax is None):
            top = float(np.abs(finite).max()) or 1.0
            vmin = -top if vmin is None else vmin
            vmax = top if vmax is None else vmax
    family = mesh.family
    if ax is None:
        size = (7.5, 4.6) if mesh.is_sphere else ((4, 5) if mesh.dim == 1 else (6, 5))
        fig = new_figure((6, 5) if region else size)
        ax = subplot(fig, mesh, region=region)
    else:
        fig = ax.figure
    artist = None
    if mesh.dim == 1:
        z = mesh.cell_center[:, 0].detach().cpu().numpy()
        if values is None:
            levels = mesh.vertex_pos[:, 0].cpu().numpy()
            ax.plot(np.zeros_like(levels), levels, "_", markersize=20, **kw)
            ax.set_xticks([])
            ax.set_xlabel(xlabel or "cell faces")
        else:
            ax.plot(values, z, marker=".", **kw)
            ax.set_xlim(vmin, vmax)
            ax.set_xlabel(xlabel or cbar_label)
            ax.grid(True, linewidth=0.3, alpha=0.5)
        ax.set_ylabel(ylabel or "z")
    elif family == "cartesian" and values is not None:
        nx, ny, lx, ly = (mesh.info[k] for k in ("nx", "ny", "lx", "ly"))
        artist = ax.imshow(values.reshape(ny, nx), origin="lower", extent=(0, lx, 0, ly),
                           cmap=cmap, interpolation="nearest", **kw)
    elif family == "healpix" and values is not None and ax.name == "mollweide":
        artist = _healpix_image(ax, mesh, values, cmap, kw)
    else:
        artist = _polygons(ax, mesh, values, cmap, kw)
        if values is None:
            artist = None
        if mesh.is_sphere and ax.name != "mollweide":   # plain axes: lon/lat in degrees
            lon0, lon1, lat0, lat1 = region or (-180, 180, -90, 90)
            ax.set_xlim(lon0, lon1)
            ax.set_ylim(lat0, lat1)
            ax.set_aspect("equal")
            ax.grid(True, color="0.25", linewidth=0.4, alpha=0.6)
            ax.set_xlabel(xlabel or "longitude [°]")
            ax.set_ylabel(ylabel or "latitude [°]")
    if ax.name == "mollweide":
        _graticule(ax)
    elif mesh.dim > 1 and not mesh.is_sphere:
        ax.set_xlabel(xlabel or "x")
        ax.set_ylabel(ylabel or "y")
    if artist is not None:
        artist.set_clim(vmin, vmax)
        _colorbar(fig, ax, artist, cbar_label, units, label)
    if title is not None:
        ax.set_title(title)
    if path is not None:
        save_figure(fig, path, overwrite=overwrite)
    return fig


def plot_comparison(mesh: Mesh, field: Any, reference: Any, label: str = "field",
                    units: str | None = None, names: tuple[str, str] = ("final", "exact"),
                    title: str | None = None, path: str | os.PathLike | None = None,
                    overwrite: bool = False, error_title: str | None = None,
                    region: tuple[float, float, float, float] | None = None, **kw):
    """Three panels side by side: ``field``, ``reference`` and the error ``field − reference``.

    The first two share one colour scale (the range of both), the error has
    a diverging scale centred on zero. For a test case with an exact
    solution, such as Williamson et al. (1992) test 1.

    Parameters
    ----------
    mesh : Mesh
    field, reference : array or Tensor, shape (n_cells,)
        The computed and the reference field.
    label, units : str
        The field's name and units (the error has the same units).
    names : (str, str)
        Panel titles of ``field`` and ``reference``.
    error_title : str, optional
        Title of the error panel (default ``"<names[0]> − <names[1]>"``).
    region : (lon_min, lon_max, lat_min, lat_max), optional
        A lon/lat window (degrees) instead of the globe, as in :func:`plot`.
    title : str, optional
        Figure title.
    path, overwrite
        As in :func:`plot`.
    **kw
        Passed to each :func:`plot` (not ``vmin``/``vmax``/``cmap``).

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> from meshclosure.mesh import healpix
    >>> x = torch.arange(12.0)
    >>> fig = plot_comparison(healpix(1), x + 1, x, label="h", units="m")
    >>> [ax.get_title() for ax in fig.axes[::2]]      # each panel, then its colorbar
    ['final', 'exact', 'final − exact']
    """
    a, b = _field(mesh, field), _field(mesh, reference)
    region = _check_region(mesh, region, None)
    if path is not None:
        _check_path(path, overwrite)
    both = np.r_[a, b]
    both = both[np.isfinite(both)]
    lo, hi = (float(both.min()), float(both.max())) if both.size else (None, None)
    if mesh.is_sphere and region is None:
        size = (19.0, 4.4)
    else:                                         # panels as high as their aspect asks
        if region is not None:
            height = (region[3] - region[2]) / (region[1] - region[0])
        else:
            extent = np.ptp(mesh.vertex_pos.detach().cpu().double().numpy()[:, :2], axis=0)
            height = extent[1] / extent[0] if extent[0] > 0 else 1.0
        size = (15.0, 1.4 + 3.3 * min(max(height, 0.25), 2.0))
    fig = new_figure(size)
    for k, (values, name) in enumerate(((a, names[0]), (b, names[1]))):
        plot(mesh, values, ax=subplot(fig, mesh, 1, 3, k + 1, region=region), title=name,
             label=label, units=units, vmin=lo, vmax=hi, region=region, **kw)
    plot(mesh, a - b, ax=subplot(fig, mesh, 1, 3, 3, region=region),
         title=error_title or f"{names[0]} − {names[1]}", label=f"{label} error", units=units,
         diverging=True, region=region, **kw)
    if title is not None:
        fig.suptitle(title)
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path, overwrite=overwrite)
    return fig
