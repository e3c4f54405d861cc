"""`from_meshio`: users' own planar and spherical meshes, read from files or objects."""
from __future__ import annotations

import math

import meshio
import numpy as np
import pytest
import torch

from meshclosure.mesh import from_meshio

from conftest import cubed_sphere_meshio, square_with_hole_meshio, square_with_hole_points


@pytest.mark.parametrize("n", [4, 8, 12])
def test_square_with_hole_from_vtu_file(tmp_path, n):
    path = tmp_path / f"hole_{n}.vtu"
    meshio.write(path, square_with_hole_meshio(n))
    mesh = from_meshio(path)                       # a pathlib.Path
    again = from_meshio(str(path))                 # and a str
    assert torch.equal(mesh.face_cells, again.face_cells)
    assert mesh.validate() == []
    assert not mesh.is_sphere and mesh.dim == 2
    assert mesh.info["family"] == "meshio" and mesh.info["source"] == str(path)
    assert mesh.euler_characteristic() == 0
    assert float(mesh.cell_volume.sum()) == pytest.approx(0.75, rel=1e-12, abs=0)
    assert mesh.domain_area() == pytest.approx(0.75, rel=1e-12, abs=0)
    # boundaries found and tagged
    assert set(mesh.boundary_tag_names) == {"outer", "hole_0"}
    names = mesh.boundary_tag_names
    c, nrm = mesh.boundary_face_center, mesh.boundary_face_normal
    outer = mesh.boundary_face_tag == names.index("outer")
    hole = mesh.boundary_face_tag == names.index("hole_0")
    assert bool((outer | hole).all())
    on_outer = ((c - 0.5).abs().max(1).values - 0.5).abs() < 1e-12
    on_hole = ((c - 0.5).abs().max(1).values - 0.25).abs() < 1e-12
    assert torch.equal(outer, on_outer) and torch.equal(hole, on_hole)
    assert float(mesh.boundary_face_area[outer].sum()) == pytest.approx(4.0, rel=1e-13)
    assert float(mesh.boundary_face_area[hole].sum()) == pytest.approx(2.0, rel=1e-13)
    # outward normals: away from the centre on the outer loop, into the hole on the hole loop
    towards_centre = ((0.5 - c) * nrm).sum(1)
    assert bool((towards_centre[outer] < 0).all()) and bool((towards_centre[hole] > 0).all())
    # only the triangles kept: no vertex of the hole interior remains
    pts, tri = square_with_hole_points(n)
    assert mesh.n_cells == len(tri)


def test_hole_cells_match_input_triangles(tmp_path):
    pts, tri = square_with_hole_points(8)
    mesh = from_meshio(meshio.Mesh(pts, [("triangle", tri)]))
    p = pts[tri][:, :, :2]
    area = 0.5 * np.abs((p[:, 1, 0] - p[:, 0, 0]) * (p[:, 2, 1] - p[:, 0, 1])
                        - (p[:, 2, 0] - p[:, 0, 0]) * (p[:, 1, 1] - p[:, 0, 1]))
    np.testing.assert_allclose(mesh.cell_volume.numpy(), area, rtol=1e-12)
    np.testing.assert_allclose(mesh.cell_center.numpy(), p.mean(1), rtol=0, atol=1e-15)


@pytest.mark.parametrize("n,radius", [(1, 1.0), (2, 1.0), (4, 1.0), (3, 7.0)])
def test_cubed_sphere(tmp_path, n, radius):
    src = cubed_sphere_meshio(n, radius)
    path = tmp_path / "cubed.vtu"
    meshio.write(path, src)
    for mesh in (from_meshio(path), from_meshio(src)):  # file path and meshio.Mesh object
        assert mesh.validate() == []
        assert mesh.is_sphere and mesh.radius == pytest.approx(radius, rel=1e-14)
        assert mesh.n_cells == 6 * n * n and mesh.n_vertices == 6 * n * n + 2
        assert mesh.n_faces == 12 * n * n and mesh.n_boundary_faces == 0
        assert mesh.euler_characteristic() == 2
        assert float(mesh.cell_volume.sum()) == pytest.approx(4 * math.pi * radius**2,
                                                              rel=1e-12, abs=0)
    if n == 1:
        # the 6 faces of the cube project to 6 equal squares of area 4π/6
        assert torch.allclose(mesh.cell_volume, torch.full((6,), 4 * math.pi / 6,
                                                           dtype=torch.float64), rtol=1e-13)


def test_mixed_triangles_and_quads_and_2d_points():
    """A unit square of 3x3 quads with the middle row split into triangles, given
    with (x, y) points only."""
    k = np.arange(4) / 3
    x, y = np.meshgrid(k, k, indexing="xy")
    pts = np.c_[x.ravel(), y.ravel()]
    vid = np.arange(16).reshape(4, 4)
    quads, tris = [], []
    for j in range(3):
        for i in range(3):
            a, b, c, d = vid[j, i], vid[j, i + 1], vid[j + 1, i + 1], vid[j + 1, i]
            if j == 1:
                tris += [[a, b, c], [a, c, d]]
            else:
                quads.append([a, b, c, d])
    mesh = from_meshio(meshio.Mesh(pts, [("quad", np.array(quads)), ("triangle", np.array(tris))]))
    assert mesh.validate() == []
    assert mesh.n_cells == 6 + 6
    assert mesh.euler_characteristic() == 1
    assert float(mesh.cell_volume.sum()) == pytest.approx(1.0, rel=1e-14)
    assert mesh.boundary_tag_names == ("outer",)
    assert float(mesh.boundary_face_area.sum()) == pytest.approx(4.0, rel=1e-14)


def test_unused_points_are_dropped():
    pts, tri = square_with_hole_points(4)
    extra = np.vstack([pts, [[5.0, 5.0, 0.0], [6.0, 5.0, 0.0]]])
    mesh = from_meshio(meshio.Mesh(extra, [("triangle", tri), ("vertex", np.array([[len(pts)]]))]))
    assert mesh.n_vertices == len(np.unique(tri))
    assert float(mesh.cell_volume.sum()) == pytest.approx(0.75, rel=1e-12)


def test_regional_sphere_mesh_with_open_boundary():
    """A cubed sphere with one cube face removed: an open spherical mesh with one
    boundary loop (a regional mesh, as MPAS/ICON limited-area meshes are)."""
    src = cubed_sphere_meshio(4)
    quads = src.cells[0].data
    cap = meshio.Mesh(src.points, [("quad", quads[16:])])   # the first 16 quads are one face
    mesh = from_meshio(cap)
    assert mesh.is_sphere and mesh.n_cells == 80 and mesh.n_boundary_faces == 16
    assert mesh.euler_characteristic() == 1
    assert float(mesh.cell_volume.sum()) == pytest.approx(5 / 6 * 4 * math.pi, rel=1e-12)
    assert mesh.validate() == []


def test_netcdf_names_the_reader(tmp_path):
    from meshclosure.io import read_mesh, write_ugrid
    from meshclosure.mesh import MeshError, healpix

    path = tmp_path / "hp.nc"
    write_ugrid(healpix(1), None, path)
    with pytest.raises(MeshError, match=r"netCDF/zarr.*meshclosure\.io\.read_mesh"):
        from_meshio(path)
    assert read_mesh(path).n_cells == 12
