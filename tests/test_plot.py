"""meshclosure.plot: a non-blank PNG per mesh family with the field's extreme colours."""
import os

import matplotlib
import numpy as np
import pytest
import torch

from meshclosure.mesh import cartesian, healpix, icosahedral
from meshclosure.plot import _sphere_polygons, plot

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


@pytest.mark.parametrize("name", MESHES)
def test_plot_shows_field_extremes(tmp_path, name):
    mesh = MESHES[name]()
    path = tmp_path / "f.png"
    fig = plot(mesh, _field(mesh), path=path, title=name, label="q")
    image = _rgb(path)
    colours = np.unique((image * 255).round().reshape(-1, 3), axis=0)
    assert len(colours) > 20
    cmap = matplotlib.colormaps["viridis"]
    assert _has_colour(image, cmap(0.0)) and _has_colour(image, cmap(1.0))
    assert fig.axes[-1].get_ylabel() == "q"              # colorbar label
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
    with pytest.raises(ValueError, match=r"n_cells,\) = \(12,\).*got \(13,\)"):
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
