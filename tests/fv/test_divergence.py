"""`divergence` and the streamfunction transports (DESIGN.md §2): conservation for any
flux, known discrete solutions, and the sign convention ``u = k × ∇ψ``."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from meshclosure.fv.operators import (boundary_transport_from_streamfunction, divergence,
                                      transport_from_streamfunction)
from meshclosure.mesh import cartesian, healpix, icosahedral

GL_NODES, GL_WEIGHTS = np.polynomial.legendre.leggauss(12)


# --------------------------------------------------------------- conservation
def test_total_of_divergence_is_zero_for_any_flux(mesh_case, dtype, tol, torch_gen):
    mesh = mesh_case.mesh().to(dtype=dtype)
    phi = torch.randn(mesh.n_faces, generator=torch_gen, dtype=torch.float64).to(dtype)
    div = divergence(mesh, phi)
    assert div.dtype == dtype and div.shape == (mesh.n_cells,)
    total = (mesh.cell_volume * div).sum()
    assert abs(float(total)) <= tol * float(phi.abs().sum())
    # each cell's V·div is exactly its signed face sum
    a, b = mesh.face_cells
    net = torch.zeros(mesh.n_cells, dtype=torch.float64)
    net.index_add_(0, a, phi.double()).index_add_(0, b, -phi.double())
    assert torch.allclose((div * mesh.cell_volume).double(), net, rtol=0,
                          atol=tol * float(phi.abs().max()) * 10)


def test_boundary_fluxes_are_the_only_source(planar_case, torch_gen):
    mesh = planar_case.mesh()
    if mesh.n_boundary_faces == 0:
        pytest.skip("no boundary")
    phi = torch.randn(mesh.n_faces, 2, generator=torch_gen, dtype=torch.float64)
    phib = torch.randn(mesh.n_boundary_faces, 2, generator=torch_gen, dtype=torch.float64)
    div = divergence(mesh, phi, phib)
    total = (mesh.cell_volume[:, None] * div).sum(0)
    assert torch.allclose(total, phib.sum(0), rtol=0, atol=1e-12 * float(phi.abs().sum()))


def test_trailing_dimensions_are_independent(mesh_case, torch_gen):
    mesh = mesh_case.mesh()
    phi = torch.randn(mesh.n_faces, 2, 3, generator=torch_gen, dtype=torch.float64)
    div = divergence(mesh, phi)
    assert div.shape == (mesh.n_cells, 2, 3)
    for i in range(2):
        for j in range(3):
            assert torch.equal(div[:, i, j], divergence(mesh, phi[:, i, j].contiguous()))
    # linear in the flux
    other = torch.randn(mesh.n_faces, generator=torch_gen, dtype=torch.float64)
    combo = divergence(mesh, 2.0 * phi[:, 0, 0] - 3.0 * other)
    assert torch.allclose(combo, 2.0 * div[:, 0, 0] - 3.0 * divergence(mesh, other),
                          rtol=1e-12, atol=1e-12 * float(combo.abs().max()))


# ------------------------------------------------------------ known solutions
def _face_flux(mesh, velocity):
    """Midpoint-rule flux u(face centre)·n·A: exact for a linear u on straight faces."""
    u = velocity(mesh.face_center)
    phi = (u * mesh.face_normal).sum(1) * mesh.face_area
    ub = velocity(mesh.boundary_face_center)
    phib = (ub * mesh.boundary_face_normal).sum(1) * mesh.boundary_face_area
    return phi, phib


@pytest.mark.parametrize("case", ["cartesian-bounded-3x2", "cartesian-bounded-12x8",
                                  "meshio-hole-4", "meshio-hole-12"])
def test_linear_velocity_has_its_analytic_divergence(case):
    """u = (a x + b y + c, d x + e y + f): div u = a + e in every cell (Gauss)."""
    from conftest import MESH_CASES

    mesh = MESH_CASES[case].mesh()
    a, b, c, d, e, f = 0.7, -1.3, 0.4, 2.1, 0.25, -0.6

    def velocity(x):
        return torch.stack([a * x[:, 0] + b * x[:, 1] + c, d * x[:, 0] + e * x[:, 1] + f], 1)

    phi, phib = _face_flux(mesh, velocity)
    div = divergence(mesh, phi, phib)
    assert torch.allclose(div, torch.full_like(div, a + e), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("nx,ny", [(4, 3), (8, 6), (16, 12)])
def test_linear_velocity_on_a_channel(nx, ny):
    """Periodic in x: u = (b y + c, e y + f) is periodic and has div = e exactly."""
    mesh = cartesian(nx, ny, 2.0, 1.5, periodic=(True, False))
    b, c, e, f = -1.3, 0.4, 0.25, -0.6
    phi, phib = _face_flux(mesh, lambda x: torch.stack([b * x[:, 1] + c, e * x[:, 1] + f], 1))
    div = divergence(mesh, phi, phib)
    assert torch.allclose(div, torch.full_like(div, e), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("nx,ny", [(4, 3), (8, 6), (16, 12)])
def test_periodic_grid_sinusoidal_and_linear_flux(nx, ny):
    lx, ly = 2.0, 1.5
    dx, dy = lx / nx, ly / ny
    mesh = cartesian(nx, ny, lx, ly)
    x, y = mesh.cell_center[:, 0], mesh.cell_center[:, 1]
    # u = (sin kx, cos ly y): exact discrete divergence
    #   (sin k(x+dx/2) - sin k(x-dx/2)) / dx + (cos l(y+dy/2) - cos l(y-dy/2)) / dy
    k, l = 2 * math.pi / lx, 4 * math.pi / ly
    phi, _ = _face_flux(mesh, lambda p: torch.stack([torch.sin(k * p[:, 0]),
                                                     torch.cos(l * p[:, 1])], 1))
    expect = 2 * torch.cos(k * x) * math.sin(k * dx / 2) / dx \
        - 2 * torch.sin(l * y) * math.sin(l * dy / 2) / dy
    assert torch.allclose(divergence(mesh, phi), expect, rtol=0, atol=1e-12)
    # a flux linear in x (u = (α x, 0)) is not periodic: away from the seam at
    # x = 0 its divergence is α
    alpha = 1.7
    phi, _ = _face_flux(mesh, lambda p: torch.stack([alpha * p[:, 0], 0 * p[:, 1]], 1))
    div = divergence(mesh, phi)
    column = (x / dx).floor().long()
    inner = (column > 0) & (column < nx - 1)
    assert torch.allclose(div[inner], torch.full_like(div[inner], alpha), rtol=1e-12, atol=0)
    # the seam face at x = 0 (= lx) carries α·0 (its centre is at x = 0): the
    # first column sees a plain α, the last one also loses the α lx jump
    first, last = column == 0, column == nx - 1
    assert torch.allclose(div[first], torch.full_like(div[first], alpha), rtol=1e-12)
    assert torch.allclose(div[last], torch.full_like(div[last], alpha - alpha * lx / dx),
                          rtol=1e-12)
    assert float((mesh.cell_volume * div).sum()) == pytest.approx(0.0, abs=1e-12)


# --------------------------------------------- streamfunction sign convention
def _arc_quadrature(mesh, velocity, boundary: bool = False):
    """∫ u·n ds along every face (great-circle arc or straight segment, minimum image
    on periodic planes), by Gauss-Legendre; ``boundary=True`` for the boundary faces."""
    fv = mesh.boundary_face_vertices if boundary else mesh.face_vertices
    n = mesh.boundary_face_normal if boundary else mesh.face_normal
    p, q = mesh.vertex_pos[fv[0]], mesh.vertex_pos[fv[1]]
    total = torch.zeros(len(n), dtype=torch.float64)
    if mesh.is_sphere:
        R = mesh.radius
        a, b = p / R, q / R
        theta = torch.atan2(torch.linalg.cross(a, b).norm(dim=1), (a * b).sum(1))
        w = b - (a * b).sum(1, keepdim=True) * a
        w = w / w.norm(dim=1, keepdim=True)
        for t, wt in zip(GL_NODES, GL_WEIGHTS):
            s = (0.5 * (t + 1) * theta)[:, None]
            r = R * (a * torch.cos(s) + w * torch.sin(s))
            total += wt * 0.5 * theta * R * (velocity(r) * n).sum(1)
        return total
    d = q - p
    if mesh.period is not None:
        for axis, length in enumerate(mesh.period):
            if length:
                d[:, axis] -= length * torch.round(d[:, axis] / length)
    length = d.norm(dim=1)
    for t, wt in zip(GL_NODES, GL_WEIGHTS):
        r = p + 0.5 * (t + 1) * d
        total += wt * 0.5 * length * (velocity(r) * n).sum(1)
    return total


@pytest.mark.parametrize("omega", [1.0, -0.3])
def test_solid_body_rotation_on_the_sphere(sphere_case, omega):
    """u = Ω ẑ × r = r̂ × ∇ψ with ψ = -Ω R z. The face transports ψ(v0) - ψ(v1) equal
    the flux of u through each face from owner to neighbour, and are non-divergent."""
    mesh = sphere_case.mesh()
    R = mesh.radius
    zhat = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)

    def velocity(r):
        return omega * torch.linalg.cross(zhat.expand_as(r), r)

    psi = -omega * R * mesh.vertex_pos[:, 2]
    U = transport_from_streamfunction(mesh, psi)
    exact = _arc_quadrature(mesh, velocity)
    scale = abs(omega) * R**2
    assert torch.allclose(U, exact, rtol=0, atol=1e-12 * scale)
    div = divergence(mesh, U)
    assert (div * mesh.cell_volume).abs().max() <= 1e-12 * scale
    # the rotation carries fluid eastwards: positive flux through faces whose
    # normal points east
    east = torch.linalg.cross(zhat.expand_as(mesh.face_center), mesh.face_center)
    eastward = (mesh.face_normal * east).sum(1) > 0.5 * east.norm(dim=1)
    if omega > 0:
        assert (U[eastward] > 0).all()


def test_general_streamfunction_matches_face_integrals(sphere_case):
    """For any smooth ψ(r), U_f = ψ(v0) - ψ(v1) is ∫ (r̂ × ∇ψ)·n ds (Stokes)."""
    mesh = sphere_case.mesh()
    R = mesh.radius
    c = torch.tensor([0.3, -1.1, 0.7], dtype=torch.float64)

    def psi(r):
        x, y, z = (r / R).unbind(1)
        return R**2 * (x * y + torch.sin(2 * z) + (r / R) @ c)

    def velocity(r):
        x, y, z = (r / R).unbind(1)
        grad = R * torch.stack([y, x, 2 * torch.cos(2 * z)], 1) + R * c  # ∇ψ (3-D)
        return torch.linalg.cross(r / R, grad)

    U = transport_from_streamfunction(mesh, psi(mesh.vertex_pos))
    exact = _arc_quadrature(mesh, velocity)
    assert torch.allclose(U, exact, rtol=0, atol=1e-11 * R**2)


@pytest.mark.parametrize("case", ["cartesian-periodic-8x6", "cartesian-bounded-6x4",
                                  "cartesian-channel-8x4", "meshio-hole-8"])
def test_planar_streamfunction_sign(case):
    """Plane: u = k × ∇ψ = (-∂ψ/∂y, ∂ψ/∂x); U_f is its flux owner -> neighbour."""
    from conftest import MESH_CASES

    mesh = MESH_CASES[case].mesh()
    lx, ly = mesh.info.get("lx", 2.0), mesh.info.get("ly", 1.5)  # ψ periodic on the mesh
    k, l = 2 * math.pi / lx, 2 * math.pi / ly

    def psi(p):
        return torch.sin(k * p[:, 0]) * torch.cos(l * p[:, 1]) + 0.5 * torch.cos(k * p[:, 0])

    def velocity(p):
        dpsi_dx = k * torch.cos(k * p[:, 0]) * torch.cos(l * p[:, 1]) \
            - 0.5 * k * torch.sin(k * p[:, 0])
        dpsi_dy = -l * torch.sin(k * p[:, 0]) * torch.sin(l * p[:, 1])
        return torch.stack([-dpsi_dy, dpsi_dx], 1)

    U = transport_from_streamfunction(mesh, psi(mesh.vertex_pos))
    assert torch.allclose(U, _arc_quadrature(mesh, velocity), rtol=0, atol=1e-12)
    if mesh.n_boundary_faces:
        Ub = boundary_transport_from_streamfunction(mesh, psi(mesh.vertex_pos))
        total = _arc_quadrature(mesh, velocity, boundary=True)  # outward flux
        assert torch.allclose(Ub, total, rtol=0, atol=1e-12)


def test_float32_streamfunction_transport(tolerance):
    for mesh in (healpix(8).float(), icosahedral(3, dual=True).float(), cartesian(16, 12).float()):
        psi = torch.randn(mesh.n_vertices, generator=torch.Generator().manual_seed(3))
        U = transport_from_streamfunction(mesh, psi)
        assert U.dtype == torch.float32
        div = divergence(mesh, U)
        assert (div * mesh.cell_volume).abs().max() <= tolerance[torch.float32] * U.abs().max()


def test_large_healpix_and_icosahedral(torch_gen):
    """The largest meshes of the suite: random ψ still gives div = 0 cell by cell."""
    for mesh in (healpix(16), icosahedral(4)):
        psi = torch.randn(mesh.n_vertices, generator=torch_gen, dtype=torch.float64)
        U = transport_from_streamfunction(mesh, psi)
        assert (divergence(mesh, U) * mesh.cell_volume).abs().max() <= 1e-12 * U.abs().max()
        phi = torch.randn(mesh.n_faces, generator=torch_gen, dtype=torch.float64)
        assert abs(float((divergence(mesh, phi) * mesh.cell_volume).sum())) \
            <= 1e-12 * float(phi.abs().sum())
        assert mesh.validate() == []


def test_shape_errors():
    mesh = cartesian(4, 4, 1.0, 1.0, periodic=False)
    with pytest.raises(ValueError, match=r"face_flux must have n_faces = 24 rows \(dim 0\); got "
                                         r"shape \(3,\)"):
        divergence(mesh, torch.ones(3))
    with pytest.raises(ValueError, match="boundary_flux must have n_boundary_faces = 16 rows"):
        divergence(mesh, torch.ones(24), torch.ones(5))
    with pytest.raises(ValueError, match="psi_vertex must have n_vertices = 25 rows"):
        transport_from_streamfunction(mesh, torch.ones(16))
