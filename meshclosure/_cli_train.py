"""``meshclosure train``: the training subcommand (kept apart from :mod:`meshclosure.cli`,
which registers it).

``meshclosure train --data FILE --model NAME --out DIR [--epochs --batch-size --lr --seed
--online K --ensemble M --config JSON]`` runs :func:`meshclosure.train.train` and writes
``DIR/model.pt``, ``DIR/metrics.csv`` and ``DIR/config.json`` (and ``DIR/checkpoint.pt``,
from which a rerun of the same command resumes). Under ``torchrun --nproc_per_node=N -m
meshclosure train ...`` it trains with DistributedDataParallel; only rank 0 writes.
Settings come from ``--config`` (a JSON file or JSON text of
:class:`~meshclosure.train.TrainConfig` settings), then the flags given on the command line
override them.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Dict

from .errors import ArgumentError

__all__ = ["TRAIN_FLAGS", "add_train_parser"]

log = logging.getLogger("meshclosure.cli")

#: Python parameters / :class:`~meshclosure.train.TrainConfig` settings -> ``train`` flags.
TRAIN_FLAGS = {"data": "--data", "model": "--model", "out": "--out", "epochs": "--epochs",
               "batch_size": "--batch-size", "lr": "--lr", "seed": "--seed",
               "online_steps": "--online", "ensemble": "--ensemble", "config": "--config",
               "overwrite": "--overwrite", "resume": "--no-resume", "dtype": "--dtype",
               "bootstrap": "--bootstrap", "device": "--device"}

#: Flags that set a TrainConfig setting directly: flag attribute -> setting.
_SETTINGS = {"model": "model", "epochs": "epochs", "batch_size": "batch_size", "lr": "lr",
             "seed": "seed", "online": "online_steps", "ensemble": "ensemble",
             "dtype": "dtype", "device": "device"}


def _read_config(text: str) -> Dict[str, Any]:
    """``--config``: a JSON file or JSON text -> dict."""
    path = Path(text)
    if text.lstrip().startswith("{"):
        raw = text
    else:
        try:
            raw = path.read_text()
        except OSError as err:
            raise ArgumentError("config", text, f"is neither JSON text nor a readable file "
                                f"({err.strerror})", "pass a .json file or JSON text") from None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ArgumentError("config", text, f"must be a JSON file or JSON text ({err.msg} at "
                            f"position {err.pos})", "pass e.g. {config}='{\"hidden\": 32}' "
                            "or a .json file") from None
    if not isinstance(value, dict):
        raise ArgumentError("config", text, "must hold a JSON object of training settings",
                            "pass e.g. {config}='{\"epochs\": 10}'")
    return value


def _cmd_train(args: argparse.Namespace) -> int:
    from .train import TrainConfig, train

    data = Path(args.data)
    if not data.exists():
        raise ArgumentError("data", str(data), "must be an existing dataset (.nc file or .zarr "
                            "folder)", "write one with `meshclosure generate --out FILE` first")
    settings = _read_config(args.config) if args.config else {}
    model_keys = {"hidden", "n_blocks", "heteroscedastic", "head"}
    if model_keys & set(settings):          # model settings given at the top level
        settings["model_config"] = {**settings.get("model_config", {}),
                                    **{k: settings.pop(k) for k in model_keys & set(settings)}}
    for flag, name in _SETTINGS.items():
        value = getattr(args, flag)
        if value is not None:
            settings[name] = value
    if args.bootstrap:
        settings["bootstrap"] = True
    cfg = TrainConfig.from_dict(settings)
    from .train.distributed import shutdown

    try:
        res = train(str(data), args.out, cfg, resume=not args.no_resume,
                    overwrite=args.overwrite, progress=not args.quiet)
    finally:
        shutdown()                           # leave the process group (under torchrun)
    if int(os.environ.get("RANK", "0")) == 0:
        last = res.metrics[-1] if res.metrics else {}
        kind, r2 = _val_r2(last)
        log.info("trained %s on %s: %d epochs, best epoch %d, val loss %s, val %s R2 %s; "
                 "wrote %s", cfg.model, data.name, len(res.metrics), res.best_epoch,
                 _fmt(last.get("val_loss")), kind, _fmt(r2), Path(args.out) / "model.pt")
    return 0


def _val_r2(row: Dict[str, Any]) -> tuple:
    """``(kind, value)`` of the last epoch's validation R²: the face flux's
    (``val_flux_r2``), or for a cell-tendency model (``nodewise``), which has no flux, the
    tendency's (``val_tendency_r2``); ``("flux", None)`` when neither was measured.

    >>> _val_r2({"val_flux_r2": 0.5}), _val_r2({"val_flux_r2": "", "val_tendency_r2": 0.25})
    (('flux', 0.5), ('tendency', 0.25))
    >>> _val_r2({})
    ('flux', None)
    """
    for kind in ("flux", "tendency"):
        value = row.get(f"val_{kind}_r2")
        if value is not None and value != "":
            return kind, value
    return "flux", None


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else "n/a"


def add_train_parser(sub: Any, common: argparse.ArgumentParser,
                     integer: Callable[[str], Callable[[str], int]]) -> None:
    """Register ``train`` on the subparsers ``sub`` of the main parser."""
    p = sub.add_parser(
        "train", parents=[common], help="train a closure on a dataset (offline, online, "
        "ensembles; resumable; torchrun for several processes)",
        description="Train a registered model (meshclosure.nn.list_models) on a dataset from "
        "`meshclosure generate`: Adam with a cosine schedule, gradient clipping, EMA weights, "
        "early stopping on the validation split; --online K unrolls the coarse model K steps "
        "through the solver (a trajectory dataset). Writes DIR/model.pt, DIR/metrics.csv, "
        "DIR/config.json and DIR/checkpoint.pt; rerunning the same command resumes. "
        "`torchrun --nproc_per_node=N -m meshclosure train ...` trains with "
        "DistributedDataParallel (gloo on CPU, nccl on GPU).")
    p.add_argument("--data", required=True, metavar="FILE",
                   help="a dataset from `meshclosure generate` (.nc or .zarr)")
    p.add_argument("--model", default=None, help="registered model name (default: mgn)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--epochs", type=integer("--epochs"), default=None,
                   help="epochs (default: 20)")
    p.add_argument("--batch-size", type=integer("--batch-size"), default=None,
                   help="global batch size (default: 8)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: 1e-3)")
    p.add_argument("--seed", type=integer("--seed"), default=None, help="seed (default: 0)")
    p.add_argument("--online", type=integer("--online"), default=None, metavar="K",
                   help="online training: unroll the coarse model K steps (trajectory data)")
    p.add_argument("--ensemble", type=integer("--ensemble"), default=None, metavar="M",
                   help="train M members (seeds spawned from --seed) into DIR/member_<k>/")
    p.add_argument("--bootstrap", action="store_true",
                   help="with --ensemble: each member on a bootstrap resample")
    p.add_argument("--dtype", choices=("float32", "float64"), default=None,
                   help="model dtype (default: float32)")
    p.add_argument("--device", default=None, help="cpu or cuda[:i] (default: cpu)")
    p.add_argument("--config", default=None, metavar="JSON",
                   help="training settings (meshclosure.train.TrainConfig) as a JSON file or "
                   "text; the flags above override it")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier run's results in DIR")
    p.add_argument("--no-resume", action="store_true",
                   help="do not resume from DIR/checkpoint.pt")
    p.set_defaults(func=_cmd_train, flags=TRAIN_FLAGS)
