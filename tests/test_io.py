"""meshclosure.io: VTU, HEALPix maps and UGRID netCDF, exact round trips, atomic writes."""
import math
import os
import warnings

import numpy as np
import pytest
import torch

from meshclosure import io
from meshclosure.mesh import MeshError, cartesian, from_meshio, healpix, icosahedral

MESHES = {
    "healpix": lambda: healpix(2),
    "icosahedral": lambda: icosahedral(1),
    "dual": lambda: icosahedral(1, dual=True),          # pentagons and hexagons
    "plane": lambda: cartesian(4, 3, periodic=False),
    "torus": lambda: cartesian(4, 3, 2.0, 1.5),
    "channel": lambda: cartesian(4, 3, periodic=(True, False)),
    "column": lambda: cartesian(5),
}


def _fields(mesh, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = mesh.n_cells
    return {"q": torch.randn(n, generator=g, dtype=torch.float64),
            "uv": torch.randn(n, 3, generator=g).float(),
            "label": torch.randperm(n, generator=g)}


def _files(folder):
    return sorted(os.listdir(folder))


@pytest.mark.parametrize("name", MESHES)
def test_vtu_round_trip_values(tmp_path, name):
    mesh = MESHES[name]()
    fields = _fields(mesh)
    io.write_vtu(mesh, fields, tmp_path / "f.vtu")
    _, back = io.read_vtu(tmp_path / "f.vtu")
    assert set(back) == set(fields)
    for key, value in fields.items():
        assert back[key].dtype == value.numpy().dtype
        np.testing.assert_array_equal(back[key], value.numpy())


@pytest.mark.parametrize("name", ["icosahedral", "dual", "plane"])
def test_vtu_from_meshio_areas(tmp_path, name):
    mesh = MESHES[name]()
    io.write_vtu(mesh, None, tmp_path / "m.vtu")
    mm, _ = io.read_vtu(tmp_path / "m.vtu")
    again = from_meshio(mm)
    order = np.concatenate(mm.cell_data["cell_index"])   # block row -> original cell
    assert again.n_cells == mesh.n_cells
    np.testing.assert_allclose(again.cell_volume.numpy(), mesh.cell_volume.numpy()[order],
                               rtol=1e-12)


def test_vtu_healpix_total_area(tmp_path):
    # HEALPix pixel edges are not great circles: from_meshio's polygon areas differ per
    # cell, but the polygons still tile the sphere.
    mesh = healpix(4)
    io.write_vtu(mesh, None, tmp_path / "h.vtu")
    again = from_meshio(io.read_vtu(tmp_path / "h.vtu")[0])
    assert again.n_cells == 192 and again.euler_characteristic() == 2
    assert float(again.cell_volume.sum()) == pytest.approx(4 * math.pi, rel=1e-12)


def test_vtu_periodic_cells_unwrapped(tmp_path):
    mesh = MESHES["torus"]()                             # 4 x 3 cells on [0, 2] x [0, 1.5]
    io.write_vtu(mesh, None, tmp_path / "t.vtu")
    mm, _ = io.read_vtu(tmp_path / "t.vtu")
    p = mm.points[mm.cells[0].data]                      # (n_cells, 4, 3)
    x, y = p[..., 0], p[..., 1]
    area = 0.5 * (x * np.roll(y, -1, 1) - np.roll(x, -1, 1) * y).sum(1)
    np.testing.assert_allclose(area, 0.25)               # every cell a positive 0.5 x 0.5 square
    assert len(mm.points) == 5 * 4                       # wrapped vertices duplicated
    assert np.allclose(mm.points.min(0), 0) and np.allclose(mm.points.max(0), [2, 1.5, 0])


def test_vtu_column_is_lines_along_x(tmp_path):
    mesh = cartesian(5, lx=2.0)
    io.write_vtu(mesh, {"q": mesh.cell_center[:, 0]}, tmp_path / "c.vtu")
    mm, back = io.read_vtu(tmp_path / "c.vtu")
    assert mm.cells[0].type == "line"
    np.testing.assert_allclose(mm.points[:, 0], np.linspace(0, 2, 6))
    np.testing.assert_array_equal(back["q"], mesh.cell_center[:, 0].numpy())
    np.testing.assert_allclose(back["q"], [0.2, 0.6, 1.0, 1.4, 1.8], rtol=1e-15)


def _write(kind, mesh, fields, path, overwrite=False):
    if kind == "vtu":
        io.write_vtu(mesh, fields, path, overwrite=overwrite)
    elif kind == "ugrid":
        io.write_ugrid(mesh, fields, path, overwrite=overwrite)
    else:
        io.write_healpix_map(mesh, fields["q"], path, overwrite=overwrite)


@pytest.mark.parametrize("kind", ["vtu", "ugrid", "fits"])
def test_existing_file_refused_unless_overwrite(tmp_path, kind):
    from meshclosure.errors import MeshclosureError, OutputExistsError

    mesh = healpix(1)
    path = tmp_path / f"out.{kind}"
    _write(kind, mesh, {"q": torch.arange(12.0)}, path)
    before = path.read_bytes()
    with pytest.raises(OutputExistsError, match=r"path=.*out\.\w+.*exists.*overwrite=True"):
        _write(kind, mesh, {"q": torch.ones(12)}, path)
    assert path.read_bytes() == before and _files(tmp_path) == [path.name]
    assert issubclass(OutputExistsError, (MeshclosureError, FileExistsError))
    _write(kind, mesh, {"q": torch.ones(12)}, path, overwrite=True)
    assert path.read_bytes() != before and _files(tmp_path) == [path.name]


@pytest.mark.parametrize("kind", ["vtu", "ugrid", "fits"])
@pytest.mark.parametrize("bad", ["nan", "length"])
def test_failed_write_leaves_file_untouched(tmp_path, kind, bad):
    mesh = healpix(1)
    path = tmp_path / f"out.{kind}"
    _write(kind, mesh, {"q": torch.arange(12.0)}, path)
    before = path.read_bytes()
    q = torch.arange(12.0)
    if bad == "nan":
        q[[3, 7]] = float("nan")
        match = r"(field 'q'|values) has non-finite.*cells \[3, 7\]"
    else:
        q = torch.zeros(11)
        match = "n_cells=12"
    with pytest.raises(ValueError, match=match):
        _write(kind, mesh, {"q": q}, path, overwrite=True)
    assert path.read_bytes() == before
    assert _files(tmp_path) == [path.name]


def test_write_error_midway_removes_temp(tmp_path, monkeypatch):
    import meshio

    path = tmp_path / "m.vtu"
    io.write_vtu(healpix(1), {"q": torch.ones(12)}, path)
    before = path.read_bytes()

    def broken(filename, *args, **kwargs):
        with open(filename, "w") as f:
            f.write("partial")
        raise OSError("disk full")

    monkeypatch.setattr(meshio, "write", broken)
    with pytest.raises(OSError, match="disk full"):
        io.write_vtu(healpix(1), {"q": torch.zeros(12)}, path, overwrite=True)
    assert path.read_bytes() == before and _files(tmp_path) == ["m.vtu"]


def test_missing_or_reserved(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        io.write_vtu(healpix(1), None, tmp_path / "nope" / "m.vtu")
    with pytest.raises(ValueError, match="'cell_index'"):
        io.write_vtu(healpix(1), {"cell_index": torch.ones(12)}, tmp_path / "m.vtu")
    assert _files(tmp_path) == []


@pytest.mark.parametrize("kind", ["vtu", "ugrid", "fits"])
def test_unreadable_files_raise_mesh_error(tmp_path, kind):
    read = {"vtu": io.read_vtu, "ugrid": io.read_ugrid, "fits": io.read_healpix_map}[kind]
    path = tmp_path / f"m.{'nc' if kind == 'ugrid' else kind}"
    with pytest.raises(MeshError, match="does not exist"):
        read(path)
    _write(kind, healpix(2), {"q": torch.arange(48.0)}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])             # truncated
    with pytest.raises(MeshError, match="truncated"):
        read(path)
    path.write_bytes(b"not a mesh at all")
    with pytest.raises(MeshError):
        read(path)


def test_healpix_map_round_trip(tmp_path):
    import healpy

    mesh = healpix(4)
    q = torch.randn(mesh.n_cells, dtype=torch.float64)
    nested = io.to_healpix_map(mesh, q)
    ring = io.to_healpix_map(mesh, q, nest=False)
    np.testing.assert_array_equal(nested, q.numpy())      # cell order is NESTED order
    np.testing.assert_array_equal(ring, healpy.reorder(q.numpy(), n2r=True))
    torch.testing.assert_close(io.from_healpix_map(mesh, ring, nest=False), q, rtol=0, atol=0)
    io.write_healpix_map(mesh, q, tmp_path / "q.fits")
    back = io.read_healpix_map(tmp_path / "q.fits")
    assert back.dtype == np.float64
    np.testing.assert_array_equal(back, q.numpy())
    # a RING file written by healpy reads back in NESTED order
    healpy.write_map(str(tmp_path / "r.fits"), ring, dtype=np.float64)
    np.testing.assert_array_equal(io.read_healpix_map(tmp_path / "r.fits"), q.numpy())
    two = torch.randn(mesh.n_cells, 2).float()
    io.write_healpix_map(mesh, two, tmp_path / "two.fits")
    np.testing.assert_array_equal(io.read_healpix_map(tmp_path / "two.fits"), two.T.numpy())


def test_healpix_map_checks():
    with pytest.raises(ValueError, match=r"nside=4.*\(nside 8\)"):
        io.from_healpix_map(healpix(4), np.zeros(768))
    with pytest.raises(ValueError, match="HEALPix mesh"):
        io.to_healpix_map(icosahedral(1), np.zeros(80))


@pytest.mark.parametrize("name", ["healpix", "dual", "plane", "channel"])
def test_ugrid_round_trip(tmp_path, name):
    mesh = MESHES[name]()
    q = torch.randn(mesh.n_cells, dtype=torch.float64)
    qt = torch.randn(3, mesh.n_cells).float()
    io.write_ugrid(mesh, {"q": q, "qt": qt}, tmp_path / "m.nc")
    ds = io.read_ugrid(tmp_path / "m.nc")
    np.testing.assert_array_equal(ds["q"].values, q.numpy())
    assert ds["qt"].dims == ("time", "n_face") and ds["qt"].dtype == np.float32
    np.testing.assert_array_equal(ds["qt"].values, qt.numpy())
    np.testing.assert_array_equal(ds["face_node_connectivity"].values, mesh.cell_vertices.numpy())
    np.testing.assert_array_equal(ds["face_areas"].values, mesh.cell_volume.numpy())
    n_int = ds.attrs["n_interior_edge"]
    assert n_int == mesh.n_faces and ds.sizes["n_edge"] == mesh.n_faces + mesh.n_boundary_faces
    np.testing.assert_array_equal(ds["edge_face_connectivity"].values[:n_int].T,
                                  mesh.face_cells.numpy())
    np.testing.assert_array_equal(ds["edge_length"].values[:n_int], mesh.face_area.numpy())
    np.testing.assert_array_equal(ds["edge_face_connectivity"].values[n_int:, 1], -1)
    assert ds["mesh"].attrs["cf_role"] == "mesh_topology"


@pytest.mark.parametrize("make, per_cell_rtol", [(lambda: healpix(4), 0.15),
                                                  (lambda: icosahedral(2), 1e-6)])
def test_uxarray_opens_sphere(tmp_path, make, per_cell_rtol):
    ux = pytest.importorskip("uxarray")
    mesh = make()
    q = torch.randn(mesh.n_cells, dtype=torch.float64)
    io.write_ugrid(mesh, {"q": q}, tmp_path / "s.nc")
    grid = ux.open_grid(tmp_path / "s.nc")
    assert grid.n_face == mesh.n_cells and grid.n_node == mesh.n_vertices
    np.testing.assert_array_equal(grid.face_areas.values, mesh.cell_volume.numpy())  # ours
    theirs = np.asarray(grid.compute_face_areas())       # great-circle polygons, computed
    assert theirs.sum() == pytest.approx(4 * math.pi, rel=1e-3)
    np.testing.assert_allclose(theirs, mesh.cell_volume.numpy(), rtol=per_cell_rtol)
    uxds = ux.open_dataset(tmp_path / "s.nc", tmp_path / "s.nc")
    np.testing.assert_array_equal(uxds["q"].values, q.numpy())


def test_uxarray_opens_plane(tmp_path):
    ux = pytest.importorskip("uxarray")
    mesh = MESHES["plane"]()
    io.write_ugrid(mesh, {"q": torch.arange(12.0)}, tmp_path / "p.nc")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)     # uxarray: "projected coordinates"
        grid = ux.open_grid(tmp_path / "p.nc")
    assert (grid.n_face, grid.n_edge, grid.n_node) == (12, 31, 20)
    np.testing.assert_allclose(grid.node_lon.values, mesh.vertex_pos[:, 0].numpy())
    assert grid.face_areas.values.sum() == pytest.approx(0.75)


def test_ugrid_rejects_column():
    with pytest.raises(ValueError, match="1-D column"):
        io.to_ugrid_dataset(cartesian(4))


def test_vtu_periodic_agglomerates_unwrapped(tmp_path):
    from meshclosure.mesh import Coarsening, agglomerate

    fine = cartesian(8, 8)
    coarse = Coarsening(fine, agglomerate(fine, 6)).coarse     # cells wrap across the edges
    io.write_vtu(coarse, None, tmp_path / "c.vtu")
    mm, _ = io.read_vtu(tmp_path / "c.vtu")
    again = from_meshio(mm)                                    # an open plane now
    order = np.concatenate(mm.cell_data["cell_index"])
    np.testing.assert_allclose(again.cell_volume.numpy(), coarse.cell_volume.numpy()[order],
                               rtol=1e-12)


@pytest.mark.parametrize("name", [*MESHES, "coarse_healpix"])
def test_exact_mesh_variables_bit_identical(name):
    from meshclosure.mesh import Coarsening
    from meshclosure.mesh._mesh import _FLOAT_FIELDS, _INDEX_FIELDS

    mesh = Coarsening.native(healpix(4), 2).coarse if name == "coarse_healpix" else MESHES[name]()
    ds = io.exact_mesh_variables(mesh)
    assert "n_edge" not in ds.dims                       # interior-only arrays have their own dim
    assert ds.sizes["n_interior_edge"] == mesh.n_faces
    back = io.mesh_from_exact_variables(ds)
    for field in _FLOAT_FIELDS + _INDEX_FIELDS:
        assert torch.equal(getattr(back, field), getattr(mesh.double(), field)), field
    assert (back.radius, back.period, back.info, back.boundary_tag_names) == (
        mesh.radius, mesh.period, mesh.info, mesh.boundary_tag_names)
    with pytest.raises(MeshError, match="not the attributes"):
        io.mesh_from_exact_variables(ds.drop_attrs())
