"""Differentiable finite-volume models and time integration (DESIGN.md §6)."""
from ._closure import ClosureContext, ClosureError, NonFinitePart, first_nonfinite
from .barotropic import BarotropicModel, BoussinesqModel
from .integrate import CAUSES, IntegrationResult, NonFiniteStateError, integrate, rollout
from .steppers import (STAGES, STEPPERS, Stages, current_stage, euler_step, get_stepper,
                       rk4_step, ssprk3_step)
from .tracer import TracerModel
from .vortices import (moving_vortices, moving_vortices_exact, moving_vortices_streamfunction,
                       moving_vortices_transport)

__all__ = ["TracerModel", "BarotropicModel", "BoussinesqModel", "integrate", "IntegrationResult",
           "NonFiniteStateError", "CAUSES", "ClosureError", "NonFinitePart", "first_nonfinite",
           "euler_step", "ssprk3_step", "rk4_step", "STEPPERS", "get_stepper", "rollout",
           "ClosureContext", "STAGES", "Stages", "current_stage", "moving_vortices",
           "moving_vortices_exact", "moving_vortices_streamfunction", "moving_vortices_transport"]
