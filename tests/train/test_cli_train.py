"""``meshclosure train``: writes model, metrics and config; resumes; errors name the flags;
the summary line reports the validation R² a model has (flux, or a tendency model's tendency)."""
from __future__ import annotations

import csv
import json

import torch

from meshclosure.cli import main
from meshclosure.data import read_dataset
from meshclosure.data.store import mesh_from_dataset
from meshclosure.nn import load_model
from meshclosure.train import TrainConfig, train


def test_train_command_writes_and_resumes(kinematic_traj, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["-q", "train", "--data", str(kinematic_traj), "--model", "mgn", "--out", str(out),
            "--epochs", "2", "--batch-size", "4", "--config",
            json.dumps({"model_config": {"hidden": 8, "n_blocks": 1}, "ema_decay": 0.9})]
    assert main(argv) == 0
    cfg = TrainConfig.from_dict(json.loads((out / "config.json").read_text()))
    assert (cfg.epochs, cfg.batch_size, cfg.ema_decay, cfg.model_config["hidden"]) == (
        2, 4, 0.9, 8)
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert len(rows) == 2
    mesh = mesh_from_dataset(read_dataset(kinematic_traj))
    first = load_model(out / "model.pt", mesh).model.state_dict()
    assert main(argv) == 0                                   # finished run: resumes, no change
    again = load_model(out / "model.pt", mesh).model.state_dict()
    assert all(torch.equal(first[k], again[k]) for k in first)
    # the same settings from Python give the same weights
    ref = train(kinematic_traj, None, cfg, progress=False).model.state_dict()
    assert all(torch.equal(first[k], ref[k]) for k in first)


def test_train_command_errors_name_the_flags(kinematic_traj, tmp_path, capsys):
    out = str(tmp_path / "x")
    assert main(["train", "--data", str(tmp_path / "none.nc"), "--out", out]) == 2
    assert "--data" in capsys.readouterr().err
    assert main(["train", "--data", str(kinematic_traj), "--out", out, "--config", "{bad"]) == 2
    assert "--config" in capsys.readouterr().err
    assert main(["train", "--data", str(kinematic_traj), "--out", out, "--batch-size", "0"]) == 2
    err = capsys.readouterr().err
    assert "--batch-size 0" in err and "integer >= 1" in err
    assert not (tmp_path / "x" / "model.pt").exists()


def test_train_summary_reports_a_tendency_models_r2(kinematic_traj, tmp_path, capsys):
    """``nodewise`` has no face flux: the summary line gives its validation tendency R²
    (the value in metrics.csv), not "flux R2 n/a" (a flux model's line keeps its flux R²:
    the doctest of ``meshclosure._cli_train._val_r2``)."""
    out = tmp_path / "nodewise"
    assert main(["train", "--data", str(kinematic_traj), "--model", "nodewise", "--out",
                 str(out), "--epochs", "1", "--batch-size", "8", "--config",
                 json.dumps({"model_config": {"hidden": 4, "n_blocks": 1}})]) == 0
    err = capsys.readouterr().err
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert rows[-1]["val_flux_r2"] == "" and rows[-1]["val_tendency_r2"] != ""
    r2 = float(rows[-1]["val_tendency_r2"])
    assert f"val tendency R2 {r2:.4g};" in err and "flux R2" not in err
