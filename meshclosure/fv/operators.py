"""Divergence of face fluxes and streamfunction transports (DESIGN.md §2, §6).

Discrete divergence (Gauss theorem over each cell ``i`` of volume ``V_i``)::

    div(Φ)_i = (1/V_i) ( Σ_{f: a_f = i} Φ_f  −  Σ_{f: b_f = i} Φ_f  +  Σ_{boundary f of i} Φ^b_f )

with ``Φ_f`` the integrated flux through face ``f`` from owner ``a`` to
neighbour ``b`` (units: [q]·length²/time on a surface). ``Σ_i V_i div(Φ)_i``
equals the net boundary flux exactly, for any interior ``Φ``.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..mesh._mesh import Mesh

__all__ = ["divergence", "transport_from_streamfunction"]


def _check_rows(name: str, x: Tensor, n: int, what: str) -> None:
    if x.dim() == 0 or x.shape[0] != n:
        raise ValueError(f"{name} must have {what} = {n} rows (dim 0); got shape "
                         f"{tuple(x.shape)}. Put the {what.split('_')[1]} dimension first.")


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
    """
    _check_rows("face_flux", face_flux, mesh.n_faces, "n_faces")
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
