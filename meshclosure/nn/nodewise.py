"""Non-conservative references: the MeshGraphNet backbone with a per-cell tendency head.

Every other registered model predicts a face flux through an antisymmetric
head, so its tendency ``−div(Φ)`` conserves the transported quantity exactly
whatever its weights. These two do not, on purpose: they are the baselines
the validation hierarchy contrasts the flux-form closures with (how much does
the conservation contract cost or buy?), as in the node-wise tendency models
of much of the learned-parameterization literature.

* ``nodewise``: ``s_i = g(z_i)``, a tendency per cell ``(..., n_cells, n_vars)``
  ([v]/time after denormalisation): no conservation at all.
* ``nodewise_mean_free``: the same with its area-weighted global mean removed,
  ``s_i − Σ_j V_j s_j / Σ_j V_j``: the global total is conserved, local fluxes
  are not (mass can jump across the domain in one step).

They are marked ``conservative = False`` and ``output = "tendency"``: they
are not closures (no face flux) but sources, to be added to a model's
right-hand side (``TracerModel(..., source=...)``); the registry's
conservation tests skip them (:func:`meshclosure.nn.list_models` with
``conservative=True``).

Shapes: ``x (n_cells, F)`` -> ``(n_cells, n_vars)``; ``x (B, n_cells, F)`` ->
``(B, n_cells, n_vars)``.

Examples
--------
>>> import torch
>>> from meshclosure.mesh import healpix
>>> mesh = healpix(2)
>>> torch.manual_seed(0) and None
>>> s = NodewiseTendency(mesh, hidden=8, n_blocks=1).double()(mesh, torch.randn(48, 1,
...     dtype=torch.float64)).detach()
>>> s.shape, abs(float((mesh.cell_volume[:, None] * s).sum())) > 1e-6   # not conservative
(torch.Size([48, 1]), True)
>>> m = NodewiseTendency(mesh, hidden=8, n_blocks=1, remove_mean=True).double()
>>> s = m(mesh, torch.randn(48, 1, dtype=torch.float64)).detach()
>>> abs(float((mesh.cell_volume[:, None] * s).sum())) < 1e-14   # globally conservative
True
"""
from __future__ import annotations

from torch import Tensor, nn

from ..mesh import Mesh
from .heads import MeshOrGraph, _inputs, face_geometry
from .mgn import EncodeProcess, ProcessorBlock
from .mlp import mlp
from .registry import ALL_FAMILIES, register

__all__ = ["NodewiseTendency"]


@register("nodewise", families=ALL_FAMILIES, instead="mgn", conservative=False,
          description="reference: MeshGraphNet backbone, per-cell tendency head (NOT "
                      "conservative)")
class NodewiseTendency(nn.Module):
    """MeshGraphNet backbone with a per-cell tendency head: a non-conservative reference.

    Parameters
    ----------
    mesh : Mesh
        Sets the length scale of the edge geometry, and the cell volumes ``remove_mean``
        falls back on when called with a geometry that carries none (``forward`` uses
        the volumes of the Mesh, or the ``volume`` of the graph, it is given: the
        mean-free output follows a renumbering of the cells).
    in_features, n_vars, hidden, n_blocks, n_layers, latent
        As :class:`~meshclosure.nn.MeshGraphNet`.
    remove_mean : bool
        Remove the area-weighted global mean of each output (``nodewise_mean_free``).
    """

    conservative = False
    output = "tendency"

    def __init__(self, mesh: Mesh, in_features: int = 1, n_vars: int = 1, hidden: int = 64,
                 n_blocks: int = 4, n_layers: int = 2, latent: int | None = None,
                 remove_mean: bool = False) -> None:
        super().__init__()
        latent = latent or hidden
        self.in_features, self.n_vars, self.remove_mean = in_features, n_vars, bool(remove_mean)
        self.encoder = EncodeProcess(mesh, in_features, hidden, latent, n_layers,
                                     [ProcessorBlock(hidden, n_layers) for _ in range(n_blocks)])
        self.head = mlp(latent, hidden, n_vars, n_layers)
        self.register_buffer("volume", mesh.cell_volume.detach().clone())

    def forward(self, mesh_or_graph: MeshOrGraph, x: Tensor | None = None) -> Tensor:
        """Cell tendencies ``(..., n_cells, n_vars)`` in the model's (normalised) units."""
        geo = face_geometry(mesh_or_graph)
        z, _ = self.encoder(geo, _inputs(mesh_or_graph, x, self.in_features))
        s = self.head(z)
        if self.remove_mean:
            V = self._volumes(mesh_or_graph).to(s)[:, None]
            s = s - (V * s).sum(-2, keepdim=True) / V.sum()
        return s

    def _volumes(self, mesh_or_graph: MeshOrGraph) -> Tensor:
        """The cell volumes ``(n_cells,)`` in the cell order of ``mesh_or_graph``: a Mesh's
        ``cell_volume``, a graph's ``volume`` (:func:`~meshclosure.mesh.to_graph`), else
        those of the mesh the model was built on (its cell order)."""
        if isinstance(mesh_or_graph, Mesh):
            return mesh_or_graph.cell_volume
        V = getattr(mesh_or_graph, "volume", None)
        if isinstance(V, Tensor) and V.shape == self.volume.shape:
            return V
        return self.volume


@register("nodewise_mean_free", families=ALL_FAMILIES, instead="mgn", conservative=False,
          description="reference: nodewise with its global mean removed (globally, not "
                      "locally, conservative)")
def nodewise_mean_free(mesh: Mesh, **config) -> NodewiseTendency:
    """``nodewise`` with ``remove_mean=True``."""
    return NodewiseTendency(mesh, remove_mean=True, **config)
