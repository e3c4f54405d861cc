"""The trainer: any registered model on any dataset, offline and then online, resumable.

:func:`train` fits a model from :mod:`meshclosure.nn` to a dataset written
by :func:`meshclosure.data.generate` and writes, in its output folder ``DIR``:

* ``model.pt`` — the model (its EMA weights at the best validation epoch),
  with its :class:`~meshclosure.closures.FeaturePipeline` and
  :class:`~meshclosure.closures.Normalizer` (:func:`meshclosure.nn.save_model`;
  ``load_model(DIR/"model.pt", mesh).closure()`` runs it in the coarse model);
* ``metrics.csv`` — one row per epoch (losses, validation skill, learning
  rate, rollout length, skipped updates, wall time), and TensorBoard events in
  ``DIR/tensorboard`` when ``tensorboard`` is installed;
* ``config.json`` — the :class:`~meshclosure.train.TrainConfig`;
* ``checkpoint.pt`` — the training state after the last finished epoch
  (:mod:`meshclosure.train.checkpoint`): a rerun with the same arguments
  resumes from it and ends bit-identical (on CPU) to an uninterrupted run.

With ``ensemble = M > 1`` each member trains in ``DIR/member_<k>/`` (seeds
spawned from one ``SeedSequence``; ``bootstrap``: each on a resample of the
training samples drawn with replacement) and ``DIR/ensemble.json`` lists them.

Per optimiser update (Adam, gradient-norm clipping, a learning-rate schedule,
an EMA of the weights — :class:`torch.optim.swa_utils.AveragedModel` — used
for evaluation, as NeuralGCM does)::

    L = w_Φ · MSE(Φ̂, Φ) [β-NLL for heteroscedastic models] + w_s · MSE(−div Φ̂, s)
        + w_weak · weak-form residual + w_diss · ([P]_+)²                 (offline)
    L = w_on · (1/K) Σ_k |Q̂^k − Q̄^k|² / σ_Q² + w_off · L_offline           (online)

all on targets scaled by the training split's flux scale (dimensionless).
Cell-tendency models (``nodewise``, ``nodewise_mean_free``: ``output =
"tendency"``, not conservative) fit the normalised subgrid tendency ``s`` of
each cell in units of its training RMS, ``L = w · MSE(ŝ, s) / s_rms²``
(``w`` = ``tendency_weight`` if > 0, else ``flux_weight``; the saved
normalizer's output scale is ``flux_scale · s_rms``); the dissipation
penalty, the weak form and online training (each needs a face flux), a
variance head and an ensemble are refused for them; their validation
metrics are ``val_tendency_mse`` and ``val_tendency_r2``. An
online update whose rollout went non-finite is skipped and the weights and
optimiser state are restored to the last good ones.

Multi-process training: under ``torchrun --nproc_per_node=N -m meshclosure
train ...`` the model is wrapped in :class:`~torch.nn.parallel.DistributedDataParallel`
(gloo on CPU, nccl on GPU); every global batch (``batch_size`` samples, the
same on every rank) is split over the ranks, each rank's loss weighted by its
share so the averaged gradient equals one process's on the whole batch; only
rank 0 writes.

Examples
--------
>>> train("missing.nc", "out")
Traceback (most recent call last):
...
meshclosure.data.dataset.DatasetError: dataset 'missing.nc' does not exist or is not a file; ...
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

import numpy as np
import torch
from torch import Tensor

from .._files import atomic_path
from ..closures import FeaturePipeline, ModelClosure, Normalizer
from ..closures.tendency import TendencyClosure, is_tendency_model
from ..errors import ArgumentError
from ..nn import build_model, save_model
from .checkpoint import load_training_checkpoint, save_training_checkpoint
from .config import TrainConfig
from .data import TrainingData, stack_vars
from .distributed import Distributed
from .losses import beta_nll, flux_mse, tendency_mse
from .outputs import METRIC_COLUMNS, prepare_out, write_metrics

__all__ = ["train", "TrainResult", "Trainer"]

_log = logging.getLogger("meshclosure.train")


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes
    ----------
    model : torch.nn.Module
        The trained model (EMA weights of the best epoch), in evaluation mode.
    closure : ModelClosure or TendencyClosure
        The model as a closure in physical units (mean mode); for a cell-tendency
        model (``nodewise``, ``nodewise_mean_free``) a
        :class:`~meshclosure.closures.tendency.TendencyClosure`, run with
        :func:`~meshclosure.closures.tendency.with_tendency`.
    features, normalizer
        The pipeline and normalizer it was trained with.
    metrics : list of dict
        One row per epoch (:data:`METRIC_COLUMNS`).
    best_epoch : int
    out : Path or None
    members : list of TrainResult
        The ensemble's members (empty for one model).
    """

    model: torch.nn.Module
    closure: ModelClosure
    features: FeaturePipeline
    normalizer: Normalizer
    metrics: List[Dict[str, Any]]
    best_epoch: int
    out: Optional[Path] = None
    members: List["TrainResult"] = field(default_factory=list)


def _ema(decay: float):
    """EMA update for :class:`~torch.optim.swa_utils.AveragedModel` with the usual warm-up:
    after ``n`` updates the decay is ``min(decay, (1 + n) / (10 + n))``, so the average
    follows the weights closely at first instead of staying at the initial ones."""

    @torch.no_grad()
    def update(averaged: List[Tensor], current: List[Tensor], n: Any) -> None:
        d = min(decay, (1.0 + float(n)) / (10.0 + float(n)))
        for a, c in zip(averaged, current):
            a.lerp_(c, 1.0 - d)

    return update


# --------------------------------------------------------------------- trainer
class Trainer:
    """One model's training run (see the module docstring); :func:`train` drives it."""

    def __init__(self, data: Any, cfg: TrainConfig, out: Optional[Path], *,
                 seed: Optional[int] = None, subset: Optional[np.ndarray] = None,
                 progress: bool = True, shared: Optional[TrainingData] = None) -> None:
        self.cfg, self.out, self.progress = cfg, out, progress
        self.seed = cfg.seed if seed is None else int(seed)
        self.dtype = getattr(torch, cfg.dtype)
        self.device = torch.device(cfg.device)
        self.data = shared if shared is not None else TrainingData(data, cfg, self.dtype)
        self.dist = Distributed(self.device)
        self.subset = None if subset is None else np.asarray(subset, np.int64)
        d = self.data
        torch.manual_seed(self.seed)
        self.mesh = d.mesh
        _check_tendency_settings(cfg)
        model = build_model(cfg.model, d.mesh, in_features=len(d.stats.input_names),
                            n_vars=len(d.variables), **cfg.model_config)
        self.model = model.to(device=self.device, dtype=self.dtype)
        self.heteroscedastic = bool(cfg.model_config.get("heteroscedastic", False))
        # nodewise / nodewise_mean_free predict the cell tendency, not a face flux
        self.tendency_model = is_tendency_model(model)
        self.features = FeaturePipeline.from_config(self._features_config())
        self.normalizer = Normalizer.from_stats(d.stats).to(device=self.device)
        if self.tendency_model:
            # its outputs in units of the training split's RMS tendency (O(1), as the flux
            # models'): the output scale is the dataset's flux scale times that RMS
            cfg_n = self.normalizer.config()
            cfg_n["flux_scale"] = (d.flux_scale * d.tendency_scale).tolist()
            self.normalizer = Normalizer(**cfg_n).to(device=self.device)
        self.net = self.dist.wrap(self.model)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr,
                                    weight_decay=cfg.weight_decay)
        self.sched = self._scheduler()
        self.ema = None
        if cfg.ema_decay > 0:
            from torch.optim.swa_utils import AveragedModel

            self.ema = AveragedModel(self.model, multi_avg_fn=_ema(cfg.ema_decay),
                                     use_buffers=True)
        self.shuffle = torch.Generator().manual_seed(self.seed)
        self.epoch, self.updates, self.best_epoch, self.stale = 0, 0, -1, 0
        self.best_loss, self.best_state = math.inf, None
        self.monitor = None
        self.metrics: List[Dict[str, Any]] = []
        self.tb = None

    # -------------------------------------------------------------- set-up
    def _features_config(self) -> Dict[str, Any]:
        ds = self.data.train.ds
        if "feature_pipeline" in ds.attrs:
            return json.loads(ds.attrs["feature_pipeline"])
        return FeaturePipeline.from_scenario(self.data.scenario).config()

    def _n_updates(self, epoch: int) -> int:
        """The optimiser updates planned for ``epoch``: ``updates_per_epoch``, else one pass
        over that epoch's batches (offline samples, or trajectory windows when the
        curriculum's rollout length ``K`` at that epoch is > 0)."""
        if self.cfg.updates_per_epoch:
            return int(self.cfg.updates_per_epoch)
        n = len(self._train_indices(online=bool(self.cfg.steps_at(epoch))))
        return max(1, math.ceil(n / self.cfg.batch_size))

    def _scheduler(self):
        cfg = self.cfg
        if cfg.schedule == "cosine":
            # every planned update steps the schedule (a skipped one too), so the last
            # update of the last epoch ends at lr · min_lr_factor
            total = max(1, sum(self._n_updates(e) for e in range(cfg.epochs)))
            return torch.optim.lr_scheduler.CosineAnnealingLR(
                self.opt, T_max=total, eta_min=cfg.lr * cfg.min_lr_factor)
        if cfg.schedule == "plateau":
            return torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.opt, factor=0.5, patience=cfg.plateau_patience)
        return None

    def _train_indices(self, online: bool = False) -> np.ndarray:
        ds = self.data.online_train if online else self.data.train
        n = len(ds)
        if self.subset is not None and not online:
            return self.subset[self.subset < n]
        return np.arange(n)

    # ------------------------------------------------------------- batches
    def _epoch_batches(self, online: bool) -> List[List[int]]:
        """This epoch's global batches (the same on every rank): a seeded permutation,
        repeated as needed for ``updates_per_epoch``."""
        idx = self._train_indices(online)
        b, per = self.cfg.batch_size, self.cfg.updates_per_epoch
        order: List[int] = []
        need = (per * b) if per else len(idx)
        while len(order) < need:
            perm = torch.randperm(len(idx), generator=self.shuffle).numpy()
            order += [int(idx[i]) for i in perm]
        order = order[:need]
        # a batch smaller than the world gives the ranks beyond it a zero-weight sample
        # (Distributed.split): every process trains on the batches of one process
        return [order[i:i + b] for i in range(0, len(order), b)]

    # -------------------------------------------------------------- losses
    def _predict(self, net, x: Tensor):
        out = net(self.mesh, x.to(device=self.device, dtype=self.dtype))
        return (out[0], out[1]) if isinstance(out, tuple) else (out, None)

    def _target_tendency(self, batch: Mapping[str, Any], like: Tensor) -> Tensor:
        """A tendency model's target ``(B, n_cells, V)``: the subgrid tendency in units of the
        training split's RMS (``s / (flux_scale · tendency_scale)``; ``−div`` of the flux
        target where the batch carries no tendency: trajectory windows, step-mean target)."""
        s = batch["s"]
        if s is None:
            from .losses import tendency
            s = tendency(self.mesh, batch["y"].to(like))
        return s.to(like) / self.data.tendency_scale.to(like)

    def _offline_terms(self, net, batch: Mapping[str, Any]) -> Dict[str, Tensor]:
        cfg = self.cfg
        mean, log_var = self._predict(net, batch["x"])
        if self.tendency_model:                 # the one term: MSE of the cell tendency
            w = cfg.tendency_weight if cfg.tendency_weight > 0 else cfg.flux_weight
            return {"tendency": w * flux_mse(mean, self._target_tendency(batch, mean))}
        y = batch["y"].to(mean)
        terms: Dict[str, Tensor] = {}
        if cfg.flux_weight > 0:
            terms["flux"] = cfg.flux_weight * (
                beta_nll(mean, log_var, y, cfg.beta) if log_var is not None else
                flux_mse(mean, y))
        if cfg.tendency_weight > 0:
            s = batch["s"]
            if s is None:
                from .losses import tendency
                s = tendency(self.mesh, y)
            ts = self.data.tendency_scale.to(mean)
            terms["tendency"] = cfg.tendency_weight * tendency_mse(self.mesh, mean / ts,
                                                                   s.to(mean) / ts)
        if cfg.dissipation_weight > 0:
            from .dissipation import dissipation_penalty

            x = batch["x"].to(mean)
            ps = self.data.production_scale
            pen = sum(dissipation_penalty(self.mesh, mean[..., i], x[..., c], scale=float(ps[i]))
                      for i, c in enumerate(self.data.state_cols))
            terms["dissipation"] = cfg.dissipation_weight * pen
        if cfg.weak_form_weight > 0:
            from .constraints import weak_form_loss

            phys = (mean * self.data.flux_scale.to(mean)).to(torch.float64)
            terms["weak_form"] = cfg.weak_form_weight * weak_form_loss(
                self.data.scenario, batch["window"], phys, **self._weak_kwargs())
        return terms

    def _weak_kwargs(self) -> Dict[str, Any]:
        if self.cfg.weak_form_degree is None:
            return {}
        from .constraints import test_functions

        if not hasattr(self, "_phi"):
            self._phi = test_functions(self.mesh, degree=self.cfg.weak_form_degree)
        return {"phi": self._phi}

    def _closure(self, net) -> ModelClosure:
        if self.tendency_model:
            return TendencyClosure(net, self.features, self.normalizer, self.data.variables)
        return ModelClosure(net, self.features, self.normalizer, self.data.variables)

    def _online_terms(self, net, window: Mapping[str, Any], steps: int) -> Dict[str, Any]:
        from .online import online_loss

        closure = self._closure(net)
        loss, info = online_loss(self.data.scenario, closure, window, steps,
                                 truncation=self.cfg.truncation,
                                 checkpoint=self.cfg.checkpoint_steps,
                                 state_scale=self.data.state_scale,
                                 scenarios=self.data.scenario_for)
        return {"online": self.cfg.online_weight * loss, "_finite": bool(info.get("finite", True))}

    # --------------------------------------------------------------- epoch
    def _update(self, idx: List[int], steps: int) -> Optional[Dict[str, float]]:
        cfg, d = self.cfg, self.data
        local, share = self.dist.split(idx)
        self.net.train()
        terms: Dict[str, Any] = {}
        if steps:
            ds = d.online_train
            window = ds.collate([ds[i] for i in local])
            terms.update(self._online_terms(self.net, window, steps))
            if cfg.offline_weight > 0:
                off = self._offline_terms(self.net, self._offline_from_window(window))
                terms.update({k: cfg.offline_weight * v for k, v in off.items()})
        else:
            terms.update(self._offline_terms(self.net, d.batch(d.train, local, cfg.target)))
        finite = terms.pop("_finite", True)
        loss = sum(terms.values())
        if not self.dist.all_true(finite and bool(torch.isfinite(loss))):
            self._skip(loss)
            return None
        good = self._snapshot() if steps else None
        self.opt.zero_grad(set_to_none=True)
        (loss * share).backward()
        if cfg.grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            if not torch.isfinite(norm):        # DDP averaged the gradients: same on every rank
                self.opt.zero_grad(set_to_none=True)
                if good is not None:
                    self._restore(good)
                self._skip(norm)
                return None
        self.opt.step()
        if steps and not all(torch.isfinite(p).all() for p in self.model.parameters()):
            self._restore(good)
            self._skip(loss)
            return None
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        self.updates += 1
        logged = {k: float(v.detach()) for k, v in terms.items()} | {"loss": float(loss.detach())}
        return self.dist.average(logged, share)      # the whole batch's, as one process logs

    def _offline_from_window(self, w: Mapping[str, Any]) -> Dict[str, Any]:
        """The offline batch of a window's first state (for the mixed online loss)."""
        y = w["y"][:, 0]
        if self.cfg.target == "step_mean":
            y = stack_vars(w["flux_mean"], self.data.variables)[:, 0] / \
                self.data.flux_scale.to(w["x"].dtype)
        return {"x": w["x"][:, 0], "y": y, "s": None, "window": w}

    def _snapshot(self) -> Dict[str, Any]:
        import copy

        return {"model": copy.deepcopy(self.model.state_dict()),
                "opt": copy.deepcopy(self.opt.state_dict())}

    def _restore(self, good: Optional[Dict[str, Any]]) -> None:
        if good is not None:
            self.model.load_state_dict(good["model"])
            self.opt.load_state_dict(good["opt"])

    def _skip(self, value: Tensor) -> None:
        self._skipped += 1
        _log.warning("epoch %d: skipped an update whose loss or gradient was not finite (%s); "
                     "kept the last good weights", self.epoch, float(value.detach()))

    @torch.no_grad()
    def evaluate(self, net=None, steps: int = 0) -> Dict[str, float]:
        """Validation metrics of ``net`` (default: the EMA model): offline loss, flux MSE and
        pooled R² (normalised units), and the online loss at ``steps``."""
        net = net if net is not None else self.eval_model
        net.eval()
        d, cfg = self.data, self.cfg
        out: Dict[str, float] = {}
        if len(d.val):
            sq = tot = 0.0
            loss, n, ys, y2 = 0.0, 0, 0.0, 0.0
            for i in range(0, len(d.val), max(cfg.batch_size, 1)):
                b = d.batch(d.val, range(i, min(i + cfg.batch_size, len(d.val))), cfg.target)
                mean, _ = self._predict(net, b["x"])
                y = self._target_tendency(b, mean) if self.tendency_model else b["y"].to(mean)
                terms = self._offline_terms(net, b)
                k = len(y)
                loss += float(sum(terms.values())) * k
                sq += float(((mean - y) ** 2).sum())
                ys += float(y.sum())
                y2 += float((y * y).sum())
                tot += y.numel()
                n += k
            var = y2 / tot - (ys / tot) ** 2
            kind = "tendency" if self.tendency_model else "flux"
            out.update({"val_loss": loss / n, f"val_{kind}_mse": sq / tot,
                        f"val_{kind}_r2": 1.0 - (sq / tot) / var if var > 0 else float("nan")})
        if steps and d.online_val is not None and len(d.online_val):
            from .online import online_loss

            ds = d.online_val
            w = ds.collate([ds[i] for i in range(len(ds))])
            loss, _ = online_loss(d.scenario, self._closure(net), w, steps,
                                  state_scale=d.state_scale, scenarios=d.scenario_for)
            out["val_online"] = float(loss)
        return out

    @property
    def eval_model(self) -> torch.nn.Module:
        return self.ema.module if self.ema is not None else self.model

    def run_epoch(self) -> Dict[str, Any]:
        cfg = self.cfg
        steps = cfg.steps_at(self.epoch)
        t0 = time.perf_counter()
        self._skipped = 0
        batches = self._epoch_batches(online=bool(steps))
        sums: Dict[str, float] = {}
        n_ok = 0
        bar = None
        if self.progress and self.dist.main:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(batches), desc=f"epoch {self.epoch + 1}/{cfg.epochs}",
                       unit="update", leave=False, disable=None)
        for idx in batches:
            res = self._update(idx, steps)
            if isinstance(self.sched, torch.optim.lr_scheduler.CosineAnnealingLR):
                with warnings.catch_warnings():       # a skipped first update: no opt.step()
                    warnings.simplefilter("ignore", UserWarning)
                    self.sched.step()
            if res is not None:
                n_ok += 1
                for k, v in res.items():
                    sums[k] = sums.get(k, 0.0) + v
                if bar is not None:
                    bar.set_postfix(loss=f"{res['loss']:.4g}")
            if bar is not None:
                bar.update()
        if bar is not None:
            bar.close()
        val = self.evaluate(steps=steps)
        monitor = "val_online" if steps and "val_online" in val else "val_loss"
        phase = f"val_online@K={steps}" if monitor == "val_online" else monitor
        if isinstance(self.sched, torch.optim.lr_scheduler.ReduceLROnPlateau) and monitor in val:
            if self.monitor is not None and phase != self.monitor:
                # a new curriculum phase: its loss is on another scale, so the plateau
                # count and best value start afresh (the learning rate reached is kept)
                self.sched._reset()
            self.sched.step(val[monitor])
        row: Dict[str, Any] = {c: "" for c in METRIC_COLUMNS}
        row.update(epoch=self.epoch, updates=self.updates, lr=self.opt.param_groups[0]["lr"],
                   rollout_steps=steps, skipped_updates=self._skipped,
                   wall_s=round(time.perf_counter() - t0, 4))
        for k, v in sums.items():
            row["train_loss" if k == "loss" else f"train_{k}"] = v / max(n_ok, 1)
        row.update(val)
        self.metrics.append(row)
        # the online loss grows with K by construction: each rollout length is its own phase
        if monitor in val:
            self._track(val[monitor], phase)
        else:                                      # no validation split: the latest weights
            import copy
            self.best_epoch, self.stale = self.epoch, 0
            self.best_state = copy.deepcopy(self.eval_model.state_dict())
        return row

    def _track(self, value: float, monitor: str) -> None:
        import copy

        if monitor != self.monitor:                   # a new phase: a new best
            self.monitor, self.best_loss, self.stale = monitor, math.inf, 0
        if value < self.best_loss or self.best_state is None:
            self.best_loss, self.best_epoch, self.stale = float(value), self.epoch, 0
            self.best_state = copy.deepcopy(self.eval_model.state_dict())
        else:
            self.stale += 1

    # ----------------------------------------------------------- checkpoint
    def state(self) -> Dict[str, Any]:
        return {
            "config": self.cfg.to_json(),
            "mesh_signature": json.dumps(self.mesh.signature(), sort_keys=True),
            "metrics": json.dumps(self.metrics), "extra": json.dumps({"seed": self.seed}),
            "epoch": self.epoch, "updates": self.updates, "best_epoch": self.best_epoch,
            "stale": self.stale, "best_loss": float(self.best_loss),
            "monitor": self.monitor or "",
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else {},
            "best": self.best_state or {},
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict() if self.sched is not None else {},
            "rng_torch": torch.get_rng_state(), "rng_shuffle": self.shuffle.get_state(),
        }

    def load_state(self, s: Mapping[str, Any]) -> None:
        saved = TrainConfig.from_dict(json.loads(s["config"]))
        if saved != self.cfg:
            diff = {k: (v, getattr(self.cfg, k)) for k, v in saved.to_dict().items()
                    if getattr(self.cfg, k) != v}
            raise ArgumentError("config", diff, "differs from the interrupted run's (saved, "
                                "given) in the output folder", "rerun with the same settings, "
                                "or pass resume=False (--no-resume) / a new output folder")
        self.model.load_state_dict(s["model"])
        if self.ema is not None:
            self.ema.load_state_dict(s["ema"])
        self.opt.load_state_dict(s["optimizer"])
        if self.sched is not None:
            self.sched.load_state_dict(s["scheduler"])
        torch.set_rng_state(s["rng_torch"])
        self.shuffle.set_state(s["rng_shuffle"])
        self.epoch, self.updates = int(s["epoch"]) + 1, int(s["updates"])
        self.best_epoch, self.stale = int(s["best_epoch"]), int(s["stale"])
        self.best_loss, self.monitor = float(s["best_loss"]), (s["monitor"] or None)
        self.best_state = dict(s["best"]) or None
        self.metrics = json.loads(s["metrics"])

    # ------------------------------------------------------------------ run
    def fit(self, resume: bool = True) -> TrainResult:
        cfg, out = self.cfg, self.out
        ckpt = out / "checkpoint.pt" if out is not None else None
        if ckpt is not None and resume and ckpt.is_file():
            self.load_state(load_training_checkpoint(ckpt, self.mesh))
            _log.info("resumed %s after epoch %d", out, self.epoch - 1)
        if self.tb is None and out is not None and self.dist.main:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(str(out / "tensorboard"))
            except Exception:  # tensorboard is optional
                self.tb = None
        done = bool(self.metrics) and self.metrics[-1].get("stopped_early") == 1
        while self.epoch < cfg.epochs and not done:
            row = self.run_epoch()
            _log.info("epoch %d: %s", self.epoch, ", ".join(
                f"{k}={v:.4g}" for k, v in row.items()
                if isinstance(v, float) and k not in ("lr", "wall_s")))
            if cfg.patience and self.stale >= cfg.patience:
                row["stopped_early"] = 1
                done = True
            if self.tb is not None:
                for k, v in row.items():
                    if isinstance(v, (int, float)) and k != "epoch":
                        self.tb.add_scalar(k, v, self.epoch)
            if ckpt is not None and self.dist.main:
                save_training_checkpoint(ckpt, self.state())
                write_metrics(out / "metrics.csv", self.metrics)
            self.epoch += 1
        if self.tb is not None:
            self.tb.close()
        model = self.eval_model
        if self.best_state is not None:
            model.load_state_dict(self.best_state)
        model.eval()
        if out is not None and self.dist.main:
            write_metrics(out / "metrics.csv", self.metrics)
            save_model(model, out / "model.pt", self.features, self.normalizer,
                       extra={"config": cfg.to_dict(), "best_epoch": self.best_epoch,
                              "seed": self.seed, "best_val": self.best_loss},
                       overwrite=True)
            with atomic_path(out / "config.json", ".json") as tmp:
                Path(tmp).write_text(cfg.to_json())
        self.dist.barrier()
        closure = self._closure(model)
        return TrainResult(model, closure, self.features, self.normalizer, self.metrics,
                           self.best_epoch, out)


def _check_tendency_settings(cfg: TrainConfig) -> None:
    """For a non-conservative model of the registry (the cell-tendency references
    ``nodewise``, ``nodewise_mean_free``), refuse the settings it cannot train with: they
    need a face flux (dissipation, weak form), a flux closure in the coarse model (online
    training), a variance head, or flux closures (the ensemble's uncertainty tools)."""
    from ..nn import list_models

    if cfg.model not in list_models(conservative=False):
        return
    refused = [("model_config", bool(cfg.model_config.get("heteroscedastic")), "it has no "
                "variance head: heteroscedastic=True is not supported"),
               ("ensemble", cfg.ensemble > 1, "the ensemble's uncertainty tools and "
                "load_ensemble combine face-flux closures"),
               ("dissipation_weight", cfg.dissipation_weight > 0, "the variance production "
                "P = Σ_f Φ_f (Q_b − Q_a) needs a face flux"),
               ("weak_form_weight", cfg.weak_form_weight > 0, "the weak-form step adds a "
                "face flux to the coarse model"),
               ("online_steps", cfg.max_steps > 0, "online training unrolls the coarse model "
                "with a face-flux closure")]
    for name, bad, why in refused:
        if bad:
            undo = {"model_config": "drop heteroscedastic from {model_config}",
                    "ensemble": "set {ensemble}=1"}.get(name, f"set {{{name}}}=0 (and no "
                                                               "curriculum)")
            raise ArgumentError(name, getattr(cfg, name), f"is not supported by the tendency "
                                f"model {cfg.model!r} ({why}; it predicts cell tendencies)",
                                f"{undo}, or train a flux-form model such as 'mgn'")


# ------------------------------------------------------------------- train()
def train(data: Any, out: Optional[Union[str, os.PathLike]] = None,
          config: Optional[Union[TrainConfig, Mapping[str, Any]]] = None, *,
          resume: bool = True, overwrite: bool = False, progress: bool = True,
          **settings: Any) -> TrainResult:
    """Train a closure on a dataset (see the module docstring).

    Parameters
    ----------
    data : path or xarray.Dataset
        A dataset from :func:`meshclosure.data.generate` (a trajectory dataset for
        online training, the weak-form constraint or ``target="step_mean"``).
    out : path, optional
        The output folder (created); None: nothing is written (no resume).
    config : TrainConfig or dict, optional
        Settings; ``**settings`` override single ones (``epochs=5``).
    resume : bool
        Continue from ``out/checkpoint.pt`` if it exists (default).
    overwrite : bool
        Replace the results of a finished or different run in ``out``.
    progress : bool
        Progress bars (quiet when stderr is not a terminal).

    Returns
    -------
    TrainResult
    """
    if isinstance(data, (str, os.PathLike)) and not Path(data).exists():
        from ..data.dataset import DatasetError
        raise DatasetError(f"dataset {str(data)!r} does not exist or is not a file; generate "
                           "one with `meshclosure generate` (meshclosure.data.generate).")
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(dict(config or {}))
    if settings:
        cfg = cfg.replace(**settings)
    _check_tendency_settings(cfg)
    out_path = Path(out) if out is not None else None
    dist = Distributed(torch.device(cfg.device))
    if out_path is not None:
        if dist.main:               # with overwrite it deletes files: once, not on every rank
            prepare_out(out_path, resume, overwrite)
        dist.barrier()
    dtype = getattr(torch, cfg.dtype)
    shared = TrainingData(data, cfg, dtype)
    if cfg.ensemble == 1:
        return Trainer(data, cfg, out_path, progress=progress, shared=shared).fit(resume)
    seeds = np.random.SeedSequence(cfg.seed).spawn(cfg.ensemble)
    members = []
    if cfg.bootstrap:
        from .uncertainty import bootstrap_indices

        resamples = bootstrap_indices(len(shared.train), cfg.ensemble, cfg.seed)
    for k, ss in enumerate(seeds):
        seed = int(ss.generate_state(1)[0] % (2**31 - 1))
        subset = np.sort(resamples[k]) if cfg.bootstrap else None
        sub = out_path / f"member_{k:02d}" if out_path is not None else None
        if sub is not None and dist.main:
            sub.mkdir(parents=True, exist_ok=True)
        _log.info("ensemble member %d/%d (seed %d)", k + 1, cfg.ensemble, seed)
        members.append(Trainer(data, cfg, sub, seed=seed, subset=subset, progress=progress,
                               shared=shared).fit(resume))
    if out_path is not None and dist.main:
        listing = {"members": [f"member_{k:02d}/model.pt" for k in range(cfg.ensemble)],
                   "config": cfg.to_dict()}
        with atomic_path(out_path / "ensemble.json", ".json") as tmp:
            Path(tmp).write_text(json.dumps(listing, indent=2))
        with atomic_path(out_path / "config.json", ".json") as tmp:
            Path(tmp).write_text(cfg.to_json())
        write_metrics(out_path / "metrics.csv", [dict(r, member=k) for k, m in enumerate(members)
                                                  for r in m.metrics])
    first = members[0]
    return TrainResult(first.model, first.closure, first.features, first.normalizer,
                       first.metrics, first.best_epoch, out_path, members)


