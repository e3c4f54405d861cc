"""Trajectory datasets: a sample at every coarse step with what the coarse model replays.

The stored data must be exactly what :func:`coarse_steps` produces, windows
must stay inside one split, and the coarse model rebuilt from the file's own
config, replaying a window's stored step means from its stored start state,
must track the stored states far better than with no closure. Batches of
both torch datasets share one graph.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from meshclosure.closures import FeaturePipeline
from meshclosure.data import (DatasetError, GraphBatch, ResumeError, SubgridDataset,
                              TrajectoryDataset, build_dataset, generate, mesh_from_dataset,
                              read_dataset, write_dataset)
from meshclosure.data.dataset import SPLIT_CODES, SPLITS
from meshclosure.data.scenarios import Scenario, get_scenario
from meshclosure.data.trajectory import (coarse_steps, replay_window, trajectory_samples,
                                         trajectory_windows)
from meshclosure.errors import ArgumentError
from meshclosure.solver import STAGES

N = 17          # train block of 12 states: windows of 10 steps fit


def _scenario():
    return get_scenario("kinematic", mesh="cartesian:16", factor=2, spinup_time=0.5)


@pytest.fixture(scope="module")
def traj(tmp_path_factory):
    out = tmp_path_factory.mktemp("traj") / "traj.nc"
    generate(_scenario(), out, n_samples=N, ood_samples=3, trajectory=True, progress=False)
    return out


def _rel_l2(V, a, b):
    return float(((V * (a - b) ** 2).sum() / (V * b ** 2).sum()).sqrt())


def test_layout_and_attributes(traj):
    ds = read_dataset(traj)                                   # checksums of every sample
    sc = _scenario()
    assert int(ds.attrs["trajectory"]) == 1 and ds.attrs["stepper"] == "ssprk3"
    assert int(ds.attrs["coarse_every"]) == sc.coarse_every == int(ds.attrs["every"])
    assert float(ds.attrs["coarse_dt"]) == pytest.approx(sc.coarse_every * sc.dt, rel=1e-15)
    assert json.loads(ds.attrs["stage_times"]) == list(STAGES["ssprk3"].c)
    assert ds["transport_stages"].dims == ("run", "time", "stage", "n_edge")
    assert ds.sizes["stage"] == 3 and "forcing_mean_q" not in ds       # kinematic: no forcing
    # consecutive coarse states: model_time advances by coarse_dt exactly per step
    t = np.asarray(ds["model_time"].values[0])
    assert np.allclose(np.diff(t), float(ds.attrs["coarse_dt"]), rtol=1e-12)
    ood = np.asarray(ds["split"].values[1])
    assert (ood[:3] == SPLIT_CODES["ood"]).all() and (ood[3:] == SPLIT_CODES["absent"]).all()
    assert np.isnan(ds["sgs_flux_mean_q"].values[1, 3:]).all()     # padding is NaN, never read


def test_stored_data_are_what_coarse_steps_produced(traj):
    """The file's states, step means and stage transports equal a fresh run of coarse_steps."""
    ds = read_dataset(traj, chunks=None)
    sc = Scenario.from_config(json.loads(ds.attrs["scenario_config"]))
    n_int = sc.coarse.n_faces
    t, state = sc.spin_up(sc.initial_state())
    U = sc.coarse_model().base.face_transport
    for k, (_, _, step) in enumerate(coarse_steps(sc, t, state, 4)):
        assert float(ds["model_time"].values[0, k]) == step.t
        assert np.array_equal(ds["state_q"].values[0, k], step.state["q"].numpy())
        assert np.array_equal(ds["sgs_flux_mean_q"].values[0, k, :n_int], step.flux["q"].numpy())
        assert np.array_equal(ds["sgs_flux_q"].values[0, k, :n_int], step.flux_start["q"].numpy())
        for s, c in enumerate(STAGES["ssprk3"].c):
            assert np.array_equal(ds["transport_stages"].values[0, k, s, :n_int],
                                  U(step.t + c * step.dt).numpy())
    # the step mean is not the instantaneous flux (the step spans several eddy times)
    a, b = ds["sgs_flux_mean_q"].values[0, 0], ds["sgs_flux_q"].values[0, 0]
    assert np.linalg.norm(a - b) > 0.2 * np.linalg.norm(b)


def test_stored_inputs_are_the_feature_pipeline_of_the_stored_states(traj):
    ds = read_dataset(traj, chunks=None)
    pipes = [FeaturePipeline.from_config(json.loads(ds.attrs[name]))
             for name in ("feature_pipeline", "ood_feature_pipeline")]
    mesh = mesh_from_dataset(ds)
    for r, k in [(0, 0), (0, N - 1), (1, 2)]:
        pipe = pipes[r]
        state = {"q": torch.as_tensor(ds["state_q"].values[r, k])}
        x = pipe(mesh, state, float(ds["model_time"].values[r, k]))
        ref = torch.stack([torch.as_tensor(ds[n].values[r, k]) for n in pipe.names], -1)
        scale = ref.abs().amax(0).clamp_min(1e-300)
        assert float(((x - ref).abs() / scale).max()) <= 1e-12


def test_replaying_stored_step_means_tracks_the_stored_states(traj):
    """Rebuilt from the file's config, the coarse model replaying a window's step means from
    its start state follows the stored states >= 5x better than with no closure (10 steps)."""
    data = TrajectoryDataset(traj, "train", length=10)
    assert len(data) == 2
    sc = Scenario.from_config(data.scenario_config)
    assert sc.coarse_dt == pytest.approx(data.coarse_dt, rel=1e-15)
    V = sc.coarse.cell_volume
    for i in range(len(data)):
        w = data[i]
        truth = w["states"]["q"]
        closed = [s["q"] for s in replay_window(sc, w)]
        none = [s["q"] for s in replay_window(sc, w, closure=False)]
        err, err_none = _rel_l2(V, closed[-1], truth[-1]), _rel_l2(V, none[-1], truth[-1])
        assert err_none >= 5 * err, (err, err_none)
        assert _rel_l2(V, closed[0], truth[0]) < 0.1 * _rel_l2(V, none[0], truth[0]) + 1e-3
        # the stored stage transports are the ones the rebuilt coarse model uses
        U = sc.coarse_model().base.face_transport
        t0 = float(w["t"][0])
        assert torch.equal(w["transport_stages"][0, 1], U(t0 + data.coarse_dt).to(torch.float64))


def _brute_windows(split, code, length):
    out = []
    for r in range(split.shape[0]):
        for k in range(split.shape[1] - length):
            if all(split[r, k + j] == code for j in range(length + 1)):
                out.append((r, k))
    return out


def test_windows_never_cross_a_boundary_gap_or_padding(traj):
    import xarray as xr

    gen = np.random.default_rng(0)
    for _ in range(50):
        split = gen.choice([-1, 0, 0, 0, 1, 2, 3, 4], size=(2, 30)).astype(np.int8)
        ds = xr.Dataset({"split": (("run", "time"), split)})
        for name in SPLITS:
            for length in (1, 2, 4):
                got = trajectory_windows(ds, name, length)
                assert got == _brute_windows(split, SPLIT_CODES[name], length)
    real = read_dataset(traj, verify=False)
    codes = np.asarray(real["split"].values)
    for name in SPLITS:
        for r, k in trajectory_windows(real, name, 2):
            assert (codes[r, k:k + 3] == SPLIT_CODES[name]).all()
    assert trajectory_windows(real, "val", 3) == []          # val block has 2 states
    with pytest.raises(ArgumentError, match="split='all'"):
        trajectory_windows(real, "all", 2)


def test_trajectory_items_and_batches_share_one_graph(traj):
    data = TrajectoryDataset(traj, "train", length=3)
    raw = read_dataset(traj, chunks=None)
    n_int = data.mesh.n_faces
    w = data[1]
    r, k = w["run"], w["start"]
    assert torch.equal(w["states"]["q"], torch.as_tensor(raw["state_q"].values[r, k + 1:k + 4]))
    assert torch.equal(w["flux_mean"]["q"],
                       torch.as_tensor(raw["sgs_flux_mean_q"].values[r, k:k + 3, :n_int]))
    assert w["x"].shape == (4, data.mesh.n_cells, 4) and w["y"].shape == (4, n_int, 1)
    loader = torch.utils.data.DataLoader(data, batch_size=3, collate_fn=data.collate)
    batch = next(iter(loader))
    assert batch["graph"] is data.graph and batch["mesh"] is data.mesh
    for b in range(3):
        item = data[b]
        assert torch.equal(batch["x"][b], item["x"])
        assert torch.equal(batch["flux_mean"]["q"][b], item["flux_mean"]["q"])
        assert torch.equal(batch["transport_stages"][b], item["transport_stages"])
    plain = read_dataset(traj, chunks=None).load()
    plain.attrs["trajectory"] = 0
    with pytest.raises(DatasetError, match="not a trajectory dataset.*--trajectory"):
        TrajectoryDataset(plain, "train", 2)


def test_subgrid_batches_equal_items_on_one_graph(traj):
    data = SubgridDataset(traj, "train")
    first, second = data[0], data[1]
    # items share the dataset's graph tensors: no per-sample clone
    assert first.edge_index.data_ptr() == data.graph.edge_index.data_ptr()
    assert second.edge_attr.data_ptr() == data.graph.edge_attr.data_ptr()
    loader = torch.utils.data.DataLoader(data, batch_size=4, shuffle=False,
                                         collate_fn=data.collate)
    batches = list(loader)
    assert sum(len(b) for b in batches) == len(data)
    b0 = batches[0]
    assert isinstance(b0, GraphBatch) and b0.graph is data.graph
    assert b0.x.shape == (4, data.mesh.n_cells, len(data.input_names))
    for j in range(4):
        item = data[j]
        for name in ("x", "y", "y_tendency", "y_boundary", "face_transport"):
            assert torch.equal(getattr(b0, name)[j], item[name])
        assert b0.t[j] == item.t and int(b0.time_index[j]) == item.time_index
    # a batch without a dataset at hand: the graph comes from the items, storage shared
    free = GraphBatch.stack([first, second])
    assert free.graph.edge_index.data_ptr() == data.graph.edge_index.data_ptr()
    assert "x" not in free.graph and "x" in first
    moved = b0.to("cpu")
    assert moved.graph.edge_index.data_ptr() == data.graph.edge_index.data_ptr()
    assert torch.equal(moved.y, b0.y)
    with pytest.raises(ArgumentError, match="items"):
        data.collate([])


def test_zarr_round_trip_of_a_trajectory(traj, tmp_path):
    ds = read_dataset(traj, chunks=None).load()
    out = write_dataset(ds, tmp_path / "traj.zarr")
    back = read_dataset(out)                                  # every checksum, 4-D included
    assert np.array_equal(back["transport_stages"].values, ds["transport_stages"].values,
                          equal_nan=True)
    assert len(TrajectoryDataset(out, "train", 10)) == 2


def test_barotropic_trajectory_replays_the_stored_step_mean_forcing(tmp_path):
    """Prognostic flow: no stage transports, but the step-mean forcing is stored, and the
    coarse model replaying the stored means beats no closure >= 5x, while the model's own
    forcing at its stage times (instead of the stored step mean) does much worse."""
    sc = get_scenario("barotropic", mesh="cartesian:32", factor=4)
    t, state = sc.advance(0.0, sc.initial_state(), int(round(0.5 / sc.dt)))
    samples = [s for _, _, s in trajectory_samples(sc, t, state, 15)]
    assert samples[0].transport_stages is None
    assert set(samples[0].step_forcing) and set(samples[0].step_forcing) <= set(sc.variables)
    ds = build_dataset(samples, sc.coarse, config=sc.config, seed=0,
                       attrs={"coarse_dt": sc.coarse_dt, "stage_times": STAGES["ssprk3"].c})
    assert int(ds.attrs["trajectory"]) == 1 and "transport_stages" not in ds
    for v in samples[0].step_forcing:
        assert np.array_equal(ds[f"forcing_mean_{v}"].values[0, 1],
                              samples[1].step_forcing[v].numpy())
    data = TrajectoryDataset(write_dataset(ds, tmp_path / "b.nc"), "train", 10)
    assert len(data) == 1 and set(data[0]["forcing_mean"]) == set(samples[0].step_forcing)
    rebuilt = Scenario.from_config(data.scenario_config)
    V = rebuilt.coarse.cell_volume
    w = data[0]

    def err(out):
        return max(_rel_l2(V, out[-1][v], w["states"][v][-1]) for v in rebuilt.variables)

    closed = err(replay_window(rebuilt, w))
    assert err(replay_window(rebuilt, w, closure=False)) >= 5 * closed
    assert err(replay_window(rebuilt, w, forcing="model")) >= 5 * closed


def test_trajectory_arguments_and_resume(tmp_path):
    sc = get_scenario("kinematic", mesh="cartesian:8", factor=2, spinup_time=0.05)
    out = tmp_path / "t.nc"
    with pytest.raises(ArgumentError, match="every=3: must be left out for a trajectory dataset.*coarse_every = "):
        generate(sc, out, n_samples=4, every=3, trajectory=True, progress=False)
    with pytest.raises(ArgumentError, match="trajectory='yes'"):
        generate(sc, out, n_samples=4, trajectory="yes", progress=False)
    assert not out.exists()

    def stop(run, done, total):
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate(sc, out, n_samples=4, trajectory=True, progress=False, callback=stop)
    assert not out.exists()
    calls = []
    generate(sc, out, n_samples=4, trajectory=True, progress=False,
             callback=lambda run, done, total: calls.append(done))
    assert calls == [3, 4]                                     # resumed after sample 2
    ref = tmp_path / "ref.nc"
    generate(sc, ref, n_samples=4, trajectory=True, progress=False)
    a, b = read_dataset(out), read_dataset(ref)
    assert np.array_equal(a["sample_checksum"].values, b["sample_checksum"].values)
    # a plain run's checkpoints are not resumed as a trajectory
    with pytest.raises(KeyboardInterrupt):
        generate(sc, tmp_path / "p.nc", n_samples=4, progress=False, callback=stop)
    with pytest.raises(ResumeError, match="trajectory"):
        generate(sc, tmp_path / "p.nc", n_samples=4, trajectory=True, progress=False)
