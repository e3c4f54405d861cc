"""Dataset layout v2 on every mesh family: UGRID dims that align in plain xarray, CF
attributes, one run per realisation (OOD = run 1) with monotonic time, and a faithful
read-back from netCDF and zarr."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from meshclosure.data import build_dataset, read_dataset, subgrid_targets, write_dataset
from meshclosure.data.dataset import SPLIT_CODES, mesh_from_dataset
from test_targets import CASES, StandInScenario

FAMILIES = ("cartesian", "healpix", "icosahedral")


def _samples(sc, n, every=1):
    t, state = 0.0, sc.initial_state()
    out = []
    for _ in range(n):
        t, state = sc.advance(t, state, every)
        out.append(subgrid_targets(sc, sc.coarsening, t, state, sc.transport(t, state)))
    return out


@pytest.fixture(scope="module", params=FAMILIES)
def family(request, tmp_path_factory):
    mesh, parent = CASES[request.param]
    sc = StandInScenario(mesh, parent=parent)
    ood = sc.ood()
    ds = build_dataset(_samples(sc, 5), sc.coarse, config=sc.config, seed=sc.seed,
                       ood_samples=_samples(ood, 3), ood_config=ood.config)
    folder = tmp_path_factory.mktemp(request.param)
    write_dataset(ds, folder / "data.nc")
    write_dataset(ds, folder / "data.zarr")
    return request.param, sc, ds, folder


def _assert_same(a, b) -> None:
    """Every variable equal in name, dims, dtype and values (NaN padding included)."""
    assert sorted(a.variables) == sorted(b.variables)
    for name in a.variables:
        x, y = a[name], b[name]
        assert x.dims == y.dims and x.dtype == y.dtype, name
        assert np.array_equal(x.values, y.values, equal_nan=x.dtype.kind == "f"), name
    skip = {"source_path"}
    assert {k: v for k, v in a.attrs.items() if k not in skip and k != "period"} == \
        {k: v for k, v in b.attrs.items() if k not in skip and k != "period"}


def test_plain_xarray_aligns_data_with_the_mesh(family) -> None:
    import xarray as xr

    name, sc, _, folder = family
    with xr.open_dataset(folder / "data.nc") as ds:       # plain xarray, default decoding
        product = ds.state_q * ds.face_areas
        assert product.dims == ("run", "time", "n_face")   # no outer product, no new dim
        np.testing.assert_array_equal(product.values[0, 0],
                                      ds.state_q.values[0, 0] * ds.face_areas.values)
        assert (ds.sgs_flux_q * ds.edge_length).dims == ("run", "time", "n_edge")
        # the mesh coordinates attach as coordinates of the data
        lon, lat = (("face_lon", "face_lat") if sc.coarse.is_sphere
                    else ("mesh_face_x", "mesh_face_y"))
        located = ds.state_q.assign_coords({lon: ds[lon], lat: ds[lat]})
        assert located[lon].dims == ("n_face",)
        # the total of a cell field: area-weighted sum, equal to the mesh's
        total = float((ds.state_q * ds.face_areas).isel(run=0, time=0).sum())
        expected = float((sc.coarse.cell_volume.double()
                          * torch.as_tensor(ds.state_q.values[0, 0])).sum())
        assert total == pytest.approx(expected, rel=1e-12)
        # padding is masked: the shorter OOD run is NaN after its 3 samples, split -1
        assert np.isnan(ds.state_q.values[1, 3:]).all()
        assert (ds.split.values[1, 3:] == SPLIT_CODES["absent"]).all()
        assert ds.split.attrs["flag_meanings"].split()[0] == "absent"


def test_cf_attributes_on_every_variable(family) -> None:
    _, _, ds, folder = family
    read = read_dataset(folder / "data.nc")
    for name, v in read.variables.items():
        assert v.attrs.get("long_name"), name
        if v.dtype.kind == "f":
            assert v.attrs.get("units"), name
    assert read["time"].attrs["units"] == "1" and "nondimensional" in read.attrs["unit_system"]
    assert read["split"].attrs["flag_values"].tolist() == [-1, 0, 1, 2, 3, 4]


def test_time_is_monotonic_per_run_and_ood_is_run_one(family) -> None:
    _, sc, _, folder = family
    ds = read_dataset(folder / "data.zarr")
    split = ds["split"].values
    model_time = ds["model_time"].values
    assert ds.sizes["run"] == 2
    assert set(split[0].tolist()) <= {0, 1, 2, 4} and (split[1, :3] == SPLIT_CODES["ood"]).all()
    for r in range(2):
        present = split[r] >= 0
        assert np.all(np.diff(model_time[r, present]) > 0), r
        offsets = model_time[r, present] - ds["run_start_time"].values[r]
        assert offsets[0] == 0 and np.all(np.diff(offsets) > 0)
    assert np.all(np.diff(ds["time"].values) > 0)
    assert json.loads(ds.attrs["ood_config"])["strength"] == 2 * sc.config["strength"]


def test_read_back_equals_written_in_netcdf_and_zarr(family) -> None:
    name, sc, ds, folder = family
    nc, zarr = read_dataset(folder / "data.nc"), read_dataset(folder / "data.zarr")
    assert nc.attrs["source_path"].endswith("data.nc")
    _assert_same(nc, zarr)
    _assert_same(ds, nc.load())
    for read in (nc, zarr):
        mesh = mesh_from_dataset(read)
        for field in ("cell_volume", "face_cells", "face_normal", "cell_vertices"):
            assert torch.equal(getattr(mesh, field), getattr(sc.coarse, field)), (name, field)


def test_uxarray_puts_the_data_on_its_grid(family) -> None:
    """uxarray opens the dataset as grid and data at once; cell fields land on its faces.
    (Edge counts and uxarray's own areas of coarse meshes: tests/test_uxarray.py.)"""
    import warnings

    ux = pytest.importorskip("uxarray")
    _, sc, _, folder = family
    path = str(folder / "data.nc")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # uxarray warns about projected planes
        uxds = ux.open_dataset(path, path)
    assert uxds["state_q"].dims == ("run", "time", "n_face")
    assert uxds.uxgrid.n_face == sc.coarse.n_cells
    assert (uxds["state_q"] * uxds.uxgrid.face_areas).dims == ("run", "time", "n_face")
