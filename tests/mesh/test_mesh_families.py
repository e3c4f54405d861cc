"""Every mesh family at several resolutions satisfies the finite-volume contract
(DESIGN.md §2-§4), and the geometry matches known exact values."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from meshclosure.fv.operators import (boundary_transport_from_streamfunction, divergence,
                                      transport_from_streamfunction)
from meshclosure.mesh import cartesian, healpix, icosahedral


def _min_image(mesh, d: torch.Tensor) -> torch.Tensor:
    d = d.clone()
    if mesh.period is not None:
        for axis, length in enumerate(mesh.period):
            if length:
                d[:, axis] -= length * torch.round(d[:, axis] / length)
    return d


# ------------------------------------------------------------- the contract
def test_validate_passes(mesh_case):
    mesh = mesh_case.mesh()
    assert mesh.validate() == []
    assert mesh.float().validate() == []


def test_volumes_sum_to_exact_domain_area(mesh_case):
    mesh = mesh_case.mesh()
    assert (mesh.cell_volume > 0).all()
    total = float(mesh.cell_volume.sum())
    assert total == pytest.approx(mesh_case.area, rel=1e-12, abs=0)
    assert mesh.domain_area() == pytest.approx(mesh_case.area, rel=1e-12, abs=0)


def test_euler_characteristic(mesh_case):
    assert mesh_case.mesh().euler_characteristic() == mesh_case.euler


def test_interior_faces_join_two_distinct_cells(mesh_case):
    mesh = mesh_case.mesh()
    a, b = mesh.face_cells
    assert ((0 <= a) & (a < mesh.n_cells) & (0 <= b) & (b < mesh.n_cells)).all()
    assert (a != b).all()
    # each face is stored once: no two faces share the same two vertices
    edges = torch.sort(mesh.face_vertices, dim=0).values.T.tolist()
    assert len(set(map(tuple, edges))) == mesh.n_faces
    # every cell edge is a face or a boundary face exactly once
    n_edges = int((mesh.cell_vertices >= 0).sum())
    assert n_edges == 2 * mesh.n_faces + mesh.n_boundary_faces
    assert (mesh.n_boundary_faces == 0) == (not mesh_case.bounded)


def test_face_vertices_belong_to_both_cells(mesh_case):
    mesh = mesh_case.mesh()
    cv = mesh.cell_vertices
    for row in (0, 1):
        cells = mesh.face_cells[row]
        for end in (0, 1):
            v = mesh.face_vertices[end]
            assert (cv[cells] == v[:, None]).any(1).all()


def test_face_normals_unit_tangent_owner_to_neighbour(mesh_case):
    mesh = mesh_case.mesh()
    n = mesh.face_normal
    assert torch.allclose(n.norm(dim=1), torch.ones(mesh.n_faces, dtype=n.dtype),
                          rtol=0, atol=1e-12)
    a, b = mesh.face_cells
    d = _min_image(mesh, mesh.cell_center[b] - mesh.cell_center[a])
    assert ((d * n).sum(1) > 0).all()
    if mesh.is_sphere:
        rhat = mesh.face_center / mesh.face_center.norm(dim=1, keepdim=True)
        assert (n * rhat).sum(1).abs().max() < 1e-12
        r = mesh.radius
        for x in (mesh.cell_center, mesh.face_center, mesh.vertex_pos):
            assert torch.allclose(x.norm(dim=1), torch.full((len(x),), r, dtype=x.dtype),
                                  rtol=1e-12, atol=0)
        # face normal is perpendicular to the great circle through its vertices
        v0, v1 = mesh.vertex_pos[mesh.face_vertices[0]], mesh.vertex_pos[mesh.face_vertices[1]]
        assert ((n * v0).sum(1).abs() / r).max() < 1e-12
        assert ((n * v1).sum(1).abs() / r).max() < 1e-12
    else:
        # normal is perpendicular to the straight face
        t = _min_image(mesh, mesh.vertex_pos[mesh.face_vertices[1]]
                       - mesh.vertex_pos[mesh.face_vertices[0]])
        assert ((n * t).sum(1).abs() / t.norm(dim=1)).max() < 1e-12
        assert torch.allclose(t.norm(dim=1), mesh.face_area, rtol=1e-12, atol=0)


def test_face_area_and_distance_are_geodesic(sphere_case):
    mesh = sphere_case.mesh()
    r = mesh.radius
    u0 = mesh.vertex_pos[mesh.face_vertices[0]] / r
    u1 = mesh.vertex_pos[mesh.face_vertices[1]] / r
    arc = r * torch.atan2(torch.linalg.cross(u0, u1).norm(dim=1), (u0 * u1).sum(1))
    assert torch.allclose(mesh.face_area, arc, rtol=1e-12, atol=0)
    a, b = mesh.face_cells
    ca, cb = mesh.cell_center[a] / r, mesh.cell_center[b] / r
    geo = r * torch.atan2(torch.linalg.cross(ca, cb).norm(dim=1), (ca * cb).sum(1))
    assert torch.allclose(mesh.cell_distance, geo, rtol=1e-12, atol=0)


def _streamfunction_divergence(mesh, psi):
    U = transport_from_streamfunction(mesh, psi)
    Ub = boundary_transport_from_streamfunction(mesh, psi)
    return U, Ub, divergence(mesh, U, Ub)


def test_streamfunction_transport_is_nondivergent(mesh_case, dtype, tol, torch_gen):
    """Any random ψ at vertices gives zero divergence in every cell (with the
    boundary transports of the same ψ on bounded meshes)."""
    mesh = mesh_case.mesh().to(dtype=dtype)
    psi = torch.randn(mesh.n_vertices, 3, generator=torch_gen, dtype=torch.float64).to(dtype)
    U, Ub, div = _streamfunction_divergence(mesh, psi)
    assert div.dtype == dtype
    scale = torch.cat([U, Ub]).abs().max()
    assert scale > 0.1
    net = (div * mesh.cell_volume[:, None]).abs().max()
    assert net <= tol * scale


def _boundary_loops(mesh) -> np.ndarray:
    """Loop id of every boundary vertex (connected through boundary faces), -1 elsewhere."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    bv = mesh.boundary_face_vertices.numpy()
    n = mesh.n_vertices
    graph = coo_matrix((np.ones(bv.shape[1]), (bv[0], bv[1])), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    on = np.zeros(n, bool)
    on[bv.ravel()] = True
    return np.where(on, label, -1)


def test_streamfunction_constant_on_walls_needs_no_boundary_flux(planar_case, torch_gen):
    mesh = planar_case.mesh()
    if mesh.n_boundary_faces == 0:
        pytest.skip("no walls on a doubly periodic mesh")
    psi = torch.randn(mesh.n_vertices, generator=torch_gen, dtype=torch.float64)
    loops = _boundary_loops(mesh)
    ids = sorted(set(loops.tolist()) - {-1})
    assert len(ids) == {"bounded": 1, "channel": 2, "planar-hole": 2}[planar_case.kind]
    for k, value in zip(ids, (0.3, -1.7)):
        psi[torch.as_tensor(loops == k)] = value
    Ub = boundary_transport_from_streamfunction(mesh, psi)
    assert Ub.abs().max() == 0
    U = transport_from_streamfunction(mesh, psi)
    div = divergence(mesh, U)
    assert (div * mesh.cell_volume).abs().max() <= 1e-12 * U.abs().max()


# ---------------------------------------------------------- exact geometry
def test_cartesian_normals_areas_distances():
    nx, ny, lx, ly = 5, 4, 2.0, 1.2
    for periodic in (True, False, (True, False)):
        mesh = cartesian(nx, ny, lx, ly, periodic=periodic)
        dx, dy = lx / nx, ly / ny
        n = mesh.face_normal
        is_x = (n[:, 0].abs() == 1) & (n[:, 1] == 0)
        is_y = (n[:, 0] == 0) & (n[:, 1].abs() == 1)
        assert (is_x | is_y).all()  # exactly ±x or ±y
        # +x/+y except across a periodic seam, where the owner (smaller index)
        # sits at the high end: the normal still points owner -> neighbour
        a, b = mesh.face_cells
        ia, ib, ja, jb = a % nx, b % nx, a // nx, b // nx
        seam_x = is_x & (ib - ia == nx - 1)
        seam_y = is_y & (jb - ja == ny - 1)
        assert (n[is_x & ~seam_x, 0] == 1).all() and (n[seam_x, 0] == -1).all()
        assert (n[is_y & ~seam_y, 1] == 1).all() and (n[seam_y, 1] == -1).all()
        px_, py_ = (periodic, periodic) if isinstance(periodic, bool) else periodic
        assert int(seam_x.sum()) == (ny if px_ else 0)
        assert int(seam_y.sum()) == (nx if py_ else 0)
        px, py = (periodic, periodic) if isinstance(periodic, bool) else periodic
        assert int(is_x.sum()) == ny * (nx if px else nx - 1)
        assert int(is_y.sum()) == nx * (ny if py else ny - 1)
        assert torch.allclose(mesh.face_area[is_x], torch.full((int(is_x.sum()),), dy,
                                                               dtype=torch.float64))
        assert torch.allclose(mesh.face_area[is_y], torch.full((int(is_y.sum()),), dx,
                                                               dtype=torch.float64))
        assert torch.allclose(mesh.cell_distance[is_x], torch.tensor(dx, dtype=torch.float64))
        assert torch.allclose(mesh.cell_distance[is_y], torch.tensor(dy, dtype=torch.float64))
        assert torch.allclose(mesh.cell_volume, torch.tensor(dx * dy, dtype=torch.float64))
        # cell (j, i) is cell j*nx + i with centre ((i+1/2)dx, (j+1/2)dy)
        j, i = torch.meshgrid(torch.arange(ny, dtype=torch.float64),
                              torch.arange(nx, dtype=torch.float64), indexing="ij")
        expect = torch.stack([(i + 0.5) * dx, (j + 0.5) * dy], -1).reshape(-1, 2)
        assert torch.allclose(mesh.cell_center, expect, rtol=0, atol=1e-14)
        bn = mesh.boundary_face_normal
        names = mesh.boundary_tag_names
        for tag, direction in (("west", (-1, 0)), ("east", (1, 0)), ("south", (0, -1)),
                               ("north", (0, 1))):
            sel = mesh.boundary_face_tag == names.index(tag)
            assert (bn[sel] == torch.tensor(direction, dtype=bn.dtype)).all()
            side_len = ly if tag in ("west", "east") else lx
            on_axis_periodic = px if tag in ("west", "east") else py
            expect_len = 0.0 if on_axis_periodic else side_len
            assert float(mesh.boundary_face_area[sel].sum()) == pytest.approx(expect_len)


def test_healpix_exact_equal_areas():
    import healpy

    for nside, r in ((1, 1.0), (4, 1.0), (8, 3.0)):
        mesh = healpix(nside, radius=r)
        npix = 12 * nside**2
        assert mesh.n_cells == npix
        assert torch.allclose(mesh.cell_volume, torch.full((npix,), 4 * math.pi * r**2 / npix,
                                                           dtype=torch.float64), rtol=1e-14, atol=0)
        # cell centres are pixel centroids: the mean of the 4**5 equal-area nested child
        # pixel centres converges to the centroid (its own error is < 9%/32 of a pixel)
        size = math.sqrt(4 * math.pi / npix) * r
        k = 5
        children = np.stack(healpy.pix2vec(nside * 2**k, np.arange(npix * 4**k), nest=True), 1)
        mean = children.reshape(npix, 4**k, 3).mean(1)
        mean = r * mean / np.linalg.norm(mean, axis=1, keepdims=True)
        offset = np.linalg.norm(mesh.cell_center.numpy() - mean, axis=1) / size
        assert offset.max() < 4e-3
        assert np.allclose(np.linalg.norm(mesh.cell_center.numpy(), axis=1), r, rtol=1e-14)
        # healpy's pixel centres are not the centroids (that is why they are not used)
        centers = np.stack(healpy.pix2vec(nside, np.arange(npix), nest=True), 1) * r
        assert (np.linalg.norm(centers - mean, axis=1) / size).max() > 2e-2


def test_healpix_faces_and_neighbours():
    import healpy

    for nside in (1, 2, 4, 8, 16):
        mesh = healpix(nside)
        npix = 12 * nside**2
        assert mesh.n_faces == 2 * npix and mesh.n_boundary_faces == 0
        degree = torch.bincount(mesh.face_cells.reshape(-1), minlength=npix)
        assert (degree == 4).all()
        # the two vertices of a face are corners of both of its pixels
        cv = mesh.cell_vertices
        assert cv.shape == (npix, 4) and (cv >= 0).all()
        for row in (0, 1):
            for end in (0, 1):
                assert (cv[mesh.face_cells[row]] == mesh.face_vertices[end][:, None]).any(1).all()
        # neighbours are healpy's SW, NW, NE, SE
        pix = np.arange(npix)
        expect = healpy.get_all_neighbours(nside, pix, nest=True)[[0, 2, 4, 6]]
        got = [set() for _ in range(npix)]
        for a, b in mesh.face_cells.T.tolist():
            got[a].add(b)
            got[b].add(a)
        for p in pix:
            assert got[p] == set(expect[:, p].tolist()), f"nside={nside} pixel {p}"


@pytest.mark.parametrize("level", [0, 1, 2, 3])
def test_icosahedral_counts(level):
    tri = icosahedral(level)
    assert tri.n_cells == 20 * 4**level
    assert tri.n_faces == 30 * 4**level
    assert tri.n_vertices == 10 * 4**level + 2
    assert ((tri.cell_vertices >= 0).sum(1) == 3).all()
    dual = icosahedral(level, dual=True)
    assert dual.n_cells == 10 * 4**level + 2
    assert dual.n_faces == 30 * 4**level
    sides = (dual.cell_vertices >= 0).sum(1)
    assert int((sides == 5).sum()) == 12 and int((sides == 6).sum()) == 10 * 4**level + 2 - 12
    assert (torch.bincount(dual.face_cells.reshape(-1)) == sides).all()


def test_icosahedral_level0_exact():
    mesh = icosahedral(0)
    assert torch.allclose(mesh.cell_volume, torch.full((20,), 4 * math.pi / 20,
                                                       dtype=torch.float64), rtol=1e-14, atol=0)
    edge = math.acos(1 / math.sqrt(5))
    assert torch.allclose(mesh.face_area, torch.full((30,), edge, dtype=torch.float64),
                          rtol=1e-14, atol=0)
    # dual level 0 is the dodecahedron: 12 equal pentagons, dual face = dodecahedron edge
    dual = icosahedral(0, dual=True)
    assert torch.allclose(dual.cell_volume, torch.full((12,), 4 * math.pi / 12,
                                                       dtype=torch.float64), rtol=1e-13, atol=0)
    dodeca_edge = math.acos(math.sqrt(5) / 3)
    assert torch.allclose(dual.face_area, torch.full((30,), dodeca_edge, dtype=torch.float64),
                          rtol=1e-13, atol=0)
    # a radius scales areas by R² and lengths by R
    big = icosahedral(0, radius=2.0)
    assert torch.allclose(big.cell_volume, 4 * mesh.cell_volume, rtol=1e-14, atol=0)
    assert torch.allclose(big.face_area, 2 * mesh.face_area, rtol=1e-14, atol=0)
    assert torch.allclose(big.cell_distance, 2 * mesh.cell_distance, rtol=1e-14, atol=0)


def test_icosahedral_nesting_and_cell_vertex_orientation():
    """Children of triangle t are 4t..4t+3 and their areas add up to the parent's;
    every cell polygon is counter-clockwise seen from outside."""
    coarse, fine = icosahedral(2), icosahedral(3)
    sums = fine.cell_volume.reshape(-1, 4).sum(1)
    # child triangles are geodesic, so they tile the parent exactly
    assert torch.allclose(sums, coarse.cell_volume, rtol=1e-12, atol=0)
    for mesh in (fine, icosahedral(2, dual=True)):
        cv = mesh.cell_vertices
        k = (cv >= 0).sum(1)
        v = mesh.vertex_pos
        p0, p1, p2 = v[cv[:, 0]], v[cv[:, 1]], v[cv[:, 2]]
        assert ((torch.linalg.cross(p1 - p0, p2 - p0) * mesh.cell_center).sum(1) > 0).all()
        assert int(k.min()) >= 3
