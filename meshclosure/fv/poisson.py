"""Poisson equation ``∇²ψ = ζ`` at cells: exact, differentiable, fast per mesh (DESIGN.md §6).

The matrix is exactly the operator of :func:`~meshclosure.fv.diffusion.laplacian`
(with or without its non-orthogonal correction), assembled in scipy.sparse
from the same precomputed face coefficients, so ``solve(laplacian(ψ))``
returns ``ψ`` (minus its mean on closed domains) to rounding::

    L = D diag(A) N,      N = two-point part + correction (both linear in q)

with ``N`` the face-normal-derivative matrix ``(n_faces, n_cells)`` and ``D``
the divergence ``(n_cells, n_faces)``. ``L`` (:func:`laplacian_matrix`) is the
contract; :class:`PoissonSolver` inverts it by one of several exact paths
(its Notes): FFTs on uniform periodic ``cartesian`` grids whose ``L`` is
verified to have the Fourier structure, SuperLU of ``S = diag(V) L`` (float64,
nested-dissection order) on the CPU otherwise, a dense inverse built on the
device for CUDA tensors of moderate size.

Closed domains (sphere, doubly periodic plane): ``L`` has the constants as
null space and ``Σ_i V_i (Lq)_i = 0``. The solver projects ``ζ`` onto
``Σ V ζ = 0`` (removes its area-weighted mean: the compatible part), pins
``ψ_0 = 0``, solves the reduced system and removes the area-weighted mean
of ``ψ``: the unique solution with ``Σ V ψ = 0`` (the FFT path drops the
mean mode: the same map). Bounded domains (any boundary face): ``ψ = 0`` at
every boundary face centre (walls), two-point Dirichlet flux
``(ψ_b − ψ_i) A_b/δ_b``.

Gradients flow through a custom autograd function whose backward applies
the transposed solve of the same path (``trans='T'``, ``conj(λ)``, ``T_kᴴ``
or ``Gᵀ``); the transposed map is itself differentiable, so higher
derivatives work too.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from .._cache import per_mesh
from .._sparse import csr, sparse_ok, spmm
from ..mesh import Mesh
from .gradients import cell_to_vertex
from .diffusion import _geometry
from .operators import _check_rows

__all__ = ["PoissonSolver", "METHODS", "laplacian_matrix", "vertex_streamfunction"]


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


# ------------------------------------------------------------------ structured (Fourier) paths
_ENTRY_TOL = 64 * np.finfo(np.float64).eps
"""Entries of ``L`` below this times ``max |L|`` are rounding (the non-orthogonal
correction on a uniform grid); entries that must be equal may differ by as much."""

_DENSE_TRIDIAGONAL = 2 ** 22
"""Above this many entries ``n_k · n_s²`` the walled path factorises tridiagonal
systems (Thomas) instead of storing one dense inverse per wavenumber."""


def _wrap(d: np.ndarray, n: int) -> np.ndarray:
    """Periodic offset in ``[−n//2, n − n//2)``."""
    return (d + n // 2) % n - n // 2


def _cached(store: dict, device: torch.device, arrays: tuple) -> tuple:
    """``arrays`` as tensors on ``device``, converted once per device."""
    key = str(device)
    if key not in store:
        store[key] = tuple(torch.as_tensor(a).to(device) for a in arrays)
    return store[key]


def _groups(keys: np.ndarray, values: np.ndarray, count: int, scale: float):
    """The distinct rows of ``keys (nnz, k)`` and their common value, or ``None``
    unless every key occurs exactly ``count`` times with values equal to ``_ENTRY_TOL``."""
    low = keys.min(0)
    code = np.ravel_multi_index(tuple((keys - low).T), tuple(keys.max(0) - low + 1))
    codes, inverse, counts = np.unique(code, return_inverse=True, return_counts=True)
    uniq = np.stack(np.unravel_index(codes, tuple(keys.max(0) - low + 1)), 1) + low
    inverse = inverse.reshape(-1)
    if (counts != count).any():
        return None
    lo = np.full(len(uniq), np.inf)
    hi = np.full(len(uniq), -np.inf)
    np.minimum.at(lo, inverse, values)
    np.maximum.at(hi, inverse, values)
    if (hi - lo).max() > _ENTRY_TOL * scale:
        return None
    return uniq, 0.5 * (lo + hi)


class _Fourier:
    """``L⁻¹`` by FFT on a uniform grid (cell ``k = j·nx + i``), once ``L`` is verified
    to commute with the periodic shifts.

    ``kind="fft"`` (doubly periodic): ``L`` is a 2-D circulant (one stencil at
    every cell), ``L e_k = λ_k e_k`` for the Fourier modes; ``ψ̂_k = ζ̂_k/λ_k`` and
    ``ψ̂_0 = 0`` (the mean). ``kind="fft_walls"`` (one periodic axis ``p``, walls
    across the other ``s``): ``L`` is block-circulant along ``p`` with a stencil
    that may depend on ``s``; each wavenumber ``k`` along ``p`` decouples into a
    banded ``n_s × n_s`` system ``T_k`` (inverted densely, or by the Thomas
    algorithm when large and tridiagonal). Transposed solves use
    ``conj(λ_k)`` and ``T_kᴴ``.
    """

    def __init__(self, kind: str, shape: tuple, swap: bool, arrays: tuple, thomas: bool = False):
        self.kind, self.shape, self.swap = kind, shape, swap
        self.arrays, self.thomas = arrays, thomas
        self._device: dict = {}

    # --------------------------------------------------------------- build
    @classmethod
    def build(cls, mesh: Mesh, lap, closed: bool) -> "tuple[_Fourier | None, str]":
        """The plan for ``mesh`` and ``L = lap``, or ``(None, reason)``."""
        info, n = mesh.info, mesh.n_cells
        if info.get("family") != "cartesian" or "nx" not in info or "ny" not in info:
            return None, f"mesh family {info.get('family')!r} is not a 'cartesian' grid"
        nx, ny = int(info["nx"]), int(info["ny"])
        period = mesh.period or (0.0, 0.0)
        px, py = bool(period[0]), bool(period[1])
        if nx * ny != n or not (px or py) or mesh.is_sphere:
            return None, "not an nx × ny grid with a periodic axis"
        if closed != (px and py):
            return None, "boundary faces do not match the periodic axes"
        vol = mesh.cell_volume.detach().cpu().double().numpy()
        if np.ptp(vol) > _ENTRY_TOL * vol.max():
            return None, "cell volumes are not uniform"
        coo = lap.tocoo()
        scale = float(np.abs(coo.data).max())
        keep = np.abs(coo.data) > _ENTRY_TOL * scale
        r, c, v = coo.row[keep].astype(np.int64), coo.col[keep].astype(np.int64), coo.data[keep]
        jr, ir = np.divmod(r, nx)
        jc, ic = np.divmod(c, nx)
        if px and py:
            found = _groups(np.stack([_wrap(jc - jr, ny), _wrap(ic - ir, nx)], 1), v, n, scale)
            if found is None:
                return None, "L is not one stencil at every cell (not circulant)"
            (dj, di), coef = found[0].T, found[1]
            ky = np.arange(ny)[:, None, None]
            kx = np.arange(nx // 2 + 1)[None, :, None]
            lam = (coef * np.exp(2j * np.pi * (dj * ky / ny + di * kx / nx))).sum(-1)
            big = np.abs(lam).max()
            if abs(lam[0, 0]) > 1e-12 * big or (np.abs(lam).ravel()[1:] < 1e-11 * big).any():
                return None, "the circulant L has a null space other than the constants"
            inv = np.zeros_like(lam)
            inv.ravel()[1:] = 1.0 / lam.ravel()[1:]
            plan = cls("fft", (ny, nx), False, (inv,))
        else:
            # s: the walled axis, p: the periodic one
            sr, pr, sc, pc, ns, np_ = (jr, ir, jc, ic, ny, nx) if px else (ir, jr, ic, jc, nx, ny)
            found = _groups(np.stack([sr, sc - sr, _wrap(pc - pr, np_)], 1), v, np_, scale)
            if found is None:
                return None, "L is not the same stencil along the periodic axis"
            (s, ds, dp), coef = found[0].T, found[1]
            k = np.arange(np_ // 2 + 1)[:, None]
            T = np.zeros((len(k), ns, ns), dtype=np.complex128)
            np.add.at(T, (slice(None), s, s + ds), coef * np.exp(2j * np.pi * k * dp / np_))
            if np.abs(T.imag).max() <= _ENTRY_TOL * np.abs(T).max():
                T = T.real.copy()                     # the stencil is symmetric along p
            thomas = len(k) * ns * ns > _DENSE_TRIDIAGONAL
            if thomas and np.abs(ds).max() > 1:
                return None, "too large for dense per-wavenumber inverses and not tridiagonal"
            if thomas:
                arrays = _thomas_factors(T) + _thomas_factors(T.conj().transpose(0, 2, 1))
            else:
                try:
                    arrays = (np.linalg.inv(T),)
                except np.linalg.LinAlgError:
                    return None, "a wavenumber's system T_k is singular"
            plan = cls("fft_walls", (ny, nx), not px, arrays, thomas)
        probe = np.random.default_rng(0).standard_normal((n, 2))
        want = lap @ probe
        got = plan.apply(torch.from_numpy(want), transpose=False).numpy()
        if not np.isfinite(got).all() or np.abs(got - (probe - probe.mean(0) if closed else probe)
                                                ).max() > 1e-8 * np.abs(probe).max():
            return None, "the Fourier solve does not invert L on a random probe"
        return plan, ""

    # --------------------------------------------------------------- apply
    def apply(self, flat: Tensor, transpose: bool) -> Tensor:
        """``L⁻¹ x`` (or its transpose) for ``flat (n_cells, m)`` float64 on any device."""
        ny, nx = self.shape
        m = flat.shape[1]
        grid = flat.reshape(ny, nx, m)
        if self.kind == "fft":
            (inv,) = _cached(self._device, flat.device, self.arrays)
            spec = torch.fft.rfft2(grid, dim=(0, 1)) * (inv.conj() if transpose else inv)[..., None]
            return torch.fft.irfft2(spec, s=(ny, nx), dim=(0, 1)).reshape(ny * nx, m)
        if self.swap:
            grid = grid.transpose(0, 1)                                    # (n_s, n_p, m)
        n_s, n_p = grid.shape[:2]
        spec = torch.fft.rfft(grid, dim=1).transpose(0, 1).contiguous()    # (n_k, n_s, m)
        arrays = _cached(self._device, flat.device, self.arrays)
        if self.thomas:
            spec = _thomas_solve(spec, *(arrays[3:] if transpose else arrays[:3]))
        elif not arrays[0].is_complex():     # real T_k (a stencil symmetric along p)
            op = arrays[0].transpose(1, 2) if transpose else arrays[0]
            out = torch.bmm(op, torch.view_as_real(spec).reshape(len(op), n_s, 2 * m))
            spec = torch.view_as_complex(out.reshape(len(op), n_s, m, 2))
        else:
            spec = (arrays[0].conj().transpose(1, 2) if transpose else arrays[0]) @ spec
        out = torch.fft.irfft(spec.transpose(0, 1), n=n_p, dim=1)          # (n_s, n_p, m)
        if self.swap:
            out = out.transpose(0, 1)
        return out.reshape(ny * nx, m)


def _thomas_factors(T: np.ndarray) -> tuple:
    """LU factors of tridiagonal ``T (n_k, n, n)`` without pivoting: the sub-diagonal
    ``a (n, n_k)``, the pivots ``d (n, n_k)`` and ``c' = c / d``."""
    n = T.shape[1]
    idx = np.arange(n)
    a = np.zeros((n, T.shape[0]), dtype=T.dtype)
    a[1:] = T[:, idx[1:], idx[:-1]].T
    b = T[:, idx, idx].T
    c = np.zeros_like(a)
    c[:-1] = T[:, idx[:-1], idx[1:]].T
    d, cp = np.empty_like(b), np.zeros_like(b)
    for s in range(n):
        d[s] = b[s] - (a[s] * cp[s - 1] if s else 0)
        cp[s] = c[s] / d[s]
    return a, d, cp


def _thomas_solve(rhs: Tensor, a: Tensor, d: Tensor, cp: Tensor) -> Tensor:
    """Solve the tridiagonal systems for ``rhs (n_k, n, m)``."""
    n = rhs.shape[1]
    y = [rhs[:, 0] / d[0, :, None]]
    for s in range(1, n):
        y.append((rhs[:, s] - a[s, :, None] * y[-1]) / d[s, :, None])
    x = [y[-1]]
    for s in range(n - 2, -1, -1):
        x.append(y[s] - cp[s, :, None] * x[-1])
    return torch.stack(x[::-1], 1)


# ------------------------------------------------------------------ sparse LU (CPU)
def _nested_dissection(pattern, points: np.ndarray, leaf: int = 32) -> np.ndarray:
    """Fill-reducing order of a mesh matrix by recursive coordinate bisection.

    Each part is split at the median of its cells' principal coordinate; the
    cells of one half that couple (``pattern``) to the other form the
    separator, numbered after both halves. Any order is exact; this one keeps
    the LU fill near the ``O(n log n)`` of nested dissection on 2-D meshes.
    """
    adj = (abs(pattern) + abs(pattern).T).tocsr()
    out: list = []
    stack = [(np.arange(adj.shape[0]), False)]
    while stack:
        idx, emit = stack.pop()
        if emit or len(idx) <= leaf:
            out.append(idx)
            continue
        pts = points[idx] - points[idx].mean(0)
        axis = np.linalg.svd(pts, full_matrices=False)[2][0]
        axis = axis * np.sign(axis[np.argmax(np.abs(axis))])   # one sign on every LAPACK
        proj = pts @ axis
        left = proj <= np.median(proj)
        if left.all() or not left.any():
            out.append(idx)
            continue
        inleft = np.zeros(adj.shape[0], bool)
        inleft[idx[left]] = True
        right = idx[~left]
        sub = adj[right]
        hit = np.zeros(len(right), bool)
        hit[np.repeat(np.arange(len(right)), np.diff(sub.indptr))[inleft[sub.indices]]] = True
        # LIFO: the left half is numbered first, then the right half, then the separator
        stack += [(right[hit], True), (right[~hit], False), (idx[left], False)]
    return np.concatenate(out)


class _SparseLU:
    """SuperLU of ``S`` in a nested-dissection order (no column permutation, diagonal
    pivots, checked by a residual; SuperLU's default COLAMD with partial pivoting
    if that check fails)."""

    def __init__(self, S, points: np.ndarray) -> None:
        from scipy.sparse.linalg import splu

        S = S.tocsc()
        self.order = _nested_dissection(S, points)
        permuted = S[self.order][:, self.order].tocsc()
        self.pivoting = False
        try:
            self.lu = splu(permuted, permc_spec="NATURAL", diag_pivot_thresh=0.0,
                           options={"SymmetricMode": True})
            probe = np.random.default_rng(0).standard_normal(S.shape[0])
            x = self.solve(probe, "N")
            scale = abs(S).max() * np.abs(x).max()
            good = np.isfinite(x).all() and np.abs(S @ x - probe).max() <= 1e-10 * max(scale, 1.0)
        except RuntimeError:                   # a zero pivot: "Factor is exactly singular"
            good = False
        if not good:
            self.order, self.pivoting = np.arange(S.shape[0]), True
            self.lu = splu(S)

    def solve(self, rhs: np.ndarray, trans: str) -> np.ndarray:
        out = np.empty_like(rhs)
        out[self.order] = self.lu.solve(np.ascontiguousarray(rhs[self.order]), trans=trans)
        return out


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


METHODS = ("auto", "fft", "fft_walls", "splu", "dense")
"""Solve paths of :class:`PoissonSolver` (``"auto"`` chooses; see its Notes)."""


class PoissonSolver:
    """Solve ``∇²ψ = ζ`` for ``ψ`` at cells, with the fastest exact path for the mesh.

    Parameters
    ----------
    mesh : Mesh
    correction : bool
        Invert the full operator of :func:`~meshclosure.fv.diffusion.laplacian`
        including its non-orthogonal correction (default; consistent on
        HEALPix and icosahedral meshes), or only its two-point part
        (``laplacian(..., correction=False)``; symmetric, but inconsistent on
        non-orthogonal meshes).
    method : {"auto", "fft", "fft_walls", "splu", "dense"}
        Solve path; ``"auto"`` (default) chooses as in the Notes. Forcing a
        Fourier path on a mesh whose matrix lacks its structure raises.
    dense_limit : int, optional
        Largest ``n_cells`` for the dense inverse on a CUDA device
        (``n_cells²`` float64 numbers there). Default: the size whose matrix
        takes a twelfth of the device's memory (about 39 000 cells on a 139 GiB
        H200; 20 000 without CUDA; building it holds about four such matrices);
        a forced ``method="dense"`` may exceed
        20 000 only when it is given explicitly.

    Attributes
    ----------
    method : str
        The path taken for CPU tensors; :meth:`method_for` gives it per device.
    matrix : scipy.sparse.csr_matrix, shape (n_cells, n_cells)
        ``L`` (:func:`laplacian_matrix`): the contract every path inverts.

    Notes
    -----
    Closed domains: the returned ``ψ`` has zero area-weighted mean and solves
    ``∇²ψ = ζ − ⟨ζ⟩`` (``⟨·⟩`` the area-weighted mean). Bounded domains:
    ``ψ = 0`` on all boundary faces. Every path computes in float64 (float32
    inputs are cast back) and returns on the input's device.

    Paths, as ``"auto"`` chooses them:

    * ``"fft"``: a doubly periodic uniform ``cartesian`` grid whose ``L`` is
      verified (entry by entry, to ``64 ε max|L|``) to be one stencil at every
      cell: ``torch.fft.rfft2``, divide by the eigenvalues, ``irfft2``;
      ``O(n log n)``, on the input's device.
    * ``"fft_walls"``: a ``cartesian`` grid periodic along one axis with walls
      across the other (the convection slice), ``L`` verified to repeat along
      the periodic axis: FFT along it and one banded solve per wavenumber.
    * otherwise, CPU tensors: ``"splu"``, SuperLU of ``S = diag(V) L`` in a
      nested-dissection order (ψ_0 pinned on closed domains); CUDA tensors:
      ``"dense"`` while ``n_cells <= dense_limit`` (the solve matrix ``G``,
      built once on the device by ``torch.linalg.inv``: one matrix product per
      solve, no host round trip), else ``"splu"`` through the CPU (a
      synchronisation per solve).

    The Fourier and dense paths equal the SuperLU solution to ~1e-13 relative
    (tested to 1e-12). Every path is a fixed linear map (no iteration, no warm
    start), so a result never depends on earlier calls: resumed runs stay
    bit-identical to uninterrupted ones on the same device.

    Examples
    --------
    >>> import torch
    >>> from meshclosure.mesh import cartesian, healpix
    >>> from meshclosure.fv.diffusion import laplacian
    >>> mesh = healpix(4)
    >>> solver = PoissonSolver(mesh)
    >>> solver.method
    'splu'
    >>> psi = mesh.cell_center[:, 2] ** 2            # not mean-free
    >>> back = solver(laplacian(mesh, psi))
    >>> mean = (mesh.cell_volume * psi).sum() / mesh.cell_volume.sum()
    >>> float((back - (psi - mean)).abs().max()) < 1e-12
    True
    >>> PoissonSolver(cartesian(8, 4, 2.0, 1.0)).method
    'fft'
    >>> solver(torch.zeros(5))
    Traceback (most recent call last):
    ...
    ValueError: zeta must have n_cells = 192 rows (dim 0); got shape (5,). ...
    >>> PoissonSolver(mesh, method="fft")
    Traceback (most recent call last):
    ...
    meshclosure.errors.ArgumentError: method='fft': needs a uniform periodic cartesian grid ...
    """

    def __init__(self, mesh: Mesh, correction: bool = True, method: str = "auto",
                 dense_limit: int | None = None) -> None:
        from ..errors import ArgumentError

        if method not in METHODS:
            raise ArgumentError("method", method, f"must be one of {METHODS}",
                                "use 'auto' to let the solver choose")
        if dense_limit is not None and (not isinstance(dense_limit, int)
                                        or isinstance(dense_limit, bool) or dense_limit < 1):
            raise ArgumentError("dense_limit", dense_limit, "must be an integer >= 1",
                                "pass e.g. 20000 (cells), or None (by device memory)")
        self.mesh = mesh
        self.correction = bool(correction)
        self.closed = mesh.n_boundary_faces == 0
        self.dense_limit = dense_limit
        self.volume = mesh.cell_volume.detach().cpu().double().numpy()
        self.matrix = laplacian_matrix(mesh, correction=self.correction,
                                       dirichlet=not self.closed)
        self._fourier, reason = (None, "not asked for") if method in ("splu", "dense") else \
            _Fourier.build(mesh, self.matrix, self.closed)
        if method in ("fft", "fft_walls") and (self._fourier is None
                                               or self._fourier.kind != method):
            got = self._fourier.kind if self._fourier is not None else reason
            raise ArgumentError("method", method, "needs a uniform periodic cartesian grid "
                                f"with that structure; this mesh: {got}",
                                "use method='auto' (it falls back to 'splu')")
        if method == "dense" and mesh.n_cells > (dense_limit or 20000):
            raise ArgumentError("method", method, f"needs n_cells={mesh.n_cells} <= "
                                f"dense_limit={dense_limit or 20000}",
                                "raise {dense_limit} or use 'auto'")
        self._forced = method if method != "auto" else None
        self.method = self._fourier.kind if (method == "auto" and self._fourier is not None) \
            else ("splu" if method == "auto" else method)
        self._sparse: _SparseLU | None = None
        self._dense: dict = {}
        self._dense_size: dict = {}

    def method_for(self, device: Any) -> str:
        """The path a tensor on ``device`` takes (see Notes)."""
        if self._forced is not None or torch.device(device).type == "cpu":
            return self.method
        if self.method == "splu" and self.mesh.n_cells <= self._dense_cells(device):
            return "dense"
        return self.method

    # ---------------------------------------------------------------- paths
    def _scaled(self):
        """``S = diag(V) L`` (CSC), without the pinned row and column on closed domains."""
        scaled = self.matrix.multiply(self.volume[:, None]).tocsc()
        return scaled[1:, 1:].tocsc() if self.closed else scaled

    def _lu(self) -> _SparseLU:
        if self._sparse is None:
            points = self.mesh.cell_center.detach().cpu().double().numpy()
            self._sparse = _SparseLU(self._scaled(), points[1:] if self.closed else points)
        return self._sparse

    def _remove_mean(self, x: np.ndarray) -> np.ndarray:
        """``P x = x − 1 (Vᵀx)/ΣV``: remove the area-weighted mean."""
        return x - (self.volume @ x) / self.volume.sum()

    def _remove_mean_t(self, x: np.ndarray) -> np.ndarray:
        """``Pᵀ x = x − V (1ᵀx)/ΣV``, the transpose of :meth:`_remove_mean`."""
        return x - self.volume[:, None] * x.sum(0) / self.volume.sum()

    def _sparse_apply(self, flat: np.ndarray, transpose: bool) -> np.ndarray:
        """``G x`` or ``Gᵀ x`` (float64, CPU), ``G = P E S_r⁻¹ E' diag(V) P`` on closed
        domains (``E'`` drops the pinned row, ``E`` inserts ψ_0 = 0) and
        ``G = S⁻¹ diag(V)`` on bounded ones."""
        if not transpose:
            rhs = self._remove_mean(flat) if self.closed else flat
            out = self._solve(self.volume[:, None] * rhs, "N")
            return self._remove_mean(out) if self.closed else out
        rhs = self._remove_mean_t(flat) if self.closed else flat
        out = self.volume[:, None] * self._solve(rhs, "T")
        return self._remove_mean_t(out) if self.closed else out

    def _solve(self, rhs: np.ndarray, trans: str) -> np.ndarray:
        if not self.closed:
            return self._lu().solve(rhs, trans)
        out = np.zeros_like(rhs)
        out[1:] = self._lu().solve(np.ascontiguousarray(rhs[1:]), trans)
        return out

    def _dense_cells(self, device: Any) -> int:
        """``dense_limit``, or the cells whose ``G`` fills a twelfth of ``device``'s memory
        (building it holds the assembled matrix, its inverse and ``G``: about four copies)."""
        if self.dense_limit is not None:
            return self.dense_limit
        device = torch.device(device)
        if device.type != "cuda" or not torch.cuda.is_available():
            return 20000
        key = str(device)
        if key not in self._dense_size:
            total = torch.cuda.get_device_properties(device).total_memory
            self._dense_size[key] = int((total / 12 / 8) ** 0.5)
        return self._dense_size[key]

    def _dense_matrix(self, device: torch.device) -> Tensor:
        """``G (n_cells, n_cells)`` of :meth:`_sparse_apply`, built on ``device``."""
        key = str(device)
        if key not in self._dense:
            n = self.mesh.n_cells
            vol = torch.as_tensor(self.volume, device=device)
            coo = self._scaled().tocoo()              # assembled densely on the device
            scaled = torch.zeros(coo.shape, dtype=torch.float64, device=device)
            scaled.index_put_((torch.as_tensor(coo.row, dtype=torch.long, device=device),
                               torch.as_tensor(coo.col, dtype=torch.long, device=device)),
                              torch.as_tensor(coo.data, device=device), accumulate=True)
            if self.closed:
                G = torch.zeros(n, n, dtype=torch.float64, device=device)
                G[1:, 1:] = torch.linalg.inv(scaled)
            else:
                G = torch.linalg.inv(scaled)
            del scaled, coo                  # peak memory: a few n x n copies, not more
            G.mul_(vol[None, :])                                     # E S_r⁻¹ E' diag(V)
            if self.closed:
                G.addr_(G.sum(1), vol / vol.sum(), alpha=-1)                   # ... P
                G.addr_(torch.ones_like(vol), (vol @ G) / vol.sum(), alpha=-1)  # P ...
            self._dense[key] = G
        return self._dense[key]

    def _apply(self, x: Tensor, transpose: bool) -> Tensor:
        """``G x`` or ``Gᵀ x`` by the path for ``x``'s device, in float64."""
        method = self.method_for(x.device)
        n = self.mesh.n_cells
        if method == "splu":
            flat = x.detach().reshape(n, -1).cpu().double().numpy()
            out = torch.from_numpy(np.ascontiguousarray(self._sparse_apply(flat, transpose)))
        else:
            flat = x.detach().reshape(n, -1).double()
            if method == "dense":
                G = self._dense_matrix(flat.device)
                out = (G.T if transpose else G) @ flat
            else:
                out = self._fourier.apply(flat, transpose)
        return out.reshape(x.shape).to(device=x.device, dtype=x.dtype)

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


def _vertex_matrix(mesh: Mesh, dtype: torch.dtype, device: torch.device) -> Tensor:
    """CSR ``(n_vertices, n_cells)``: :func:`~meshclosure.fv.gradients.cell_to_vertex`'s
    weights ``V_i / Σ V`` with the rows of wall vertices empty."""
    def build() -> Tensor:
        cv = mesh.cell_vertices.cpu()
        mask = cv >= 0
        cells = torch.arange(mesh.n_cells)[:, None].expand_as(cv)[mask]
        verts = cv[mask]
        vol = mesh.cell_volume.detach().cpu().double()[cells]
        total = torch.zeros(mesh.n_vertices, dtype=torch.float64).index_add(0, verts, vol)
        weight = vol / total[verts].clamp_min(torch.finfo(torch.float64).tiny)
        if mesh.n_boundary_faces:
            keep = ~torch.isin(verts, mesh.boundary_face_vertices.cpu().reshape(-1))
            cells, verts, weight = cells[keep], verts[keep], weight[keep]
        return csr(verts.to(device), cells.to(device), weight.to(device=device, dtype=dtype),
                   (mesh.n_vertices, mesh.n_cells))

    return per_mesh(mesh, ("fv.poisson.vertex", dtype, str(device)), build)


def _walls(mesh: Mesh, device: torch.device) -> Tensor:
    """Indices of the vertices on boundary faces (cached)."""
    return per_mesh(mesh, ("fv.poisson.walls", str(device)),
                    lambda: mesh.boundary_face_vertices.reshape(-1).unique().to(device))


def vertex_streamfunction(mesh: Mesh, psi_cell: Tensor, wall_value: float = 0.0) -> Tensor:
    """Streamfunction at vertices for :func:`~meshclosure.fv.transport_from_streamfunction`.

    :func:`~meshclosure.fv.gradients.cell_to_vertex` (area-weighted mean of the
    cells around each vertex), then ``wall_value`` on every vertex of a
    boundary face, so that walls carry no transport (``U_b = ψ(v0) − ψ(v1) = 0``).
    On closed meshes this is ``cell_to_vertex``. Float32/float64 tensors on
    the CPU or CUDA go through one cached sparse matrix (the same weights; the
    sum over a vertex's cells may be ordered differently: equal to rounding).

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
    _check_rows("q", psi_cell, mesh.n_cells, "n_cells")
    if not sparse_ok(psi_cell):
        out = cell_to_vertex(mesh, psi_cell)
        if mesh.n_boundary_faces:
            out = out.index_fill(0, _walls(mesh, out.device), float(wall_value))
        return out
    out = spmm(_vertex_matrix(mesh, psi_cell.dtype, psi_cell.device), psi_cell)
    if mesh.n_boundary_faces and wall_value != 0:
        out = out.index_fill(0, _walls(mesh, out.device), float(wall_value))
    return out
