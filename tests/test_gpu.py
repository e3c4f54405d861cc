"""The CUDA path, where a GPU is present: the same results as on the CPU.

Skipped on machines without CUDA (the CPU suite covers the same code). On a
GPU runner these check that every operator, solver and closure runs on the
device and agrees with its CPU result in float64.
"""
from __future__ import annotations

import math

import pytest
import torch

from meshclosure.fv import divergence, gradient, laplacian
from meshclosure.mesh import cartesian, healpix, icosahedral
from meshclosure.nn import build_model, list_models, model_families
from meshclosure.solver import BarotropicModel, TracerModel, integrate
from meshclosure.solver.flows import cosine_bell, solid_body_transport
from meshclosure.testing import assert_conservative, small_meshes

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

CUDA = torch.device("cuda")


@pytest.mark.parametrize("mesh_fn", [lambda: healpix(4), lambda: icosahedral(2, dual=True),
                                     lambda: cartesian(8, 6, 1.0, 1.0, periodic=False)])
def test_operators_match_cpu(mesh_fn):
    mesh = mesh_fn()
    gpu = mesh.to(CUDA)
    q = torch.randn(mesh.n_cells, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    flux = torch.randn(mesh.n_faces, dtype=torch.float64)
    for op, args in ((divergence, (flux,)), (gradient, (q,)), (laplacian, (q,))):
        torch.testing.assert_close(op(gpu, *(a.to(CUDA) for a in args)).cpu(), op(mesh, *args),
                                   rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("scheme", ["linear", "limited", "quadratic"])
def test_tracer_steps_match_cpu_and_conserve(scheme):
    mesh = icosahedral(3)
    U = solid_body_transport(mesh, math.pi / 4)
    q0 = cosine_bell(mesh.cell_center, float(mesh.radius))
    cpu = TracerModel(mesh, U, scheme=scheme)
    gpu = TracerModel(mesh.to(CUDA), U.to(CUDA), scheme=scheme)
    dt = cpu.cfl_dt()
    a = integrate(cpu, {"q": q0}, dt, 20, progress=False).state["q"]
    b = integrate(gpu, {"q": q0.to(CUDA)}, dt, 20, progress=False).state["q"]
    torch.testing.assert_close(b.cpu(), a, rtol=1e-9, atol=1e-9 * float(q0.abs().max()))
    V = mesh.cell_volume.to(CUDA)
    assert abs(float((V * b).sum() / (V * q0.to(CUDA)).sum()) - 1) < 1e-13


def test_barotropic_rhs_matches_cpu():
    mesh = healpix(4)
    zeta = torch.randn(mesh.n_cells, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    cpu = BarotropicModel(mesh, omega=1.0, nu=1e-3).rhs(0.0, {"zeta": zeta})["zeta"]
    gpu = BarotropicModel(mesh.to(CUDA), omega=1.0, nu=1e-3).rhs(
        0.0, {"zeta": zeta.to(CUDA)})["zeta"]
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-9, atol=1e-9)


CASES = [(name, mesh) for name in list_models() if not name.startswith("_")
         for mesh, m in small_meshes().items() if m.family in model_families(name)]


@pytest.mark.parametrize("name, mesh_name", CASES, ids=[f"{a}-{b}" for a, b in CASES])
def test_every_model_forward_backward_on_gpu(name, mesh_name):
    mesh = small_meshes()[mesh_name]
    config = {"e3nn": dict(n_scalars=2)}.get(name, {})
    torch.manual_seed(0)
    try:
        model = build_model(name, mesh, in_features=2, n_vars=1, **config).double()
    except ValueError:                        # a clear refusal (e.g. CNN on a channel)
        pytest.skip(f"{name} refuses {mesh_name}")
    x = torch.randn(mesh.n_cells, 2, dtype=torch.float64)
    ref = model(mesh, x)
    ref = ref[0] if isinstance(ref, tuple) else ref
    model = model.to(CUDA)
    gmesh = mesh.to(CUDA)
    out = model(gmesh, x.to(CUDA))
    out = out[0] if isinstance(out, tuple) else out
    torch.testing.assert_close(out.detach().cpu(), ref.detach(), rtol=1e-8, atol=1e-10)
    assert_conservative(out.detach(), gmesh)
    out.square().sum().backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
