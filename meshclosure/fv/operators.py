"""Divergence of face fluxes and streamfunction transports (DESIGN.md §2, §6).

Discrete divergence (Gauss theorem over each cell ``i`` of volume ``V_i``)::

    div(Φ)_i = (1/V_i) ( Σ_{f: a_f = i} Φ_f  −  Σ_{f: b_f = i} Φ_f  +  Σ_{boundary f of i} Φ^b_f )

with ``Φ_f`` the integrated flux through face ``f`` from owner ``a`` to
neighbour ``b`` (units: [q]·length²/time on a surface). ``Σ_i V_i div(Φ)_i``
equals the net boundary flux exactly, for any interior ``Φ``.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from .._cache import per_mesh
from .._checks import check_float, check_rows, describe
from .._sparse import csr, sparse_ok, spmm
from ..errors import ArgumentTypeError
from ..mesh import Mesh

__all__ = ["divergence", "transport_from_streamfunction", "ArgumentTypeError", "describe"]


# The shared helpers live in root internal modules; these names stay for fv's own modules.
_sparse_ok, _csr, _spmm = sparse_ok, csr, spmm
_check_rows, _check_float = check_rows, check_float


def _sparse_cached(mesh: Mesh, key: Any, build: Callable[[], Any]) -> Any:
    """Per-mesh cache of sparse operators (dropped with the mesh)."""
    return per_mesh(mesh, ("fv.sparse", key), build)


def _divergence_matrix(mesh: Mesh, dtype: torch.dtype, device: torch.device) -> Tensor:
    """CSR ``(n_cells, n_faces)`` with ``+1/V_a`` at (owner, f) and ``−1/V_b`` at (neighbour, f)."""
    def build() -> Tensor:
        def build64() -> Tensor:
            a, b = mesh.face_cells[0], mesh.face_cells[1]
            inv = 1.0 / mesh.cell_volume.double()
            f = torch.arange(mesh.n_faces, device=a.device)
            return _csr(torch.cat([a, b]), torch.cat([f, f]),
                        torch.cat([inv[a], -inv[b]]), (mesh.n_cells, mesh.n_faces))
        base = _sparse_cached(mesh, ("div", torch.float64, mesh.face_cells.device), build64)
        return base.to(device=device, dtype=dtype)
    return _sparse_cached(mesh, ("div", dtype, device), build)


def divergence(mesh: Mesh, face_flux: Tensor, boundary_flux: Tensor | None = None) -> Tensor:
    """Cell divergence of integrated face fluxes.

    Parameters
    ----------
    mesh : Mesh
    face_flux : Tensor, shape (n_faces, ...)
        Integrated flux ``Φ_f`` through each face, positive owner -> neighbour.
    boundary_flux : Tensor, shape (n_boundary_faces, ...), optional
        Integrated outward flux through boundary faces (walls: zero).

    Returns
    -------
    Tensor, shape (n_cells, ...)
        ``div(Φ)``; the tendency of the transported quantity is ``-div(Φ)``.

    Examples
    --------
    >>> import torch
    >>> from meshclosure.mesh import cartesian
    >>> mesh = cartesian(4, 4, 1.0, 1.0)
    >>> d = divergence(mesh, torch.randn(mesh.n_faces, dtype=torch.float64))
    >>> abs(float((mesh.cell_volume * d).sum())) < 1e-14
    True
    >>> divergence(mesh, torch.ones(3))
    Traceback (most recent call last):
    ...
    ValueError: face_flux must have n_faces = 32 rows (dim 0); got shape (3,). ...
    >>> divergence(mesh, torch.ones(mesh.n_faces, dtype=torch.int64))
    Traceback (most recent call last):
    ...
    meshclosure.errors.ArgumentTypeError: face_flux=Tensor(shape=(32,), dtype=int64): must be a floating-point (or complex) tensor; convert it with face_flux.double() (or .float()).
    """
    _check_rows("face_flux", face_flux, mesh.n_faces, "n_faces")
    _check_float("face_flux", face_flux, complex_ok=True)
    if boundary_flux is not None:
        _check_rows("boundary_flux", boundary_flux, mesh.n_boundary_faces, "n_boundary_faces")
        _check_float("boundary_flux", boundary_flux, complex_ok=True)
    if _sparse_ok(face_flux) and face_flux.numel():
        # one CSR product (Σ over the cell's faces of ±Φ_f / V_i): several times
        # faster than two index_add passes, which run serially on CPU
        out = _spmm(_divergence_matrix(mesh, face_flux.dtype, face_flux.device), face_flux)
        if boundary_flux is not None:
            _check_rows("boundary_flux", boundary_flux, mesh.n_boundary_faces,
                        "n_boundary_faces")
            bc = mesh.boundary_face_cell.to(out.device)
            volume = mesh.cell_volume.to(device=out.device, dtype=out.dtype)[bc]
            contrib = boundary_flux.to(out.dtype) / volume.reshape(
                (-1,) + (1,) * (out.dim() - 1))
            out = out.index_add(0, bc, contrib)
        return out
    a, b = mesh.face_cells[0], mesh.face_cells[1]
    out = face_flux.new_zeros((mesh.n_cells,) + tuple(face_flux.shape[1:]))
    out = out.index_add(0, a, face_flux).index_add(0, b, -face_flux)
    if boundary_flux is not None:
        _check_rows("boundary_flux", boundary_flux, mesh.n_boundary_faces, "n_boundary_faces")
        out = out.index_add(0, mesh.boundary_face_cell, boundary_flux.to(out.dtype))
    volume = mesh.cell_volume.to(out.dtype)
    return out / volume.reshape((-1,) + (1,) * (out.dim() - 1))


def transport_from_streamfunction(mesh: Mesh, psi_vertex: Tensor) -> Tensor:
    """Exact, non-divergent face transports from a streamfunction at vertices.

    ``U_f = ψ(v0_f) − ψ(v1_f)`` with ``(v0, v1)`` counter-clockwise around the
    owner, the discrete form of ``u = k × ∇ψ`` integrated over the face
    (Stokes). Around each cell the sum telescopes, so ``div(U) = 0`` in
    every cell to rounding, whatever ``ψ``.

    Parameters
    ----------
    mesh : Mesh
    psi_vertex : Tensor, shape (n_vertices, ...)
        Streamfunction at the vertices (length²/time).

    Returns
    -------
    Tensor, shape (n_faces, ...)
        Integrated volume transport through each face (length²/time on a
        surface), positive owner -> neighbour.
    """
    _check_rows("psi_vertex", psi_vertex, mesh.n_vertices, "n_vertices")
    return psi_vertex[mesh.face_vertices[0]] - psi_vertex[mesh.face_vertices[1]]


def boundary_transport_from_streamfunction(mesh: Mesh, psi_vertex: Tensor) -> Tensor:
    """Outward transports ``(n_boundary_faces, ...)`` through boundary faces
    from the same streamfunction (zero when ψ is constant along each wall)."""
    _check_rows("psi_vertex", psi_vertex, mesh.n_vertices, "n_vertices")
    return psi_vertex[mesh.boundary_face_vertices[0]] - psi_vertex[mesh.boundary_face_vertices[1]]
