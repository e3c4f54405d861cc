"""The Poisson solve on CUDA: equal to the CPU's SuperLU, and no host round trip.

Skipped without CUDA. Each device path (``fft``, ``fft_walls``, ``dense``) is
checked against ``method="splu"`` on the CPU to 1e-10, then run again under
``torch.cuda.set_sync_debug_mode("error")`` (any device→host synchronisation
raises) with scipy's SuperLU patched to raise, forward and backward.
"""
from __future__ import annotations

import pytest
import torch

import meshclosure.fv.poisson as poisson
from meshclosure.fv.poisson import PoissonSolver
from meshclosure.mesh import cartesian, healpix, icosahedral
from meshclosure.solver import BarotropicModel, BoussinesqModel

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

CUDA = torch.device("cuda")

MESHES = {
    "fft": lambda: cartesian(32, 24, 1.3, 1.0),
    "fft_walls": lambda: cartesian(32, 16, 2.0, 1.0, periodic=(True, False)),
    "dense": lambda: healpix(8),
    "dense (icosahedral)": lambda: icosahedral(3),
    "dense (box)": lambda: cartesian(12, 10, 1.0, 1.0, periodic=False),
}


def _no_superlu(*args, **kwargs):
    raise AssertionError("SuperLU was called on the CUDA path")


@pytest.mark.parametrize("case", list(MESHES))
def test_device_path_matches_cpu_without_round_trip(case, monkeypatch):
    mesh = MESHES[case]()
    solver, ref = PoissonSolver(mesh), PoissonSolver(mesh, method="splu")
    assert solver.method_for(CUDA) == case.split()[0]
    zeta = torch.randn(mesh.n_cells, 2, dtype=torch.float64,
                       generator=torch.Generator().manual_seed(0))
    w = torch.randn(mesh.n_cells, 2, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(1))
    z_gpu = zeta.to(CUDA).requires_grad_(True)
    psi = solver(z_gpu)                               # builds the device arrays once
    (g,) = torch.autograd.grad((w.to(CUDA) * psi).sum(), z_gpu)
    torch.testing.assert_close(psi.detach().cpu(), ref(zeta), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(g.cpu(), ref._apply(w, transpose=True), rtol=1e-10, atol=1e-10)

    import scipy.sparse.linalg

    monkeypatch.setattr(poisson._SparseLU, "solve", _no_superlu)
    monkeypatch.setattr(poisson, "_SparseLU", _no_superlu)
    monkeypatch.setattr(scipy.sparse.linalg, "splu", _no_superlu)
    w_gpu = w.to(CUDA)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        z2 = z_gpu.detach().clone().requires_grad_(True)
        out = solver(z2)
        (g2,) = torch.autograd.grad((w_gpu * out).sum(), z2)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert out.device.type == "cuda" and g2.device.type == "cuda"
    torch.testing.assert_close(out.detach(), psi.detach(), rtol=0, atol=0)


def test_float32_on_device():
    mesh = cartesian(16, 8, 2.0, 1.0, periodic=(True, False))
    z = torch.randn(mesh.n_cells, dtype=torch.float32, device=CUDA)
    out = PoissonSolver(mesh)(z)
    assert out.dtype == torch.float32 and out.device.type == "cuda"
    ref = PoissonSolver(mesh, method="splu")(z.cpu().double())
    torch.testing.assert_close(out.cpu().double(), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("make", [
    lambda m: BarotropicModel(m, omega=1.0, nu=1e-3),
    lambda m: BoussinesqModel(m, nu=1e-3, kappa=1e-3),
], ids=["barotropic", "boussinesq"])
def test_models_on_device_match_cpu(make):
    mesh = cartesian(24, 12, 2.0, 1.0, periodic=(True, False))
    gen = torch.Generator().manual_seed(0)
    state = {"zeta": torch.randn(mesh.n_cells, dtype=torch.float64, generator=gen),
             "b": torch.randn(mesh.n_cells, dtype=torch.float64, generator=gen)}
    cpu = make(mesh).rhs(0.0, state)
    gpu = make(mesh.to(CUDA)).to(CUDA).rhs(0.0, {k: v.to(CUDA) for k, v in state.items()})
    for key in cpu:
        torch.testing.assert_close(gpu[key].cpu(), cpu[key], rtol=1e-10, atol=1e-12)
