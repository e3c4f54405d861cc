"""Nair & Jablonowski (2008) moving vortices: flow, exact solution and convergence."""
import math

import numpy as np
import pytest
import torch

from meshclosure.errors import ArgumentError
from meshclosure.fv import divergence
from meshclosure.mesh import cubed_sphere, healpix, icosahedral, irregular_sphere
from meshclosure.solver import (moving_vortices, moving_vortices_exact,
                                moving_vortices_streamfunction, moving_vortices_transport)
from meshclosure.solver.flows import DAY, lonlat
from meshclosure.solver.vortices import (ALPHA, _exact_points, _psi_points, _theta_integral,
                                         _velocity_points)

R = 6.37122e6
U0 = 2 * math.pi * R / (12 * DAY)
F64 = torch.float64


def _points(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g, dtype=F64)
    return x / x.norm(dim=1, keepdim=True), g


def _tangent_basis(x, g):
    t1 = torch.cross(x, torch.randn(x.shape, generator=g, dtype=F64), dim=1)
    t1 = t1 / t1.norm(dim=1, keepdim=True)
    return t1, torch.cross(x, t1, dim=1)


def _along(x, direction, s):
    """Points at arc length ``s`` (radians) from unit ``x`` along unit tangent ``direction``."""
    return x * math.cos(s) + direction * math.sin(s)


def test_vortex_integral_matches_gauss_legendre():
    """``∫_0^θ sech²(ρ0 cos s) tanh(ρ0 cos s) ds`` against composite Gauss–Legendre."""
    theta = np.linspace(-math.pi / 2, math.pi / 2, 37)
    nodes, weights = np.polynomial.legendre.leggauss(40)
    ref = []
    for th in theta:
        edges = np.linspace(0.0, th, 9)
        total = 0.0
        for a, b in zip(edges[:-1], edges[1:]):
            s = 0.5 * (b - a) * nodes + 0.5 * (a + b)
            r = 3.0 * np.cos(s)
            total += 0.5 * (b - a) * np.sum(weights * np.tanh(r) / np.cosh(r) ** 2)
        ref.append(total)
    ref = np.array(ref)
    th = torch.tensor(theta, dtype=F64)
    got = _theta_integral(torch.sin(th), 3.0).numpy()
    assert np.abs(got - ref).max() <= 1e-13 * np.abs(ref).max()
    assert np.allclose(got, -got[::-1], rtol=0, atol=1e-15)      # odd in θ'


@pytest.mark.parametrize("alpha", [0.0, ALPHA, 0.7])
@pytest.mark.parametrize("day", [0.0, 2.5, 7.0])
def test_streamfunction_gives_analytic_velocity(alpha, day):
    """``u = x̂ × ∇ψ`` by central differences equals ``(u0/R) k' × x + ω'(θ') c(t) × x``."""
    x, g = _points(300, seed=int(10 * day) + int(10 * alpha))
    t1, t2 = _tangent_basis(x, g)
    t = day * DAY
    eps = 2e-5

    def dpsi(direction):
        plus = _psi_points(R * _along(x, direction, eps), t, alpha, R, U0)
        minus = _psi_points(R * _along(x, direction, -eps), t, alpha, R, U0)
        return (plus - minus) / (2 * eps * R)

    grad = dpsi(t1)[:, None] * t1 + dpsi(t2)[:, None] * t2
    u_fd = torch.cross(x, grad, dim=1)
    u = _velocity_points(R * x, t, alpha, R, U0)
    assert float((u_fd - u).norm(dim=1).max()) < 1e-8 * U0
    assert float((u * x).sum(1).abs().max()) < 1e-12 * U0       # tangent
    assert float(u.norm(dim=1).max()) > 0.9 * U0                # not trivially small


@pytest.mark.parametrize("alpha", [0.0, ALPHA])
def test_exact_solution_solves_the_advection_equation(alpha):
    """``∂q/∂t + u·∇q = 0`` at random points and times, by central differences."""
    x, _ = _points(400, seed=3)
    for day in (0.5, 3.0, 6.0, 11.0):
        t = day * DAY
        u = _velocity_points(R * x, t, alpha, R, U0)
        speed = u.norm(dim=1, keepdim=True)
        d = u / speed
        dt, ds = 1.0, 1e-6
        q_t = (_exact_points(x, t + dt, alpha, R, U0)
               - _exact_points(x, t - dt, alpha, R, U0)) / (2 * dt)
        grad_along = (_exact_points(_along(x, d, ds), t, alpha, R, U0)
                      - _exact_points(_along(x, d, -ds), t, alpha, R, U0)) / (2 * ds * R)
        residual = q_t + speed[:, 0] * grad_along
        assert float(q_t.abs().max()) > 1e-6                       # the field moves
        assert float(residual.abs().max()) < 1e-6 * float(q_t.abs().max())


def test_exact_solution_at_t0_is_the_paper_field():
    """``q = 1 − tanh[(ρ'/γ) sin λ']`` in rotated coordinates about ``(3π/2, 0)``."""
    mesh = icosahedral(3)
    lon, lat = lonlat(mesh.cell_center)
    lon0, lat0 = 1.5 * math.pi, 0.0
    lam = torch.atan2(torch.cos(lat) * torch.sin(lon - lon0),
                      torch.cos(lat) * math.sin(lat0) * torch.cos(lon - lon0)
                      - math.cos(lat0) * torch.sin(lat))
    th = torch.asin(torch.sin(lat) * math.sin(lat0)
                    + torch.cos(lat) * math.cos(lat0) * torch.cos(lon - lon0))
    q_paper = 1 - torch.tanh(3.0 * torch.cos(th) / 5.0 * torch.sin(lam))
    q = moving_vortices_exact(mesh, 0.0)
    assert torch.allclose(q, q_paper, rtol=0, atol=1e-14)
    assert 1 - math.tanh(0.6) < float(q.min()) < 0.5 and 1.5 < float(q.max()) < 1 + math.tanh(0.6)


def test_exact_solution_moves_with_the_centre_and_is_antisymmetric():
    """α = 0: the vortex frame turns about the pole by ``u0 t / R``; ``q(−x) = 2 − q(x)``."""
    mesh = icosahedral(3)
    x = mesh.cell_center / mesh.cell_center.norm(dim=1, keepdim=True)
    antipode = torch.cdist(-x, x).argmin(dim=1)
    assert float((x[antipode] + x).norm(dim=1).max()) < 1e-12
    t = 4.0 * DAY
    q = moving_vortices_exact(mesh, t, alpha=0.0)
    assert torch.allclose(q + q[antipode], torch.full_like(q, 2.0), rtol=0, atol=1e-14)
    # At α = 0 the paper's formula in rotated coordinates about the moving centre holds.
    lon, lat = lonlat(x)
    lonc = 1.5 * math.pi + U0 * t / R
    lam = torch.atan2(torch.cos(lat) * torch.sin(lon - lonc), -torch.sin(lat))
    cos_th = torch.sqrt(1 - (torch.cos(lat) * torch.cos(lon - lonc)) ** 2)
    rho = 3.0 * cos_th
    omega = (U0 / R) * 1.5 * math.sqrt(3) * torch.tanh(rho) / torch.cosh(rho) ** 2 / rho
    q_paper = 1 - torch.tanh(rho / 5.0 * torch.sin(lam - omega * t))
    assert torch.allclose(q, q_paper, rtol=0, atol=1e-12)
    # It differs from the initial field (the vortices turned and moved).
    assert float((q - moving_vortices_exact(mesh, 0.0, alpha=0.0)).abs().max()) > 0.3


@pytest.mark.parametrize("build", [lambda: icosahedral(3), lambda: icosahedral(3, dual=True),
                                   lambda: healpix(8), lambda: cubed_sphere(8),
                                   lambda: irregular_sphere(400, seed=1)],
                         ids=["icosahedral", "dual", "healpix", "cubed", "irregular"])
def test_transports_are_exactly_non_divergent(build):
    mesh = build()
    U = moving_vortices_transport(mesh)
    for day in (0.0, 3.0, 9.5):
        Ut = U(day * DAY)
        scale = float((Ut.abs().max()) / mesh.cell_volume.min())
        assert scale > 0
        assert float(divergence(mesh, Ut).abs().max()) < 1e-13 * scale
        psi = moving_vortices_streamfunction(mesh, day * DAY)
        assert torch.equal(Ut, psi[mesh.face_vertices[0]] - psi[mesh.face_vertices[1]])


def test_transports_approach_the_midpoint_flux():
    """``U_f`` versus ``(u·n_f) A_f`` at face centres: error falls about 4× per level."""
    errs = []
    for level in (3, 4):
        mesh = icosahedral(level)
        t = 2.0 * DAY
        Uf = moving_vortices_transport(mesh)(t)
        u = _velocity_points(mesh.face_center, t, ALPHA, 1.0, 2 * math.pi / (12 * DAY))
        mid = (u * mesh.face_normal).sum(1) * mesh.face_area
        errs.append(float((Uf - mid).abs().max() / mid.abs().max()))
    assert errs[1] < 5e-3 and errs[0] / errs[1] > 3.0            # 0.0118, 0.0035


def test_moving_vortices_rejects_bad_sample_days():
    with pytest.raises(ArgumentError, match="sample_days"):
        moving_vortices(icosahedral(1), days=6.0, sample_days=(6.0, 12.0))


def test_run_is_conservative_and_converging_on_a_small_mesh():
    coarse = moving_vortices(icosahedral(2), days=1.0, sample_days=(0.5, 1.0))
    fine = moving_vortices(icosahedral(3), days=1.0, sample_days=(0.5, 1.0))
    assert set(coarse["errors"]) == {0.5, 1.0}
    mesh = icosahedral(3)
    total0 = float((mesh.cell_volume * moving_vortices_exact(mesh, 0.0)).sum())
    total1 = float((mesh.cell_volume * fine["q"]).sum())
    assert abs(total1 - total0) < 1e-13 * abs(total0)
    assert fine["errors"][1.0]["l2"] < 0.5 * coarse["errors"][1.0]["l2"]
    assert fine["n_steps"] > coarse["n_steps"]


# Must show: second order at 6 days (half a revolution) between the two finest resolutions
# tested, default operators; the smallest such pairs. Quadratic scheme (measured l2 orders
# 16->32 / 32->64: cubed 1.14 / 1.87, HEALPix 1.53 / 2.24). On icosahedral triangles the
# quadratic scheme needs levels 5->6 (1.78 at 4->5, 2.50 at 5->6; level 6 alone takes ~100 s,
# too slow here: tools/results/moving_vortices.md), while the default linear scheme, the more
# accurate one on triangles, reaches 1.88 at 4->5: that pair is tested with it.
CONVERGENCE = {
    "healpix": (lambda n: healpix(n), (32, 64), "quadratic"),
    "cubed": (lambda n: cubed_sphere(n), (32, 64), "quadratic"),
    "icosahedral": (lambda n: icosahedral(n), (4, 5), "linear"),
}


@pytest.mark.slow
@pytest.mark.parametrize("family", list(CONVERGENCE))
def test_second_order_at_six_days(family):
    build, sizes, scheme = CONVERGENCE[family]
    runs = [moving_vortices(build(n), days=6.0, sample_days=(6.0,), scheme=scheme)
            for n in sizes]
    e1, e2 = (r["errors"][6.0]["l2"] for r in runs)
    order = math.log(e1 / e2) / (0.5 * math.log(runs[1]["n_cells"] / runs[0]["n_cells"]))
    assert order >= 1.8, (family, sizes, e1, e2, order)


@pytest.mark.parametrize("days", [-1.0, 0.0, float("nan"), float("inf"), "12"])
def test_bad_run_length_is_refused_by_name(days):
    from meshclosure.errors import ArgumentError

    with pytest.raises(ArgumentError) as info:
        moving_vortices(icosahedral(1), days=days)
    assert info.value.argument == "days"
