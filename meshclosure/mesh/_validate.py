"""Checks behind :meth:`Mesh.validate` (DESIGN.md §3) and the measures of :meth:`Mesh.quality`."""
from __future__ import annotations

import math
import warnings

import torch

from ..errors import MeshclosureError
from ._mesh import _FLOAT_FIELDS, Mesh, MeshError

__all__ = ["validate_mesh", "mesh_quality", "MeshQualityWarning", "SLIVER_ANGLE",
           "AREA_RATIO_LIMIT"]

SLIVER_ANGLE = 10.0
"""Smallest interior angle (degrees) below which :meth:`Mesh.validate` warns of slivers."""

AREA_RATIO_LIMIT = 1.0e3
"""Largest ratio of cell areas (max/min) above which :meth:`Mesh.validate` warns."""


class MeshQualityWarning(MeshclosureError, UserWarning):
    """A valid mesh whose shape puts some schemes at risk (slivers, wildly varying sizes).

    Issued as a warning by :meth:`Mesh.validate`; the message names the measured
    numbers, the risk and the schemes to use. Silence it with
    ``warnings.simplefilter("ignore", MeshQualityWarning)`` once you have chosen
    a stable scheme. It derives from :class:`~meshclosure.errors.MeshclosureError`
    too, so where warnings are turned into errors ``except MeshclosureError``
    catches it.
    """


def _first(idx: torch.Tensor, k: int = 10) -> list[int]:
    return idx[:k].tolist()


def _net_streamfunction_outflow(mesh: Mesh) -> torch.Tensor:
    """Net transport ``(n_cells,)`` out of every cell for a random vertex streamfunction ψ.

    ``U_f = ψ(v0_f) − ψ(v1_f)`` summed over each cell's faces (owner +, neighbour −,
    boundary faces +) telescopes to zero around a closed, counter-clockwise cell. Written
    here with the mesh arrays alone (the same sum as ``fv.divergence`` times ``V``), so the
    mesh layer does not import the operators built on it.
    """
    gen = torch.Generator().manual_seed(0)
    psi = torch.rand(mesh.n_vertices, generator=gen, dtype=torch.float64).to(mesh.device)
    fv_, bv = mesh.face_vertices, mesh.boundary_face_vertices
    u = psi[fv_[0]] - psi[fv_[1]]
    a, b = mesh.face_cells[0], mesh.face_cells[1]
    net = torch.zeros(mesh.n_cells, dtype=torch.float64, device=mesh.device)
    net = net.index_add(0, a, u).index_add(0, b, -u)
    if mesh.n_boundary_faces:
        net = net.index_add(0, mesh.boundary_face_cell, psi[bv[0]] - psi[bv[1]])
    return net


def validate_mesh(mesh: Mesh, raise_on_error: bool = True, tol: float | None = None,
                  warn: bool = True) -> list[str]:
    """Run every check; raise the first failure as :class:`MeshError` or return all; on a
    valid mesh, warn of poor quality (:func:`warn_quality`) unless ``warn=False``."""
    if tol is None:
        tol = 1e-10 if mesh.dtype == torch.float64 else 1e-4
    problems: list[tuple[str, list, list]] = []

    def fail(msg: str, cells=(), faces=()) -> None:
        problems.append((msg, list(cells), list(faces)))

    # 1. finite values
    for name in _FLOAT_FIELDS:
        x = getattr(mesh, name)
        if x.numel() == 0:
            continue
        bad = (~torch.isfinite(x.reshape(x.shape[0], -1))).any(1).nonzero().ravel()
        if bad.numel():
            fail(f"{name} has NaN/Inf at rows {_first(bad)}; rebuild the mesh from finite "
                 "vertex coordinates.",
                 cells=_first(bad) if name.startswith("cell") else (),
                 faces=_first(bad) if name.startswith("face") else ())
    if problems:
        return _report(problems, raise_on_error)

    n = mesh.n_cells
    a, b = mesh.face_cells
    # 2. every index refers to an existing cell or vertex
    for name, limit, allow_pad in (("face_cells", n, False), ("boundary_face_cell", n, False),
                                   ("face_vertices", mesh.n_vertices, False),
                                   ("boundary_face_vertices", mesh.n_vertices, False),
                                   ("cell_vertices", mesh.n_vertices, True)):
        idx = getattr(mesh, name)
        if idx.numel() == 0:
            continue
        low = -1 if allow_pad else 0
        bad = ((idx < low) | (idx >= limit))
        rows = (bad.any(0) if name in ("face_cells", "face_vertices", "boundary_face_vertices")
                else bad.reshape(bad.shape[0], -1).any(1)).nonzero().ravel()
        if rows.numel():
            fail(f"{name} has entries outside {low}..{limit - 1} at {_first(rows)}; the mesh "
                 "arrays are inconsistent: rebuild it with an adapter or from_polygons.",
                 faces=_first(rows) if "face" in name else (),
                 cells=_first(rows) if name == "cell_vertices" else ())
    if problems:
        return _report(problems, raise_on_error)
    same = (a == b).nonzero().ravel()
    if same.numel():
        fail(f"faces {_first(same)} join a cell to itself (cells {_first(a[same])}); every face "
             "must join two distinct cells.", cells=_first(a[same]), faces=_first(same))

    # 3. positive volumes and face areas
    bad = (mesh.cell_volume <= 0).nonzero().ravel()
    if bad.numel():
        fail(f"cells {_first(bad)} have non-positive volume {_first(mesh.cell_volume[bad], 3)}; "
             "remove collapsed cells.", cells=_first(bad))
    bad = (mesh.face_area <= 0).nonzero().ravel()
    if bad.numel():
        fail(f"faces {_first(bad)} have non-positive area; remove zero-length faces.",
             faces=_first(bad))

    # 4. closed, consistently oriented cells: a random vertex streamfunction
    #    must give zero net transport out of every cell.
    if mesh.dim > 1:
        net = _net_streamfunction_outflow(mesh)
        bad = (net.abs() > 1e-9).nonzero().ravel()
        if bad.numel():
            fail(f"cells {_first(bad)} are not closed or not consistently oriented: their faces "
                 "do not form one counter-clockwise loop. Check their vertex lists.",
                 cells=_first(bad))

    # 5. normals: unit, tangent, owner -> neighbour
    norm = mesh.face_normal.norm(dim=1)
    bad = ((norm - 1).abs() > tol).nonzero().ravel()
    if bad.numel():
        fail(f"face normals of faces {_first(bad)} are not unit (norms "
             f"{_first(norm[bad], 3)}).", faces=_first(bad))
    d = mesh.cell_center[b] - mesh.cell_center[a]
    if mesh.period is not None:
        for axis, length in enumerate(mesh.period):
            if length:
                d[:, axis] -= length * torch.round(d[:, axis] / length)
    if mesh.is_sphere:
        radial = mesh.face_center / mesh.radius
        tangent = (mesh.face_normal * radial).sum(1).abs()
        bad = (tangent > tol).nonzero().ravel()
        if bad.numel():
            fail(f"face normals of faces {_first(bad)} are not tangent to the sphere.",
                 faces=_first(bad))
    bad = ((d * mesh.face_normal).sum(1) <= 0).nonzero().ravel()
    if bad.numel():
        fail(f"face normals of faces {_first(bad)} do not point from owner to neighbour "
             f"(owners {_first(a[bad])}, neighbours {_first(b[bad])}); the cell centres lie on "
             "the wrong side of these faces: check for folded or non-convex cells.",
             cells=_first(a[bad]), faces=_first(bad))

    # 6. volumes sum to the domain area
    total, expected = float(mesh.cell_volume.double().sum()), mesh.domain_area()
    if not math.isclose(total, expected, rel_tol=max(tol, 1e-12)):
        rel = abs(total / expected - 1) if expected else float("inf")
        fail(f"cell volumes sum to {total!r}, not the domain area {expected!r} (relative error "
             f"{rel:.3g}); cells overlap or leave gaps.")

    # 7. closed sphere: Euler characteristic 2
    if mesh.is_sphere and mesh.n_boundary_faces == 0:
        chi = mesh.euler_characteristic()
        if chi != 2:
            fail(f"Euler characteristic V - E + F = {chi}, not 2 for a closed sphere; the mesh "
                 "has holes, handles or duplicated vertices.")
    out = _report(problems, raise_on_error)
    if not problems and warn:
        warn_quality(mesh, mesh_quality(mesh), stacklevel=4)
    return out


def _report(problems, raise_on_error: bool) -> list[str]:
    if problems and raise_on_error:
        msg, cells, faces = problems[0]
        more = f" ({len(problems) - 1} more problem(s); validate(raise_on_error=False) lists all)" \
            if len(problems) > 1 else ""
        raise MeshError(msg + more, cells=cells, faces=faces)
    return [p[0] for p in problems]


# ------------------------------------------------------------------------- quality
def _interior_angles(mesh: Mesh):
    """Interior angle (radians) at every polygon corner ``(n_cells, k)`` and the valid mask.

    Plane: the angle between the edges to the next and the previous vertex
    (minimum image on a periodic plane). Sphere: the angle between the
    great-circle edges, i.e. between their tangents at the vertex. Measured
    counter-clockwise from the edge to the next vertex to the edge to the
    previous one, so a reflex corner reads above 180°.
    """
    import numpy as np

    cv = mesh.cell_vertices.cpu().numpy()
    mask = cv >= 0
    n_per = mask.sum(1)
    k = np.arange(cv.shape[1])[None, :]
    nxt = np.take_along_axis(cv, np.where(k + 1 < n_per[:, None], k + 1, 0), 1)
    prv = np.take_along_axis(cv, np.where(k >= 1, k - 1, n_per[:, None] - 1), 1)
    v = mesh.vertex_pos.detach().cpu().double().numpy()
    safe = lambda i: np.where(mask, i, 0)  # noqa: E731
    p, q, r = v[safe(cv)], v[safe(nxt)], v[safe(prv)]
    e_next, e_prev = q - p, r - p
    if mesh.period is not None:
        for axis, length in enumerate(mesh.period):
            if length:
                e_next[..., axis] -= length * np.round(e_next[..., axis] / length)
                e_prev[..., axis] -= length * np.round(e_prev[..., axis] / length)
    if mesh.is_sphere:
        up = p / np.linalg.norm(p, axis=-1, keepdims=True)
        e_next = e_next - (e_next * up).sum(-1, keepdims=True) * up   # great-circle tangents
        e_prev = e_prev - (e_prev * up).sum(-1, keepdims=True) * up
        sin = (np.cross(e_next, e_prev) * up).sum(-1)
    else:
        sin = e_next[..., 0] * e_prev[..., 1] - e_next[..., 1] * e_prev[..., 0]
    angle = np.mod(np.arctan2(sin, (e_next * e_prev).sum(-1)), 2 * np.pi)
    return angle, mask


def mesh_quality(mesh: Mesh) -> dict:
    """The measures of :meth:`Mesh.quality` (see there)."""
    import numpy as np

    out: dict = {}
    vol = mesh.cell_volume.detach().cpu().double().numpy()
    out["area_ratio"] = float(vol.max() / vol.min())
    lengths = np.r_[mesh.face_area.detach().cpu().double().numpy(),
                    mesh.boundary_face_area.detach().cpu().double().numpy()]
    if mesh.dim >= 2:
        angle, mask = _interior_angles(mesh)
        deg = np.degrees(angle)
        low = np.where(mask, deg, np.inf)
        cell = int(np.argmin(low.min(1)))
        out["min_angle"] = float(low.min())
        out["min_angle_cell"] = cell
        out["max_angle"] = float(np.where(mask, deg, -np.inf).max())
        out["face_length_ratio"] = float(lengths.max() / lengths.min())
    else:
        out.update(min_angle=None, min_angle_cell=None, max_angle=None, face_length_ratio=None)
    if mesh.n_faces == 0:
        out.update(distance_ratio=None, max_non_orthogonality=None,
                   mean_non_orthogonality=None, max_skewness=None)
        return out
    dist = mesh.cell_distance.detach().cpu().double().numpy()
    out["distance_ratio"] = float(dist.max() / dist.min())
    c = mesh.cell_center.detach().cpu().double().numpy()
    a, b = mesh.face_cells.cpu().numpy()
    n = mesh.face_normal.detach().cpu().double().numpy()
    fc = mesh.face_center.detach().cpu().double().numpy()
    d = c[b] - c[a]
    xa = c[a] - fc                     # owner centre seen from the face centre
    if mesh.period is not None:
        for axis, length in enumerate(mesh.period):
            if length:
                d[:, axis] -= length * np.round(d[:, axis] / length)
                xa[:, axis] -= length * np.round(xa[:, axis] / length)
    if mesh.is_sphere:                 # work in the tangent plane at the face centre
        up = fc / np.linalg.norm(fc, axis=1, keepdims=True)
        d = d - (d * up).sum(1, keepdims=True) * up
        xa = xa - (xa * up).sum(1, keepdims=True) * up
    dn = np.linalg.norm(d, axis=1)
    cos = np.clip((d * n).sum(1) / dn, -1.0, 1.0)
    theta = np.degrees(np.arccos(cos))
    out["max_non_orthogonality"] = float(theta.max())
    out["mean_non_orthogonality"] = float(theta.mean())
    if mesh.dim >= 2:
        # where the centre-to-centre line crosses the face line, from the face centre
        s = -(xa * n).sum(1) / (d * n).sum(1)
        offset = xa + s[:, None] * d
        skew = np.linalg.norm(offset, axis=1) / mesh.face_area.detach().cpu().double().numpy()
        out["max_skewness"] = float(skew.max())
    else:
        out["max_skewness"] = None
    return out


def warn_quality(mesh: Mesh, quality: dict, stacklevel: int = 3) -> None:
    """Warn with :class:`MeshQualityWarning` when the mesh has slivers or sizes varying
    by more than :data:`AREA_RATIO_LIMIT`."""
    if mesh.dim < 2:
        return
    issues = []
    if quality["min_angle"] is not None and quality["min_angle"] < SLIVER_ANGLE:
        issues.append(f"slivers: smallest interior angle {quality['min_angle']:.3g}° (cell "
                      f"{quality['min_angle_cell']}), below {SLIVER_ANGLE:g}°")
    if quality["area_ratio"] > AREA_RATIO_LIMIT:
        issues.append(f"cell areas varying by a factor {quality['area_ratio']:.3g} "
                      f"(max/min), above {AREA_RATIO_LIMIT:.0e}")
    if not issues:
        return
    warnings.warn(
        "mesh has " + " and ".join(issues) + ". Risk: with the old face-neighbour stencils "
        "(operators='fv1') the unlimited linear scheme grows a mode on the sliver cells, "
        "whatever the time step (random data grew ×3.7e3 per revolution on such a mesh); "
        "keep the default operators ('fv2', vertex-neighbour stencils, stable here) or use "
        "scheme='quadratic', 'limited' or 'upwind'. The smallest cells set the time step "
        "(cfl_dt) and errors are largest where cell sizes jump (see Mesh.quality()).",
        MeshQualityWarning, stacklevel=stacklevel)
