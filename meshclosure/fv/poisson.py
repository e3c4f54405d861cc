"""Poisson equation ``∇²ψ = ζ`` at cells: factorized once, differentiable (DESIGN.md §6).

The matrix is exactly the operator of :func:`~meshclosure.fv.diffusion.laplacian`
(with or without its non-orthogonal correction), assembled in scipy.sparse
from the same precomputed face coefficients, so ``solve(laplacian(ψ))``
returns ``ψ`` (minus its mean on closed domains) to rounding::

    L = D diag(A) N,      N = two-point part + correction (both linear in q)

with ``N`` the face-normal-derivative matrix ``(n_faces, n_cells)`` and ``D``
the divergence ``(n_cells, n_faces)``. It is factorized once in float64
with SuperLU (``scipy.sparse.linalg.splu``) in the volume-scaled form
``S = diag(V) L`` (symmetric without the correction).

Closed domains (sphere, doubly periodic plane): ``L`` has the constants as
null space and ``Σ_i V_i (Lq)_i = 0``. The solver projects ``ζ`` onto
``Σ V ζ = 0`` (removes its area-weighted mean: the compatible part), pins
``ψ_0 = 0``, solves the reduced system and removes the area-weighted mean
of ``ψ``: the unique solution with ``Σ V ψ = 0``. Bounded domains (any
boundary face): ``ψ = 0`` at every boundary face centre (walls), two-point
Dirichlet flux ``(ψ_b − ψ_i) A_b/δ_b``.

Gradients flow through a custom autograd function whose backward applies
the transposed solve with the same factorization (``trans='T'``); the
transposed map is itself differentiable, so higher derivatives work too.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..mesh import Mesh
from .gradients import cell_to_vertex
from .diffusion import _geometry
from .operators import _check_rows

__all__ = ["PoissonSolver", "laplacian_matrix", "vertex_streamfunction"]


def laplacian_matrix(mesh: Mesh, correction: bool = True, dirichlet: bool | None = None):
    """The discrete Laplacian of :func:`~meshclosure.fv.diffusion.laplacian` as a sparse matrix.

    Parameters
    ----------
    mesh : Mesh
    correction : bool
        Include the non-orthogonal correction (default), or only the
        two-point part (then ``diag(V) L`` is symmetric).
    dirichlet : bool, optional
        Add the ``q = 0`` Dirichlet boundary flux on boundary faces (default:
        when the mesh has boundary faces); ``False`` gives walls (no flux).

    Returns
    -------
    scipy.sparse.csr_matrix, shape (n_cells, n_cells), float64
        ``L`` with ``(L q)_i = ∇²q_i`` (units 1/length²).
    """
    import scipy.sparse as sp

    geo = _geometry(mesh)
    if dirichlet is None:
        dirichlet = mesh.n_boundary_faces > 0
    np_ = lambda t: t.detach().cpu().double().numpy() if t.is_floating_point() \
        else t.detach().cpu().numpy()  # noqa: E731
    n, nf = mesh.n_cells, mesh.n_faces
    a, b = np_(mesh.face_cells[0]), np_(mesh.face_cells[1])
    faces = np.arange(nf)
    tp = np_(geo.two_point)
    normal = sp.csr_matrix((np.r_[tp, -tp], (np.r_[faces, faces], np.r_[b, a])), shape=(nf, n))
    if correction:
        i, j, coef = np_(geo.i), np_(geo.j), np_(geo.coef)
        k = coef.shape[1]
        rows = (i[:, None] * k + np.arange(k)).ravel()
        fit = sp.csr_matrix((np.r_[coef.ravel(), -coef.ravel()],
                             (np.r_[rows, rows], np.r_[np.repeat(j, k), np.repeat(i, k)])),
                            shape=(n * k, n))
        cols = np.r_[(a[:, None] * k + np.arange(k)).ravel(), (b[:, None] * k + np.arange(k)).ravel()]
        forms = sp.csr_matrix((np.r_[np_(geo.m_a).ravel(), np_(geo.m_b).ravel()],
                               (np.r_[np.repeat(faces, k), np.repeat(faces, k)], cols)),
                              shape=(nf, n * k))
        normal = normal + forms @ fit
    vol = np_(mesh.cell_volume)
    area = np_(mesh.face_area)
    div = sp.csr_matrix((np.r_[area / vol[a], -area / vol[b]], (np.r_[a, b], np.r_[faces, faces])),
                        shape=(n, nf))
    lap = (div @ normal).tocsr()
    if dirichlet and mesh.n_boundary_faces:
        bc = np_(mesh.boundary_face_cell)
        diag = np.bincount(bc, np_(mesh.boundary_face_area) / np_(geo.delta_b), minlength=n)
        lap = (lap - sp.diags(diag / vol)).tocsr()
    lap.sum_duplicates()
    return lap


class _Solve(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, zeta: Tensor, solver: "PoissonSolver") -> Tensor:
        ctx.solver = solver
        return solver._apply(zeta, transpose=False)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple:
        return _SolveT.apply(grad, ctx.solver), None


class _SolveT(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, grad: Tensor, solver: "PoissonSolver") -> Tensor:
        ctx.solver = solver
        return solver._apply(grad, transpose=True)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple:
        return _Solve.apply(grad, ctx.solver), None


class PoissonSolver:
    """Solve ``∇²ψ = ζ`` for ``ψ`` at cells with a once-factorized sparse matrix.

    Parameters
    ----------
    mesh : Mesh
    correction : bool
        Invert the full operator of :func:`~meshclosure.fv.diffusion.laplacian`
        including its non-orthogonal correction (default; consistent on
        HEALPix and icosahedral meshes), or only its two-point part
        (``laplacian(..., correction=False)``; symmetric, but inconsistent on
        non-orthogonal meshes).

    Notes
    -----
    Closed domains: the returned ``ψ`` has zero area-weighted mean and solves
    ``∇²ψ = ζ − ⟨ζ⟩`` (``⟨·⟩`` the area-weighted mean). Bounded domains:
    ``ψ = 0`` on all boundary faces. The factorization is float64 on the
    CPU; float32 inputs are solved in float64 and cast back, GPU tensors are
    copied to the CPU and back (a synchronisation per solve).

    Examples
    --------
    >>> import torch
    >>> from meshclosure.mesh import healpix
    >>> from meshclosure.fv.diffusion import laplacian
    >>> mesh = healpix(4)
    >>> solver = PoissonSolver(mesh)
    >>> psi = mesh.cell_center[:, 2] ** 2            # not mean-free
    >>> back = solver(laplacian(mesh, psi))
    >>> mean = (mesh.cell_volume * psi).sum() / mesh.cell_volume.sum()
    >>> float((back - (psi - mean)).abs().max()) < 1e-12
    True
    >>> solver(torch.zeros(5))
    Traceback (most recent call last):
    ...
    ValueError: zeta must have n_cells = 192 rows (dim 0); got shape (5,). ...
    """

    def __init__(self, mesh: Mesh, correction: bool = True) -> None:
        from scipy.sparse.linalg import splu

        self.mesh = mesh
        self.correction = bool(correction)
        self.closed = mesh.n_boundary_faces == 0
        self.volume = mesh.cell_volume.detach().cpu().double().numpy()
        lap = laplacian_matrix(mesh, correction=self.correction, dirichlet=not self.closed)
        scaled = (lap.multiply(self.volume[:, None])).tocsc()   # S = diag(V) L
        if self.closed:
            scaled = scaled[1:, 1:]                            # pin ψ_0 = 0
        self._lu = splu(scaled.tocsc())
        self.matrix = lap

    def _remove_mean(self, x: np.ndarray) -> np.ndarray:
        """``P x = x − 1 (Vᵀx)/ΣV``: remove the area-weighted mean."""
        return x - (self.volume @ x) / self.volume.sum()

    def _remove_mean_t(self, x: np.ndarray) -> np.ndarray:
        """``Pᵀ x = x − V (1ᵀx)/ΣV``, the transpose of :meth:`_remove_mean`."""
        return x - self.volume[:, None] * x.sum(0) / self.volume.sum()

    def _apply(self, x: Tensor, transpose: bool) -> Tensor:
        """``G x`` or ``Gᵀ x`` (float64, CPU), ``G = P E S_r⁻¹ E' diag(V) P`` on closed
        domains (``E'`` drops the pinned row, ``E`` inserts ψ_0 = 0) and
        ``G = S⁻¹ diag(V)`` on bounded ones."""
        flat = x.detach().reshape(self.mesh.n_cells, -1).cpu().double().numpy()
        if not transpose:
            rhs = self._remove_mean(flat) if self.closed else flat
            out = self._solve(self.volume[:, None] * rhs, "N")
            out = self._remove_mean(out) if self.closed else out
        else:
            rhs = self._remove_mean_t(flat) if self.closed else flat
            out = self.volume[:, None] * self._solve(rhs, "T")
            out = self._remove_mean_t(out) if self.closed else out
        out = torch.from_numpy(np.ascontiguousarray(out)).reshape(x.shape)
        return out.to(device=x.device, dtype=x.dtype)

    def _solve(self, rhs: np.ndarray, trans: str) -> np.ndarray:
        if not self.closed:
            return self._lu.solve(rhs, trans=trans)
        out = np.zeros_like(rhs)
        out[1:] = self._lu.solve(np.ascontiguousarray(rhs[1:]), trans=trans)
        return out

    def solve(self, zeta: Tensor) -> Tensor:
        """``ψ`` with ``∇²ψ = ζ`` (see class notes).

        Parameters
        ----------
        zeta : Tensor, shape (n_cells, ...)
            Right-hand side (e.g. relative vorticity, 1/time); float32 or
            float64, any device; differentiable.

        Returns
        -------
        Tensor, shape (n_cells, ...)
            ``ψ`` in ``zeta``'s dtype and device (units [ζ]·length²).
        """
        if not isinstance(zeta, Tensor):
            raise TypeError(f"zeta must be a torch.Tensor; got {type(zeta).__name__}. "
                            "Wrap it with torch.as_tensor(zeta).")
        _check_rows("zeta", zeta, self.mesh.n_cells, "n_cells")
        if not zeta.is_floating_point():
            raise TypeError(f"zeta must be a floating-point tensor; got dtype {zeta.dtype}. "
                            "Pass zeta.double() or zeta.float().")
        return _Solve.apply(zeta, self)

    __call__ = solve


def vertex_streamfunction(mesh: Mesh, psi_cell: Tensor, wall_value: float = 0.0) -> Tensor:
    """Streamfunction at vertices for :func:`~meshclosure.fv.transport_from_streamfunction`.

    :func:`~meshclosure.fv.gradients.cell_to_vertex` (area-weighted mean of the
    cells around each vertex), then ``wall_value`` on every vertex of a
    boundary face, so that walls carry no transport (``U_b = ψ(v0) − ψ(v1) = 0``).
    On closed meshes this is ``cell_to_vertex``.

    Parameters
    ----------
    mesh : Mesh
    psi_cell : Tensor, shape (n_cells, ...)
    wall_value : float
        ``ψ`` on the walls (the solver's Dirichlet value, 0).

    Returns
    -------
    Tensor, shape (n_vertices, ...)

    Examples
    --------
    >>> import torch
    >>> from meshclosure.mesh import cartesian
    >>> from meshclosure.fv import divergence, transport_from_streamfunction
    >>> from meshclosure.fv.operators import boundary_transport_from_streamfunction
    >>> mesh = cartesian(6, 6, 1.0, 1.0, periodic=False)
    >>> psi_v = vertex_streamfunction(mesh, torch.rand(mesh.n_cells, dtype=torch.float64))
    >>> float(boundary_transport_from_streamfunction(mesh, psi_v).abs().max())
    0.0
    >>> vertex_streamfunction(mesh, torch.rand(3))
    Traceback (most recent call last):
    ...
    ValueError: q must have n_cells = 36 rows (dim 0); got shape (3,). ...
    """
    out = cell_to_vertex(mesh, psi_cell)
    if mesh.n_boundary_faces:
        walls = mesh.boundary_face_vertices.reshape(-1).unique().to(out.device)
        out = out.index_fill(0, walls, float(wall_value))
    return out
