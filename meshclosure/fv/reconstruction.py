"""Quadratic reconstruction of cell averages: point fit (fv1) and k-exact fit (fv2).

Each cell ``i`` gets a quadratic polynomial in its tangent-plane coordinates
``s`` (geodesic normal coordinates on the sphere, origin at the cell centre)
from a weighted least-squares fit over nearby cells: ``fv1`` over the cells
sharing a vertex with it or two faces away (the fit of
:mod:`meshclosure.fv.diffusion`), ``fv2`` over the cells sharing a vertex,
widened by the cells two faces away only where those are fewer than 7
(:func:`quadratic_stencil`)::

    p_i(s) = q_i + a_i · (φ(s) − ⟨φ⟩_i),    φ(s) = (s_u, s_v, ½ s_u², s_u s_v, ½ s_v²)

``"point"`` (operator version ``fv1``) treats every cell average as the value
at the cell centre: ``⟨φ⟩_i = 0`` and the neighbour ``j`` enters the fit as
``φ(s_ij) a_i ≈ q_j − q_i``. Face values are then off by
``½ H : M_i = O(h²)`` (``M_i`` the cell's second moments), an error that
varies where the mesh does (the panel edges of a cubed sphere).

``"cell_average"`` (``fv2``, k-exact; Barth & Frederickson 1990,
AIAA 90-0013; Ollivier-Gooch & Van Altena 2002, doi:10.1006/jcph.2002.7082)
uses the averages over the cells: ``⟨φ⟩_j`` from the cell's first and second
moments carried into cell ``i``'s frame, so ``p_i`` has the average ``q_i``
over cell ``i`` exactly and reproduces the averages of every neighbour of a
quadratic field; face values (averages over the face, taken along the chord
between the face's end vertices) are third-order accurate on any mesh whose
faces are straight (great-circle arcs on the sphere). On an agglomerated
coarse mesh a face is a polyline of fine faces and the chord's second moment
only approximates its own: exact for linear fields there, not for quadratic
ones (face errors of a quadratic 2.3e-3, 5.1e-4, 2.2e-4 at 16, 32, 64 cells
across on agglomerated jittered meshes)::

    (⟨φ⟩_j − ⟨φ⟩_i) a_i ≈ q_j − q_i,
    ⟨s⟩_j = s_ij + c_j,   ⟨s sᵀ⟩_j = s_ij s_ijᵀ + s_ij c_jᵀ + c_j s_ijᵀ + M_j

with ``c_j``, ``M_j`` the average of ``t`` and ``t tᵀ`` over cell ``j``
(``t`` measured from its centre in its own tangent frame, the polygon mapped
by the logarithmic map; exact for planar polygons), rotated into ``i``'s frame.

A cell whose stencil cannot fix a quadratic (too few or degenerate points)
falls back to the linear fit over the same cells.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..errors import ArgumentError
from ..mesh import Mesh
from .gradients import _cached, displacement

__all__ = ["QuadraticFit", "quadratic_fit", "cell_moments"]

QUADRATIC_KINDS = ("point", "cell_average")


def _local_basis(m: Mesh) -> Tensor:
    from .diffusion import _local_basis as basis
    return basis(m)


def _monomials(s: Tensor) -> Tensor:
    from .diffusion import _monomials as mono
    return mono(s)


def _quadratic_part(S: Tensor) -> Tensor:
    """The quadratic monomials' values ``(½ S_uu, S_uv, ½ S_vv)`` (t = 2) or ``½ S`` (t = 1)
    of a second-moment matrix ``S`` ``(n, t, t)``, in the order of :func:`_monomials`."""
    if S.shape[1] == 1:
        return 0.5 * S[:, 0]
    return torch.stack([0.5 * S[:, 0, 0], S[:, 0, 1], 0.5 * S[:, 1, 1]], 1)


def cell_moments(mesh: Mesh) -> tuple[Tensor, Tensor]:
    """First and second moments of every cell about its centre, in its tangent frame.

    ``c_i = ⟨t⟩_i`` ``(n_cells, t)`` and ``M_i = ⟨t tᵀ⟩_i`` ``(n_cells, t, t)``,
    averages over the cell's polygon with ``t`` the displacement from the
    cell centre (minimum image on a periodic plane, the logarithmic map on
    the sphere) in the basis of :func:`meshclosure.fv.diffusion._local_basis`.
    The polygon is integrated exactly as a planar polygon in those
    coordinates (a triangle fan from the centre, signed areas). Float64,
    cached per mesh.

    Examples
    --------
    >>> from meshclosure.mesh import cartesian
    >>> c, M = cell_moments(cartesian(4, 4, 4.0, 2.0))    # cells 1 x 0.5
    >>> [round(float(v), 12) for v in (c.abs().max(), M[0, 0, 0], M[0, 1, 1], M[0, 0, 1])]
    [0.0, 0.083333333333, 0.020833333333, 0.0]
    """
    def build() -> tuple[Tensor, Tensor]:
        m = mesh.double()
        basis = _local_basis(m)                              # (n, t, d)
        cv = m.cell_vertices
        n, k = cv.shape
        valid = cv >= 0
        x = m.cell_center[:, None, :].expand(n, k, m.dim).reshape(-1, m.dim)
        v = m.vertex_pos[cv.clamp_min(0)].reshape(-1, m.dim)
        r = displacement(m, x, v).reshape(n, k, m.dim)
        p = torch.einsum("ntd,nkd->nkt", basis, r)           # polygon in the tangent frame
        t = p.shape[2]
        # close each polygon: the vertex after the last valid one is the first
        count = valid.sum(1)
        nxt = (torch.arange(k, device=cv.device)[None, :] + 1) % count[:, None].clamp_min(1)
        q = torch.gather(p, 1, nxt[:, :, None].expand(-1, -1, t))
        if t == 1:                                           # an interval [p0, p1]
            a, b = p[:, 0, 0], p[:, 1, 0]
            c = ((a + b) / 2)[:, None]
            M = ((a * a + a * b + b * b) / 3)[:, None, None]
            return c, M
        x0, y0, x1, y1 = p[..., 0], p[..., 1], q[..., 0], q[..., 1]
        area = torch.where(valid, 0.5 * (x0 * y1 - x1 * y0), torch.zeros_like(x0))
        total = area.sum(1)
        cx = (area * (x0 + x1)).sum(1) / 3 / total
        cy = (area * (y0 + y1)).sum(1) / 3 / total
        mxx = (area * (x0 * x0 + x0 * x1 + x1 * x1)).sum(1) / 6 / total
        myy = (area * (y0 * y0 + y0 * y1 + y1 * y1)).sum(1) / 6 / total
        mxy = (area * (2 * x0 * y0 + x0 * y1 + x1 * y0 + 2 * x1 * y1)).sum(1) / 12 / total
        M = torch.stack([torch.stack([mxx, mxy], 1), torch.stack([mxy, myy], 1)], 1)
        return torch.stack([cx, cy], 1), M
    return _cached(mesh, "cell_moments", build)


def quadratic_stencil(mesh: Mesh, min_cells: int | None = None) -> tuple[Tensor, Tensor]:
    """Stencil pairs ``(i, j)`` of the k-exact fit, chosen per cell.

    The cells sharing a vertex with ``i`` where there are at least
    ``min_cells`` of them (default ``k + 2``: 7 on a surface for the 5
    unknowns of a quadratic; quadrilaterals have 8, cube corners 7,
    triangles about 12), otherwise those plus the cells two faces away
    (hexagons have 6 vertex neighbours; cells on a wall fewer). The compact
    stencil is the more accurate one where it is enough (Williamson's bell
    on the cubed sphere at 32 cells per panel edge, measured before the
    face-average term was added: l2 0.288 against 0.342
    with the wide stencil everywhere).
    """
    from .diffusion import _stencils
    from .gradients import neighbour_pairs

    t = 1 if mesh.dim == 1 else 2
    need = (t + t * (t + 1) // 2 + 2) if min_cells is None else int(min_cells)

    def build() -> tuple[Tensor, Tensor]:
        vi, vj = neighbour_pairs(mesh, "vertex")
        wi, wj = _stencils(mesh)
        count = torch.bincount(vi, minlength=mesh.n_cells)
        compact = count >= need
        keep_v, keep_w = compact[vi], ~compact[wi]
        i = torch.cat([vi[keep_v], wi[keep_w]])
        j = torch.cat([vj[keep_v], wj[keep_w]])
        order = torch.argsort(i * mesh.n_cells + j)
        return i[order], j[order]
    return _cached(mesh, ("quadratic_stencil", need), build)


class QuadraticFit:
    """Per-mesh pieces of the quadratic reconstruction (float64 on the mesh's device).

    Attributes
    ----------
    i, j : LongTensor (pairs,)
        The stencil pairs.
    coef : Tensor (pairs, k)
        ``a_i = Σ_j coef_ij (q_j − q_i)`` (``k = 5`` on a surface, 2 on a line).
    phi : [Tensor (n_faces, k), Tensor (n_faces, k)]
        ``φ(s_{c,f}) − ⟨φ⟩_c`` for the owner and the neighbour of every face:
        the face value from cell ``c`` is ``q_c + phi · a_c``.
    """

    def __init__(self, mesh: Mesh, kind: str = "cell_average", weight_power: float = 2.0) -> None:
        if kind not in QUADRATIC_KINDS:
            raise ArgumentError("kind", kind, f"must be one of {QUADRATIC_KINDS}",
                                "use 'cell_average' (fv2) or 'point' (fv1)")
        from .advection import face_displacement
        from .diffusion import _geometry

        m = mesh.double()
        basis = _local_basis(m)
        if kind == "point":                      # fv1: the diffusion fit, bit for bit
            fit = _geometry(mesh)
            self.i, self.j, self.coef = fit.i, fit.j, fit.coef
            self.phi = [_monomials(torch.einsum("ftd,fd->ft", basis[c], r.double()))
                        for c, r in zip(m.face_cells, face_displacement(m))]
            self._cast: dict = {}
            return
        x = m.cell_center
        i, j = quadratic_stencil(mesh)
        r = displacement(m, x[i], x[j])
        if m.is_sphere:   # a local fit: drop pairs more than 120 degrees apart
            near = (x[i] * x[j]).sum(1) > -0.5 * m.radius ** 2
            i, j, r = i[near], j[near], r[near]
        self.i, self.j = i, j
        s = torch.einsum("etd,ed->et", basis[i], r)
        t = s.shape[1]
        k = t + t * (t + 1) // 2
        c, M = cell_moments(mesh)
        rot = torch.einsum("etd,esd->ets", basis[i], basis[j])     # j's frame -> i's frame
        cj = torch.einsum("ets,es->et", rot, c[j])
        Mj = torch.einsum("eta,eab,esb->ets", rot, M[j], rot)
        S = s[:, :, None] * s[:, None, :] + s[:, :, None] * cj[:, None, :] \
            + cj[:, :, None] * s[:, None, :] + Mj
        mean_i = torch.cat([c, _quadratic_part(M)], 1)              # ⟨φ⟩_i (n_cells, k)
        rows = torch.cat([s + cj, _quadratic_part(S)], 1) - mean_i[i]
        dist2 = (s * s).sum(1)
        zeros = torch.zeros(m.n_cells, dtype=s.dtype, device=s.device)
        sigma = zeros.index_add(0, i, dist2)
        count = zeros.index_add(0, i, torch.ones_like(dist2))
        sigma = (sigma / count.clamp_min(1)).sqrt()                  # local length scale
        unscale = torch.cat([sigma[:, None].expand(-1, t),
                             (sigma ** 2)[:, None].expand(-1, k - t)], 1)
        scaled = rows / unscale[i]
        w = (dist2 / sigma[i] ** 2).pow(-weight_power / 2)
        mat = torch.zeros(m.n_cells, k, k, dtype=s.dtype, device=s.device).index_add(
            0, i, w[:, None, None] * scaled[:, :, None] * scaled[:, None, :])
        eig = torch.linalg.eigvalsh(mat)
        poor = eig[:, 0] <= 1e-8 * eig[:, -1]                        # too few points: linear fit
        linear = torch.arange(k, device=s.device) < t
        if poor.any():
            lin = torch.zeros(k, k, dtype=s.dtype, device=s.device)
            lin[t:, t:] = torch.eye(k - t, dtype=s.dtype, device=s.device)
            # the linear block alone (the linear-quadratic coupling dropped), identity on
            # the quadratic block: the quadratic coefficients of these cells are zero
            keep = linear[:, None] & linear[None, :]
            mat = torch.where(poor[:, None, None], mat * keep + lin, mat)
            scaled = torch.where(poor[i, None], scaled * linear, scaled)
        inv = torch.linalg.pinv(mat, hermitian=True, rtol=1e-10)    # min-norm where deficient
        self.coef = torch.einsum("pkl,pl->pk", inv[i], w[:, None] * scaled) / unscale[i]
        self.phi = []
        v0, v1 = m.vertex_pos[m.face_vertices[0]], m.vertex_pos[m.face_vertices[1]]
        for cells, rf in zip(m.face_cells, face_displacement(m)):
            frame = basis[cells]
            sf = torch.einsum("ftd,fd->ft", frame, rf.double())
            phi = _monomials(sf) - mean_i[cells]
            if t == 2:
                chord = torch.einsum("ftd,fd->ft", frame, displacement(m, x[cells], v1)
                                     - displacement(m, x[cells], v0))
                spread = _quadratic_part(chord[:, :, None] * chord[:, None, :] / 12)
                phi = phi + torch.cat([torch.zeros_like(sf), spread], 1)
            self.phi.append(phi)
        self._cast = {}

    def get(self, name: str, like: Tensor):
        """Attribute ``name`` on ``like``'s device (floats in ``like``'s dtype), cached."""
        key = (name, like.dtype, like.device)
        if key not in self._cast:
            value = getattr(self, name)
            if isinstance(value, list):
                value = [v.to(device=like.device, dtype=like.dtype) for v in value]
            else:
                value = value.to(device=like.device, dtype=like.dtype) \
                    if value.is_floating_point() else value.to(device=like.device)
            self._cast[key] = value
        return self._cast[key]


def quadratic_fit(mesh: Mesh, kind: str = "cell_average") -> QuadraticFit:
    """The cached :class:`QuadraticFit` of ``mesh`` (``kind``: ``"point"`` or
    ``"cell_average"``)."""
    return _cached(mesh, ("quadratic_fit", kind), lambda: QuadraticFit(mesh, kind))
