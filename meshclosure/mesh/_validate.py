"""Checks behind :meth:`Mesh.validate` (DESIGN.md §3)."""
from __future__ import annotations

import math

import torch

from ._mesh import _FLOAT_FIELDS, Mesh, MeshError

__all__ = ["validate_mesh"]


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


def validate_mesh(mesh: Mesh, raise_on_error: bool = True, tol: float | None = None) -> list[str]:
    """Run every check; raise the first failure as :class:`MeshError` or return all."""
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
    return _report(problems, raise_on_error)


def _report(problems, raise_on_error: bool) -> list[str]:
    if problems and raise_on_error:
        msg, cells, faces = problems[0]
        more = f" ({len(problems) - 1} more problem(s); validate(raise_on_error=False) lists all)" \
            if len(problems) > 1 else ""
        raise MeshError(msg + more, cells=cells, faces=faces)
    return [p[0] for p in problems]
