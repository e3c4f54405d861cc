"""uxarray reads what io.write_ugrid writes: the edges it derives are the stored ones, and its
own (recomputed) face areas agree with the stored exact areas as the file's attributes say.

Per family: Cartesian (bounded and periodic), HEALPix, icosahedral triangles and duals, fine
and coarse (native nesting, or agglomeration for duals)."""
import math
import warnings

import numpy as np
import pytest
import torch

from meshclosure import io
from meshclosure.mesh import Coarsening, agglomerate, cartesian, healpix, icosahedral

ux = pytest.importorskip("uxarray")


def _agglomerated(fine, n):
    return Coarsening(fine, agglomerate(fine, n)).coarse


MESHES = {
    "cartesian": lambda: cartesian(6, 4, periodic=False),
    "torus": lambda: cartesian(6, 4, 2.0, 1.0),
    "healpix": lambda: healpix(4),
    "icosahedral": lambda: icosahedral(2),
    "dual": lambda: icosahedral(2, dual=True),
    "cartesian_coarse": lambda: Coarsening.native(cartesian(8, 8, periodic=False), 2).coarse,
    "torus_coarse": lambda: Coarsening.native(cartesian(12, 12), 4).coarse,
    "healpix_coarse": lambda: Coarsening.native(healpix(8), 2).coarse,
    "icosahedral_coarse": lambda: Coarsening.native(icosahedral(3), 2).coarse,
    "icosahedral_coarse4": lambda: Coarsening.native(icosahedral(3), 4).coarse,
    "dual_coarse": lambda: _agglomerated(icosahedral(3, dual=True), 40),
}
SPHERES = [k for k in MESHES if not k.startswith(("cartesian", "torus"))]
ACCURATE = {"quadrature_rule": "gaussian", "order": 10}   # uxarray's quadrature to rounding


def _open(mesh, tmp_path, fields=None):
    path = tmp_path / "m.nc"
    io.write_ugrid(mesh, fields, path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)        # uxarray: "projected coordinates"
        return ux.open_grid(path), io.read_ugrid(path), path


def _pairs(a):
    a = np.sort(np.asarray(a), axis=1)
    return set(map(tuple, a.tolist()))


@pytest.mark.parametrize("name", MESHES)
def test_derived_edges_are_the_stored_edges(tmp_path, name):
    mesh = MESHES[name]()
    grid, ds, _ = _open(mesh, tmp_path)
    assert ds.sizes["n_edge"] == mesh.n_faces + mesh.n_boundary_faces
    assert grid.n_edge == ds.sizes["n_edge"] and grid.n_face == mesh.n_cells
    # the same node pairs, not only the same count
    assert _pairs(grid.edge_node_connectivity.values) == _pairs(ds["edge_node_connectivity"].values)
    # no hanging nodes: every node ends an edge, and polygons have as many nodes as edges
    conn = ds["face_node_connectivity"].values
    assert np.array_equal(np.unique(ds["edge_node_connectivity"].values), np.arange(grid.n_node))
    edges_per_cell = np.bincount(ds["edge_face_connectivity"].values[ds["edge_face_connectivity"]
                                                                     .values >= 0], None,
                                 mesh.n_cells)
    assert np.array_equal((conn >= 0).sum(1), edges_per_cell)


def test_coarse_icosahedral_has_three_corners_per_triangle(tmp_path):
    coarse = Coarsening.native(icosahedral(3), 2).coarse      # the case: 642 vertices
    grid, ds, _ = _open(coarse, tmp_path)
    assert coarse.n_vertices == 642 and grid.n_node == 162
    assert ds.sizes["n_max_face_nodes"] == 3 and (grid.n_edge, ds.sizes["n_edge"]) == (480, 480)


@pytest.mark.parametrize("name", SPHERES)
def test_sphere_areas_agree_as_documented(tmp_path, name):
    mesh = MESHES[name]()
    grid, ds, _ = _open(mesh, tmp_path)
    exact = mesh.cell_volume.numpy()
    np.testing.assert_array_equal(grid.face_areas.values, exact)      # read from the file
    theirs = np.asarray(grid.compute_face_areas(**ACCURATE))          # recomputed, unit sphere
    rel = np.abs(theirs / exact - 1)
    assert theirs.sum() == pytest.approx(4 * math.pi, rel=1e-12)      # they tile the sphere
    attrs = ds["face_areas"].attrs
    assert attrs["area_method"].startswith("exact")
    # the attributes state the per-cell and total difference uxarray finds
    assert rel.max() == pytest.approx(attrs["polygon_area_max_rel_diff"], abs=1e-9)
    assert abs(theirs.sum() / exact.sum() - 1) <= attrs["polygon_area_total_rel_diff"] + 1e-12
    if name.startswith("healpix"):      # pixel edges are not great circles
        assert 0.05 < rel.max() < 0.10 and "not great circles" in attrs["polygon_area_note"]
        assert abs(theirs.sum() / exact.sum() - 1) < 1e-6
    elif name == "dual_coarse":         # agglomerated: faces zigzag, polygons join corners only
        assert rel.max() > 0.01 and "approximation" in attrs["polygon_area_note"]
        assert abs(theirs.sum() / exact.sum() - 1) < 1e-6
    else:                               # icosahedral triangles and duals, fine and coarse
        assert rel.max() < 1e-6
    # uxarray's default quadrature (triangular, order 4) is close too, not exact
    default = np.asarray(grid.compute_face_areas())
    assert abs(default.sum() / exact.sum() - 1) < 1e-4


def test_radius_handling(tmp_path):
    radius = 6.371e6
    mesh = icosahedral(2, radius=radius)
    grid, ds, _ = _open(mesh, tmp_path)
    assert ds.attrs["radius"] == radius
    np.testing.assert_array_equal(grid.face_areas.values, mesh.cell_volume.numpy())   # m²
    unit = np.asarray(grid.compute_face_areas(**ACCURATE))           # uxarray: unit sphere
    np.testing.assert_allclose(unit * radius**2, mesh.cell_volume.numpy(), rtol=1e-6)
    assert "radius**2" in ds["face_areas"].attrs["uxarray_note"]


@pytest.mark.parametrize("name", ["cartesian", "torus", "cartesian_coarse", "torus_coarse"])
def test_planar_what_uxarray_can_and_cannot_do(tmp_path, name):
    mesh = MESHES[name]()
    q = torch.randn(mesh.n_cells, dtype=torch.float64)
    grid, ds, path = _open(mesh, tmp_path, {"q": q})
    # can: connectivity, the stored exact areas, node coordinates, fields on n_face
    np.testing.assert_array_equal(grid.face_areas.values, mesh.cell_volume.numpy())
    nodes = np.c_[ds["mesh_node_x"].values, ds["mesh_node_y"].values]
    np.testing.assert_array_equal(grid.node_lon.values, nodes[:, 0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        uxds = ux.open_dataset(path, path)
    assert uxds["q"].dims == ("n_face",)
    np.testing.assert_array_equal(uxds["q"].values, q.numpy())
    total = float((uxds["q"] * uxds.uxgrid.face_areas).sum())           # aligned, no outer product
    assert total == pytest.approx(float((q * mesh.cell_volume).sum()), rel=1e-12)
    # cannot: uxarray has only unit-sphere geometry; it reads x/y as degrees of lon/lat
    assert "not a planar area" in ds["face_areas"].attrs["uxarray_note"]
    theirs = np.asarray(grid.compute_face_areas(**ACCURATE))
    if name.startswith("cartesian"):   # no wrapped cells: spherical areas of x/y-degree polygons
        np.testing.assert_allclose(theirs, mesh.cell_volume.numpy() * (math.pi / 180) ** 2,
                                   rtol=2e-4)                           # cos(lat <= 1 degree)
    assert not np.allclose(theirs, mesh.cell_volume.numpy(), rtol=0.5)


def test_polygon_notes_on_every_family(tmp_path):
    for name in ("cartesian", "healpix", "dual_coarse"):
        folder = tmp_path / name
        folder.mkdir()
        _, ds, _ = _open(MESHES[name](), folder)
        attrs = ds["face_areas"].attrs
        assert {"area_method", "polygon_area_max_rel_diff", "polygon_area_total_rel_diff",
                "polygon_area_note", "uxarray_note", "units"} <= set(attrs)
    assert "sum of the exact areas of the fine cells" in attrs["area_method"]
