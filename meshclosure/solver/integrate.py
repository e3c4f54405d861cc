"""Time integration of a model ``rhs(t, state)`` with snapshots and a NaN/Inf guard.

``integrate`` advances ``state`` by ``n_steps`` steps of size ``dt`` with a
stepper from :mod:`meshclosure.solver.steppers`. Nothing is detached, so a
loss on the snapshots or the final state backpropagates through every step to
the initial state and to any parameter of the model (online training).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Protocol

import torch
from torch import Tensor

from ..errors import MeshclosureError
from .steppers import State, Stepper, get_stepper

__all__ = ["integrate", "IntegrationResult", "NonFiniteStateError", "Model"]


class Model(Protocol):
    """Anything with ``rhs(t, state) -> dict of tendencies``."""

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
        The (detached) state before the failing step, for diagnosis.
    """

    def __init__(self, message: str, step: int, time: float, variable: str, cells: list,
                 state: Optional[Dict[str, Tensor]] = None) -> None:
        super().__init__(message)
        self.step, self.time, self.variable, self.cells = step, time, variable, cells
        self.state = state


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
        Show a tqdm progress bar.
    check_finite : bool
        After every step, stop at the first NaN/Inf and raise
        :class:`NonFiniteStateError` naming the step, time, variable and cells.

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
    >>> class Blowup:
    ...     def rhs(self, t, s):
    ...         return {"y": s["y"] ** 2}
    >>> integrate(Blowup(), {"y": torch.ones(2)}, 1.0, 20, stepper="euler", progress=False)
    Traceback (most recent call last):
    ...
    meshclosure.solver.integrate.NonFiniteStateError: state variable 'y' is not finite after step 8 (t=8): first bad cells [0, 1]. ...
    """
    if not (isinstance(dt, (int, float)) or (isinstance(dt, Tensor) and dt.numel() == 1)) \
            or not float(dt) > 0 or float(dt) == float("inf"):
        raise ValueError(f"dt must be a positive finite number; got {dt!r}. Choose it with "
                         "meshclosure.fv.advection.cfl_dt(mesh, U, courant).")
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 0:
        raise ValueError(f"n_steps must be an integer >= 0; got {n_steps!r}.")
    if snapshot_every is not None and (isinstance(snapshot_every, bool)
                                       or not isinstance(snapshot_every, int)
                                       or snapshot_every < 1):
        raise ValueError(f"snapshot_every must be a positive integer or None; got "
                         f"{snapshot_every!r}.")
    if not hasattr(model, "rhs") or not callable(model.rhs):
        raise TypeError(f"model must have a method rhs(t, state); got "
                        f"{type(model).__name__}. Wrap a function f as "
                        "types.SimpleNamespace(rhs=f).")
    step = get_stepper(stepper)
    state = _check_state(state)
    dt = float(dt)
    times = [float(t0)]
    snaps = {k: [v] for k, v in state.items()}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_steps, desc="integrate", unit="step", leave=False)
    t = float(t0)
    try:
        for n in range(1, n_steps + 1):
            new = step(model.rhs, t, state, dt)
            t = float(t0) + n * dt
            if check_finite:
                bad = _first_nonfinite(new)
                if bad is not None:
                    name, cells = bad
                    raise NonFiniteStateError(
                        f"state variable {name!r} is not finite after step {n} (t={t:g}): "
                        f"first bad cells {cells}. Reduce dt (check the CFL number with "
                        "meshclosure.fv.advection.outflow_courant), check the closure output, "
                        "or pass check_finite=False to continue.",
                        step=n, time=t, variable=name, cells=cells,
                        state={k: v.detach() for k, v in state.items()})
            state = dict(new)
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
