"""GPS-style graph transformer closure: local message passing plus global self-attention.

Rampášek, Galkin, Dwivedi, Luu, Wolf & Beaini, "Recipe for a General,
Powerful, Scalable Graph Transformer", NeurIPS 2022, arXiv:2205.12454.

Encode: as :class:`~meshclosure.nn.MeshGraphNet` (node MLP on the cell inputs,
edge MLP on the directed-edge geometry in the source cell's local frame,
lengths divided by ``length_scale``), optionally with random-walk structural
encodings appended to the cell inputs. Process: ``n_blocks`` GPS layers ::

    h ← h + MP(h, e) + MHA(LN(h))        (MP: MeshGraphNet ProcessorBlock; e updated too)
    h ← h + MLP(LN(h))

where ``MHA`` is multi-head self-attention over ALL cells of the mesh, per
sample (:func:`torch.nn.functional.scaled_dot_product_attention` with the
batch of samples on the one mesh as its batch dim; no cell attends to another
sample).
Decode: node MLP to latents ``z`` and an antisymmetric head
(:mod:`meshclosure.nn.heads`), so the face fluxes conserve exactly whatever
the weights.

Symmetries. No node-index or coordinate encoding enters: attention is
equivariant under any renumbering of the cells, and the local geometry is
the mesh's own local frame, so the model is exactly permutation equivariant
and, on a periodic plane, translation invariant. The optional random-walk
encodings (``rwse=K``: the probabilities ``(P^k)_ii``, ``k = 1..K``, of a
simple random walk on the face graph returning to its start) depend only on
the graph, so they keep both properties and have no sign or basis ambiguity
(unlike Laplacian eigenvectors). On the sphere the (east, north) edge frame
depends on the pole, as for ``"mgn"``: not rotation invariant.

Cost. Global attention costs ``O(n_cells² · hidden)`` time per layer; CPU
memory stays ``O(n_cells · hidden)`` with PyTorch's fused (flash) kernel,
but a math fallback (some dtypes or devices) stores the
``(n_heads, n_cells, n_cells)`` weights. Measured on one CPU thread (shared,
loaded machine) with the defaults (``hidden=64``, 4 heads, 4 layers, 330 433
parameters): forward 9–19 s and forward+backward 27–100 s at 10 242–16 384
cells, against 0.5–1.8 s and 1.6–5.3 s for the local ``"gru"`` model. The model therefore refuses meshes with more than ``max_cells``
cells (default 20 480 = ``icosahedral(5)``) with a :class:`MeshTooLargeError`;
raise ``max_cells`` knowingly (on a GPU), or use ``"mgn"``, ``"fno"`` or
``"chebnet"`` (linear cost) on larger meshes.
"""
from __future__ import annotations


import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._cache import per_mesh
from ..errors import MeshclosureError
from ..mesh import Mesh
from .heads import FluxModel, MeshOrGraph, _expand, _inputs, batch_shape, face_geometry
from .mgn import EncodeProcess, ProcessorBlock, apply_head, flux_head
from .mlp import mlp
from .registry import ALL_FAMILIES, register

__all__ = ["GraphTransformer", "GPSLayer", "MeshTooLargeError", "random_walk_encoding"]



class MeshTooLargeError(MeshclosureError, ValueError):
    """A mesh has more cells than a model with quadratic cost accepts."""


def random_walk_encoding(mesh_or_graph: MeshOrGraph, k: int) -> Tensor:
    """Random-walk landing probabilities ``(P^s)_ii`` for ``s = 1..k`` (float64).

    ``P = D⁻¹ A`` is the simple random walk on the face graph (cells are nodes,
    interior faces undirected edges; boundary faces are not edges). The
    encoding is equivariant under renumbering and invariant under every
    isometry of the mesh; it is zero for odd ``s`` on bipartite graphs (e.g.
    periodic Cartesian grids with even sides) and constant on vertex-transitive
    meshes, so it mainly marks walls, pentagons and irregular cells.
    Cached per Mesh.

    Returns
    -------
    Tensor, shape (n_cells, k)

    Examples
    --------
    >>> from meshclosure.mesh import cartesian
    >>> rw = random_walk_encoding(cartesian(4, 4), 2)
    >>> rw[0].tolist()   # 4 neighbours: back after 2 steps with probability 1/4
    [0.0, 0.25]
    """
    import scipy.sparse as sp

    if isinstance(mesh_or_graph, Mesh):
        cache = per_mesh(mesh_or_graph, "nn.transformer.rwse", dict)
        if k in cache:
            return cache[k]
    geo = face_geometry(mesh_or_graph)
    n = geo.pos.shape[0]
    a, b = (c.cpu().numpy() for c in geo.face_cells)
    adj = sp.coo_matrix((np.ones(2 * len(a)), (np.r_[a, b], np.r_[b, a])), shape=(n, n)).tocsr()
    deg = np.asarray(adj.sum(1)).ravel()
    walk = sp.diags(np.where(deg > 0, 1.0 / np.maximum(deg, 1.0), 0.0)) @ adj
    out = np.zeros((n, k))
    power = sp.identity(n, format="csr")
    for s in range(k):
        power = power @ walk
        out[:, s] = power.diagonal()
    enc = torch.from_numpy(out).to(geo.pos.device)
    if isinstance(mesh_or_graph, Mesh):
        cache[k] = enc
    return enc


class GPSLayer(nn.Module):
    """One GPS layer: local message passing + global multi-head attention + MLP.

    ``h ← h + MP(h, e) + MHA(LN(h))``, then ``h ← h + MLP(LN(h))``; the edge
    latents ``e`` are updated by the message-passing block.

    Shapes: ``h (..., n_cells, hidden)``, ``edge_index (2, n_edges)``,
    ``e (..., n_edges, hidden)`` -> same shapes (batch first; attention per sample).
    """

    def __init__(self, hidden: int, n_heads: int = 4, n_layers: int = 2) -> None:
        super().__init__()
        if hidden % n_heads:
            raise ValueError(f"hidden={hidden} must be a multiple of n_heads={n_heads} (each "
                             f"head gets hidden // n_heads channels); change one of them.")
        self.n_heads = n_heads
        self.local = ProcessorBlock(hidden, n_layers)
        self.attn_norm = nn.LayerNorm(hidden)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.attn_out = nn.Linear(hidden, hidden)
        self.mlp_norm = nn.LayerNorm(hidden)
        self.mlp = mlp(hidden, 2 * hidden, hidden, n_layers=1)

    def attention(self, a: Tensor) -> Tensor:
        """Multi-head self-attention over all cells of each sample, ``(..., n_cells, hidden)``
        -> same."""
        batch, (n, c) = a.shape[:-2], a.shape[-2:]
        a = a.reshape(-1, n, c)                                  # (B, n, c); B = 1 unbatched
        qkv = self.qkv(a).view(a.shape[0], n, 3, self.n_heads, c // self.n_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)           # each (B, heads, n, c/heads)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.attn_out(out.transpose(1, 2).reshape(*batch, n, c))

    def forward(self, h: Tensor, edge_index: Tensor, e: Tensor) -> tuple[Tensor, Tensor]:
        h_local, e = self.local(h, edge_index, e)                # h + MP(h, e)
        h = h_local + self.attention(self.attn_norm(h))
        return h + self.mlp(self.mlp_norm(h)), e


@register("transformer", families=ALL_FAMILIES, instead="mgn")
class GraphTransformer(FluxModel):
    """GPS graph transformer (local MP + global attention) with an antisymmetric flux head.

    Parameters
    ----------
    mesh : Mesh
        Sets ``length_scale`` (mean centre distance) for the edge geometry.
    in_features, n_vars : int
        Cell input features and flux variables.
    hidden : int
        Width of node and edge latents (a multiple of ``n_heads``).
    n_blocks : int
        GPS layers.
    n_heads : int
        Attention heads.
    n_layers : int
        Hidden layers of the encoder/processor/decoder MLPs.
    latent : int, optional
        Width of the decoded node latents ``z`` (default ``hidden``).
    head : {"pairwise", "potential"}
    heteroscedastic : bool
        Return a :class:`~meshclosure.nn.FluxPrediction` ``(mean, log_var)``.
    rwse : int
        Number of random-walk structural encodings appended to the inputs
        (:func:`random_walk_encoding`); 0 disables them.
    max_cells : int
        Largest mesh accepted (global attention is quadratic in ``n_cells``).

    Shapes: ``x (n_cells, in_features)`` -> ``(n_faces, n_vars)``;
    ``x (B, n_cells, in_features)`` -> ``(B, n_faces, n_vars)``.

    Examples
    --------
    >>> import torch
    >>> from meshclosure.mesh import icosahedral
    >>> from meshclosure.fv import divergence
    >>> mesh = icosahedral(1)
    >>> model = GraphTransformer(mesh, hidden=8, n_heads=2, n_blocks=1).double()
    >>> phi = model(mesh, torch.randn(mesh.n_cells, 1, dtype=torch.float64)).detach()
    >>> phi.shape, abs(float((mesh.cell_volume[:, None] * divergence(mesh, phi)).sum())) < 1e-12
    (torch.Size([120, 1]), True)
    >>> GraphTransformer(mesh, hidden=8, n_heads=2, max_cells=50)(mesh, torch.randn(80, 1))
    Traceback (most recent call last):
    ...
    meshclosure.nn.transformer.MeshTooLargeError: GraphTransformer: the mesh has n_cells=80 > max_cells=50. ...
    """

    def __init__(self, mesh: Mesh, in_features: int = 1, n_vars: int = 1, hidden: int = 64,
                 n_blocks: int = 4, n_heads: int = 4, n_layers: int = 2,
                 latent: int | None = None, head: str = "pairwise",
                 heteroscedastic: bool = False, rwse: int = 0,
                 max_cells: int = 20_480) -> None:
        super().__init__()
        if rwse < 0:
            raise ValueError(f"rwse={rwse} must be >= 0 (number of random-walk encodings).")
        latent = latent or hidden
        self.in_features, self.n_vars, self.head_kind = in_features, n_vars, head
        self.rwse, self.max_cells = rwse, max_cells
        self.encoder = EncodeProcess(mesh, in_features + rwse, hidden, latent, n_layers,
                                     [GPSLayer(hidden, n_heads, n_layers) for _ in range(n_blocks)])
        self.head = flux_head(head, latent, n_vars, hidden, n_layers, heteroscedastic)

    def directed_fluxes(self, mesh_or_graph: MeshOrGraph, x: Tensor | None = None):
        geo = face_geometry(mesh_or_graph)
        n_cells = geo.pos.shape[0]
        if n_cells > self.max_cells:
            raise MeshTooLargeError(
                f"{type(self).__name__}: the mesh has n_cells={n_cells} > max_cells="
                f"{self.max_cells}. Global attention costs O(n_cells²) time; build the model "
                f"with a larger max_cells= if you accept that, or use 'mgn', 'fno' or "
                f"'chebnet' (linear cost) on meshes this large.")
        x = _inputs(mesh_or_graph, x, self.in_features)
        if self.rwse:
            rw = random_walk_encoding(mesh_or_graph, self.rwse).to(x)
            x = torch.cat([x, _expand(rw, batch_shape(x))], -1)
        z, e = self.encoder(geo, x)
        return apply_head(self.head, self.head_kind, z, geo, e)
