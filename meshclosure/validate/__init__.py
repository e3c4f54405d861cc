"""The validation hierarchy (DESIGN.md §9): offline skill, partially coupled runs, long
online runs judged by stability, conservation and emergent statistics, and the report.

* :func:`validate` — every stage for a learned closure next to the calibrated
  baselines, no closure and the truth replay (:mod:`~meshclosure.validate.hierarchy`);
  :func:`write_report` — the report folder (:mod:`~meshclosure.validate.report`).
* :mod:`~meshclosure.validate.metrics` — spatial skill per point then area-averaged
  (Ross et al. 2023), Wasserstein distance, percentiles, similarity scores, spectrum
  distance; :mod:`~meshclosure.validate.spectra` — power spectra (FFT on periodic
  planes, ``anafast`` on HEALPix, least-squares harmonics on other spheres) and scale
  bands.
* :mod:`~meshclosure.validate.offline` — offline skill of any closure on a split, by
  scale band, with coverage, CRPS and spread–skill for probabilistic closures.
* :mod:`~meshclosure.validate.coupled` — the tracer under the truth's flow;
  :mod:`~meshclosure.validate.column` — the single-column model against the
  horizontally averaged ``convection`` truth (profile RMSE, mixed-layer depth, growth).
* :mod:`~meshclosure.validate.online` — long hybrid runs from several truth states:
  time to blow-up, a budget audit every step, emergent statistics, similarity scores.
"""
from .column import (ColumnResult, ColumnTruth, column_truth, growth_rate,
                     mixed_layer_depth_profile, single_column)
from .coupled import CoupledResult, prescribed_flow
from .hierarchy import HEADLINE, ValidationResult, load_closure, validate
from .metrics import (Skill, extremes_distance, percentiles, similarity, similarity_table,
                      skill, spectrum_distance, wasserstein, weighted_corr, weighted_rmse)
from .offline import (TARGETS, Prediction, offline_metrics, offline_table, predict_table,
                      predict_tendencies)
from .online import OnlineResult, budget_terms, online_validation
from .report import REPORT_FILES, write_report
from .spectra import (band_filter, default_band_edges, default_lmax, power_spectrum,
                      spectral_kind, spectrum_kmax)

__all__ = [
    "validate", "ValidationResult", "load_closure", "HEADLINE", "write_report", "REPORT_FILES",
    "Skill", "skill", "wasserstein", "percentiles", "extremes_distance", "similarity",
    "similarity_table", "spectrum_distance", "weighted_rmse", "weighted_corr",
    "power_spectrum", "band_filter", "spectrum_kmax", "default_band_edges", "default_lmax",
    "spectral_kind",
    "offline_metrics", "offline_table", "predict_table", "predict_tendencies", "Prediction",
    "TARGETS",
    "online_validation", "OnlineResult", "budget_terms",
    "prescribed_flow", "CoupledResult", "single_column", "ColumnResult", "ColumnTruth",
    "column_truth", "growth_rate", "mixed_layer_depth_profile",
]
