"""The trainer's online path: the rollout length switches on and follows the curriculum, a
non-finite rollout or gradient skips the update and keeps the last good weights exactly, and
online training lowers the online loss.

All on the session's small kinematic trajectory dataset (8x8 coarse Cartesian cells,
``tests/train/conftest.py``), one tiny ``mgn`` (hidden 8, one block).
"""
from __future__ import annotations

import math

import pytest
import torch

from meshclosure.closures import ModelClosure
from meshclosure.errors import ArgumentError
from meshclosure.train import TrainConfig, Trainer, train
from meshclosure.train.online import online_loss

TINY = {"model": "mgn", "model_config": {"hidden": 8, "n_blocks": 1}, "batch_size": 2,
        "dtype": "float64"}


def _weights(model):
    return torch.cat([p.detach().reshape(-1).double() for p in model.state_dict().values()])


def _adam_steps(opt):
    return sorted(float(s["step"]) for s in opt.state_dict()["state"].values())


@pytest.mark.parametrize("dtype", ["float64", "float32"])   # float32 nets, float64 states
def test_online_switches_on_at_online_start(kinematic_traj, dtype):
    res = train(kinematic_traj, None, TINY | {"epochs": 2, "updates_per_epoch": 2,
                                               "online_steps": 2, "online_start": 1,
                                               "dtype": dtype}, progress=False)
    rows = res.metrics
    assert [r["rollout_steps"] for r in rows] == [0, 2]
    assert rows[0]["train_online"] == "" and rows[0]["val_online"] == ""   # offline epoch
    assert math.isfinite(rows[1]["train_online"]) and rows[1]["train_online"] > 0
    # (the fixture's validation block is shorter than K + 1 states: no val_online)
    # equal budgets: updates_per_epoch counts optimiser updates in both phases
    assert [r["updates"] for r in rows] == [2, 4]
    assert all(r["skipped_updates"] == 0 for r in rows)
    # the online epoch's loss is the online term alone (offline_weight 0)
    assert rows[1]["train_loss"] == pytest.approx(rows[1]["train_online"], rel=1e-12)


def test_cosine_schedule_ends_at_the_minimum_in_an_online_run(kinematic_traj):
    """T_max counts the updates actually planned (offline batches, then online windows):
    the last update of the run ends at lr · min_lr_factor."""
    cfg = TINY | {"epochs": 3, "online_steps": 2, "online_start": 1, "curriculum": [[2, 3]],
                  "schedule": "cosine", "lr": 1e-3, "min_lr_factor": 0.1}
    res = train(kinematic_traj, None, cfg, progress=False)
    assert [r["rollout_steps"] for r in res.metrics] == [0, 2, 3]
    assert res.metrics[-1]["lr"] == pytest.approx(1e-4, rel=0, abs=1e-12)
    assert res.metrics[0]["lr"] > res.metrics[1]["lr"] > res.metrics[-1]["lr"]


def test_plateau_count_restarts_at_each_curriculum_phase(kinematic_traj):
    cfg = TINY | {"epochs": 2, "updates_per_epoch": 1, "online_steps": 1, "online_start": 1,
                  "schedule": "plateau", "plateau_patience": 10, "lr": 1e-9}
    t = Trainer(kinematic_traj, TrainConfig.from_dict(cfg), None, progress=False)
    t.run_epoch()
    t.epoch += 1
    t.sched.best, t.sched.num_bad_epochs = -math.inf, 5   # the offline phase had stalled
    row = t.run_epoch()
    assert row["rollout_steps"] == 1 and row["val_online"] != ""
    assert t.sched.num_bad_epochs == 0 and math.isfinite(t.sched.best)


def test_curriculum_sets_the_rollout_length(kinematic_traj):
    cfg = TINY | {"epochs": 4, "updates_per_epoch": 1, "online_steps": 1, "online_start": 1,
                  "curriculum": [[2, 2], [3, 4]]}
    res = train(kinematic_traj, None, cfg, progress=False)
    assert [r["rollout_steps"] for r in res.metrics] == [0, 1, 2, 4]
    assert all(math.isfinite(r["train_online"]) for r in res.metrics[1:])


def test_mixed_offline_weight_adds_the_offline_terms(kinematic_traj):
    res = train(kinematic_traj, None, TINY | {"epochs": 1, "updates_per_epoch": 2,
                                               "online_steps": 2, "offline_weight": 0.5},
                progress=False)
    row = res.metrics[0]
    assert row["train_flux"] > 0
    assert row["train_loss"] == pytest.approx(row["train_online"] + row["train_flux"],
                                              rel=1e-10)


def test_longer_rollout_than_the_training_windows_is_refused(kinematic_traj):
    with pytest.raises(ArgumentError, match="online_steps"):
        train(kinematic_traj, None, TINY | {"epochs": 1, "online_steps": 500}, progress=False)


def _record_updates(trainer, monkeypatch):
    """Wrap ``trainer._update`` to record (weights before, weights after, Adam steps before,
    after, accepted) for every update."""
    log = []
    real = trainer._update

    def recorded(idx, steps):
        before, s0 = _weights(trainer.model), _adam_steps(trainer.opt)
        res = real(idx, steps)
        log.append((before, _weights(trainer.model), s0, _adam_steps(trainer.opt),
                    res is not None))
        return res

    monkeypatch.setattr(trainer, "_update", recorded)
    return log


@pytest.mark.parametrize("failure,grad_clip", [("inf_flux", 1.0), ("nan_gradient", 1.0),
                                               ("nan_gradient", 0.0)])
def test_non_finite_update_is_skipped_and_weights_kept(kinematic_traj, monkeypatch, failure,
                                                       grad_clip):
    """After ``good`` forward calls the model turns bad: either its flux becomes infinite (the
    rollout goes non-finite: the loss is not finite, nothing is stepped) or its flux stays
    finite but its gradient is NaN (caught by the clipping norm; without clipping Adam steps
    to NaN weights and the snapshot is restored). Every bad update leaves the weights and
    the optimiser exactly as they were."""
    cfg = TrainConfig(**TINY, epochs=1, updates_per_epoch=4, online_steps=2, ema_decay=0.0,
                      grad_clip=grad_clip)
    tr = Trainer(kinematic_traj, cfg, None, progress=False)
    log = _record_updates(tr, monkeypatch)
    model, real_forward = tr.model, tr.model.forward
    # one update = 2 windows x 2 steps x 3 stages forward calls; turn bad in the 2nd update
    calls, good = {"n": 0}, 2 * 2 * 3 + 5

    def bad_forward(mesh, x):
        out = real_forward(mesh, x)
        calls["n"] += 1
        if calls["n"] <= good:
            return out
        if failure == "inf_flux":
            return out * float("inf")
        p = next(model.parameters())
        return out + 0.0 * torch.sqrt(0.0 * p.sum())     # value unchanged, d/dp is NaN

    monkeypatch.setattr(model, "forward", bad_forward)
    row = tr.run_epoch()
    accepted = [ok for *_, ok in log]
    assert accepted == [True, False, False, False]
    assert row["skipped_updates"] == 3 and tr.updates == 1
    w_first_before, w_first_after, *_ = log[0]
    assert not torch.equal(w_first_before, w_first_after)          # the good update moved
    for before, after, s0, s1, ok in log[1:]:                        # the bad ones did not
        assert torch.equal(before, after) and torch.equal(after, w_first_after)
        assert s0 == s1 == [1.0] * len(s0)
    assert bool(torch.isfinite(_weights(tr.model)).all())
    # the epoch's training loss averages the accepted update only
    assert math.isfinite(row["train_online"])


def test_all_updates_non_finite_keeps_the_initial_weights(kinematic_traj, monkeypatch):
    cfg = TrainConfig(**TINY, epochs=1, updates_per_epoch=2, online_steps=2, ema_decay=0.0)
    tr = Trainer(kinematic_traj, cfg, None, progress=False)
    w0 = _weights(tr.model)
    real_forward = tr.model.forward
    monkeypatch.setattr(tr.model, "forward", lambda mesh, x: real_forward(mesh, x) * math.inf)
    row = tr.run_epoch()
    assert row["skipped_updates"] == 2 and tr.updates == 0
    assert torch.equal(_weights(tr.model), w0)
    assert row["train_online"] == ""                                # nothing to average


def test_online_training_lowers_the_online_loss(kinematic_traj):
    """A few epochs of online training lower the K = 3 online loss on the training windows
    (same windows before and after, the last weights, no EMA)."""
    cfg = TINY | {"epochs": 8, "updates_per_epoch": 4, "online_steps": 3, "lr": 3e-3,
                  "schedule": "constant", "ema_decay": 0.0}
    tr = Trainer(kinematic_traj, TrainConfig(**cfg), None, progress=False)
    d = tr.data
    windows = d.online_train.collate([d.online_train[i] for i in range(len(d.online_train))])

    def loss_now(model):
        closure = ModelClosure(model, tr.features, tr.normalizer, d.variables)
        with torch.no_grad():
            loss, info = online_loss(d.scenario, closure, windows, 3, state_scale=d.state_scale)
        assert info["finite"]
        return float(loss)

    before = loss_now(tr.model)
    for tr.epoch in range(cfg["epochs"]):            # fit() would reload the best epoch
        tr.run_epoch()
    after = loss_now(tr.model)
    train_online = [r["train_online"] for r in tr.metrics]
    assert all(math.isfinite(v) for v in train_online)
    assert sum(train_online[-2:]) < 0.9 * sum(train_online[:2])
    assert after < 0.9 * before
