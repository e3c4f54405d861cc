"""``meshclosure validate``: the validation hierarchy as a command (registered by
:mod:`meshclosure.cli`).

``meshclosure validate --data FILE --model DIR/model.pt [--baselines DIR] --out REPORT``
runs :func:`meshclosure.validate.validate` (offline skill on the test and OOD
splits, the partially coupled stage, long online runs from several truth initial
states) and writes the report folder ``REPORT/`` (``index.html``, figures,
``metrics.json``, ``metrics.csv``).
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any, Callable

from .errors import ArgumentError

__all__ = ["VALIDATE_FLAGS", "add_validate_parser"]

log = logging.getLogger("meshclosure.cli")

#: Python parameters of :func:`~meshclosure.validate.validate` -> ``validate`` flags.
VALIDATE_FLAGS = {"data": "--data", "model": "--model", "baselines": "--baselines",
                  "out": "--out", "overwrite": "--overwrite", "split": "--split",
                  "n_initial": "--initial", "n_steps": "--steps", "audit_steps": "--audit-steps",
                  "stages": "--stages", "kmax": "--kmax"}


def _cmd_validate(args: argparse.Namespace) -> int:
    from .validate import validate

    data = Path(args.data)
    if not data.exists():
        raise ArgumentError("data", str(data), "must be an existing trajectory dataset (.nc "
                            "file or .zarr folder)", "write one with `meshclosure generate "
                            "--trajectory --out FILE` first")
    stages = tuple(s.strip() for s in args.stages.split(",") if s.strip())
    result = validate(str(data), args.model, baselines=args.baselines, out=args.out,
                      overwrite=args.overwrite, split=args.split, n_initial=args.initial,
                      n_steps=args.steps, audit_steps=args.audit_steps, kmax=args.kmax,
                      stages=stages, progress=not args.quiet,
                      echo=lambda line: log.info("%s", line))
    print(result.table())
    log.info("wrote the report %s", Path(result.out) / "index.html")
    return 0


def add_validate_parser(sub: Any, common: argparse.ArgumentParser,
                        integer: Callable[[str], Callable[[str], int]]) -> None:
    """Register ``validate`` on the subparsers ``sub`` of the main parser."""
    p = sub.add_parser(
        "validate", parents=[common], help="judge a closure: offline, partially coupled and "
        "online, with a report",
        description="Validate a trained closure against the calibrated baselines, no closure "
        "and the truth replay: offline R2/correlation/RMSE per cell and by scale band on the "
        "test and OOD splits, the partially coupled stage (the tracer under the truth's flow; "
        "the single-column model for convection), and long online runs from several truth "
        "initial states (time to blow-up, a budget audit every step, emergent statistics and "
        "similarity scores). Writes REPORT/index.html, figures, metrics.json and metrics.csv.")
    p.add_argument("--data", required=True, metavar="FILE",
                   help="a trajectory dataset from `meshclosure generate --trajectory`")
    p.add_argument("--model", default=None, metavar="DIR/model.pt",
                   help="the trained closure (model.pt or its folder; an ensemble folder)")
    p.add_argument("--baselines", default=None, metavar="DIR",
                   help="a folder with calibration.json from `meshclosure calibrate` "
                   "(default: calibrate on --data now)")
    p.add_argument("--out", required=True, metavar="REPORT", help="the report folder")
    p.add_argument("--split", default="test", choices=("train", "val", "test", "ood"),
                   help="the split the online runs start from (default: %(default)s)")
    p.add_argument("--initial", type=integer("--initial"), default=3, metavar="N",
                   help="truth initial states of the online ensemble (default: %(default)s)")
    p.add_argument("--steps", type=integer("--steps"), default=None, metavar="N",
                   help="coarse steps compared with the truth (default: to the split's end)")
    p.add_argument("--audit-steps", type=integer("--audit-steps"), default=0, metavar="N",
                   help="more steps past the truth, for stability and the budget audit")
    p.add_argument("--kmax", type=float, default=None,
                   help="highest wavenumber/degree of the spectrum distance")
    p.add_argument("--stages", default="offline,coupled,online",
                   help="comma-separated stages (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing report folder")
    p.set_defaults(func=_cmd_validate, flags=VALIDATE_FLAGS)
