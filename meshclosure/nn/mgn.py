"""MeshGraphNet-style encode–process–decode closure (Pfaff et al. 2021).

Pfaff, Fortunato, Sanchez-Gonzalez & Battaglia, "Learning Mesh-Based
Simulation with Graph Networks", ICLR 2021, arXiv:2010.03409.

Encode: node MLP on the cell inputs, edge MLP on the directed-edge geometry
``edge_attr`` of :func:`meshclosure.graph.to_graph` (displacement and normal
in the source cell's local frame, face area, centre distance; lengths divided
by ``length_scale``). No global coordinate enters, so the model is invariant
under translations of a periodic plane and equivariant under renumbering of
cells and faces.

Process: ``n_blocks`` residual message-passing blocks::

    e'_ij = e_ij + MLP_e([e_ij, h_i, h_j])
    h'_j  = h_j  + MLP_v([h_j, Σ_i e'_ij])

Decode: node MLP to latents ``z``, then an antisymmetric head
(:mod:`meshclosure.nn.heads`): ``"pairwise"`` (``g(z_a, z_b, e_ab)`` with the
processed edge latents) or ``"potential"``. The face fluxes therefore
conserve exactly whatever the weights.

Note: on the sphere the local frame is (east, north), which depends on where
the pole is, so this model is NOT invariant under rotations of the sphere.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.nn import MessagePassing

from ..mesh import Mesh
from .heads import (FaceGeometry, FluxModel, MeshOrGraph, PairwiseHead, PotentialHead, _expand,
                    _inputs, batch_shape, face_geometry)
from .mlp import mlp
from .registry import ALL_FAMILIES, register

__all__ = ["MeshGraphNet", "ProcessorBlock", "EncodeProcess", "flux_head", "apply_head",
           "MP_HEADS"]

_LENGTH_COLUMNS = (0, 1, 4, 5)          # dx_1, dx_2, face_area, cell_distance


class ProcessorBlock(MessagePassing):
    """One residual edge-then-node update (sum aggregation at the target cell).

    Shapes: ``h (n_cells, hidden)``, ``edge_index (2, n_edges)``,
    ``e (n_edges, hidden)`` -> same shapes. A batch on one graph,
    ``h (B, n_cells, hidden)``, gathers and scatters along dim −2 (PyG's
    ``node_dim``), so the graph is shared, not copied; ``e`` may be shared
    ``(n_edges, hidden)`` and comes back ``(B, n_edges, hidden)``.
    """

    def __init__(self, hidden: int, n_layers: int = 2) -> None:
        super().__init__(aggr="add", node_dim=-2)
        self.edge_mlp = mlp(3 * hidden, hidden, hidden, n_layers, layer_norm=True)
        self.node_mlp = mlp(2 * hidden, hidden, hidden, n_layers, layer_norm=True)

    def forward(self, h: Tensor, edge_index: Tensor, e: Tensor) -> tuple[Tensor, Tensor]:
        src, dst = edge_index
        e = _expand(e, batch_shape(h))
        e = e + self.edge_mlp(torch.cat([e, h.index_select(-2, src), h.index_select(-2, dst)], -1))
        n_cells = h.shape[-2]
        agg = self.propagate(edge_index, e=e, size=(n_cells, n_cells))
        return h + self.node_mlp(torch.cat([h, agg], -1)), e

    def message(self, e: Tensor) -> Tensor:  # noqa: D102 (PyG hook)
        return e


#: Heads a message-passing backbone can end in (the vector head needs vector outputs).
MP_HEADS = ("pairwise", "potential")


def flux_head(head: str, latent: int, n_vars: int, hidden: int, n_layers: int,
              heteroscedastic: bool) -> nn.Module:
    """The antisymmetric head of a message-passing backbone: ``"pairwise"`` (fed the
    processed edge latents, width ``hidden``) or ``"potential"``."""
    if head not in MP_HEADS:
        raise ValueError(f"head={head!r} is not one of {MP_HEADS}. Use 'pairwise' (direction-"
                         f"aware) or 'potential' (down-gradient, isotropic).")
    if head == "pairwise":
        return PairwiseHead(latent, n_vars, edge_features=hidden, hidden=hidden,
                            n_layers=n_layers, heteroscedastic=heteroscedastic)
    return PotentialHead(latent, n_vars, hidden=hidden, n_layers=n_layers,
                         heteroscedastic=heteroscedastic)


def apply_head(head: nn.Module, kind: str, z: Tensor, geo: FaceGeometry, e: Tensor):
    """Directed fluxes of :func:`flux_head`'s head for node latents ``z`` and edge latents ``e``."""
    if kind == "pairwise":
        return head.directed(z, geo, edge_features=e)
    return head.directed(z, geo)


class EncodeProcess(nn.Module):
    """Encode (node and edge MLPs), process (``blocks``), decode nodes to latents ``z``.

    The edge input is the directed-edge geometry ``edge_attr`` with its lengths
    divided by ``length_scale`` (the mean centre distance of the mesh the model
    is built for), so the model runs on any mesh or graph. Each block maps
    ``(h, edge_index, e) -> (h, e)``: :class:`ProcessorBlock`, or any layer
    with that signature (the GPS layer of :mod:`meshclosure.nn.transformer`).

    Shapes: ``x (..., n_cells, in_features)`` -> ``z (..., n_cells, latent)``,
    ``e (..., 2 n_faces, hidden)`` (the edge encoder runs once, shared by the batch).
    """

    def __init__(self, mesh: Mesh, in_features: int, hidden: int, latent: int, n_layers: int,
                 blocks: list) -> None:
        super().__init__()
        self.length_scale = float(mesh.cell_distance.double().mean())
        self.node_encoder = mlp(in_features, hidden, hidden, n_layers, layer_norm=True)
        self.edge_encoder = mlp(6, hidden, hidden, n_layers, layer_norm=True)
        self.blocks = nn.ModuleList(blocks)
        self.decoder = mlp(hidden, hidden, latent, n_layers)

    def edge_geometry(self, edge_attr: Tensor, dtype: torch.dtype) -> Tensor:
        """``edge_attr`` with its length columns divided by ``length_scale``."""
        scale = torch.ones(edge_attr.shape[1], dtype=dtype, device=edge_attr.device)
        scale[list(_LENGTH_COLUMNS)] = 1.0 / self.length_scale
        return edge_attr.to(dtype) * scale

    def forward(self, geo: FaceGeometry, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.node_encoder(x)
        e = self.edge_encoder(self.edge_geometry(geo.edge_attr, x.dtype))
        for block in self.blocks:
            h, e = block(h, geo.edge_index, e)
        return self.decoder(h), e


@register("mgn", families=ALL_FAMILIES)
class MeshGraphNet(FluxModel):
    """MeshGraphNet encode–process–decode with an antisymmetric flux head (every mesh family).

    Parameters
    ----------
    mesh : Mesh
        Sets ``length_scale`` (mean centre distance) used to make the edge
        geometry dimensionless; the model then runs on any mesh or graph.
    in_features, n_vars : int
        Cell input features and flux variables.
    hidden : int
        Width of node and edge latents.
    n_blocks : int
        Processor blocks ``K``.
    n_layers : int
        Hidden layers of every MLP.
    latent : int, optional
        Width of the decoded node latents ``z`` (default ``hidden``).
    head : {"pairwise", "potential"}
    heteroscedastic : bool
        Return a :class:`~meshclosure.nn.FluxPrediction` ``(mean, log_var)``.

    Shapes: ``x (n_cells, in_features)`` -> ``(n_faces, n_vars)``;
    ``x (B, n_cells, in_features)`` -> ``(B, n_faces, n_vars)``.

    Examples
    --------
    >>> import torch
    >>> from meshclosure.mesh import healpix
    >>> from meshclosure.fv import divergence
    >>> mesh = healpix(2)
    >>> model = MeshGraphNet(mesh, in_features=1, hidden=8, n_blocks=2).double()
    >>> phi = model(mesh, torch.randn(mesh.n_cells, 1, dtype=torch.float64)).detach()
    >>> phi.shape, abs(float((mesh.cell_volume[:, None] * divergence(mesh, phi)).sum())) < 1e-12
    (torch.Size([96, 1]), True)
    >>> MeshGraphNet(mesh, head="vector")
    Traceback (most recent call last):
    ...
    ValueError: head='vector' is not one of ('pairwise', 'potential'). ...
    """

    def __init__(self, mesh: Mesh, in_features: int = 1, n_vars: int = 1, hidden: int = 64,
                 n_blocks: int = 4, n_layers: int = 2, latent: int | None = None,
                 head: str = "pairwise", heteroscedastic: bool = False) -> None:
        super().__init__()
        latent = latent or hidden
        self.in_features, self.n_vars, self.head_kind = in_features, n_vars, head
        self.encoder = EncodeProcess(mesh, in_features, hidden, latent, n_layers,
                                     [ProcessorBlock(hidden, n_layers) for _ in range(n_blocks)])
        self.head = flux_head(head, latent, n_vars, hidden, n_layers, heteroscedastic)

    def directed_fluxes(self, mesh_or_graph: MeshOrGraph, x: Tensor | None = None):
        geo = face_geometry(mesh_or_graph)
        z, e = self.encoder(geo, _inputs(mesh_or_graph, x, self.in_features))
        return apply_head(self.head, self.head_kind, z, geo, e)
