"""Advective face fluxes in flux form: upwind, linear (limited or not) and quadratic reconstruction.

Given integrated face transports ``U_f`` (volume transport through face ``f``,
positive owner ``a`` -> neighbour ``b``; e.g. from
:func:`~meshclosure.fv.transport_from_streamfunction`), the advective flux of
a cell quantity ``q`` is ::

    Φ_f = U_f q_f,      q_f = q_up + φ_up ∇q_up · r_{up,f}          (1)

with ``up = a`` where ``U_f ≥ 0`` and ``up = b`` otherwise, ``r_{up,f}`` the
displacement from the upwind cell centre to the face centre (on the sphere
measured in the upwind cell's tangent plane by the logarithmic map; on a periodic plane the minimum
image) and ``∇q`` the least-squares cell gradient. ``φ ≡ 0`` is the upwind
scheme (first order), ``φ ≡ 1`` the linear scheme (second order on smooth
meshes; Barth & Jespersen 1989, doi:10.2514/6.1989-366), and the
Barth–Jespersen limiter ::

    φ_i = min_f  { min(1, (q_i^max − q_i)/Δ_if)  if Δ_if > 0
                   min(1, (q_i^min − q_i)/Δ_if)  if Δ_if < 0
                   1                              otherwise }          (2)

with ``Δ_if = ∇q_i · r_if`` and ``q_i^max/min`` the extremes over cell ``i``
and its face neighbours, keeps every reconstructed face value inside
``[q_i^min, q_i^max]``. The smooth Venkatakrishnan (1995,
doi:10.1006/jcph.1995.1084) variant replaces ``min(1, y)`` by
``(y² + 2y)/(y² + y + 2)`` (differentiable everywhere; it may overshoot
slightly).

Quadratic reconstruction (``quadratic_flux``). The face value comes instead
from the upwind cell's weighted quadratic least-squares fit
(:mod:`meshclosure.fv.reconstruction`; geodesic normal coordinates on the
sphere)::

    q_f = q_up + a_up · (⟨φ⟩_f − ⟨φ⟩_up),   φ(s) = (s, ½ s_u², s_u s_v, ½ s_v²)   (3)

With the default operators (``fv2``) the fit is k-exact: it matches the
neighbours' cell averages (cell moments enter through ``⟨φ⟩``), over the
cells sharing a vertex (or, where those are fewer than 7, also the cells two
faces away), and ``⟨φ⟩_f`` is the average over the face, so ``q_f`` is the
face-averaged value of the reconstructed quadratic: exact for quadratic
fields on planar meshes with straight faces (where the stencil fixes a
quadratic; not on agglomerated meshes, whose faces are polylines), third
order on the sphere. The flux is ``U_f q_f`` (one value per face), so the scheme stays
formally second order. Williamson's cosine bell, one revolution at Courant
``1/k_max``: l2 0.275 / 0.070 at 32 / 64 cells per cubed-sphere panel edge
(order 1.97), 0.307 / 0.085 on icosahedral triangles (5,120 / 20,480 cells,
order 1.86), 0.149 / 0.032 on HEALPix nside 32 / 64 (order 2.24); the
``fv1`` fit (neighbour averages taken as point values at the centres, over
the cells sharing a vertex or two faces away, value at the face centre) gives
0.364 / 0.125 (order 1.54), 0.311 / 0.092 and 0.225 / 0.058. About three
times the non-zeros per row of (1); not monotone; no limiter.

No new extrema (limited scheme). For a non-divergent flow, a forward-Euler
step with face values from (2) stays inside the global ``[min q, max q]``
when every cell satisfies ``k_i ν_i ≤ 1``, with ``k_i`` the number of faces
of cell ``i`` and ``ν_i = Δt Σ_{outflow faces} |U_f| / V_i`` its outflow
Courant number, provided the cell centre is the mean of its face midpoints
(exact for triangles and parallelograms, close for HEALPix pixels and
hexagons). Proof sketch: ``Σ_f (q_if − q_i) = ∇q_i · Σ_f r_if = 0``, so each
``q_if ≥ k_i q_i − (k_i − 1) max q`` and the update is a convex combination.
SSP-RK3 (Shu & Osher 1988) keeps the bound at the same time step. Use
``cfl_dt(mesh, U, courant=1/k_max)``.

Boundary faces are walls (no advective flux) unless a ``boundary_flux`` is
passed to the divergence.
"""
from __future__ import annotations

import math

from typing import Optional

import torch
from torch import Tensor

from ..mesh import Mesh
from .gradients import _cached, _expand, displacement, gradient, least_squares
from .reconstruction import QuadraticFit, quadratic_fit
from .versions import check_operators, operator_set
from .operators import _check_float, _check_rows, _csr, _sparse_cached, _sparse_ok, _spmm

__all__ = ["upwind_flux", "linear_flux", "quadratic_flux", "limiter_coefficient",
           "face_displacement", "cfl_dt", "outflow_courant", "LIMITERS", "MATRIX_SCHEMES"]

LIMITERS = (None, "barth_jespersen", "venkatakrishnan")
"""Accepted values of ``limiter`` in :func:`linear_flux`."""

MATRIX_SCHEMES = ("linear", "upwind", "quadratic")
"""Schemes linear in ``q`` (for a fixed transport), with a matrix form :func:`advection_matrix`."""


def face_displacement(mesh: Mesh) -> tuple[Tensor, Tensor]:
    """Displacements from the owner and the neighbour centre to each face centre.

    Measured as :func:`meshclosure.fv.gradients.displacement` measures them
    (minimum image on a periodic plane, the logarithmic map at the cell
    centre on the sphere), so that reconstruction and gradient agree.

    Returns
    -------
    r_owner, r_neighbour : Tensor, shape (n_faces, d)
    """
    def build() -> tuple[Tensor, Tensor]:
        a, b = mesh.face_cells[0], mesh.face_cells[1]
        xf = mesh.face_center
        return (displacement(mesh, mesh.cell_center[a], xf),
                displacement(mesh, mesh.cell_center[b], xf))
    return _cached(mesh, "face_displacement", build)


# ---------------------------------------------------------------------------- limiters
def _safe_ratio(num: Tensor, den: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """``num/den`` where ``|den| > eps`` and a mask of those entries (NaN-free gradients)."""
    ok = den.abs() > eps
    return num / torch.where(ok, den, torch.ones_like(den)), ok


def limiter_coefficient(mesh: Mesh, q: Tensor, grad: Tensor, limiter: str = "barth_jespersen",
                        r: Optional[tuple[Tensor, Tensor]] = None) -> Tensor:
    """Per-cell slope limiter ``φ_i ∈ [0, 1]`` (equation (2) of the module docstring).

    Parameters
    ----------
    mesh : Mesh
    q : Tensor, shape (n_cells, ...)
    grad : Tensor, shape (n_cells, d, ...)
        Cell gradients of ``q``.
    limiter : {"barth_jespersen", "venkatakrishnan"}
    r : (Tensor, Tensor), optional
        Output of :func:`face_displacement` (recomputed when omitted).

    Returns
    -------
    Tensor, shape (n_cells, ...)
        ``φ``; reconstructed face values ``q_i + φ_i ∇q_i · r_if`` lie in
        ``[q_i^min, q_i^max]`` for Barth–Jespersen.
    """
    if limiter not in LIMITERS[1:]:
        raise ValueError(f"limiter must be one of {LIMITERS}; got {limiter!r}. "
                         "Use 'barth_jespersen' for strict bounds or 'venkatakrishnan' for a "
                         "smooth limiter.")
    ra, rb = face_displacement(mesh) if r is None else r
    ra, rb = ra.to(q.dtype), rb.to(q.dtype)
    a, b = mesh.face_cells[0], mesh.face_cells[1]
    n = mesh.n_cells
    flat = q.reshape(n, -1)
    g = grad.reshape(n, grad.shape[1], -1)
    m = flat.shape[1]
    # neighbourhood extremes
    idx = torch.cat([a, b])[:, None].expand(-1, m)
    other = torch.cat([flat[b], flat[a]])
    qmax = flat.scatter_reduce(0, idx, other, "amax", include_self=True)
    qmin = flat.scatter_reduce(0, idx, other, "amin", include_self=True)
    # unlimited increments at each face, from both sides
    da = (g[a] * ra[:, :, None]).sum(1)
    db = (g[b] * rb[:, :, None]).sum(1)
    delta = torch.cat([da, db])
    cell = torch.cat([a, b])
    scale = flat.detach().abs().amax() if flat.numel() else flat.new_tensor(1.0)
    eps = float(torch.finfo(q.dtype).eps) * (float(scale) + 1e-300) * 16
    bound = torch.where(delta > 0, qmax[cell], qmin[cell]) - flat[cell]
    y, ok = _safe_ratio(bound, delta, eps)
    if limiter == "barth_jespersen":
        phi_f = torch.where(ok, torch.clamp(y, max=1.0), torch.ones_like(y))
    else:
        y = torch.clamp(y, min=0.0)
        phi_f = torch.where(ok, (y * y + 2 * y) / (y * y + y + 2), torch.ones_like(y))
    phi = torch.ones_like(flat).scatter_reduce(0, idx, phi_f, "amin", include_self=True)
    return phi.clamp(min=0.0).reshape(q.shape)


# ------------------------------------------------------------------------------ fluxes
def upwind_flux(mesh: Mesh, q: Tensor, U: Tensor) -> Tensor:
    """First-order upwind advective face flux ``Φ_f = U_f q_up``.

    Parameters
    ----------
    mesh : Mesh
    q : Tensor, shape (n_cells, ...)
        Cell averages of the advected quantity.
    U : Tensor, shape (n_faces,)
        Integrated face transports (length²/time on a surface), positive
        owner -> neighbour.

    Returns
    -------
    Tensor, shape (n_faces, ...)
        Integrated advective flux ``[q]·length²/time``; cell tendency is
        ``−divergence(mesh, Φ)``.

    Examples
    --------
    >>> import torch
    >>> from meshclosure.mesh import cartesian
    >>> mesh = cartesian(4, 4)
    >>> q = torch.arange(16.0, dtype=torch.float64)
    >>> U = torch.ones(mesh.n_faces, dtype=torch.float64)
    >>> bool(torch.equal(upwind_flux(mesh, q, U), q[mesh.face_cells[0]]))
    True
    >>> upwind_flux(mesh, q, torch.ones(5))
    Traceback (most recent call last):
    ...
    ValueError: U must have n_faces = 32 rows (dim 0); got shape (5,). ...
    """
    _check_rows("q", q, mesh.n_cells, "n_cells")
    _check_rows("U", U, mesh.n_faces, "n_faces")
    _check_float("q", q)
    _check_float("U", U)
    a, b = mesh.face_cells[0].to(q.device), mesh.face_cells[1].to(q.device)
    qa, qb = q.index_select(0, a), q.index_select(0, b)   # faster than q[a]
    Ue = _expand(U.to(q.dtype), qa)
    return Ue * torch.where(Ue >= 0, qa, qb)


def linear_flux(mesh: Mesh, q: Tensor, U: Tensor, grad: Optional[Tensor] = None,
                limiter: Optional[str] = None, operators: Optional[str] = None) -> Tensor:
    """Second-order advective face flux from the upwind cell's linear reconstruction.

    ``Φ_f = U_f (q_up + φ_up ∇q_up · r_{up,f})``: equation (1) of the module
    docstring, with ``φ = 1`` (``limiter=None``) or a slope limiter.

    Parameters
    ----------
    mesh : Mesh
    q : Tensor, shape (n_cells, ...)
    U : Tensor, shape (n_faces,)
        Integrated face transports, positive owner -> neighbour.
    grad : Tensor, shape (n_cells, d, ...), optional
        Cell gradients; default: least squares,
        :func:`meshclosure.fv.gradients.gradient` (precomputed once per mesh).
    limiter : {None, "barth_jespersen", "venkatakrishnan"}
        ``None``: unlimited (linear, not monotone). ``"barth_jespersen"``: no
        new extrema for ``k_i ν_i ≤ 1`` (see module docstring).
        ``"venkatakrishnan"``: smooth.
    operators : str, optional
        Operator version of the gradient stencil (:mod:`meshclosure.fv.versions`;
        default the current one, vertex neighbours).

    Returns
    -------
    Tensor, shape (n_faces, ...)

    Examples
    --------
    A linear field is reconstructed exactly at the faces of a bounded grid:

    >>> import torch
    >>> from meshclosure.mesh import cartesian
    >>> mesh = cartesian(8, 8, 1.0, 1.0, periodic=False)
    >>> q = 2.0 * mesh.cell_center[:, 0]
    >>> U = torch.ones(mesh.n_faces, dtype=torch.float64)
    >>> phi = linear_flux(mesh, q, U)
    >>> bool(torch.allclose(phi, 2.0 * mesh.face_center[:, 0]))
    True
    >>> linear_flux(mesh, q, U, limiter="superbee")
    Traceback (most recent call last):
    ...
    ValueError: limiter must be one of (None, 'barth_jespersen', 'venkatakrishnan'); got 'superbee'. ...
    """
    if limiter not in LIMITERS:
        raise ValueError(f"limiter must be one of {LIMITERS}; got {limiter!r}. "
                         "Use 'barth_jespersen' for strict bounds or 'venkatakrishnan' for a "
                         "smooth limiter.")
    _check_rows("q", q, mesh.n_cells, "n_cells")
    _check_rows("U", U, mesh.n_faces, "n_faces")
    _check_float("q", q)
    _check_float("U", U)
    operators = check_operators(operators)
    if grad is None and limiter is None and _sparse_ok(q) and q.numel():
        # unlimited: both reconstructions are linear in q, one CSR product
        # (precomputed per mesh) instead of a gradient and four gathers
        qab = _spmm(_reconstruction_matrix(mesh, q.dtype, q.device, "linear", operators), q)
        qa, qb = qab[:mesh.n_faces], qab[mesh.n_faces:]
        Ue = _expand(U.to(q.dtype), qa)
        return Ue * torch.where(Ue >= 0, qa, qb)
    if grad is None:
        grad = gradient(mesh, q, operators=operators)
    elif grad.shape[:2] != (mesh.n_cells, mesh.dim) or grad.shape[2:] != q.shape[1:]:
        raise ValueError(f"grad must have shape (n_cells, d, ...) = "
                         f"{(mesh.n_cells, mesh.dim) + tuple(q.shape[1:])}; got "
                         f"{tuple(grad.shape)}. Pass meshclosure.fv.gradient(mesh, q).")
    r = face_displacement(mesh)
    ra, rb = r[0].to(q.dtype), r[1].to(q.dtype)
    a, b = mesh.face_cells[0], mesh.face_cells[1]
    if limiter is not None:
        phi = limiter_coefficient(mesh, q, grad, limiter, r=(ra, rb))
        grad = grad * phi.unsqueeze(1)
    shape = (-1, mesh.dim) + (1,) * (q.dim() - 1)
    qa = q[a] + (grad[a] * ra.reshape(shape)).sum(1)
    qb = q[b] + (grad[b] * rb.reshape(shape)).sum(1)
    Ue = _expand(U.to(q.dtype), qa)
    return torch.where(Ue >= 0, Ue * qa, Ue * qb)


def _quadratic(mesh: Mesh, operators: Optional[str] = None) -> QuadraticFit:
    return quadratic_fit(mesh, operator_set(operators).quadratic)


def quadratic_flux(mesh: Mesh, q: Tensor, U: Tensor, operators: Optional[str] = None) -> Tensor:
    """Advective face flux from the upwind cell's quadratic reconstruction, eq. (3).

    ``Φ_f = U_f q_f`` with ``q_f`` the upwind cell's weighted quadratic
    least-squares fit averaged over the face (``fv2``; evaluated at the face
    centre with ``fv1``): exact for quadratic fields on planar meshes with
    straight faces (see :mod:`meshclosure.fv.reconstruction`), second order
    overall (one flux value per face), and markedly more accurate than
    :func:`linear_flux` on HEALPix, cubed-sphere and hexagonal meshes.
    Not limited: it can create small new extrema near sharp features.

    Parameters
    ----------
    mesh : Mesh
    q : Tensor, shape (n_cells, ...)
    U : Tensor, shape (n_faces,)
        Integrated face transports, positive owner -> neighbour.
    operators : str, optional
        Operator version (:mod:`meshclosure.fv.versions`): ``"fv2"`` (default)
        the k-exact fit of cell averages giving face averages, ``"fv1"`` the
        point fit giving face-centre values.

    Returns
    -------
    Tensor, shape (n_faces, ...)

    Examples
    --------
    With ``fv1`` (values at centres in, values at face centres out) a quadratic
    field is reconstructed exactly at every face of a bounded grid:

    >>> import torch
    >>> from meshclosure.mesh import cartesian
    >>> mesh = cartesian(8, 8, 1.0, 1.0, periodic=False)
    >>> quad = lambda p: 1 + 2 * p[:, 0] - p[:, 1] + 3 * p[:, 0] ** 2 + p[:, 0] * p[:, 1]
    >>> U = torch.ones(mesh.n_faces, dtype=torch.float64)
    >>> phi = quadratic_flux(mesh, quad(mesh.cell_center), U, operators="fv1")
    >>> bool(torch.allclose(phi, quad(mesh.face_center), atol=1e-13))
    True

    With ``fv2`` (the default) cell averages in, face averages out, also
    exactly (the ``3x²`` term averages to ``3x² + 3h²/12`` over a cell of
    width ``h`` and over a face spanning ``x``):

    >>> h = 1 / 8
    >>> cell_avg = quad(mesh.cell_center) + 3 * h ** 2 / 12
    >>> spans_x = mesh.face_normal[:, 1].abs() > 0.5
    >>> face_avg = quad(mesh.face_center) + 3 * h ** 2 / 12 * spans_x
    >>> bool(torch.allclose(quadratic_flux(mesh, cell_avg, U), face_avg, atol=1e-13))
    True
    """
    _check_rows("q", q, mesh.n_cells, "n_cells")
    _check_rows("U", U, mesh.n_faces, "n_faces")
    _check_float("q", q)
    _check_float("U", U)
    operators = check_operators(operators)
    if _sparse_ok(q) and q.numel():
        qab = _spmm(_reconstruction_matrix(mesh, q.dtype, q.device, "quadratic", operators), q)
        qa, qb = qab[:mesh.n_faces], qab[mesh.n_faces:]
    else:
        geo = _quadratic(mesh, operators)
        i, j = geo.get("i", q), geo.get("j", q)
        coef = geo.get("coef", q)
        diff = q[j] - q[i]                                           # (pairs, ...)
        fit = torch.zeros((mesh.n_cells, coef.shape[1]) + tuple(q.shape[1:]), dtype=q.dtype,
                          device=q.device).index_add(0, i, _expand(coef, diff[:, None], 2)
                                                      * diff[:, None])
        phi_a, phi_b = geo.get("phi", q)
        a, b = mesh.face_cells[0].to(q.device), mesh.face_cells[1].to(q.device)
        qa = q[a] + (_expand(phi_a, fit[a], 2) * fit[a]).sum(1)
        qb = q[b] + (_expand(phi_b, fit[b], 2) * fit[b]).sum(1)
    Ue = _expand(U.to(q.dtype), qa)
    return Ue * torch.where(Ue >= 0, qa, qb)


# ------------------------------------------------------------------ sparse operators
def _reconstruction_scipy(mesh: Mesh, scheme: str, operators: Optional[str] = None):
    """Face values from the owner and the neighbour as scipy CSR ``(n_faces, n_cells)`` each.

    ``"quadratic"``: the same with the quadratic fit of eq. (3).
    ``"linear"``: row ``f`` of ``R_a`` is ``e_a + Σ_k r_{a,f,k} G_k[a]``, with
    ``G_k = C_k − diag(Σ_j C_k[:, j])`` the least-squares gradient component
    ``k`` as a matrix (``C_k[i, j] = c_ij,k``), so ``R_a q = q_a + ∇q_a · r_{a,f}``
    (same for ``R_b``). ``"upwind"``: ``R_a q = q_a``. Float64, built once per mesh.
    """
    def build():
        import numpy as np
        from scipy import sparse

        n, nf = mesh.n_cells, mesh.n_faces
        a = mesh.face_cells[0].cpu().numpy()
        b = mesh.face_cells[1].cpu().numpy()
        f = np.arange(nf)
        sel_a = sparse.csr_matrix((np.ones(nf), (f, a)), shape=(nf, n))
        sel_b = sparse.csr_matrix((np.ones(nf), (f, b)), shape=(nf, n))
        if scheme == "upwind":
            return sel_a, sel_b
        if scheme == "quadratic":
            geo = _quadratic(mesh, operators)
            i, j = geo.i.cpu().numpy(), geo.j.cpu().numpy()
            coef = geo.coef.cpu().numpy()
            fits = []
            for k in range(coef.shape[1]):                 # C_k − diag(row sums): R_k = (C_k q)
                ck = sparse.csr_matrix((coef[:, k], (i, j)), shape=(n, n))
                fits.append(ck - sparse.diags(np.asarray(ck.sum(1)).ravel()))
            out = []
            for sel, phi in zip((sel_a, sel_b), geo.phi):
                phi = phi.cpu().numpy()
                mat = sel.copy()
                for k, fk in enumerate(fits):
                    mat = mat + sparse.diags(phi[:, k]) @ (sel @ fk)
                out.append(_prune(mat))
            return tuple(out)
        lsq = least_squares(mesh, operators)
        cell = lsq.cell.cpu().numpy()
        nb = lsq.neighbour.cpu().numpy()
        coef = lsq.coefficients(False, torch.float64, lsq.cell.device).cpu().numpy()
        ra, rb = (r.double().cpu().numpy() for r in face_displacement(mesh))
        out = []
        for sel, r in ((sel_a, ra), (sel_b, rb)):
            mat = sel.copy()
            for k in range(mesh.dim):
                gk = sparse.csr_matrix((coef[:, k], (cell, nb)), shape=(n, n))
                gk = gk - sparse.diags(np.asarray(gk.sum(1)).ravel())
                mat = mat + sparse.diags(r[:, k]) @ (sel @ gk)
            out.append(_prune(mat))
        return tuple(out)
    operators = check_operators(operators)
    return _sparse_cached(mesh, ("reconstruction_scipy", scheme, operators), build)


def _prune(mat):
    """Drop entries below ``64 eps`` of their row's largest (scipy CSR, float64).

    Such entries are rounding noise (a displacement component of 1e-18 where
    the geometry says 0, e.g. at the periodic seam); they change ``mat @ q``
    by less than the rounding of the row sum, and each costs 12 bytes per
    product.
    """
    import numpy as np

    mat = mat.tocsr()
    mat.sum_duplicates()
    absd = np.abs(mat.data)
    counts = np.diff(mat.indptr)
    row_max = np.zeros(mat.shape[0])
    rows = counts > 0                  # reduceat misreads empty rows: skip them
    if rows.any():
        row_max[rows] = np.maximum.reduceat(absd, mat.indptr[:-1][rows])
    row_max = np.repeat(row_max, counts)
    mat.data[absd <= 64 * np.finfo(np.float64).eps * row_max] = 0.0
    mat.eliminate_zeros()
    return mat


def _torch_csr(mat, dtype: torch.dtype, device) -> Tensor:
    coo = mat.tocoo()
    return _csr(torch.as_tensor(coo.row, dtype=torch.long), torch.as_tensor(coo.col, dtype=torch.long),
                torch.as_tensor(coo.data, dtype=torch.float64), mat.shape).to(
        device=device, dtype=dtype)


def _reconstruction_matrix(mesh: Mesh, dtype: torch.dtype, device,
                           scheme: str = "linear", operators: Optional[str] = None) -> Tensor:
    """``[R_a; R_b]`` as a torch CSR ``(2 n_faces, n_cells)`` in ``dtype`` on ``device``."""
    def build() -> Tensor:
        from scipy import sparse
        ra, rb = _reconstruction_scipy(mesh, scheme, operators)
        return _torch_csr(sparse.vstack([ra, rb]).tocsr(), dtype, device)
    operators = check_operators(operators)
    return _sparse_cached(mesh, ("reconstruction", scheme, operators, dtype,
                                 torch.device(device)), build)


def advection_matrix(mesh: Mesh, U: Tensor, scheme: str = "linear",
                     operators: Optional[str] = None) -> Tensor:
    """The advective tendency ``−div(Φ(q))`` as a CSR matrix ``(n_cells, n_cells)``.

    For a fixed transport ``U`` the upwind and the unlimited linear schemes are
    linear in ``q``: ``−div(Φ) = L q`` with
    ``L = −V⁻¹ D (diag(U⁺) R_a + diag(U⁻) R_b)`` (``D`` the face -> cell
    incidence, ``U⁺ = U`` where ``U ≥ 0`` else 0, ``U⁻ = U − U⁺``). ``L q``
    equals ``−divergence(mesh, linear_flux(mesh, q, U))`` up to rounding, in
    one sparse product (about 7 non-zeros per row on a quadrilateral grid).
    ``U`` is taken as a constant (no gradient flows to it).

    Parameters
    ----------
    mesh : Mesh
    U : Tensor, shape (n_faces,)
    scheme : {"linear", "upwind", "quadratic"}
    operators : str, optional
        Operator version (:mod:`meshclosure.fv.versions`); default the current one.

    Returns
    -------
    Tensor, sparse CSR, shape (n_cells, n_cells), dtype and device of ``U``
    """
    if scheme not in MATRIX_SCHEMES:
        raise ValueError(f"scheme must be one of {MATRIX_SCHEMES} (the schemes linear in q); "
                         f"got {scheme!r}. The limited scheme has no matrix form.")
    _check_rows("U", U, mesh.n_faces, "n_faces")
    import numpy as np
    from scipy import sparse

    ra, rb = _reconstruction_scipy(mesh, scheme, operators)
    u = U.detach().double().cpu().numpy()
    up = np.where(u >= 0, u, 0.0)
    flux = sparse.diags(up) @ ra + sparse.diags(u - up) @ rb
    a = mesh.face_cells[0].cpu().numpy()
    b = mesh.face_cells[1].cpu().numpy()
    inv = 1.0 / mesh.cell_volume.double().cpu().numpy()
    f = np.arange(mesh.n_faces)
    div = sparse.csr_matrix((np.concatenate([-inv[a], inv[b]]),
                             (np.concatenate([a, b]), np.concatenate([f, f]))),
                            shape=(mesh.n_cells, mesh.n_faces))
    return _torch_csr(_prune(div @ flux), U.dtype, U.device)


# --------------------------------------------------------------------------------- CFL
def outflow_courant(mesh: Mesh, U: Tensor, dt: float = 1.0,
                    boundary_transport: Optional[Tensor] = None) -> Tensor:
    """Outflow Courant number ``ν_i = Δt Σ_{outflow f} |U_f| / V_i`` of every cell.

    Parameters
    ----------
    mesh : Mesh
    U : Tensor, shape (n_faces,)
    dt : float
    boundary_transport : Tensor, shape (n_boundary_faces,), optional
        Outward transports through boundary faces (positive = outflow).

    Returns
    -------
    Tensor, shape (n_cells,)
    """
    _check_rows("U", U, mesh.n_faces, "n_faces")
    a, b = mesh.face_cells[0], mesh.face_cells[1]
    out = U.new_zeros(mesh.n_cells)
    out = out.index_add(0, a, U.clamp(min=0)).index_add(0, b, (-U).clamp(min=0))
    if boundary_transport is not None:
        out = out.index_add(0, mesh.boundary_face_cell, boundary_transport.clamp(min=0))
    return dt * out / mesh.cell_volume.to(U.dtype)


def _sample_times(t0, t1, n_samples, sample_step) -> list:
    """Sample times of the window ``[t0, t1]`` for :func:`cfl_dt` (both ends included)."""
    import numbers

    from ..errors import ArgumentError

    for name, value in (("t0", t0), ("t1", t1)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) \
                or not math.isfinite(value):
            raise ArgumentError(name, value, "must be a finite time",
                                "pass the window as numbers, e.g. t0=0.0, t1=T")
    t0, t1 = float(t0), float(t1)
    if t1 < t0:
        raise ArgumentError("t1", t1, f"must be >= t0={t0!r}", "swap {t0} and {t1}")
    if n_samples is not None and sample_step is not None:
        raise ArgumentError("sample_step", sample_step, "cannot be combined with n_samples",
                            "pass one of {n_samples} or {sample_step}")
    if t1 == t0:
        return [t0]
    if sample_step is not None:
        step = float(sample_step)
        if not (step > 0 and math.isfinite(step)):
            raise ArgumentError("sample_step", sample_step, "must be a positive finite time",
                                "pass e.g. sample_step=(t1 - t0) / 100")
        n = int(math.ceil((t1 - t0) / step - 1e-9)) + 1
        if n > 10_000_000:
            raise ArgumentError("sample_step", sample_step, f"gives {n} sample times (limit "
                                "10,000,000)", "pass a larger sample_step or n_samples")
        return [t0 + k * step for k in range(n - 1)] + [t1]
    n = 101 if n_samples is None else n_samples
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 2:
        raise ArgumentError("n_samples", n_samples, "must be an integer >= 2 (both ends of "
                            "the window are sampled)", "pass e.g. n_samples=101")
    return [t0 + (t1 - t0) * k / (int(n) - 1) for k in range(int(n))]


def cfl_dt(mesh: Mesh, U, courant: float = 0.5,
           boundary_transport=None, *, t0: Optional[float] = None, t1: Optional[float] = None,
           n_samples: Optional[int] = None, sample_step: Optional[float] = None,
           return_time: bool = False):
    """Largest time step with outflow Courant number ``max_i ν_i ≤ courant``.

    ``Δt = courant / max_i (Σ_{outflow f} |U_f| / V_i)``. Forward Euler and
    SSP-RK3 with upwind fluxes are positive and bounded for ``courant ≤ 1``;
    the Barth–Jespersen limited scheme for ``courant ≤ 1 / k_max`` (``k_max``
    faces per cell: 3 triangles, 4 quadrilaterals/HEALPix, 6 hexagons).

    A time-dependent transport ``U(t)`` is sampled over the window
    ``[t0, t1]``: ``n_samples`` equally spaced times (default 101, both ends
    included), or every ``sample_step`` from ``t0`` plus ``t1``; the result
    is the smallest step over the samples.

    What the bound guarantees: the outflow Courant number of every cell is at
    most ``courant`` at the sampled times (for a fixed ``U``, at all times).
    Between samples it is an estimate: a flow that peaks between two sample
    times can exceed it there (sample finer, or lower ``courant``). It bounds
    the time step only: whether a scheme is stable at that step is a property
    of the scheme and the mesh. With the old face-neighbour gradients
    (``operators="fv1"``) the unlimited linear scheme grows a mode on
    irregular triangulations at any time step (with slivers, and on some
    without: :func:`~meshclosure.fv.gradients.gradient_stencil`); the default
    operators (``"fv2"``) fit the gradient over the vertex neighbours on every
    mesh outside the built-in structured families, where it does not grow on
    the meshes tested (the largest Re λ of the semi-discrete operator is
    rounding), and ``"quadratic"``, ``"limited"`` and ``"upwind"`` are stable
    there too. :meth:`Mesh.validate` warns of meshes with slivers.

    Parameters
    ----------
    mesh : Mesh
    U : Tensor, shape (n_faces,), or callable ``t -> Tensor (n_faces,)``
        Integrated face transports; a callable for a time-dependent flow
        (then ``t0`` is required).
    courant : float
        Target outflow Courant number, > 0.
    boundary_transport : Tensor, shape (n_boundary_faces,), or callable, optional
        Outward transports through boundary faces; a callable ``t -> Tensor``
        is sampled with ``U``.
    t0, t1 : float, optional
        The time window; ``t1`` defaults to ``t0`` (one instant).
    n_samples : int, optional
        Number of equally spaced sample times in ``[t0, t1]`` (>= 2; default 101).
    sample_step : float, optional
        Spacing of the sample times instead of ``n_samples``.
    return_time : bool
        Also return the sample time at which the smallest step is attained
        (the first one on ties; ``t0`` or ``None`` for a fixed ``U``).

    Returns
    -------
    float, or (float, float) with ``return_time``

    Examples
    --------
    >>> import math, torch
    >>> from meshclosure.mesh import cartesian
    >>> mesh = cartesian(10, 10, 1.0, 1.0)
    >>> U = 0.1 * mesh.face_normal[:, 0] * mesh.face_area   # u = (0.1, 0), dx = 0.1
    >>> round(cfl_dt(mesh, U, courant=0.5), 12)
    0.5
    >>> pulse = lambda t: (1 + math.sin(t) ** 2) * U          # twice as fast at t = π/2
    >>> dt, when = cfl_dt(mesh, pulse, 0.5, t0=0.0, t1=math.pi, n_samples=3, return_time=True)
    >>> round(dt, 12), round(when, 6)
    (0.25, 1.570796)
    >>> cfl_dt(mesh, U, courant=0.0)
    Traceback (most recent call last):
    ...
    ValueError: courant must be a positive finite number; got 0.0. ...
    >>> cfl_dt(mesh, pulse, 0.5)
    Traceback (most recent call last):
    ...
    meshclosure.errors.ArgumentError: t0=None: must be given when U is a callable (a time-dependent transport); pass the window, e.g. t0=0.0, t1=T (n_samples=101 times by default), or U(t) for one instant.
    """
    from ..errors import ArgumentError

    c = float(courant)
    if not (c > 0 and c < float("inf")):
        raise ValueError(f"courant must be a positive finite number; got {courant!r}. "
                         "Use e.g. courant=0.5 (or 1/k_max for the limited scheme).")
    timed = callable(U) or callable(boundary_transport)
    if timed and t0 is None:
        raise ArgumentError("t0", t0, "must be given when U is a callable (a time-dependent "
                            "transport)", "pass the window, e.g. t0=0.0, t1=T (n_samples=101 "
                            "times by default), or U(t) for one instant")
    if t0 is None:
        if t1 is not None or n_samples is not None or sample_step is not None:
            raise ArgumentError("t0", t0, "must be given with t1, n_samples or sample_step",
                                "pass t0 (the start of the window)")
        times = [None]
    else:
        times = _sample_times(t0, t0 if t1 is None else t1, n_samples, sample_step)
        if not timed:
            times = times[:1]                 # a fixed transport: every sample is the same
    best_rate, best_time = -1.0, None
    for t in times:
        Ut = U(t) if callable(U) else U
        bt = boundary_transport(t) if callable(boundary_transport) else boundary_transport
        if not isinstance(Ut, Tensor):
            raise ArgumentError("U", type(Ut).__name__, "must be a Tensor (n_faces,) or a "
                                "callable returning one", "pass face transports, e.g. from "
                                "meshclosure.fv.transport_from_streamfunction")
        rate = float(outflow_courant(mesh, Ut.detach(), 1.0,
                                     None if bt is None else bt.detach()).max())
        if not math.isfinite(rate):
            at = "" if t is None else f" at t={t!r}"
            raise ValueError(f"U has NaN or infinite transports{at} (outflow rate {rate!r}); "
                             "fix the flow before choosing a time step.")
        if rate > best_rate:
            best_rate, best_time = rate, t
    if best_rate <= 0:
        raise ValueError("U is zero everywhere" + ("" if times == [None] else " at every sample "
                         "time") + ", so no advective CFL limit exists; choose dt from the "
                         "other processes (e.g. diffusion) instead.")
    dt = c / best_rate
    return (dt, best_time) if return_time else dt


def max_faces_per_cell(mesh: Mesh) -> int:
    """Largest number of faces (interior and boundary) of any cell: the ``k_max`` of the
    limited scheme's no-new-extrema Courant bound ``1/k_max``. (Vertices are not faces:
    a coarsened cell keeps every fine vertex of its outline.)"""
    count = torch.bincount(torch.cat([mesh.face_cells.reshape(-1), mesh.boundary_face_cell]),
                           minlength=mesh.n_cells)
    return int(count.max())
