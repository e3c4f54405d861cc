"""Finite-volume operators on any :class:`~meshclosure.mesh.Mesh`."""
from .operators import divergence, transport_from_streamfunction

__all__ = ["divergence", "transport_from_streamfunction"]
