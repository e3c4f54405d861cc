"""Explicit time steppers for states that are dicts of cell tensors.

A *state* is a ``dict`` ``name -> Tensor (n_cells, ...)``; a right-hand side
``rhs(t, state)`` returns the tendencies as a dict with the same keys (a key
missing from the tendencies is held fixed). Each stepper has the signature
``step(rhs, t, state, dt) -> state`` and is differentiable (no in-place
updates, no detach).

* :func:`euler_step`: forward Euler, first order.
* :func:`ssprk3_step`: the three-stage, third-order strong-stability-preserving
  Runge–Kutta scheme of Shu & Osher (1988, doi:10.1016/0021-9991(88)90177-5),
  a convex combination of Euler steps with SSP coefficient 1 (Gottlieb, Shu &
  Tadmor 2001, doi:10.1137/S003614450036757X)::

      y1 = yⁿ + Δt F(tⁿ, yⁿ)
      y2 = ¾ yⁿ + ¼ (y1 + Δt F(tⁿ + Δt, y1))
      yⁿ⁺¹ = ⅓ yⁿ + ⅔ (y2 + Δt F(tⁿ + ½Δt, y2))

* :func:`rk4_step`: classical fourth-order Runge–Kutta.

Each stepper describes its stages once, in :data:`STAGES`: the stage times
``t + c_s dt`` at which it calls ``rhs`` (in call order) and the weights
``b_s`` with which each stage's tendency enters the update,
``yⁿ⁺¹ = yⁿ + dt Σ_s b_s F_s`` (for SSP-RK3 written in Shu–Osher form, the
equivalent Butcher weights). While a stepper calls ``rhs`` it marks the stage
(:func:`current_stage`), and :func:`~meshclosure.solver.integrate` marks the
step, so a closure deep inside a model's right-hand side knows where it is
(the closure context, :class:`~meshclosure.solver.ClosureContext`).
"""
from __future__ import annotations

import contextvars
from contextlib import contextmanager
from typing import Callable, Dict, Iterator, Mapping, NamedTuple, Optional, Tuple

import torch
from torch import Tensor

from ..typing import State

__all__ = ["State", "RHS", "Stepper", "euler_step", "ssprk3_step", "rk4_step", "STEPPERS",
           "get_stepper", "Stages", "STAGES", "StagePosition", "current_stage", "at_step"]

RHS = Callable[[float, State], Mapping[str, Tensor]]
Stepper = Callable[[RHS, float, State, float], State]


class Stages(NamedTuple):
    """The stages of an explicit stepper, in the order it calls ``rhs``.

    Attributes
    ----------
    name : str
    c : tuple of float
        Stage times as fractions of the step: stage ``s`` is evaluated at ``t + c_s dt``.
    b : tuple of float
        Weight of stage ``s``'s tendency in the update ``yⁿ⁺¹ = yⁿ + dt Σ_s b_s F_s``
        (``Σ b_s = 1``): a budget over a step integrates sources with these weights.
    """

    name: str
    c: Tuple[float, ...]
    b: Tuple[float, ...]

    @property
    def n(self) -> int:
        """Number of ``rhs`` calls per step."""
        return len(self.c)


STAGES: Dict[str, Stages] = {
    "euler": Stages("euler", (0.0,), (1.0,)),
    "ssprk3": Stages("ssprk3", (0.0, 1.0, 0.5), (1.0 / 6.0, 1.0 / 6.0, 2.0 / 3.0)),
    "rk4": Stages("rk4", (0.0, 0.5, 0.5, 1.0), (1.0 / 6.0, 1.0 / 3.0, 1.0 / 3.0, 1.0 / 6.0)),
}
"""Stage times and weights of every registered stepper (the one place they are written)."""


class StagePosition(NamedTuple):
    """Where a right-hand-side evaluation sits: ``step`` (0-based, ``None`` outside
    :func:`~meshclosure.solver.integrate`), ``stage`` (0-based), ``stepper``, ``dt``."""

    step: Optional[int]
    stage: Optional[int]
    stepper: Optional[str]
    dt: Optional[float]


_STEP: "contextvars.ContextVar[Optional[int]]" = contextvars.ContextVar("meshclosure_step",
                                                                        default=None)
_STAGE: "contextvars.ContextVar[Optional[Tuple[int, str, float]]]" = contextvars.ContextVar(
    "meshclosure_stage", default=None)


def current_stage() -> StagePosition:
    """The step and stage of the ``rhs`` evaluation in progress (``None`` parts when unknown,
    e.g. a model's ``rhs`` called directly)."""
    stage = _STAGE.get()
    if stage is None:
        return StagePosition(_STEP.get(), None, None, None)
    return StagePosition(_STEP.get(), stage[0], stage[1], stage[2])


@contextmanager
def at_step(step: Optional[int]) -> Iterator[None]:
    """Mark the (0-based) step index for every ``rhs`` call inside (used by ``integrate``)."""
    token = _STEP.set(step)
    try:
        yield
    finally:
        _STEP.reset(token)


def _staged(rhs: "RHS", name: str, dt: float) -> "RHS":
    """``rhs`` wrapped to mark its call ``k`` as stage ``k`` of stepper ``name``."""
    count = [0]

    def call(t, state):
        token = _STAGE.set((count[0], name, dt))
        count[0] += 1
        try:
            return rhs(t, state)
        finally:
            _STAGE.reset(token)

    return call


def _axpy(state: Mapping[str, Tensor], tend: Mapping[str, Tensor], dt: float) -> State:
    """``state + dt * tend`` per variable (variables without tendency are kept)."""
    unknown = set(tend) - set(state)
    if unknown:
        raise KeyError(f"rhs returned tendencies for {sorted(unknown)} which are not in the "
                       f"state (keys {sorted(state)}); return tendencies only for state "
                       "variables.")
    # one fused pass per variable (torch.add with alpha), no temporary for dt * tend
    return {k: torch.add(v, tend[k], alpha=dt) if k in tend else v for k, v in state.items()}


def _convex(a: Mapping[str, Tensor], b: Mapping[str, Tensor], w: float) -> State:
    """``(1 − w) a + w b`` per variable, in one fused pass (``torch.lerp``)."""
    return {k: torch.lerp(a[k], b[k], w) for k in a}


def euler_step(rhs: RHS, t: float, state: State, dt: float) -> State:
    """Forward Euler: ``yⁿ⁺¹ = yⁿ + Δt F(tⁿ, yⁿ)`` (first order).

    Parameters
    ----------
    rhs : callable ``(t, state) -> dict of tendencies``
    t : float
    state : dict name -> Tensor (n_cells, ...)
    dt : float

    Returns
    -------
    dict name -> Tensor (n_cells, ...)

    Examples
    --------
    >>> import torch
    >>> euler_step(lambda t, s: {"y": -s["y"]}, 0.0, {"y": torch.ones(2)}, 0.5)["y"]
    tensor([0.5000, 0.5000])
    >>> euler_step(lambda t, s: {"z": s["y"]}, 0.0, {"y": torch.ones(2)}, 0.5)
    Traceback (most recent call last):
    ...
    KeyError: "rhs returned tendencies for ['z'] which are not in the state (keys ['y']); ..."
    """
    return _axpy(state, _staged(rhs, "euler", dt)(t, state), dt)


def ssprk3_step(rhs: RHS, t: float, state: State, dt: float) -> State:
    """Shu–Osher SSP-RK3 step (third order, SSP coefficient 1).

    Parameters and returns as :func:`euler_step`.

    Examples
    --------
    >>> import torch
    >>> y = ssprk3_step(lambda t, s: {"y": -s["y"]}, 0.0, {"y": torch.ones(1, dtype=torch.float64)}, 0.1)
    >>> round(float(y["y"]), 8)   # 1 - h + h²/2 - h³/6
    0.90483333
    """
    rhs = _staged(rhs, "ssprk3", dt)
    y1 = _axpy(state, rhs(t, state), dt)
    y2 = _convex(state, _axpy(y1, rhs(t + dt, y1), dt), 0.25)
    return _convex(state, _axpy(y2, rhs(t + 0.5 * dt, y2), dt), 2.0 / 3.0)


def rk4_step(rhs: RHS, t: float, state: State, dt: float) -> State:
    """Classical fourth-order Runge–Kutta step.

    ``yⁿ⁺¹ = yⁿ + Δt/6 (k1 + 2k2 + 2k3 + k4)``.

    Parameters and returns as :func:`euler_step`.
    """
    rhs = _staged(rhs, "rk4", dt)
    k1 = rhs(t, state)
    k2 = rhs(t + 0.5 * dt, _axpy(state, k1, 0.5 * dt))
    k3 = rhs(t + 0.5 * dt, _axpy(state, k2, 0.5 * dt))
    k4 = rhs(t + dt, _axpy(state, k3, dt))
    tend = {k: (k1[k] + 2.0 * k2[k] + 2.0 * k3[k] + k4[k]) / 6.0 for k in k1}
    return _axpy(state, tend, dt)


STEPPERS: Dict[str, Stepper] = {"euler": euler_step, "ssprk3": ssprk3_step, "rk4": rk4_step}
"""Registry of time steppers by name."""

ORDER = {"euler": 1, "ssprk3": 3, "rk4": 4}
"""Formal order of accuracy of each registered stepper."""


def get_stepper(stepper: "str | Stepper") -> Stepper:
    """A stepper from its name in :data:`STEPPERS` (or a callable, returned as is).

    Examples
    --------
    >>> get_stepper("rk4") is rk4_step
    True
    >>> get_stepper("rk2")
    Traceback (most recent call last):
    ...
    ValueError: Unknown stepper='rk2'; choose one of ['euler', 'ssprk3', 'rk4'] or pass a callable (rhs, t, state, dt) -> state.
    """
    if callable(stepper):
        return stepper
    if stepper not in STEPPERS:
        raise ValueError(f"Unknown stepper={stepper!r}; choose one of {list(STEPPERS)} or pass "
                         "a callable (rhs, t, state, dt) -> state.")
    return STEPPERS[stepper]
