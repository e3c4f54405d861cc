"""Cell gradients, face interpolation and cell -> vertex interpolation (DESIGN.md §6).

Every displacement is measured in the tangent plane of the point it starts
from, so a cell gradient is a vector tangent to the surface at the cell
centre (shape ``(n_cells, d, ...)``, ``d = 3`` on the sphere):

* plane: ``r_ij = x_j − x_i``, with the minimum-image convention on periodic
  axes (``mesh.period``);
* sphere: the logarithmic map ``r_ij = log_{x_i}(x_j) = R θ_ij t̂_ij``, with
  ``θ_ij`` the great-circle angle and ``t̂_ij`` the unit tangent at ``x_i`` of
  the great circle towards ``x_j`` (geodesic normal coordinates). A field
  linear in these coordinates has an exact least-squares gradient.

Weighted least squares (Mavriplis 2003, doi:10.2514/6.2003-3986): for each cell
``i`` with neighbours ``j`` (and Dirichlet boundary face centres)::

    g_i = argmin_g Σ_j w_ij (g·r_ij − (q_j − q_i))²,   w_ij = |r_ij|^(−p)
        = M_i⁻¹ Σ_j w_ij r_ij (q_j − q_i),           M_i = Σ_j w_ij r_ij r_ijᵀ

(on the sphere ``M_i + n̂_i n̂_iᵀ`` is inverted, which keeps ``g_i`` tangent).
The vectors ``c_ij = M_i⁻¹ w_ij r_ij`` are precomputed once per mesh by
:class:`LeastSquaresGradient`; a call is then two gathers and one
``index_add``.

The neighbours ``j`` are the cells sharing a face with ``i`` (operator version
``fv1``; ``fv2`` on the built-in structured families) or every cell sharing a
vertex with ``i`` (``fv2`` on every other mesh: users' meshes, irregular
triangulations, agglomerated coarse meshes; :func:`gradient_stencil`). On
irregular triangulations the face-neighbour fit makes the unlimited linear
advection scheme unstable at any time step: random data grew ×10¹² per
revolution on ``irregular_sphere(250)`` (slivers), and ×10^3.3 on
``jittered_sphere(4000, jitter=0.35)``, whose smallest angle is 14.5°; over
the vertex neighbours (about 12 for triangles) it does not grow there. The
wider fit is not used on the structured families: it smooths, and there it
costs accuracy (Williamson's cosine bell with the linear scheme on icosahedral
triangles, level 4: l2 0.42 against 0.25 over the face neighbours at
``α = π/2 − 0.05``, 0.40 against 0.33 at ``α = 0``; no gain on the cubed sphere,
0.394 against 0.384 at 32 cells per panel edge). Choosing the vertex stencil
per cell (where the face fit is ill-conditioned) does not cure the growth:
the unstable mode is not confined to the sliver cells.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from .._cache import per_mesh
from .._checks import check_float, check_rows
from ..errors import ArgumentError
from ..mesh import Mesh
from .versions import check_operators, operator_set

_check_rows = check_rows

__all__ = [
    "gradient", "LeastSquaresGradient", "face_interpolate", "face_gradient_normal",
    "cell_to_vertex", "displacement", "neighbour_pairs", "gradient_stencil", "least_squares",
    "STRUCTURED_FAMILIES",
]

def _cached(mesh: Mesh, key: str, build: Callable[[], Any]) -> Any:
    """Per-mesh cache of precomputed operators (dropped with the mesh)."""
    return per_mesh(mesh, ("fv", key), build)


def _expand(x: Tensor, like: Tensor, lead: int = 1) -> Tensor:
    """Append singleton dims to ``x`` so it broadcasts over ``like``'s trailing dims."""
    return x.reshape(tuple(x.shape) + (1,) * (like.dim() - lead))


def displacement(mesh: Mesh, origin: Tensor, target: Tensor) -> Tensor:
    """Tangent-plane displacement from ``origin`` to ``target`` points.

    Plane: ``target − origin`` (minimum image on periodic axes). Sphere: the
    logarithmic map ``R θ t̂`` at ``origin`` (geodesic length ``R θ``, tangent
    at ``origin``).

    Parameters
    ----------
    mesh : Mesh
    origin, target : Tensor, shape (n, d)

    Returns
    -------
    Tensor, shape (n, d)
    """
    if mesh.is_sphere:
        p = origin / origin.norm(dim=1, keepdim=True)
        q = target / target.norm(dim=1, keepdim=True)
        cos = (p * q).sum(1, keepdim=True)
        t = q - cos * p
        sin = t.norm(dim=1, keepdim=True)
        theta = torch.atan2(sin, cos)
        return mesh.radius * theta * t / sin.clamp_min(torch.finfo(t.dtype).tiny)
    r = target - origin
    if mesh.period is not None:
        period = torch.tensor(mesh.period, dtype=r.dtype, device=r.device)
        safe = torch.where(period > 0, period, torch.ones_like(period))
        r = torch.where(period > 0, r - safe * torch.round(r / safe), r)
    return r


def neighbour_pairs(mesh: Mesh, stencil: str = "vertex") -> tuple[Tensor, Tensor]:
    """Directed cell pairs ``(i, j)`` of a gradient stencil.

    ``"face"``: ``j`` shares a face with ``i`` (each interior face twice: all
    owner -> neighbour pairs in face order, then the reverse ones).
    ``"vertex"``: ``j ≠ i`` shares at least one vertex with
    ``i`` (every face neighbour, plus the cells across the corners).

    Examples
    --------
    >>> from meshclosure.mesh import cartesian
    >>> mesh = cartesian(4, 4)
    >>> [len(neighbour_pairs(mesh, s)[0]) // mesh.n_cells for s in ("face", "vertex")]
    [4, 8]
    """
    if stencil not in ("face", "vertex"):
        raise ArgumentError("stencil", stencil, "must be 'face' or 'vertex'",
                            "use 'vertex' (the fv2 stencil) or 'face' (fv1)")

    def build() -> tuple[Tensor, Tensor]:
        import numpy as np
        from scipy import sparse

        n = mesh.n_cells
        fc = mesh.face_cells.cpu().numpy()
        if stencil == "face":     # face order, both directions: fv1's summation order
            return (torch.cat([mesh.face_cells[0], mesh.face_cells[1]]),
                    torch.cat([mesh.face_cells[1], mesh.face_cells[0]]))
        else:
            cv = mesh.cell_vertices.cpu().numpy()
            rows = np.broadcast_to(np.arange(n)[:, None], cv.shape)[cv >= 0]
            inc = sparse.csr_matrix((np.ones(len(rows)), (rows, cv[cv >= 0])),
                                    shape=(n, mesh.n_vertices))
            adj = sparse.csr_matrix((np.ones(2 * fc.shape[1]), (np.r_[fc[0], fc[1]],
                                                                np.r_[fc[1], fc[0]])), shape=(n, n))
            pattern = (inc @ inc.T + adj).tocoo()   # + adj: faces whatever the vertex lists say
            keep = pattern.row != pattern.col
            i, j = pattern.row[keep], pattern.col[keep]
        order = np.lexsort((j, i))
        return (torch.as_tensor(i[order], dtype=torch.long, device=mesh.device),
                torch.as_tensor(j[order], dtype=torch.long, device=mesh.device))
    return _cached(mesh, ("pairs", stencil), build)


def _tangent_projector(mesh: Mesh, x: Tensor) -> Tensor | None:
    """``I − n̂ n̂ᵀ`` at points ``x`` (n, 3, 3) on the sphere, ``None`` elsewhere."""
    if not mesh.is_sphere:
        return None
    n = x / x.norm(dim=1, keepdim=True)
    return torch.eye(3, dtype=x.dtype, device=x.device) - n[:, :, None] * n[:, None, :]


class LeastSquaresGradient:
    """Weighted least-squares cell gradient, precomputed for one mesh.

    Parameters
    ----------
    mesh : Mesh
    weight_power : float
        ``p`` in the weights ``w_ij = |r_ij|^(−p)`` (default 2: inverse
        distance squared, which makes the fit scale-free; 0: unweighted).
    stencil : {"vertex", "face"}, optional
        The neighbours of the fit (:func:`neighbour_pairs`); default: that of
        the current operator version on this mesh (:func:`gradient_stencil`).

    Notes
    -----
    Two coefficient sets are stored, both as ``(n_directed, d)`` tensors in
    float64 on the mesh's device (cast on first use per dtype/device):
    interior neighbours only (boundary faces carry no value: the fit is
    one-sided at the boundary and still exact for linear fields), and
    interior neighbours plus boundary face centres (Dirichlet values). The
    normal equations are solved with a pseudo-inverse: a cell whose
    neighbours do not span the tangent plane (a corner triangle with a
    single neighbour) gets the minimum-norm gradient, zero along the
    undetermined direction.

    Examples
    --------
    >>> import torch
    >>> from meshclosure.mesh import cartesian
    >>> mesh = cartesian(6, 6, 1.0, 1.0, periodic=False)
    >>> grad = LeastSquaresGradient(mesh)
    >>> q = 2.0 * mesh.cell_center[:, 0] - 3.0 * mesh.cell_center[:, 1]
    >>> torch.allclose(grad(q), torch.tensor([2.0, -3.0], dtype=q.dtype))
    True
    >>> grad(q[:5])
    Traceback (most recent call last):
    ...
    ValueError: q must have n_cells = 36 rows (dim 0); got shape (5,). ...
    """

    def __init__(self, mesh: Mesh, weight_power: float = 2.0,
                 stencil: str | None = None) -> None:
        # keep only what __call__ needs: holding the mesh would keep it alive in the
        # per-mesh (weak-key) cache forever
        self.n_cells, self.dim = mesh.n_cells, mesh.dim
        self.n_boundary_faces = mesh.n_boundary_faces
        self.boundary_face_cell = mesh.boundary_face_cell
        self.device = mesh.device
        self.weight_power = float(weight_power)
        self.stencil = gradient_stencil(mesh) if stencil is None else stencil
        m = mesh.double()
        x = m.cell_center
        # directed pairs: cell -> neighbour
        self.cell, self.neighbour = neighbour_pairs(mesh, self.stencil)
        r = displacement(m, x[self.cell], x[self.neighbour])
        rb = displacement(m, x[m.boundary_face_cell], m.boundary_face_center)
        self._coef: dict[tuple, Tensor] = {}
        for dirichlet in (False, True):
            rr = torch.cat([r, rb]) if dirichlet else r
            cells = torch.cat([self.cell, m.boundary_face_cell]) if dirichlet else self.cell
            self._coef[(dirichlet, torch.float64, m.device)] = self._coefficients(m, rr, cells)

    def _coefficients(self, m: Mesh, r: Tensor, cells: Tensor) -> Tensor:
        d = m.dim
        w = r.norm(dim=1).pow(-self.weight_power)
        outer = w[:, None, None] * r[:, :, None] * r[:, None, :]
        mat = torch.zeros(m.n_cells, d, d, dtype=r.dtype, device=r.device).index_add(0, cells, outer)
        if m.is_sphere:
            scale = mat.diagonal(dim1=1, dim2=2).sum(1).clamp_min(torch.finfo(r.dtype).tiny)
            n = m.cell_center / m.cell_center.norm(dim=1, keepdim=True)
            mat = mat + scale[:, None, None] * n[:, :, None] * n[:, None, :]
        # pseudo-inverse: where the neighbours do not span the tangent plane (a
        # triangle in a corner with one neighbour) the minimum-norm gradient,
        # i.e. zero along the undetermined direction
        inv = torch.linalg.pinv(mat, hermitian=True, rtol=1e-10)
        return torch.einsum("eij,ej->ei", inv[cells], w[:, None] * r)

    def coefficients(self, dirichlet: bool, dtype: torch.dtype, device: Any) -> Tensor:
        """The vectors ``c_ij`` ``(n_directed [+ n_boundary_faces], d)`` in ``dtype`` on ``device``."""
        key = (dirichlet, dtype, torch.device(device))
        if key not in self._coef:
            self._coef[key] = self._coef[(dirichlet, torch.float64, self.device)].to(
                device=device, dtype=dtype)
        return self._coef[key]

    def __call__(self, q: Tensor, boundary_value: Tensor | None = None) -> Tensor:
        """Cell gradients ``(n_cells, d, ...)`` of cell values ``q`` ``(n_cells, ...)``.

        ``boundary_value`` ``(n_boundary_faces, ...)``: Dirichlet values at the
        boundary face centres; ``None`` leaves boundary faces out of the fit.
        """
        mesh = self
        _check_rows("q", q, mesh.n_cells, "n_cells")
        cell, nb = self.cell.to(q.device), self.neighbour.to(q.device)
        diff = q[nb] - q[cell]
        if boundary_value is not None:
            _check_rows("boundary_value", boundary_value, mesh.n_boundary_faces,
                        "n_boundary_faces")
            bcell = mesh.boundary_face_cell.to(q.device)
            diff = torch.cat([diff, boundary_value.to(q.dtype) - q[bcell]])
            cell = torch.cat([cell, bcell])
        coef = self.coefficients(boundary_value is not None, q.dtype, q.device)
        contrib = coef.reshape(coef.shape + (1,) * (q.dim() - 1)) * diff[:, None]
        out = q.new_zeros((mesh.n_cells, mesh.dim) + tuple(q.shape[1:]))
        return out.index_add(0, cell, contrib)


def _face_weights(mesh: Mesh) -> Tensor:
    """Owner weight ``w_f = d_bf / (d_af + d_bf)`` (float64, mesh device)."""
    def build() -> Tensor:
        m = mesh.double()
        x, xf = m.cell_center, m.face_center
        da = displacement(m, x[m.face_cells[0]], xf).norm(dim=1)
        db = displacement(m, x[m.face_cells[1]], xf).norm(dim=1)
        return db / (da + db)
    return _cached(mesh, "face_weight", build)


def face_interpolate(mesh: Mesh, q: Tensor) -> Tensor:
    """Distance-weighted linear interpolation of cell values to face centres.

    ``q_f = w_f q_a + (1 − w_f) q_b`` with ``w_f = d_bf / (d_af + d_bf)`` and
    ``d_cf`` the (geodesic, minimum-image) distance from the centre of cell
    ``c`` to the face centre. Second-order where the face centre lies on the
    segment between the cell centres.

    Parameters
    ----------
    mesh : Mesh
    q : Tensor, shape (n_cells, ...)

    Returns
    -------
    Tensor, shape (n_faces, ...)

    Examples
    --------
    >>> import torch
    >>> from meshclosure.mesh import cartesian
    >>> mesh = cartesian(4, 4, 1.0, 1.0, periodic=False)
    >>> q = mesh.cell_center[:, 0]
    >>> torch.allclose(face_interpolate(mesh, q), mesh.face_center[:, 0])
    True
    >>> face_interpolate(mesh, q[None])
    Traceback (most recent call last):
    ...
    ValueError: q must have n_cells = 16 rows (dim 0); got shape (1, 16). ...
    """
    _check_rows("q", q, mesh.n_cells, "n_cells")
    w = _expand(_face_weights(mesh).to(device=q.device, dtype=q.dtype), q)
    a, b = mesh.face_cells[0].to(q.device), mesh.face_cells[1].to(q.device)
    return w * q[a] + (1 - w) * q[b]


def face_gradient_normal(mesh: Mesh, q: Tensor) -> Tensor:
    """Two-point normal derivative ``(q_b − q_a) / d_f`` on each face, ``(n_faces, ...)``.

    Exact for linear fields only on orthogonal faces (owner→neighbour line
    along ``n_f``); :func:`meshclosure.fv.diffusion.face_normal_derivative`
    adds the non-orthogonal correction.

    Examples
    --------
    >>> import torch
    >>> from meshclosure.mesh import cartesian
    >>> mesh = cartesian(4, 4, 2.0, 2.0, periodic=False)
    >>> g = face_gradient_normal(mesh, 3.0 * mesh.cell_center[:, 0])
    >>> sorted(set(g.round(decimals=12).tolist()))   # y-faces, x-faces
    [0.0, 3.0]
    >>> face_gradient_normal(mesh, torch.zeros(3))
    Traceback (most recent call last):
    ...
    ValueError: q must have n_cells = 16 rows (dim 0); got shape (3,). ...
    """
    _check_rows("q", q, mesh.n_cells, "n_cells")
    a, b = mesh.face_cells[0].to(q.device), mesh.face_cells[1].to(q.device)
    d = _expand(mesh.cell_distance.to(device=q.device, dtype=q.dtype), q)
    return (q[b] - q[a]) / d


def _green_gauss(mesh: Mesh, q: Tensor, boundary_value: Tensor | None) -> Tensor:
    dev, dt = q.device, q.dtype
    a, b = mesh.face_cells[0].to(dev), mesh.face_cells[1].to(dev)
    qf = face_interpolate(mesh, q)
    sn = (mesh.face_normal * mesh.face_area[:, None]).to(device=dev, dtype=dt)
    sn = sn.reshape(sn.shape + (1,) * (q.dim() - 1))
    out = q.new_zeros((mesh.n_cells, mesh.dim) + tuple(q.shape[1:]))
    out = out.index_add(0, a, sn * (qf - q[a])[:, None]).index_add(0, b, -sn * (qf - q[b])[:, None])
    if boundary_value is not None:
        _check_rows("boundary_value", boundary_value, mesh.n_boundary_faces, "n_boundary_faces")
        bc = mesh.boundary_face_cell.to(dev)
        sb = (mesh.boundary_face_normal * mesh.boundary_face_area[:, None]).to(device=dev, dtype=dt)
        sb = sb.reshape(sb.shape + (1,) * (q.dim() - 1))
        out = out.index_add(0, bc, sb * (boundary_value.to(dt) - q[bc])[:, None])
    vol = mesh.cell_volume.to(device=dev, dtype=dt)
    out = out / vol.reshape((-1,) + (1,) * (out.dim() - 1))
    proj = _tangent_projector(mesh, mesh.cell_center.to(device=dev, dtype=dt))
    if proj is not None:
        out = torch.einsum("cij,cj...->ci...", proj, out)
    return out


STRUCTURED_FAMILIES = ("cartesian", "column", "healpix", "icosahedral", "cubed")
"""Mesh families on which fv2 keeps the face-neighbour gradient (the linear scheme's
spectrum checked stable on them, and the face fit is the more accurate one there)."""


def gradient_stencil(mesh: Mesh, operators: str | None = None) -> str:
    """The gradient stencil (``"face"`` or ``"vertex"``) an operator version uses on ``mesh``.

    ``fv1``: always the face neighbours. ``fv2``: the face neighbours on the
    built-in structured families (:data:`STRUCTURED_FAMILIES`, and their native
    coarsenings) unless :meth:`Mesh.validate` warns of the mesh (smallest
    angle below 10°, areas varying by more than 10³); the vertex neighbours on
    every other mesh: meshes read with ``from_meshio`` or built with
    ``from_polygons``, ``irregular_sphere``, ``jittered_sphere``, agglomerated
    coarse meshes. The face fit's linear scheme grows on irregular
    triangulations even without slivers (``jittered_sphere(4000, jitter=0.35)``:
    smallest angle 14.5°, random data ×10^3.3 per revolution at Courant 0.5
    and 0.1 alike), so no angle threshold separates the safe meshes from the
    others; on the structured families it does not grow, and it is the more
    accurate fit there.

    Examples
    --------
    >>> from meshclosure.mesh import icosahedral, irregular_sphere, jittered_sphere
    >>> gradient_stencil(icosahedral(3)), gradient_stencil(jittered_sphere(500))
    ('face', 'vertex')
    >>> gradient_stencil(irregular_sphere(250), operators="fv1")
    'face'
    """
    stencil = operator_set(operators).gradient_stencil
    if stencil != "by_mesh":
        return stencil

    def build() -> str:
        from ..mesh import AREA_RATIO_LIMIT, SLIVER_ANGLE

        if mesh.family not in STRUCTURED_FAMILIES:
            return "vertex"
        quality = mesh.double().quality()
        poor = (quality["min_angle"] is not None and quality["min_angle"] < SLIVER_ANGLE) \
            or quality["area_ratio"] > AREA_RATIO_LIMIT
        return "vertex" if poor else "face"
    return _cached(mesh, "gradient_stencil_by_mesh", build)


def least_squares(mesh: Mesh, operators: str | None = None) -> LeastSquaresGradient:
    """The cached :class:`LeastSquaresGradient` of ``mesh`` for an operator version."""
    stencil = gradient_stencil(mesh, operators)
    return _cached(mesh, ("lsq", stencil), lambda: LeastSquaresGradient(mesh, stencil=stencil))


def gradient(mesh: Mesh, q: Tensor, method: str = "least_squares",
             boundary_value: Tensor | None = None, operators: str | None = None) -> Tensor:
    """Cell-centred gradient of a cell field, tangent to the surface.

    Parameters
    ----------
    mesh : Mesh
    q : Tensor, shape (n_cells, ...)
        Cell values (any float dtype, any device; differentiable).
    method : {"least_squares", "green_gauss"}
        Weighted least squares over the neighbours (default; exact for
        linear fields on any mesh) or Green–Gauss with linear face values
        (exact for linear fields where face centres lie midway between cell
        centres). See the module docstring for the equations.
    boundary_value : Tensor, shape (n_boundary_faces, ...), optional
        Dirichlet values at the boundary face centres. By default the boundary
        carries no data: least squares leaves boundary faces out of the fit
        (a one-sided fit, still exact for linear fields) and Green–Gauss uses
        the zero-gradient face value ``q_f = q_i``.
    operators : str, optional
        Operator version (:mod:`meshclosure.fv.versions`): ``"fv2"`` fits over
        the vertex neighbours on poor meshes and the face neighbours elsewhere
        (:func:`gradient_stencil`), ``"fv1"`` always over the face neighbours.
        Default: the current version.

    Returns
    -------
    Tensor, shape (n_cells, d, ...)
        ``∇q`` in the mesh coordinates (``d = 3`` on the sphere, tangent at
        each cell centre), units [q]/length.

    Examples
    --------
    >>> import torch
    >>> from meshclosure.mesh import cartesian
    >>> mesh = cartesian(32, 32, 1.0, 1.0)
    >>> q = torch.sin(2 * torch.pi * mesh.cell_center[:, 0])
    >>> g = gradient(mesh, q)
    >>> exact = 2 * torch.pi * torch.cos(2 * torch.pi * mesh.cell_center[:, 0])
    >>> float((g[:, 0] - exact).abs().max()) < 0.05
    True
    >>> gradient(mesh, q, method="upwind")
    Traceback (most recent call last):
    ...
    ValueError: method must be 'least_squares' or 'green_gauss'; got 'upwind'. ...
    >>> gradient(mesh, torch.arange(mesh.n_cells))
    Traceback (most recent call last):
    ...
    meshclosure.errors.ArgumentTypeError: q=Tensor(shape=(1024,), dtype=int64): must be a floating-point (or complex) tensor; convert it with q.double() (or .float()).
    """
    check_operators(operators)
    if method in ("least_squares", "green_gauss"):
        _check_rows("q", q, mesh.n_cells, "n_cells")
        check_float("q", q, complex_ok=True)    # integers would be truncated, bools meaningless
    if method == "least_squares":
        return least_squares(mesh, operators)(q, boundary_value)
    if method == "green_gauss":
        return _green_gauss(mesh, q, boundary_value)
    raise ValueError(f"method must be 'least_squares' or 'green_gauss'; got {method!r}. "
                     "Use 'least_squares' (exact for linear fields on any mesh).")


def cell_to_vertex(mesh: Mesh, q: Tensor) -> Tensor:
    """Area-weighted average of the cells around each vertex.

    ``q_v = Σ_{i ∋ v} V_i q_i / Σ_{i ∋ v} V_i`` over the cells whose polygon
    (``mesh.cell_vertices``, padded with -1) contains ``v``. Second-order on
    uniform meshes. Use :func:`meshclosure.fv.poisson.vertex_streamfunction`
    for a streamfunction that must be constant along walls.

    Parameters
    ----------
    mesh : Mesh
    q : Tensor, shape (n_cells, ...)

    Returns
    -------
    Tensor, shape (n_vertices, ...)

    Examples
    --------
    >>> import torch
    >>> from meshclosure.mesh import cartesian
    >>> mesh = cartesian(4, 4, 1.0, 1.0)
    >>> q = torch.arange(16.0, dtype=torch.float64)
    >>> float(cell_to_vertex(mesh, q)[5])   # mean of cells 0, 1, 4, 5
    2.5
    >>> cell_to_vertex(mesh, q[:4])
    Traceback (most recent call last):
    ...
    ValueError: q must have n_cells = 16 rows (dim 0); got shape (4,). ...
    """
    _check_rows("q", q, mesh.n_cells, "n_cells")

    def build() -> tuple[Tensor, Tensor, Tensor]:
        cv = mesh.cell_vertices
        mask = cv >= 0
        cells = torch.arange(mesh.n_cells, device=cv.device)[:, None].expand_as(cv)[mask]
        verts = cv[mask]
        vol = mesh.cell_volume.double()[cells]
        total = torch.zeros(mesh.n_vertices, dtype=torch.float64, device=cv.device)
        total = total.index_add(0, verts, vol)
        weight = vol / total[verts].clamp_min(torch.finfo(torch.float64).tiny)
        return cells, verts, weight

    cells, verts, weight = _cached(mesh, "cell_to_vertex", build)
    w = _expand(weight.to(device=q.device, dtype=q.dtype), q)
    out = q.new_zeros((mesh.n_vertices,) + tuple(q.shape[1:]))
    return out.index_add(0, verts.to(q.device), w * q[cells.to(q.device)])
