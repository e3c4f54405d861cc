"""The closure context, the steppers' stage records, and the streaming rollout."""
from __future__ import annotations

import pytest
import torch

from meshclosure.mesh import cartesian, healpix
from meshclosure.solver import (STAGES, BarotropicModel, ClosureContext, NonFiniteStateError,
                                TracerModel, get_stepper, integrate, rollout)


@pytest.mark.parametrize("name", list(STAGES))
def test_stage_weights_reproduce_the_step(name):
    """y^{n+1} = y^n + dt Σ_s b_s F_s with the recorded stage tendencies, at t + c_s dt."""
    st = STAGES[name]
    assert abs(sum(st.b) - 1.0) < 1e-15 and len(st.b) == st.n
    gen = torch.Generator().manual_seed(0)
    A = torch.randn(5, 5, dtype=torch.float64, generator=gen)
    calls = []

    def rhs(t, s):                       # nonlinear and time dependent
        out = {"y": A @ torch.tanh(s["y"]) + torch.cos(torch.tensor(3.0 * t))}
        calls.append((t, out["y"]))
        return out

    y0 = {"y": torch.randn(5, dtype=torch.float64, generator=gen)}
    new = get_stepper(name)(rhs, 0.3, y0, 0.1)
    assert [t for t, _ in calls] == pytest.approx([0.3 + c * 0.1 for c in st.c])
    rebuilt = y0["y"] + 0.1 * sum(b * f for b, (_, f) in zip(st.b, calls))
    assert torch.allclose(new["y"], rebuilt, rtol=0, atol=1e-15)


class Spy:
    takes_context = True

    def __init__(self):
        self.seen = []

    def __call__(self, ctx: ClosureContext):
        self.seen.append(ctx)
        return {}


@pytest.mark.parametrize("stepper", list(STAGES))
def test_closure_sees_step_stage_and_transport(stepper):
    mesh = cartesian(5, 4)
    U = 0.2 * mesh.face_normal[:, 0].double() * mesh.face_area.double()
    spy = Spy()
    integrate(TracerModel(mesh, U, closure=spy), {"q": torch.rand(20, dtype=torch.float64)},
              0.01, 3, t0=1.0, stepper=stepper, progress=False)
    st = STAGES[stepper]
    assert [(c.step, c.stage, c.stepper, c.dt) for c in spy.seen] == [
        (k // st.n, k % st.n, stepper, 0.01) for k in range(3 * st.n)]
    assert [c.t for c in spy.seen] == pytest.approx(
        [1.0 + 0.01 * (k // st.n + st.c[k % st.n]) for k in range(3 * st.n)])
    assert all(c.mesh is mesh and torch.equal(c.transport, U) for c in spy.seen)


def test_barotropic_context_carries_the_computed_transport():
    mesh = healpix(2)
    spy = Spy()
    model = BarotropicModel(mesh, omega=1.0, closure=spy)
    zeta = torch.randn(mesh.n_cells, dtype=torch.float64, generator=torch.Generator()
                       .manual_seed(1))
    model.rhs(0.0, {"zeta": zeta})
    ctx = spy.seen[-1]
    assert ctx.step is None and ctx.stage is None        # rhs called directly
    assert torch.allclose(ctx.transport, model.transport(zeta), rtol=0, atol=1e-15)


def test_plain_closures_still_get_t_state_mesh():
    mesh = cartesian(4, 4)
    got = []
    U = 0.2 * mesh.face_normal[:, 0].double() * mesh.face_area.double()
    model = TracerModel(mesh, U, closure=lambda t, s, m: got.append((t, m)) or {})
    model.rhs(0.5, {"q": torch.zeros(16, dtype=torch.float64)})
    assert got == [(0.5, mesh)]


def test_rollout_streams_the_same_run_as_integrate():
    mesh = healpix(2)
    model = BarotropicModel(mesh, omega=1.0, nu=0.01)
    s0 = {"zeta": torch.randn(mesh.n_cells, dtype=torch.float64, generator=torch.Generator()
                              .manual_seed(2))}
    steps = list(rollout(model, s0, 0.05, 4))
    assert [n for n, _, _ in steps] == [0, 1, 2, 3, 4]
    assert [t for _, t, _ in steps] == pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2])
    ref = integrate(model, s0, 0.05, 4, progress=False)
    assert torch.equal(steps[-1][2]["zeta"], ref.state["zeta"])
    # a caller stops when it wants: nothing is computed past the break
    calls = []
    spy = type("M", (), {"rhs": lambda self, t, s: calls.append(t) or {"y": -s["y"]}})()
    for n, t, s in rollout(spy, {"y": torch.ones(1, dtype=torch.float64)}, 0.1, 1000):
        if n == 2:
            break
    assert len(calls) == 6
    with pytest.raises(ValueError, match="dt must be a positive"):
        rollout(model, s0, -1.0, 3)                 # refused at the call, not at iteration
    blow = type("M", (), {"rhs": lambda self, t, s: {"y": s["y"] * 1e300}})()
    stream = rollout(blow, {"y": torch.ones(1, dtype=torch.float64)}, 1.0, 10)
    with pytest.raises(NonFiniteStateError):
        for _ in stream:
            pass
