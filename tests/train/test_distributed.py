"""Multi-process training: two CPU processes under ``torchrun`` (gloo) end with identical
weights on both ranks, equal to one process with the same global batch to 1e-10 in float64 —
offline, offline with a fixed number of updates and uneven shares, online through the solver
(per-step checkpointing; a recurrent heteroscedastic model, whose memory is carried by its
``step`` method and whose log-variance head the online loss leaves unused) — and only rank 0
writes. :class:`Distributed` on its own: inactive outside ``torchrun``, slices that partition
the batch, and weights that make DDP's average the full batch's gradient."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from meshclosure.errors import ArgumentError
from meshclosure.train.distributed import Distributed

HERE = Path(__file__).parent
WORKER = HERE / "_ddp_worker.py"
TOL = 1e-10
TINY = {"model": "mgn", "model_config": {"hidden": 16, "n_blocks": 1}, "dtype": "float64",
        "epochs": 2}
CONFIGS = [
    TINY | {"batch_size": 4},                                      # 3 even batches per epoch
    TINY | {"batch_size": 3, "updates_per_epoch": 4, "schedule": "constant"},   # shares 4/3, 2/3
    TINY | {"batch_size": 4, "online_steps": 2, "updates_per_epoch": 2, "checkpoint_steps": True,
            "offline_weight": 0.5},
    {"model": "gru", "model_config": {"hidden": 8, "heteroscedastic": True}, "dtype": "float64",
     "epochs": 2, "batch_size": 3, "online_steps": 2, "updates_per_epoch": 2},
]
UNEVEN = TINY | {"batch_size": 11}      # 12 training samples: batches of 11 and 1


def _env(**extra):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", **extra)
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    root = str(HERE.parents[1])
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


def _torchrun(*args, cwd=None, timeout=240):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           *map(str, args)]
    done = subprocess.run(cmd, env=_env(), cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return done


def _worker():
    spec = importlib.util.spec_from_file_location("_ddp_worker", WORKER)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _one_process(data, results, configs, **kw):
    """Train ``configs`` in this process (world size 1) as the DDP tests' reference; the
    worker sets one torch thread, restored afterwards."""
    threads = torch.get_num_threads()
    try:
        _worker().run(data, results, configs, **kw)
    finally:
        torch.set_num_threads(threads)
    return results


def _max_diff(a, b):
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


@pytest.fixture(scope="module")
def two(kinematic_traj, tmp_path_factory):
    """Every config (and the uneven one) trained by two processes in one torchrun launch."""
    res = tmp_path_factory.mktemp("ddp_two")
    _torchrun(WORKER, kinematic_traj, res, json.dumps(CONFIGS + [UNEVEN]), "--write",
              "--primitives")
    return res


@pytest.fixture(scope="module")
def one(kinematic_traj, tmp_path_factory):
    """The same configs in this process (no torchrun: world size 1)."""
    return _one_process(kinematic_traj, tmp_path_factory.mktemp("ddp_one"), CONFIGS + [UNEVEN])


# ------------------------------------------------------------------ Distributed alone
def test_inactive_outside_torchrun(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    d = Distributed(torch.device("cpu"))
    model = torch.nn.Linear(2, 1)
    assert (d.active, d.rank, d.world, d.main) == (False, 0, 1, True)
    assert d.wrap(model) is model
    assert d.shard([3, 1, 2]) == [3, 1, 2] and d.split([3, 1, 2]) == ([3, 1, 2], 1.0)
    assert d.all_true(True) and not d.all_true(False)
    assert d.average({"loss": 0.25}, weight=0.5) == {"loss": 0.25}
    d.barrier()
    assert not torch.distributed.is_initialized()
    with pytest.raises(ArgumentError, match="idx=.*at least one sample"):
        d.split([])


@pytest.mark.parametrize("env, match", [({"WORLD_SIZE": "two"}, "WORLD_SIZE='two'"),
                                        ({"WORLD_SIZE": "2", "RANK": "2"}, "RANK=2")])
def test_bad_environment_is_refused_before_joining(monkeypatch, env, match):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ArgumentError, match=match):
        Distributed(torch.device("cpu"))
    assert not torch.distributed.is_initialized()


@pytest.mark.parametrize("n, world", [(7, 2), (3, 2), (1, 2), (5, 3), (2, 4)])
def test_split_partitions_the_batch_and_weights_sum_to_the_world(n, world):
    idx = list(range(100, 100 + n))
    d = Distributed(torch.device("cpu"))
    d.active, d.world = True, world                  # as rank r of `world` would see it
    parts, weights = [], []
    for r in range(world):
        d.rank = r
        local, w = d.split(idx)
        assert local                                # every rank runs forward and backward
        parts += d.shard(idx)
        weights.append(w)
        assert w == len(d.shard(idx)) * world / n
    assert sorted(parts) == idx                     # the slices partition the batch
    assert sum(weights) == pytest.approx(world)     # Σ n_r R / n = R: DDP's mean is Σ n_r/n
    assert weights.count(0.0) == max(world - n, 0)  # ranks beyond n add a zero-weight sample


def test_primitives_under_torchrun(two):
    """Collectives agree across ranks; DDP broadcasts rank 0's weights; weighted slices of
    even, uneven and one-sample batches give the full batch's gradient on both ranks."""
    p = [torch.load(two / f"primitives_rank{r}.pt") for r in (0, 1)]
    assert [q["rank"] for q in p] == [0, 1] and all(q["world"] == 2 and q["active"] for q in p)
    assert all(q["all_true_same"] and not q["all_true_one_false"] for q in p)
    assert all(q["average"]["loss"] == pytest.approx((1 * 1 + 2 * 2) / 3, rel=1e-15) for q in p)
    assert _max_diff(p[0]["initial"], p[1]["initial"]) == 0.0
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(7, 3, generator=gen, dtype=torch.float64)
    y = torch.randn(7, 2, generator=gen, dtype=torch.float64)
    model = torch.nn.Linear(3, 2, dtype=torch.float64)
    model.load_state_dict(p[0]["initial"])
    for g0, g1 in zip(p[0]["grads"], p[1]["grads"]):
        batch = g0["batch"]
        assert sorted(g0["local"] + g1["local"]) == sorted(batch) or len(batch) == 1
        model.zero_grad()
        ((model(x[batch]) - y[batch]) ** 2).mean().backward()
        for a, b, want in zip(g0["grad"], g1["grad"], [q.grad for q in model.parameters()]):
            assert torch.equal(a, b)
            assert float((a - want).abs().max()) < 1e-14


# ------------------------------------------------------------------ the trainer under torchrun
@pytest.mark.parametrize("i", range(len(CONFIGS)),
                         ids=["offline", "updates_per_epoch", "online_checkpointed",
                              "online_gru_heteroscedastic"])
def test_two_processes_equal_one_with_the_same_global_batch(two, one, i):
    r0, r1 = (torch.load(two / f"run{i}_rank{r}.pt") for r in (0, 1))
    ref = torch.load(one / f"run{i}_rank0.pt")
    assert r0["world"] == 2 and ref["world"] == 1
    assert r0["updates"] == r1["updates"] == ref["updates"] > 0
    for key in ("model", "eval"):
        assert _max_diff(r0[key], r1[key]) == 0.0, key          # identical on both ranks
        assert _max_diff(r0[key], ref[key]) < TOL, key          # = one process
    # training moved the weights well beyond the tolerance (the check has teeth)
    assert _max_diff(ref["model"], ref["initial"]) > 1e3 * TOL


def test_only_rank_0_writes(two):
    for i in range(len(CONFIGS) + 1):
        assert (two / f"out{i}_rank0" / "model.pt").is_file()
        assert (two / f"out{i}_rank0" / "metrics.csv").is_file()
        assert not [p.name for p in (two / f"out{i}_rank1").iterdir()
                    if p.name in ("model.pt", "metrics.csv", "config.json", "checkpoint.pt")]


def test_uneven_last_batch_equals_one_process(two, one):
    i = len(CONFIGS)
    r0, ref = torch.load(two / f"run{i}_rank0.pt"), torch.load(one / f"run{i}_rank0.pt")
    assert r0["updates"] == ref["updates"]
    assert _max_diff(r0["model"], ref["model"]) < TOL


def test_logged_losses_are_the_whole_batch(two, one):
    for i in range(len(CONFIGS)):
        r0, r1 = (torch.load(two / f"run{i}_rank{r}.pt") for r in (0, 1))
        ref = torch.load(one / f"run{i}_rank0.pt")
        assert r0["train_loss"] == pytest.approx(ref["train_loss"], rel=1e-10, abs=0)
        assert r0["train_loss"] == r1["train_loss"]


def _cli_has_train() -> bool:
    import meshclosure.cli

    return "add_train_parser" in Path(meshclosure.cli.__file__).read_text()


@pytest.mark.skipif(not _cli_has_train(), reason="`meshclosure train` is not on the CLI yet")
def test_torchrun_meshclosure_train_equals_one_process(kinematic_traj, tmp_path):
    """``torchrun --nproc_per_node=2 -m meshclosure train ...`` (exactly the documented
    command line) writes one model.pt, equal to one process's ``train`` with that batch."""
    from meshclosure.data.store import mesh_from_dataset
    from meshclosure.data import read_dataset
    from meshclosure.nn import load_model
    from meshclosure.train import train

    settings = {"model_config": {"hidden": 16, "n_blocks": 1}, "dtype": "float64"}
    out = tmp_path / "two"
    _torchrun("-m", "meshclosure", "train", "--data", kinematic_traj, "--model", "mgn",
              "--out", out, "--epochs", "2", "--batch-size", "4", "--seed", "3",
              "--config", json.dumps(settings), cwd=tmp_path)
    assert sorted(p.name for p in out.iterdir() if p.suffix in (".pt", ".csv", ".json")) == \
        ["checkpoint.pt", "config.json", "metrics.csv", "model.pt"]
    ref = train(kinematic_traj, tmp_path / "one", settings | {"model": "mgn", "epochs": 2,
                                                              "batch_size": 4, "seed": 3},
                progress=False)
    mesh = mesh_from_dataset(read_dataset(kinematic_traj))
    got = load_model(out / "model.pt", mesh).model
    want = load_model(tmp_path / "one" / "model.pt", mesh).model
    assert _max_diff(got.state_dict(), want.state_dict()) < TOL
    assert _max_diff(got.state_dict(), ref.model.state_dict()) < TOL
    with open(out / "metrics.csv") as f:
        assert len(f.read().strip().splitlines()) == 3           # header + 2 epochs
