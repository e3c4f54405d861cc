"""Nested coarsening from a parent map (DESIGN.md §5).

A hierarchy is a parent map ``parent (n_fine,) -> coarse cell``. From it:

* coarse volumes ``V_I = Σ_{i∈I} V_i`` and volume-weighted centres;
* coarse faces: the fine faces whose cells have different parents, grouped by
  the parent pair and by connected chain, signed by orientation
  (``s_f = +1`` when the fine owner lies in the coarse owner);
* ``restrict(q)_I = Σ_{i∈I} V_i q_i / V_I`` and
  ``restrict_flux(Φ)_F = Σ_{f∈F} s_f Φ_f``, so that
  ``div_coarse(restrict_flux(Φ)) = restrict(div_fine(Φ))`` exactly (interior
  fine faces of a coarse cell cancel), and coarse transports of a
  non-divergent fine flow are non-divergent.
"""
from __future__ import annotations


import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from ._build import PolygonGeometry
from ._mesh import Mesh, MeshError

__all__ = ["Coarsening", "native_parent", "agglomerate", "column_parent"]


def _chains(key: np.ndarray, start: np.ndarray, end: np.ndarray, n_vertices: int):
    """Split faces with equal ``key`` into chains connected through vertices.

    Returns ``label (m,)`` (chains numbered in order of (key, first face)),
    ``chain_start``, ``chain_end`` (vertex where each chain starts/ends; equal
    for closed loops) and ``chain_key``.
    """
    m = len(key)
    if m == 0:
        e = np.zeros(0, dtype=np.int64)
        return e, e, e, e
    node, inv = np.unique(np.r_[key * n_vertices + start, key * n_vertices + end],
                          return_inverse=True)
    rows = np.r_[np.arange(m), np.arange(m)]
    graph = coo_matrix((np.ones(2 * m), (rows, inv + m)), shape=(m + len(node), m + len(node)))
    _, comp = connected_components(graph, directed=False)
    comp = comp[:m]
    # number chains by (key, smallest face index) for a deterministic order
    first = np.full(comp.max() + 1, m)
    np.minimum.at(first, comp, np.arange(m))
    used = np.unique(comp)
    order = np.lexsort((first[used], key[first[used]]))
    relabel = np.full(comp.max() + 1, -1)
    relabel[used[order]] = np.arange(len(used))
    label = relabel[comp]
    # chain ends: net (+1 start, -1 end) count per (chain, vertex)
    ck, cinv = np.unique(np.r_[label * n_vertices + start, label * n_vertices + end],
                         return_inverse=True)
    net = np.bincount(cinv, np.r_[np.ones(m), -np.ones(m)], len(ck))
    head = first[used[order]]
    chain_start = start[head].copy()
    chain_end = chain_start.copy()
    s, e = net > 0.5, net < -0.5
    chain_start[ck[s] // n_vertices] = ck[s] % n_vertices
    chain_end[ck[e] // n_vertices] = ck[e] % n_vertices
    return label, chain_start, chain_end, key[head]


class Coarsening:
    """Coarse mesh and restriction operators derived from a parent map.

    Parameters
    ----------
    fine : Mesh
    parent : LongTensor or array, shape (n_fine_cells,)
        Coarse cell of every fine cell; values ``0..n_coarse-1``, each used.
    info : dict, optional
        ``info`` of the coarse mesh (default: derived from the fine one).

    Attributes
    ----------
    coarse : Mesh
    parent : LongTensor, shape (n_fine_cells,)
    face_map : LongTensor, shape (n_fine_faces,)
        Coarse face of each fine face, -1 for faces inside a coarse cell.
    face_sign : Tensor, shape (n_fine_faces,)
        +1/-1 orientation of the fine face in its coarse face, 0 inside.
    boundary_face_map : LongTensor, shape (n_fine_boundary_faces,)

    Examples
    --------
    >>> from meshclosure.mesh import healpix
    >>> c = Coarsening(healpix(4), torch.arange(192) // 4)
    >>> c.coarse.n_cells, c.coarse.n_faces
    (48, 96)
    >>> Coarsening(healpix(4), torch.arange(192) % 5 * 0)
    Traceback (most recent call last):
    ...
    meshclosure.mesh._mesh.MeshError: parent must be an integer array of shape (192,) ...
    """

    def __init__(self, fine: Mesh, parent, info: dict | None = None) -> None:
        raw = np.asarray(torch.as_tensor(parent).cpu()) if not isinstance(parent, np.ndarray) \
            else parent
        if raw.dtype.kind not in "iu":
            raise MeshError(f"parent must be an integer array (coarse cell of each fine cell); got "
                            f"dtype {raw.dtype}. Use native_parent(mesh, factor) or "
                            "agglomerate(mesh, n_coarse), or cast with .long().")
        p = raw.astype(np.int64)
        n_coarse = int(p.max()) + 1 if p.size else 0
        if p.shape != (fine.n_cells,) or p.min(initial=0) < 0 or n_coarse < 2:
            raise MeshError(f"parent must be an integer array of shape ({fine.n_cells},) with "
                            "values 0..n_coarse-1 and at least 2 coarse cells; got shape "
                            f"{p.shape}, range {p.min(initial=0)}..{p.max(initial=0)}. Use "
                            "native_parent(mesh, factor) or agglomerate(mesh, n_coarse).")
        counts = np.bincount(p, minlength=n_coarse)
        empty = np.nonzero(counts == 0)[0]
        if empty.size:
            raise MeshError(f"coarse cells {empty[:10].tolist()} have no fine cells; number the "
                            "coarse cells 0..n_coarse-1 without gaps.", cells=empty[:10])
        self.fine = fine
        self.parent = torch.as_tensor(p, device=fine.device)
        self._build(fine.double().to("cpu"), p, n_coarse, info)

    # -------------------------------------------------------------- geometry
    def _build(self, fine: Mesh, p: np.ndarray, n_coarse: int, info) -> None:
        geo = PolygonGeometry(fine.radius, fine.period)
        nv = fine.n_vertices
        fc = fine.face_cells.numpy()
        fvert = fine.face_vertices.numpy()
        pa, pb = p[fc[0]], p[fc[1]]
        cross = np.nonzero(pa != pb)[0]
        sign = np.where(pa[cross] < pb[cross], 1.0, -1.0)
        lo, hi = np.minimum(pa[cross], pb[cross]), np.maximum(pa[cross], pb[cross])
        start = np.where(sign > 0, fvert[0, cross], fvert[1, cross])
        end = np.where(sign > 0, fvert[1, cross], fvert[0, cross])
        label, cstart, cend, ckey = _chains(lo * n_coarse + hi, start, end, nv)
        n_cf = len(cstart)
        face_map = np.full(fine.n_faces, -1)
        face_map[cross] = label
        face_sign = np.zeros(fine.n_faces)
        face_sign[cross] = sign

        bcell = fine.boundary_face_cell.numpy()
        btag = fine.boundary_face_tag.numpy()
        n_tags = max(len(fine.boundary_tag_names), 1)
        bv = fine.boundary_face_vertices.numpy()
        blabel, bstart, bend, bkey = _chains(p[bcell] * n_tags + btag, bv[0], bv[1], nv)

        vol = fine.cell_volume.numpy()
        V = np.bincount(p, vol, n_coarse)
        center = self._mean(geo, fine.cell_center.numpy(), vol, p, n_coarse)
        area = np.bincount(label, fine.face_area.numpy()[cross], n_cf)
        fcenter = self._mean(geo, fine.face_center.numpy()[cross], fine.face_area.numpy()[cross],
                             label, n_cf)
        normal = self._normal(fine.face_normal.numpy()[cross] * sign[:, None],
                              fine.face_area.numpy()[cross], label, n_cf, fcenter, fine.radius)
        ba = fine.boundary_face_area.numpy()
        nb = len(bstart)
        barea = np.bincount(blabel, ba, nb)
        bcenter = self._mean(geo, fine.boundary_face_center.numpy(), ba, blabel, nb)
        bnormal = self._normal(fine.boundary_face_normal.numpy(), ba, blabel, nb, bcenter,
                               fine.radius)
        owner, neigh = ckey // n_coarse, ckey % n_coarse
        dist = geo.distance(center[owner], center[neigh])

        polygons = self._polygons(fine, p, n_coarse, cross, sign)
        used = np.unique(np.r_[cstart, cend, bstart, bend, polygons[polygons >= 0]])
        renumber = np.full(nv, -1)
        renumber[used] = np.arange(len(used))
        polygons = np.where(polygons >= 0, renumber[np.maximum(polygons, 0)], -1)

        if info is None:
            info = {"family": "coarsened", "fine_family": fine.family, "n_fine_cells": fine.n_cells}
        if not fine.is_sphere:
            info = {**info, "domain_area": fine.domain_area()}
        t = lambda a, dt=torch.float64: torch.as_tensor(np.ascontiguousarray(a), dtype=dt)  # noqa
        d = fine.dim
        self.coarse = Mesh(
            cell_center=t(center), cell_volume=t(V),
            face_cells=t(np.stack([owner, neigh]), torch.long), face_normal=t(normal),
            face_area=t(area), face_center=t(fcenter.reshape(-1, d)), cell_distance=t(dist),
            vertex_pos=t(fine.vertex_pos.numpy()[used]),
            face_vertices=t(renumber[np.stack([cstart, cend])].reshape(2, -1), torch.long),
            cell_vertices=t(polygons, torch.long),
            boundary_face_cell=t(bkey // n_tags, torch.long),
            boundary_face_vertices=t(renumber[np.stack([bstart, bend])].reshape(2, -1), torch.long),
            boundary_face_normal=t(bnormal.reshape(-1, d)), boundary_face_area=t(barea),
            boundary_face_center=t(bcenter.reshape(-1, d)),
            boundary_face_tag=t(bkey % n_tags, torch.long),
            boundary_tag_names=fine.boundary_tag_names, radius=fine.radius, period=fine.period,
            info=dict(info),
        ).to(self.fine.device, self.fine.dtype)
        dev = self.fine.device
        self.face_map = torch.as_tensor(face_map, device=dev)
        self.face_sign = torch.as_tensor(face_sign, device=dev, dtype=self.fine.dtype)
        self.boundary_face_map = torch.as_tensor(blabel, device=dev)

    @staticmethod
    def _mean(geo: PolygonGeometry, x: np.ndarray, w: np.ndarray, label: np.ndarray, n: int):
        """Weighted mean position per group (minimum image; projected on the sphere)."""
        if n == 0:
            return np.zeros((0, x.shape[1]))
        ref = np.zeros((n, x.shape[1]))
        ref[label] = x  # any member of the group as reference
        rel = geo.wrap(x - ref[label])
        W = np.bincount(label, w, n)
        mean = np.stack([np.bincount(label, w * rel[:, k], n) for k in range(x.shape[1])], 1)
        mean = ref + mean / W[:, None]
        if geo.radius is not None:
            return geo.radius * mean / np.linalg.norm(mean, axis=1, keepdims=True)
        return geo.into_domain(mean)

    @staticmethod
    def _normal(n_signed, w, label, n, center, radius):
        if n == 0:
            return np.zeros((0, n_signed.shape[1]))
        s = np.stack([np.bincount(label, w * n_signed[:, k], n) for k in range(n_signed.shape[1])], 1)
        if radius is not None:
            r = center / np.linalg.norm(center, axis=1, keepdims=True)
            s -= (s * r).sum(1, keepdims=True) * r
        return s / np.linalg.norm(s, axis=1, keepdims=True)

    @staticmethod
    def _polygons(fine: Mesh, p, n_coarse, cross, sign) -> np.ndarray:
        """Boundary loop of every coarse cell in fine vertices (for export/plots)."""
        if fine.dim == 1:
            cv = fine.cell_vertices.numpy()
            lo = np.full(n_coarse, np.iinfo(np.int64).max)
            hi = np.full(n_coarse, -1)
            np.minimum.at(lo, p, cv[:, 0])
            np.maximum.at(hi, p, cv[:, 1])
            return np.stack([lo, hi], 1)
        fc, fvert = fine.face_cells.numpy(), fine.face_vertices.numpy()
        a, b = fc[0, cross], fc[1, cross]
        v0, v1 = fvert[0, cross], fvert[1, cross]
        bv = fine.boundary_face_vertices.numpy()
        cell = np.r_[p[a], p[b], p[fine.boundary_face_cell.numpy()]]
        frm = np.r_[v0, v1, bv[0]]
        to = np.r_[v1, v0, bv[1]]
        nv = fine.n_vertices
        key = cell * nv + frm
        order = np.argsort(key, kind="stable")
        key, cell, frm, to = key[order], cell[order], frm[order], to[order]
        succ = np.searchsorted(key, cell * nv + to)
        succ = np.minimum(succ, len(key) - 1)
        first = np.searchsorted(cell, np.arange(n_coarse))
        count = np.bincount(cell, minlength=n_coarse)
        width = int(count.max())
        out = np.full((n_coarse, width), -1)
        cur = first.copy()
        alive = np.ones(n_coarse, bool)
        for k in range(width):
            out[alive, k] = frm[cur[alive]]
            cur = succ[cur]
            alive &= cur != first
            if not alive.any():
                break
        return out

    # ------------------------------------------------------------- operators
    def restrict(self, q: torch.Tensor) -> torch.Tensor:
        """Volume-weighted mean over each coarse cell.

        Parameters
        ----------
        q : Tensor, shape (n_fine_cells, ...)

        Returns
        -------
        Tensor, shape (n_coarse_cells, ...)
        """
        q = torch.as_tensor(q)
        if q.shape[:1] != (self.fine.n_cells,):
            raise ValueError(f"q must have n_fine_cells = {self.fine.n_cells} rows; got shape "
                             f"{tuple(q.shape)}. Put the cell dimension first.")
        shape = (-1,) + (1,) * (q.dim() - 1)
        vol = self.fine.cell_volume.to(q.dtype).reshape(shape)
        out = q.new_zeros((self.coarse.n_cells,) + tuple(q.shape[1:]))
        out = out.index_add(0, self.parent.to(q.device), q * vol)
        return out / self.coarse.cell_volume.to(q.dtype).reshape(shape)

    def restrict_flux(self, face_flux: torch.Tensor) -> torch.Tensor:
        """Signed sum of fine face fluxes over each coarse face.

        Parameters
        ----------
        face_flux : Tensor, shape (n_fine_faces, ...)

        Returns
        -------
        Tensor, shape (n_coarse_faces, ...)
        """
        face_flux = torch.as_tensor(face_flux)
        if face_flux.shape[:1] != (self.fine.n_faces,):
            raise ValueError(f"face_flux must have n_fine_faces = {self.fine.n_faces} rows; got "
                             f"shape {tuple(face_flux.shape)}.")
        keep = self.face_map >= 0
        sign = self.face_sign[keep].to(face_flux.dtype).reshape((-1,) + (1,) * (face_flux.dim() - 1))
        out = face_flux.new_zeros((self.coarse.n_faces,) + tuple(face_flux.shape[1:]))
        return out.index_add(0, self.face_map[keep], face_flux[keep] * sign)

    def restrict_boundary_flux(self, boundary_flux: torch.Tensor) -> torch.Tensor:
        """Sum of fine outward boundary fluxes over each coarse boundary face."""
        boundary_flux = torch.as_tensor(boundary_flux)
        if boundary_flux.shape[:1] != (self.fine.n_boundary_faces,):
            raise ValueError(f"boundary_flux must have n_fine_boundary_faces = "
                             f"{self.fine.n_boundary_faces} rows; got shape "
                             f"{tuple(boundary_flux.shape)}.")
        out = boundary_flux.new_zeros((self.coarse.n_boundary_faces,) + tuple(boundary_flux.shape[1:]))
        return out.index_add(0, self.boundary_face_map, boundary_flux)

    def prolong(self, Q: torch.Tensor) -> torch.Tensor:
        """Piecewise-constant injection of coarse values ``(n_coarse, ...)`` to fine cells."""
        return torch.as_tensor(Q)[self.parent]

    @classmethod
    def native(cls, fine: Mesh, factor: int) -> "Coarsening":
        """Coarsen by ``factor`` in linear resolution with the family's own nesting;
        the coarse mesh carries the coarse family ``info`` (see :func:`native_parent`)."""
        parent, info = native_parent(fine, factor, return_info=True)
        return cls(fine, parent, info=info)


def native_parent(mesh: Mesh, factor: int, return_info: bool = False):
    """Parent map of the family's own coarser mesh, ``factor`` times coarser in each direction.

    Cartesian: ``factor × factor`` blocks (``factor`` divides ``nx`` and ``ny``);
    column: blocks of ``factor`` levels; HEALPix: ``nside -> nside/factor``
    (nested index ``// factor²``); icosahedral triangles: ``level -> level -
    log2(factor)`` (index ``// factor²``); cubed sphere: ``n -> n/factor`` for
    any ``factor`` dividing ``n`` (cell ``(p, j, i)`` into ``(p, j // factor,
    i // factor)``, :func:`meshclosure.mesh.cubed.cubed_parent`). Icosahedral
    duals do not nest: use :func:`agglomerate`.

    Examples
    --------
    >>> from meshclosure.mesh import cubed_sphere
    >>> parent, info = native_parent(cubed_sphere(6), 3, return_info=True)
    >>> int(parent.max()) + 1, info["n"]
    (24, 2)
    >>> native_parent(cubed_sphere(6), 4)
    Traceback (most recent call last):
    ...
    meshclosure.errors.ArgumentError: factor=4: must divide the cells per panel edge n=6 for nested cubed-sphere coarsening; use one of 1, 2, 3, 6.
    """
    fam, info = mesh.family, dict(mesh.info)
    if not (isinstance(factor, (int, np.integer)) and factor >= 1):
        raise ValueError(f"factor must be a positive integer; got {factor!r}.")
    idx = np.arange(mesh.n_cells)
    pow2 = factor & (factor - 1) == 0
    if fam == "cartesian":
        nx, ny = info["nx"], info["ny"]
        if nx % factor or ny % factor:
            raise ValueError(f"factor={factor} must divide nx={nx} and ny={ny} for a Cartesian "
                             "block coarsening; choose a common divisor.")
        periodic = [bool(mesh.period and mesh.period[k]) for k in range(2)]
        for name, n, per in (("nx", nx, periodic[0]), ("ny", ny, periodic[1])):
            if per and n // factor < 3:
                left = n // factor
                valid = [f for f in range(2, min(nx, ny) + 1) if nx % f == 0 and ny % f == 0
                         and (not periodic[0] or nx // f >= 3)
                         and (not periodic[1] or ny // f >= 3)]
                raise ValueError(f"factor={factor} leaves {left} cell{'' if left == 1 else 's'} "
                                 f"on the periodic axis {name}={n}; a periodic axis needs at "
                                 f"least 3 cells. Use a factor that divides nx={nx} and "
                                 f"ny={ny} and leaves at least 3 cells on each periodic axis: "
                                 f"{', '.join(map(str, valid)) or 'none above 1'}.")
        j, i = idx // nx, idx % nx
        parent = (j // factor) * (nx // factor) + i // factor
        info.update(nx=nx // factor, ny=ny // factor)
    elif fam == "column":
        if info["nz"] % factor:
            raise ValueError(f"factor={factor} must divide nz={info['nz']}.")
        parent = idx // factor
        info.update(nz=info["nz"] // factor)
    elif fam in ("healpix", "icosahedral") and not info.get("dual", False):
        size = "nside" if fam == "healpix" else "level"
        levels = int(np.log2(factor)) if pow2 else -1
        ok = pow2 and (info["nside"] % factor == 0 if fam == "healpix" else levels <= info["level"])
        if not ok:
            raise ValueError(f"factor={factor} must be a power of 2 no larger than the mesh allows "
                             f"({size}={info[size]}) for nested {fam} coarsening.")
        parent = idx // factor**2
        info[size] = info["nside"] // factor if fam == "healpix" else info["level"] - levels
    elif fam == "cubed":
        from .cubed import cubed_parent

        parent = cubed_parent(info["n"], factor)
        info["n"] = info["n"] // factor
    else:
        raise ValueError(f"mesh family {fam!r} has no native nesting (icosahedral duals, meshio "
                         "and coarsened meshes do not nest); use agglomerate(mesh, n_coarse).")
    info["coarsened_from"] = mesh.n_cells
    if fam not in ("cartesian", "column"):
        info.pop("domain_area", None)
    parent = torch.as_tensor(parent)
    return (parent, info) if return_info else parent


def column_parent(mesh: Mesh) -> torch.Tensor:
    """Horizontal average of an x–z slice (``cartesian(nx, nz, periodic=(True, False))``)
    onto a single column: the parent of a cell is its vertical level."""
    if mesh.family != "cartesian":
        raise ValueError(f"column_parent needs a Cartesian x–z slice; got family {mesh.family!r}.")
    return torch.arange(mesh.n_cells) // mesh.info["nx"]


def agglomerate(mesh: Mesh, n_coarse: int, seed: int = 0) -> torch.Tensor:
    """Graph-clustering parent map for any mesh: ``n_coarse`` connected clusters.

    Seeds from k-means on the cell centres, then every cell joins its nearest
    seed along the face graph (multi-source Dijkstra with centre distances), so
    every cluster is connected.
    """
    from scipy.cluster.vq import kmeans2
    from scipy.sparse.csgraph import dijkstra
    from scipy.spatial import cKDTree

    if not (isinstance(n_coarse, (int, np.integer)) and 2 <= n_coarse < mesh.n_cells):
        raise ValueError(f"n_coarse must be an integer with 2 <= n_coarse < n_cells="
                         f"{mesh.n_cells}; got {n_coarse!r}.")
    x = mesh.cell_center.double().cpu().numpy()
    rng = np.random.default_rng(seed)
    centroids, _ = kmeans2(x, x[rng.choice(len(x), n_coarse, replace=False)], minit="matrix",
                           seed=seed)
    _, seeds = cKDTree(x).query(centroids)
    seeds = np.unique(seeds)
    fc = mesh.face_cells.cpu().numpy()
    w = mesh.cell_distance.double().cpu().numpy()
    graph = coo_matrix((np.r_[w, w], (np.r_[fc[0], fc[1]], np.r_[fc[1], fc[0]])),
                       shape=(mesh.n_cells,) * 2).tocsr()
    dist, _, source = dijkstra(graph, indices=seeds, min_only=True, return_predecessors=True)
    while len(seeds) < n_coarse:   # centroids that fell on the same cell: add the farthest cells
        seeds = np.append(seeds, int(np.argmax(np.where(np.isfinite(dist), dist, -1.0))))
        dist, _, source = dijkstra(graph, indices=seeds, min_only=True, return_predecessors=True)
    if np.any(source < 0):
        raise MeshError("agglomerate: some cells are not connected to any seed (the face graph "
                        "has several components); coarsen each component separately.")
    lookup = np.full(mesh.n_cells, -1)
    lookup[seeds] = np.arange(len(seeds))
    return torch.as_tensor(lookup[source])
