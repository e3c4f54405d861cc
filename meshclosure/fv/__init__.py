"""Finite-volume operators on any :class:`~meshclosure.mesh.Mesh` (DESIGN.md §6)."""
from .gradients import (LeastSquaresGradient, cell_to_vertex, face_gradient_normal,
                       face_interpolate, gradient)
from .diffusion import boundary_diffusive_flux, diffusive_flux, face_normal_derivative, laplacian
from .operators import (boundary_transport_from_streamfunction, divergence,
                        transport_from_streamfunction)
from .poisson import PoissonSolver, laplacian_matrix, vertex_streamfunction

__all__ = [
    "divergence", "transport_from_streamfunction", "boundary_transport_from_streamfunction",
    "gradient", "LeastSquaresGradient", "face_interpolate", "face_gradient_normal",
    "cell_to_vertex", "laplacian", "diffusive_flux", "boundary_diffusive_flux",
    "face_normal_derivative", "PoissonSolver", "laplacian_matrix", "vertex_streamfunction",
]
