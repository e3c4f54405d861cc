"""Training closures, fitting baselines, and knowing where a closure does not know (DESIGN.md §8).

* :func:`train` / :class:`TrainConfig` — any registered model on any dataset:
  flux/tendency MSE or β-NLL, soft constraints, online training through the
  coarse model, EMA, early stopping, resumable weights-only checkpoints,
  ensembles, ``torchrun`` DDP (:mod:`~meshclosure.train.trainer`,
  :mod:`~meshclosure.train.distributed`, :mod:`~meshclosure.train.checkpoint`).
* :mod:`~meshclosure.train.losses` — the losses;
  :mod:`~meshclosure.train.constraints` — the weak-form residual and the
  dissipation penalty; :mod:`~meshclosure.train.online` — unrolling the coarse
  model with a closure (truncation, per-step checkpointing, curriculum, guard).
* :mod:`~meshclosure.train.baselines`, :mod:`~meshclosure.train.eddy_viscosity`,
  :mod:`~meshclosure.train.calibrate` — calibrated physics baselines, each a
  closure with the face-flux interface; :mod:`~meshclosure.train.diffusivity` —
  ``K_eff(N)`` of any closure.
* :mod:`~meshclosure.train.uncertainty`, :mod:`~meshclosure.train.fallback` —
  ensembles, the variance split, calibration metrics, the fallback to physics;
  :mod:`~meshclosure.train.skill` — offline skill measures.
"""
from .baselines import (ConstantFit, ConvectiveClosure, ConvectiveFit, DiffusivityClosure,
                        PowerLawFit, binned_diffusivity, describe_range, face_gradient,
                        face_mean, fit_constant, fit_convective, fit_power_law)
from .calibrate import (baseline_closures, calibrate, load_calibration, save_calibration)
from .checkpoint import load_training_checkpoint, save_training_checkpoint
from .config import TrainConfig
from .constraints import (project, test_functions, weak_form_loss, weak_form_projections,
                          weak_form_residual)
from .dissipation import dissipation_penalty, positive_production_fraction, variance_production
from .diffusivity import effective_diffusivity, keff_error, plot_effective_diffusivity
from .eddy_viscosity import (EddyViscosityClosure, EddyViscosityFit, fit_eddy_viscosity,
                             grid_scale, strain_rate, vorticity_gradient)
from .fallback import (FallbackClosure, NonFiniteSpreadError, ThresholdChoice, blend_fluxes,
                       choose_thresholds, fallback_weight)
from .losses import beta_nll, flux_mse, tendency, tendency_mse
from .online import (Curriculum, LastGoodWeights, online_loss, rollout_finite, state_scales,
                     unroll)
from .outputs import METRIC_COLUMNS, load_ensemble
from .skill import PairedDifference, band_projection, large_band_r2, paired_difference, pooled_r2
from .trainer import TrainResult, Trainer, train
from .uncertainty import (EnsembleClosure, VarianceSplit, bootstrap_indices,
                          calibration_summary, crps_ensemble, crps_gaussian, ensemble_predict,
                          fit_variance_scale, interval_coverage, spread_skill_ratio,
                          variance_split)

__all__ = [
    # training
    "train", "TrainConfig", "TrainResult", "Trainer", "METRIC_COLUMNS", "load_ensemble",
    "save_training_checkpoint", "load_training_checkpoint",
    # losses and constraints
    "flux_mse", "tendency", "tendency_mse", "beta_nll", "test_functions", "project",
    "weak_form_projections", "weak_form_residual", "weak_form_loss", "variance_production",
    "dissipation_penalty", "positive_production_fraction",
    # skill
    "pooled_r2", "band_projection", "large_band_r2", "paired_difference", "PairedDifference",
    # online
    "unroll", "online_loss", "state_scales", "rollout_finite", "Curriculum", "LastGoodWeights",
    # baselines
    "face_gradient", "face_mean", "fit_constant", "fit_power_law", "fit_convective",
    "describe_range", "ConstantFit", "PowerLawFit", "ConvectiveFit", "DiffusivityClosure",
    "ConvectiveClosure", "binned_diffusivity", "strain_rate", "vorticity_gradient",
    "grid_scale", "fit_eddy_viscosity", "EddyViscosityFit", "EddyViscosityClosure",
    "calibrate", "save_calibration", "load_calibration", "baseline_closures",
    "effective_diffusivity", "keff_error", "plot_effective_diffusivity",
    # uncertainty
    "VarianceSplit", "variance_split", "EnsembleClosure", "ensemble_predict",
    "interval_coverage", "crps_gaussian", "crps_ensemble", "spread_skill_ratio",
    "fit_variance_scale", "calibration_summary", "bootstrap_indices", "FallbackClosure",
    "fallback_weight", "blend_fluxes", "choose_thresholds", "ThresholdChoice",
    "NonFiniteSpreadError",
]
