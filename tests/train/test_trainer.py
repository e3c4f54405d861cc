"""The trainer: it learns a known closure, is seeded and reproducible, resumes bit-identically,
writes its files atomically, and refuses unsafe or mismatched checkpoints."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from meshclosure.data import read_dataset
from meshclosure.data.store import mesh_from_dataset
from meshclosure.errors import ArgumentError, OutputExistsError
from meshclosure.mesh import cartesian
from meshclosure.nn import load_model
from meshclosure.nn.checkpoint import CheckpointError
from meshclosure.train import TrainConfig, Trainer, face_gradient, train
from meshclosure.train.checkpoint import load_training_checkpoint, save_training_checkpoint
from meshclosure.train.data import TrainingData as _Data

K_TRUE = 0.02
SMALL = {"model": "mgn", "model_config": {"hidden": 16, "n_blocks": 1}, "batch_size": 4}


@pytest.fixture(scope="module")
def diffusive(kinematic_traj):
    """The kinematic dataset with its subgrid flux replaced by a known down-gradient flux
    ``Φ = K G(Q)`` (and ``s = −div Φ``): a closure the trainer must find."""
    ds = read_dataset(kinematic_traj).load()
    mesh = mesh_from_dataset(ds)
    q = torch.as_tensor(np.nan_to_num(ds["state_q"].values))            # (run, time, n_cells)
    flux = K_TRUE * face_gradient(mesh, q.permute(2, 0, 1))             # (n_faces, run, time)
    n_int = int(ds.attrs["n_interior_edge"])
    new = ds["sgs_flux_q"].values.copy()
    new[..., :n_int] = flux.permute(1, 2, 0).numpy()
    ds["sgs_flux_q"].values = new
    from meshclosure.fv import divergence
    s = -divergence(mesh, flux.reshape(mesh.n_faces, -1)).reshape(mesh.n_cells, *q.shape[:2])
    ds["sgs_tendency_q"].values = s.permute(1, 2, 0).numpy()
    for name in ("normalization", "static_sha256"):
        ds.attrs.pop(name, None)
    return ds.drop_vars([v for v in ("sample_checksum",) if v in ds])


def _weights(model):
    return torch.cat([p.detach().reshape(-1).double() for p in model.state_dict().values()])


def test_learns_a_known_diffusive_closure(diffusive):
    res = train(diffusive, None, SMALL | {"epochs": 40, "lr": 3e-3}, progress=False)
    first, last = res.metrics[0], res.metrics[-1]
    assert last["val_flux_r2"] > 0.9 > first["val_flux_r2"]
    assert last["train_flux"] < 0.1 * first["train_flux"]
    # the closure in physical units reproduces K G on a validation state
    d = _Data(diffusive, TrainConfig(), torch.float32)
    r, k = d.val.indices[0]
    state = {"q": torch.as_tensor(diffusive["state_q"].values[r, k])}
    phi = res.closure(0.0, state, d.mesh)["q"].detach()
    want = K_TRUE * face_gradient(d.mesh, state["q"])
    assert float(((phi - want) ** 2).mean() / (want ** 2).mean()) < 0.1


def test_seeded_runs_are_identical_and_seeds_differ(kinematic_traj):
    cfg = SMALL | {"epochs": 2}
    a = train(kinematic_traj, None, cfg, progress=False)
    b = train(kinematic_traj, None, cfg, progress=False)
    c = train(kinematic_traj, None, cfg | {"seed": 1}, progress=False)
    assert torch.equal(_weights(a.model), _weights(b.model))
    assert not torch.equal(_weights(a.model), _weights(c.model))
    assert [r["train_loss"] for r in a.metrics] == [r["train_loss"] for r in b.metrics]


def test_interrupted_run_resumes_bit_identical(kinematic_traj, tmp_path, monkeypatch):
    cfg = SMALL | {"epochs": 4, "schedule": "cosine"}
    full = train(kinematic_traj, tmp_path / "full", cfg, progress=False)
    calls = {"n": 0}
    real = Trainer.run_epoch

    def interrupted(self):
        if calls["n"] == 2:
            raise KeyboardInterrupt
        calls["n"] += 1
        return real(self)

    monkeypatch.setattr(Trainer, "run_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(kinematic_traj, tmp_path / "part", cfg, progress=False)
    assert not (tmp_path / "part" / "model.pt").exists()       # only the checkpoint so far
    assert load_training_checkpoint(tmp_path / "part" / "checkpoint.pt")["epoch"] == 1
    monkeypatch.setattr(Trainer, "run_epoch", real)
    again = train(kinematic_traj, tmp_path / "part", cfg, progress=False)
    assert torch.equal(_weights(full.model), _weights(again.model))
    strip = lambda rows: [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]  # noqa
    assert strip(full.metrics) == strip(again.metrics)
    mesh = mesh_from_dataset(read_dataset(kinematic_traj))
    a = load_model(tmp_path / "full" / "model.pt", mesh).model
    b = load_model(tmp_path / "part" / "model.pt", mesh).model
    assert torch.equal(_weights(a), _weights(b))


def test_files_written(kinematic_traj, tmp_path):
    out = tmp_path / "run"
    res = train(kinematic_traj, out, SMALL | {"epochs": 2}, progress=False)
    assert TrainConfig.from_dict(json.loads((out / "config.json").read_text())) == \
        TrainConfig.from_dict(SMALL | {"epochs": 2})
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    assert float(rows[-1]["val_loss"]) == pytest.approx(res.metrics[-1]["val_loss"], rel=1e-12)
    loaded = load_model(out / "model.pt", res.features and mesh_from_dataset(
        read_dataset(kinematic_traj)))
    assert torch.equal(_weights(loaded.model), _weights(res.model))
    assert not list(out.glob("*.tmp*"))                        # no temporary files left
    # a finished run is not silently mixed with another one
    with pytest.raises(OutputExistsError, match="overwrite"):
        train(kinematic_traj, out, SMALL | {"epochs": 2}, resume=False, progress=False)
    with pytest.raises(ArgumentError, match="lr"):             # resume with other settings
        train(kinematic_traj, out, SMALL | {"epochs": 2, "lr": 0.5}, progress=False)


def test_empty_member_folder_does_not_block_a_rerun(kinematic_traj, tmp_path):
    """An ensemble interrupted before its first checkpoint leaves empty member folders:
    a rerun proceeds; a member folder with run files still counts as an earlier run."""
    out = tmp_path / "ens"
    (out / "member_00").mkdir(parents=True)
    res = train(kinematic_traj, out, SMALL | {"epochs": 1, "ensemble": 2}, resume=True,
                progress=False)
    assert len(res.members) == 2 and (out / "member_00" / "model.pt").is_file()
    other = tmp_path / "other"
    (other / "member_00").mkdir(parents=True)
    (other / "member_00" / "metrics.csv").write_text("epoch\n0\n")
    with pytest.raises(OutputExistsError, match="member_00"):
        train(kinematic_traj, other, SMALL | {"epochs": 1, "ensemble": 2}, progress=False)


def test_only_rank_zero_prepares_the_output_folder(kinematic_traj, tmp_path, monkeypatch):
    """Under torchrun a rank != 0 neither deletes an earlier run (overwrite) nor writes."""
    import meshclosure.train.trainer as trainer_module

    calls = []

    class Rank1(trainer_module.Distributed):
        def __init__(self, device):
            super().__init__(device)
            self.rank = 1

        def barrier(self):
            calls.append("barrier")

    monkeypatch.setattr(trainer_module, "Distributed", Rank1)
    out = tmp_path / "run"
    out.mkdir()
    (out / "model.pt").write_text("the earlier run")
    train(kinematic_traj, out, SMALL | {"epochs": 1}, overwrite=True, progress=False)
    assert (out / "model.pt").read_text() == "the earlier run"
    assert sorted(p.name for p in out.iterdir()) == ["model.pt"]
    assert calls and calls[0] == "barrier"            # waits for rank 0's preparation


def test_ema_is_the_evaluated_model(kinematic_traj):
    ema = train(kinematic_traj, None, SMALL | {"epochs": 2, "ema_decay": 0.9}, progress=False)
    raw = train(kinematic_traj, None, SMALL | {"epochs": 2, "ema_decay": 0.0}, progress=False)
    # same seed and data: the raw weights are the same, the EMA is a different (averaged) model
    assert not torch.equal(_weights(ema.model), _weights(raw.model))
    assert ema.metrics[0]["train_loss"] == raw.metrics[0]["train_loss"]


def test_early_stopping_and_heteroscedastic_head(kinematic_traj):
    res = train(kinematic_traj, None, SMALL | {"epochs": 30, "lr": 1e-9, "patience": 2,
                                                "ema_decay": 0.0}, progress=False)
    assert len(res.metrics) < 30 and res.metrics[-1].get("stopped_early") == 1
    het = train(kinematic_traj, None, SMALL | {
        "epochs": 3, "model_config": {"hidden": 16, "n_blocks": 1, "heteroscedastic": True}},
        progress=False)
    assert all(np.isfinite(r["train_loss"]) for r in het.metrics)
    mean, log_var = het.closure.predict(0.0, {"q": torch.zeros(64, dtype=torch.float64)},
                                        mesh_from_dataset(read_dataset(kinematic_traj)))
    assert log_var is not None and torch.isfinite(log_var).all()


def test_ensemble_members_and_bootstrap(kinematic_traj, tmp_path):
    res = train(kinematic_traj, tmp_path / "ens", SMALL | {"epochs": 1, "ensemble": 2,
                                                             "bootstrap": True}, progress=False)
    assert len(res.members) == 2
    listing = json.loads((tmp_path / "ens" / "ensemble.json").read_text())
    assert listing["members"] == ["member_00/model.pt", "member_01/model.pt"]
    assert not torch.equal(_weights(res.members[0].model), _weights(res.members[1].model))
    rows = list(csv.DictReader((tmp_path / "ens" / "metrics.csv").open()))
    assert sorted({r["member"] for r in rows}) == ["0", "1"]


def test_checkpoint_safety(tmp_path):
    mesh, other = cartesian(4, 4), cartesian(6, 6)
    good = tmp_path / "good.pt"
    save_training_checkpoint(good, {"mesh_signature": json.dumps(mesh.signature()),
                                    "w": torch.ones(3)})
    assert torch.equal(load_training_checkpoint(good, mesh)["w"], torch.ones(3))
    with pytest.raises(CheckpointError, match="another mesh"):
        load_training_checkpoint(good, other)
    evil = tmp_path / "evil.pt"
    torch.save({"format": "meshclosure-training", "version": 1, "x": _Pickled()}, evil)
    with pytest.raises(CheckpointError, match="Python objects"):
        load_training_checkpoint(evil)
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_training_checkpoint(tmp_path / "garbage.pt")


class _Pickled:
    """An arbitrary Python object: loading it would need unpickling code."""


def test_config_errors_name_the_setting():
    with pytest.raises(ArgumentError, match="batch_size=0"):
        TrainConfig(batch_size=0)
    with pytest.raises(ArgumentError, match="curriculum"):
        TrainConfig(curriculum=[[0, 0]])
    with pytest.raises(ArgumentError, match="weak_form_degree=2.*weak_form_weight"):
        TrainConfig(weak_form_degree=2)
    with pytest.raises(ArgumentError, match="bootstrap=True.*ensemble"):
        TrainConfig(bootstrap=True)
    assert TrainConfig(weak_form_degree=2, weak_form_weight=0.1).weak_form_degree == 2
    cfg = TrainConfig(online_steps=2, online_start=3, curriculum=[[5, 4], [8, 6]])
    assert [cfg.steps_at(e) for e in (0, 3, 5, 9)] == [0, 2, 4, 6] and cfg.max_steps == 6


def test_step_mean_target_and_float32_online(kinematic_traj):
    """The step-mean target reads Φ̄ from the windows; a float32 network trains online
    through the float64 coarse model."""
    res = train(kinematic_traj, None, SMALL | {"epochs": 2, "target": "step_mean",
                                                "online_steps": 2, "online_start": 1,
                                                "offline_weight": 0.5}, progress=False)
    assert [r["rollout_steps"] for r in res.metrics] == [0, 2]
    assert np.isfinite(res.metrics[-1]["train_online"])
    assert next(res.model.parameters()).dtype == torch.float32
    # offline on the step mean: the validation targets are Φ̄ / flux_scale
    d = _Data(kinematic_traj, TrainConfig(target="step_mean"), torch.float32)
    b = d.batch(d.val, [0], "step_mean")
    w = d.val[0]
    want = w["flux_mean"]["q"][0] / d.stats.flux_scale[0]
    assert torch.allclose(b["y"][0, :, 0].double(), want, rtol=1e-12, atol=0)


def test_tendency_and_dissipation_terms_are_order_one(kinematic_traj):
    """Tendency and dissipation terms are measured in the training data's own units, so a
    weight of 1 is comparable with the flux loss (an untrained model gives O(1) values)."""
    res = train(kinematic_traj, None, SMALL | {"epochs": 1, "tendency_weight": 1.0,
                                                "dissipation_weight": 1.0}, progress=False)
    row = res.metrics[0]
    assert 0.1 < row["train_tendency"] < 10
    assert 0 <= row["train_dissipation"] < 10


def test_load_ensemble(kinematic_traj, tmp_path):
    from meshclosure.train import EnsembleClosure, load_ensemble

    train(kinematic_traj, tmp_path / "ens", SMALL | {"epochs": 1, "ensemble": 2,
                                                     "dtype": "float64"}, progress=False)
    mesh = mesh_from_dataset(read_dataset(kinematic_traj))
    ens = load_ensemble(tmp_path / "ens", mesh)
    assert isinstance(ens, EnsembleClosure)
    state = {"q": torch.linspace(0, 1, mesh.n_cells, dtype=torch.float64)}
    means, _ = ens.predict(0.0, state, mesh)
    flux = ens(0.0, state, mesh)["q"]
    assert torch.allclose(flux, means.mean(0)[..., 0], rtol=1e-12, atol=1e-15)
    with pytest.raises(ArgumentError, match="ensemble.json"):
        load_ensemble(tmp_path, mesh)
