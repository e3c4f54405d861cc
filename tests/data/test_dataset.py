"""Datasets on disk and the torch dataset: round trip, integrity, splits, normalization."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from meshclosure.data import (SPLITS, DatasetError, NormalizationStats, SubgridDataset,
                              build_dataset, check_compatible, mesh_from_dataset, read_dataset,
                              split_boundaries, subgrid_targets, write_dataset)
from meshclosure.data.dataset import FORMAT_VERSION
from meshclosure.errors import ArgumentError, OutputExistsError
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
    coarse = sc.coarse
    nf = coarse.n_faces
    for run, run_samples in enumerate((samples, ood_samples)):
        for k, s in enumerate(run_samples):
            assert float(ds["model_time"][run, k]) == s.t
            assert float(ds["time"][k]) == samples[k].t - samples[0].t
            sample = ds.isel(run=run, time=k)
            assert np.array_equal(sample["transport"].values[:nf], s.transport.numpy())
            assert not sample["transport"].values[nf:].any()       # no flow through walls
            assert np.array_equal(sample["state_q"].values, s.state["q"].numpy())
            assert np.array_equal(sample["sgs_flux_q"].values[:nf], s.flux["q"].numpy())
            assert np.array_equal(sample["sgs_flux_q"].values[nf:], s.boundary_flux["q"].numpy())
            assert np.array_equal(sample["sgs_tendency_q"].values, s.tendency["q"].numpy())
            for name, v in s.inputs.items():
                assert np.array_equal(sample[f"input_{name}"].values, v.numpy())
    # the shorter OOD run is padded: absent, NaN
    pad = ds["split"].values[1] == -1
    assert pad.sum() == len(samples) - len(ood_samples) and pad[len(ood_samples):].all()
    assert np.isnan(ds["state_q"].values[1, pad]).all()
    mesh = mesh_from_dataset(ds)
    for name in _FLOAT_FIELDS + _INDEX_FIELDS:
        assert torch.equal(getattr(mesh, name), getattr(coarse, name)), name
    assert (mesh.radius, mesh.period, mesh.info, mesh.boundary_tag_names) == \
        (coarse.radius, coarse.period, coarse.info, coarse.boundary_tag_names)
    assert mesh.validate(raise_on_error=False) == []
    # the identity survives the round trip
    edge = torch.as_tensor(ds["sgs_flux_q"].values)
    for run, n in ((0, len(samples)), (1, len(ood_samples))):
        for k in range(n):
            phi, b = edge[run, k, :nf], edge[run, k, nf:]
            d = -divergence(mesh, phi, b if mesh.n_boundary_faces else None)
            s = torch.as_tensor(ds["sgs_tendency_q"].values[run, k])
            assert float((d - s).abs().max()) <= 1e-12 * float(s.abs().max())
    # attributes: config, seed, versions, splits, UGRID
    assert json.loads(ds.attrs["scenario_config"]) == sc.config
    assert json.loads(ds.attrs["ood_config"])["strength"] == 2 * sc.config["strength"]
    assert ds.attrs["seed"] == sc.seed and ds.attrs["meshclosure_dataset"] == FORMAT_VERSION == 2
    assert set(json.loads(ds.attrs["versions"])) == {"meshclosure", "torch", "numpy", "xarray"}
    assert json.loads(ds.attrs["split_boundaries"]) == [0, 7, 9, 10]
    assert "created" in ds.attrs and ds.attrs["Conventions"] == "UGRID-1.0"
    assert ds.sizes["n_face"] == coarse.n_cells
    assert ds.sizes["n_edge"] == coarse.n_faces + coarse.n_boundary_faces
    assert ds.sizes["n_interior_edge"] == coarse.n_faces


def test_splits_are_contiguous_disjoint_and_ood_separate(written) -> None:
    sc, samples, ood_samples, path = written
    sets = {s: set(map(tuple, SubgridDataset(path, split=s).indices.tolist())) for s in SPLITS}
    assert sets["train"] == {(0, k) for k in range(7)}
    assert sets["val"] == {(0, 7), (0, 8)} and sets["test"] == {(0, 9)}
    assert sets["ood"] == {(1, 0), (1, 1)}                  # the OOD run is run 1
    for a in SPLITS:
        for b in SPLITS:
            if a < b:
                assert not sets[a] & sets[b], (a, b)
    assert set().union(*sets.values()) == set(map(tuple, SubgridDataset(path, "all")
                                                  .indices.tolist()))
    for n in range(3, 40):
        bounds = split_boundaries(n)
        assert bounds[0] == 0 and bounds[-1] == n and all(np.diff(bounds) >= 1)


def _later(samples, offset):
    """The same samples shifted to later times (a longer, still monotonic run)."""
    import dataclasses
    return [dataclasses.replace(s, t=s.t + offset) for s in samples]


def test_gap_sets_samples_aside_between_blocks(written) -> None:
    sc, samples, ood_samples, _ = written
    twenty = samples + _later(samples, 100.0)
    big = build_dataset(twenty, sc.coarse, config=sc.config, seed=sc.seed, gap=1)
    codes = big["split"].values[0].tolist()          # 20: train 14, val 3, test 3
    assert codes == [0] * 14 + [4, 1, 1, 4, 2, 2]
    assert json.loads(big.attrs["split_boundaries"]) == [0, 14, 17, 20]
    assert big.attrs["split_gap"] == 1
    # a gap that would leave val or test with fewer than 2 samples is refused, with the limit
    with pytest.raises(ArgumentError, match=r"gap=2: must leave at least 2 samples .* the "
                                            r"largest gap for 20 samples is 1; pass gap <= 1"):
        build_dataset(twenty, sc.coarse, config=sc.config, seed=sc.seed, gap=2)
    with pytest.raises(ArgumentError, match="the largest gap for 10 samples is 0"):
        build_dataset(samples, sc.coarse, config=sc.config, seed=sc.seed, gap=1)
    with pytest.raises(ArgumentError, match="gap=-1: must be an integer >= 0"):
        build_dataset(samples, sc.coarse, config=sc.config, seed=sc.seed, gap=-1)
    with pytest.raises(ArgumentError, match="fractions=.*summing to 1"):
        build_dataset(samples, sc.coarse, config=sc.config, seed=sc.seed,
                      fractions=(0.5, 0.5, 0.5))
    with pytest.raises(DatasetError, match="times of run 0 must increase strictly"):
        build_dataset(samples * 2, sc.coarse, config=sc.config, seed=sc.seed)


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
    train = ds["split"].values == 0                 # (run, time)
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
    nf = sc.coarse.n_faces
    stats = NormalizationStats.from_dataset(ds)
    flux = ds["sgs_flux_q"].values[..., :nf]               # interior faces
    assert stats.flux_scale[0] == pytest.approx(np.sqrt(np.mean(flux[train] ** 2)), rel=1e-12)
    i = stats.input_names.index("state_q")
    assert stats.input_mean[i] == pytest.approx(ds["state_q"].values[train].mean(), rel=1e-12)
    assert stats.input_scale[i] == pytest.approx(ds["state_q"].values[train].std(), rel=1e-12)
    # changing val/test/ood data does not change the statistics
    altered = ds.load().copy(deep=True)
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
    r, k = g.run, g.time_index
    state = torch.as_tensor(ds["state_q"].values[r, k])
    expected = (state - stats.input_mean[i]) / stats.input_scale[i]
    assert torch.allclose(g.x[:, i], expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(te.denormalize_flux(g.y)[:, 0],
                               torch.as_tensor(ds["sgs_flux_q"].values[r, k, :nf]))


def test_graph_items(written) -> None:
    sc, samples, ood_samples, path = written
    data = SubgridDataset(path, "all")
    mesh = data.mesh.float()
    assert len(data) == len(samples) + len(ood_samples)
    for k in (0, len(data) - 1):
        g = data[k]
        assert g.x.dtype == torch.float32 and g.y.shape == (mesh.n_faces, 1)
        assert g.y_boundary.shape == (mesh.n_boundary_faces, 1)
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
    # one changed value: caught by the per-sample checksum, naming the sample
    ds = read_dataset(path).load()
    ds["sgs_flux_q"].values[0, 1, 0] += 1e-9
    ds.attrs.pop("source_path")
    changed = tmp_path / "changed.nc"
    write_dataset(ds, changed)
    with pytest.raises(DatasetError, match=r"changed.nc.*sample \(run 0, time index 1\).*"
                                           "checksum.*Regenerate"):
        read_dataset(changed)
    data = SubgridDataset(changed, "train")             # opens: checks as it reads
    data[0]
    with pytest.raises(DatasetError, match=r"sample \(run 0, time index 1\)"):
        data[1]
    # a changed mesh or split: caught by the static checksum
    ds = read_dataset(path).load()
    ds["split"].values[0, 0] = 1
    ds.attrs.pop("source_path")
    write_dataset(ds, tmp_path / "split.nc")
    with pytest.raises(DatasetError, match="static_sha256"):
        read_dataset(tmp_path / "split.nc", verify="static")
    # and a changed attribute (here the normalisation a model would be trained with)
    ds = read_dataset(path).load()
    stats = json.loads(ds.attrs["normalization"])
    stats["flux_scale"] = [2 * f for f in stats["flux_scale"]]
    ds.attrs["normalization"] = json.dumps(stats)
    ds.attrs.pop("source_path")
    write_dataset(ds, tmp_path / "attrs.nc")
    with pytest.raises(DatasetError, match="attributes.*static_sha256"):
        read_dataset(tmp_path / "attrs.nc", verify="static")
    with pytest.raises(DatasetError, match="does not exist"):
        read_dataset(tmp_path / "missing.nc")
    plain = tmp_path / "plain.nc"
    foreign = ds[["state_q"]]
    foreign.attrs, foreign.encoding = {}, {}
    foreign.to_netcdf(plain)     # netCDF, but not ours
    with pytest.raises(DatasetError, match="not a meshclosure dataset"):
        read_dataset(plain)


def test_old_layout_is_refused_with_the_fix(tmp_path) -> None:
    import xarray as xr

    old = tmp_path / "v1.nc"
    xr.Dataset({"state_q": (("time", "cell"), np.zeros((2, 3)))},
               attrs={"meshclosure_dataset": 1}).to_netcdf(old)
    with pytest.raises(DatasetError, match=r"format version 1.*old layout \(version 1: dims "
                                           r"time/cell/face.*Regenerate it with `meshclosure "
                                           r"generate .*--overwrite`"):
        read_dataset(old)


def test_write_refuses_to_overwrite(written, tmp_path) -> None:
    _, _, _, path = written
    ds = read_dataset(path)
    target = tmp_path / "keep.nc"
    target.write_bytes(b"precious")
    with pytest.raises(OutputExistsError, match="keep.nc.*exists and was left untouched; pass "
                                                "overwrite=True"):
        write_dataset(ds, target)
    assert target.read_bytes() == b"precious"
    write_dataset(ds, target, overwrite=True)
    assert read_dataset(target)["sgs_flux_q"].equals(ds["sgs_flux_q"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.nc"]   # no temporary left
