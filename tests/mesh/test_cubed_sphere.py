"""The equiangular gnomonic cubed sphere (issue 15 item 1): exact geometry against the
closed-form areas, the cube's symmetry, the finite-volume contract, native nesting and
its mesh spec."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from meshclosure.errors import ArgumentError
from meshclosure.fv.operators import divergence, transport_from_streamfunction
from meshclosure.mesh import Coarsening, cubed_sphere, native_parent, parse_mesh_spec
from meshclosure.testing import axis_rotation, mesh_symmetry


def _pairs(face_cells: torch.Tensor) -> set:
    return set(map(tuple, torch.sort(face_cells, dim=0).values.T.tolist()))


def _gnomonic_area(x1, x2, y1, y2):
    """Exact area of the gnomonic rectangle ``[x1, x2] × [y1, y2]`` on a cube face of
    the unit sphere: ``ω(x, y) = atan(x y / √(1 + x² + y²))`` summed over the corners."""
    w = lambda x, y: np.arctan(x * y / np.sqrt(1 + x * x + y * y))  # noqa: E731
    return w(x2, y2) - w(x1, y2) - w(x2, y1) + w(x1, y1)


@pytest.mark.parametrize("n, radius", [(1, 1.0), (2, 1.0), (3, 6371.0), (5, 1.0), (8, 2.5)])
def test_counts_area_euler_validate(n, radius):
    mesh = cubed_sphere(n, radius=radius)
    assert (mesh.n_cells, mesh.n_faces, mesh.n_vertices) == (6 * n * n, 12 * n * n, 6 * n * n + 2)
    assert mesh.n_boundary_faces == 0
    assert mesh.euler_characteristic() == 2
    assert float(mesh.cell_volume.sum()) == pytest.approx(4 * math.pi * radius**2, rel=1e-12)
    assert mesh.validate() == [] and mesh.float().validate() == []
    assert mesh.family == "cubed" and mesh.info["n"] == n
    assert mesh.signature()["n"] == n and mesh.signature()["family"] == "cubed"
    # vertices on the sphere; n = 1 is the cube itself
    r = mesh.vertex_pos.norm(dim=1)
    assert torch.allclose(r, torch.full_like(r, radius), rtol=1e-15, atol=0)
    if n == 1:
        corners = mesh.vertex_pos.numpy() * math.sqrt(3) / radius
        assert np.abs(np.abs(corners) - 1).max() < 1e-15


@pytest.mark.parametrize("n", [2, 5, 16])
def test_cell_areas_equal_the_closed_form(n):
    """Each cell is a gnomonic rectangle ``[tan ξ_i, tan ξ_i+1] × [tan η_j, tan η_j+1]``;
    its exact area is known in closed form (and the same on all 6 panels)."""
    mesh = cubed_sphere(n)
    t = np.tan(-math.pi / 4 + np.arange(n + 1) * math.pi / (2 * n))
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="xy")    # [j, i]
    exact = _gnomonic_area(t[i], t[i + 1], t[j], t[j + 1])
    got = mesh.cell_volume.numpy().reshape(6, n, n)
    assert np.abs(got - exact[None]).max() < 1e-14 * exact.max() * n
    # the cube's symmetry: equal panel totals, and each panel symmetric under i <-> n-1-i,
    # j <-> n-1-j and i <-> j
    panel = got.sum((1, 2))
    assert np.ptp(panel) < 1e-14 and panel[0] == pytest.approx(4 * math.pi / 6, rel=1e-14)
    for flip in (got[:, ::-1, :], got[:, :, ::-1], got.transpose(0, 2, 1)):
        assert np.abs(flip - got).max() < 1e-15


def test_cell_edges_are_great_circle_arcs_of_the_grid():
    """Every face lies on an equiangular grid line: its two vertices have the same cube
    coordinate ``tan ξ_k`` (ratio of two Cartesian components) on a panel they share."""
    n = 6
    mesh = cubed_sphere(n)
    t = np.tan(-math.pi / 4 + np.arange(n + 1) * math.pi / (2 * n))
    v = mesh.vertex_pos.numpy()
    a, b = v[mesh.face_vertices[0].numpy()], v[mesh.face_vertices[1].numpy()]
    mid = a + b
    axis = np.abs(mid).argmax(1)                       # the panel holding the face
    rows = np.arange(len(a))
    ok = np.zeros(len(a), bool)
    for k in range(3):                                 # cube coordinates on that panel
        ca, cb = a[:, k] / a[rows, axis], b[:, k] / b[rows, axis]
        on_line = (np.abs(ca - cb) < 1e-14) & (np.abs(ca[:, None] - t).min(1) < 1e-14)
        ok |= on_line & (axis != k)
    assert ok.all()
    # face lengths are great-circle arcs (equal to the angle between the vertices)
    assert np.allclose(mesh.face_area.numpy(), np.arccos(np.clip((a * b).sum(1), -1, 1)),
                       rtol=1e-7, atol=0)


@pytest.mark.parametrize("axis, angle", [([0, 0, 1], math.pi / 2), ([1, 0, 0], math.pi / 2),
                                         ([1, 1, 1], 2 * math.pi / 3), ([1, 1, 0], math.pi)])
def test_cube_rotations_are_symmetries(axis, angle):
    mesh = cubed_sphere(4)
    sigma, tau, sign = mesh_symmetry(mesh, axis_rotation(axis, angle))
    assert torch.allclose(mesh.cell_volume[sigma], mesh.cell_volume, rtol=1e-13, atol=0)
    assert torch.allclose(mesh.face_area[tau], mesh.face_area, rtol=1e-13, atol=0)
    assert torch.allclose(mesh.cell_distance[tau], mesh.cell_distance, rtol=1e-12, atol=0)
    v = mesh.vertex_pos.numpy()
    dist, _ = cKDTree(v).query(v @ axis_rotation(axis, angle).numpy().T)
    assert dist.max() < 1e-15


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-13), (torch.float32, 1e-5)])
def test_streamfunction_transport_is_nondivergent(dtype, tol, torch_gen):
    mesh = cubed_sphere(7, radius=3.0).to(dtype=dtype)
    psi = torch.randn(mesh.n_vertices, generator=torch_gen, dtype=torch.float64).to(dtype)
    U = transport_from_streamfunction(mesh, psi)
    div = divergence(mesh, U) * mesh.cell_volume
    assert float(div.abs().max()) <= tol * float(U.abs().max())
    assert float(U.abs().max()) > 0.1                  # not trivially zero


@pytest.mark.parametrize("n, factor", [(8, 2), (6, 3), (8, 4), (4, 2)])
def test_native_coarsening_is_the_coarser_cubed_sphere(n, factor, torch_gen):
    fine = cubed_sphere(n, radius=2.0)
    c = Coarsening.native(fine, factor)
    ref = cubed_sphere(n // factor, radius=2.0)
    coarse = c.coarse
    assert coarse.family == "cubed" and coarse.info["n"] == n // factor
    assert _pairs(coarse.face_cells) == _pairs(ref.face_cells)
    assert coarse.euler_characteristic() == 2 and coarse.validate() == []
    # every coarse cell holds factor² fine cells
    assert torch.equal(torch.bincount(c.parent), torch.full((ref.n_cells,), factor**2))
    # exact geometry: areas are sums of fine areas and equal the coarse cells' own;
    # faces are merged great-circle arcs of the same grid line
    assert torch.allclose(coarse.cell_volume, ref.cell_volume, rtol=1e-13, atol=0)
    got = dict(zip(map(tuple, torch.sort(coarse.face_cells, 0).values.T.tolist()),
                   coarse.face_area.tolist()))
    want = dict(zip(map(tuple, torch.sort(ref.face_cells, 0).values.T.tolist()),
                    ref.face_area.tolist()))
    assert all(got[k] == pytest.approx(want[k], rel=1e-13) for k in want)
    # coarse centres are the volume-weighted means of the fine centroids: equal to the
    # exact centroids up to a third-order difference: < 3e-4 R h³ with the coarse
    # angular spacing h = (π/2) / (n / factor) (measured: 2.3e-4 R h³ at 4 -> 2)
    h = math.pi / 2 / (n // factor)
    assert float((coarse.cell_center - ref.cell_center).norm(dim=1).max()) < 3e-4 * 2.0 * h**3
    # restriction conserves the integral; restricted non-divergent transports stay so
    q = torch.randn(fine.n_cells, generator=torch_gen, dtype=torch.float64)
    total = float((q * fine.cell_volume).sum())
    assert float((c.restrict(q) * coarse.cell_volume).sum()) == pytest.approx(total, abs=1e-13)
    psi = torch.randn(fine.n_vertices, generator=torch_gen, dtype=torch.float64)
    U = transport_from_streamfunction(fine, psi)
    Uc = c.restrict_flux(U)
    assert float((divergence(coarse, Uc) * coarse.cell_volume).abs().max()) \
        < 1e-13 * float(U.abs().max())
    # the subgrid-tendency identity: restrict(div_fine Φ) = div_coarse(restrict_flux Φ)
    phi = torch.randn(fine.n_faces, generator=torch_gen, dtype=torch.float64)
    assert torch.allclose(c.restrict(divergence(fine, phi)), divergence(coarse, c.restrict_flux(phi)),
                          rtol=0, atol=1e-11)


def test_native_parent_chains_and_refuses_non_divisors():
    fine = cubed_sphere(12)
    p2, p3 = native_parent(fine, 2), native_parent(cubed_sphere(6), 3)
    assert torch.equal(p3[p2], native_parent(fine, 6))
    with pytest.raises(ArgumentError, match=r"factor=5: must divide the cells per panel edge "
                                            r"n=12 .* use one of 1, 2, 3, 4, 6, 12"):
        native_parent(fine, 5)


def test_mesh_spec():
    mesh = parse_mesh_spec("cubed:5")
    assert mesh.family == "cubed" and mesh.n_cells == 150
    assert torch.equal(mesh.cell_volume, cubed_sphere(5).cell_volume)
    with pytest.raises(ArgumentError, match=r"spec='cubed:0': in cubed:N, the number of cells "
                                            r"per panel edge must be an integer from 1 to 2048"):
        parse_mesh_spec("cubed:0")
    with pytest.raises(ValueError, match=r"'x' is not an integer size"):
        parse_mesh_spec("cubed:x")
    with pytest.raises(ValueError, match=r"cubed:N"):
        parse_mesh_spec("cube:4")


@pytest.mark.parametrize("kwargs, match", [
    (dict(n=0), r"n=0: the number of cells per panel edge must be an integer from 1 to 2048"),
    (dict(n=2.5), r"n=2\.5: the number"), (dict(n=True), r"n=True: the number"),
    (dict(n=4, radius=-1.0), r"radius=-1\.0: must be a positive finite length"),
    (dict(n=4, radius=float("nan")), r"radius=nan: must be a positive finite length")])
def test_bad_arguments_name_the_rule(kwargs, match):
    with pytest.raises(ArgumentError, match=match):
        cubed_sphere(**kwargs)


def test_plot_draws_every_cell(tmp_path):
    import matplotlib.image

    from meshclosure.plot import _sphere_polygons, plot

    mesh = cubed_sphere(4)
    polys, vals = _sphere_polygons(mesh, np.arange(mesh.n_cells, dtype=float))
    assert set(vals.astype(int)) == set(range(mesh.n_cells))
    plot(mesh, mesh.cell_center[:, 2], path=tmp_path / "c.png", label="z")
    image = matplotlib.image.imread(str(tmp_path / "c.png"))[..., :3]
    assert len(np.unique((image * 255).round().reshape(-1, 3), axis=0)) > 20


@pytest.mark.parametrize("scheme", ["linear", "quadratic"])
def test_subgrid_identity_on_the_cubed_sphere(scheme):
    """DESIGN.md §5: ``s^sgs = −div_coarse(Φ^sgs)`` to rounding with the resolved advective
    flux on both meshes, and the subgrid flux does not vanish."""
    from meshclosure.data.targets import check_identity, subgrid_targets
    from meshclosure.fv.advection import linear_flux, quadratic_flux

    flux = {"linear": linear_flux, "quadratic": quadratic_flux}[scheme]
    fine = cubed_sphere(8)
    c = Coarsening.native(fine, 2)
    r = fine.vertex_pos / fine.vertex_pos.norm(dim=1, keepdim=True)
    U = transport_from_streamfunction(fine, 0.2 * (r[:, 2] + 0.3 * torch.sin(5 * r[:, 0]) * r[:, 2]))
    x = fine.cell_center
    q = torch.exp(-4 * ((x - torch.tensor([0.6, 0.0, 0.8], dtype=x.dtype)) ** 2).sum(1))
    s = subgrid_targets(lambda m, t, st, u: {"q": flux(m, st["q"], u)}, c, 0.0, {"q": q}, U)
    assert check_identity(s, c.coarse) < 1e-12
    assert float(s.flux["q"].abs().max()) > 1e-4 * float(U.abs().max())


@pytest.mark.parametrize("scheme", ["linear", "quadratic"])
def test_williamson_test1_converges_on_the_cubed_sphere(scheme):
    """Cosine bell, one revolution over the panel corners (α = π/2 − 0.05): finite, and
    the normalized l2 error falls with resolution (orders at 32 -> 128 per panel edge:
    tools/williamson_convergence.py --families cubed)."""
    from meshclosure.solver.flows import williamson_test1

    r8, r16 = (williamson_test1(cubed_sphere(n), math.pi / 2 - 0.05, scheme) for n in (8, 16))
    assert all(math.isfinite(r[k]) for r in (r8, r16) for k in ("l1", "l2", "linf"))
    assert r16["l2"] < 0.8 * r8["l2"] and r16["l2"] < 0.7
