"""A rotation-equivariant message-passing closure on the sphere (e3nn irreps).

Geiger & Smidt, "e3nn: Euclidean Neural Networks", arXiv:2207.09453;
Batzner et al., "E(3)-equivariant graph neural networks for data-efficient
and accurate interatomic potentials" (NequIP), Nat. Commun. 13 (2022) 2453,
doi:10.1038/s41467-022-29939-5; Weiler et al., "3D Steerable CNNs" (gated
nonlinearities), NeurIPS 2018, arXiv:1807.02547.

Inputs are cell features whose layout is an e3nn irreps string: scalars
``0e`` (tracer ``q``, vorticity ``ζ``, stratification ``N``, ...) first, then
3-D vectors ``1o`` in GLOBAL Cartesian components (``∇q``, velocity; tangent
to the sphere). With ``n_scalars=2, n_vectors=1`` the columns of
``x (n_cells, 5)`` are ``[s_0, s_1, v_x, v_y, v_z]`` (irreps ``"2x0e + 1x1o"``);
e3nn's ``1o`` basis is ``(x, y, z)``, so no reordering is needed.

Each layer is the e3nn/NequIP point convolution on the directed edges
``j -> i`` of the mesh graph, followed by a gated nonlinearity::

    m_ji = TP( L1(h)_j ,  Y(r̂_ji) ;  W = MLP(B(|r_ji| / ℓ), A_f / ℓ) )
    h_i' = Gate( SC(h_i) + L2( (1/√k̄) Σ_{j -> i} m_ji ) )

with ``r_ji = r_i − r_j`` the 3-D chord between cell centres, ``Y`` its real
spherical harmonics up to ``lmax``, ``B`` a Gaussian radial basis, ``A_f``
the face length, ``ℓ`` the mean chord length of the mesh the model was built
for, ``k̄`` the mean number of neighbours, ``TP`` a "uvu" tensor product whose
path weights come from the MLP, ``SC``/``L1``/``L2`` equivariant linear maps.
The last convolution (no gate) gives per-cell scalars ``s`` (``0e``) and
vectors ``w`` (``1o``, ``n_vars`` of them).

Heads (antisymmetric by construction, so the fluxes conserve exactly, and
rotation invariant because only invariants of rotated objects enter):

- ``"vector"``: ``Φ_f = ½ (w_a + w_b) · n_f A_f`` with the global 3-D face
  normal (:class:`~meshclosure.nn.heads.VectorHead`, which projects each
  ``w_i`` onto the tangent plane at cell ``i``);
- ``"pairwise"``: ``Φ_f = ½ (g(s_a, s_b, e_ab) − g(s_b, s_a, e_ba)) A_f``
  (:class:`~meshclosure.nn.heads.PairwiseHead`) with invariant edge features
  ``e_ab = (A_f/ℓ, d_f/ℓ, w_a·n_ab, w_b·n_ab)`` and ``n_ba = −n_ab``.

No latitude, longitude, local (east, north) frame or coordinate is used as a
scalar, so rotating the mesh and the vector inputs by any ``R ∈ SO(3)``
leaves the face fluxes unchanged up to rounding (and the node outputs
transform as their irreps). Units: ``w`` and ``g`` are flux densities
(``[q]·length/time``), ``Φ`` an integrated flux, as in the heads.

Dtypes: the model is built in the default dtype and follows ``.double()`` /
``.float()`` like any module; geometry is cast to the dtype of ``x``. e3nn
computes its Wigner-3j constants in the default dtype, and float32 constants
would limit equivariance to ~1e-8 even after ``.double()``, so they are built
in float64, kept, and copied back after every cast and state-dict load.
"""
from __future__ import annotations

import contextlib
import math
from typing import Callable, Iterator

import torch
from e3nn import o3
from e3nn.math import soft_one_hot_linspace
from e3nn.nn import FullyConnectedNet, Gate
from torch import Tensor, nn

from ..mesh import Mesh
from .heads import (FaceGeometry, FluxModel, FluxPrediction, MeshOrGraph, PairwiseHead,
                    VectorHead, _expand, _inputs, batch_shape, face_geometry)
from .registry import UnsupportedMeshError, register

__all__ = ["EquivariantGNN", "EquivariantConv", "input_irreps"]

_SPHERE_FAMILIES = ("healpix", "icosahedral", "cubed", "meshio", "coarsened")
_HEADS = ("vector", "pairwise")


def input_irreps(n_scalars: int = 1, n_vectors: int = 0) -> o3.Irreps:
    """Irreps of cell inputs: ``n_scalars`` scalar columns, then ``n_vectors`` (x, y, z) triples.

    >>> input_irreps(2, 1), input_irreps(2, 1).dim
    (2x0e+1x1o, 5)
    >>> input_irreps(0, 0)
    Traceback (most recent call last):
    ...
    ValueError: input_irreps: need n_scalars + n_vectors >= 1; got n_scalars=0, n_vectors=0.
    """
    if n_scalars < 0 or n_vectors < 0 or n_scalars + n_vectors < 1:
        raise ValueError(f"input_irreps: need n_scalars + n_vectors >= 1; got "
                         f"n_scalars={n_scalars}, n_vectors={n_vectors}.")
    parts = ([(n_scalars, "0e")] if n_scalars else []) + ([(n_vectors, "1o")] if n_vectors else [])
    return o3.Irreps(parts)


def _path_exists(irreps_1: o3.Irreps, irreps_2: o3.Irreps, ir_out: o3.Irrep) -> bool:
    return any(ir_out in ir1 * ir2 for _, ir1 in irreps_1 for _, ir2 in irreps_2)


class EquivariantConv(nn.Module):
    """One e3nn point convolution (NequIP pattern) on directed edges ``src -> dst``.

    ``h_i' = SC(h_i) + L2((1/√k̄) Σ_{e: dst_e = i} TP(L1(h)_{src_e}, Y_e; MLP(b_e)))``.

    Parameters
    ----------
    irreps_in, irreps_out : str or o3.Irreps
        Node features in and out.
    irreps_sh : o3.Irreps
        Edge attributes ``Y`` (spherical harmonics of the edge direction).
    n_edge_scalars : int
        Invariant edge features ``b`` feeding the weight MLP.
    radial_hidden, radial_layers : int
        Width and number of hidden layers of the weight MLP.
    avg_neighbors : float
        ``k̄``, normalizes the sum over incoming edges.

    Shapes: ``h (..., n_cells, irreps_in.dim)``, ``src, dst (n_edges,)``,
    ``sh (n_edges, irreps_sh.dim)``, ``b (n_edges, n_edge_scalars)`` ->
    ``(..., n_cells, irreps_out.dim)`` (a batch of node features shares the edges).
    """

    def __init__(self, irreps_in, irreps_out, irreps_sh, n_edge_scalars: int,
                 radial_hidden: int = 32, radial_layers: int = 1,
                 avg_neighbors: float = 1.0) -> None:
        super().__init__()
        self.irreps_in, self.irreps_out = o3.Irreps(irreps_in), o3.Irreps(irreps_out)
        self.irreps_sh = o3.Irreps(irreps_sh)
        self.norm = 1.0 / math.sqrt(avg_neighbors)
        wanted = {ir for _, ir in self.irreps_out}
        mid, instructions = [], []
        for i, (mul, ir_in) in enumerate(self.irreps_in):
            for j, (_, ir_sh) in enumerate(self.irreps_sh):
                for ir_out in ir_in * ir_sh:
                    if ir_out in wanted:
                        instructions.append((i, j, len(mid), "uvu", True))
                        mid.append((mul, ir_out))
        if not mid:
            raise ValueError(f"EquivariantConv: irreps_in={self.irreps_in} x irreps_sh="
                             f"{self.irreps_sh} produces none of irreps_out={self.irreps_out}; "
                             f"raise lmax or add input irreps.")
        self.irreps_mid = o3.Irreps(mid)
        self.sc = o3.Linear(self.irreps_in, self.irreps_out)
        self.lin1 = o3.Linear(self.irreps_in, self.irreps_in)
        self.tp = o3.TensorProduct(self.irreps_in, self.irreps_sh, self.irreps_mid, instructions,
                                   internal_weights=False, shared_weights=False)
        self.radial = FullyConnectedNet([n_edge_scalars] + [radial_hidden] * radial_layers
                                        + [self.tp.weight_numel], nn.functional.silu)
        self.lin2 = o3.Linear(self.irreps_mid, self.irreps_out)

    def forward(self, h: Tensor, src: Tensor, dst: Tensor, sh: Tensor, b: Tensor) -> Tensor:
        # a batch h (B, n_cells, dim) shares sh and the radial weights (broadcast by e3nn)
        messages = self.tp(self.lin1(h)[..., src, :], sh, self.radial(b))
        agg = messages.new_zeros(*h.shape[:-1], messages.shape[-1]).index_add_(-2, dst, messages)
        return self.sc(h) + self.lin2(agg * self.norm)


def _gate(irreps_hidden: o3.Irreps, irreps_node: o3.Irreps, irreps_sh: o3.Irreps) -> Gate:
    """Gate for the hidden irreps reachable from ``irreps_node ⊗ irreps_sh`` (e3nn's recipe)."""
    reachable = [(mul, ir) for mul, ir in irreps_hidden if _path_exists(irreps_node, irreps_sh, ir)]
    scalars = o3.Irreps([(mul, ir) for mul, ir in reachable if ir.l == 0]).simplify()
    gated = o3.Irreps([(mul, ir) for mul, ir in reachable if ir.l > 0])
    gates = o3.Irreps([(gated.num_irreps, "0e")]) if gated.num_irreps else o3.Irreps("")
    return Gate(scalars, [nn.functional.silu if ir.p == 1 else torch.tanh for _, ir in scalars],
                gates, [torch.sigmoid] * len(gates), gated)


def _cast(geo: FaceGeometry, dtype: torch.dtype) -> FaceGeometry:
    """The geometry in the model's dtype (so float32 models stay float32 on float64 meshes)."""
    return geo._replace(
        edge_attr=geo.edge_attr.to(dtype), face_area=geo.face_area.to(dtype),
        cell_distance=geo.cell_distance.to(dtype), pos=geo.pos.to(dtype),
        face_normal=None if geo.face_normal is None else geo.face_normal.to(dtype))


@contextlib.contextmanager
def _default_float64() -> Iterator[None]:
    """Build e3nn modules in float64: their Wigner-3j constants are computed in the default
    dtype, and float32 constants break equivariance at ~1e-8 even after ``.double()``."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def _restore_after_load(module: "EquivariantGNN", incompatible_keys) -> None:
    module._restore_constants()


@register("e3nn", families=_SPHERE_FAMILIES, instead="mgn")
class EquivariantGNN(FluxModel):
    """Rotation-equivariant e3nn message passing on the sphere, then an invariant flux head.

    Parameters
    ----------
    mesh : Mesh
        A sphere mesh; sets the length scale ``ℓ`` (mean chord between
        neighbouring cell centres) and the mean number of neighbours ``k̄``.
    n_scalars, n_vectors : int
        Input layout: ``n_scalars`` scalar columns, then ``n_vectors`` 3-D
        vectors as (x, y, z) column triples in global Cartesian components.
        Default ``n_vectors=0`` and ``n_scalars = in_features − 3 n_vectors``
        (1 without ``in_features``).
    irreps_in : str, optional
        Any e3nn irreps string for the input columns instead (overrides
        ``n_scalars``/``n_vectors``), e.g. ``"2x0e + 1x1o"``.
    in_features : int, optional
        Total number of input columns, as for every model; must equal the
        dimension of the input irreps.
    n_vars : int
        Flux variables.
    hidden : str or int
        Irreps of the hidden node features (each layer is gated); an int
        ``h`` means ``"{h}x0e + {h//2}x1o + {h//2}x1e"``.
    n_layers : int
        Gated convolution layers; one more, ungated, gives the outputs.
    lmax : int
        Degree of the spherical harmonics of the edge direction.
    n_basis : int
        Gaussian radial basis functions of ``|r_ji| / ℓ`` on ``[0, max_radius]``.
    max_radius : float, optional
        In units of ``ℓ``; default ``max(2, 1.25 × largest chord / ℓ)``.
    radial_hidden, radial_layers : int
        Weight MLP of every convolution.
    latent : int
        Scalar node outputs ``s`` (pairwise head; log-variance of the vector head).
    head : {"vector", "pairwise"}
    heteroscedastic : bool
        Return a :class:`~meshclosure.nn.FluxPrediction` ``(mean, log_var)``;
        ``log_var_f = ½ (t(s_a) + t(s_b))`` (vector head, ``t`` linear) or the
        pairwise head's symmetric one.

    Shapes: ``x (n_cells, irreps_in.dim)`` -> ``(n_faces, n_vars)``;
    ``x (B, n_cells, irreps_in.dim)`` -> ``(B, n_faces, n_vars)``.

    Examples
    --------
    >>> import torch
    >>> from meshclosure.mesh import cartesian, icosahedral
    >>> from meshclosure.testing import assert_equivariant
    >>> mesh = icosahedral(1)
    >>> model = EquivariantGNN(mesh, n_scalars=1, n_vectors=1, hidden="4x0e + 2x1o + 2x1e",
    ...                        n_layers=1).double()
    >>> model.irreps_in, model.in_features
    (1x0e+1x1o, 4)
    >>> x = torch.randn(mesh.n_cells, 4, dtype=torch.float64)
    >>> model(mesh, x).shape
    torch.Size([120, 1])
    >>> assert_equivariant(model, mesh, x, transform="rotation", vectors=[(1, 2, 3)])
    >>> EquivariantGNN(cartesian(4, 4))
    Traceback (most recent call last):
    ...
    meshclosure.nn.registry.UnsupportedMeshError: EquivariantGNN needs a sphere mesh ...
    """

    def __init__(self, mesh: Mesh, n_scalars: int | None = None, n_vectors: int = 0,
                 irreps_in: str | None = None, in_features: int | None = None, n_vars: int = 1,
                 hidden: str | int = "16x0e + 8x1o + 8x1e", n_layers: int = 2, lmax: int = 2,
                 n_basis: int = 8, max_radius: float | None = None, radial_hidden: int = 32,
                 radial_layers: int = 1, latent: int = 16, head: str = "vector",
                 heteroscedastic: bool = False) -> None:
        super().__init__()
        if not mesh.is_sphere:
            raise UnsupportedMeshError(
                f"EquivariantGNN needs a sphere mesh (families {_SPHERE_FAMILIES} on the "
                f"sphere); got {mesh!r}. Use 'mgn' (or 'cnn' on Cartesian grids) on planar "
                f"meshes.")
        if head not in _HEADS:
            raise ValueError(f"head={head!r} is not one of {_HEADS}. Use 'vector' "
                             f"(½(w_a + w_b)·n_f A_f) or 'pairwise' (invariant pairwise MLP).")
        if n_layers < 0 or lmax < 1 or n_basis < 1:
            raise ValueError(f"need n_layers >= 0, lmax >= 1, n_basis >= 1; got n_layers="
                             f"{n_layers}, lmax={lmax}, n_basis={n_basis}.")
        if n_scalars is None:
            n_scalars = 1 if in_features is None else in_features - 3 * n_vectors
        self.irreps_in = (o3.Irreps(irreps_in) if irreps_in is not None
                          else input_irreps(n_scalars, n_vectors))
        if isinstance(hidden, int):
            hidden = f"{hidden}x0e + {max(hidden // 2, 1)}x1o + {max(hidden // 2, 1)}x1e"
        if in_features is not None and in_features != self.irreps_in.dim:
            raise ValueError(f"in_features={in_features} does not match irreps_in="
                             f"{self.irreps_in} (dimension {self.irreps_in.dim}): "
                             f"in_features counts all input columns, 3 per vector. Pass "
                             f"in_features={self.irreps_in.dim} or leave it out.")
        self.in_features, self.n_vars, self.head_kind = self.irreps_in.dim, n_vars, head
        self.heteroscedastic = heteroscedastic
        with _default_float64():
            self._build(mesh, hidden, n_layers, lmax, n_basis, max_radius, radial_hidden,
                        radial_layers, latent)
        # Constant buffers (Wigner 3j, masks) kept in float64, re-copied after every cast and
        # state-dict load, so a float32 -> float64 round trip is exactly equivariant again.
        self._constants = {name: buf.detach().clone() for name, buf in self.named_buffers()
                           if buf.is_floating_point() and buf.numel()}
        self.register_load_state_dict_post_hook(_restore_after_load)
        self.to(torch.get_default_dtype())

    def _build(self, mesh: Mesh, hidden: str, n_layers: int, lmax: int, n_basis: int,
               max_radius: float | None, radial_hidden: int, radial_layers: int,
               latent: int) -> None:
        head, n_vars, heteroscedastic = self.head_kind, self.n_vars, self.heteroscedastic

        a, b = mesh.face_cells
        chord = (mesh.cell_center[b] - mesh.cell_center[a]).double().norm(dim=1)
        self.length_scale = float(chord.mean())
        self.max_radius = float(max_radius if max_radius is not None
                                else max(2.0, 1.25 * float(chord.max()) / self.length_scale))
        self.n_basis = n_basis
        avg_neighbors = 2.0 * mesh.n_faces / mesh.n_cells
        self.irreps_sh = o3.Irreps.spherical_harmonics(lmax)

        n_scalar_out = latent if (head == "pairwise" or heteroscedastic) else 0
        self.n_latent = n_scalar_out
        self.irreps_out = o3.Irreps(([(n_scalar_out, "0e")] if n_scalar_out else [])
                                    + [(n_vars, "1o")])
        conv = dict(irreps_sh=self.irreps_sh, n_edge_scalars=n_basis + 1,
                    radial_hidden=radial_hidden, radial_layers=radial_layers,
                    avg_neighbors=avg_neighbors)
        self.convs, self.gates = nn.ModuleList(), nn.ModuleList()
        irreps = self.irreps_in
        for _ in range(n_layers):
            gate = _gate(o3.Irreps(hidden), irreps, self.irreps_sh)
            self.convs.append(EquivariantConv(irreps, gate.irreps_in, **conv))
            self.gates.append(gate)
            irreps = gate.irreps_out
        self.convs.append(EquivariantConv(irreps, self.irreps_out, **conv))

        if head == "vector":
            self.head = VectorHead(0, n_vars)
            self.log_var = nn.Linear(latent, n_vars) if heteroscedastic else None
        else:
            self.head = PairwiseHead(latent, n_vars, edge_features=2 + 2 * n_vars,
                                     hidden=radial_hidden, heteroscedastic=heteroscedastic)
            self.log_var = None

    def _restore_constants(self) -> None:
        with torch.no_grad():
            for name, value in self._constants.items():
                self.get_buffer(name).copy_(value)

    def _apply(self, fn: Callable, recurse: bool = True):
        super()._apply(fn, recurse)
        if "_constants" in self.__dict__:
            self._restore_constants()
        return self

    def node_outputs(self, mesh_or_graph: MeshOrGraph, x: Tensor | None = None
                     ) -> tuple[Tensor, Tensor]:
        """Per-cell outputs: scalars ``s (..., n_cells, latent or 0)`` (invariant) and vectors
        ``w (..., n_cells, n_vars, 3)`` (rotate with the mesh), global Cartesian components."""
        x = _inputs(mesh_or_graph, x, self.in_features)
        geo = _cast(face_geometry(mesh_or_graph), x.dtype)
        if not geo.is_sphere:
            raise UnsupportedMeshError(f"EquivariantGNN needs cell centres in 3-D (a sphere); "
                                       f"got pos of shape {tuple(geo.pos.shape)}.")
        src, dst = geo.edge_index
        chord = geo.pos[dst] - geo.pos[src]                       # (2 n_faces, 3), r_i − r_j
        sh = o3.spherical_harmonics(self.irreps_sh, chord, normalize=True,
                                    normalization="component")
        length = chord.norm(dim=1) / self.length_scale
        area = torch.cat([geo.face_area, geo.face_area])[:, None] / self.length_scale
        basis = soft_one_hot_linspace(length, 0.0, self.max_radius, self.n_basis,
                                      basis="gaussian", cutoff=False) * math.sqrt(self.n_basis)
        b = torch.cat([basis, area], 1)
        h = x
        for i, conv in enumerate(self.convs):
            h = conv(h, src, dst, sh, b)
            if i < len(self.gates):
                h = self.gates[i](h)
        s, w = h[..., : self.n_latent], h[..., self.n_latent:]
        return s, w.reshape(*h.shape[:-1], self.n_vars, 3)

    def directed_fluxes(self, mesh_or_graph: MeshOrGraph, x: Tensor | None = None):
        x = _inputs(mesh_or_graph, x, self.in_features)
        geo = _cast(face_geometry(mesh_or_graph), x.dtype)
        if geo.face_normal is None:
            raise ValueError("EquivariantGNN needs the global 3-D face normals: pass the Mesh, "
                             "or set graph.face_normal = mesh.face_normal on the graph.")
        s, w = self.node_outputs(mesh_or_graph, x)
        src, dst = geo.edge_index
        if self.head_kind == "vector":
            flux = self.head.directed(None, geo, w=w)
            if self.log_var is None:
                return flux
            t = self.log_var(s)
            return FluxPrediction(flux, 0.5 * (t[..., src, :] + t[..., dst, :]))
        normal = torch.cat([geo.face_normal, -geo.face_normal])    # n_e, source -> target
        area = torch.cat([geo.face_area, geo.face_area])
        dist = torch.cat([geo.cell_distance, geo.cell_distance])
        size = _expand(torch.stack([area, dist], 1) / self.length_scale, batch_shape(s))
        e = torch.cat([size, (w[..., src, :, :] * normal[:, None, :]).sum(-1),
                       (w[..., dst, :, :] * normal[:, None, :]).sum(-1)], -1)
        return self.head.directed(s, geo, edge_features=e)
