"""The arguments of :func:`~meshclosure.compare.compare`: checked before any work, saved
as ``OUT/arguments.json``, and compared on a rerun (a folder made with other arguments is
refused, naming the first argument that differs).

Examples
--------
>>> args = check_arguments("kinematic", "mgn,cnn", "cartesian:16", 2, 2, 17, 3, (0.4, 0.1, 0.5),
...                        {"epochs": 1}, None, None, 2, None, 0, ("offline", "online"), False)
>>> args["models"], args["train"]["epochs"], args["train"]["updates_per_epoch"]
(['mgn', 'cnn'], 1, 25)
>>> check_arguments("kinematic", "mgn,mgn", "cartesian:16", 2, 2, 17, 3, (0.4, 0.1, 0.5),
...                 {}, None, None, 2, None, 0, ("offline",), False)
Traceback (most recent call last):
...
meshclosure.errors.ArgumentError: models='mgn,mgn': must be a non-empty list without repeats; ...
>>> check_arguments("convection", "mgn", "column:64", 2, 2, 17, 3, (0.4, 0.1, 0.5),
...                 {}, None, None, 2, None, 0, ("offline",), False, rotation=30)
Traceback (most recent call last):
...
meshclosure.errors.ArgumentError: rotation=30.0: is a parameter of the sphere scenarios ...
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Mapping

from .._files import atomic_path
from ..errors import ArgumentError, OutputExistsError

__all__ = ["check_arguments", "check_out", "DEFAULT_TRAIN", "FORMAT"]

#: The training budget every model gets unless ``train`` says otherwise: equal optimizer
#: updates (``epochs × updates_per_epoch``) at the same batch size.
DEFAULT_TRAIN = {"epochs": 10, "updates_per_epoch": 25, "batch_size": 8, "lr": 3e-3,
                 "target": "step_mean"}

#: Version of the folder layout (``arguments.json`` and the cells).
FORMAT = 1


def _names(value: Any, argument: str, example: str) -> List[str]:
    items = value.split(",") if isinstance(value, str) else value
    try:
        items = [str(s).strip() for s in items if str(s).strip()]
    except TypeError:
        items = []
    if not items or len(set(items)) != len(items):
        raise ArgumentError(argument, value, "must be a non-empty list without repeats",
                            f"pass e.g. {{{argument}}}={example!r}")
    return items


def check_arguments(scenario, models, meshes, seeds, factor, n_samples, ood_samples, fractions,
               train, model_config, scenario_config, n_initial, n_steps, audit_steps,
               stages, allow_unconverged, rotation=None) -> Dict[str, Any]:
    from ..data.scenarios import canonical_rotation
    from ..nn import list_models
    from ..train import TrainConfig

    models = _names(models, "models", "mgn,cnn")
    meshes = _names(meshes, "meshes", "cartesian:32,healpix:8")
    known = list_models(conservative=None)
    for m in models:
        if m not in known:
            raise ArgumentError("models", m, f"must be registered models ({known})",
                                "pick names from meshclosure.nn.list_models()")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 2:
        raise ArgumentError("seeds", seeds, "must be an integer >= 2 (a spread needs two "
                            "seeds; 3 or more for the published comparison)",
                            "pass {seeds}=3")
    for name, v, lo in (("factor", factor, 2), ("n_samples", n_samples, 3),
                        ("ood_samples", ood_samples, 0), ("n_initial", n_initial, 1),
                        ("audit_steps", audit_steps, 0)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ArgumentError(name, v, f"must be an integer >= {lo}",
                                f"pass e.g. {{{name}}}={max(lo, 4)}")
    if n_steps is not None and (isinstance(n_steps, bool) or not isinstance(n_steps, int)
                                or n_steps < 1):
        raise ArgumentError("n_steps", n_steps, "must be None or an integer >= 1",
                            "pass {n_steps}=None (to the end of the test split)")
    settings = {**DEFAULT_TRAIN, **dict(train or {})}
    for key in ("model", "seed"):
        if key in (train or {}):
            raise ArgumentError(key, train[key], "is set by compare for every cell (the "
                                "model of the cell; the training seed = the seed)",
                                "leave it out of train")
    if settings.get("updates_per_epoch") is None:
        raise ArgumentError("updates_per_epoch", None, "must be set: every model gets the "
                            "same number of optimizer updates", "pass e.g. "
                            "{updates_per_epoch}=25")
    if settings.get("patience", 0):
        raise ArgumentError("patience", settings["patience"], "must be 0: early stopping "
                            "would give models unequal budgets", "leave it out of train")
    TrainConfig.from_dict({**settings, "model": models[0]})      # every other setting
    model_config = {k: dict(v) for k, v in dict(model_config or {}).items()}
    for k in model_config:
        if k not in models:
            raise ArgumentError("model_config", k, f"must name models of the comparison "
                                f"({models})", "drop it or add the model to {models}")
    if isinstance(stages, str) or not set(stages) <= {"offline", "coupled", "online"}:
        raise ArgumentError("stages", stages, "must be a list of 'offline', 'coupled', "
                            "'online'", "pass e.g. stages=('offline', 'online')")
    if rotation is not None:
        rotation = canonical_rotation(rotation)
        if rotation == 0.0:
            raise ArgumentError("rotation", rotation, "must tilt the axis (0 is the default "
                                "axis the models are trained at)", "pass e.g. {rotation}=30, "
                                "or None for no tilted test")
        if str(scenario) not in ("kinematic", "barotropic"):
            raise ArgumentError("rotation", rotation, f"is a parameter of the sphere scenarios "
                                f"('kinematic', 'barotropic'), not of {str(scenario)!r}",
                                "leave {rotation} out")
        if "rotation" in dict(scenario_config or {}):
            raise ArgumentError("scenario_config", dict(scenario_config), "must not set "
                                "'rotation' together with {rotation} (the models are trained "
                                "at the default axis and tested at {rotation})",
                                "drop 'rotation' from {scenario_config}")
    return {"format": FORMAT, "scenario": str(scenario), "models": models, "meshes": meshes,
            "seeds": seeds, "factor": factor, "n_samples": n_samples,
            "ood_samples": ood_samples, "fractions": [float(f) for f in fractions],
            "train": settings, "model_config": model_config,
            "scenario_config": dict(scenario_config or {}), "n_initial": n_initial,
            "n_steps": n_steps, "audit_steps": audit_steps, "stages": list(stages),
            "allow_unconverged": bool(allow_unconverged), "rotation": rotation}


def check_out(out: Path, args: Mapping[str, Any]) -> None:
    """Refuse an ``out`` made with other arguments (naming the first that differs) or
    holding files of something else; write ``arguments.json`` for a new one."""
    saved = out / "arguments.json"
    if saved.is_file():
        old = json.loads(saved.read_text())
        for key in list(args) + [k for k in old if k not in args]:
            a, b = args.get(key), old.get(key)
            if key == "train" and isinstance(a, dict) and isinstance(b, dict):
                for k in sorted(set(a) | set(b)):
                    if a.get(k) != b.get(k):
                        raise ArgumentError(k, a.get(k), f"must be {_show(b.get(k))} as in the "
                                            f"comparison already in {str(out)!r} "
                                            "(arguments.json): a rerun resumes that one",
                                            f"pass {{{k}}} {_esc(_show(b.get(k)))}, or another "
                                            "{out}")
            elif a != b:
                raise ArgumentError(key, _show(a), f"must be {_show(b)} as in the comparison "
                                    f"already in "
                                    f"{str(out)!r} (arguments.json): a rerun resumes that one",
                                    f"pass {{{key}}} {_esc(_show(b))}, or another {{out}}")
        return
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OutputExistsError(f"out={str(out)!r} exists and is not a comparison folder (no "
                                "arguments.json); choose a new or empty folder.")
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(saved, ".json") as tmp:
        Path(tmp).write_text(json.dumps(args, indent=1))


def _show(v: Any) -> str:
    """A saved argument as it is typed: lists of names comma-joined."""
    if isinstance(v, list) and all(isinstance(x, str) for x in v):
        return ",".join(v)
    return json.dumps(v) if isinstance(v, (dict, list)) else repr(v)


def _esc(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")
