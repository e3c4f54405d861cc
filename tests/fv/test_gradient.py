"""Cell gradients, face and vertex interpolation: exactness and convergence.

Sphere (R = 1; max over the 24 real harmonics of degree 1..4; relative l2
error of the tangent gradient), measured::

                    coarse    middle    finest    orders
    least squares
      healpix 8/16/32      7.6e-2    2.4e-2    8.3e-3    1.64 1.56
      triangles 3/4/5      9.4e-2    4.7e-2    2.3e-2    1.01 1.00
      dual 3/4/5           5.9e-2    1.6e-2    4.6e-3    1.87 1.82
    Green–Gauss
      healpix              1.8e-1    1.2e-1    8.5e-2    0.55 0.50  (skewed faces)
      triangles            1.1e-1    5.8e-2    3.3e-2    0.90 0.80
      dual                 6.0e-2    1.7e-2    5.8e-3    1.85 1.52
"""
from __future__ import annotations

import math

import pytest
import torch

from conftest import real_harmonics as _harmonics_and_degrees
from meshclosure.fv.gradients import (LeastSquaresGradient, cell_to_vertex, face_gradient_normal,
                                     face_interpolate, gradient)
from meshclosure.mesh import cartesian, healpix, icosahedral

# torch.func (forward-mode exact gradients below) warns about torch.jit internals
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")


def real_harmonics(x: torch.Tensor) -> torch.Tensor:
    return _harmonics_and_degrees(x)[0]


def harmonics_and_gradients(mesh) -> tuple[torch.Tensor, torch.Tensor]:
    """Values ``(n_cells, n_lm)`` and exact tangent gradients ``(n_cells, 3, n_lm)``."""
    xh = mesh.cell_center / mesh.cell_center.norm(dim=1, keepdim=True)
    grads = torch.stack([torch.func.jvp(real_harmonics, (xh,), (torch.eye(3, dtype=xh.dtype)[k]
                                                             .expand_as(xh),))[1]
                         for k in range(3)], 1)                    # (n, 3, n_lm)
    grads = grads - xh[:, :, None] * (xh[:, :, None] * grads).sum(1, keepdim=True)
    return real_harmonics(xh), grads / mesh.radius


SPHERES = {
    "healpix": [lambda: healpix(8), lambda: healpix(16), lambda: healpix(32)],
    "triangles": [lambda: icosahedral(3), lambda: icosahedral(4), lambda: icosahedral(5)],
    "dual": [lambda: icosahedral(3, dual=True), lambda: icosahedral(4, dual=True),
             lambda: icosahedral(5, dual=True)],
}
# (finest relative l2, min order on the finest pair), measured values with margin
THRESHOLDS = {
    ("least_squares", "healpix"): (1.1e-2, 1.4), ("least_squares", "triangles"): (3e-2, 0.9),
    ("least_squares", "dual"): (6e-3, 1.6), ("green_gauss", "healpix"): (0.1, 0.4),
    ("green_gauss", "triangles"): (4e-2, 0.7), ("green_gauss", "dual"): (8e-3, 1.3),
}


@pytest.fixture(scope="module")
def sphere_meshes() -> dict:
    """Per family: (mesh, harmonics, exact gradients) at three resolutions."""
    out = {}
    for family, builds in SPHERES.items():
        meshes = [build() for build in builds]
        out[family] = [(m,) + harmonics_and_gradients(m) for m in meshes]
    return out


@pytest.mark.parametrize("method", ["least_squares", "green_gauss"])
@pytest.mark.parametrize("family", list(SPHERES))
def test_sphere_gradient_converges(sphere_meshes, family, method):
    errors = []
    for mesh, y, exact in sphere_meshes[family]:
        g = gradient(mesh, y, method=method)
        # tangent: no radial component
        xhat = mesh.cell_center / mesh.cell_center.norm(dim=1, keepdim=True)
        radial = (xhat[:, :, None] * g).sum(1)
        assert float(radial.abs().max()) < 1e-12 * float(g.abs().max())
        w = mesh.cell_volume[:, None]
        err = ((w * ((g - exact) ** 2).sum(1)).sum(0) / (w * (exact**2).sum(1)).sum(0)).sqrt()
        errors.append(float(err.max()))
    finest, order = THRESHOLDS[(method, family)]
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[-1] < finest and math.log2(errors[1] / errors[2]) > order, errors


def test_linear_exact_bounded_plane():
    mesh = cartesian(7, 5, 1.4, 1.0, periodic=False)
    x, y = mesh.cell_center.T
    q = torch.stack([3 * x - 2 * y + 1, -x + 0.5 * y], 1)             # two fields at once
    exact = torch.tensor([[3.0, -1.0], [-2.0, 0.5]], dtype=q.dtype).expand(mesh.n_cells, 2, 2)
    # least squares: exact everywhere, with or without Dirichlet data
    torch.testing.assert_close(gradient(mesh, q), exact)
    xb, yb = mesh.boundary_face_center.T
    bv = torch.stack([3 * xb - 2 * yb + 1, -xb + 0.5 * yb], 1)
    torch.testing.assert_close(gradient(mesh, q, boundary_value=bv), exact)
    # Green–Gauss: exact with Dirichlet data; zero-gradient default: exact in the interior
    torch.testing.assert_close(gradient(mesh, q, "green_gauss", boundary_value=bv), exact)
    interior = torch.ones(mesh.n_cells, dtype=torch.bool)
    interior[mesh.boundary_face_cell] = False
    torch.testing.assert_close(gradient(mesh, q, "green_gauss")[interior], exact[interior])


def test_linear_exact_irregular_plane():
    """Least squares is exact for linear fields on a jittered unstructured mesh."""
    from conftest import MESH_CASES

    mesh = MESH_CASES["meshio-hole-8"].mesh()
    x, y = mesh.cell_center.T
    g = gradient(mesh, 0.7 * x - 1.3 * y)
    ok = (g - torch.tensor([0.7, -1.3], dtype=g.dtype)).norm(dim=1) < 1e-10
    # all cells but corner triangles with a single neighbour (minimum-norm fit)
    assert int((~ok).sum()) <= 4


@pytest.mark.parametrize("method, stencil", [("least_squares", "face"),
                                             ("least_squares", "vertex"),
                                             ("green_gauss", None)])
def test_periodic_second_order(method, stencil):
    errors = []
    for n in (16, 32, 64):
        mesh = cartesian(n, n, 1.0, 1.0)
        x, y = mesh.cell_center.T
        q = torch.sin(2 * math.pi * x) * torch.cos(2 * math.pi * y)
        exact = 2 * math.pi * torch.stack([torch.cos(2 * math.pi * x) * torch.cos(2 * math.pi * y),
                                           -torch.sin(2 * math.pi * x) * torch.sin(2 * math.pi * y)], 1)
        g = (gradient(mesh, q, method=method) if stencil is None
             else LeastSquaresGradient(mesh, stencil=stencil)(q))
        errors.append(float((g - exact).norm() / exact.norm()))
    orders = [math.log2(a / b) for a, b in zip(errors, errors[1:])]
    assert min(orders) > 1.95, (errors, orders)
    if method == "green_gauss":
        assert errors[-1] < 2.5e-3, errors
        return
    # one Fourier mode: the error is exactly the stencil's symbol. Face neighbours: the
    # central difference, sin(kh)/(kh). Vertex neighbours (weights 1/d²: 1 across faces,
    # 1/2 across corners): the central difference averaged with its neighbours across
    # the faces, sin(kh)/(kh) (1 + cos kh)/2 (2.5 times the error, still second order).
    kh = 2 * math.pi / 64
    symbol = math.sin(kh) / kh * (1.0 if stencil == "face" else (1 + math.cos(kh)) / 2)
    assert errors[-1] == pytest.approx(1 - symbol, rel=1e-9)


def test_face_interpolation_and_normal_derivative():
    mesh = cartesian(8, 8, 1.0, 1.0, periodic=False)
    x, y = mesh.cell_center.T
    q = 2 * x + 3 * y
    qf = face_interpolate(mesh, q)
    torch.testing.assert_close(qf, 2 * mesh.face_center[:, 0] + 3 * mesh.face_center[:, 1])
    gn = face_gradient_normal(mesh, q)
    torch.testing.assert_close(gn, mesh.face_normal @ torch.tensor([2.0, 3.0], dtype=q.dtype))
    # on the sphere: first order at HEALPix face centres (they are off the
    # segment between the pixel centres)
    errors = []
    for nside in (8, 16, 32):
        m = healpix(nside)
        f = lambda p: (p[:, 0] * p[:, 2] + p[:, 1] ** 2)   # noqa: E731
        errors.append(float((face_interpolate(m, f(m.cell_center)) - f(m.face_center)).abs().max()))
    assert errors[2] < errors[1] < errors[0] and math.log2(errors[1] / errors[2]) > 0.9, errors
    assert errors[2] < 2e-2, errors


def test_cell_to_vertex():
    mesh = cartesian(8, 6, 1.6, 1.2)
    q = torch.randn(mesh.n_cells, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    v = cell_to_vertex(mesh, q)
    # uniform grid: the mean of the four cells around each vertex; preserves the mean
    grid = q.reshape(6, 8, 3)
    mean4 = (grid + grid.roll(1, 0) + grid.roll(1, 1) + grid.roll((1, 1), (0, 1))) / 4
    torch.testing.assert_close(v, mean4.reshape(-1, 3))
    # first-order convergence on the icosahedral triangles (max error)
    errors = []
    for level in (3, 4, 5):
        m = icosahedral(level)
        f = lambda p: p[:, 0] * p[:, 1] + p[:, 2]   # noqa: E731
        errors.append(float((cell_to_vertex(m, f(m.cell_center)) - f(m.vertex_pos)).abs().max()))
    assert errors[2] < errors[1] < errors[0] and errors[2] < 6e-3, errors
    assert math.log2(errors[1] / errors[2]) > 0.9, errors


def test_dtypes_and_autograd():
    mesh = healpix(2)
    q = torch.randn(mesh.n_cells, dtype=torch.float64, requires_grad=True)
    for method in ("least_squares", "green_gauss"):
        assert torch.autograd.gradcheck(lambda v: gradient(mesh, v, method=method), (q,))
    g64 = gradient(mesh, q.detach())
    g32 = gradient(mesh.float(), q.detach().float())
    assert g32.dtype == torch.float32
    assert float((g32.double() - g64).abs().max()) < 1e-5 * float(g64.abs().max())


def test_least_squares_object_reusable():
    mesh = icosahedral(2, dual=True)
    grad = LeastSquaresGradient(mesh)
    q = mesh.cell_center[:, 2]
    torch.testing.assert_close(grad(q), gradient(mesh, q))
    with pytest.raises(ValueError, match="boundary_value must have n_boundary_faces = 0"):
        grad(q, boundary_value=torch.zeros(3))
