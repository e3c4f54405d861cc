"""Differentiable finite-volume models and time integration (DESIGN.md §6)."""
from .barotropic import BarotropicModel, BoussinesqModel
from .integrate import IntegrationResult, NonFiniteStateError, integrate
from .steppers import STEPPERS, euler_step, get_stepper, rk4_step, ssprk3_step
from .tracer import TracerModel

__all__ = ["TracerModel", "BarotropicModel", "BoussinesqModel", "integrate", "IntegrationResult", "NonFiniteStateError",
           "euler_step", "ssprk3_step", "rk4_step", "STEPPERS", "get_stepper"]
