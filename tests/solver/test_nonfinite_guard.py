"""The NaN guard of ``integrate`` tells the truth: one test per cause (issue 9, item 7).

Only a step that turns finite parts into a non-finite state is blamed on the
step size; every other cause names the part and says nothing about ``dt``.
"""
import re

import pytest
import torch

from meshclosure.mesh import cartesian, healpix
from meshclosure.solver import (CAUSES, BarotropicModel, BoussinesqModel, NonFiniteStateError,
                                TracerModel, integrate)
from meshclosure.solver.flows import constant_transport

NAN = float("nan")


def _mesh():
    return cartesian(6, 6)


def _q0(mesh):
    return 1.0 + torch.rand(mesh.n_cells, dtype=torch.float64,
                            generator=torch.Generator().manual_seed(0))


def _fail(model, state, dt=0.05, n=40, stepper="ssprk3"):
    with pytest.raises(NonFiniteStateError) as info:
        integrate(model, state, dt, n, stepper=stepper, progress=False)
    err = info.value
    assert err.cause in CAUSES
    assert isinstance(err, FloatingPointError)
    return err, str(err)


def _mentions_dt(msg):
    """Whether the message blames the step size."""
    return re.search(r"\bdt\b|courant|CFL|[Rr]educe|smaller", msg) is not None


def test_initial_state_nan_is_named_before_stepping():
    mesh = _mesh()
    calls = []
    model = TracerModel(mesh, constant_transport(mesh, (1.0, 0.0)))
    rhs = model.rhs
    model.rhs = lambda t, s: calls.append(t) or rhs(t, s)
    q0 = _q0(mesh)
    q0[[4, 9]] = NAN
    err, msg = _fail(model, {"q": q0})
    assert err.cause == "initial_state" and err.step == 0 and calls == []
    assert (err.variable, err.cells) == ("q", [4, 9])
    assert "initial state is not finite" in msg and "cells [4, 9]" in msg
    assert not _mentions_dt(msg)


def test_transport_nan_is_blamed_on_the_transport():
    mesh = _mesh()
    U = constant_transport(mesh, (1.0, 0.3))

    def transport(t):
        out = U.clone()
        if t > 0.32:
            out[[2, 11]] = NAN
        return out

    err, msg = _fail(TracerModel(mesh, transport, scheme="linear"), {"q": _q0(mesh)})
    assert err.cause == "transport"
    assert err.part.index == [2, 11] and err.step == 7 and err.stage == 1   # t = 0.3 + dt
    assert "from the transport (non-finite at faces [2, 11])" in msg
    assert not _mentions_dt(msg)


@pytest.mark.parametrize("kind", ["source", "relaxation", "forcing", "boundary_flux"])
def test_source_or_forcing_nan_is_blamed_on_it(kind):
    mesh = _mesh()
    late = lambda t: t > 0.5  # noqa: E731

    def field(t, state):
        out = torch.zeros(mesh.n_cells, dtype=torch.float64)
        if late(t):
            out[5] = NAN
        return out

    if kind == "source":
        model, state, expected = (TracerModel(mesh, constant_transport(mesh, (1.0, 0.0)),
                                              source=field), {"q": _q0(mesh)}, "source")
    elif kind == "relaxation":
        target = torch.ones(mesh.n_cells, dtype=torch.float64)
        target[5] = float("inf")
        model, state, expected = (TracerModel(mesh, constant_transport(mesh, (1.0, 0.0)),
                                              relaxation=(0.1, target)), {"q": _q0(mesh)},
                                  "source")
    elif kind == "forcing":
        model, state, expected = (BarotropicModel(healpix(1), omega=1.0, forcing=lambda t, s:
                                                  field(t, s)[:12]),
                                  {"zeta": _q0(healpix(1)) - 1.0}, "forcing")
    else:
        slab = cartesian(6, 4, 1.0, 1.0, periodic=(True, False))
        n_b = slab.n_boundary_faces

        def bflux(t):
            out = torch.zeros(n_b, dtype=torch.float64)
            if late(t):
                out[1] = NAN
            return out

        z = torch.zeros(slab.n_cells, dtype=torch.float64)
        model, state, expected = (BoussinesqModel(slab, buoyancy_flux=bflux),
                                  {"zeta": z, "b": z + 1.0}, "boundary_flux")
    err, msg = _fail(model, state)
    assert err.cause == expected, msg
    assert f"Cause ({expected})" in msg and not _mentions_dt(msg)
    if kind != "relaxation":
        assert err.step == 11 and err.stage == 1          # first stage with t > 0.5


def test_closure_nan_is_blamed_on_the_closure():
    mesh = _mesh()

    def closure(t, state, m):
        flux = torch.zeros(m.n_faces, dtype=state["q"].dtype)
        if t > 0.25:
            flux[7] = NAN
        return {"q": flux}

    model = TracerModel(mesh, constant_transport(mesh, (1.0, 0.0)), closure=closure)
    err, msg = _fail(model, {"q": _q0(mesh)}, stepper="euler", dt=0.1)
    assert (err.cause, err.step, err.variable) == ("closure", 4, "q")
    assert err.part.index == [7] and err.cells == sorted(mesh.face_cells[:, 7].tolist())
    assert "closure for 'q' (non-finite at faces [7])" in msg and not _mentions_dt(msg)
    # barotropic: the closure's flux for a passive tracer
    sphere = healpix(1)
    baro = BarotropicModel(sphere, omega=1.0, closure=lambda t, s, m: {
        "q": torch.full((m.n_faces,), NAN if t > 0.2 else 0.0, dtype=torch.float64)})
    err, msg = _fail(baro, {"zeta": _q0(sphere) - 1.0, "q": _q0(sphere)}, dt=0.1)
    assert (err.cause, err.part.variable) == ("closure", "q") and not _mentions_dt(msg)


def test_stateful_closure_is_read_back_not_called_again():
    """A closure that is NaN on one call only (like a sampling or recurrent closure, it would
    not return the same value twice) is still named: diagnose reads its recorded output."""
    mesh = _mesh()
    count = {"n": 0}

    def closure(t, state, m):
        count["n"] += 1
        flux = torch.zeros(m.n_faces, dtype=torch.float64)
        if count["n"] == 8:                       # step 3, stage 1 (0-based) of SSP-RK3
            flux[3] = NAN
        return {"q": flux}

    model = TracerModel(mesh, constant_transport(mesh, (1.0, 0.0)), closure=closure)
    err, msg = _fail(model, {"q": _q0(mesh)})
    assert (err.cause, err.step, err.stage, err.part.index) == ("closure", 3, 1, [3])
    assert count["n"] == 9 and not _mentions_dt(msg)          # not called by the diagnosis


def test_too_large_dt_with_finite_parts_is_blamed_on_the_step():
    """Linear advection at 20× the CFL step grows ~10× per step until it overflows: every
    part is finite, the update is not, so (and only so) the message suggests a smaller dt."""
    mesh = cartesian(8, 8)
    model = TracerModel(mesh, constant_transport(mesh, (1.0, 0.5)), scheme="linear")
    q0 = torch.rand(mesh.n_cells, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    err, msg = _fail(model, {"q": q0}, dt=20 * model.cfl_dt(), n=2000)
    assert err.cause == "step" and err.part is None and err.step > 50
    assert all(bool(torch.isfinite(v).all()) for v in err.state.values())
    assert "Reduce dt" in msg and "outflow_courant" in msg


def test_model_without_diagnose_is_not_blamed_on_the_step_alone():
    class Opaque:
        def rhs(self, t, s):
            return {"y": s["y"] ** 2}

    err, msg = _fail(Opaque(), {"y": torch.ones(2)}, dt=1.0, n=20, stepper="euler")
    assert err.cause == "rhs" and err.step == 8
    assert "has no diagnose(t, state)" in msg


def test_guard_keeps_results_and_gradients_unchanged():
    mesh = _mesh()
    q0 = _q0(mesh).requires_grad_()
    model = TracerModel(mesh, constant_transport(mesh, (1.0, 0.3)), scheme="limited")
    on = integrate(model, {"q": q0}, 0.05, 5, progress=False)
    off = integrate(model, {"q": q0}, 0.05, 5, progress=False, check_finite=False)
    assert torch.equal(on.state["q"], off.state["q"])
    g_on, = torch.autograd.grad(on.state["q"].square().sum(), q0)
    g_off, = torch.autograd.grad(off.state["q"].square().sum(), q0)
    assert torch.equal(g_on, g_off)


def test_progress_bar_is_quiet_when_stderr_is_not_a_terminal(capsys):
    mesh = _mesh()
    model = TracerModel(mesh, constant_transport(mesh, (1.0, 0.3)))
    integrate(model, {"q": _q0(mesh)}, 0.05, 3, progress=True)
    assert capsys.readouterr().err == ""
