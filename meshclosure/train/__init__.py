"""Training closures and fitting baselines (DESIGN.md §8).

* :func:`train` / :class:`TrainConfig` — any registered model on any dataset:
  flux/tendency MSE or β-NLL, soft constraints, online training through the
  coarse model, EMA, early stopping, resumable weights-only checkpoints,
  ensembles, ``torchrun`` DDP (:mod:`meshclosure.train.trainer`).
* :mod:`meshclosure.train.losses` — the losses.
* :mod:`meshclosure.train.baselines` — eddy diffusivities fitted to subgrid
  face fluxes (constant ``K``, the power law ``K(N) = α N^β``), each a closure
  with the face-flux interface.
"""
from .baselines import (ConstantFit, DiffusivityClosure, PowerLawFit, binned_diffusivity,
                        face_gradient, face_mean, fit_constant, fit_power_law)
from .checkpoint import load_training_checkpoint, save_training_checkpoint
from .config import TrainConfig
from .losses import beta_nll, flux_mse, tendency, tendency_mse
from .trainer import METRIC_COLUMNS, TrainResult, Trainer, train

__all__ = ["face_gradient", "face_mean", "fit_constant", "fit_power_law", "ConstantFit",
           "PowerLawFit", "DiffusivityClosure", "binned_diffusivity",
           "train", "TrainConfig", "TrainResult", "Trainer", "METRIC_COLUMNS",
           "flux_mse", "tendency", "tendency_mse", "beta_nll",
           "save_training_checkpoint", "load_training_checkpoint"]
