"""Recurrent (GRU) closure and its solver hook (issue 5, item 2f) on every mesh family.

Checks: exact antisymmetry and conservation (1e-12 float64, 1e-5 float32) with
zero and non-zero memory, permutation equivariance (inputs and memory
renumbered together), translation invariance on planes, that the memory
changes the output, that the hook advances the memory exactly once per solver
step (SSP-RK3, RK4, Euler) and equals rolling ``step`` over the trajectory,
conservation of the tracer total over 50 coupled steps, gradients through
unrolled steps, truncation by ``detach_state``, and the hook's misuse errors.
Batches: one memory per sample, so a batched unroll equals B separate ones.
"""
from __future__ import annotations

import math

import pytest
import torch

from meshclosure.fv import transport_from_streamfunction
from meshclosure.mesh import cartesian, from_meshio
from meshclosure.nn import FluxPrediction, build_model, list_models
from meshclosure.nn.recurrent import STAGES, RecurrentClosure, RecurrentHook
from meshclosure.solver import TracerModel, integrate
from meshclosure.testing import (assert_antisymmetric, assert_conservative, assert_equivariant,
                                 small_meshes)

from _value_checks import check_values

IN, MEM = 2, 6


def _meshes():
    from conftest import square_with_hole_meshio

    meshes = small_meshes()
    meshes["column-8"] = cartesian(8, None)
    meshes["meshio-hole-4"] = from_meshio(square_with_hole_meshio(4))
    return meshes


MESHES = _meshes()


def _randn(rows, cols, seed=1, dtype=torch.float64):
    return torch.randn(rows, cols, dtype=dtype, generator=torch.Generator().manual_seed(seed))


def _model(mesh, seed=0, in_features=IN, **kw):
    torch.manual_seed(seed)
    kw = {"in_features": in_features, "n_vars": 2, "hidden": 12, "memory": MEM,
          "n_blocks": 1, "n_layers": 1, **kw}
    return build_model("gru", mesh, **kw).double()


class _WithMemory:
    """``model(mesh, [x, h])``: inputs and memory in one tensor, so the generic checks
    renumber both together."""

    def __init__(self, model):
        self.model = model

    def directed_fluxes(self, mesh, xh):
        return self.model.directed_fluxes(mesh, xh[:, :IN], xh[:, IN:])

    def __call__(self, mesh, xh):
        return self.model(mesh, xh[:, :IN], xh[:, IN:])


@pytest.mark.parametrize("head", ["pairwise", "potential"])
@pytest.mark.parametrize("name", list(MESHES))
def test_antisymmetric_conservative_permutation(name, head):
    mesh = MESHES[name]
    model = _model(mesh, head=head)
    x, h = _randn(mesh.n_cells, IN), _randn(mesh.n_cells, MEM, seed=2)
    assert isinstance(model, RecurrentClosure)
    assert_antisymmetric(model, mesh, x)                     # stateless (zero memory)
    assert_conservative(model, mesh, x, tol=1e-12)
    assert_equivariant(model, mesh, x, transform="permutation", tol=1e-12)
    with_h, xh = _WithMemory(model), torch.cat([x, h], 1)
    assert_antisymmetric(with_h, mesh, xh)
    assert_conservative(with_h, mesh, xh, tol=1e-12)
    assert_equivariant(with_h, mesh, xh, transform="permutation", tol=1e-12)
    assert float(model(mesh, x, h).detach().abs().max()) > 1e-8


@pytest.mark.parametrize("name", ["healpix-2", "coarsened"])
def test_heteroscedastic(name):
    mesh = MESHES[name]
    model = _model(mesh, heteroscedastic=True)
    xh = _randn(mesh.n_cells, IN + MEM)
    assert_antisymmetric(_WithMemory(model), mesh, xh)        # log_var symmetric exactly
    (mean, log_var), h_new = model.step(mesh, xh[:, :IN], xh[:, IN:])
    assert log_var.shape == mean.shape == (mesh.n_faces, 2) and h_new.shape == (mesh.n_cells, MEM)
    assert_equivariant(_WithMemory(model), mesh, xh, transform="permutation")
    # with memory: seeded, batch = samples, input-dependent log_var, the NLL's gradient
    # reaches every weight (the memory weights too)
    check_values(lambda seed: _model(mesh, seed=seed, heteroscedastic=True), mesh, xh,
                 call=lambda m, mesh, xh: m.step(mesh, xh[..., :IN], xh[..., IN:])[0])
    # the new memory is a function of the inputs and the old memory, not a copy of either
    h_new = h_new.detach()
    assert not torch.equal(h_new, xh[:, IN:]) and float((h_new - xh[:, IN:]).abs().max()) > 1e-6


@pytest.mark.parametrize("name", ["cartesian-8x8", "cartesian-channel-6x4"])
def test_translation_invariant_on_plane(name):
    mesh = MESHES[name]
    model, xh = _WithMemory(_model(mesh)), _randn(mesh.n_cells, IN + MEM)
    for seed in range(3):
        assert_equivariant(model, mesh, xh, transform="translation", tol=1e-10, seed=seed)


def test_float32_conservation_and_permutation():
    mesh = MESHES["icosahedral-2"]
    torch.manual_seed(0)
    model = build_model("gru", mesh, in_features=IN, hidden=12, memory=MEM)
    xh = _randn(mesh.n_cells, IN + MEM, dtype=torch.float32)
    phi = _WithMemory(model)(mesh, xh)
    assert phi.dtype == torch.float32
    assert_conservative(phi.detach(), mesh, tol=1e-5)
    assert_antisymmetric(_WithMemory(model), mesh, xh, tol=1e-5)
    assert_equivariant(_WithMemory(model), mesh, xh, transform="permutation", tol=1e-5)


@pytest.mark.parametrize("name", list(MESHES))
def test_forward_backward_finite_gradients(name):
    mesh = MESHES[name]
    model = _model(mesh, heteroscedastic=True)
    x = _randn(mesh.n_cells, IN).requires_grad_(True)
    h = _randn(mesh.n_cells, MEM, seed=2).requires_grad_(True)
    (mean, log_var), h_new = model.step(mesh, x, h)
    ((mean ** 2).mean() + log_var.mean() + (h_new ** 2).mean()).backward()
    params = dict(model.named_parameters())
    bad = [k for k, p in params.items() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not bad, f"missing or non-finite gradient for {bad}"
    # the output bias of g cancels in ½ (g_ab − g_ba): its gradient is zero, all others are not
    cancels = f"head.g.{len(model.head.g) - 1}.bias"
    assert float(params.pop(cancels).grad.abs().max()) < 1e-12
    zero = [k for k, p in params.items() if float(p.grad.abs().sum()) == 0]
    assert not zero, f"zero gradient for {zero}"
    for t in (x, h):
        assert torch.isfinite(t.grad).all() and float(t.grad.abs().sum()) > 0


def test_memory_changes_the_output():
    """Two histories ending in the same state give different fluxes; equal histories equal."""
    mesh = MESHES["healpix-2"]
    model = _model(mesh)
    xa, xb, xc = (_randn(mesh.n_cells, IN, seed=s) for s in (1, 2, 3))
    _, ha = model.step(mesh, xa)
    _, hb = model.step(mesh, xb)
    _, ha2 = model.step(mesh, xa)
    with torch.no_grad():
        phi_ac, _ = model.step(mesh, xc, ha)
        phi_bc, _ = model.step(mesh, xc, hb)
        phi_ac2, _ = model.step(mesh, xc, ha2)
        phi_c0 = model(mesh, xc)
    assert torch.equal(phi_ac, phi_ac2)
    scale = float(phi_ac.abs().max())
    assert float((phi_ac - phi_bc).abs().max()) > 1e-3 * scale > 0
    # the zero-memory forward differs from the with-memory one as well
    assert float((phi_c0 - phi_ac).abs().max()) > 1e-3 * scale


def _tracer(mesh, hook, kappa=0.0):
    v = mesh.vertex_pos
    psi = 0.2 * torch.sin(2 * math.pi * v[:, 0]) * torch.cos(2 * math.pi * v[:, 1])
    return TracerModel(mesh, transport_from_streamfunction(mesh, psi), kappa=kappa,
                       scheme="linear", closure=hook)


@pytest.mark.parametrize("stepper", ["ssprk3", "rk4", "euler"])
def test_hook_advances_memory_once_per_step(stepper):
    mesh = MESHES["cartesian-8x8"]
    model = _model(mesh, in_features=1, n_vars=1)
    hook = model.as_closure(0.01, var="q", stages=stepper)
    assert isinstance(hook, RecurrentHook) and hook.stages == STAGES[stepper]
    calls = []
    original = model.step
    model.step = lambda *a, **k: (calls.append(1), original(*a, **k))[1]
    q0 = _randn(mesh.n_cells, 1)[:, 0]
    n_steps = 4
    out = integrate(_tracer(mesh, hook), {"q": q0}, 0.01, n_steps, stepper=stepper,
                    snapshot_every=1, progress=False)
    del model.step
    assert hook.n_updates == n_steps
    assert hook.n_calls == len(calls) == STAGES[stepper] * n_steps
    # the memory saw exactly the trajectory states y0 .. y_{N-1}, no Runge–Kutta stage
    h = None
    for y in out.snapshots["q"][:n_steps]:
        _, h = model.step(mesh, y[:, None], h)
    torch.testing.assert_close(hook.h, h, rtol=0, atol=1e-14)
    # one update more or fewer would be seen: the comparison is sharp
    with torch.no_grad():
        _, h_extra = model.step(mesh, out.snapshots["q"][n_steps - 1][:, None], h)
    assert float((hook.h.detach() - h_extra).abs().max()) > 1e-6


def test_tracer_total_conserved_with_hook():
    mesh = MESHES["icosahedral-2"]
    model = _model(mesh, in_features=1, n_vars=1, hidden=8)
    hook = model.as_closure(0.02, stages="ssprk3")
    q0 = 1.0 + 0.5 * mesh.cell_center[:, 2]
    solver = _tracer(mesh, hook, kappa=1e-3)
    with torch.no_grad():
        out = integrate(solver, {"q": q0}, 0.02, 50, progress=False)
        plain = integrate(_tracer(mesh, None, kappa=1e-3), {"q": q0}, 0.02, 50, progress=False)
    assert hook.n_updates == 50
    total0, total = solver.total({"q": q0}), solver.total(out.state)
    assert abs(float(total - total0)) <= 1e-12 * abs(float(total0))
    # the closure did act on the solution
    assert float((out.state["q"] - plain.state["q"]).abs().max()) > 1e-6


def test_gradients_through_unrolled_steps_and_detach():
    mesh = MESHES["healpix-2"]
    model = _model(mesh, in_features=1, n_vars=1)
    hook = model.as_closure(0.01, stages="ssprk3")
    solver = _tracer(mesh, hook)
    q0 = _randn(mesh.n_cells, 1)[:, 0].requires_grad_(True)
    out = integrate(solver, {"q": q0}, 0.01, 3, progress=False)
    (out.state["q"] ** 2).sum().backward()
    for p in (model.gru.weight_ih, model.gru.weight_hh, model.gru.bias_hh):
        assert p.grad is not None and float(p.grad.abs().sum()) > 0
    # memory after 3 steps depends on q0 through h, unless detach_state cut it
    for detach in (False, True):
        hook.reset()
        q = q0
        out = integrate(solver, {"q": q}, 0.01, 2, progress=False)
        if detach:
            hook.detach_state()
        out = integrate(solver, {"q": out.state["q"].detach()}, 0.01, 1, t0=0.02,
                        progress=False)
        assert hook.n_updates == 3
        (grad,) = torch.autograd.grad(hook.h.sum(), q0, allow_unused=True)
        if detach:
            assert grad is None
        else:
            assert grad is not None and float(grad.abs().sum()) > 0


def test_hook_errors():
    mesh = MESHES["cartesian-8x8"]
    model = _model(mesh, in_features=1, n_vars=1)
    q0 = _randn(mesh.n_cells, 1)[:, 0]
    with pytest.raises(ValueError, match="stages='rk5' is not a positive int"):
        model.as_closure(0.01, stages="rk5")
    with pytest.raises(ValueError, match="dt=None must be the solver's positive time step"):
        model.as_closure(None)
    # wrong stage count for the stepper: caught by the solver's closure context
    hook = model.as_closure(0.01, stages=3)
    with pytest.raises(RuntimeError, match=r"solver is at stage 3 of a 'rk4' step"):
        integrate(_tracer(mesh, hook), {"q": q0}, 0.01, 3, stepper="rk4", progress=False)
    # ... and by the time check when called without a context
    hook = model.as_closure(0.01, stages=3)
    with pytest.raises(RuntimeError, match=r"step 2, stage 0\) came at t=0.015, expected 0.02"):
        for k, c in enumerate((0.0, 0.5, 0.5, 1.0, 0.0, 0.5, 0.5)):
            hook(0.01 * (k // 4) + 0.01 * c, {"q": q0}, mesh)
    # every mismatch of stepper or dt is caught, at the first call that betrays it
    for hook_stepper, solver_stepper, hook_dt in (("ssprk3", "euler", 0.01),
                                                  ("ssprk3", "rk4", 0.01),
                                                  ("euler", "ssprk3", 0.01),
                                                  ("rk4", "ssprk3", 0.01),
                                                  ("ssprk3", "ssprk3", 0.02)):
        hook = model.as_closure(hook_dt, stages=hook_stepper)
        with pytest.raises(RuntimeError, match="Do the hook's stepper and dt match"):
            integrate(_tracer(mesh, hook), {"q": q0}, 0.01, 6, stepper=solver_stepper,
                      progress=False)
    # a second run without reset goes back in time
    hook = model.as_closure(0.01, stages="euler")
    solver = _tracer(mesh, hook)
    integrate(solver, {"q": q0}, 0.01, 2, stepper="euler", progress=False)
    with pytest.raises(RuntimeError, match="Call reset"):
        integrate(solver, {"q": q0}, 0.01, 2, stepper="euler", progress=False)
    hook.reset()
    assert hook.h is None and hook.n_calls == 0
    integrate(solver, {"q": q0}, 0.01, 2, stepper="euler", progress=False)
    # flux variables that do not fit the state
    hook2 = _model(mesh, in_features=1, n_vars=2).as_closure(0.01, stages="euler")
    with pytest.raises(ValueError, match="gives 2 flux variables per face"):
        integrate(_tracer(mesh, hook2), {"q": q0}, 0.01, 1, stepper="euler", progress=False)
    with pytest.raises(ValueError, match=r"h must have shape \(n_cells=64, memory=6\)"):
        model.step(mesh, q0[:, None], torch.zeros(3, MEM, dtype=torch.float64))
    assert "gru" in list_models("column") and "gru" in list_models("meshio")
    h0 = model.init_state(mesh)
    assert h0.shape == (64, MEM) and h0.dtype == torch.float64 and not h0.any()


@pytest.mark.parametrize("heteroscedastic", [False, True], ids=["mean", "hetero"])
@pytest.mark.parametrize("name", ["healpix-2", "cartesian-channel-6x4", "meshio-hole-4"])
def test_batched_memory_equals_separate_runs(name, heteroscedastic):
    """Four steps of a batch of 3 different input sequences: fluxes and memory of each sample
    equal the unbatched unroll of that sample alone (1e-12), and the memories stay apart."""
    mesh = MESHES[name]
    model = _model(mesh, heteroscedastic=heteroscedastic)
    n_steps, batch = 4, 3
    xs = torch.randn(n_steps, batch, mesh.n_cells, IN, dtype=torch.float64,
                     generator=torch.Generator().manual_seed(5))
    h_batch, h_single = model.init_state(mesh, batch=batch), [None] * batch
    assert h_batch.shape == (batch, mesh.n_cells, MEM) and not h_batch.any()
    with torch.no_grad():
        for t in range(n_steps):
            out, h_batch = model.step(mesh, xs[t], h_batch)
            assert isinstance(out, FluxPrediction) == heteroscedastic
            assert_conservative(out, mesh)                              # per sample
            for b in range(batch):
                single, h_single[b] = model.step(mesh, xs[t, b], h_single[b])
                for got, expected in zip(out if heteroscedastic else (out,),
                                         single if heteroscedastic else (single,)):
                    assert float((got[b] - expected).abs().max()) <= 1e-12 * max(
                        1.0, float(expected.abs().max()))
                assert float((h_batch[b] - h_single[b]).abs().max()) <= 1e-12
    assert float((h_batch[1] - h_batch[0]).abs().max()) > 1e-6         # one memory per sample
    with pytest.raises(ValueError, match=r"h must have shape \(B=3, n_cells=\d+, memory=6\); "
                                         r"got \(\d+, 6\)\. Start from model.init_state"
                                         r"\(mesh, batch=B\)"):
        model.step(mesh, xs[0], h_single[0])                           # one memory for three
