"""Training from a many-run store (``generate_runs``) under ``torchrun``: two processes equal
one with the same global batch to 1e-10 in float64 (offline and online, whose coarse model is
each window's own run's), every run's samples are used, and each rank reads only its shard:
the samples the two ranks read while training add up, sample for sample, to what one process
reads (none read by both, none missing)."""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch

from conftest import small_kinematic
from test_distributed import TINY, TOL, WORKER, _max_diff, _one_process, _torchrun

pytest.importorskip("distributed")

RUNS = 3
CONFIGS = [
    TINY | {"batch_size": 3},                                           # offline
    TINY | {"batch_size": 3, "online_steps": 2, "updates_per_epoch": 2,
            "offline_weight": 0.5},                                     # online, per-run model
]
TRAINING_READS = ("train", "online_train")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Three kinematic runs (seeds from one SeedSequence), each split by time, on one worker."""
    from meshclosure.data import generate_runs

    out = tmp_path_factory.mktemp("ddp_runs") / "runs.zarr"
    threads = torch.get_num_threads()
    try:
        generate_runs(small_kinematic(), out, runs=RUNS, n_samples=10, trajectory=True,
                      workers=1, progress=False)
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.fixture(scope="module")
def two(store, tmp_path_factory):
    res = tmp_path_factory.mktemp("ddp_runs_two")
    _torchrun(WORKER, store, res, json.dumps(CONFIGS), "--record-reads")
    return res


@pytest.fixture(scope="module")
def one(store, tmp_path_factory):
    return _one_process(store, tmp_path_factory.mktemp("ddp_runs_one"), CONFIGS,
                        record_reads=True)


def test_store_holds_independent_runs(store):
    from meshclosure.data import read_dataset, scenario_for_run

    ds = read_dataset(store)
    split = np.asarray(ds["split"].values)
    assert split.shape[0] == RUNS and all((split[r] == 0).any() for r in range(RUNS))
    seeds = [scenario_for_run(ds, r).seed for r in range(RUNS)]
    assert len(set(seeds)) == RUNS                      # three realisations, not one
    q = np.asarray(ds["state_q"].values)
    assert not np.array_equal(q[0], q[1])


@pytest.mark.parametrize("i", range(len(CONFIGS)), ids=["offline", "online"])
def test_two_processes_on_many_runs_equal_one(two, one, i):
    r0, r1 = (torch.load(two / f"run{i}_rank{r}.pt") for r in (0, 1))
    ref = torch.load(one / f"run{i}_rank0.pt")
    assert r0["world"] == 2 and ref["world"] == 1
    assert r0["updates"] == r1["updates"] == ref["updates"] > 0
    for key in ("model", "eval"):
        assert _max_diff(r0[key], r1[key]) == 0.0, key
        assert _max_diff(r0[key], ref[key]) < TOL, key
    assert _max_diff(ref["model"], ref["initial"]) > 1e3 * TOL


@pytest.mark.parametrize("i", range(len(CONFIGS)), ids=["offline", "online"])
def test_each_rank_reads_only_its_shard(two, one, i):
    r0, r1 = (torch.load(two / f"run{i}_rank{r}.pt") for r in (0, 1))
    ref = torch.load(one / f"run{i}_rank0.pt")
    n_train = len({x for x in ref["reads"] if x[0] == "train"})
    assert i == 1 or n_train % CONFIGS[i]["batch_size"] != 1

    def training(reads):
        return Counter(tuple(x) for x in reads if x[0] in TRAINING_READS)

    a, b, whole = training(r0["reads"]), training(r1["reads"]), training(ref["reads"])
    assert whole and a and b                        # both ranks did read training samples
    # (the batch size leaves no 1-sample batch, for which the idle rank would read the
    # batch's sample again with weight 0: Distributed.split)
    assert a + b == whole                           # together exactly one process's reads
    assert sum(a.values()) < sum(whole.values()) and sum(b.values()) < sum(whole.values())
    assert {run for _, run, _ in whole} == set(range(RUNS))     # every run is trained on


def test_online_windows_use_their_own_runs_scenario(store):
    """A window of run 1 unrolled with run 0's scenario is refused (its stored prescribed
    flow is another realisation's); with ``scenarios=`` each window gets its run's."""
    from meshclosure.data import TrajectoryDataset, scenario_for_run
    from meshclosure.errors import ArgumentError
    from meshclosure.train.online import unroll

    traj = TrajectoryDataset(store, "train", 2)
    i = next(k for k, (run, _) in enumerate(traj.windows) if run == 1)
    window = traj[i]
    run0, run1 = scenario_for_run(traj.ds, 0), scenario_for_run(traj.ds, 1)
    with pytest.raises(ArgumentError, match="scenario"):
        unroll(run0, None, window, 2)
    picked = unroll(run0, None, window, 2, scenarios=lambda r: scenario_for_run(traj.ds, r))
    own = unroll(run1, None, window, 2)
    for a, b in zip(picked, own):
        assert all(torch.equal(a[v], b[v]) for v in a)
    assert float((own[-1]["q"] - window["states"]["q"][-1]).abs().max()) > 0   # no closure
