"""Fourier Neural Operator closure on periodic Cartesian grids (non-local).

Li, Kovachki, Azizzadenesheli, Liu, Bhattacharya, Stuart & Anandkumar,
"Fourier Neural Operator for Parametric Partial Differential Equations",
ICLR 2021, arXiv:2010.08895.

Lifting ``P`` (1x1 convolution) to ``width`` channels, ``n_layers`` Fourier layers

    v_{l+1} = σ( F⁻¹[ R_l · F[v_l] ] + W_l v_l ),

with ``F`` the 2-D real DFT (``torch.fft.rfft2``), ``R_l`` complex weights on
the ``modes`` lowest wavenumbers in each direction (``|k_y| < modes``,
``0 <= k_x < modes``; higher modes dropped), ``W_l`` a 1x1 convolution and
``σ`` GELU (not after the last layer), then a projection ``Q`` (two 1x1
convolutions) to ``2 n_vars`` channels: the east and north flux densities of
the staggered grid, mapped to conservative face fluxes by
:func:`meshclosure.nn.cnn.staggered_to_faces` (one value per face, so
``Σ_i V_i div(Φ)_i = 0`` for any weights).

A shift by whole cells multiplies each Fourier coefficient by a phase, which
commutes with the truncation and with ``R_l``, so the model is equivariant
under periodic shifts to rounding.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..mesh import Mesh
from .cnn import _check_periodic_cartesian, _unbatch, face_map, grid_inputs, staggered_to_faces
from .heads import FluxModel, MeshOrGraph
from .registry import register

__all__ = ["SpectralConv2d", "FNO"]


class SpectralConv2d(nn.Module):
    """``v -> F⁻¹[R · F[v]]`` keeping ``modes_y × modes_x`` low wavenumbers (both signs of k_y).

    The complex weights are stored as real tensors with a trailing ``(re, im)``
    axis, so ``.double()`` converts them with the rest of the model.

    Shapes: ``v (batch, channels_in, ny, nx)`` -> ``(batch, channels_out, ny, nx)``.
    """

    def __init__(self, channels_in: int, channels_out: int, modes_y: int, modes_x: int) -> None:
        super().__init__()
        self.modes_y, self.modes_x = modes_y, modes_x
        scale = 1.0 / (channels_in * channels_out)
        shape = (2, channels_in, channels_out, modes_y, modes_x, 2)   # (k_y >= 0 | k_y < 0)
        self.weight = nn.Parameter(scale * torch.rand(shape))

    def forward(self, v: Tensor) -> Tensor:
        ny, nx = v.shape[-2:]
        my, mx = self.modes_y, self.modes_x
        if 2 * my > ny or mx > nx // 2 + 1:
            raise ValueError(f"SpectralConv2d with modes ({my}, {mx}) needs ny >= {2 * my} and "
                             f"nx >= {2 * (mx - 1)}; got grid ({ny}, {nx}). Use fewer modes.")
        w = torch.view_as_complex(self.weight)
        v_ft = torch.fft.rfft2(v)
        out = v_ft.new_zeros(v.shape[0], w.shape[2], ny, nx // 2 + 1)
        out[:, :, :my, :mx] = torch.einsum("bixy,ioxy->boxy", v_ft[:, :, :my, :mx], w[0])
        out[:, :, ny - my:, :mx] = torch.einsum("bixy,ioxy->boxy", v_ft[:, :, ny - my:, :mx],
                                                w[1])
        return torch.fft.irfft2(out, s=(ny, nx))


@register("fno", families=("cartesian",), instead="mgn")
class FNO(FluxModel):
    """Fourier Neural Operator (Li et al. 2021) with staggered-grid face fluxes (periodic only).

    Parameters
    ----------
    mesh : Mesh
        A doubly periodic :func:`~meshclosure.mesh.cartesian` mesh.
    in_features, n_vars : int
        Cell input features and flux variables.
    width : int
        Channels of the Fourier layers.
    modes : int
        Wavenumbers kept per direction (clipped to the grid: ``ny // 2`` in y,
        ``nx // 2 + 1`` in x).
    n_layers : int
        Fourier layers.
    proj_hidden : int
        Hidden channels of the projection.

    Shapes: ``x (n_cells, in_features)`` -> ``(n_faces, n_vars)``;
    ``x (B, n_cells, in_features)`` -> ``(B, n_faces, n_vars)`` (the FFTs batch).

    Examples
    --------
    >>> import torch
    >>> from meshclosure.mesh import cartesian
    >>> mesh = cartesian(8, 8)
    >>> model = FNO(mesh, in_features=1, width=8, modes=3).double()
    >>> phi = model(mesh, torch.randn(mesh.n_cells, 1, dtype=torch.float64))
    >>> phi.shape
    torch.Size([128, 1])
    >>> FNO(mesh, modes=0)
    Traceback (most recent call last):
    ...
    ValueError: modes must be >= 1; got 0. ...
    """

    def __init__(self, mesh: Mesh, in_features: int = 1, n_vars: int = 1, width: int = 32,
                 modes: int = 12, n_layers: int = 4, proj_hidden: int = 64) -> None:
        super().__init__()
        _check_periodic_cartesian(mesh, type(self).__name__)
        if modes < 1 or n_layers < 1:
            raise ValueError(f"modes must be >= 1; got {modes}. And n_layers >= 1; got "
                             f"{n_layers}. E.g. modes=12, n_layers=4.")
        self.in_features, self.n_vars = in_features, n_vars
        self._face_map = face_map(mesh)
        ny, nx = self._face_map.ny, self._face_map.nx
        self.modes = (min(modes, ny // 2), min(modes, nx // 2 + 1))
        self.lift = nn.Conv2d(in_features, width, 1)
        self.spectral = nn.ModuleList(SpectralConv2d(width, width, *self.modes)
                                      for _ in range(n_layers))
        self.pointwise = nn.ModuleList(nn.Conv2d(width, width, 1) for _ in range(n_layers))
        self.project = nn.Sequential(nn.Conv2d(width, proj_hidden, 1), nn.GELU(),
                                     nn.Conv2d(proj_hidden, 2 * n_vars, 1))
        self.act = nn.GELU()

    def staggered(self, mesh_or_graph: MeshOrGraph, x: Tensor | None = None) -> Tensor:
        """East/north flux densities ``(n_vars, 2, ny, nx)`` (``(B, n_vars, 2, ny, nx)`` for
        batched ``x``)."""
        fm, v = grid_inputs(self, mesh_or_graph, x)
        v = self.lift(v)
        last = len(self.spectral) - 1
        for k, (spec, point) in enumerate(zip(self.spectral, self.pointwise)):
            v = spec(v) + point(v)
            if k < last:
                v = self.act(v)
        out = self.project(v).reshape(v.shape[0], self.n_vars, 2, fm.ny, fm.nx)
        return _unbatch(x, mesh_or_graph, out)

    def directed_fluxes(self, mesh_or_graph: MeshOrGraph, x: Tensor | None = None) -> Tensor:
        """``cat([Φ, −Φ])``, shape ``(..., 2 n_faces, n_vars)``."""
        fm = face_map(mesh_or_graph) if isinstance(mesh_or_graph, Mesh) else self._face_map
        phi = staggered_to_faces(fm, self.staggered(mesh_or_graph, x))
        return torch.cat([phi, -phi], -2)

