"""meshclosure.plot: a non-blank PNG per mesh family with the field's extreme colours,
labelled axes and colorbars, one map style with a graticule, and safe saving."""
import os

import matplotlib
import numpy as np
import pytest
import torch

from meshclosure.errors import ArgumentError, OutputExistsError
from meshclosure.mesh import cartesian, healpix, icosahedral
from meshclosure.plot import _sphere_polygons, plot, plot_comparison, save_figure

MESHES = {
    "cartesian": lambda: cartesian(8, 4, 2.0, 1.0),
    "plane": lambda: cartesian(5, 4, periodic=False),
    "healpix": lambda: healpix(2),
    "icosahedral": lambda: icosahedral(1),
    "dual": lambda: icosahedral(1, dual=True),
}


def _field(mesh):
    c = mesh.cell_center.double()
    return c[:, 0] + 2 * c[:, 1] if mesh.dim > 1 else torch.sin(3 * c[:, 0])


def _rgb(path):
    import matplotlib.image

    return matplotlib.image.imread(str(path))[..., :3]


def _has_colour(image, rgb, tol=0.02):
    return bool((np.abs(image - np.asarray(rgb)[:3]).max(-1) < tol).any())


def _colorbar(ax):
    """The colorbar of the field drawn on ``ax`` (None if there is none)."""
    for artist in ax.images + ax.collections:
        if getattr(artist, "colorbar", None) is not None:
            return artist.colorbar
    return None


def _colorbar_label(ax):
    cb = _colorbar(ax)
    return cb.ax.get_xlabel() or cb.ax.get_ylabel()


@pytest.mark.parametrize("name", MESHES)
def test_plot_shows_field_extremes(tmp_path, name):
    mesh = MESHES[name]()
    path = tmp_path / "f.png"
    fig = plot(mesh, _field(mesh), path=path, title=name, label="q", units="kg m-2")
    image = _rgb(path)
    colours = np.unique((image * 255).round().reshape(-1, 3), axis=0)
    assert len(colours) > 20
    cmap = matplotlib.colormaps["viridis"]
    assert _has_colour(image, cmap(0.0)) and _has_colour(image, cmap(1.0))
    assert _colorbar_label(fig.axes[0]) == "q [kg m-2]"
    assert os.listdir(tmp_path) == ["f.png"]


@pytest.mark.parametrize("name", ["healpix", "dual", "plane"])
def test_plot_mesh_edges(tmp_path, name):
    plot(MESHES[name](), path=tmp_path / "m.png")
    image = _rgb(tmp_path / "m.png")
    dark = (image.max(-1) < 0.3).mean()
    assert 0.005 < dark < 0.5                            # edges drawn, not a filled blob


def test_plot_column_profile():
    mesh = cartesian(6, lx=3.0)
    fig = plot(mesh, _field(mesh))
    x, z = fig.axes[0].lines[0].get_data()
    np.testing.assert_allclose(z, [0.25, 0.75, 1.25, 1.75, 2.25, 2.75])
    np.testing.assert_allclose(x, np.sin(3 * z))


def test_cartesian_image_orientation():
    mesh = cartesian(4, 2, periodic=False)
    values = torch.arange(8.0)                           # cell j * nx + i
    image = plot(mesh, values).axes[0].images[0]
    np.testing.assert_array_equal(image.get_array(), [[0, 1, 2, 3], [4, 5, 6, 7]])
    assert image.origin == "lower" and tuple(image.get_extent()) == (0, 1, 0, 0.5)


def test_sphere_polygons_do_not_smear():
    mesh = icosahedral(2, dual=True)
    polys, vals = _sphere_polygons(mesh, np.arange(mesh.n_cells, dtype=float))
    spans = np.array([np.ptp(p[:, 0]) for p in polys])
    full = spans > np.pi                                  # only the two polar rings span 2 pi
    assert full.sum() == 2 * 3                            # (each drawn at -2pi, 0, +2pi)
    assert spans[~full].max() < 2 * np.pi / 5 + 1e-9      # the widest: next to a pole
    assert set(vals.astype(int)) == set(range(mesh.n_cells))   # every cell drawn
    # cells are drawn where they are: centres of the unshifted copies inside [-pi, pi]
    centres = np.array([p.mean(0) for p in polys[: mesh.n_cells - 2]])
    assert np.abs(centres[:, 0]).max() < np.pi + 0.3 and np.abs(centres[:, 1]).max() < np.pi / 2


def test_sphere_plot_has_no_gaps(tmp_path):
    mesh = icosahedral(2)                                 # has vertices at both poles
    fig = plot(mesh, torch.ones(mesh.n_cells), vmin=0.0, vmax=2.0)
    ax = fig.axes[0]
    ax.grid(False)
    ax.xaxis.set_tick_params(labelbottom=False)          # longitude labels sit on the map
    fig.savefig(tmp_path / "c.png", dpi=fig.dpi)
    image = _rgb(tmp_path / "c.png")
    lon, lat = np.meshgrid(np.linspace(-3.13, 3.13, 41), np.linspace(-1.5, 1.5, 31))
    lon, lat = lon.ravel(), lat.ravel()
    xy = ax.transData.transform(np.c_[lon, lat])
    u, v = ax.transAxes.inverted().transform(xy).T       # the map is the ellipse in the axes box
    inside = (2 * u - 1) ** 2 + (2 * v - 1) ** 2 < 0.97  # not on the black outline
    assert inside.sum() > 1000
    rows = (image.shape[0] - xy[inside, 1]).astype(int)
    pixels = image[rows, xy[inside, 0].astype(int)]
    expected = matplotlib.colormaps["viridis"](0.5)[:3]
    assert np.abs(pixels - expected).max() < 0.01


def test_plot_rejects_wrong_size_and_keeps_file(tmp_path):
    path = tmp_path / "f.png"
    plot(healpix(1), torch.arange(12.0), path=path)
    before = path.read_bytes()
    with pytest.raises(ValueError, match=r"field=<array of shape \(13,\), float32>: must "
                                         r"have shape \(n_cells,\) = \(12,\)"):
        plot(healpix(1), torch.arange(13.0), path=path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["f.png"]


def test_periodic_agglomerates_drawn_in_the_box():
    from meshclosure.mesh import Coarsening, agglomerate

    fine = cartesian(8, 8)
    parent = agglomerate(fine, 6)
    coarse = Coarsening(fine, parent).coarse
    ax = plot(coarse, torch.arange(6.0)).axes[0]
    assert ax.get_xlim() == (0.0, 1.0) and ax.get_ylim() == (0.0, 1.0)
    coll = ax.collections[0]
    for i, centre in enumerate(fine.cell_center.numpy()):     # every fine cell centre shows
        hits = {coll.get_array()[k] for k, p in enumerate(coll.get_paths())  # its parent
                if p.contains_point(centre)}
        assert hits == {float(parent[i])}


# --- saving: the suffix picks the format, nothing is replaced without asking -----------

MAGIC = {".png": lambda b: b.startswith(b"\x89PNG\r\n\x1a\n"),
         ".pdf": lambda b: b.startswith(b"%PDF-"),
         ".svg": lambda b: b.lstrip().startswith(b"<?xml") and b"<svg" in b[:2000]}


@pytest.mark.parametrize("suffix", [".png", ".pdf", ".svg", ".PDF"])
def test_saved_format_follows_suffix(tmp_path, suffix):
    path = tmp_path / f"f{suffix}"
    plot(healpix(1), torch.arange(12.0), path=path, label="q")
    assert MAGIC[suffix.lower()](path.read_bytes())
    assert os.listdir(tmp_path) == [path.name]          # no temporary file left


@pytest.mark.parametrize("name", ["f.jpg", "f", "f.png.tmp"])
def test_wrong_suffix_refused_and_nothing_written(tmp_path, name):
    with pytest.raises(ArgumentError, match=r"path='.*': must end in \.png, \.pdf or \.svg"):
        plot(healpix(1), torch.arange(12.0), path=tmp_path / name)
    fig = plot(healpix(1), torch.arange(12.0))
    with pytest.raises(ArgumentError) as err:
        save_figure(fig, tmp_path / name)
    assert "--png" in str(err.value.renamed({"path": "--png"}))   # the CLI can name its flag
    assert os.listdir(tmp_path) == []


def test_existing_file_refused_unless_overwrite(tmp_path):
    path = tmp_path / "f.pdf"
    path.write_bytes(b"not a figure")
    with pytest.raises(OutputExistsError,
                       match=r"path='.*f\.pdf': the file exists.*overwrite=True"):
        plot(healpix(1), torch.arange(12.0), path=path)
    with pytest.raises(OutputExistsError):
        plot_comparison(healpix(1), torch.arange(12.0), torch.zeros(12), path=path)
    assert path.read_bytes() == b"not a figure" and os.listdir(tmp_path) == ["f.pdf"]
    plot(healpix(1), torch.arange(12.0), path=path, overwrite=True)
    assert MAGIC[".pdf"](path.read_bytes()) and os.listdir(tmp_path) == ["f.pdf"]


def test_missing_folder_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="path=.*does not exist"):
        plot(healpix(1), torch.arange(12.0), path=tmp_path / "no" / "f.png")


# --- labels: every axis and every colorbar says what it shows --------------------------

@pytest.mark.parametrize("name", MESHES)
def test_colorbar_names_field_and_units(name):
    xr = pytest.importorskip("xarray")
    mesh = MESHES[name]()
    values = _field(mesh).numpy()
    data = xr.DataArray(values, dims="n_face", name="q",
                        attrs={"long_name": "tracer mass", "units": "kg m-2"})
    assert _colorbar_label(plot(mesh, data).axes[0]) == "tracer mass [kg m-2]"
    assert _colorbar_label(plot(mesh, {"q": values}, units="K").axes[0]) == "q [K]"
    values[:3] = np.nan                                  # never silently blank
    label = _colorbar_label(plot(mesh, values, label="b", units="m s-2").axes[0])
    assert label == "b [m s-2] (3 non-finite cells blank)"


@pytest.mark.parametrize("name", ["cartesian", "plane"])
@pytest.mark.parametrize("field", [True, False])
def test_planar_axes_labelled(name, field):
    mesh = MESHES[name]()
    ax = plot(mesh, _field(mesh) if field else None).axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("x", "y")
    ax = plot(mesh, _field(mesh) if field else None, xlabel="x [km]", ylabel="z [m]").axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("x [km]", "z [m]")


def test_column_axes_labelled():
    mesh = cartesian(6, lx=3.0)
    ax = plot(mesh, _field(mesh), label="b", units="m s-2").axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("b [m s-2]", "z")
    ax = plot(mesh).axes[0]
    assert ax.get_xlabel() and ax.get_ylabel() == "z"


@pytest.mark.parametrize("name", ["healpix", "icosahedral", "dual"])
@pytest.mark.parametrize("field", [True, False])
def test_sphere_maps_share_one_graticule(name, field):
    mesh = MESHES[name]()
    fig = plot(mesh, _field(mesh) if field else None)
    ax = fig.axes[0]
    fig.canvas.draw()
    assert ax.name == "mollweide"
    meridians = [line for line in ax.get_xgridlines() if line.get_visible()]
    parallels = [line for line in ax.get_ygridlines() if line.get_visible()]
    assert len(meridians) == 5 and len(parallels) == 5    # every 60° and every 30°
    lon = [t.get_text() for t in ax.get_xticklabels() if t.get_visible()]
    lat = [t.get_text() for t in ax.get_yticklabels() if t.get_visible()]
    assert lon == ["-120°", "-60°", "0°", "60°", "120°"]
    assert lat == ["-60°", "-30°", "0°", "30°", "60°"]
    assert (_colorbar(ax) is not None) == field


def test_healpix_pixels_drawn_where_they_are(tmp_path):
    """One lit pixel per region (north cap, equator, antimeridian, south) shows at its
    own (lon, lat): the image is neither mirrored nor shifted."""
    import healpy

    nside = 4
    mesh = healpix(nside)
    for pix in (5, 70, 101, 190):
        values = np.zeros(mesh.n_cells)
        values[pix] = 1.0
        fig = plot(mesh, values, vmin=0.0, vmax=1.0)
        ax = fig.axes[0]
        ax.grid(False)
        ax.xaxis.set_tick_params(labelbottom=False)
        fig.savefig(tmp_path / "p.png", dpi=fig.dpi)
        image = _rgb(tmp_path / "p.png")
        theta, phi = healpy.pix2ang(nside, pix, nest=True)
        lon = (phi + np.pi) % (2 * np.pi) - np.pi
        x, y = ax.transData.transform([[lon, np.pi / 2 - theta]])[0]
        pixel = image[int(image.shape[0] - y), int(x)]
        np.testing.assert_allclose(pixel, matplotlib.colormaps["viridis"](1.0)[:3], atol=0.01)
        x, y = ax.transData.transform([[lon + np.pi / 2 if lon < 0 else lon - np.pi / 2, 0.0]])[0]
        pixel = image[int(image.shape[0] - y), int(x)]
        np.testing.assert_allclose(pixel, matplotlib.colormaps["viridis"](0.0)[:3], atol=0.01)


# --- figures made of panels, and figures in notebooks -----------------------------------

def test_comparison_shares_scale_and_centres_error():
    mesh = icosahedral(1)
    exact = _field(mesh)
    final = 0.8 * exact + 0.1
    fig = plot_comparison(mesh, final, exact, label="h", units="m", title="test 1")
    a, b, e = fig.axes[::2]                              # each panel, then its colorbar
    assert [ax.get_title() for ax in (a, b, e)] == ["final", "exact", "final − exact"]
    lo = float(min(final.min(), exact.min()))
    hi = float(max(final.max(), exact.max()))
    for ax in (a, b):
        assert _colorbar(ax).mappable.get_clim() == pytest.approx((lo, hi))
        assert _colorbar_label(ax) == "h [m]"
    top = float((final - exact).abs().max())
    assert _colorbar(e).mappable.get_clim() == pytest.approx((-top, top))
    assert _colorbar(e).mappable.get_cmap().name == "RdBu_r"
    assert _colorbar_label(e) == "h error [m]"
    drawn = np.sort(np.asarray(_colorbar(e).mappable.get_array()))
    assert set(np.round((final - exact).numpy(), 12)) <= set(np.round(drawn, 12))


def test_diverging_scale_centred_on_zero():
    mesh = cartesian(4, 4)
    values = torch.linspace(-1.0, 3.0, 16)
    cb = _colorbar(plot(mesh, values, diverging=True).axes[0])
    assert cb.mappable.get_clim() == (-3.0, 3.0) and cb.mappable.get_cmap().name == "RdBu_r"


def test_figures_render_in_jupyter_and_do_not_leak():
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    fig = plot(healpix(1), torch.arange(12.0))
    assert fig._repr_png_().startswith(b"\x89PNG")     # IPython shows it as an image
    assert plt.get_fignums() == before                   # pyplot never saw it


def test_region_draws_a_lon_lat_window_in_degrees():
    mesh = icosahedral(2)
    values = _field(mesh)
    ax = plot(mesh, values, region=(-150, -30, -45, 45), label="h", units="m").axes[0]
    assert ax.name == "rectilinear"
    assert ax.get_xlim() == (-150, -30) and ax.get_ylim() == (-45, 45)
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("longitude [°]", "latitude [°]")
    assert _colorbar_label(ax) == "h [m]"
    coll = ax.collections[0]
    centre = mesh.cell_center[0].double()                  # cell 0 sits at its own lon/lat
    lon = np.degrees(np.arctan2(float(centre[1]), float(centre[0])))
    lat = np.degrees(np.arcsin(float(centre[2] / centre.norm())))
    hits = {float(coll.get_array()[k]) for k, p in enumerate(coll.get_paths())
            if p.contains_point((lon, lat))}
    assert hits == {float(values[0])}


@pytest.mark.parametrize("region, ax, match", [
    ((-30, -150, -45, 45), None, "lon_min < lon_max"),
    ((0, 10, 0), None, "four numbers"),
    ((0, 10, 0, 10), "mollweide", "needs plain axes"),
])
def test_region_refused_when_wrong(region, ax, match):
    from meshclosure.plot import new_figure

    if ax is not None:
        ax = new_figure().add_subplot(projection=ax)
    with pytest.raises(ArgumentError, match=rf"region=.*{match}"):
        plot(icosahedral(1), torch.zeros(80), ax=ax, region=region)
    with pytest.raises(ArgumentError, match="region=.*is for sphere meshes"):
        plot(cartesian(4, 4), torch.zeros(16), region=(0, 1, 0, 1))


@pytest.mark.parametrize("scale, factor", [(7e-5, "10⁻⁵"), (3e6, "10⁶"), (0.02, None)])
def test_colorbar_names_the_power_of_ten(scale, factor):
    mesh = icosahedral(1)
    fig = plot(mesh, scale * _field(mesh) / float(_field(mesh).abs().max()), label="ζ",
               units="s-1")
    cb = _colorbar(fig.axes[0])
    fig.canvas.draw()
    ticks = [t.get_text() for t in cb.ax.get_xticklabels() if t.get_text()]
    if factor is None:
        assert _colorbar_label(fig.axes[0]) == "ζ [s-1]"
    else:                                                # ticks in units of the factor
        assert _colorbar_label(fig.axes[0]) == f"ζ [{factor} s-1]"
        values = [float(t.replace("−", "-")) for t in ticks]
        assert 1 <= max(abs(v) for v in values) < 10
        assert not cb.ax.xaxis.get_offset_text().get_text()


def test_figures_pickle(tmp_path):
    import pickle

    fig = pickle.loads(pickle.dumps(plot(healpix(1), torch.arange(12.0), label="q")))
    assert _colorbar_label(fig.axes[0]) == "q"
