"""Divergence of face fluxes and streamfunction transports (DESIGN.md §2, §6).

Discrete divergence (Gauss theorem over each cell ``i`` of volume ``V_i``)::

    div(Φ)_i = (1/V_i) ( Σ_{f: a_f = i} Φ_f  −  Σ_{f: b_f = i} Φ_f  +  Σ_{boundary f of i} Φ^b_f )

with ``Φ_f`` the integrated flux through face ``f`` from owner ``a`` to
neighbour ``b`` (units: [q]·length²/time on a surface). ``Σ_i V_i div(Φ)_i``
equals the net boundary flux exactly, for any interior ``Φ``.
"""
from __future__ import annotations

import warnings
import weakref
from typing import Any, Callable

import torch
from torch import Tensor

from ..errors import ArgumentError
from ..mesh._mesh import Mesh

__all__ = ["divergence", "transport_from_streamfunction", "ArgumentTypeError", "describe"]


class ArgumentTypeError(ArgumentError, TypeError):
    """An argument of the wrong kind (dtype, type, device): names the argument, what was
    received, the rule and the fix; caught by ``except TypeError`` and ``except ValueError``."""


class _Shown:
    """A value shown in an error message by a short description instead of its ``repr``."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def describe(x: Any) -> Any:
    """A short stand-in for ``x`` in error messages: a tensor as its shape, dtype and device.

    Examples
    --------
    >>> describe(torch.zeros(3, dtype=torch.int64))
    Tensor(shape=(3,), dtype=int64)
    >>> describe(2.5)
    2.5
    """
    if isinstance(x, Tensor):
        dev = "" if x.device.type == "cpu" else f", device={x.device}"
        return _Shown(f"Tensor(shape={tuple(x.shape)}, dtype={str(x.dtype).replace('torch.', '')}"
                      f"{dev})")
    return x

_SPARSE_CACHE: "weakref.WeakKeyDictionary[Mesh, dict]" = weakref.WeakKeyDictionary()


def _sparse_ok(x: Tensor) -> bool:
    """Whether ``x`` can be multiplied by a CSR matrix (float32/float64 on CPU or CUDA)."""
    return x.device.type in ("cpu", "cuda") and x.dtype in (torch.float32, torch.float64)


def _sparse_cached(mesh: Mesh, key: Any, build: Callable[[], Any]) -> Any:
    """Per-mesh cache of sparse operators (dropped with the mesh)."""
    store = _SPARSE_CACHE.setdefault(mesh, {})
    if key not in store:
        store[key] = build()
    return store[key]


def _csr(rows: Tensor, cols: Tensor, vals: Tensor, shape: tuple[int, int]) -> Tensor:
    """CSR matrix from COO triplets (duplicates summed, exact zeros dropped).

    Indices are int32 where they fit: the MKL/cuSPARSE kernels then move a
    third fewer bytes per non-zero than with int64.
    """
    keep = vals != 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # "sparse CSR support is in beta"
        coo = torch.sparse_coo_tensor(torch.stack([rows[keep], cols[keep]]), vals[keep],
                                      shape).coalesce()
        csr = coo.to_sparse_csr()
        if csr.values().numel() < 2**31 - 1 and max(shape) < 2**31 - 1:
            csr = torch.sparse_csr_tensor(csr.crow_indices().to(torch.int32),
                                          csr.col_indices().to(torch.int32), csr.values(),
                                          shape)
    return csr


def _spmm(mat: Tensor, x: Tensor) -> Tensor:
    """``mat @ x`` for a CSR ``mat`` (m, n) and dense ``x`` (n, ...) -> (m, ...), differentiable in ``x``.

    Trailing dimensions (up to 64 columns) go through the matrix-vector kernel
    one column at a time: it is several times faster than the matrix-matrix
    kernel for few columns, and a column of a batched result is then bitwise
    equal to the product with that column alone.
    """
    if x.dim() == 1:
        return mat @ x
    cols = x.reshape(x.shape[0], -1)
    if cols.shape[1] > 64 or cols.shape[1] == 0:
        out = torch.sparse.mm(mat, cols)
    else:
        out = torch.stack([mat @ c for c in cols.t().contiguous()], 1)
    return out.reshape((mat.shape[0],) + tuple(x.shape[1:]))


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


def _check_rows(name: str, x: Tensor, n: int, what: str) -> None:
    """Raise a clear error unless ``x`` is a tensor with ``n`` rows along dim 0."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(x).__name__}. "
                        "Wrap it with torch.as_tensor(...).")
    if x.dim() == 0 or x.shape[0] != n:
        raise ValueError(f"{name} must have {what} = {n} rows (dim 0); got shape "
                         f"{tuple(x.shape)}. Put the {what.split('_')[1]} dimension first.")


def _check_float(name: str, x: Tensor, fix: str = "", complex_ok: bool = False) -> None:
    """Raise :class:`ArgumentTypeError` unless ``x`` has a floating-point dtype.

    Integer or bool values would be silently truncated (or give inf/NaN after a
    division by the cell volumes), so they are refused, never cast.
    """
    if x.is_floating_point() or (complex_ok and x.is_complex()):
        return
    kind = "a floating-point (or complex)" if complex_ok else "a real floating-point"
    raise ArgumentTypeError(name, describe(x), f"must be {kind} tensor",
                            fix or f"convert it with {name}.double() (or .float())")


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
    meshclosure.fv.operators.ArgumentTypeError: face_flux=Tensor(shape=(32,), dtype=int64): must be a floating-point (or complex) tensor; convert it with face_flux.double() (or .float()).
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
