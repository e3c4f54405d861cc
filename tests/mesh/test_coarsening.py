"""Coarsening from parent maps (DESIGN.md §5) on every mesh family."""
from __future__ import annotations

import functools
from collections import Counter

import numpy as np
import pytest
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from meshclosure.fv.operators import (boundary_transport_from_streamfunction, divergence,
                                      transport_from_streamfunction)
from meshclosure.mesh import (Coarsening, MeshError, agglomerate, cartesian, column_parent,
                              healpix, icosahedral, native_parent)

from conftest import MESH_CASES, TOLERANCE


def _chain(fine, *factors):
    steps = []
    mesh = fine
    for k in factors:
        steps.append(Coarsening.native(mesh, k))
        mesh = steps[-1].coarse
    return steps


def _agglo(case: str, n: int):
    fine = MESH_CASES[case].mesh()
    return [Coarsening(fine, agglomerate(fine, n))]


#: name -> (list of Coarsening steps, factory of the family's own coarse mesh or None)
CASES = {
    "cartesian-periodic-k2": (lambda: _chain(cartesian(16, 12, 2.0, 1.5), 2),
                              lambda: cartesian(8, 6, 2.0, 1.5)),
    "cartesian-periodic-k4": (lambda: _chain(cartesian(16, 12, 2.0, 1.5), 4),
                              lambda: cartesian(4, 3, 2.0, 1.5)),
    "cartesian-bounded-k2": (lambda: _chain(cartesian(8, 4, 3.0, 1.0, periodic=False), 2),
                             lambda: cartesian(4, 2, 3.0, 1.0, periodic=False)),
    "cartesian-bounded-k4": (lambda: _chain(cartesian(8, 4, 3.0, 1.0, periodic=False), 4),
                             lambda: cartesian(2, 1, 3.0, 1.0, periodic=False)),
    "cartesian-channel-k2": (lambda: _chain(cartesian(16, 8, 1.0, 0.7, periodic=(True, False)), 2),
                             lambda: cartesian(8, 4, 1.0, 0.7, periodic=(True, False))),
    "cartesian-channel-k4": (lambda: _chain(cartesian(16, 8, 1.0, 0.7, periodic=(True, False)), 4),
                             lambda: cartesian(4, 2, 1.0, 0.7, periodic=(True, False))),
    "healpix-8to4": (lambda: _chain(healpix(8), 2), lambda: healpix(4)),
    "healpix-8to4to2": (lambda: _chain(healpix(8), 2, 2), lambda: healpix(2)),
    "healpix-8to2": (lambda: _chain(healpix(8), 4), lambda: healpix(2)),
    "healpix-4to1-R2.5": (lambda: _chain(healpix(4, radius=2.5), 4),
                          lambda: healpix(1, radius=2.5)),
    "icosahedral-3to2": (lambda: _chain(icosahedral(3), 2), lambda: icosahedral(2)),
    "icosahedral-3to2to1": (lambda: _chain(icosahedral(3), 2, 2), lambda: icosahedral(1)),
    "icosahedral-3to1": (lambda: _chain(icosahedral(3), 4), lambda: icosahedral(1)),
    "icosahedral-2to0-R6371": (lambda: _chain(icosahedral(2, radius=6371.0), 4),
                               lambda: icosahedral(0, radius=6371.0)),
    "dual-2-agglomerate": (lambda: _agglo("dual-2", 20), None),
    "dual-3-agglomerate": (lambda: _agglo("dual-3", 40), None),
    "meshio-hole-agglomerate": (lambda: _agglo("meshio-hole-12", 12), None),
    "meshio-cubed-agglomerate": (lambda: _agglo("meshio-cubed-4-R1", 10), None),
    "healpix-agglomerate": (lambda: _agglo("healpix-8", 30), None),
    "xz-slice-to-column": (lambda: [Coarsening(s := cartesian(8, 6, 2.0, 1.5,
                                                             periodic=(True, False)),
                                               column_parent(s))],
                           None),
}


@functools.lru_cache(maxsize=None)
def _steps(name: str):
    return CASES[name][0]()


@pytest.fixture(params=list(CASES))
def steps(request):
    return _steps(request.param)


@pytest.fixture(params=[n for n, (_, ref) in CASES.items() if ref is not None])
def native_case(request):
    return _steps(request.param), CASES[request.param][1]()


def _pairs(face_cells: torch.Tensor) -> Counter:
    return Counter(map(tuple, torch.sort(face_cells, dim=0).values.T.tolist()))


def _rel(x: torch.Tensor, scale) -> float:
    return float(x.abs().max() / scale)


# ------------------------------------------------------------------ tests
def test_coarse_mesh_validates(steps):
    for c in steps:
        assert c.coarse.validate() == []
        assert float(c.coarse.cell_volume.sum()) == pytest.approx(c.fine.domain_area(), rel=1e-12)
        assert c.coarse.n_cells == int(c.parent.max()) + 1
        # coarse volume = sum of fine volumes
        expect = torch.zeros(c.coarse.n_cells, dtype=torch.float64).index_add(
            0, c.parent, c.fine.cell_volume)
        assert torch.allclose(c.coarse.cell_volume, expect, rtol=1e-14, atol=0)


def test_restrict_conserves_total(steps, torch_gen):
    for c in steps:
        q = torch.randn(c.fine.n_cells, 2, generator=torch_gen, dtype=torch.float64)
        Q = c.restrict(q)
        fine_total = (c.fine.cell_volume[:, None] * q).sum(0)
        coarse_total = (c.coarse.cell_volume[:, None] * Q).sum(0)
        scale = (c.fine.cell_volume[:, None] * q.abs()).sum()
        assert _rel(fine_total - coarse_total, scale) < 1e-13
        # restrict of a constant is the constant; prolong-then-restrict is the identity
        assert torch.allclose(c.restrict(torch.full((c.fine.n_cells,), 3.5, dtype=torch.float64)),
                              torch.full((c.coarse.n_cells,), 3.5, dtype=torch.float64), rtol=1e-14)
        assert torch.allclose(c.restrict(c.prolong(Q)), Q, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("trailing", [(), (3,)], ids=["scalar", "features"])
def test_divergence_commutes_with_restriction(steps, trailing, torch_gen):
    for c in steps:
        phi = torch.randn(c.fine.n_faces, *trailing, generator=torch_gen, dtype=torch.float64)
        coarse_div = divergence(c.coarse, c.restrict_flux(phi))
        fine_div = c.restrict(divergence(c.fine, phi))
        scale = phi.abs().max() / c.coarse.cell_volume.min()
        assert _rel(coarse_div - fine_div, scale) < 1e-12
        # with boundary fluxes
        if c.fine.n_boundary_faces:
            phib = torch.randn(c.fine.n_boundary_faces, *trailing, generator=torch_gen,
                               dtype=torch.float64)
            coarse_div = divergence(c.coarse, c.restrict_flux(phi), c.restrict_boundary_flux(phib))
            fine_div = c.restrict(divergence(c.fine, phi, phib))
            assert _rel(coarse_div - fine_div, scale) < 1e-12


def test_divergence_commutes_in_float32(steps, torch_gen):
    c0 = steps[0]
    c = Coarsening(c0.fine.float(), c0.parent)
    assert c.coarse.dtype == torch.float32
    phi = torch.randn(c.fine.n_faces, generator=torch_gen)
    coarse_div = divergence(c.coarse, c.restrict_flux(phi))
    fine_div = c.restrict(divergence(c.fine, phi))
    scale = phi.abs().max() / c.coarse.cell_volume.min()
    assert _rel(coarse_div - fine_div, scale) < TOLERANCE[torch.float32] * 10


def test_coarse_transport_of_fine_streamfunction_is_nondivergent(steps, torch_gen):
    for c in steps:
        psi = torch.randn(c.fine.n_vertices, generator=torch_gen, dtype=torch.float64)
        U = transport_from_streamfunction(c.fine, psi)
        Ub = boundary_transport_from_streamfunction(c.fine, psi)
        Uc, Ubc = c.restrict_flux(U), c.restrict_boundary_flux(Ub)
        div = divergence(c.coarse, Uc, Ubc if c.coarse.n_boundary_faces else None)
        scale = torch.cat([U, Ub]).abs().max()
        assert _rel(div * c.coarse.cell_volume, scale) < 1e-12
        # the coarse face transport is the streamfunction difference between the
        # coarse face's end vertices (the fine sum telescopes along the chain)
        tree = cKDTree(c.fine.vertex_pos.numpy())
        dist, used = tree.query(c.coarse.vertex_pos.numpy())
        assert dist.max() == 0
        direct = transport_from_streamfunction(c.coarse, psi[torch.as_tensor(used)])
        assert _rel(direct - Uc, scale) < 1e-12
        if c.coarse.n_boundary_faces:
            direct_b = boundary_transport_from_streamfunction(c.coarse, psi[torch.as_tensor(used)])
            assert _rel(direct_b - Ubc, scale) < 1e-12


def test_native_topology_equals_family_coarse_mesh(native_case):
    steps, ref = native_case
    coarse = steps[-1].coarse
    assert _pairs(coarse.face_cells) == _pairs(ref.face_cells)
    assert coarse.n_boundary_faces == ref.n_boundary_faces
    assert coarse.euler_characteristic() == ref.euler_characteristic()
    assert coarse.family == ref.family
    for key in ("nx", "ny", "nside", "level"):
        if key in ref.info:
            assert coarse.info[key] == ref.info[key]
    # same geometry where it is exact: volumes always
    assert torch.allclose(coarse.cell_volume, ref.cell_volume, rtol=1e-12, atol=0)
    if ref.family in ("cartesian", "icosahedral"):
        # faces are straight / great-circle, so merged fine faces equal the coarse face
        def by_pair(m):
            key = (torch.sort(m.face_cells, dim=0).values.T.tolist())
            return dict(zip(map(tuple, key), m.face_area.tolist()))

        got, want = by_pair(coarse), by_pair(ref)
        for k in want:
            assert got[k] == pytest.approx(want[k], rel=1e-12)
        # coarse centres are volume-weighted means of the fine centroids: exact on
        # the plane; on the sphere they differ from the exact spherical centroid of
        # the parent triangle at second order (~2e-10 at level 2, ~2e-8 at level 1
        # after two steps)
        atol = (1e-7 if ref.is_sphere else 1e-12) * float(ref.cell_center.abs().max())
        assert torch.allclose(coarse.cell_center, ref.cell_center, rtol=0, atol=atol)


def test_chained_restriction_equals_direct(torch_gen):
    fine = healpix(8)
    two_steps = _chain(fine, 2, 2)
    direct = Coarsening.native(fine, 4)
    assert torch.equal(two_steps[1].parent[two_steps[0].parent], direct.parent)
    q = torch.randn(fine.n_cells, generator=torch_gen, dtype=torch.float64)
    assert torch.allclose(two_steps[1].restrict(two_steps[0].restrict(q)), direct.restrict(q),
                          rtol=1e-13, atol=1e-13)
    phi = torch.randn(fine.n_faces, generator=torch_gen, dtype=torch.float64)
    assert torch.allclose(two_steps[1].restrict_flux(two_steps[0].restrict_flux(phi)),
                          direct.restrict_flux(phi), rtol=1e-13, atol=1e-13)


def test_agglomerate_clusters_are_connected():
    for case, n in (("dual-2", 20), ("dual-3", 40), ("meshio-hole-12", 12),
                    ("meshio-cubed-4-R1", 10), ("healpix-8", 30), ("cartesian-bounded-12x8", 7)):
        mesh = MESH_CASES[case].mesh()
        parent = agglomerate(mesh, n).numpy()
        n_clusters = parent.max() + 1
        assert set(parent.tolist()) == set(range(n_clusters))
        assert 2 <= n_clusters <= n
        a, b = mesh.face_cells.numpy()
        inside = parent[a] == parent[b]
        graph = coo_matrix((np.ones(inside.sum()), (a[inside], b[inside])),
                           shape=(mesh.n_cells, mesh.n_cells))
        n_comp, label = connected_components(graph, directed=False)
        assert n_comp == n_clusters, f"{case}: some cluster is not connected"
        # each component lies in one cluster
        assert len(set(zip(label.tolist(), parent.tolist()))) == n_clusters


def test_column_parent_gives_the_column():
    nx, nz = 8, 6
    slab = cartesian(nx, nz, 2.0, 1.5, periodic=(True, False))
    c = Coarsening(slab, column_parent(slab))
    column = cartesian(nz, None, 1.5)
    assert c.coarse.n_cells == nz
    assert _pairs(c.coarse.face_cells) == _pairs(column.face_cells)
    # the coarse faces are the horizontal levels, of length lx
    assert torch.allclose(c.coarse.face_area, torch.full((nz - 1,), 2.0, dtype=torch.float64))
    assert torch.allclose(c.coarse.cell_volume, torch.full((nz,), 2.0 * 1.5 / nz,
                                                           dtype=torch.float64))
    # horizontal mean of a field that depends on x only is its x-mean
    x = slab.cell_center[:, 0]
    z = slab.cell_center[:, 1]
    q = torch.sin(2 * torch.pi * x / 2.0) + z
    assert torch.allclose(c.restrict(q), c.coarse.cell_center[:, 1], rtol=0, atol=1e-14)
    assert torch.allclose(c.coarse.cell_center[:, 1], column.cell_center[:, 0], atol=1e-14)
    # vertical fluxes of the slab sum to the level flux of the column
    phi = torch.randn(slab.n_faces, dtype=torch.float64)
    vertical = slab.face_normal[:, 1] != 0
    level_flux = c.restrict_flux(phi)
    upper = slab.cell_center[slab.face_cells[1], 1]
    for k in range(nz - 1):
        sel = vertical & (torch.abs(upper - (k + 1.5) * 1.5 / nz) < 1e-12)
        assert int(sel.sum()) == nx
        assert float(level_flux[k]) == pytest.approx(float(phi[sel].sum()), rel=1e-13)


def test_bad_parent_maps():
    mesh = healpix(2)
    with pytest.raises(MeshError, match=r"parent must be an integer array of shape \(48,\)"):
        Coarsening(mesh, torch.zeros(48, dtype=torch.long))
    with pytest.raises(MeshError, match=r"parent must be .*shape \(48,\)"):
        Coarsening(mesh, torch.arange(47) // 4)
    gap = torch.arange(48) // 4
    gap[gap == 3] = 20
    with pytest.raises(MeshError, match=r"coarse cells \[3, 12, .*have no fine cells"):
        Coarsening(mesh, gap)
    with pytest.raises(ValueError, match="factor=3 must be a power of 2"):
        native_parent(mesh, 3)
    with pytest.raises(ValueError, match="factor=3 must divide nx=8"):
        native_parent(cartesian(8, 4), 3)
    with pytest.raises(ValueError, match="no native nesting.*agglomerate"):
        native_parent(icosahedral(1, dual=True), 2)
    with pytest.raises(ValueError, match="n_coarse must be an integer with 2 <= n_coarse"):
        agglomerate(mesh, 48)


def test_coarsening_commutes_with_cell_permutation(torch_gen):
    fine = icosahedral(2)
    parent = native_parent(fine, 2)
    perm = torch.randperm(fine.n_cells, generator=torch_gen)
    a, b = Coarsening(fine, parent), Coarsening(fine.permute_cells(perm), parent[perm])
    assert _pairs(a.coarse.face_cells) == _pairs(b.coarse.face_cells)
    assert torch.allclose(a.coarse.cell_volume, b.coarse.cell_volume, rtol=1e-14, atol=0)
    q = torch.randn(fine.n_cells, generator=torch_gen, dtype=torch.float64)
    assert torch.allclose(a.restrict(q), b.restrict(q[perm]), rtol=1e-13, atol=1e-13)
    phi = torch.randn(fine.n_faces, generator=torch_gen, dtype=torch.float64)
    assert torch.allclose(divergence(a.coarse, a.restrict_flux(phi)),
                          divergence(b.coarse, b.restrict_flux(phi)), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("nx,ny,factor", [(8, 8, 4), (8, 12, 4)])
def test_periodic_coarsening_to_two_cells_is_refused_or_valid(nx, ny, factor):
    fine = cartesian(nx, ny)
    try:
        c = Coarsening.native(fine, factor)
    except ValueError as err:          # refusing, like cartesian(2, ...), is fine
        assert "periodic" in str(err) and "3" in str(err)
        return
    assert c.coarse.validate() == []


def test_restrict_boundary_flux_checks_shape():
    c = Coarsening.native(cartesian(8, 4, periodic=False), 2)
    with pytest.raises(ValueError, match="n_fine_boundary_faces"):
        c.restrict_boundary_flux(torch.ones(3, dtype=torch.float64))


def test_coarse_faces_run_between_consecutive_polygon_corners(steps):
    """What the UGRID export relies on: dropping the hanging fine vertices from the coarse
    polygons (keeping the ends of faces) leaves each coarse face as one polygon edge, from
    face_vertices[0] to [1] counter-clockwise around the owner, and reversed around the
    neighbour; cells have as many corners as faces (no collapsed or repeated edges)."""
    from meshclosure._polygons import corner_polygons as _corner_polygons

    coarse = steps[-1].coarse
    if coarse.dim == 1 or bool((coarse.face_vertices[0] == coarse.face_vertices[1]).any()):
        pytest.skip("1-D column, or closed-loop faces (periodic strips): no corner polygon")
    nodes, poly = _corner_polygons(coarse)
    polys = [nodes[row[row >= 0]] for row in poly]
    sides = Counter()
    for cell, p in enumerate(polys):
        sides.update((cell, int(a), int(b)) for a, b in zip(p, np.roll(p, -1)))
    fv, fc = coarse.face_vertices.numpy(), coarse.face_cells.numpy()
    bv, bc = coarse.boundary_face_vertices.numpy(), coarse.boundary_face_cell.numpy()
    expected = Counter()
    expected.update((int(a), int(v0), int(v1)) for a, v0, v1 in zip(fc[0], fv[0], fv[1]))
    expected.update((int(b), int(v1), int(v0)) for b, v0, v1 in zip(fc[1], fv[0], fv[1]))
    expected.update((int(c), int(v0), int(v1)) for c, v0, v1 in zip(bc, bv[0], bv[1]))
    assert sides == expected
