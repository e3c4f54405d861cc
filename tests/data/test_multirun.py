"""`generate_runs` / `generate --runs`: many runs on dask.distributed into one zarr store.

Bit-for-bit equality with serial single-run `generate` calls, a scheduler reached by
address, a worker killed mid-run, a rerun that finishes only the missing runs, the
readers on more runs, and the argument errors.
"""
from __future__ import annotations

import json
import os
import signal
import threading
import time

import numpy as np
import pytest
import torch

from meshclosure.cli import main
from meshclosure.data import (ResumeError, SharedPathError, SubgridDataset, TrajectoryDataset,
                              generate, generate_runs, get_scenario, read_dataset, run_seeds,
                              scenario_for_run)
from meshclosure.data.dataset import SPLIT_CODES, sample_variables
from meshclosure.data.multirun import _run_task, check_runs_arguments
from meshclosure.data.torch_dataset import NormalizationStats
from meshclosure.data.trajectory import prescribed_coarse_transport
from meshclosure.errors import ArgumentError

distributed = pytest.importorskip("distributed")

TINY = dict(mesh="cartesian:16", factor=4, spinup_time=0.05)
N, EVERY, OOD = 5, 2, 3          # samples per main run, fine steps apart; OOD samples


def _tiny(seed=0, **kw):
    return get_scenario("kinematic", seed=seed, **{**TINY, **kw})


def _per_run(ds, r):
    """Every variable of run ``r`` (those with a leading ``run`` dim), as numpy arrays."""
    return {k: np.asarray(ds[k].values[r]) for k in ds.variables
            if ds[k].dims[:1] == ("run",) and k not in ("run", "run_seed", "run_kind")}


def _assert_same(a, b, what):
    assert a.keys() == b.keys(), what
    for k in a:
        assert np.array_equal(a[k], b[k], equal_nan=a[k].dtype.kind == "f"), f"{what}: {k}"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)               # the workers' count (threads=1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    """Four serial single-run stores with the seeds run_seeds(0, 4), each with its OOD run."""
    folder = tmp_path_factory.mktemp("serial")
    out = []
    for r, seed in enumerate(run_seeds(0, 4)):
        path = folder / f"serial_{r}.zarr"
        generate(_tiny(seed), path, n_samples=N, every=EVERY, ood_samples=OOD, progress=False)
        out.append(read_dataset(path))
    return out


@pytest.fixture
def tiny_cli(monkeypatch):
    """The CLI builds the tiny scenario (short spin-up: no flag sets it); the workers
    rebuild it from its config, which records the spin-up."""
    import meshclosure.data.scenarios as scenarios

    real = scenarios.get_scenario
    monkeypatch.setattr(scenarios, "get_scenario",
                        lambda name, **kw: real(name, **{"spinup_time": 0.05, **kw}))


@pytest.fixture(scope="module")
def multi(tmp_path_factory):
    """`generate --runs 4 --workers 2 --ood-runs 2` (the tiny scenario)."""
    import meshclosure.data.scenarios as scenarios

    out = tmp_path_factory.mktemp("multi") / "multi.zarr"
    real = scenarios.get_scenario
    scenarios.get_scenario = lambda name, **kw: real(name, **{"spinup_time": 0.05, **kw})
    try:
        assert main(["-q", "generate", "--scenario", "kinematic", "--mesh", "cartesian:16",
                     "--factor", "4", "--samples", str(N), "--every", str(EVERY), "--ood",
                     str(OOD), "--runs", "4", "--ood-runs", "2", "--workers", "2",
                     "--out", str(out)]) == 0
    finally:
        scenarios.get_scenario = real
    return out


@pytest.fixture(scope="module")
def cluster():
    """A LocalCluster of two worker processes (nannies restart a killed one) and a client."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as lc, distributed.Client(lc) as client:
        yield lc, client


# ------------------------------------------------------------------ bit for bit
def test_runs_equal_serial_runs_bit_for_bit(multi, serial) -> None:
    ds = read_dataset(multi, verify=True)
    assert ds.sizes["run"] == 6 and ds.sizes["time"] == N
    seeds = run_seeds(0, 4)
    assert ds["run_seed"].values[:4].tolist() == seeds
    assert ds["run_kind"].values.tolist() == [0, 0, 0, 0, 1, 1]
    for r in range(4):                      # main runs: run 0 of each serial store
        _assert_same(_per_run(ds, r), _per_run(serial[r], 0), f"main run {r}")
    for k in range(2):                      # OOD runs: run 1 of serial stores 0 and 1
        assert ds["run_seed"].values[4 + k] == scenario_for_run(serial[k], 1).seed
        _assert_same(_per_run(ds, 4 + k), _per_run(serial[k], 1), f"ood run {k}")
    gen = json.loads(ds.attrs["generation"])
    assert gen["workers"] == 2 and gen["computed_runs"] == list(range(6))
    assert gen["samples"] == 4 * N + 2 * OOD and gen["samples_per_min"] > 0
    assert gen["wall_s"] >= gen["runs_wall_s"] > 0
    assert {r["worker"] for r in gen["runs"]} and all(r["wall_s"] > 0 for r in gen["runs"])
    # one chunk per run along run: regions never share a chunk; metadata consolidated
    assert ds["sgs_flux_q"].encoding["chunks"][0] == 1
    assert (multi / "zarr.json").is_file() and not (multi.parent / "multi.zarr.partial").exists()


def test_normalization_is_over_every_training_sample_of_every_run(multi) -> None:
    ds = read_dataset(multi)
    stats = json.loads(ds.attrs["normalization"])
    assert stats == NormalizationStats.from_dataset(ds).to_dict()
    train = ds["split"].values == SPLIT_CODES["train"]
    values = np.concatenate([ds["input_N"].values[r][train[r]].ravel() for r in range(6)])
    i = stats["input_names"].index("input_N")
    assert train[:4].any(axis=1).all() and not train[4:].any()
    assert np.isclose(stats["input_mean"][i], values.mean(), rtol=1e-12)
    assert np.isclose(stats["input_scale"][i], values.std(), rtol=1e-12)


def test_scenario_for_run_rebuilds_each_runs_scenario(multi, serial) -> None:
    ds = read_dataset(multi, verify="static")
    for r in range(6):
        sc = scenario_for_run(ds, r)
        assert sc.seed == int(ds["run_seed"].values[r])
        assert sc.dt == ds["run_dt"].values[r]
    assert scenario_for_run(ds, 4).config == scenario_for_run(serial[0], 1).config
    with pytest.raises(ArgumentError, match=r"run=6: must be an integer in 0 \.\. 5"):
        scenario_for_run(ds, 6)


def test_readers_take_samples_of_every_run(multi, serial) -> None:
    train = SubgridDataset(multi, "train", normalize=False, dtype=torch.float64)
    assert sorted({int(r) for r in train.indices[:, 0]}) == [0, 1, 2, 3]
    one = SubgridDataset(serial[2], "train", normalize=False, dtype=torch.float64)
    mine = [i for i, (r, _) in enumerate(train.indices) if r == 2]
    assert len(mine) == len(one)
    for i, j in zip(mine, range(len(one))):
        assert torch.equal(train[i].x, one[j].x) and torch.equal(train[i].y, one[j].y)
    ood = SubgridDataset(multi, "ood", normalize=False)
    assert sorted({int(r) for r in ood.indices[:, 0]}) == [4, 5] and len(ood) == 2 * OOD


# ------------------------------------------------------------------ an existing scheduler
def test_scheduler_by_address_split_by_run_and_trajectory_windows(cluster, tmp_path,
                                                                  tiny_cli) -> None:
    lc, _ = cluster
    out = tmp_path / "traj.zarr"
    assert main(["-q", "generate", "--scenario", "kinematic", "--mesh", "cartesian:8",
                 "--factor", "2", "--samples", "6", "--ood", "0", "--trajectory", "--runs", "3",
                 "--split-by", "run", "--scheduler", lc.scheduler_address,
                 "--out", str(out)]) == 0
    ds = read_dataset(out, verify=True)
    assert ds["split"].values.tolist() == [[0] * 6, [1] * 6, [2] * 6]    # whole runs per split
    assert json.loads(ds.attrs["split_runs"]) == {"train": [0], "val": [1], "test": [2]}
    assert json.loads(ds.attrs["split_fractions"]) == [0.7, 0.15, 0.15]
    assert json.loads(ds.attrs["split_boundaries"]) == [0, 1, 2, 3]        # over runs
    assert json.loads(ds.attrs["generation"])["scheduler"] == lc.scheduler_address
    for split, run in (("train", 0), ("val", 1), ("test", 2)):
        windows = TrajectoryDataset(out, split, length=2)
        assert [tuple(w) for w in windows.windows] == [(run, k) for k in range(4)]
    # each run's stored transport is its own scenario's (the seed sets the flow)
    n_int = ds.sizes["n_interior_edge"]
    stored = ds["transport_stages"].values
    for r in range(3):
        sc = scenario_for_run(ds, r)
        u = prescribed_coarse_transport(sc)(float(ds["model_time"].values[r, 1]))
        assert np.array_equal(u.numpy(), stored[r, 1, 0, :n_int])
    other = prescribed_coarse_transport(scenario_for_run(ds, 0))(
        float(ds["model_time"].values[1, 1]))
    assert not np.allclose(other.numpy(), stored[1, 1, 0, :n_int])


def test_worker_killed_mid_run_still_gives_the_uninterrupted_store(cluster, tmp_path) -> None:
    lc, client = cluster
    n, every = 8, 12
    reference = []
    for r, seed in enumerate(run_seeds(0, 2)):
        generate(_tiny(seed), tmp_path / f"ref_{r}.zarr", n_samples=n, every=every,
                 progress=False)
        reference.append(read_dataset(tmp_path / f"ref_{r}.zarr"))
    out = tmp_path / "killed.zarr"
    pids = client.run(os.getpid)                                 # worker address -> pid
    killed = []

    def kill_the_worker_of_run_0_mid_run():
        """Once run 0 has checkpointed samples, kill the worker process that runs it."""
        checkpoint = tmp_path / "killed.zarr.partial/runs/run_000.zarr.partial"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if (checkpoint / "main_sample_000002.pt").is_file():
                for worker, keys in client.processing().items():
                    if any(str(k).startswith("meshclosure-run-000") for k in keys):
                        os.kill(pids[worker], signal.SIGKILL)
                        killed.append(pids[worker])
                        return
            time.sleep(0.002)

    watcher = threading.Thread(target=kill_the_worker_of_run_0_mid_run, daemon=True)
    watcher.start()
    generate_runs(_tiny(), out, runs=2, n_samples=n, every=every, scheduler=lc.scheduler_address,
                  progress=False)
    watcher.join()
    assert killed, "no worker was killed: run 0 ended before its checkpoint was seen"
    assert killed[0] not in client.run(os.getpid).values()      # its nanny restarted it
    ds = read_dataset(out, verify=True)
    retried = json.loads(ds.attrs["generation"])["runs"][0]
    assert 0 < retried["samples"] < n          # the retry resumed from run 0's checkpoints
    for r in range(2):
        _assert_same(_per_run(ds, r), _per_run(reference[r], 0), f"run {r}")


def test_rerun_after_an_interruption_computes_only_the_missing_runs(cluster, tmp_path) -> None:
    lc, _ = cluster
    kw = dict(runs=3, n_samples=N, every=20, progress=False)     # runs of about half a second
    out = tmp_path / "resumed.zarr"
    runs_dir = tmp_path / "resumed.zarr.partial" / "runs"
    first = []

    class Stop(Exception):
        pass

    def stop_after_one(run, done, total):
        """The command stops once one run is finished (as Ctrl-C would): the local
        cluster's workers are killed with the run they are on."""
        first.append(run)
        raise Stop

    with pytest.raises(Stop):
        generate_runs(_tiny(), out, workers=1, callback=stop_after_one, **kw)
    assert not out.exists() and len(first) == 1
    assert sorted(p.name for p in runs_dir.glob("*.zarr")) == [f"run_{first[0]:03d}.zarr"]
    finished = runs_dir / f"run_{first[0]:03d}.zarr"
    stamp = (finished / "zarr.json").stat().st_mtime_ns
    calls = []

    def record(run, done, total):
        calls.append((run, done, total))
        assert (finished / "zarr.json").stat().st_mtime_ns == stamp     # not recomputed

    with pytest.raises(ResumeError, match=r"other arguments.*n_samples: 5 there, 6 now"):
        generate_runs(_tiny(), out, scheduler=lc.scheduler_address, **{**kw, "n_samples": N + 1})
    generate_runs(_tiny(), out, scheduler=lc.scheduler_address, callback=record, **kw)
    assert sorted(c[0] for c in calls) == sorted(set(range(3)) - set(first))
    assert all(c[2] == 2 for c in calls)
    ds = read_dataset(out, verify=True)
    gen = json.loads(ds.attrs["generation"])
    assert gen["skipped_runs"] == first and len(gen["computed_runs"]) == 2
    assert ds["run_seed"].values.tolist() == run_seeds(0, 3)


# ------------------------------------------------------------------ arguments
@pytest.mark.parametrize("kwargs, match", [
    (dict(runs=0), r"runs=0: must be an integer >= 1; .*runs=4"),
    (dict(runs=2, workers=0), r"workers=0: must be an integer >= 1"),
    (dict(runs=2, workers=2, scheduler="tcp://a:1"), r"workers=2: cannot be combined with "
                                                     r"scheduler='tcp://a:1'.*only one of"),
    (dict(runs=2, split_by="run"), r"split_by='run': needs at least 3 main runs.*got runs=2; "
                                   r"pass runs >= 3, or split_by='time'"),
    (dict(runs=2, split_by="space"), r"split_by='space': must be one of"),
    (dict(runs=2, ood_runs=3, ood_samples=4), r"ood_runs=3: must be <= runs=2"),
    (dict(runs=2, ood_samples=2), r"ood_samples=2: must be 0 or >= 3"),
    (dict(runs=2, threads=0), r"threads=0: must be an integer >= 1"),
])
def test_bad_arguments_name_argument_value_rule_and_fix(kwargs, match) -> None:
    with pytest.raises(ArgumentError, match=match):
        check_runs_arguments(**kwargs)


def test_bad_flags_and_unreachable_scheduler(tmp_path, capsys) -> None:
    base = ["generate", "--mesh", "cartesian:16", "--out", str(tmp_path / "x.zarr")]
    for extra, message in [
        (["--runs", "0"], "--runs 0: must be an integer >= 1"),
        (["--runs", "2", "--workers", "0"], "--workers 0: must be an integer >= 1"),
        (["--runs", "2", "--workers", "2", "--scheduler", "tcp://a:1"],
         "--workers 2: cannot be combined with --scheduler 'tcp://a:1'"),
        (["--runs", "2", "--split-by", "run"], "--split-by 'run': needs at least 3 main runs"),
        (["--workers", "2"], "--workers 2: applies to many runs only; add --runs R"),
        (["--runs", "2", "--scheduler", "tcp://127.0.0.1:9", "--scheduler-timeout", "0.5"],
         "--scheduler 'tcp://127.0.0.1:9': no dask scheduler answered there within 0.5 s"),
    ]:
        assert main(base + extra) == 2
        err = capsys.readouterr().err
        assert message in err, err
    assert not any(tmp_path.iterdir())          # nothing written, no .partial folder


def test_a_worker_that_cannot_see_the_folder_names_it(tmp_path) -> None:
    spec = {"folder": str(tmp_path / "elsewhere.zarr.partial"), "threads": 1}
    with pytest.raises(SharedPathError, match=r"cannot see '.*elsewhere\.zarr\.partial'.*"
                                              r"same path"):
        _run_task(spec)


def test_run_seeds_are_spawned_from_one_seed_sequence() -> None:
    from meshclosure.data.scenarios.base import ood_seed

    seeds = run_seeds(3, 5)
    children = np.random.SeedSequence(3, spawn_key=(1,)).spawn(5)
    assert seeds == [int(c.generate_state(1, np.uint64)[0] >> np.uint64(1)) for c in children]
    assert run_seeds(3, 2) == seeds[:2] and len(set(seeds)) == 5 and 3 not in seeds
    # no main run shares the stream of a single-run dataset's OOD run with the same seed
    for root in (0, 3, 7):
        assert ood_seed(root) not in run_seeds(root, 8)


def test_sample_variables_are_chunked_one_run_per_chunk(multi) -> None:
    ds = read_dataset(multi, verify=False)
    for name in sample_variables(ds):
        assert ds[name].encoding["chunks"][0] == 1, name
