"""Multi-layer perceptrons: the building block, and a per-face MLP baseline on global coordinates.

:class:`GlobalMLP` (registered as ``"mlp_global"``) is conservative, through
the pairwise head, but deliberately NOT rotation- or translation-invariant:
it sees the cells' positions in global coordinates. It is the baseline that
shows :func:`meshclosure.testing.assert_equivariant` can fail.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..mesh import Mesh
from .heads import (FluxModel, MeshOrGraph, PairwiseHead, _expand, _inputs, batch_shape,
                    face_geometry)
from .layers import mlp
from .registry import ALL_FAMILIES, register

__all__ = ["mlp", "GlobalMLP"]


@register("mlp_global", families=ALL_FAMILIES, instead="mgn")
class GlobalMLP(FluxModel):
    """Non-equivariant baseline: a per-face MLP on global coordinates.

    ``Φ_f = ½ (g(p_a, p_b, x_a, x_b) − g(p_b, p_a, x_b, x_a)) · A_f``.

    ``p`` are the cell centres in GLOBAL coordinates divided by
    ``length_scale`` (the largest centre norm of the mesh it was built for):
    the fluxes conserve exactly but change when the mesh is rotated or
    translated. Use ``"mgn"`` for a model that does not depend on where the
    mesh sits.

    Parameters
    ----------
    mesh : Mesh
        Sets the coordinate dimension and ``length_scale``.
    in_features, n_vars : int
        Cell input features and flux variables.
    hidden, n_layers : int
        Width and depth of ``g``.
    heteroscedastic : bool
        Also return a per-face log-variance.

    Shapes: ``x (n_cells, in_features)`` -> ``(n_faces, n_vars)``;
    ``x (B, n_cells, in_features)`` -> ``(B, n_faces, n_vars)``.
    """

    def __init__(self, mesh: Mesh, in_features: int = 1, n_vars: int = 1, hidden: int = 64,
                 n_layers: int = 2, heteroscedastic: bool = False) -> None:
        super().__init__()
        self.in_features, self.n_vars = in_features, n_vars
        self.length_scale = float(mesh.cell_center.norm(dim=1).max()) or 1.0
        self.head = PairwiseHead(mesh.dim + in_features, n_vars, edge_features=0, hidden=hidden,
                                 n_layers=n_layers, heteroscedastic=heteroscedastic)

    def directed_fluxes(self, mesh_or_graph: MeshOrGraph, x: Tensor | None = None):
        geo = face_geometry(mesh_or_graph)
        x = _inputs(mesh_or_graph, x, self.in_features)
        pos = _expand(geo.pos.to(x.dtype) / self.length_scale, batch_shape(x))
        z = torch.cat([pos, x], -1)
        none = z.new_zeros(geo.edge_index.shape[1], 0)
        return self.head.directed(z, geo, edge_features=none)
