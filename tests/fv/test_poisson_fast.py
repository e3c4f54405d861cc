"""The Poisson solver's fast paths: the same map as SuperLU, chosen only where valid.

``PoissonSolver(method="splu")`` is the reference (SuperLU of the contract
matrix ``laplacian_matrix``); the FFT paths, the tridiagonal (Thomas) variant of
the walled path and the dense path must equal it to ~1e-12 relative, forward
and transposed (the backward pass), and the Fourier paths must be refused on
meshes whose matrix lacks their structure.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

import meshclosure.fv.poisson as poisson
from meshclosure.errors import ArgumentError
from meshclosure.fv.poisson import PoissonSolver
from meshclosure.mesh import cartesian, healpix, icosahedral
from meshclosure.mesh import from_polygons


def _grid(nx, ny, lx, ly, periodic, shear=lambda j: 0.0, jitter=0.0, seed=0):
    """``cartesian``'s grid (same cell order and info), rows shifted by ``shear(j)``
    along x and interior vertices moved by ``jitter`` cells (for refusals)."""
    px, py = periodic
    dx, dy = lx / nx, ly / ny
    vx, vy = nx if px else nx + 1, ny if py else ny + 1
    jj, ii = np.meshgrid(np.arange(vy), np.arange(vx), indexing="ij")
    x = ii * dx + np.vectorize(shear)(jj) * dx
    y = jj * dy + 0.0
    if jitter:
        rng = np.random.default_rng(seed)
        inner = (jj > 0) & (jj < vy - 1) & (ii > 0) & (ii < vx - 1)
        x = x + inner * jitter * dx * rng.uniform(-1, 1, x.shape)
        y = y + inner * jitter * dy * rng.uniform(-1, 1, y.shape)
    j, i = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    i1, j1 = (i + 1) % vx, (j + 1) % vy
    cells = np.stack([j * vx + i, j * vx + i1, j1 * vx + i1, j1 * vx + i], -1).reshape(-1, 4)
    info = {"family": "cartesian", "nx": nx, "ny": ny, "lx": lx, "ly": ly,
            "periodic": f"{px},{py}", "domain_area": lx * ly}
    period = (lx if px else 0.0, ly if py else 0.0)
    return from_polygons(np.stack([x, y], -1).reshape(-1, 2), cells, period=period, info=info)


STRUCTURED = {
    "periodic 12x5": (lambda: cartesian(12, 5, 3.0, 1.0), "fft"),
    "periodic 16x24": (lambda: cartesian(16, 24, 1.0, 2.0), "fft"),
    "walls in y (slice)": (lambda: cartesian(16, 8, 2.0, 1.0, periodic=(True, False)),
                           "fft_walls"),
    "walls in x": (lambda: cartesian(9, 14, 1.0, 1.3, periodic=(False, True)), "fft_walls"),
    # parallelograms: non-orthogonal (the correction is active) yet the same along x
    "sheared rows, walls in y": (lambda: _grid(12, 6, 2.0, 1.0, (True, False),
                                               shear=lambda j: 0.3 * math.sin(j)), "fft_walls"),
}


def _relative(a, b):
    return float((a - b).abs().max() / b.abs().max())


def _rhs(mesh, m=3, dtype=torch.float64):
    return torch.randn(mesh.n_cells, m, dtype=dtype, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("case", list(STRUCTURED))
def test_fourier_paths_equal_superlu(case):
    build, kind = STRUCTURED[case]
    mesh = build()
    fast, ref = PoissonSolver(mesh), PoissonSolver(mesh, method="splu")
    assert fast.method == kind
    zeta = _rhs(mesh)
    psi = fast(zeta)
    assert _relative(psi, ref(zeta)) < 1e-12
    assert _relative(fast._apply(zeta, True), ref._apply(zeta, True)) < 1e-12
    # residual against the contract matrix: L ψ = ζ − ⟨ζ⟩ (closed) or ζ (walls)
    target = zeta - zeta.mean(0) if fast.closed else zeta
    resid = fast.matrix @ psi.numpy() - target.numpy()
    assert np.abs(resid).max() < 1e-10 * np.abs(target.numpy()).max()
    if fast.closed:
        assert float(psi.mean(0).abs().max()) < 1e-13 * float(psi.abs().max())


@pytest.mark.parametrize("case", ["walls in y (slice)", "walls in x"])
def test_tridiagonal_walled_path_equals_superlu(case, monkeypatch):
    """Large slices factorise tridiagonal T_k (Thomas) instead of dense inverses."""
    monkeypatch.setattr(poisson, "_DENSE_TRIDIAGONAL", 0)
    mesh = STRUCTURED[case][0]()
    fast, ref = PoissonSolver(mesh), PoissonSolver(mesh, method="splu")
    assert fast.method == "fft_walls" and fast._fourier.thomas
    zeta = _rhs(mesh)
    assert _relative(fast(zeta), ref(zeta)) < 1e-12
    assert _relative(fast._apply(zeta, True), ref._apply(zeta, True)) < 1e-12


def _one_face_longer(mesh):
    area = mesh.face_area.clone()
    area[7] *= 1.01
    return dataclasses.replace(mesh, face_area=area)


REFUSED = {
    "jittered vertices": lambda: _grid(12, 8, 1.5, 1.0, (True, True), jitter=0.1),
    "jittered slice": lambda: _grid(12, 8, 1.5, 1.0, (True, False), jitter=0.1),
    "one face changed (uniform volumes)": lambda: _one_face_longer(cartesian(12, 8, 1.5, 1.0)),
    "one face changed, slice": lambda: _one_face_longer(
        cartesian(12, 8, 1.5, 1.0, periodic=(True, False))),
    "permuted cells": lambda: cartesian(6, 5, 1.2, 1.0).permute_cells(torch.randperm(
        30, generator=torch.Generator().manual_seed(0))),
    "bounded box": lambda: cartesian(6, 5, 1.2, 1.0, periodic=False),
    "sphere": lambda: healpix(2),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_structure_check_refuses_and_falls_back(case):
    mesh = REFUSED[case]()
    solver = PoissonSolver(mesh)
    assert solver.method == "splu" and solver._fourier is None
    for method in ("fft", "fft_walls"):
        with pytest.raises(ArgumentError, match="needs a uniform periodic cartesian grid"):
            PoissonSolver(mesh, method=method)
    # the fallback still inverts the contract matrix
    zeta = _rhs(mesh, 1)[:, 0]
    target = zeta - (mesh.cell_volume * zeta).sum() / mesh.cell_volume.sum() if solver.closed \
        else zeta
    resid = solver.matrix @ solver(zeta).numpy() - target.numpy()
    assert np.abs(resid).max() < 1e-10 * float(target.abs().max())


def test_forcing_the_other_fourier_kind_raises():
    with pytest.raises(ArgumentError, match="this mesh: fft_walls"):
        PoissonSolver(cartesian(8, 4, 2.0, 1.0, periodic=(True, False)), method="fft")
    with pytest.raises(ArgumentError, match="method='lu'"):
        PoissonSolver(healpix(1), method="lu")
    with pytest.raises(ArgumentError, match="dense_limit=10"):
        PoissonSolver(healpix(1), method="dense", dense_limit=10)


def test_path_per_device():
    """CPU tensors take the chosen path; CUDA tensors the dense inverse when small enough."""
    sphere = PoissonSolver(healpix(2))
    assert (sphere.method_for("cpu"), sphere.method_for("cuda")) == ("splu", "dense")
    big = PoissonSolver(healpix(2), dense_limit=10)
    assert big.method_for("cuda") == "splu"
    plane = PoissonSolver(cartesian(8, 4, 2.0, 1.0))
    assert (plane.method_for("cpu"), plane.method_for("cuda")) == ("fft", "fft")
    forced = PoissonSolver(healpix(2), method="splu")
    assert forced.method_for("cuda") == "splu"


@pytest.mark.parametrize("build", [lambda: healpix(4), lambda: icosahedral(2),
                                   lambda: cartesian(10, 6, 1.0, 1.0, periodic=False),
                                   lambda: cartesian(10, 6, 1.0, 1.0)],
                         ids=["healpix", "icosahedral", "box", "periodic"])
def test_dense_path_equals_superlu(build):
    """The device path's matrix G, built here on the CPU, is the same linear map."""
    mesh = build()
    dense, ref = PoissonSolver(mesh, method="dense"), PoissonSolver(mesh, method="splu")
    zeta = _rhs(mesh)
    assert _relative(dense(zeta), ref(zeta)) < 1e-11
    assert _relative(dense._apply(zeta, True), ref._apply(zeta, True)) < 1e-11


def test_nested_dissection_superlu_equals_scipy_default():
    """The reordered, unpivoted factorisation solves the same system as SuperLU's defaults."""
    from scipy.sparse.linalg import splu

    mesh = icosahedral(3)
    solver = PoissonSolver(mesh)
    S = solver._scaled()
    order = solver._lu().order
    assert sorted(order.tolist()) == list(range(S.shape[0]))
    b = np.random.default_rng(0).standard_normal((S.shape[0], 2))
    ref = splu(S).solve(b)
    for trans in ("N", "T"):
        ref = splu(S).solve(b, trans=trans)
        got = solver._lu().solve(b, trans)
        assert np.abs(got - ref).max() < 1e-12 * np.abs(ref).max()


@pytest.mark.parametrize("case", ["periodic 12x5", "walls in y (slice)"])
def test_gradients_equal_superlu(case):
    mesh = STRUCTURED[case][0]()
    fast, ref = PoissonSolver(mesh), PoissonSolver(mesh, method="splu")
    w = _rhs(mesh, 1)[:, 0]
    grads = []
    for solver in (fast, ref):
        zeta = _rhs(mesh, 1)[:, 0].clone().requires_grad_(True)
        (g,) = torch.autograd.grad((w * solver(zeta) ** 2).sum(), zeta, create_graph=True)
        (gg,) = torch.autograd.grad((g * w).sum(), zeta)       # second order
        grads.append((g.detach(), gg))
    assert _relative(grads[0][0], grads[1][0]) < 1e-12
    assert _relative(grads[0][1], grads[1][1]) < 1e-12


def test_gradcheck_fourier_paths():
    for mesh in (cartesian(5, 4, 1.0, 1.0), cartesian(5, 4, 1.0, 1.0, periodic=(True, False))):
        solver = PoissonSolver(mesh)
        zeta = _rhs(mesh, 2).requires_grad_(True)
        assert torch.autograd.gradcheck(solver, (zeta,))


def test_dtype_and_device_in_and_out():
    mesh = cartesian(8, 6, 1.0, 1.0, periodic=(True, False))
    solver = PoissonSolver(mesh)
    z32 = _rhs(mesh, 2, torch.float32).reshape(mesh.n_cells, 1, 2)
    out = solver(z32)
    assert out.dtype == torch.float32 and out.device == torch.device("cpu")
    assert out.shape == z32.shape
    ref = PoissonSolver(mesh, method="splu")(z32.double())
    assert _relative(out.double(), ref) < 1e-6


def test_sparse_lu_falls_back_to_pivoting():
    """A matrix that needs row exchanges (a tiny pivot: the unpivoted LU is inaccurate,
    its residual check fails) is factorised with SuperLU's partial pivoting."""
    import scipy.sparse as sp

    S = sp.csc_matrix(np.array([[1e-20, 2.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 3.0]]))
    lu = poisson._SparseLU(S, np.eye(3))
    assert lu.pivoting
    b = np.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(S @ lu.solve(b, "N"), b, rtol=0, atol=1e-14)
    np.testing.assert_allclose(S.T @ lu.solve(b, "T"), b, rtol=0, atol=1e-14)
    assert not poisson._SparseLU(PoissonSolver(healpix(2))._scaled(),
                                 healpix(2).cell_center.numpy()[1:]).pivoting


def test_dense_limit_default_without_cuda():
    solver = PoissonSolver(healpix(2))
    assert solver._dense_cells("cpu") == 20000
    assert PoissonSolver(healpix(2), dense_limit=5)._dense_cells("cuda") == 5
    with pytest.raises(ArgumentError, match="dense_limit=0"):
        PoissonSolver(healpix(2), dense_limit=0)
