"""The one training configuration: every setting of :func:`meshclosure.train.train`, as JSON.

A :class:`TrainConfig` is written next to the trained model
(``DIR/config.json``) and inside every training checkpoint, so a run can be
repeated and resumed; ``TrainConfig.from_dict`` refuses unknown keys and bad
values with an error that names the setting, the value, the rule and the fix.

Examples
--------
>>> cfg = TrainConfig(model="mgn", epochs=3)
>>> TrainConfig.from_dict(cfg.to_dict()) == cfg
True
>>> TrainConfig.from_dict({"epoch": 3})
Traceback (most recent call last):
...
meshclosure.errors.ArgumentError: config={'epoch': 3}: has unknown setting(s) ['epoch']; use the settings of TrainConfig: ...
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional

from ..errors import ArgumentError

__all__ = ["TrainConfig", "SCHEDULES", "TARGETS"]

SCHEDULES = ("constant", "cosine", "plateau")
TARGETS = ("instantaneous", "step_mean")


@dataclass
class TrainConfig:
    """Settings of one training run (all JSON-serialisable).

    Model
        ``model``: a registered name (:func:`meshclosure.nn.list_models`);
        ``model_config``: passed to :func:`~meshclosure.nn.build_model` (``hidden``,
        ``n_blocks``, ``heteroscedastic``, ...; ``in_features`` and ``n_vars`` come
        from the data); ``dtype``: ``"float32"`` or ``"float64"``; ``device``.
    Optimiser
        Adam (``lr``, ``weight_decay``); ``schedule``: ``"constant"``, ``"cosine"``
        (annealed to ``lr · min_lr_factor`` over all planned updates — the sum over
        epochs of each epoch's offline batches or online windows, or
        ``updates_per_epoch``; skipped updates count — so the last update ends at
        ``lr · min_lr_factor``) or ``"plateau"`` (halved when the validation loss
        stalls for ``plateau_patience`` epochs; its count starts afresh at each
        phase of the curriculum, keeping the learning rate reached);
        ``grad_clip``: the largest gradient norm (0: no clipping); ``ema_decay``:
        the exponential moving average of the weights used for evaluation and
        saved as the model (0: none); ``patience``: epochs without a better
        validation loss before stopping early (0: never).
    Budget
        ``epochs``; ``batch_size`` (the global batch: under ``torchrun`` it is
        split over the processes); ``updates_per_epoch``: a fixed number of
        optimiser updates per epoch (cycling through reshuffled data), so two
        runs can be given equal updates; default one pass over the data.
    Losses (offline)
        ``flux_weight`` · MSE on the face flux + ``tendency_weight`` · MSE on the
        tendency ``−div Φ``; heteroscedastic models use the β-NLL with ``beta``
        on the flux instead of its MSE. ``target``: ``"instantaneous"`` Φ^sgs of
        each sample or ``"step_mean"`` Φ̄^sgs of the coarse step that starts there
        (trajectory datasets). Soft constraints: ``weak_form_weight`` (the
        weak-form residual of one coarse step against smooth test functions up to
        ``weak_form_degree``; trajectory datasets) and ``dissipation_weight``
        (``([P]_+)²``, ``P`` the closure's variance production).
    Online
        ``online_steps`` ``K`` > 0 adds online (a posteriori) training from epoch
        ``online_start`` on: the coarse model unrolled ``K`` steps with the network
        as its closure, matched to the coarse-grained truth at every step, times
        ``online_weight``, plus ``offline_weight`` times the offline loss;
        ``curriculum``: ``[[epoch, K], ...]`` (piecewise constant, overrides
        ``online_steps`` from each listed epoch); ``truncation``: the window of
        backpropagation through time (None: all K steps); ``checkpoint_steps``:
        gradient checkpointing per coarse step.
    Ensemble
        ``ensemble`` members trained with seeds spawned from ``seed``;
        ``bootstrap``: each member on a resample of the training samples.
    """

    model: str = "mgn"
    model_config: Dict[str, Any] = field(default_factory=dict)
    dtype: str = "float32"
    device: str = "cpu"
    epochs: int = 20
    batch_size: int = 8
    updates_per_epoch: Optional[int] = None
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "cosine"
    min_lr_factor: float = 0.05
    plateau_patience: int = 3
    grad_clip: float = 1.0
    ema_decay: float = 0.99
    patience: int = 0
    seed: int = 0
    flux_weight: float = 1.0
    tendency_weight: float = 0.0
    beta: float = 0.5
    target: str = "instantaneous"
    weak_form_weight: float = 0.0
    weak_form_degree: Optional[int] = None
    dissipation_weight: float = 0.0
    online_steps: int = 0
    online_start: int = 0
    online_weight: float = 1.0
    offline_weight: float = 0.0
    curriculum: Optional[List[List[int]]] = None
    truncation: Optional[int] = None
    checkpoint_steps: bool = False
    ensemble: int = 1
    bootstrap: bool = False

    def __post_init__(self) -> None:
        self.check()

    # ------------------------------------------------------------------ checks
    def check(self) -> "TrainConfig":
        """Raise :class:`ArgumentError` for the first bad setting; return self."""
        def need(name: str, ok: bool, rule: str, fix: str) -> None:
            if not ok:
                raise ArgumentError(name, getattr(self, name), rule, fix)

        def integer(name: str, lo: int) -> None:
            v = getattr(self, name)
            need(name, isinstance(v, int) and not isinstance(v, bool) and v >= lo,
                 f"must be an integer >= {lo}", f"pass e.g. {{{name}}}={max(lo, 1)}")

        def number(name: str, lo: float, hi: float = float("inf"), open_lo: bool = False) -> None:
            v = getattr(self, name)
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and (
                lo < v <= hi if open_lo else lo <= v <= hi)
            need(name, ok, f"must be a number in {'(' if open_lo else '['}{lo}, {hi}]",
                 f"pass a value in that range for {{{name}}}")

        need("model", isinstance(self.model, str) and bool(self.model), "must be a model name",
             "pick one of meshclosure.nn.list_models()")
        need("model_config", isinstance(self.model_config, dict), "must be a dict of "
             "build_model settings", "pass e.g. {model_config}={'hidden': 32}")
        need("dtype", self.dtype in ("float32", "float64"), "must be 'float32' or 'float64'",
             "pass {dtype}='float64' for exact gradient checks, 'float32' to train fast")
        for name in ("epochs", "batch_size", "ensemble"):
            integer(name, 1)
        for name in ("plateau_patience", "patience", "seed", "online_steps", "online_start"):
            integer(name, 0)
        if self.updates_per_epoch is not None:
            integer("updates_per_epoch", 1)
        if self.truncation is not None:
            integer("truncation", 1)
        number("lr", 0.0, open_lo=True)
        number("min_lr_factor", 0.0, 1.0)
        for name in ("weight_decay", "grad_clip", "flux_weight", "tendency_weight",
                     "weak_form_weight", "dissipation_weight", "online_weight", "offline_weight"):
            number(name, 0.0)
        number("ema_decay", 0.0, 1.0)
        need("ema_decay", self.ema_decay < 1.0, "must be < 1 (1 would never move)",
             "pass e.g. {ema_decay}=0.99, or 0 for no moving average")
        number("beta", 0.0, 1.0)
        need("schedule", self.schedule in SCHEDULES, f"must be one of {SCHEDULES}",
             "pass e.g. {schedule}='cosine'")
        need("target", self.target in TARGETS, f"must be one of {TARGETS}",
             "pass {target}='step_mean' to train on the step-mean flux of trajectory data")
        if self.weak_form_degree is not None:
            integer("weak_form_degree", 1)
            need("weak_form_degree", self.weak_form_weight > 0, "has no effect unless "
                 "weak_form_weight > 0 (the weak-form term is off)",
                 "set {weak_form_weight} > 0 (e.g. 0.1), or leave {weak_form_degree} unset")
        need("bootstrap", not self.bootstrap or self.ensemble > 1, "needs ensemble > 1 "
             f"(ensemble={self.ensemble}: one model on one resample is no ensemble)",
             "set {ensemble} >= 2 (--ensemble M), or leave {bootstrap} off")
        need("flux_weight", self.flux_weight + self.tendency_weight > 0 or self.online_steps > 0,
             "and tendency_weight cannot both be 0 for offline training (nothing to fit)",
             "set {flux_weight}=1 (or tendency_weight > 0)")
        if self.curriculum is not None:
            ok = isinstance(self.curriculum, list) and all(
                isinstance(p, (list, tuple)) and len(p) == 2 and all(
                    isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in p)
                for p in self.curriculum) and all(p[1] >= 1 for p in self.curriculum)
            need("curriculum", ok, "must be a list of [epoch, K] pairs of integers, K >= 1",
                 "pass e.g. {curriculum}=[[0, 1], [5, 3], [10, 10]]")
            self.curriculum = [list(p) for p in sorted(self.curriculum)]
        return self

    # --------------------------------------------------------------- derived
    def steps_at(self, epoch: int) -> int:
        """Online rollout length ``K`` at ``epoch`` (0: offline only)."""
        if epoch < self.online_start:
            return 0
        k = self.online_steps
        for start, steps in self.curriculum or ():
            if epoch >= start:
                k = steps
        return int(k)

    @property
    def max_steps(self) -> int:
        """The longest rollout of the run (the trajectory windows' length)."""
        return max([self.online_steps] + [k for _, k in self.curriculum or ()])

    @property
    def needs_trajectories(self) -> bool:
        """Whether the run needs a trajectory dataset."""
        return (self.max_steps > 0 or self.weak_form_weight > 0 or self.target == "step_mean")

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ArgumentError("config", dict(d), f"has unknown setting(s) {unknown}",
                                f"use the settings of TrainConfig: {sorted(names)}")
        return cls(**dict(d))

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with ``changes`` (checked); unknown names are refused."""
        return self.from_dict({**self.to_dict(), **changes})
