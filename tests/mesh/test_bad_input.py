"""Bad meshes and bad arguments fail with a `MeshError` / `ValueError` that names the
offending cells, faces or value and says what to do; nothing is written to disk."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import meshio
import numpy as np
import pytest
import torch

from meshclosure.mesh import (MeshError, cartesian, from_meshio, from_polygons, healpix,
                              icosahedral, native_parent, parse_mesh_spec)
from meshclosure.mesh._icogen import icosahedral_triangles


@pytest.fixture(autouse=True)
def quiet_disk(tmp_path, monkeypatch):
    """Run in an empty folder with an empty mesh cache; fail if any test writes to either."""
    work, cache = tmp_path / "work", tmp_path / "cache"
    work.mkdir()
    cache.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("MESHCLOSURE_CACHE", str(cache))
    yield work
    assert list(cache.iterdir()) == []


def _listing(folder: Path) -> dict:
    return {p.name: p.stat().st_size for p in folder.iterdir()}


def _grid_2x2():
    """A 2 x 2 grid of unit quads, counter-clockwise."""
    k = np.arange(3.0)
    x, y = np.meshgrid(k, k, indexing="xy")
    pts = np.c_[x.ravel(), y.ravel()]
    vid = np.arange(9).reshape(3, 3)
    cells = [[vid[j, i], vid[j, i + 1], vid[j + 1, i + 1], vid[j + 1, i]]
             for j in range(2) for i in range(2)]
    return pts, cells


def test_meshes_used_here_are_fine():
    pts, cells = _grid_2x2()
    assert from_polygons(pts, cells).validate() == []
    v, t = icosahedral_triangles(0)
    assert from_polygons(v, t, radius=1.0).validate() == []
    assert issubclass(MeshError, ValueError)


# ------------------------------------------------------------ bad topology
def test_face_shared_by_three_cells():
    v = np.array([[0, 0], [1, 0], [0.5, 1], [0.5, -1], [0.5, 2.0]])
    cells = [[0, 1, 2], [1, 0, 3], [0, 1, 4]]
    with pytest.raises(MeshError) as err:
        from_polygons(v, cells)
    msg = str(err.value)
    assert "between vertices 0 and 1" in msg and "shared by 3 cells" in msg
    assert "[0, 1, 2]" in msg and "Remove the overlapping cells" in msg
    assert sorted(err.value.cells) == [0, 1, 2]
    # the same through meshio
    m = meshio.Mesh(np.c_[v, np.zeros(5)], [("triangle", np.array(cells))])
    with pytest.raises(MeshError, match="shared by 3 cells"):
        from_meshio(m)


@pytest.mark.parametrize("flipped", [0, 3])
def test_one_flipped_cell_in_the_plane(flipped):
    pts, cells = _grid_2x2()
    cells[flipped] = cells[flipped][::-1]
    with pytest.raises(MeshError) as err:
        from_polygons(pts, cells)
    msg = str(err.value)
    assert f"cells [{flipped}]" in msg and "oriented opposite" in msg
    assert "counter-clockwise" in msg
    assert err.value.cells == [flipped]


def test_one_flipped_cell_on_the_sphere():
    v, t = icosahedral_triangles(0)
    t = t.copy()
    t[7] = t[7][::-1]
    with pytest.raises(MeshError) as err:
        from_polygons(v, t, radius=1.0)
    assert "cells [7]" in str(err.value) and "oriented opposite" in str(err.value)
    assert err.value.cells == [7]


def test_all_clockwise_is_flipped_not_rejected():
    pts, cells = _grid_2x2()
    mesh = from_polygons(pts, [c[::-1] for c in cells])
    assert mesh.validate() == []
    assert torch.allclose(mesh.cell_volume, torch.ones(4, dtype=torch.float64))


def test_zero_area_cell():
    pts, cells = _grid_2x2()
    pts = np.vstack([pts, [[3.0, 0.0], [4.0, 0.0]]])   # collinear with vertex 2 = (2, 0)
    with pytest.raises(MeshError) as err:
        from_polygons(pts, cells + [[2, 9, 10]])
    msg = str(err.value)
    assert "cells [4]" in msg and "zero area" in msg and "Remove collapsed cells" in msg
    assert err.value.cells == [4]


def test_duplicated_vertices():
    pts, cells = _grid_2x2()
    pts = np.vstack([pts, [[2.0, 2.0]]])                # a copy of vertex 8
    cells[3] = [4, 5, 9, 7]
    with pytest.raises(MeshError) as err:
        from_polygons(pts, cells)
    msg = str(err.value)
    assert "duplicated vertices" in msg and "[[8, 9]]" in msg and "merge them" in msg


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_coordinates(bad):
    pts, cells = _grid_2x2()
    pts[4, 1] = bad
    with pytest.raises(MeshError) as err:
        from_polygons(pts, cells)
    msg = str(err.value)
    assert "vertices [4]" in msg and "NaN or infinite" in msg and "finite coordinates" in msg


def test_too_few_vertices_and_out_of_range():
    pts, cells = _grid_2x2()
    with pytest.raises(MeshError, match=r"cells \[1\] have fewer than 3 vertices"):
        from_polygons(pts, [cells[0], [0, 1]])
    with pytest.raises(MeshError, match=r"cells \[1\] refer to vertex indices >= n_vertices=9"):
        from_polygons(pts, [cells[0], [0, 1, 12]])
    with pytest.raises(MeshError, match="pass radius=R for a sphere"):
        from_polygons(np.c_[pts, np.zeros(9)], cells)


def test_validate_reports_corrupted_meshes():
    mesh = cartesian(4, 3)
    fc = mesh.face_cells.clone()
    fc[1, 5] = fc[0, 5]
    with pytest.raises(MeshError) as err:
        dataclasses.replace(mesh, face_cells=fc).validate()
    assert "faces [5] join a cell to itself" in str(err.value) and err.value.faces == [5]
    normal = mesh.face_normal.clone()
    normal[7] *= -1
    problems = dataclasses.replace(mesh, face_normal=normal).validate(raise_on_error=False)
    assert any("faces [7] do not point from owner to neighbour" in p for p in problems)
    vol = mesh.cell_volume.clone()
    vol[2] = float("nan")
    with pytest.raises(MeshError, match=r"cell_volume has NaN/Inf at rows \[2\]"):
        dataclasses.replace(mesh, cell_volume=vol).validate()
    vol = mesh.cell_volume.clone()
    vol[0] *= 1.5
    with pytest.raises(MeshError, match="cell volumes sum to .* not the domain area"):
        dataclasses.replace(mesh, cell_volume=vol).validate()
    fv = mesh.face_vertices.clone()
    fv[:, 3] = fv[[1, 0], 3]
    with pytest.raises(MeshError, match="not closed or not consistently oriented"):
        dataclasses.replace(mesh, face_vertices=fv).validate()


# ------------------------------------------------------------ bad arguments
@pytest.mark.parametrize("nside", [6, 0, -4, 3, 2.0, 3.5, True, "4"])
def test_healpix_nside_not_a_power_of_two(nside):
    with pytest.raises(ValueError) as err:
        healpix(nside)
    msg = str(err.value)
    assert "nside must be a power of 2" in msg and f"got {nside!r}" in msg
    assert "Use e.g. nside=16" in msg


def test_healpix_accepts_numpy_int():
    assert healpix(np.int64(2)).n_cells == 48


@pytest.mark.parametrize("level", [-1, 11, 2.5, True])
def test_icosahedral_bad_level(level):
    with pytest.raises(ValueError, match=rf"Invalid level={level!r}.*pass e.g. level=4"):
        icosahedral(level)


def test_icosahedral_negative_radius_is_named():
    with pytest.raises(MeshError, match=r"radius=-1.0"):
        icosahedral(1, radius=-1.0)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("radius", [0.0, float("nan"), float("inf")])
def test_icosahedral_bad_radius_is_named(radius):
    with pytest.raises(ValueError) as err:
        icosahedral(1, radius=radius)
    assert "radius" in str(err.value) and repr(radius) in str(err.value)


@pytest.mark.parametrize("args,kwargs,fragment", [
    ((2, 4), {}, "nx must be an integer >= 3 when x is periodic; got 2"),
    ((4, 2), {}, "ny must be an integer >= 3 when y is periodic; got 2"),
    ((4, 0), {"periodic": False}, "ny must be an integer >= 1; got 0"),
    ((4, 4), {"lx": -1.0}, "lx must be a positive finite length; got -1.0"),
    ((4, 4), {"ly": float("nan")}, "ly must be a positive finite length"),
])
def test_cartesian_bad_arguments(args, kwargs, fragment):
    with pytest.raises(ValueError) as err:
        cartesian(*args, **kwargs)
    assert fragment in str(err.value)


# --------------------------------------------------------------- bad files
def test_missing_file(quiet_disk):
    with pytest.raises(MeshError) as err:
        from_meshio(quiet_disk / "nothing.vtu")
    assert "does not exist" in str(err.value) and "nothing.vtu" in str(err.value)
    assert _listing(quiet_disk) == {}


def test_unreadable_file(quiet_disk):
    (quiet_disk / "garbage.vtu").write_text("this is not a VTU file")
    before = _listing(quiet_disk)
    with pytest.raises(MeshError) as err:
        from_meshio("garbage.vtu")
    msg = str(err.value)
    assert "garbage.vtu" in msg and "cannot be read by meshio" in msg
    assert "unreadable or truncated" in msg and "Re-export or regenerate" in msg
    assert _listing(quiet_disk) == before


@pytest.mark.parametrize("ext,fmt", [(".vtu", "vtu"), (".msh", "gmsh22")])
def test_truncated_file(quiet_disk, ext, fmt):
    pts, cells = _grid_2x2()
    path = quiet_disk / f"good{ext}"
    meshio.write(path, meshio.Mesh(np.c_[pts, np.zeros(9)], [("quad", np.array(cells))]),
                 file_format=fmt)
    assert from_meshio(path).validate() == []
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    before = _listing(quiet_disk)
    with pytest.raises(MeshError) as err:
        from_meshio(path)
    msg = str(err.value)
    assert f"good{ext}" in msg and "unreadable or truncated" in msg
    assert _listing(quiet_disk) == before


def test_unknown_extension(quiet_disk):
    (quiet_disk / "mesh.foo123").write_text("1 2 3")
    with pytest.raises(MeshError) as err:
        from_meshio("mesh.foo123")
    msg = str(err.value)
    assert "'.foo123'" in msg and "meshio does not know" in msg and ".vtu" in msg


def test_points_neither_planar_nor_spherical():
    pts, cells = _grid_2x2()
    m = meshio.Mesh(np.c_[pts, np.arange(9.0)], [("quad", np.array(cells))])
    with pytest.raises(MeshError, match="neither planar .* nor on a sphere.*pass sphere=True"):
        from_meshio(m)
    with pytest.raises(MeshError, match="sphere=False but the points have non-zero z"):
        from_meshio(m, sphere=False)


def test_no_surface_cells():
    m = meshio.Mesh(np.zeros((2, 3)) + [[0, 0, 0], [1, 0, 0]], [("line", np.array([[0, 1]]))])
    with pytest.raises(MeshError, match=r"no surface cells \(cell types found: \['line'\]\)"):
        from_meshio(m)


def test_periodic_coarsening_lists_the_factors_that_work():
    with pytest.raises(ValueError) as err:
        native_parent(cartesian(16, 16, 1.0), 16)
    msg = str(err.value)
    assert "leaves 1 cell on the periodic axis nx=16" in msg and "1 cells" not in msg
    assert msg.endswith("each periodic axis: 2, 4.")     # 8 leaves 2 cells; 5 does not divide
    for factor in (2, 4):                               # every factor offered works
        assert native_parent(cartesian(16, 16, 1.0), factor).max() + 1 == (16 // factor) ** 2
    with pytest.raises(ValueError, match=r"leaves 2 cells .* axis: 2, 4\.$"):
        native_parent(cartesian(16, 48, 1.0), 8)


def test_healpix_spec_error_spells_the_fix_as_a_spec():
    with pytest.raises(ValueError) as err:
        parse_mesh_spec("healpix:6")
    msg = str(err.value)
    assert msg.startswith("mesh spec 'healpix:6': nside must be a power of 2")
    assert "Use e.g. healpix:16" in msg and "nside=16" not in msg
    assert parse_mesh_spec("healpix:16").n_cells == 3072
