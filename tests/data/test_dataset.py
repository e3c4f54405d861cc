"""Datasets on disk and the torch dataset: round trip, integrity, splits, normalization."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from meshclosure.data import (SPLITS, DatasetError, NormalizationStats, SubgridDataset,
                              build_dataset, check_compatible, mesh_from_dataset, read_dataset,
                              split_boundaries, subgrid_targets, write_dataset)
from meshclosure.fv import divergence
from meshclosure.mesh import cartesian, healpix
from meshclosure.mesh._mesh import _FLOAT_FIELDS, _INDEX_FIELDS
from test_targets import CASES, StandInScenario


def _samples(sc, n, every=2):
    t, state = sc.spin_up(sc.initial_state())
    out = []
    for _ in range(n):
        t, state = sc.advance(t, state, every)
        out.append(subgrid_targets(sc, sc.coarsening, t, state, sc.transport(t, state)))
    return out


@pytest.fixture(scope="module", params=["healpix", "column"])
def written(request, tmp_path_factory):
    mesh, parent = CASES[request.param]
    sc = StandInScenario(mesh, parent=parent, bottom_flux=0.3)
    samples = _samples(sc, 10)
    ood = sc.ood()
    ood_samples = _samples(ood, 2)
    ds = build_dataset(samples, sc.coarse, config=sc.config, seed=sc.seed,
                       ood_samples=ood_samples, ood_config=ood.config)
    path = tmp_path_factory.mktemp(request.param) / "data.nc"
    write_dataset(ds, path)
    return sc, samples, ood_samples, path


def test_round_trip_values_mesh_and_attrs(written) -> None:
    sc, samples, ood_samples, path = written
    ds = read_dataset(path)
    everything = samples + ood_samples
    for k, s in enumerate(everything):
        assert float(ds["time"][k]) == s.t
        assert np.array_equal(ds["transport"].values[k], s.transport.numpy())
        assert np.array_equal(ds["state_q"].values[k], s.state["q"].numpy())
        assert np.array_equal(ds["sgs_flux_q"].values[k], s.flux["q"].numpy())
        assert np.array_equal(ds["sgs_tendency_q"].values[k], s.tendency["q"].numpy())
        for name, v in s.inputs.items():
            assert np.array_equal(ds[f"input_{name}"].values[k], v.numpy())
    mesh, coarse = mesh_from_dataset(ds), sc.coarse
    for name in _FLOAT_FIELDS + _INDEX_FIELDS:
        assert torch.equal(getattr(mesh, name), getattr(coarse, name)), name
    assert (mesh.radius, mesh.period, mesh.info, mesh.boundary_tag_names) == \
        (coarse.radius, coarse.period, coarse.info, coarse.boundary_tag_names)
    assert mesh.validate(raise_on_error=False) == []
    # the identity survives the round trip
    phi = torch.as_tensor(ds["sgs_flux_q"].values)
    b = torch.as_tensor(ds["sgs_boundary_flux_q"].values) if mesh.n_boundary_faces else None
    for k in range(len(everything)):
        d = -divergence(mesh, phi[k], None if b is None else b[k])
        s = torch.as_tensor(ds["sgs_tendency_q"].values[k])
        assert float((d - s).abs().max()) <= 1e-12 * float(s.abs().max())
    # attributes: config, seed, versions, splits, UGRID
    assert json.loads(ds.attrs["scenario_config"]) == sc.config
    assert json.loads(ds.attrs["ood_config"])["strength"] == 2 * sc.config["strength"]
    assert ds.attrs["seed"] == sc.seed
    assert set(json.loads(ds.attrs["versions"])) == {"meshclosure", "torch", "numpy", "xarray"}
    assert json.loads(ds.attrs["split_boundaries"]) == [0, 7, 9, 10]
    assert "created" in ds.attrs and ds.attrs["Conventions"] == "UGRID-1.0"
    assert ds.sizes["n_face"] == ds.sizes["cell"] == coarse.n_cells


def test_splits_are_contiguous_disjoint_and_ood_separate(written) -> None:
    sc, samples, ood_samples, path = written
    sets = {s: set(SubgridDataset(path, split=s).indices.tolist()) for s in SPLITS}
    assert sets["train"] == set(range(7)) and sets["val"] == {7, 8} and sets["test"] == {9}
    assert sets["ood"] == {10, 11}
    for a in SPLITS:
        for b in SPLITS:
            if a < b:
                assert not sets[a] & sets[b], (a, b)
    assert set().union(*sets.values()) == set(range(12))
    for n in range(3, 40):
        bounds = split_boundaries(n)
        assert bounds[0] == 0 and bounds[-1] == n and all(np.diff(bounds) >= 1)


def test_gap_sets_samples_aside_between_blocks(written) -> None:
    sc, samples, ood_samples, _ = written
    ds = build_dataset(samples, sc.coarse, config=sc.config, seed=sc.seed,
                       ood_samples=ood_samples, gap=1)
    codes = ds["split"].values.tolist()
    # 10 samples: train 0-6, val 7-8 (7 set aside), test 9 (kept: a block never empties)
    assert codes == [0] * 7 + [4, 1, 2, 3, 3]
    big = build_dataset(samples * 2, sc.coarse, config=sc.config, seed=sc.seed, gap=2)
    codes = big["split"].values.tolist()          # 20: train 14, val 3, test 3
    assert codes == [0] * 14 + [4, 4, 1, 4, 4, 2]
    assert json.loads(big.attrs["split_boundaries"]) == [0, 14, 17, 20]
    with pytest.raises(ValueError, match="gap must be an integer >= 0"):
        build_dataset(samples, sc.coarse, config=sc.config, seed=sc.seed, gap=-1)


def test_gradient_components_share_one_scale(written) -> None:
    """Normalizing a local-frame gradient must not stretch one component against the
    other: a rotation of the frame has to stay a rotation."""
    sc, samples, ood_samples, path = written
    ds = read_dataset(path)
    stats = NormalizationStats.from_dataset(ds)
    grads = [n for n in stats.input_names if n.startswith("input_grad_")]
    assert grads, "the stand-in scenario gives gradient inputs"
    by_vector: dict = {}
    for n in grads:
        by_vector.setdefault(n.rsplit("_", 1)[0], []).append(n)
    train = ds["split"].values == 0
    for stem, parts in by_vector.items():
        scales = {stats.input_scale[stats.input_names.index(n)] for n in parts}
        means = {stats.input_mean[stats.input_names.index(n)] for n in parts}
        assert len(scales) == 1 and means == {0.0}, stem
        joint = np.sqrt(np.mean([np.mean(ds[n].values[train] ** 2) for n in parts]))
        assert scales.pop() == pytest.approx(joint, rel=1e-12)


def test_normalization_from_training_split_only(written) -> None:
    sc, samples, ood_samples, path = written
    ds = read_dataset(path)
    train = ds["split"].values == 0
    stats = NormalizationStats.from_dataset(ds)
    flux = ds["sgs_flux_q"].values
    assert stats.flux_scale[0] == pytest.approx(np.sqrt(np.mean(flux[train] ** 2)), rel=1e-12)
    i = stats.input_names.index("state_q")
    assert stats.input_mean[i] == pytest.approx(ds["state_q"].values[train].mean(), rel=1e-12)
    # changing val/test/ood data does not change the statistics
    altered = ds.copy(deep=True)
    altered["sgs_flux_q"].values[~train] *= 100.0
    altered["state_q"].values[~train] += 50.0
    assert NormalizationStats.from_dataset(altered) == stats
    # the stored statistics are those, and every split is normalised with them
    assert NormalizationStats.from_dict(json.loads(ds.attrs["normalization"])) == stats
    tr = SubgridDataset(path, "train", dtype=torch.float64)
    te = SubgridDataset(path, "test", dtype=torch.float64)
    assert tr.stats == te.stats == stats
    y = torch.stack([tr[k].y for k in range(len(tr))])
    assert float(y.pow(2).mean().sqrt()) == pytest.approx(1.0, rel=1e-12)
    g = te[0]
    k = g.time_index
    state = torch.as_tensor(ds["state_q"].values[k])
    expected = (state - stats.input_mean[i]) / stats.input_scale[i]
    assert torch.allclose(g.x[:, i], expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(te.denormalize_flux(g.y)[:, 0],
                               torch.as_tensor(ds["sgs_flux_q"].values[k]))


def test_graph_items(written) -> None:
    sc, samples, ood_samples, path = written
    data = SubgridDataset(path, "all")
    mesh = data.mesh.float()
    assert len(data) == len(samples) + len(ood_samples)
    for k in (0, len(data) - 1):
        g = data[k]
        assert g.x.dtype == torch.float32 and g.y.shape == (mesh.n_faces, 1)
        assert torch.equal(g.edge_index[:, :mesh.n_faces], mesh.face_cells)
        # normalised targets keep the identity (one scale for flux and tendency)
        d = -divergence(mesh, g.y[:, 0], g.y_boundary[:, 0] if mesh.n_boundary_faces else None)
        torch.testing.assert_close(d, g.y_tendency[:, 0], atol=1e-5 * float(d.abs().max()),
                                   rtol=0)
    with pytest.raises(IndexError, match="out of range"):
        data[len(data)]
    with pytest.raises(ValueError, match="split must be one of"):
        SubgridDataset(path, "validation")


def test_compatibility_check(written) -> None:
    sc, _, _, path = written
    data = SubgridDataset(path)
    check_compatible(data, sc.coarse)
    check_compatible(path, type("Model", (), {"mesh": data.mesh})())
    other = healpix(4) if sc.coarse.is_sphere else cartesian(4, 4)
    with pytest.raises(DatasetError, match="was made on the coarse mesh .* Build the model on"):
        check_compatible(data, other)
    with pytest.raises(TypeError, match="mesh_or_model must be a Mesh"):
        check_compatible(data, 3)
    # a model built by name remembers its mesh: same mesh fits, another resolution does not
    from meshclosure.nn import build_model
    check_compatible(data, build_model("mgn", data.mesh, hidden=4, n_blocks=1))
    with pytest.raises(DatasetError, match="was made on the coarse mesh"):
        check_compatible(data, build_model("mgn", other, hidden=4, n_blocks=1))
    # a model of a family that cannot run on the dataset's mesh is refused by family
    wrong = build_model("cnn", cartesian(4, 4), hidden=4)     # Cartesian grids only
    with pytest.raises(DatasetError, match="supports mesh families"):
        check_compatible(data, wrong)


def test_native_coarse_mesh_matches_family_mesh(tmp_path) -> None:
    """A dataset coarse-grained HEALPix 8 -> 2 fits a model built on healpix(2), not healpix(4)."""
    mesh, parent = CASES["healpix"]
    sc = StandInScenario(mesh, factor=4)
    ds = build_dataset(_samples(sc, 3), sc.coarse, config=sc.config, seed=0)
    check_compatible(ds, healpix(2))
    with pytest.raises(DatasetError, match="nside"):
        check_compatible(ds, healpix(4))


def test_truncated_and_corrupt_files(written, tmp_path) -> None:
    _, _, _, path = written
    raw = path.read_bytes()
    bad = tmp_path / "truncated.nc"
    bad.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DatasetError, match="truncated.nc.*truncated or corrupt.*Regenerate"):
        read_dataset(bad)
    with pytest.raises(DatasetError, match="truncated.nc"):
        SubgridDataset(bad)
    # flip bytes of the data: either unreadable or caught by the checksum
    ds = read_dataset(path)
    ds["sgs_flux_q"].values[1, 0] += 1e-9
    ds.attrs.pop("source_path")
    changed = tmp_path / "changed.nc"
    write_dataset(ds, changed)
    with pytest.raises(DatasetError, match="changed.nc.*checksum.*Regenerate"):
        read_dataset(changed)
    with pytest.raises(DatasetError, match="does not exist"):
        read_dataset(tmp_path / "missing.nc")
    plain = tmp_path / "plain.nc"
    foreign = ds[["state_q"]]
    foreign.attrs, foreign.encoding = {}, {}
    foreign.to_netcdf(plain)     # netCDF, but not ours
    with pytest.raises(DatasetError, match="not a meshclosure dataset"):
        read_dataset(plain)


def test_write_refuses_to_overwrite(written, tmp_path) -> None:
    _, _, _, path = written
    ds = read_dataset(path)
    target = tmp_path / "keep.nc"
    target.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="overwrite"):
        write_dataset(ds, target)
    assert target.read_bytes() == b"precious"
    write_dataset(ds, target, overwrite=True)
    assert read_dataset(target)["sgs_flux_q"].equals(ds["sgs_flux_q"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.nc"]   # no temporary left
