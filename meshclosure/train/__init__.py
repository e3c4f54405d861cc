"""Training closures and fitting baselines (issue 11: built step by step).

So far: :mod:`meshclosure.train.baselines`, eddy diffusivities fitted to
subgrid face fluxes (constant ``K`` and the power law ``K(N) = α N^β``), each
a closure with the face-flux interface.
"""
from .baselines import (ConstantFit, DiffusivityClosure, PowerLawFit, binned_diffusivity,
                        face_gradient, face_mean, fit_constant, fit_power_law)

__all__ = ["face_gradient", "face_mean", "fit_constant", "fit_power_law", "ConstantFit",
           "PowerLawFit", "DiffusivityClosure", "binned_diffusivity"]
