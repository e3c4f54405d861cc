"""Time integration of a model ``rhs(t, state)`` with snapshots and a NaN/Inf guard.

``integrate`` advances ``state`` by ``n_steps`` steps of size ``dt`` with a
stepper from :mod:`meshclosure.solver.steppers`. Nothing is detached, so a
loss on the snapshots or the final state backpropagates through every step to
the initial state and to any parameter of the model (online training).

The NaN/Inf guard says what produced the first non-finite value
(:attr:`NonFiniteStateError.cause`):

* ``"initial_state"``: the state was not finite before the first step;
* ``"transport"``, ``"closure"``, ``"forcing"``, ``"source"``,
  ``"boundary_flux"``: that part of the model's right-hand side was not
  finite at the first stage whose tendency was not (found by the model's
  ``diagnose(t, state)``, which the solver models have);
* ``"step"``: every part was finite and the update was not: the step is
  unstable at this ``dt`` (the only cause for which the message suggests a
  smaller ``dt``);
* ``"rhs"``: the tendency was not finite at a finite stage state, and the
  model has no ``diagnose`` to say which of its terms produced it.

The guard costs one ``isfinite`` pass over the state per step and a list of
references to each step's stage states (no copies); the diagnosis runs only
after a failure.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Mapping, Optional, Protocol, Tuple

import torch
from torch import Tensor

from ..errors import MeshclosureError
from .steppers import State, Stepper, at_step, get_stepper

__all__ = ["integrate", "rollout", "IntegrationResult", "NonFiniteStateError", "Model", "CAUSES"]

CAUSES = ("initial_state", "transport", "closure", "boundary_flux", "forcing", "source", "step",
          "rhs")
"""Values of :attr:`NonFiniteStateError.cause` (see the module docstring)."""


class Model(Protocol):
    """Anything with ``rhs(t, state) -> dict of tendencies``.

    A model may also have ``diagnose(t, state) -> NonFinitePart or None``
    (the solver models do): the first non-finite part of its right-hand side,
    which :func:`integrate` uses to name the cause of a blow-up.
    """

    def rhs(self, t: float, state: State) -> Mapping[str, Tensor]: ...


class NonFiniteStateError(MeshclosureError, FloatingPointError):
    """The state became NaN or infinite during :func:`integrate`.

    Attributes
    ----------
    step : int
        Step after which the state was first non-finite (1-based).
    time : float
        Model time of that state.
    variable : str
        First variable found non-finite.
    cells : list of int
        The first offending cells (at most 10).
    state : dict
        The (detached) state before the failing step (the initial state for
        ``cause == "initial_state"``), for diagnosis.
    cause : str
        What produced the first non-finite value, one of :data:`CAUSES`:
        ``"initial_state"``, a part of the right-hand side (``"transport"``,
        ``"closure"``, ``"boundary_flux"``, ``"forcing"``, ``"source"``),
        ``"step"`` (every part finite, the update not: reduce ``dt``), or
        ``"rhs"`` (a model without ``diagnose``).
    stage : int or None
        0-based right-hand-side call within the failing step at which the
        first non-finite tendency appeared (``None`` if none did).
    part : NonFinitePart or None
        The model's own finding (part, variable, faces or cells).
    """

    def __init__(self, message: str, step: int, time: float, variable: str, cells: list,
                 state: Optional[Dict[str, Tensor]] = None, cause: str = "step",
                 stage: Optional[int] = None, part: Any = None) -> None:
        super().__init__(message)
        self.step, self.time, self.variable, self.cells = step, time, variable, cells
        self.state, self.cause, self.stage, self.part = state, cause, stage, part


@dataclass
class IntegrationResult:
    """Output of :func:`integrate`.

    Attributes
    ----------
    times : Tensor, shape (n_snap,)
        Times of the snapshots (float64).
    snapshots : dict name -> Tensor, shape (n_snap, n_cells, ...)
        States at ``t0``, every ``snapshot_every`` steps, and at the end.
    state : dict name -> Tensor, shape (n_cells, ...)
        Final state.
    t : float
        Final time ``t0 + n_steps dt``.
    n_steps : int
    """

    times: Tensor
    snapshots: Dict[str, Tensor]
    state: Dict[str, Tensor]
    t: float
    n_steps: int
    info: Dict[str, Any] = field(default_factory=dict)


def _check_state(state: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    if not isinstance(state, Mapping) or not state:
        raise TypeError(f"state must be a non-empty dict name -> Tensor (n_cells, ...); got "
                        f"{type(state).__name__}. Wrap a single field as {{'q': q}}.")
    bad = [k for k, v in state.items() if not isinstance(v, Tensor)]
    if bad:
        raise TypeError(f"state variables {bad} are not torch tensors; convert them with "
                        "torch.as_tensor(...).")
    return dict(state)


def _first_nonfinite(state: Mapping[str, Tensor]):
    for name, v in state.items():
        ok = torch.isfinite(v)
        if not bool(ok.all()):
            bad = (~ok).reshape(v.shape[0], -1).any(1).nonzero().flatten()
            return name, bad[:10].tolist()
    return None


_Call = Tuple[float, Mapping[str, Tensor], Mapping[str, Tensor]]


def _all_finite(x: Mapping[str, Tensor]) -> bool:
    return _first_nonfinite(x) is None


def _diagnose(model: Model, calls: List[_Call]) -> Tuple[str, Optional[int], Any, str]:
    """``(cause, stage, part, sentence)`` for a step whose result is not finite.

    Walks the step's right-hand-side calls in order: the first whose input
    is finite and whose tendency is not is asked to the model's
    ``diagnose``; a non-finite stage input (finite tendencies before it) or
    all parts finite means the step itself.
    """
    for stage, (ts, ys, ks) in enumerate(calls):
        if not _all_finite(ys):
            return ("step", stage, None,
                    f"every tendency before stage {stage} was finite, the stage state "
                    f"(t={ts:g}) was not: the update overflowed")
        if _all_finite(ks):
            continue
        diagnose = getattr(model, "diagnose", None)
        if diagnose is None:
            return ("rhs", stage, None,
                    f"the right-hand side returned a non-finite tendency at stage {stage} "
                    f"(t={ts:g}) from a finite state; {type(model).__name__} has no "
                    "diagnose(t, state), so integrate cannot tell which of its terms (transport, "
                    "closure, forcing, source) produced it, or whether the state grew until it "
                    "overflowed")
        try:
            part = diagnose(ts, ys)
        except Exception as exc:          # noqa: BLE001 - report the failure, keep the NaN error
            return ("rhs", stage, None,
                    f"the right-hand side returned a non-finite tendency at stage {stage} "
                    f"(t={ts:g}) from a finite state, and {type(model).__name__}.diagnose "
                    f"failed ({type(exc).__name__}: {exc})")
        if part is None:
            return ("step", stage, None,
                    f"at stage {stage} (t={ts:g}) the transport, closure, forcing and sources "
                    "were finite and the resolved tendency was not: the state grew until it "
                    "overflowed")
        return (part.part, stage, part,
                f"the first non-finite value came from {part.describe()} at stage {stage} "
                f"(t={ts:g}) of that step, from a finite state")
    return ("step", None, None, "every stage state and tendency was finite and the update was "
            "not: it overflowed")


def _recording(rhs, calls: List[_Call]):
    """``rhs`` that appends ``(t, state, tendency)`` of each call to ``calls`` (references
    only, no copies; :func:`integrate` clears the list after every step)."""
    def recorded(t: float, state: State) -> Mapping[str, Tensor]:
        out = rhs(t, state)
        calls.append((t, state, out))
        return out
    return recorded


_FIX = {
    "transport": "fix the flow that gives the face transports (TracerModel(transport=...), or the "
                 "vorticity behind the barotropic streamfunction)",
    "closure": "check the closure's inputs, weights and normalisation (e.g. a division by a "
               "zero variance)",
    "boundary_flux": "fix the prescribed boundary flux",
    "forcing": "fix the forcing",
    "source": "fix the source or relaxation (rate and target)",
    "rhs": "evaluate model.rhs at err.state to find the term, or give the model a "
           "diagnose(t, state) method; if the state was growing, reduce dt",
}


def integrate(model: Model, state: Mapping[str, Tensor], dt: float, n_steps: int,
              t0: float = 0.0, stepper: "str | Stepper" = "ssprk3",
              snapshot_every: Optional[int] = None, progress: bool = True,
              check_finite: bool = True) -> IntegrationResult:
    """Advance ``state`` by ``n_steps`` steps of ``dt``.

    Parameters
    ----------
    model : object with ``rhs(t, state) -> dict``
        E.g. :class:`~meshclosure.solver.TracerModel`.
    state : dict name -> Tensor (n_cells, ...)
        Initial state (may require grad).
    dt : float
        Time step (> 0); see :func:`meshclosure.fv.advection.cfl_dt`.
    n_steps : int
        Number of steps (>= 0).
    t0 : float
        Initial time.
    stepper : str or callable
        ``"euler"``, ``"ssprk3"`` (default) or ``"rk4"``, or
        ``step(rhs, t, state, dt) -> state``.
    snapshot_every : int, optional
        Store the state every that many steps (plus the initial and final
        state). Default: only the initial and final state.
    progress : bool
        Show a tqdm progress bar (only when stderr is a terminal).
    check_finite : bool
        Check the initial state, then after every step stop at the first
        NaN/Inf and raise :class:`NonFiniteStateError` naming the step, time,
        variable, cells and the cause (module docstring).

    Returns
    -------
    IntegrationResult

    Raises
    ------
    NonFiniteStateError
        When ``check_finite`` and the state becomes non-finite.

    Examples
    --------
    >>> import torch
    >>> class Decay:
    ...     def rhs(self, t, s):
    ...         return {"y": -s["y"]}
    >>> out = integrate(Decay(), {"y": torch.ones(3, dtype=torch.float64)}, 0.01, 100,
    ...                 snapshot_every=50, progress=False)
    >>> out.times.tolist(), tuple(out.snapshots["y"].shape)
    ([0.0, 0.5, 1.0], (3, 3))
    >>> round(float(out.state["y"][0]), 6)   # exp(-1) to third order
    0.367879
    >>> class Growth:
    ...     def rhs(self, t, s):
    ...         return {"y": s["y"]}
    ...     def diagnose(self, t, s):
    ...         return None                 # no part of the rhs can be non-finite
    >>> integrate(Growth(), {"y": torch.ones(2)}, 1e9, 20, stepper="euler", progress=False)
    Traceback (most recent call last):
    ...
    meshclosure.solver.integrate.NonFiniteStateError: state variable 'y' is not finite after step 5 (t=5e+09): first bad cells [0, 1]. Cause (step): every stage state and tendency was finite and the update was not: it overflowed. Reduce dt (check the CFL number with meshclosure.fv.advection.outflow_courant), or pass check_finite=False to continue.
    >>> integrate(Growth(), {"y": torch.tensor([1.0, float("nan")])}, 0.1, 2, progress=False)
    Traceback (most recent call last):
    ...
    meshclosure.solver.integrate.NonFiniteStateError: the initial state is not finite: variable 'y' at cells [1] (t=0), before any step. Fix how the initial state is built (e.g. a NaN read from a file or a division by zero); the time step plays no part.
    """
    if snapshot_every is not None and (isinstance(snapshot_every, bool)
                                       or not isinstance(snapshot_every, int)
                                       or snapshot_every < 1):
        raise ValueError(f"snapshot_every must be a positive integer or None; got "
                         f"{snapshot_every!r}.")
    steps = rollout(model, state, dt, n_steps, t0=t0, stepper=stepper,
                    check_finite=check_finite)
    first = next(steps)                      # checks the arguments and the initial state
    state, t = first[2], first[1]
    times = [t]
    snaps = {k: [v] for k, v in state.items()}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        # disable=None: silent when stderr is not a terminal (logs, CI, notebooks' stderr)
        bar = tqdm(total=n_steps, desc="integrate", unit="step", leave=False, disable=None)
    try:
        for n, t, state in steps:
            if n == n_steps or (snapshot_every is not None and n % snapshot_every == 0):
                times.append(t)
                for k, v in state.items():
                    snaps[k].append(v)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return IntegrationResult(
        times=torch.tensor(times, dtype=torch.float64),
        snapshots={k: torch.stack(v) for k, v in snaps.items()},
        state=state, t=t, n_steps=n_steps)


def rollout(model: Model, state: Mapping[str, Tensor], dt: float, n_steps: int,
            t0: float = 0.0, stepper: "str | Stepper" = "ssprk3",
            check_finite: bool = True) -> Iterator[Tuple[int, float, State]]:
    """Stream a run step by step: yields ``(step, t, state)``, first ``(0, t0, state)``.

    Nothing is kept: a caller audits every step (conservation, blow-up,
    statistics) without holding the run in memory, or stops early by leaving
    the loop. The same steps, stages, closure context and NaN guard as
    :func:`integrate` (which is built on it). Nothing is detached, so a loss
    on the yielded states backpropagates (online training).

    Parameters
    ----------
    model, state, dt, n_steps, t0, stepper, check_finite
        As :func:`integrate`.

    Yields
    ------
    (int, float, dict)
        Step index (0 for the initial state), time ``t0 + step dt``, state.

    Raises
    ------
    NonFiniteStateError
        As :func:`integrate`, when the step that produced it is taken.

    Examples
    --------
    >>> import torch
    >>> class Decay:
    ...     def rhs(self, t, s):
    ...         return {"y": -s["y"]}
    >>> for n, t, s in rollout(Decay(), {"y": torch.ones(1, dtype=torch.float64)}, 0.5, 2):
    ...     print(n, t, round(float(s["y"]), 4))
    0 0.0 1.0
    1 0.5 0.6042
    2 1.0 0.365
    """
    if not (isinstance(dt, (int, float)) or (isinstance(dt, Tensor) and dt.numel() == 1)) \
            or not float(dt) > 0 or float(dt) == float("inf"):
        raise ValueError(f"dt must be a positive finite number; got {dt!r}. Choose it with "
                         "meshclosure.fv.advection.cfl_dt(mesh, U, courant).")
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 0:
        raise ValueError(f"n_steps must be an integer >= 0; got {n_steps!r}.")
    if not hasattr(model, "rhs") or not callable(model.rhs):
        raise TypeError(f"model must have a method rhs(t, state); got "
                        f"{type(model).__name__}. Wrap a function f as "
                        "types.SimpleNamespace(rhs=f).")
    step = get_stepper(stepper)
    state = _check_state(state)
    dt = float(dt)
    if check_finite:
        bad = _first_nonfinite(state)
        if bad is not None:
            name, cells = bad
            raise NonFiniteStateError(
                f"the initial state is not finite: variable {name!r} at cells {cells} "
                f"(t={float(t0):g}), before any step. Fix how the initial state is built "
                "(e.g. a NaN read from a file or a division by zero); the time step plays no "
                "part.",
                step=0, time=float(t0), variable=name, cells=cells,
                state={k: v.detach() for k, v in state.items()}, cause="initial_state")
    return _steps(model, state, dt, n_steps, float(t0), step, check_finite)


def _steps(model: Model, state: State, dt: float, n_steps: int, t0: float, step: Stepper,
           check_finite: bool) -> Iterator[Tuple[int, float, State]]:
    """The loop of :func:`rollout` (arguments already checked)."""
    yield 0, t0, state
    t = t0
    calls: List[_Call] = []
    rhs = _recording(model.rhs, calls) if check_finite else model.rhs
    try:
        for n in range(1, n_steps + 1):
            calls.clear()
            with at_step(n - 1):
                new = step(rhs, t, state, dt)
            t = float(t0) + n * dt
            if check_finite:
                bad = _first_nonfinite(new)
                if bad is not None:
                    name, cells = bad
                    with torch.no_grad():
                        cause, stage, part, why = _diagnose(model, calls)
                    calls.clear()
                    if cause == "step":
                        fix = ("Reduce dt (check the CFL number with "
                               "meshclosure.fv.advection.outflow_courant)")
                    else:
                        fix = _FIX[cause][0].upper() + _FIX[cause][1:]
                    raise NonFiniteStateError(
                        f"state variable {name!r} is not finite after step {n} (t={t:g}): "
                        f"first bad cells {cells}. Cause ({cause}): {why}. {fix}, or pass "
                        "check_finite=False to continue.",
                        step=n, time=t, variable=name, cells=cells,
                        state={k: v.detach() for k, v in state.items()}, cause=cause,
                        stage=stage, part=part)
                calls.clear()
            state = dict(new)
            yield n, t, state
    finally:
        calls.clear()
