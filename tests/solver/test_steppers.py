"""Time steppers: order of accuracy on dy/dt = λy, dict states, registry."""
import math

import pytest
import torch

from meshclosure.solver.steppers import ORDER, STEPPERS, get_stepper


def _solve(step, dt, lam=-1.3, T=1.0):
    y = {"y": torch.tensor([1.0, 2.0], dtype=torch.float64), "z": torch.ones(1, dtype=torch.float64)}
    rhs = lambda t, s: {"y": lam * s["y"]}  # noqa: E731  (z has no tendency: held fixed)
    n = round(T / dt)
    for k in range(n):
        y = step(rhs, k * dt, y, dt)
    assert float(y["z"]) == 1.0
    return float((y["y"][1] - 2.0 * math.exp(lam * T)).abs())


@pytest.mark.parametrize("name", list(STEPPERS))
def test_order_of_accuracy(name):
    e1, e2 = _solve(STEPPERS[name], 0.05), _solve(STEPPERS[name], 0.025)
    assert math.log2(e1 / e2) == pytest.approx(ORDER[name], abs=0.15)


def test_time_dependent_rhs_order():
    # dy/dt = cos t, y(0) = 0 -> sin t: checks the stage times
    for name in ("ssprk3", "rk4"):
        errs = []
        for dt in (0.1, 0.05):
            y = {"y": torch.zeros(1, dtype=torch.float64)}
            for k in range(round(2.0 / dt)):
                y = STEPPERS[name](lambda t, s: {"y": torch.full_like(s["y"], math.cos(t))},
                                   k * dt, y, dt)
            errs.append(abs(float(y["y"]) - math.sin(2.0)))
        assert math.log2(errs[0] / errs[1]) > ORDER[name] - 0.3


def test_registry_errors():
    assert get_stepper("euler") is STEPPERS["euler"]
    with pytest.raises(ValueError, match="Unknown stepper"):
        get_stepper("leapfrog")
