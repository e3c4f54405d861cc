"""Advective fluxes: upwind values, exactness of the linear reconstruction,
Barth–Jespersen bounds, differentiability, CFL helper."""
import math

import pytest
import torch

from meshclosure.fv import divergence
from meshclosure.fv.advection import (
    cfl_dt, face_displacement, limiter_coefficient, linear_flux, outflow_courant, upwind_flux,
)
from meshclosure.fv.gradients import gradient
from meshclosure.mesh import cartesian, healpix, icosahedral

MESHES = {
    "cartesian": lambda: cartesian(7, 5, 1.0, 0.8),
    "cartesian_bounded": lambda: cartesian(6, 6, periodic=False),
    "healpix": lambda: healpix(4),
    "icosahedral": lambda: icosahedral(2),
    "icosahedral_dual": lambda: icosahedral(2, dual=True),
}


@pytest.mark.parametrize("name", MESHES)
def test_upwind_picks_upwind_cell(name):
    mesh = MESHES[name]()
    q = torch.rand(mesh.n_cells, 2, dtype=torch.float64)
    U = torch.randn(mesh.n_faces, dtype=torch.float64)
    phi = upwind_flux(mesh, q, U)
    up = torch.where(U >= 0, mesh.face_cells[0], mesh.face_cells[1])
    assert torch.equal(phi, U[:, None] * q[up])


def test_linear_reconstruction_exact_for_linear_field():
    mesh = cartesian(6, 6, 1.0, 1.0, periodic=False)
    q = 1.0 + 2.0 * mesh.cell_center[:, 0] - 0.5 * mesh.cell_center[:, 1]
    U = torch.randn(mesh.n_faces, dtype=torch.float64)
    exact = 1.0 + 2.0 * mesh.face_center[:, 0] - 0.5 * mesh.face_center[:, 1]
    assert torch.allclose(linear_flux(mesh, q, U), U * exact, atol=1e-13)
    # a linear field has no local extrema where the gradient is exact: BJ keeps it (φ = 1)
    phi = limiter_coefficient(mesh, q, gradient(mesh, q))
    assert float(phi.min()) == pytest.approx(1.0)


def test_periodic_displacements_use_minimum_image():
    mesh = cartesian(5, 4, 1.0, 0.8)
    ra, rb = face_displacement(mesh)
    half = torch.tensor([0.1, 0.1], dtype=torch.float64)
    assert float(ra.abs().max()) <= float(half.max()) + 1e-12
    assert torch.allclose(ra - rb, torch.zeros(()) + (ra - rb))  # finite, no wrap jumps
    assert torch.allclose((ra - rb).norm(dim=1), mesh.cell_distance)


@pytest.mark.parametrize("name", ["icosahedral", "healpix"])
def test_second_order_face_values_on_sphere(name):
    # smooth field: face value error of the linear reconstruction shrinks ~ h²
    errs = []
    for level in ((2, 3) if name == "icosahedral" else (8, 16)):
        mesh = icosahedral(level) if name == "icosahedral" else healpix(level)
        f = lambda x: torch.sin(2 * x[:, 0]) * torch.cos(x[:, 1]) + x[:, 2] ** 2  # noqa: E731
        U = torch.ones(mesh.n_faces, dtype=torch.float64)
        errs.append(float((linear_flux(mesh, f(mesh.cell_center), U)
                           - f(mesh.face_center)).abs().max()))
    assert errs[0] / errs[1] > 3.0


@pytest.mark.parametrize("name", MESHES)
@pytest.mark.parametrize("limiter", ["barth_jespersen", "venkatakrishnan"])
def test_limiter_bounds_face_values(name, limiter):
    mesh = MESHES[name]()
    torch.manual_seed(0)
    q = torch.rand(mesh.n_cells, dtype=torch.float64)
    g = gradient(mesh, q)
    phi = limiter_coefficient(mesh, q, g, limiter)
    assert float(phi.min()) >= 0 and float(phi.max()) <= 1
    if limiter == "barth_jespersen":
        ra, rb = face_displacement(mesh)
        a, b = mesh.face_cells
        lg = g * phi[:, None]
        qa = q[a] + (lg[a] * ra).sum(1)
        qb = q[b] + (lg[b] * rb).sum(1)
        hi = torch.full_like(q, -1.0).index_reduce(0, a, q[b], "amax").index_reduce(0, b, q[a], "amax")
        lo = torch.full_like(q, 2.0).index_reduce(0, a, q[b], "amin").index_reduce(0, b, q[a], "amin")
        hi, lo = torch.maximum(hi, q), torch.minimum(lo, q)
        assert bool((qa <= hi[a] + 1e-12).all() and (qa >= lo[a] - 1e-12).all())
        assert bool((qb <= hi[b] + 1e-12).all() and (qb >= lo[b] - 1e-12).all())


@pytest.mark.parametrize("limiter", [None, "barth_jespersen", "venkatakrishnan"])
def test_fluxes_are_differentiable_and_conservative(limiter):
    mesh = healpix(2)
    U = torch.randn(mesh.n_faces, dtype=torch.float64)
    for q in (torch.rand(mesh.n_cells, dtype=torch.float64), torch.ones(mesh.n_cells, dtype=torch.float64)):
        q = q.clone().requires_grad_(True)
        tend = -divergence(mesh, linear_flux(mesh, q, U, limiter=limiter))
        assert abs(float((mesh.cell_volume * tend).sum())) < 1e-13
        (tend ** 2).sum().backward()
        assert bool(torch.isfinite(q.grad).all())


def test_float32_matches_float64():
    mesh = icosahedral(2)
    q = torch.rand(mesh.n_cells, dtype=torch.float64)
    U = torch.randn(mesh.n_faces, dtype=torch.float64)
    f64 = linear_flux(mesh, q, U, limiter="barth_jespersen")
    f32 = linear_flux(mesh.float(), q.float(), U.float(), limiter="barth_jespersen")
    assert f32.dtype == torch.float32
    assert torch.allclose(f32.double(), f64, atol=1e-4)


def test_cfl_dt_and_courant():
    mesh = cartesian(10, 10, 1.0, 1.0)
    U = 2.0 * mesh.face_normal[:, 1] * mesh.face_area        # u = (0, 2)
    dt = cfl_dt(mesh, U, 0.8)
    assert dt == pytest.approx(0.8 * 0.1 / 2.0)
    assert float(outflow_courant(mesh, U, dt).max()) == pytest.approx(0.8)
    with pytest.raises(ValueError, match="U is zero everywhere"):
        cfl_dt(mesh, torch.zeros_like(U))


def test_bad_grad_shape_message():
    mesh = cartesian(4, 4)
    q = torch.rand(16, dtype=torch.float64)
    with pytest.raises(ValueError, match="grad must have shape"):
        linear_flux(mesh, q, torch.ones(mesh.n_faces, dtype=torch.float64), grad=torch.zeros(16, 3))


# ------------------------------------------------------------------ quadratic scheme
from meshclosure.fv.advection import advection_matrix, quadratic_flux  # noqa: E402


@pytest.mark.parametrize("name", ["periodic", "healpix", "icosahedral", "dual"])
def test_quadratic_reconstruction_is_third_order_at_faces(name):
    """fv1 (point values in, face-centre values out): face values of a smooth field: error
    falls ~8x per halving of h (O(h³)), against ~4x for the linear reconstruction on the
    same irregular meshes. The fv2 analogue (cell averages in, face averages out) is in
    test_reconstruction.py."""
    def face_error(mesh):
        x = mesh.cell_center / (mesh.radius if mesh.is_sphere else 1.0)
        xf = mesh.face_center / (mesh.radius if mesh.is_sphere else 1.0)
        if mesh.is_sphere:
            f = lambda p: torch.exp(p[:, 0]) * torch.sin(2 * p[:, 1]) + p[:, 2] ** 2  # noqa: E731
        else:
            f = lambda p: torch.sin(2 * math.pi * p[:, 0]) * torch.cos(2 * math.pi * p[:, 1])  # noqa: E731
        U = torch.ones(mesh.n_faces, dtype=torch.float64)
        return float((quadratic_flux(mesh, f(x), U, operators="fv1") - f(xf)).abs().max())

    build = {"periodic": lambda n: cartesian(8 * n, 8 * n, 1.0, 1.0),
             "healpix": lambda n: healpix(4 * n),
             "icosahedral": lambda n: icosahedral(2 + n.bit_length()),
             "dual": lambda n: icosahedral(2 + n.bit_length(), dual=True)}[name]
    e1, e2 = face_error(build(2)), face_error(build(4))
    assert math.log2(e1 / e2) > 2.6


@pytest.mark.parametrize("name", ["healpix", "dual", "bounded"])
def test_quadratic_matrix_path_matches_formula_and_conserves(name):
    """The CSR product equals eq. (3) evaluated term by term (the gather path's
    formula), the advection matrix equals −div of the flux, and Σ V div = 0."""
    mesh = {"healpix": healpix(4), "dual": icosahedral(2, dual=True),
            "bounded": cartesian(7, 6, 1.0, 1.0, periodic=False)}[name]
    gen = torch.Generator().manual_seed(3)
    q = torch.randn(mesh.n_cells, 2, dtype=torch.float64, generator=gen)
    U = torch.randn(mesh.n_faces, dtype=torch.float64, generator=gen)
    fast = quadratic_flux(mesh, q, U)                   # the cached CSR path
    q_grad = q.clone().requires_grad_(True)
    from meshclosure.fv import advection as adv
    geo = adv._quadratic(mesh)
    i, j, coef = geo.i, geo.j, geo.coef
    diff = q[j] - q[i]
    fit = torch.zeros(mesh.n_cells, coef.shape[1], 2, dtype=torch.float64).index_add(
        0, i, coef[:, :, None] * diff[:, None])
    a, b = mesh.face_cells
    qa = q[a] + (geo.phi[0][:, :, None] * fit[a]).sum(1)
    qb = q[b] + (geo.phi[1][:, :, None] * fit[b]).sum(1)
    ref = U[:, None] * torch.where(U[:, None] >= 0, qa, qb)
    assert torch.allclose(fast, ref, rtol=1e-12, atol=1e-12)
    L = advection_matrix(mesh, U, "quadratic")
    assert torch.allclose(L @ q[:, 0], -divergence(mesh, fast[:, 0]), rtol=1e-10, atol=1e-10)
    assert abs(float((mesh.cell_volume * divergence(mesh, fast[:, 0])).sum())) < 1e-12
    out = quadratic_flux(mesh, q_grad, U)
    out.square().sum().backward()
    assert torch.isfinite(q_grad.grad).all() and q_grad.grad.abs().max() > 0


def test_quadratic_gather_path_matches_matrix_path(monkeypatch):
    """Dtypes/devices without sparse kernels take the gather path: same values."""
    from meshclosure.fv import advection as adv

    mesh = healpix(4)
    gen = torch.Generator().manual_seed(5)
    q = torch.randn(mesh.n_cells, dtype=torch.float64, generator=gen)
    U = torch.randn(mesh.n_faces, dtype=torch.float64, generator=gen)
    fast = quadratic_flux(mesh, q, U)
    monkeypatch.setattr(adv, "_sparse_ok", lambda x: False)
    assert torch.allclose(quadratic_flux(mesh, q, U), fast, rtol=1e-12, atol=1e-12)


def test_matrix_with_empty_rows_does_not_crash():
    """A transport that is zero around the last cells leaves empty matrix rows."""
    from meshclosure.solver import TracerModel

    mesh = cartesian(4, 4)
    q = torch.rand(mesh.n_cells, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for U in (torch.zeros(mesh.n_faces, dtype=torch.float64),
              torch.zeros(mesh.n_faces, dtype=torch.float64).index_fill(0, torch.tensor([0]), 0.1)):
        model = TracerModel(mesh, U)
        first = model.rhs(0.0, {"q": q})["q"]
        for _ in range(2):                     # the second call assembles the matrix
            assert torch.allclose(model.rhs(0.0, {"q": q})["q"], first, atol=1e-15)
