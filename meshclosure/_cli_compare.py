"""``meshclosure compare``: the architecture comparison as a command (registered by
:mod:`meshclosure.cli`).

``meshclosure compare --scenario kinematic --models mgn,cnn --meshes
cartesian:32,healpix:8 --seeds 3 --out DIR`` runs :func:`meshclosure.compare.compare`
and writes ``DIR/table.csv``, ``DIR/table.md`` and ``DIR/similarity.png``; a rerun
with the same flags resumes (finished cells are skipped), other flags in the same
``DIR`` are refused naming the flag.
"""
from __future__ import annotations

import argparse
import json
import logging
from typing import Any, Callable

from .errors import ArgumentError

__all__ = ["COMPARE_FLAGS", "add_compare_parser"]

log = logging.getLogger("meshclosure.cli")

#: Python parameters of :func:`~meshclosure.compare.compare` (and its ``train`` settings)
#: -> ``compare`` flags.
COMPARE_FLAGS = {"scenario": "--scenario", "models": "--models", "meshes": "--meshes",
                 "seeds": "--seeds", "out": "--out", "factor": "--factor",
                 "n_samples": "--samples", "ood_samples": "--ood", "epochs": "--epochs",
                 "updates_per_epoch": "--updates", "batch_size": "--batch-size", "lr": "--lr",
                 "target": "--target", "n_initial": "--initial", "n_steps": "--steps",
                 "audit_steps": "--audit-steps", "model_config": "--model-config",
                 "scenario_config": "--scenario-config",
                 "allow_unconverged": "--allow-unconverged", "rotation": "--rotation"}


def _json(flag: str, text: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise ArgumentError(flag, text, "must be a JSON object", "write e.g. "
                            "'{\"mgn\": {\"hidden\": 16}}'")
    return value


def _rotation(text):
    """``--rotation``: ``DEG`` (a tilt) or ``TILT,AZIMUTH`` (degrees); None when absent."""
    if text is None:
        return None
    try:
        parts = [float(p) for p in text.split(",")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2):
        raise ArgumentError("--rotation", text, "must be a tilt in degrees or TILT,AZIMUTH",
                            "write e.g. --rotation 30 or --rotation 30,90")
    return parts[0] if len(parts) == 1 else parts


def _cmd_compare(args: argparse.Namespace) -> int:
    from .compare import compare

    train = {"epochs": args.epochs, "updates_per_epoch": args.updates,
             "batch_size": args.batch_size, "lr": args.lr, "target": args.target}
    result = compare(args.scenario, args.models, args.meshes, args.seeds, out=args.out,
                     factor=args.factor, n_samples=args.samples, ood_samples=args.ood,
                     train=train, model_config=_json("--model-config", args.model_config),
                     scenario_config=_json("--scenario-config", args.scenario_config),
                     n_initial=args.initial, n_steps=args.steps,
                     audit_steps=args.audit_steps, allow_unconverged=args.allow_unconverged,
                     rotation=_rotation(args.rotation),
                     progress=not args.quiet, echo=None)
    print(result.paths["md"].read_text())
    log.info("wrote %s, %s and %s (%d cells computed, %d resumed)", result.paths["csv"],
             result.paths["md"], result.paths["figure"], len(result.computed),
             len(result.skipped))
    return 0


def add_compare_parser(sub: Any, common: argparse.ArgumentParser,
                       integer: Callable[[str], Callable[[str], int]]) -> None:
    """Register ``compare`` on the subparsers ``sub`` of the main parser."""
    from .compare import DEFAULT_TRAIN

    p = sub.add_parser(
        "compare", parents=[common], help="compare architectures across mesh families over "
        "seeds, with one training budget",
        description="Per mesh and seed: a trajectory dataset (scenario seed = seed), the "
        "baselines calibrated on it, every model that supports the mesh family trained with "
        "the same budget (equal optimizer updates, one batch size) and seed, then the "
        "validation (offline and online). Writes OUT/table.csv (mean, sd, n and per-seed "
        "values of every number), OUT/table.md and OUT/similarity.png; a rerun with the same "
        "flags skips finished cells.")
    p.add_argument("--scenario", default="kinematic",
                   help="kinematic, barotropic or convection (default: %(default)s)")
    p.add_argument("--models", required=True, help="comma-separated model names, e.g. mgn,cnn")
    p.add_argument("--meshes", required=True,
                   help="comma-separated fine meshes, e.g. cartesian:32,healpix:8")
    p.add_argument("--seeds", type=integer("--seeds"), default=3,
                   help="seeds 0..N-1, >= 2 (default: %(default)s)")
    p.add_argument("--out", required=True, metavar="DIR", help="the comparison folder")
    p.add_argument("--factor", type=integer("--factor"), default=4,
                   help="coarsening factor (default: %(default)s)")
    p.add_argument("--samples", type=integer("--samples"), default=200,
                   help="coarse steps of each trajectory dataset (default: %(default)s)")
    p.add_argument("--ood", type=integer("--ood"), default=20,
                   help="OOD samples (default: %(default)s)")
    p.add_argument("--epochs", type=integer("--epochs"), default=DEFAULT_TRAIN["epochs"],
                   help="epochs of every model (default: %(default)s)")
    p.add_argument("--updates", type=integer("--updates"),
                   default=DEFAULT_TRAIN["updates_per_epoch"],
                   help="optimizer updates per epoch of every model (default: %(default)s)")
    p.add_argument("--batch-size", type=integer("--batch-size"),
                   default=DEFAULT_TRAIN["batch_size"], help="default: %(default)s")
    p.add_argument("--lr", type=float, default=DEFAULT_TRAIN["lr"], help="default: %(default)s")
    p.add_argument("--target", default=DEFAULT_TRAIN["target"],
                   choices=("instantaneous", "step_mean"), help="default: %(default)s")
    p.add_argument("--model-config", default="{}", metavar="JSON",
                   help="build settings per model, e.g. '{\"mgn\": {\"hidden\": 16}}'")
    p.add_argument("--scenario-config", default="{}", metavar="JSON",
                   help="scenario parameters, e.g. '{\"spinup_time\": 0.5}'")
    p.add_argument("--initial", type=integer("--initial"), default=3,
                   help="truth initial states of the online runs (default: %(default)s)")
    p.add_argument("--steps", type=integer("--steps"), default=None,
                   help="online steps compared with the truth (default: the test split)")
    p.add_argument("--audit-steps", type=integer("--audit-steps"), default=0,
                   help="more online steps past the truth (default: %(default)s)")
    p.add_argument("--allow-unconverged", action="store_true",
                   help="keep samples of a spin-up that did not reach equilibrium")
    p.add_argument("--rotation", default=None, metavar="DEG",
                   help="symmetry test on sphere meshes: also validate every model (trained "
                   "at the default axis) on a dataset whose axes are tilted by DEG degrees "
                   "(or TILT,AZIMUTH); default: none")
    p.set_defaults(func=_cmd_compare, flags=COMPARE_FLAGS)
