"""Everything meshclosure writes reads back through io.read_mesh (and `meshclosure mesh FILE`):
VTU (also of agglomerated, non-convex coarse cells), UGRID netCDF, zarr, and datasets; exact
files bit for bit. The demo's own outputs are checked file by file."""
import numpy as np
import pytest
import torch

from meshclosure import io
from meshclosure.mesh import (Coarsening, MeshError, agglomerate, cartesian, healpix, icosahedral,
                              parse_mesh_spec)
from meshclosure.mesh._mesh import _FLOAT_FIELDS, _INDEX_FIELDS


def assert_same_mesh(a, b):
    """Bit-identical float64 geometry, connectivity and metadata."""
    a, b = a.double(), b.double()
    for name in _FLOAT_FIELDS + _INDEX_FIELDS:
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert (a.radius, a.period, a.boundary_tag_names, a.info) == (
        b.radius, b.period, b.boundary_tag_names, b.info)


def _agglomerated(fine, n):
    return Coarsening(fine, agglomerate(fine, n)).coarse


MESHES = {
    "cartesian": lambda: cartesian(6, 4, periodic=False),
    "torus": lambda: cartesian(6, 6, 2.0, 1.0),
    "channel": lambda: cartesian(6, 4, periodic=(True, False)),
    "healpix": lambda: healpix(2),
    "icosahedral": lambda: icosahedral(2),
    "dual": lambda: icosahedral(2, dual=True),
    "cartesian_coarse": lambda: Coarsening.native(cartesian(8, 8, periodic=False), 2).coarse,
    "healpix_coarse": lambda: Coarsening.native(healpix(4), 2).coarse,
    "icosahedral_coarse": lambda: Coarsening.native(icosahedral(3), 2).coarse,
    "dual_coarse": lambda: _agglomerated(icosahedral(3, dual=True), 40),   # non-convex cells
}


@pytest.mark.parametrize("name", MESHES)
def test_vtu_reads_back_exactly(tmp_path, name):
    mesh = MESHES[name]()
    path = tmp_path / "m.vtu"
    io.write_vtu(mesh, {"q": torch.arange(float(mesh.n_cells))}, path)
    back = io.read_mesh(path)
    assert_same_mesh(back, mesh)
    assert back.validate(raise_on_error=False) == []
    _, fields = io.read_vtu(path)                       # the field data do not disturb fields
    np.testing.assert_array_equal(fields["q"], np.arange(mesh.n_cells))
    assert_same_mesh(parse_mesh_spec(str(path)), mesh)   # `meshclosure mesh FILE`


@pytest.mark.parametrize("name", MESHES)
def test_ugrid_reads_back_exactly_or_rebuilt(tmp_path, name):
    mesh = MESHES[name]()
    io.write_ugrid(mesh, None, tmp_path / "exact.nc")
    assert_same_mesh(io.read_mesh(tmp_path / "exact.nc"), mesh)
    io.write_ugrid(mesh, None, tmp_path / "ugrid.nc", exact=False)
    rebuilt = io.read_mesh(tmp_path / "ugrid.nc")         # from the UGRID polygons
    assert rebuilt.validate(raise_on_error=False) == []
    assert (rebuilt.n_cells, rebuilt.n_faces) == (mesh.n_cells, mesh.n_faces)
    np.testing.assert_array_equal(rebuilt.cell_volume.numpy(), mesh.cell_volume.numpy())
    if not name.endswith("coarse") and name != "healpix":   # same polygons: same faces
        np.testing.assert_allclose(rebuilt.face_area.numpy(), mesh.face_area.numpy(),
                                   rtol=1e-9)
        np.testing.assert_array_equal(rebuilt.face_cells.numpy(), mesh.face_cells.numpy())


@pytest.mark.parametrize("name", ["torus", "healpix_coarse", "dual_coarse"])
def test_zarr_reads_back(tmp_path, name):
    mesh = MESHES[name]()
    io.to_ugrid_dataset(mesh, exact=True).to_zarr(tmp_path / "m.zarr", consolidated=False)
    assert_same_mesh(io.read_mesh(tmp_path / "m.zarr"), mesh)
    io.to_ugrid_dataset(mesh).to_zarr(tmp_path / "u.zarr", consolidated=False)
    assert io.read_mesh(tmp_path / "u.zarr").validate(raise_on_error=False) == []


@pytest.mark.parametrize("consolidated", [True, False])
def test_zarr_read_without_warnings(tmp_path, consolidated):
    """A store with or without consolidated metadata opens the right way first: no
    "Failed to open Zarr store with consolidated metadata" warning."""
    import warnings

    mesh = healpix(2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # zarr 3 warns that consolidation is not in its spec
        io.exact_mesh_variables(mesh).to_zarr(tmp_path / "m.zarr", consolidated=consolidated)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        back = io.read_mesh(tmp_path / "m.zarr")
    assert [str(w.message) for w in caught] == []
    assert_same_mesh(back, mesh)


def test_foreign_vtu_and_bad_files(tmp_path):
    import meshio
    import xarray as xr

    from meshclosure.demo import annulus_meshio

    meshio.write(tmp_path / "foreign.vtu", annulus_meshio())   # no meshclosure field data
    m = io.read_mesh(tmp_path / "foreign.vtu")
    assert m.family == "meshio" and m.validate(raise_on_error=False) == []
    xr.Dataset({"q": ("x", np.arange(3.0))}).to_netcdf(tmp_path / "plain.nc")
    with pytest.raises(MeshError, match="neither meshclosure's exact mesh arrays.*nor a UGRID"):
        io.read_mesh(tmp_path / "plain.nc")
    with pytest.raises(MeshError, match="does not exist"):
        io.read_mesh(tmp_path / "missing.nc")
    (tmp_path / "broken.nc").write_bytes(b"CDF\x01 not really")
    with pytest.raises(MeshError, match="cannot be read"):
        io.read_mesh(tmp_path / "broken.nc")


# ------------------------------------------------------------- the demo's outputs
@pytest.fixture(scope="module")
def demo_out(tmp_path_factory):
    from meshclosure.demo import run_tour

    out = tmp_path_factory.mktemp("demo")
    records = run_tour(out, plots=False, echo=lambda line: None, test1_level=2)
    return out, records


def _written(out):
    return sorted(p for p in out.iterdir() if p.suffix in (".vtu", ".nc", ".zarr"))


def test_every_demo_file_reads_back_valid(demo_out):
    out, records = demo_out
    files = _written(out)
    named = {r[k] for r in records for k in ("vtu", "dataset") if r.get(k) is not None}
    assert set(map(str, files)) >= set(map(str, named)) and len(files) >= 19
    for path in files:
        mesh = parse_mesh_spec(str(path))                   # what `meshclosure mesh FILE` reads
        assert mesh.validate(raise_on_error=False) == [], path.name


def test_demo_meshes_read_back_bit_identical(demo_out):
    from meshclosure.data import get_scenario
    from meshclosure.demo import _cases

    out, _ = demo_out
    for name, build, coarsen in _cases():          # deterministic: the meshes the demo wrote
        fine = build()
        assert_same_mesh(io.read_mesh(out / f"{name}.vtu"), fine)
        assert_same_mesh(io.read_mesh(out / f"{name}_coarse.vtu"), coarsen(fine).coarse)
    assert_same_mesh(io.read_mesh(out / "test1_alpha1_limited.vtu"), icosahedral(2))
    scenario = get_scenario("kinematic", "cartesian:32", factor=4, seed=0, spinup_time=1.0)
    assert_same_mesh(io.read_mesh(out / "truth_kinematic.nc"), scenario.coarse)


def test_demo_dataset_as_zarr_reads_back(demo_out, tmp_path):
    from meshclosure.data import read_dataset, write_dataset

    out, _ = demo_out
    nc = out / "truth_kinematic.nc"
    store = write_dataset(read_dataset(nc), tmp_path / "truth.zarr", format="zarr")
    assert_same_mesh(io.read_mesh(store), io.read_mesh(nc))
    assert parse_mesh_spec(str(store)).validate(raise_on_error=False) == []


def test_ugrid_without_exact_arrays_says_how_to_read_folded_cells(tmp_path):
    coarse = _agglomerated(cartesian(8, 8), 4)              # wide cells on a torus fold
    io.write_ugrid(coarse, None, tmp_path / "c.nc", exact=False)
    with pytest.raises(MeshError, match=r"do not make a valid mesh.*exact=True"):
        io.read_mesh(tmp_path / "c.nc")
    io.write_ugrid(coarse, None, tmp_path / "c.nc", exact=True, overwrite=True)
    assert_same_mesh(io.read_mesh(tmp_path / "c.nc"), coarse)
