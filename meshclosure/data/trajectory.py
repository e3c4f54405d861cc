"""Coarse steps of a truth run: what the coarse model needs between two coarse states.

A coarse step spans ``m = scenario.coarse_every`` fine steps (several eddy
decorrelation times), so the subgrid flux at one instant cannot stand for it.
What the coarse model must be given over the step is the *step mean*::

    Φ̄^sgs = (1/m) Σ_{n=1..m} Σ_s b_s Φ^sgs(t_{n,s}, q_{n,s})

over every stage ``s`` of every fine step of the coarse step (``b_s`` the
stepper's weights, ``Σ b_s = 1``; SSP-RK3: ``(1/6, 1/6, 2/3)`` at
``t, t + dt, t + dt/2``), and likewise the step mean of the restricted random
forcing. Then ``m dt · (−div Φ̄^sgs)`` is exactly the subgrid part of the fine
run's coarse-grained change over the step, and a coarse model that replays
``Φ̄^sgs`` (constant over its own stages) from ``restrict(q)`` tracks the
coarse-grained truth up to its own time-stepping error
(:func:`replay`; tests/data/test_coarse_models.py).

With ``m = 1`` and ``keep_stages=True`` each stage's ``Φ^sgs`` is kept too,
and a coarse step that replays them stage by stage reproduces
``restrict(q^{n+1})`` to rounding: the check that the subgrid targets are
defined with exactly the operator the coarse model computes online.

Trajectory datasets (``generate(..., trajectory=True)``) store, at every
coarse step, the coarse state with its instantaneous targets and these step
means (:func:`trajectory_samples`); :func:`trajectory_windows` lists the
unroll windows that stay inside one split and never touch a gap or padding.

Examples
--------
>>> import numpy as np, xarray as xr
>>> ds = xr.Dataset({"split": (("run", "time"), np.array([[0, 0, 0, 4, 1, 1, -1]]))})
>>> trajectory_windows(ds, "train", 2), trajectory_windows(ds, "val", 1)
([(0, 0)], [(0, 4)])
>>> trajectory_windows(ds, "train", 0)
Traceback (most recent call last):
...
meshclosure.errors.ArgumentError: length=0: must be an integer >= 1 (coarse steps per window); ...
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from ..errors import ArgumentError
from ..solver.steppers import STAGES, ssprk3_step
from ..typing import State
from .targets import SubgridSample, subgrid_targets

__all__ = ["CoarseStep", "coarse_steps", "replay", "replay_window", "trajectory_samples",
           "prescribed_coarse_transport", "trajectory_windows", "STEPPER", "PRESCRIBED_FLOW"]

STEPPER = "ssprk3"
"""The stepper of the fine run and of the coarse model (its stages: ``STAGES[STEPPER]``)."""
PRESCRIBED_FLOW = ("kinematic",)
"""Scenarios whose coarse transport is prescribed (a function of time only)."""



@dataclass
class CoarseStep:
    """One coarse step of a truth run, coarse-grained.

    Attributes
    ----------
    t : float
        Time at the start of the step.
    dt : float
        Coarse step ``m · dt_fine``.
    state : dict of str -> Tensor, shape (n_coarse_cells,)
        ``restrict(q)`` at ``t`` (every variable of the fine state).
    flux : dict of str -> Tensor, shape (n_coarse_faces,)
        Step-mean subgrid flux ``Φ̄^sgs`` per conserved variable.
    forcing : dict of str -> Tensor, shape (n_coarse_cells,)
        Step mean of ``restrict`` of the scenario's random forcing (empty if none).
    boundary_flux : dict of str -> Tensor, shape (n_coarse_boundary_faces,)
        Step mean of the subgrid boundary flux ``B^sgs`` (zeros at walls).
    flux_start : dict of str -> Tensor, shape (n_coarse_faces,)
        The instantaneous ``Φ^sgs`` at ``t`` (what a dataset of instantaneous samples
        holds; replaying it over the step is the comparison that shows why the step
        mean is needed).
    stage_flux, stage_forcing : list of dict, optional
        Per fine stage (``keep_stages=True``), in the order the stepper calls them.
    """

    t: float
    dt: float
    state: State
    flux: State
    forcing: State
    flux_start: State = field(default_factory=dict)
    boundary_flux: State = field(default_factory=dict)
    stage_flux: Optional[List[State]] = None
    stage_forcing: Optional[List[State]] = None
    extra: dict = field(default_factory=dict)


def coarse_steps(scenario, t: float, state: Mapping[str, Tensor], n_steps: int,
                 every: Optional[int] = None, keep_stages: bool = False
                 ) -> Iterator[Tuple[float, State, CoarseStep]]:
    """Advance the fine run by ``n_steps`` coarse steps, yielding each with its step means.

    Parameters
    ----------
    scenario : Scenario
    t : float
        Fine time.
    state : dict of str -> Tensor, shape (n_fine_cells,)
    n_steps : int
        Coarse steps.
    every : int, optional
        Fine steps per coarse step (default ``scenario.coarse_every``).
    keep_stages : bool
        Keep every stage's ``Φ^sgs`` and forcing as well.

    Yields
    ------
    (t, state, step)
        The fine time and state at the END of the coarse step, and the
        :class:`CoarseStep` (which holds the coarse state at its start).
    """
    m = int(scenario.coarse_every if every is None else every)
    if m < 1 or n_steps < 0:
        raise ValueError(f"every must be >= 1 and n_steps >= 0; got every={m}, "
                         f"n_steps={n_steps}.")
    c, dt = scenario.coarsening, scenario.dt
    model = scenario.model
    variables = tuple(scenario.variables)
    state = dict(state)
    for _ in range(n_steps):
        start, t0 = {k: c.restrict(v) for k, v in state.items()}, float(t)
        flux = {v: None for v in variables}
        bflux = {v: None for v in variables}
        forcing: Dict[str, Tensor] = {}
        stage_flux: List[State] = []
        stage_forcing: List[State] = []
        flux_start: State = {}
        for k in range(m):
            stages: List[Tuple[float, State]] = []

            def rhs(ts, s, stages=stages):
                stages.append((float(ts), s))
                return model.rhs(ts, s)

            new = ssprk3_step(rhs, t0 + k * dt, state, dt)
            for (ts, s), b in zip(stages, STAGES["ssprk3"].b):
                sample = subgrid_targets(scenario, c, ts, s, scenario.transport(ts, s),
                                         inputs=False, tendency=False)
                f = {k_: c.restrict(v) for k_, v in scenario.random_forcing(ts).items()}
                if not flux_start:
                    flux_start = dict(sample.flux)
                for v in variables:
                    w = b / m * sample.flux[v]
                    flux[v] = w if flux[v] is None else flux[v] + w
                    w = b / m * sample.boundary_flux[v]
                    bflux[v] = w if bflux[v] is None else bflux[v] + w
                for v, value in f.items():
                    forcing[v] = b / m * value + (forcing[v] if v in forcing else 0.0)
                if keep_stages:
                    stage_flux.append(dict(sample.flux))
                    stage_forcing.append(f)
            state = new
        t = t0 + m * dt
        yield t, state, CoarseStep(t=t0, dt=m * dt, state=start, flux=flux, forcing=forcing,
                                   boundary_flux=bflux, flux_start=flux_start,
                                   stage_flux=stage_flux if keep_stages else None,
                                   stage_forcing=stage_forcing if keep_stages else None)


class _Replay:
    """Closure and forcing that return a :class:`CoarseStep`'s fluxes (step mean, or per stage)."""

    def __init__(self, stagewise: bool, instantaneous: bool = False) -> None:
        self.stagewise, self.instantaneous = stagewise, instantaneous
        self.step, self.calls = None, [0, 0]

    def set(self, step: CoarseStep) -> None:
        self.step, self.calls = step, [0, 0]

    def closure(self, t, state, mesh):
        i = self.calls[0]
        self.calls[0] += 1
        if self.stagewise:
            return self.step.stage_flux[i]
        return self.step.flux_start if self.instantaneous else self.step.flux

    def forcing(self, t):
        i = self.calls[1]
        self.calls[1] += 1
        return self.step.stage_forcing[i] if self.stagewise else self.step.forcing


def replay(scenario, steps: Sequence[CoarseStep], closure: bool = True,
           stagewise: bool = False, forcing: str = "replay",
           instantaneous: bool = False) -> List[State]:
    """Run the coarse model from ``steps[0].state`` over ``steps``, replaying their fluxes.

    Parameters
    ----------
    scenario : Scenario
    steps : sequence of CoarseStep
        Consecutive coarse steps (from :func:`coarse_steps`).
    closure : bool
        Replay ``Φ̄^sgs`` (or each stage's ``Φ^sgs`` with ``stagewise``); False: no closure.
    stagewise : bool
        Replay per stage (steps made with ``every=1, keep_stages=True``).
    instantaneous : bool
        Replay the instantaneous ``Φ^sgs`` at each step's start instead of the step mean.
    forcing : {"replay", "model"}
        ``"replay"``: the steps' step-mean (or per-stage) forcing; ``"model"``: the
        coarse model's own, ``restrict(F(t))`` at its stage times.

    Returns
    -------
    list of dict
        The coarse state after each step.
    """
    if forcing not in ("replay", "model"):
        raise ValueError(f"forcing must be 'replay' or 'model'; got {forcing!r}.")
    rep = _Replay(stagewise, instantaneous)
    model = scenario.coarse_model(closure=rep.closure if closure else None,
                                  forcing=rep.forcing if forcing == "replay" else None)
    variables = tuple(scenario.variables)
    state = {v: steps[0].state[v] for v in variables}
    out = []
    for step in steps:
        rep.set(step)
        state = ssprk3_step(model.rhs, step.t, state, step.dt)
        out.append(state)
    return out


# ------------------------------------------------------------------ trajectories
def prescribed_coarse_transport(scenario) -> Optional[Callable[[float], Tensor]]:
    """``t -> U_c(t) (n_coarse_faces,)``, the transport the coarse model is given, for a
    scenario with a prescribed flow (:data:`PRESCRIBED_FLOW`); None for a prognostic flow."""
    if scenario.name not in PRESCRIBED_FLOW:
        return None
    return scenario.coarse_model().base.face_transport


def trajectory_samples(scenario, t: float, state: Mapping[str, Tensor], n_steps: int
                       ) -> Iterator[Tuple[float, State, SubgridSample]]:
    """Coarse step by coarse step: the sample at each step's start and what leads to the next.

    Each yielded :class:`~meshclosure.data.targets.SubgridSample` holds the
    coarse state at ``t`` with its instantaneous targets and inputs (as an
    ordinary dataset sample), plus the step means of the coarse step
    ``[t, t + coarse_dt]`` from :func:`coarse_steps` (``step_flux``,
    ``step_boundary_flux``, ``step_forcing``) and, for a prescribed flow, the
    coarse transport at the stepper's stage times ``t + c_s coarse_dt``
    (``transport_stages``, shape ``(n_stages, n_coarse_faces)``).

    Yields
    ------
    (t, state, sample)
        The fine time and state at the END of the step, and the sample at its start.
    """
    c = scenario.coarsening
    transport = prescribed_coarse_transport(scenario)
    for _ in range(int(n_steps)):
        sample = subgrid_targets(scenario, c, t, state, scenario.transport(t, state))
        ((t_next, state_next, step),) = list(coarse_steps(scenario, t, state, 1))
        sample.step_flux = step.flux
        sample.step_boundary_flux = step.boundary_flux
        sample.step_forcing = step.forcing
        if transport is not None:
            sample.transport_stages = torch.stack(
                [transport(step.t + ci * step.dt).to(torch.float64) for ci in STAGES[STEPPER].c])
        yield t_next, state_next, sample
        t, state = t_next, state_next


def trajectory_windows(ds, split: str, length: int) -> List[Tuple[int, int]]:
    """Unroll windows of a trajectory dataset: ``(run, start)`` whose ``length + 1``
    consecutive states all belong to ``split``.

    A window never crosses a split boundary, a gap (code 4) or padding (code
    -1), because every one of its states carries the split's own code; the
    step means of its first ``length`` states lead from each state to the next.

    Parameters
    ----------
    ds : xarray.Dataset
        A dataset with a ``split (run, time)`` variable.
    split : {"train", "val", "test", "ood"}
    length : int
        Coarse steps per window (>= 1).

    Returns
    -------
    list of (int, int)
        In file order.
    """
    from .dataset import SPLIT_CODES, SPLITS

    if split not in SPLITS:
        raise ArgumentError("split", split, f"must be one of {SPLITS}",
                            "pass {split}='train' (or 'val', 'test', 'ood')")
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 1:
        raise ArgumentError("length", length, "must be an integer >= 1 (coarse steps per window)",
                            "pass e.g. {length}=10")
    inside = np.asarray(ds["split"].values) == SPLIT_CODES[split]       # (run, time)
    out = []
    n = int(length) + 1
    for r in range(inside.shape[0]):
        run = inside[r].astype(np.int64)
        if run.size < n:
            continue
        full = np.convolve(run, np.ones(n, np.int64), mode="valid") == n   # all n inside
        out += [(r, int(k)) for k in np.nonzero(full)[0]]
    return out


def replay_window(scenario, window: Mapping, closure: bool = True,
                  forcing: str = "replay") -> List[State]:
    """:func:`replay` of one unbatched :class:`~meshclosure.data.TrajectoryDataset` item.

    The coarse model (``scenario.coarse_model``, e.g. from
    ``Scenario.from_config(dataset.scenario_config)``) runs from the window's
    start state over its ``length`` coarse steps, given each step's stored
    ``Φ̄^sgs`` (``closure``) and step-mean forcing, constant over the step's
    stages. Returns the state after each step (compare with ``window["states"]``).
    """
    t = [float(v) for v in window["t"]]
    n = len(t) - 1
    variables = tuple(scenario.variables)
    steps = [CoarseStep(t=t[j], dt=float(scenario.coarse_dt),
                        state={v: window["state"][v] for v in variables} if j == 0 else {},
                        flux={v: window["flux_mean"][v][j] for v in variables},
                        forcing={v: f[j] for v, f in window["forcing_mean"].items()})
             for j in range(n)]
    return replay(scenario, steps, closure=closure, forcing=forcing)
