"""Periodic Cartesian CNN closure predicting one flux per face of the staggered grid.

On a doubly periodic :func:`~meshclosure.mesh.cartesian` mesh every face is
either the *east* face of a cell ``(j, i)`` (between ``(j, i)`` and
``(j, i+1 mod nx)``) or its *north* face (between ``(j, i)`` and
``(j+1 mod ny, i)``), so a staggered-grid field with channels ``E[j, i]`` and
``N[j, i]`` (flux densities, ``[q]·length/time``) gives one value per face.
:func:`face_map` finds, for each mesh face ``f``, its location and the sign
``s_f = n_f · e`` (``+1`` when the mesh normal owner -> neighbour points
``+x``/``+y``, ``-1`` otherwise, e.g. across the periodic seam), and the
integrated face flux is

    Φ_f = s_f · E_or_N[j_f, i_f] · A_f .

One value per face means the flux leaving one cell enters the other, so the
model conserves exactly (``Σ_i V_i div(Φ)_i = 0``) for any weights; the
directed form is ``cat([Φ, −Φ])``.

:class:`CartesianCNN` is a stack of ``Conv2d`` layers with circular padding,
hence exactly equivariant under periodic shifts by whole cells. (The east/north
outputs sit half a cell from the cell centre where the stencil is centred, so
the model is not mirror-symmetric unless trained to be.)
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from .._cache import per_mesh
from ..mesh import Mesh
from .heads import FluxModel, MeshOrGraph, _inputs
from .registry import UnsupportedMeshError, register

__all__ = ["StaggeredFaceMap", "face_map", "staggered_to_faces", "faces_to_staggered",
           "grid_inputs", "CartesianCNN"]



class StaggeredFaceMap(NamedTuple):
    """Where each face of a periodic Cartesian mesh sits on the staggered grid.

    Attributes
    ----------
    index : LongTensor, shape (n_faces,)
        Flat index into a staggered field of shape ``(2, ny, nx)``:
        ``c * ny * nx + j * nx + i`` with ``c = 0`` for the east face of cell
        ``(j, i)`` and ``c = 1`` for its north face.
    sign : Tensor, shape (n_faces,)
        ``s_f = +1`` if the face normal (owner -> neighbour) points ``+x``/``+y``, else ``-1``.
    area : Tensor, shape (n_faces,)
        Face areas ``A_f``.
    ny, nx : int
    """

    index: Tensor
    sign: Tensor
    area: Tensor
    ny: int
    nx: int

    @property
    def scale(self) -> Tensor:
        """``s_f · A_f``, shape ``(n_faces,)``."""
        return self.sign * self.area


def _check_periodic_cartesian(mesh: Mesh, who: str) -> None:
    if not isinstance(mesh, Mesh) or mesh.family != "cartesian":
        got = mesh.family if isinstance(mesh, Mesh) else type(mesh).__name__
        raise UnsupportedMeshError(
            f"{who} needs a doubly periodic cartesian Mesh (cell (j, i) = j*nx + i); got "
            f"{got!r}. Use model 'mgn' on other meshes.")
    if mesh.info.get("periodic") != "True,True":
        raise UnsupportedMeshError(
            f"{who} needs a doubly periodic cartesian mesh (circular padding); got "
            f"periodic={mesh.info.get('periodic')!r} ({mesh!r}). Build it with "
            f"cartesian(nx, ny, periodic=True), or use model 'mgn' on bounded domains.")


def face_map(mesh: Mesh) -> StaggeredFaceMap:
    """The :class:`StaggeredFaceMap` of a doubly periodic Cartesian mesh (cached per mesh).

    Works for any face order and orientation (e.g. after
    :func:`meshclosure.testing.flip_faces` or ``permute_faces``): each face is
    located from its two cells and the sign read from ``face_normal``.

    Examples
    --------
    >>> from meshclosure.mesh import cartesian
    >>> fm = face_map(cartesian(4, 3))
    >>> fm.index.shape, sorted(fm.index.tolist()) == list(range(24))
    (torch.Size([24]), True)
    >>> face_map(cartesian(4, 4, periodic=False))
    Traceback (most recent call last):
    ...
    meshclosure.nn.registry.UnsupportedMeshError: face_map needs a doubly periodic ...
    """
    return per_mesh(mesh, "nn.cnn.face_map", lambda: _face_map(mesh))


def _face_map(mesh: Mesh) -> StaggeredFaceMap:
    _check_periodic_cartesian(mesh, "face_map")
    nx, ny = int(mesh.info["nx"]), int(mesh.info["ny"])
    a, b = mesh.face_cells
    normal = mesh.face_normal
    is_x = normal[:, 0].abs() > normal[:, 1].abs()
    positive = torch.where(is_x, normal[:, 0], normal[:, 1]) > 0
    west_or_south = torch.where(positive, a, b)             # the cell whose east/north face it is
    j, i = west_or_south // nx, west_or_south % nx
    other = torch.where(positive, b, a)
    expected = torch.where(is_x, j * nx + (i + 1) % nx, ((j + 1) % ny) * nx + i)
    index = (~is_x).long() * (ny * nx) + j * nx + i
    if not torch.equal(other, expected) or not torch.equal(
            torch.sort(index).values, torch.arange(2 * nx * ny, device=index.device)):
        raise UnsupportedMeshError(
            f"face_map: the faces of {mesh!r} do not match the staggered grid of a "
            f"{ny}x{nx} periodic cartesian mesh (were its cells renumbered?). Use the mesh "
            f"straight from cartesian(nx, ny).")
    sign = torch.where(positive, 1.0, -1.0).to(mesh.face_area.dtype)
    return StaggeredFaceMap(index, sign, mesh.face_area, ny, nx)


def staggered_to_faces(fm: StaggeredFaceMap, field: Tensor) -> Tensor:
    """Integrated face fluxes from a staggered field of flux densities.

    Parameters
    ----------
    fm : StaggeredFaceMap
    field : Tensor, shape (..., n_vars, 2, ny, nx)
        ``field[..., v, 0]`` = east flux ``E``, ``field[..., v, 1]`` = north flux ``N``;
        leading dims (a batch) are kept.

    Returns
    -------
    Tensor, shape (..., n_faces, n_vars)
        ``Φ_f = s_f · field[..., v, c_f, j_f, i_f] · A_f``.
    """
    flat = field.reshape(*field.shape[:-3], 2 * fm.ny * fm.nx)
    idx, scale = fm.index.to(field.device), fm.scale.to(field.device, field.dtype)
    return flat[..., idx].transpose(-1, -2) * scale[:, None]


def faces_to_staggered(fm: StaggeredFaceMap, phi: Tensor) -> Tensor:
    """Inverse of :func:`staggered_to_faces`: ``(..., n_faces, n_vars)`` ->
    ``(..., n_vars, 2, ny, nx)``."""
    idx, scale = fm.index.to(phi.device), fm.scale.to(phi.device, phi.dtype)
    out = phi.new_zeros(*phi.shape[:-2], phi.shape[-1], 2 * fm.ny * fm.nx)
    out[..., idx] = (phi / scale[:, None]).transpose(-1, -2)
    return out.reshape(*phi.shape[:-2], phi.shape[-1], 2, fm.ny, fm.nx)


def grid_inputs(model: FluxModel, mesh_or_graph: MeshOrGraph,
                x: Tensor | None) -> tuple[StaggeredFaceMap, Tensor]:
    """The face map and the inputs as images ``(B, in_features, ny, nx)`` (``B = 1`` for
    unbatched ``x (n_cells, in_features)``).

    A graph from :func:`meshclosure.graph.to_graph` carries no grid, so the map
    of the mesh the model was built for is used (faces in the same order).
    """
    if isinstance(mesh_or_graph, Mesh):
        fm = face_map(mesh_or_graph)
    else:
        fm = model._face_map
        n = getattr(mesh_or_graph, "n_faces", None)
        if n is not None and int(n) != fm.index.shape[0]:
            raise ValueError(f"{type(model).__name__}: graph has n_faces={int(n)} but the model "
                             f"was built for a mesh with {fm.index.shape[0]}; pass the Mesh.")
    x = _inputs(mesh_or_graph, x, model.in_features)
    x = x.reshape(-1, *x.shape[-2:])                           # (B, n_cells, in_features)
    return fm, x.transpose(1, 2).reshape(x.shape[0], x.shape[2], fm.ny, fm.nx)


def _unbatch(x: Tensor | None, mesh_or_graph: MeshOrGraph, out: Tensor) -> Tensor:
    """Drop the batch dim of ``out (1, ...)`` when the inputs had none."""
    if x is None:
        x = getattr(mesh_or_graph, "x", None)
    return out[0] if x is not None and x.dim() <= 2 else out


@register("cnn", families=("cartesian",), instead="mgn")
class CartesianCNN(FluxModel):
    """Periodic CNN on the Cartesian grid; one flux per staggered-grid face (periodic only).

    ``n_layers`` convolutions of ``kernel_size`` (odd) with circular padding,
    GELU in between; the last gives ``2 n_vars`` channels, the east and north
    flux densities of each variable, mapped to face fluxes by
    :func:`staggered_to_faces`.

    Parameters
    ----------
    mesh : Mesh
        A doubly periodic :func:`~meshclosure.mesh.cartesian` mesh.
    in_features, n_vars : int
        Cell input features and flux variables.
    hidden : int
        Channels of the hidden layers.
    n_layers : int
        Convolutions (>= 1); the receptive field is ``n_layers (kernel_size - 1) + 1`` cells.
    kernel_size : int
        Odd stencil width.

    Shapes: ``x (n_cells, in_features)`` -> ``(n_faces, n_vars)``;
    ``x (B, n_cells, in_features)`` -> ``(B, n_faces, n_vars)`` (one ``Conv2d`` batch).

    Examples
    --------
    >>> import torch
    >>> from meshclosure.mesh import cartesian
    >>> mesh = cartesian(8, 6)
    >>> model = CartesianCNN(mesh, in_features=2, n_vars=1, hidden=8).double()
    >>> phi = model.directed_fluxes(mesh, torch.randn(mesh.n_cells, 2, dtype=torch.float64))
    >>> phi.shape, torch.equal(phi[mesh.n_faces:], -phi[:mesh.n_faces])
    (torch.Size([192, 1]), True)
    >>> CartesianCNN(cartesian(8, 8, periodic=False))
    Traceback (most recent call last):
    ...
    meshclosure.nn.registry.UnsupportedMeshError: CartesianCNN needs a doubly periodic ...
    """

    def __init__(self, mesh: Mesh, in_features: int = 1, n_vars: int = 1, hidden: int = 32,
                 n_layers: int = 4, kernel_size: int = 3) -> None:
        super().__init__()
        _check_periodic_cartesian(mesh, type(self).__name__)
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and >= 1 (a stencil centred on the "
                             f"cell); got {kernel_size}. Use e.g. kernel_size=3.")
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1; got {n_layers}.")
        self.in_features, self.n_vars = in_features, n_vars
        self._face_map = face_map(mesh)
        widths = [in_features] + [hidden] * (n_layers - 1) + [2 * n_vars]
        layers: list[nn.Module] = []
        for k, (w_in, w_out) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(nn.Conv2d(w_in, w_out, kernel_size, padding=kernel_size // 2,
                                    padding_mode="circular"))
            if k < n_layers - 1:
                layers.append(nn.GELU())
        self.net = nn.Sequential(*layers)

    def staggered(self, mesh_or_graph: MeshOrGraph, x: Tensor | None = None) -> Tensor:
        """East/north flux densities ``(n_vars, 2, ny, nx)`` (``(B, n_vars, 2, ny, nx)`` for
        batched ``x``)."""
        fm, grid = grid_inputs(self, mesh_or_graph, x)
        out = self.net(grid).reshape(grid.shape[0], self.n_vars, 2, fm.ny, fm.nx)
        return _unbatch(x, mesh_or_graph, out)

    def directed_fluxes(self, mesh_or_graph: MeshOrGraph, x: Tensor | None = None) -> Tensor:
        """``cat([Φ, −Φ])``, shape ``(..., 2 n_faces, n_vars)``."""
        fm = face_map(mesh_or_graph) if isinstance(mesh_or_graph, Mesh) else self._face_map
        phi = staggered_to_faces(fm, self.staggered(mesh_or_graph, x))
        return torch.cat([phi, -phi], -2)
