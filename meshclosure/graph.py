"""A :class:`~meshclosure.mesh.Mesh` and cell fields as a ``torch_geometric`` graph.

The code lives in :mod:`meshclosure.mesh.graph` (the mesh builds its own
graph); this module is its public name.
"""
from .mesh.graph import EDGE_FEATURES, local_frame, to_graph

__all__ = ["to_graph", "local_frame", "EDGE_FEATURES"]
