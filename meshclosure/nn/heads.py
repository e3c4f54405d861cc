"""Antisymmetric face-flux heads: node latents -> conservative face fluxes (DESIGN.md §2, §7).

Every head maps node latents ``z (n_cells, n_features)`` to integrated face
fluxes ``Φ (n_faces, n_vars)``, positive from owner ``a`` to neighbour ``b``.
A batch of samples on one shared mesh, ``z (B, n_cells, n_features)``, gives
``(B, n_faces, n_vars)``: cells are gathered along dim −2, so the graph is
never copied per sample. Internally a head evaluates the flux on both senses
of every face (the *directed* form, ``(2 n_faces, n_vars)`` or
``(B, 2 n_faces, n_vars)`` in the order of
``edge_index = cat([face_cells, face_cells.flip(0)], 1)``) such that

    Φ_dir[..., f + n_faces, :] == -Φ_dir[..., f, :]     (bit for bit)

for any weights and inputs. The face flux is ``Φ_dir[:n_faces]``. Since each
face flux leaves one cell and enters the other, ``Σ_i V_i div(Φ)_i = 0`` up to
rounding whatever the network predicts (finite-volume conservation by
construction).

Heads
-----
- :class:`PairwiseHead`: ``Φ_f = ½ (g(z_a, z_b, e_ab) − g(z_b, z_a, e_ba)) · A_f``;
- :class:`PotentialHead`: ``Φ_f = (h(z_a) − h(z_b)) · A_f / d_f``;
- :class:`VectorHead`: ``Φ_f = ½ (w_a + w_b) · n_f A_f``.

Units: on a surface, ``A_f`` is a length, so an integrated flux has units
``[q]·length²/time``; ``g`` and ``w`` are flux densities (``[q]·length/time``)
and ``h`` a potential (``[q]·length²/time``, a diffusivity times ``q``).

Each head takes ``heteroscedastic=True`` to return a :class:`FluxPrediction`
``(mean, log_var)``, both ``(n_faces, n_vars)``: ``log_var`` is symmetric
under exchanging ``a`` and ``b`` (a property of the face, not of its
orientation).

Geometry comes from a :class:`~meshclosure.mesh.Mesh` or from the
``torch_geometric`` graph of :func:`meshclosure.graph.to_graph`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple, Union

import torch
from torch import Tensor, nn

from .._cache import per_mesh
from ..graph import EDGE_FEATURES, to_graph
from ..mesh import Mesh
from .layers import mlp

if TYPE_CHECKING:
    import torch_geometric

__all__ = ["PairwiseHead", "PotentialHead", "VectorHead", "FaceGeometry", "face_geometry",
           "FluxModel", "FluxPrediction", "HEADS", "batch_shape"]

MeshOrGraph = Union[Mesh, "torch_geometric.data.Data"]  # noqa: F821


class FluxPrediction(NamedTuple):
    """Heteroscedastic face fluxes: the mean and the log-variance of each face flux.

    A named tuple, so ``mean, log_var = prediction`` unpacks it; every head and
    model built with ``heteroscedastic=True`` returns one (never a bare tuple).

    Attributes
    ----------
    mean : Tensor, shape (..., n_faces, n_vars)
        Integrated face fluxes, antisymmetric (positive owner -> neighbour).
    log_var : Tensor, shape (..., n_faces, n_vars)
        ``log σ²`` of each face flux, symmetric (the same for both senses of a face).

    Examples
    --------
    >>> import torch
    >>> out = FluxPrediction(torch.ones(3, 1), torch.zeros(3, 1))
    >>> mean, log_var = out
    >>> float(mean.sum()), out.log_var.shape, isinstance(out, tuple)
    (3.0, torch.Size([3, 1]), True)
    """

    mean: Tensor
    log_var: Tensor

    def map(self, fn) -> "FluxPrediction":
        """``FluxPrediction(fn(mean), fn(log_var))``, e.g. ``out.map(lambda t: t[..., :n, :])``."""
        return FluxPrediction(fn(self.mean), fn(self.log_var))


HeadOutput = Union[Tensor, FluxPrediction]


def _faces(out: HeadOutput, n_faces: int) -> HeadOutput:
    """The owner -> neighbour half ``[..., :n_faces, :]`` of a directed output (``[:n_faces]``
    of a 1-D one, as a user's model may return)."""
    def half(t: Tensor) -> Tensor:
        return t[:n_faces] if t.dim() == 1 else t[..., :n_faces, :]
    if isinstance(out, tuple):
        return FluxPrediction(*out).map(half)
    return half(out)


def batch_shape(x: Tensor) -> tuple[int, ...]:
    """The leading batch dims of cell inputs or latents: ``()`` for ``(n_cells, F)``, ``(B,)``
    for ``(B, n_cells, F)``."""
    return tuple(x.shape[:-2])


def _expand(t: Tensor, batch: tuple[int, ...]) -> Tensor:
    """``t (rows, F)`` broadcast to ``(*batch, rows, F)`` without copying (a view)."""
    return t if t.dim() == len(batch) + 2 else t.expand(*batch, *t.shape[-2:])


_AREA = EDGE_FEATURES.index("face_area")
_DIST = EDGE_FEATURES.index("cell_distance")
_NORMAL = slice(EDGE_FEATURES.index("normal_1"), EDGE_FEATURES.index("normal_2") + 1)


class FaceGeometry(NamedTuple):
    """What the heads need from a mesh or graph.

    Attributes
    ----------
    edge_index : LongTensor, shape (2, 2 n_faces)
        Directed edges; edge ``f + n_faces`` is edge ``f`` reversed.
    edge_attr : Tensor, shape (2 n_faces, 6)
        :data:`meshclosure.graph.EDGE_FEATURES`, in the source cell's local frame.
    face_area, cell_distance : Tensor, shape (n_faces,)
    n_faces : int
    pos : Tensor, shape (n_cells, d)
    face_normal : Tensor, shape (n_faces, d), or None
        Global unit normals ``a -> b`` (only known when built from a Mesh).
    is_sphere : bool
    """

    edge_index: Tensor
    edge_attr: Tensor
    face_area: Tensor
    cell_distance: Tensor
    n_faces: int
    pos: Tensor
    face_normal: Tensor | None
    is_sphere: bool

    @property
    def face_cells(self) -> Tensor:
        return self.edge_index[:, : self.n_faces]

    @property
    def sign(self) -> Tensor:
        """``(2 n_faces,)``: +1 for the owner -> neighbour sense, -1 for the other."""
        one = torch.ones(self.n_faces, dtype=self.edge_attr.dtype, device=self.edge_attr.device)
        return torch.cat([one, -one])


def face_geometry(mesh_or_graph: MeshOrGraph) -> FaceGeometry:
    """The :class:`FaceGeometry` of a Mesh (cached per mesh) or of a graph from ``to_graph``."""
    if isinstance(mesh_or_graph, FaceGeometry):
        return mesh_or_graph
    if isinstance(mesh_or_graph, Mesh):
        mesh = mesh_or_graph

        def build() -> FaceGeometry:
            g = to_graph(mesh)
            return FaceGeometry(g.edge_index, g.edge_attr, mesh.face_area, mesh.cell_distance,
                                mesh.n_faces, mesh.cell_center, mesh.face_normal,
                                mesh.is_sphere)
        return per_mesh(mesh, "nn.face_geometry", build)
    g = mesh_or_graph
    for name in ("edge_index", "edge_attr", "n_faces"):
        if getattr(g, name, None) is None:
            raise ValueError(f"graph has no {name!r}; build it with meshclosure.graph.to_graph"
                             f"(mesh) or pass the Mesh itself. Got {type(g).__name__}.")
    n = int(g.n_faces)
    return FaceGeometry(g.edge_index, g.edge_attr, g.edge_attr[:n, _AREA],
                        g.edge_attr[:n, _DIST], n, g.pos,
                        getattr(g, "face_normal", None),
                        g.pos is not None and g.pos.shape[1] == 3)


def _reverse(t: Tensor, n_faces: int) -> Tensor:
    """Row ``e`` of the result is row ``rev(e)`` of ``t`` (the other sense of the same face);
    rows are dim −2, so ``(2 n_faces, F)`` and ``(B, 2 n_faces, F)`` both work."""
    return torch.cat([t[..., n_faces:, :], t[..., :n_faces, :]], -2)


def _check_z(z: Tensor, geo: FaceGeometry, in_features: int, name: str) -> None:
    if z.dim() not in (2, 3) or z.shape[-2] != geo.pos.shape[0] or z.shape[-1] != in_features:
        raise ValueError(f"{name}: z must have shape (n_cells={geo.pos.shape[0]}, "
                         f"in_features={in_features}) or (B, n_cells, in_features); got "
                         f"{tuple(z.shape)}.")


class _Head(nn.Module):
    """Shared plumbing: ``forward`` = the owner -> neighbour half of ``directed``."""

    heteroscedastic: bool

    def directed(self, z: Tensor, mesh_or_graph: MeshOrGraph, **kwargs) -> HeadOutput:
        raise NotImplementedError

    def forward(self, z: Tensor, mesh_or_graph: MeshOrGraph, **kwargs) -> HeadOutput:
        """Face fluxes ``(..., n_faces, n_vars)`` (a :class:`FluxPrediction` when
        heteroscedastic)."""
        geo = face_geometry(mesh_or_graph)
        return _faces(self.directed(z, geo, **kwargs), geo.n_faces)


class PairwiseHead(_Head):
    """``Φ_f = ½ (g(z_a, z_b, e_ab) − g(z_b, z_a, e_ba)) · A_f`` with ``g`` an MLP.

    ``e_ab`` and ``e_ba`` are the features of directed edges ``f`` and
    ``f + n_faces``: by default the geometric ``edge_attr`` of the graph (local
    frame), or any ``edge_features (2 n_faces, edge_features)`` passed to
    ``forward`` (e.g. processed edge latents of a message-passing network).
    ``g`` is a flux density; the area factor makes ``Φ`` an integrated flux.
    With ``heteroscedastic=True`` a second MLP ``s`` gives
    ``log_var_f = ½ (s(z_a, z_b, e_ab) + s(z_b, z_a, e_ba))``.

    Shapes: ``z (n_cells, in_features)`` -> ``(n_faces, n_vars)``;
    ``z (B, n_cells, in_features)`` -> ``(B, n_faces, n_vars)``; ``edge_features``
    ``(2 n_faces, E)`` (shared) or ``(B, 2 n_faces, E)``.

    Examples
    --------
    >>> import torch
    >>> from meshclosure.mesh import healpix
    >>> mesh = healpix(2)
    >>> head = PairwiseHead(4, n_vars=2).double()
    >>> phi = head.directed(torch.randn(mesh.n_cells, 4, dtype=torch.float64), mesh)
    >>> torch.equal(phi[mesh.n_faces:], -phi[:mesh.n_faces])
    True
    >>> head(torch.randn(mesh.n_cells, 3), mesh)
    Traceback (most recent call last):
    ...
    ValueError: PairwiseHead: z must have shape (n_cells=48, in_features=4) or ... got (48, 3).
    """

    def __init__(self, in_features: int, n_vars: int = 1, edge_features: int = len(EDGE_FEATURES),
                 hidden: int = 64, n_layers: int = 2, heteroscedastic: bool = False) -> None:
        super().__init__()
        self.in_features, self.n_vars, self.heteroscedastic = in_features, n_vars, heteroscedastic
        self.g = mlp(2 * in_features + edge_features, hidden, n_vars, n_layers)
        self.s = (mlp(2 * in_features + edge_features, hidden, n_vars, n_layers)
                  if heteroscedastic else None)

    def directed(self, z: Tensor, mesh_or_graph: MeshOrGraph,
                 edge_features: Tensor | None = None) -> HeadOutput:
        """Fluxes on both senses of every face, ``(2 n_faces, n_vars)``; exactly antisymmetric."""
        geo = face_geometry(mesh_or_graph)
        _check_z(z, geo, self.in_features, type(self).__name__)
        e = geo.edge_attr if edge_features is None else edge_features
        src, dst = geo.edge_index
        inp = torch.cat([z.index_select(-2, src), z.index_select(-2, dst),
                         _expand(e.to(z.dtype), batch_shape(z))], -1)
        g = self.g(inp)
        n = geo.n_faces
        area = torch.cat([geo.face_area, geo.face_area]).to(z.dtype)[:, None]
        flux = 0.5 * (g - _reverse(g, n)) * area
        if self.s is None:
            return flux
        s = self.s(inp)
        return FluxPrediction(flux, 0.5 * (s + _reverse(s, n)))


class PotentialHead(_Head):
    """``Φ_f = (h(z_a) − h(z_b)) · A_f / d_f``: a down-gradient flux of a learned potential.

    ``h`` (an MLP, or linear with ``n_layers=0``) maps each cell's latent to
    ``n_vars`` potentials; the head uses no direction, so it is invariant under
    any isometry of the mesh when ``z`` is. With ``heteroscedastic=True``,
    ``log_var_f = ½ (s(z_a) + s(z_b))``.

    Shapes: ``z (..., n_cells, in_features)`` -> ``(..., n_faces, n_vars)``.
    """

    def __init__(self, in_features: int, n_vars: int = 1, hidden: int = 64, n_layers: int = 2,
                 heteroscedastic: bool = False) -> None:
        super().__init__()
        self.in_features, self.n_vars, self.heteroscedastic = in_features, n_vars, heteroscedastic
        self.h = mlp(in_features, hidden, n_vars, n_layers)
        self.s = mlp(in_features, hidden, n_vars, n_layers) if heteroscedastic else None

    def directed(self, z: Tensor, mesh_or_graph: MeshOrGraph) -> HeadOutput:
        """Fluxes on both senses of every face, ``(2 n_faces, n_vars)``; exactly antisymmetric."""
        geo = face_geometry(mesh_or_graph)
        _check_z(z, geo, self.in_features, type(self).__name__)
        src, dst = geo.edge_index
        h = self.h(z)
        ratio = (geo.face_area / geo.cell_distance).to(z.dtype)
        flux = (h[..., src, :] - h[..., dst, :]) * torch.cat([ratio, ratio])[:, None]
        if self.s is None:
            return flux
        s = self.s(z)
        return FluxPrediction(flux, 0.5 * (s[..., src, :] + s[..., dst, :]))


class VectorHead(_Head):
    """``Φ_f = ½ (w_a + w_b) · n_f A_f`` for tangent vectors ``w`` at the cells.

    Two ways to give ``w``:

    - ``frame="local"`` (default): a linear map of ``z`` gives ``n_vars`` vectors
      per cell as components in the cell's local tangent frame (x, y on the
      plane; east, north on the sphere; see :func:`meshclosure.graph.local_frame`).
      Using the normal of directed edge ``e`` in its source frame, ``ñ_e``,
      ``Φ_f = ½ (w_a·ñ_f − w_b·ñ_{f+n}) A_f``: no global coordinates needed.
    - ``w=`` passed to ``forward``: global vectors ``(n_cells, n_vars, d)``,
      ``(B, n_cells, n_vars, d)`` or ``(n_cells, d)`` (e.g. from an equivariant
      network or a velocity input).
      On the sphere each ``w_i`` is projected to the tangent plane at cell ``i``.
      Needs a Mesh (the global normals). With rotated mesh and rotated ``w`` the
      fluxes are unchanged.

    With ``heteroscedastic=True``, ``log_var_f = ½ (s(z_a) + s(z_b))`` with ``s``
    linear in ``z``.

    Shapes: ``z (..., n_cells, in_features)`` -> ``(..., n_faces, n_vars)``.
    """

    def __init__(self, in_features: int = 0, n_vars: int = 1,
                 heteroscedastic: bool = False) -> None:
        super().__init__()
        self.in_features, self.n_vars, self.heteroscedastic = in_features, n_vars, heteroscedastic
        self.w = nn.Linear(in_features, 2 * n_vars) if in_features else None
        self.s = nn.Linear(in_features, n_vars) if heteroscedastic else None
        if heteroscedastic and not in_features:
            raise ValueError("VectorHead(heteroscedastic=True) needs in_features > 0: the "
                             "log-variance is computed from the latents z.")

    def directed(self, z: Tensor | None, mesh_or_graph: MeshOrGraph,
                 w: Tensor | None = None) -> HeadOutput:
        """Fluxes on both senses of every face, ``(2 n_faces, n_vars)``; exactly antisymmetric."""
        geo = face_geometry(mesh_or_graph)
        src, dst = geo.edge_index
        n = geo.n_faces
        area = torch.cat([geo.face_area, geo.face_area])
        if w is None:
            if self.w is None or z is None:
                raise ValueError("VectorHead: give latents z (with in_features > 0) or global "
                                 "vectors w=(n_cells, n_vars, d).")
            _check_z(z, geo, self.in_features, type(self).__name__)
            comp = self.w(z).reshape(*z.shape[:-1], self.n_vars, 2)
            normal = geo.edge_attr[:, _NORMAL].to(comp.dtype)          # (2n, 2), source frame
            g = (comp[..., src, :, :] * normal[:, None, :]).sum(-1)   # w_src · ñ_e
            flux = 0.5 * (g - _reverse(g, n)) * area.to(g.dtype)[:, None]
        else:
            if geo.face_normal is None:
                raise ValueError("VectorHead with global vectors w needs the face normals: pass "
                                 "the Mesh, not a graph.")
            w = w if w.dim() >= 3 else w[:, None, :]               # (..., n_cells, n_vars, d)
            if geo.is_sphere:
                r = (geo.pos / geo.pos.norm(dim=1, keepdim=True)).to(w.dtype)
                w = w - (w * r[:, None, :]).sum(-1, keepdim=True) * r[:, None, :]
            normal = torch.cat([geo.face_normal, -geo.face_normal]).to(w.dtype)
            flux = 0.5 * ((w[..., src, :, :] + w[..., dst, :, :]) * normal[:, None, :]).sum(-1) \
                * area.to(w.dtype)[:, None]
        if self.s is None:
            return flux
        s = self.s(z)
        return FluxPrediction(flux, 0.5 * (s[..., src, :] + s[..., dst, :]))


#: Head classes by the name a backbone's ``head=`` option uses.
HEADS = {"pairwise": PairwiseHead, "potential": PotentialHead, "vector": VectorHead}


class FluxModel(nn.Module):
    """Base of the closure models: cell inputs -> face fluxes through an antisymmetric head.

    Subclasses implement :meth:`directed_fluxes`; ``forward`` returns its
    owner -> neighbour half, so ``model(mesh, x)`` is ``(n_faces, n_vars)``
    (a :class:`FluxPrediction` when heteroscedastic). A batch of samples on the
    one mesh, ``x (B, n_cells, in_features)``, gives ``(B, n_faces, n_vars)``,
    sample ``b`` equal to ``model(mesh, x[b])`` to rounding. The attributes
    ``name`` and ``families`` are set by :func:`meshclosure.nn.register`.
    """

    name: str = ""
    families: tuple[str, ...] = ()

    def directed_fluxes(self, mesh_or_graph: MeshOrGraph, x: Tensor | None = None) -> HeadOutput:
        """Fluxes on both senses of every face, ``(..., 2 n_faces, n_vars)``, with
        ``out[..., f + n_faces, :] == -out[..., f, :]`` exactly."""
        raise NotImplementedError

    def forward(self, mesh_or_graph: MeshOrGraph, x: Tensor | None = None) -> HeadOutput:
        """Face fluxes ``(n_faces, n_vars)`` for cell inputs ``x (n_cells, in_features)``
        (default: the graph's ``x``), or ``(B, n_faces, n_vars)`` for
        ``x (B, n_cells, in_features)``."""
        n = face_geometry(mesh_or_graph).n_faces
        return _faces(self.directed_fluxes(mesh_or_graph, x), n)


def _inputs(mesh_or_graph: MeshOrGraph, x: Tensor | None, in_features: int) -> Tensor:
    """Cell inputs ``(n_cells, in_features)`` or ``(B, n_cells, in_features)`` from ``x`` or
    the graph's ``x``; a 1-D ``x (n_cells,)`` is one feature.

    >>> from meshclosure.mesh import healpix
    >>> _inputs(healpix(1), torch.zeros(3, 12, 2), 2).shape
    torch.Size([3, 12, 2])
    >>> _inputs(healpix(1), torch.zeros(3, 2, 12), 2)
    Traceback (most recent call last):
    ...
    ValueError: x must have shape (n_cells=12, in_features=2) or ... got (3, 2, 12). ...
    """
    if x is None:
        x = getattr(mesh_or_graph, "x", None)
        if x is None:
            raise ValueError("no cell inputs: pass x (n_cells, in_features) or a graph with x.")
    if x.dim() == 1:
        x = x[:, None]
    n_cells = face_geometry(mesh_or_graph).pos.shape[0]
    if x.dim() not in (2, 3) or x.shape[-2:] != (n_cells, in_features):
        raise ValueError(f"x must have shape (n_cells={n_cells}, in_features={in_features}) or "
                         f"(B, n_cells={n_cells}, in_features={in_features}); got "
                         f"{tuple(x.shape)}. Set in_features= when building the model; put "
                         f"the batch first.")
    return x
