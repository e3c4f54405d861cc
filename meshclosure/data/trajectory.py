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
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from torch import Tensor

from ..solver.steppers import STAGES, ssprk3_step
from .targets import subgrid_targets

__all__ = ["CoarseStep", "coarse_steps", "replay"]

State = Dict[str, Tensor]


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
                                         inputs=False)
                f = {k_: c.restrict(v) for k_, v in scenario.random_forcing(ts).items()}
                if not flux_start:
                    flux_start = dict(sample.flux)
                for v in variables:
                    w = b / m * sample.flux[v]
                    flux[v] = w if flux[v] is None else flux[v] + w
                for v, value in f.items():
                    forcing[v] = b / m * value + (forcing[v] if v in forcing else 0.0)
                if keep_stages:
                    stage_flux.append(dict(sample.flux))
                    stage_forcing.append(f)
            state = new
        t = t0 + m * dt
        yield t, state, CoarseStep(t=t0, dt=m * dt, state=start, flux=flux, forcing=forcing,
                                   flux_start=flux_start,
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
