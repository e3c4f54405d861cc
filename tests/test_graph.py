"""`to_graph`: directed edges, local-frame edge geometry, and permutation equivariance."""
from __future__ import annotations

import pytest
import torch

from meshclosure.graph import EDGE_FEATURES, local_frame, to_graph
from meshclosure.mesh import cartesian

COL = {name: k for k, name in enumerate(EDGE_FEATURES)}


def test_edge_features_are_named():
    assert EDGE_FEATURES == ("dx_1", "dx_2", "normal_1", "normal_2", "face_area", "cell_distance")


def test_both_senses_of_every_face(mesh_case):
    mesh = mesh_case.mesh()
    g = mesh.to_graph()
    F = mesh.n_faces
    assert g.edge_index.shape == (2, 2 * F)
    assert torch.equal(g.edge_index[:, :F], mesh.face_cells)
    assert torch.equal(g.edge_index[:, F:], mesh.face_cells.flip(0))
    assert torch.equal(g.face_sign, torch.cat([torch.ones(F), -torch.ones(F)]).double())
    assert g.num_nodes == mesh.n_cells and g.n_faces == F
    ea = g.edge_attr
    assert ea.shape == (2 * F, len(EDGE_FEATURES))
    # both senses carry the same face area and distance
    for name in ("face_area", "cell_distance"):
        assert torch.equal(ea[:F, COL[name]], getattr(mesh, name))
        assert torch.equal(ea[F:, COL[name]], getattr(mesh, name))
    assert torch.equal(g.pos, mesh.cell_center) and torch.equal(g.volume, mesh.cell_volume)


def _global_frame_check(mesh, g):
    """Edge displacement / normal are the global vectors projected on the source frame."""
    F = mesh.n_faces
    src, dst = g.edge_index
    e1, e2 = local_frame(mesh, mesh.cell_center[src])
    chord = mesh.cell_center[dst] - mesh.cell_center[src]
    normal = torch.cat([mesh.face_normal, -mesh.face_normal])
    ea = g.edge_attr
    assert torch.allclose(ea[:, COL["dx_1"]], (chord * e1).sum(1), rtol=0, atol=1e-13 * mesh.radius)
    assert torch.allclose(ea[:, COL["dx_2"]], (chord * e2).sum(1), rtol=0, atol=1e-13 * mesh.radius)
    assert torch.allclose(ea[:, COL["normal_1"]], (normal * e1).sum(1), rtol=0, atol=1e-13)
    assert torch.allclose(ea[:, COL["normal_2"]], (normal * e2).sum(1), rtol=0, atol=1e-13)
    return F


def test_local_frame_is_orthonormal_and_tangent(sphere_case):
    mesh = sphere_case.mesh()
    pts = torch.cat([mesh.cell_center, torch.tensor([[0, 0, 1.0], [0, 0, -2.0]],
                                                    dtype=torch.float64)])
    e1, e2 = local_frame(mesh, pts)
    rhat = pts / pts.norm(dim=1, keepdim=True)
    one = torch.ones(len(pts), dtype=torch.float64)
    assert torch.allclose(e1.norm(dim=1), one) and torch.allclose(e2.norm(dim=1), one)
    assert (e1 * e2).sum(1).abs().max() < 1e-14
    assert (e1 * rhat).sum(1).abs().max() < 1e-14 and (e2 * rhat).sum(1).abs().max() < 1e-14
    # right-handed (east, north, up); east is horizontal away from the poles
    assert torch.allclose((torch.linalg.cross(e1, e2) * rhat).sum(1), one)
    away = rhat[:, 2].abs() < 0.999
    assert e1[away, 2].abs().max() < 1e-14
    assert (e2[away, 2] >= 0).all()


def test_sphere_edge_geometry(sphere_case):
    mesh = sphere_case.mesh()
    g = mesh.to_graph()
    _global_frame_check(mesh, g)
    ea = g.edge_attr
    R = mesh.radius
    # the tangential part of the chord to a cell at angular distance θ is R sin θ
    disp = ea[:, [COL["dx_1"], COL["dx_2"]]].norm(dim=1)
    theta = torch.cat([mesh.cell_distance, mesh.cell_distance]) / R
    assert torch.allclose(disp, R * torch.sin(theta), rtol=1e-12, atol=0)
    # the normal is tangent at the face centre; projected on the source cell's frame
    # it keeps |n| <= 1 (0.7 on the coarsest meshes, -> 1 under refinement) and
    # points along the displacement
    n_loc = ea[:, [COL["normal_1"], COL["normal_2"]]]
    assert (n_loc.norm(dim=1) <= 1 + 1e-14).all() and (n_loc.norm(dim=1) > 0.7).all()
    assert ((n_loc * ea[:, [COL["dx_1"], COL["dx_2"]]]).sum(1) > 0).all()


@pytest.mark.parametrize("periodic", [True, False, (True, False)])
def test_cartesian_edge_attr_values(periodic):
    nx, ny, lx, ly = 4, 5, 2.0, 1.5
    dx, dy = lx / nx, ly / ny
    mesh = cartesian(nx, ny, lx, ly, periodic=periodic)
    g = to_graph(mesh)
    F = mesh.n_faces
    ea = g.edge_attr
    d1, d2 = ea[:, COL["dx_1"]], ea[:, COL["dx_2"]]
    n1, n2 = ea[:, COL["normal_1"]], ea[:, COL["normal_2"]]
    xdir = d2 == 0
    ydir = d1 == 0
    assert (xdir ^ ydir).all()
    # displacements are ±lx/nx or ±ly/ny (minimum image across periodic seams)
    assert torch.allclose(d1[xdir].abs(), torch.tensor(dx, dtype=torch.float64), rtol=1e-14)
    assert torch.allclose(d2[ydir].abs(), torch.tensor(dy, dtype=torch.float64), rtol=1e-14)
    # the normal is the unit displacement; the reverse sense is the negative
    assert torch.equal(n1[xdir], torch.sign(d1[xdir])) and (n2[xdir] == 0).all()
    assert torch.equal(n2[ydir], torch.sign(d2[ydir])) and (n1[ydir] == 0).all()
    assert torch.equal(ea[F:, :4], -ea[:F, :4])
    # area is the length of the face across the displacement, distance its length
    assert torch.allclose(ea[xdir, COL["face_area"]], torch.tensor(dy, dtype=torch.float64))
    assert torch.allclose(ea[ydir, COL["face_area"]], torch.tensor(dx, dtype=torch.float64))
    assert torch.allclose(ea[xdir, COL["cell_distance"]], torch.tensor(dx, dtype=torch.float64))
    assert torch.allclose(ea[ydir, COL["cell_distance"]], torch.tensor(dy, dtype=torch.float64))
    # the displacement points from the source cell to the target cell (cell = j*nx + i)
    src, dst = g.edge_index
    di = (dst % nx - src % nx).double()
    di = torch.where(di.abs() == nx - 1, -torch.sign(di), di)   # periodic wrap
    dj = (dst // nx - src // nx).double()
    dj = torch.where(dj.abs() == ny - 1, -torch.sign(dj), dj)
    assert torch.equal(torch.sign(d1), di) and torch.equal(torch.sign(d2), dj)


def test_node_features():
    mesh = cartesian(4, 3)
    q = torch.arange(12.0)
    uv = torch.stack([q, -q], 1)
    g = to_graph(mesh, {"q": q, "u": uv})
    assert g.feature_names == ("q", "u_0", "u_1")
    assert torch.equal(g.x, torch.stack([q, q, -q], 1).double())
    g2 = to_graph(mesh, uv)
    assert torch.equal(g2.x, uv.double()) and g2.feature_names == ("x_0", "x_1")
    with pytest.raises(ValueError,
                       match=r"field 'q' must have n_cells = 12 rows; got shape \(5,\)"):
        to_graph(mesh, {"q": torch.zeros(5)})
    with pytest.raises(ValueError, match=r"fields must have n_cells = 12 rows"):
        to_graph(mesh, torch.zeros(5))


def _edges(g):
    """Directed edges as a dict (src, dst) -> list of edge_attr rows."""
    out = {}
    for (s, d), attr in zip(g.edge_index.T.tolist(), g.edge_attr):
        out.setdefault((s, d), []).append(attr)
    return out


def test_permutation_equivariance(mesh_case):
    mesh = mesh_case.mesh()
    gen = torch.Generator().manual_seed(7)
    perm = torch.randperm(mesh.n_cells, generator=gen)
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(mesh.n_cells)
    x = torch.randn(mesh.n_cells, 3, generator=gen, dtype=torch.float64)
    permuted = mesh.permute_cells(perm)
    assert permuted.validate() == []
    g, gp = to_graph(mesh, x), to_graph(permuted, x[perm])
    # node features and positions permute
    assert torch.equal(gp.x, g.x[perm]) and torch.equal(gp.pos, g.pos[perm])
    assert torch.equal(gp.volume, g.volume[perm])
    # the edge sets map onto each other and corresponding directed edges carry equal attrs
    e, ep = _edges(g), _edges(gp)
    mapped = {(int(inverse[s]), int(inverse[d])): rows for (s, d), rows in e.items()}
    assert set(mapped) == set(ep)
    for key, rows in mapped.items():
        assert len(rows) == len(ep[key])
        for a, b in zip(rows, ep[key]):
            assert torch.allclose(a, b, rtol=0, atol=1e-14)


def test_permute_cells_rejects_non_permutations():
    mesh = cartesian(4, 3)
    with pytest.raises(ValueError, match=r"perm must be a permutation of range\(n_cells=12\)"):
        mesh.permute_cells(torch.zeros(12, dtype=torch.long))
    with pytest.raises(ValueError, match="torch.randperm"):
        mesh.permute_cells(torch.arange(11))
