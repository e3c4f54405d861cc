"""One member of an online run, audited every step (helpers of
:mod:`meshclosure.validate.online`): the coarse model from a truth state, the
blow-up detector, and the budget of every variable from :func:`budget_terms`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from ..errors import ArgumentError, MeshclosureError
from ._online_truth import Truth

__all__ = ["budget_terms", "run_member", "Run", "is_tendency", "coarse_model_for",
           "guarded_rollout", "Guarded", "check_bound"]


# ------------------------------------------------------------------ budget terms
def _unwrap(model: Any) -> Tuple[Any, Optional[Callable]]:
    """``(base solver model, extra sources)`` of a scenario's coarse model (``_Augmented``:
    a base model plus diffusion, which conserves, and cell-local extra sources)."""
    if hasattr(model, "base") and hasattr(model, "diffusivity") and hasattr(model, "extra"):
        return model.base, model.extra
    return model, None


def _total(x: Tensor, V: Tensor) -> float:
    return float((V * x.double().reshape(V.shape[0], -1).sum(1)).sum())


def budget_terms(model: Any, t: float, state: Mapping[str, Tensor]) -> Dict[str, float]:
    """``∫S_v − boundary outflow_v`` of every prognostic variable at ``(t, state)``.

    The volume integral ``Σ_i V_i S_{v,i}`` of the cell-local terms of ``model``'s
    right-hand side (sources, relaxation, drag, forcing, a scenario's extra
    sources; for :class:`~meshclosure.solver.BoussinesqModel` also the buoyancy
    torque ``∂b/∂x`` of ζ) minus the net prescribed outward boundary flux. Face
    fluxes (advection, diffusion, closures, flux noise) cancel in the sum and do
    not appear: ``d/dt Σ V q_v`` equals this to rounding.

    Parameters
    ----------
    model : TracerModel, BarotropicModel, BoussinesqModel, or a scenario's coarse model
        (``scenario.coarse_model(...)``: one of those plus diffusion and sources).
    t : float
    state : dict of str -> Tensor, shape (n_cells,)

    Returns
    -------
    dict of str -> float
        One entry per variable of ``state`` the model advances.

    Examples
    --------
    >>> import torch
    >>> from meshclosure.mesh import cartesian
    >>> from meshclosure.solver import TracerModel
    >>> mesh = cartesian(4, 4)
    >>> m = TracerModel(mesh, torch.zeros(mesh.n_faces, dtype=torch.float64),
    ...                 relaxation=(2.0, 1.0))
    >>> budget_terms(m, 0.0, {"q": torch.zeros(16, dtype=torch.float64)})   # 2 · 1 · area 1
    {'q': 2.0}
    >>> budget_terms(object(), 0.0, {})
    Traceback (most recent call last):
    ...
    meshclosure.errors.ArgumentError: model='object': must be a TracerModel, BarotropicModel or BoussinesqModel, or a scenario's coarse model built on one; pass scenario.coarse_model(closure=...).
    """
    from ..fv.gradients import gradient
    from ..solver import BarotropicModel, TracerModel
    from ..solver.barotropic import BoussinesqModel

    base, extra = _unwrap(model)
    if not isinstance(base, (TracerModel, BarotropicModel)):
        raise ArgumentError("model", type(model).__name__, "must be a TracerModel, "
                            "BarotropicModel or BoussinesqModel, or a scenario's coarse model "
                            "built on one", "pass scenario.coarse_model(closure=...)")
    mesh = base.mesh
    V = mesh.cell_volume.double()
    out: Dict[str, float] = {}
    if isinstance(base, TracerModel):
        q = state[base.var]
        s = 0.0
        if base.source is not None:
            src = base.source(t, state) if callable(base.source) else base.source
            s += _total(src, V)
        if base.relaxation is not None:
            rate, target = base.relaxation
            s -= rate * _total(q - target, V)
        b = base.boundary_flux(t) if callable(base.boundary_flux) else base.boundary_flux
        if b is not None:
            s -= float(b.double().sum())
        out[base.var] = s
    else:
        zeta = state["zeta"]
        s = -float(base.drag) * _total(zeta, V)
        if base.forcing is not None:
            f = base.forcing(t, state) if callable(base.forcing) else base.forcing
            s += _total(f, V)
        out = {k: 0.0 for k in state}
        if isinstance(base, BoussinesqModel):
            s += _total(gradient(mesh, state["b"], operators=base.operators)[:, 0], V)
            b = base.buoyancy_flux(t) if callable(base.buoyancy_flux) else base.buoyancy_flux
            if b is not None:
                out["b"] = -float(b.double().sum())
        out["zeta"] = s
    if extra is not None:
        for k, src in extra(t, state).items():
            out[k] = out.get(k, 0.0) + _total(src, V)
    return out


def is_tendency(closure: Any) -> bool:
    """A per-cell tendency closure (:class:`~meshclosure.closures.tendency.TendencyClosure`,
    e.g. ``nodewise``): it has ``tendencies(t, state, mesh, transport)``, no face fluxes."""
    return callable(getattr(closure, "tendencies", None))


class _Audited:
    """A model whose ``rhs`` records each stage's ``(t, state)`` for the budget;
    ``diagnose`` is the model's."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.stages: List[Tuple[float, Dict[str, Tensor]]] = []

    def rhs(self, t: float, state: Mapping[str, Tensor]) -> Dict[str, Tensor]:
        self.stages.append((float(t), dict(state)))
        return self.model.rhs(t, state)

    def diagnose(self, t: float, state: Mapping[str, Tensor]):
        diagnose = getattr(self.model, "diagnose", None)
        return diagnose(t, state) if diagnose is not None else None


def coarse_model_for(scenario: Any, closure: Any, forcing: Any = None) -> Any:
    """``scenario.coarse_model`` with ``closure``: face fluxes through the model's own
    divergence, or, for a cell-tendency closure (:func:`is_tendency`), added to its
    right-hand side by :func:`~meshclosure.closures.tendency.with_tendency`."""
    if is_tendency(closure):
        from ..closures.tendency import with_tendency

        return with_tendency(scenario.coarse_model(forcing=forcing), closure)
    return scenario.coarse_model(closure=closure, forcing=forcing)


class _Replay:
    """Closure and forcing that return stored step means ``{v: (steps, n)}`` of step
    ``start + index`` (the runner sets ``index`` after every step)."""

    def __init__(self, flux: Mapping[str, Tensor], forcing: Optional[Mapping[str, Tensor]] = None,
                 start: int = 0) -> None:
        self.flux, self.forcing_mean = dict(flux), dict(forcing or {})
        self.start, self.index = start, 0

    def closure(self, t, state, mesh):
        k = self.start + self.index
        return {v: f[k] for v, f in self.flux.items()}

    def forcing(self, t):
        k = self.start + self.index
        return {v: f[k] for v, f in self.forcing_mean.items()}


def check_bound(growth_bound: Any) -> float:
    """``growth_bound`` as a float, refused unless finite and > 1."""
    import math

    if isinstance(growth_bound, bool) or not (isinstance(growth_bound, (int, float))
                                              and math.isfinite(growth_bound)
                                              and growth_bound > 1):
        raise ArgumentError("growth_bound", growth_bound, "must be a finite number > 1 (a "
                            "multiple of the truth's largest |value|)",
                            "pass e.g. {growth_bound}=10")
    return float(growth_bound)


@dataclass
class Guarded:
    """What :func:`guarded_rollout` reports: steps taken and where (whether) it stopped."""

    steps: int
    blowup_step: Optional[int]
    blowup_reason: str


def guarded_rollout(model: Any, state: Mapping[str, Tensor], dt: float, n_steps: int,
                    t0: float, bound: Mapping[str, float], growth_bound: float,
                    on_step: Optional[Callable[[int, float, Dict[str, Tensor]], None]] = None
                    ) -> Guarded:
    """THE blow-up detector of every run of the validation stages (online, partially
    coupled, single column): ``model`` from ``state`` for ``n_steps`` steps of the
    dataset's stepper with :func:`~meshclosure.solver.integrate.rollout`'s NaN guard,
    stopped at the first step where ``max|x_v| > growth_bound · bound[v]`` (``bound``:
    the truth's largest ``|value|`` per variable; a variable the truth holds at 0 has
    no scale and no bound) or where the closure refuses the state the run reached
    (a :class:`~meshclosure.errors.MeshclosureError` after the first step; at the
    first step it is raised: a misuse). ``on_step(n, t, state)`` sees every step
    taken (``n >= 1``) before its growth check.

    >>> import torch
    >>> class Grow:
    ...     def rhs(self, t, s):
    ...         return {"y": s["y"]}
    >>> g = guarded_rollout(Grow(), {"y": torch.ones(1, dtype=torch.float64)}, 1.0, 5, 0.0,
    ...                     {"y": 1.0}, 10.0)           # y = (8/3)^n: 18.96 > 10 at step 3
    >>> g.steps, g.blowup_step, g.blowup_reason
    (3, 3, "max|y| = 19 > 10 × the truth's max 1")
    """
    import math

    from ..data.trajectory import STEPPER
    from ..solver.integrate import NonFiniteStateError, rollout

    limit = {v: growth_bound * b if b > 0 else math.inf for v, b in bound.items()}
    out = Guarded(0, None, "")
    try:
        for n, t, new in rollout(model, state, dt, n_steps, t0=t0, stepper=STEPPER):
            if n == 0:
                continue
            out.steps = n
            if on_step is not None:
                on_step(n, t, new)
            grown = [v for v in limit if float(new[v].abs().max()) > limit[v]]
            if grown:
                v = grown[0]
                out.blowup_step = n
                out.blowup_reason = (f"max|{v}| = {float(new[v].abs().max()):.3g} > "
                                     f"{growth_bound:g} × the truth's max {bound[v]:.3g}")
                break
    except NonFiniteStateError as err:
        out.blowup_step = int(err.step)
        out.blowup_reason = f"not finite ({err.cause}) in {err.variable!r}"
    except MeshclosureError as err:
        if out.steps == 0:          # the first step failed: a misuse, not a finding
            raise
        # a closure that refuses the state its run reached (e.g. K(N) with N <= 0
        # somewhere) stops the member like a blow-up, with the reason
        out.blowup_step = out.steps + 1
        out.blowup_reason = f"stopped: {type(err).__name__}: {err}"
    return out


# ------------------------------------------------------------------------ one run
@dataclass
class Run:
    """One member: states aligned with the truth, its budget and where it stopped."""

    start: int
    states: Dict[str, List[Tensor]]
    residual: Dict[str, List[float]]
    scale: Dict[str, float]
    steps: int = 0
    blowup_step: Optional[int] = None
    blowup_reason: str = ""

    def scaled(self) -> Dict[str, float]:
        return {v: (r[-1] if r else 0.0) / self.scale[v] for v, r in self.residual.items()}


def run_member(truth: Truth, closure: Any, start: int, n_truth: int, n_total: int,
               growth_bound: float, replay: Optional[str] = None) -> Run:
    """Run the coarse model from truth state ``start`` for ``n_total`` steps, the first
    ``n_truth`` of which the truth covers (their states are kept).

    ``replay``: ``None`` runs ``closure``; ``"replay"`` replays the truth's step-mean
    subgrid flux and forcing instead, ``"model"`` the step-mean flux with the coarse
    model's own forcing ``restrict(F(t))`` at the stage times.
    """
    from ..solver.steppers import STAGES
    from ..data.trajectory import STEPPER

    sc, variables = truth.scenario, truth.variables
    rep = (_Replay({v: truth.flux_mean[v] for v in variables}, truth.forcing_mean, start)
           if replay is not None else None)
    if rep is not None:
        forcing = rep.forcing if truth.forcing_mean and replay == "replay" else None
        model = run_model = sc.coarse_model(closure=rep.closure, forcing=forcing)
    else:
        model = run_model = coarse_model_for(sc, closure)
        if is_tendency(closure):         # the budget of the coarse model it is added to
            model = run_model.model                 # (with_tendency keeps it as .model)
    if callable(getattr(closure, "reset", None)):
        closure.reset()
    audited = _Audited(run_model)
    V = truth.mesh.cell_volume.double()
    b = STAGES[STEPPER].b
    dt = truth.coarse_dt
    state = {v: truth.states[v][start].clone() for v in variables}
    run = Run(start=start, states={v: [state[v]] for v in variables},
              residual={v: [] for v in variables}, scale={})
    acc = {v: 0.0 for v in variables}
    prev = {v: _total(state[v], V) for v in variables}
    last = [state]

    def audit(n: int, t: float, new: Dict[str, Tensor]) -> None:
        terms = [budget_terms(model, ts, ys) for ts, ys in audited.stages]
        audited.stages.clear()
        for v in variables:
            expected = sum(w * tm[v] for w, tm in zip(b, terms))
            now = _total(new[v], V)
            acc[v] += now - prev[v] - dt * expected
            prev[v] = now
            run.residual[v].append(acc[v])
        last[0] = new
        if n <= n_truth:
            for v in variables:
                run.states[v].append(new[v])
        if rep is not None:
            rep.index = n

    with torch.no_grad():
        g = guarded_rollout(audited, state, dt, n_total, float(truth.t[start]),
                            {v: truth.bound[v] for v in variables}, growth_bound, audit)
    audited.stages.clear()
    run.steps, run.blowup_step, run.blowup_reason = g.steps, g.blowup_step, g.blowup_reason
    last = last[0]
    run.scale = {v: max(_total(last[v].abs(), V), np.finfo(float).tiny) for v in variables}
    return run
