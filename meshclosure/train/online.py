"""Online (a posteriori) training: unroll the coarse hybrid model with the network as closure.

Offline training fits the subgrid flux one sample at a time; online training
fits what the solver does with it (Frezat et al. 2022, "A posteriori learning
for quasi-geostrophic turbulence parametrization", JAMES,
https://doi.org/10.1029/2022MS003124; Kochkov et al. 2024, NeuralGCM,
https://doi.org/10.1038/s41586-024-07744-y). From the start state ``Q̄⁰`` of a
trajectory window the coarse model of the scenario (``scenario.coarse_model``,
exactly the operator the subgrid targets were defined for) takes ``K`` SSP-RK3
steps of ``Δ_c = dataset.coarse_dt`` with the closure's face fluxes::

    Q̂⁰ = Q̄⁰,    Q̂ʲ⁺¹ = step_c(Q̂ʲ; Φ̂_θ),    j = 0 .. K−1

replaying the stored step-mean forcing of each step (constant over its
stages, as :func:`~meshclosure.data.trajectory.replay_window` does; for a
prescribed flow the coarse transport is the scenario's own, checked against
the window's stored ``transport_stages``), and the loss compares every step
with the coarse-grained truth ``Q̄ʲ`` of the window::

    L(θ) = Σ_j w_j e_j / Σ_j w_j,
    e_j = (1/n_vars) Σ_v mean_windows[Σ_i V_i (Q̂ʲ_{v,i} − Q̄ʲ_{v,i})² / Σ_i V_i] / σ_v²

with ``σ_v`` a per-variable scale (the training-split standard deviation of
``state_<v>``, :func:`state_scales`), so variables in different units weigh
equally; ``e_j`` is dimensionless.

The mechanics the issue asks for:

* truncated backpropagation through time: every ``T`` steps the state is
  detached (and a recurrent closure's memory, ``closure.detach_state()``);
  ``T >= K`` is plain backpropagation;
* per-step gradient checkpointing (``torch.utils.checkpoint``, non-reentrant):
  each step's activations are recomputed in the backward pass, so memory holds
  only the ``K`` states, not ``K`` steps of activations, at about one extra
  forward pass of cost; the gradient equals plain backpropagation's to rounding;
* a rollout-length curriculum, :class:`Curriculum`;
* a non-finite guard: ``info["finite"]`` / :func:`rollout_finite`, and
  :class:`LastGoodWeights` to restore the model and optimizer after a bad update.

Examples
--------
>>> c = Curriculum([(0, 1), (5, 3), (10, 10)])
>>> [c(e) for e in (0, 4, 5, 9, 10, 99)]
[1, 1, 3, 3, 10, 10]
>>> Curriculum([(0, 2), (10, 6)], mode="linear")(5)
4
>>> Curriculum([(3, 1)])
Traceback (most recent call last):
...
meshclosure.errors.ArgumentError: schedule=[(3, 1)]: must start at epoch/update 0, with strictly increasing starts and rollout lengths K >= 1 (integers); pass e.g. Curriculum([(0, 1), (5, 3), (10, 10)]).
"""
from __future__ import annotations

import copy
import math
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint as _checkpoint

from ..errors import ArgumentError
from ..solver.steppers import STAGES, at_step, ssprk3_step
from ..typing import State

__all__ = ["unroll", "online_loss", "state_scales", "rollout_finite", "Curriculum",
           "LastGoodWeights"]


# ------------------------------------------------------------------------- helpers
def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _as_scenario(scenario: Any):
    """A :class:`~meshclosure.data.scenarios.Scenario`, or one rebuilt from its config dict."""
    if isinstance(scenario, Mapping):
        from ..data.scenarios import Scenario

        return Scenario.from_config(dict(scenario))
    if not callable(getattr(scenario, "coarse_model", None)):
        raise ArgumentError("scenario", type(scenario).__name__,
                            "must be a Scenario (with coarse_model) or its config dict",
                            "pass Scenario.from_config(dataset.scenario_config)")
    return scenario


def _window_scenario(scenario, scenarios: Optional[Callable[[int], Any]],
                     window: Mapping[str, Any]):
    """The scenario of ``window``'s run: ``scenarios(run)`` when given, else ``scenario``."""
    if scenarios is None or "run" not in window:
        return scenario
    return _as_scenario(scenarios(int(window["run"])))


def _window_length(window: Mapping[str, Any]) -> int:
    return int(window["t"].shape[-1]) - 1


def _check_steps(steps: Any, truncation: Any, length: int) -> Tuple[int, int]:
    if not _is_int(steps) or steps < 1:
        raise ArgumentError("steps", steps, "must be an integer >= 1 (coarse steps to unroll)",
                            "pass e.g. {steps}=3")
    if steps > length:
        raise ArgumentError("steps", steps, f"must be <= the window's length ({length} coarse "
                            "steps of stored truth)", "build TrajectoryDataset(..., "
                            f"length={steps}) or longer, or pass {{steps}}<={length}")
    if truncation is None:
        return int(steps), int(steps)
    if not _is_int(truncation) or truncation < 1:
        raise ArgumentError("truncation", truncation, "must be None or an integer >= 1 (steps "
                            "between detaches for truncated backpropagation)",
                            "pass None (plain backpropagation) or e.g. {truncation}=5")
    return int(steps), int(truncation)


def _split_batch(batch: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """The windows of a collated batch (or ``[batch]`` for one unbatched item)."""
    if batch["t"].dim() == 1:
        return [dict(batch)]
    n = int(batch["t"].shape[0])

    def pick(value: Any, b: int) -> Any:
        if isinstance(value, Tensor) and value.dim() >= 1 and value.shape[0] == n:
            return value[b]
        if isinstance(value, Mapping):
            return {k: pick(v, b) for k, v in value.items()}
        return value

    return [{k: pick(v, b) for k, v in batch.items()} for b in range(n)]


class _StepForcing:
    """``t -> {var: forcing_mean[var][j]}`` for the step ``j`` in progress (constant over
    its stages)."""

    def __init__(self, forcing_mean: Mapping[str, Tensor]) -> None:
        self.forcing_mean, self.j = dict(forcing_mean), 0

    def __call__(self, t: float) -> State:
        return {v: f[self.j] for v, f in self.forcing_mean.items()}


def _check_transport(scenario, model, window: Mapping[str, Any], dt: float) -> None:
    """For a prescribed flow: the coarse model's ``U_c(t)`` at the first step's stage times
    must be the window's stored ``transport_stages`` (else the scenario is not the file's)."""
    transport = getattr(getattr(model, "base", None), "face_transport", None)
    if "transport_stages" not in window or not callable(transport):
        return
    t0 = float(window["t"][0])
    for s, c in enumerate(STAGES["ssprk3"].c):
        stored = window["transport_stages"][0, s]
        mine = transport(t0 + c * dt).to(stored)
        scale = float(stored.abs().max()) or 1.0
        if float((mine - stored).abs().max()) > 1e-9 * scale:
            raise ArgumentError("scenario", scenario,
                                "must be the scenario the window was generated with (its "
                                f"coarse transport at t={t0 + c * dt:.6g} differs from the "
                                "stored transport_stages)", "pass Scenario.from_config("
                                "dataset.scenario_config)")


def _stored_transport(stages: Tensor, times: Sequence[float], dt: float, current: List[int]):
    """``t -> U_c(t)`` from a window's ``transport_stages (length, n_stages, n_faces)`` for
    the step ``current[0]`` (its stage times ``t_j + c_s dt``)."""
    c = STAGES["ssprk3"].c

    def transport(t: float) -> Tensor:
        j = current[0]
        s = min(range(len(c)), key=lambda k: abs(t - times[j] - c[k] * dt))
        if abs(t - times[j] - c[s] * dt) > 1e-9 * max(1.0, abs(times[j]) + dt):
            raise ArgumentError("t", t, f"must be a stage time of coarse step {j} "
                                f"(t_j + c dt, c in {c})", "step the coarse model with ssprk3 "
                                "and the dataset's coarse_dt")
        return stages[j, s]

    return transport


# --------------------------------------------------------------------------- unroll
def _unroll_window(scenario, closure, window: Mapping[str, Any], steps: int, truncation: int,
                   checkpoint: bool, forcing: str) -> List[State]:
    variables = tuple(scenario.variables)
    dt = float(scenario.coarse_dt)
    t = [float(v) for v in window["t"]]
    missing = [v for v in variables if v not in window["state"]]
    if missing:
        raise ArgumentError("scenario", scenario, f"must have the window's variables (the window "
                            f"has {sorted(window['state'])}, not {missing})",
                            "pass Scenario.from_config(dataset.scenario_config)")
    if abs((t[1] - t[0]) - dt) > 1e-9 * dt:
        raise ArgumentError("scenario", scenario,
                            f"must have the window's coarse step (coarse_dt={dt:.6g}, the window "
                            f"steps by {t[1] - t[0]:.6g})", "pass Scenario.from_config("
                            "dataset.scenario_config)")
    replayed = _StepForcing(window.get("forcing_mean", {})) if forcing == "replay" else None
    model = scenario.coarse_model(closure=closure, forcing=replayed)
    _check_transport(scenario, model, window, dt)
    current = [0]
    base = getattr(model, "base", None)
    if "transport_stages" in window and hasattr(base, "transport"):
        # the stored stage transports (checked equal to the model's own above): no fresh
        # synthesis of the prescribed flow at every stage of every step
        base.transport = _stored_transport(window["transport_stages"], t, dt, current)
    recurrent = bool(getattr(closure, "recurrent", False)) and hasattr(closure, "h")
    if callable(getattr(closure, "reset", None)):
        closure.reset()

    def one_step(j: int, t_j: float, h: Optional[Tensor], *values: Tensor):
        current[0] = j
        if replayed is not None:
            replayed.j = j
        if recurrent:                      # the memory the step starts with (also on recompute)
            closure.h = h
        with at_step(j):
            new = ssprk3_step(model.rhs, t_j, dict(zip(variables, values)), dt)
        return (getattr(closure, "h", None) if recurrent else None,
                *(new[v] for v in variables))

    state = tuple(window["state"][v] for v in variables)
    h = None
    out: List[State] = []
    for j in range(steps):
        if j > 0 and j % truncation == 0:
            state = tuple(s.detach() for s in state)
            h = None if h is None else h.detach()
            if callable(getattr(closure, "detach_state", None)):
                closure.detach_state()
        if recurrent:
            h = closure.h
        if checkpoint and torch.is_grad_enabled():
            h, *state = _checkpoint(one_step, j, t[j], h, *state, use_reentrant=False)
        else:
            h, *state = one_step(j, t[j], h, *state)
        if recurrent:
            closure.h = h
        state = tuple(state)
        out.append(dict(zip(variables, state)))
    return out


def unroll(scenario: Any, closure: Any, window: Mapping[str, Any], steps: int,
           truncation: Optional[int] = None, checkpoint: bool = False,
           forcing: str = "replay", scenarios: Optional[Callable[[int], Any]] = None
           ) -> List[State]:
    """Run the coarse hybrid model ``steps`` coarse steps from a window's start state.

    Parameters
    ----------
    scenario : Scenario or dict
        The scenario the data came from (``Scenario.from_config(dataset.scenario_config)``,
        or that config); its ``coarse_model(closure, forcing)`` is run.
    closure : Closure or callable or None
        The closure, e.g. a :class:`~meshclosure.closures.ModelClosure` (its parameters
        get the gradient); ``None`` runs the coarse model without closure. A recurrent
        closure is ``reset()`` at the start of each window.
    window : dict
        One :class:`~meshclosure.data.TrajectoryDataset` item, or a collated batch
        (``dataset.collate``), whose windows are unrolled one after the other.
    steps : int
        ``K``, coarse steps (``1 <= K <=`` the window's length).
    truncation : int, optional
        ``T``: every ``T`` steps the state (and a recurrent closure's memory) is
        detached; ``None`` or ``T >= K`` is plain backpropagation through time.
    checkpoint : bool
        Recompute each step's activations in the backward pass
        (``torch.utils.checkpoint``, non-reentrant); same gradient, memory does not grow
        with ``K`` beyond the states. A closure that draws its own random numbers from a
        ``torch.Generator`` draws different ones on recompute: use it only with
        deterministic closures (or the global RNG, whose state checkpointing restores).
    forcing : {"replay", "model"}
        ``"replay"``: the window's stored step-mean forcing, constant over each step;
        ``"model"``: the coarse model's own ``restrict(F(t))`` at its stage times.
    scenarios : callable ``run -> Scenario``, optional
        The scenario of each window's run (``window["run"]``), for datasets of many
        runs (:func:`~meshclosure.data.generate_runs`: every run has its own seed, so
        its own prescribed transport and random forcing;
        :func:`~meshclosure.data.scenario_for_run`). Default: ``scenario`` for every
        window.

    Returns
    -------
    list of dict of str -> Tensor
        ``steps`` states (after steps 1..K); values ``(n_cells,)`` for one window,
        ``(B, n_cells)`` for a batch of ``B`` windows (stacked in batch order).

    Raises
    ------
    ArgumentError
        ``steps < 1`` or longer than the window, ``truncation < 1``, an unknown
        ``forcing``, or a scenario that is not the window's (its coarse step or its
        prescribed transport differ from the stored ones).
    """
    if forcing not in ("replay", "model"):
        raise ArgumentError("forcing", forcing, "must be 'replay' or 'model'",
                            "pass {forcing}='replay' (the stored step-mean forcing)")
    scenario = _as_scenario(scenario)
    steps, truncation = _check_steps(steps, truncation, _window_length(window))
    if checkpoint and getattr(closure, "mode", None) == "sample" \
            and getattr(closure, "generator", None) is not None:
        raise ArgumentError("checkpoint", checkpoint, "cannot be used with a closure that samples "
                            "from its own torch.Generator (the recomputed steps would draw other "
                            "numbers and the gradient would be wrong)", "pass {checkpoint}=False, "
                            "or build the ModelClosure without a generator (global RNG)")
    windows = _split_batch(window)
    runs = [_unroll_window(_window_scenario(scenario, scenarios, w), closure, w, steps,
                           truncation, bool(checkpoint), forcing) for w in windows]
    if window["t"].dim() == 1:
        return runs[0]
    return [{v: torch.stack([run[j][v] for run in runs]) for v in runs[0][j]}
            for j in range(steps)]


# ----------------------------------------------------------------------------- loss
def state_scales(stats: Any, variables: Optional[Sequence[str]] = None) -> Dict[str, float]:
    """Per-variable state scales ``σ_v``: the training-split standard deviation of
    ``state_<v>`` from :class:`~meshclosure.data.NormalizationStats` (``dataset.stats``,
    or its dict): ``input_scale`` at ``input_names.index("state_<v>")``."""
    d = stats if isinstance(stats, Mapping) else stats.to_dict()
    names = list(d["input_names"])
    variables = tuple(variables if variables is not None else d["variables"])
    out = {}
    for v in variables:
        if f"state_{v}" not in names:
            raise ArgumentError("stats", names, f"must hold the input 'state_{v}'",
                                "pass dataset.stats of the trajectory dataset")
        out[v] = float(d["input_scale"][names.index(f"state_{v}")])
    return out


def rollout_finite(states: Sequence[Mapping[str, Tensor]]) -> bool:
    """True when every value of every state of a rollout is finite (no NaN or inf)."""
    return all(bool(torch.isfinite(s.detach()).all()) for state in states
               for s in state.values())


def online_loss(scenario: Any, closure: Any, batch: Mapping[str, Any], steps: int,
                truncation: Optional[int] = None, checkpoint: bool = False,
                state_scale: Union[None, Mapping[str, float], Any] = None,
                weights: Optional[Sequence[float]] = None,
                forcing: str = "replay", scenarios: Optional[Callable[[int], Any]] = None
                ) -> Tuple[Tensor, Dict[str, Any]]:
    """The online loss ``L(θ)`` of the module docstring on a batch of trajectory windows.

    Parameters
    ----------
    scenario, closure, steps, truncation, checkpoint, forcing, scenarios
        As in :func:`unroll`.
    batch : dict
        A collated batch of :class:`~meshclosure.data.TrajectoryDataset` windows (or one
        item); ``batch["states"][v]`` ``(B, length, n_cells)`` is the truth.
    state_scale : dict of str -> float, or NormalizationStats, optional
        ``σ_v`` per variable (default 1 for all); statistics are turned into scales by
        :func:`state_scales`.
    weights : sequence of float, optional
        ``w_j`` per step, shape ``(steps,)``, >= 0 with a positive sum (default all 1).

    Returns
    -------
    loss : Tensor, shape ()
        Dimensionless; NaN or inf when the rollout went non-finite (check ``info``).
    info : dict
        ``"step_error"`` ``(steps,)`` (``e_j``, detached), ``"variable_error"``
        ``{v: (steps,)}`` (the per-variable terms), ``"finite"`` (bool: every state and the
        loss finite), ``"steps"`` (K), ``"states"`` (the unrolled states, as :func:`unroll`).
    """
    scenario = _as_scenario(scenario)
    variables = tuple(scenario.variables)
    if state_scale is None:
        scales = {v: 1.0 for v in variables}
    elif isinstance(state_scale, Mapping) and set(variables) <= set(state_scale) \
            and all(isinstance(state_scale[v], (int, float)) for v in variables):
        scales = {v: float(state_scale[v]) for v in variables}
    else:
        scales = state_scales(state_scale, variables)
    for v, s in scales.items():
        if not (math.isfinite(s) and s > 0):
            raise ArgumentError("state_scale", scales, f"must be finite and > 0 for every "
                                f"variable ({v!r}: {s})", "pass state_scales(dataset.stats)")
    states = unroll(scenario, closure, batch, steps, truncation, checkpoint, forcing,
                    scenarios)
    K = len(states)
    if weights is None:
        w = torch.ones(K, dtype=torch.float64)
    else:
        w = torch.as_tensor([float(x) for x in weights], dtype=torch.float64)
        if w.shape != (K,) or not bool(torch.isfinite(w).all()) or bool((w < 0).any()) \
                or float(w.sum()) <= 0:
            raise ArgumentError("weights", list(weights), f"must hold {K} finite numbers >= 0 "
                                "with a positive sum (one per step)", "pass None (equal weights)")
    V = scenario.coarse.cell_volume
    per_var: Dict[str, List[Tensor]] = {v: [] for v in variables}
    errors = []
    for j, state in enumerate(states):
        terms = []
        for v in variables:
            truth = batch["states"][v][..., j, :]
            diff = (state[v] - truth.to(state[v])) / scales[v]
            Vv = V.to(diff)
            term = ((diff ** 2 * Vv).sum(-1) / Vv.sum()).mean()
            per_var[v].append(term)
            terms.append(term)
        errors.append(torch.stack(terms).mean())
    e = torch.stack(errors)
    w = w.to(e)
    loss = (w * e).sum() / w.sum()
    finite = rollout_finite(states) and bool(torch.isfinite(loss.detach()))
    info = {"step_error": e.detach(), "finite": finite, "steps": K, "states": states,
            "variable_error": {v: torch.stack(t).detach() for v, t in per_var.items()}}
    return loss, info


# ----------------------------------------------------------------------- curriculum
class Curriculum:
    """Rollout length ``K`` as a function of the epoch (or update) count.

    Parameters
    ----------
    schedule : sequence of (int, int)
        ``(start, K)`` pairs: from epoch/update ``start`` on, ``K`` steps. Starts are
        integers, the first 0, strictly increasing; every ``K`` an integer >= 1.
    mode : {"piecewise", "linear"}
        ``"piecewise"``: ``K`` of the last start ``<= i`` (constant between starts);
        ``"linear"``: ``K`` interpolated linearly between consecutive points and rounded
        down, constant after the last.

    ``Curriculum([(0, 1), (5, 3), (10, 10)])`` trains one-step for 5 epochs, then 3
    steps, then 10 (the short-to-long rollouts of Frezat et al. 2022 and NeuralGCM).
    """

    def __init__(self, schedule: Sequence[Tuple[int, int]], mode: str = "piecewise") -> None:
        if mode not in ("piecewise", "linear"):
            raise ArgumentError("mode", mode, "must be 'piecewise' or 'linear'",
                                "pass {mode}='piecewise'")
        try:
            points = [(a, b) for a, b in schedule]
        except (TypeError, ValueError):
            points = None
        ok = bool(points) and all(_is_int(a) and _is_int(b) and b >= 1 for a, b in points) \
            and points[0][0] == 0 and all(a1 > a0 for (a0, _), (a1, _) in
                                          zip(points, points[1:]))
        if not ok:
            raise ArgumentError("schedule", schedule, "must start at epoch/update 0, with "
                                "strictly increasing starts and rollout lengths K >= 1 "
                                "(integers)", "pass e.g. Curriculum([(0, 1), (5, 3), (10, 10)])")
        self.schedule, self.mode = points, mode

    def __call__(self, i: int) -> int:
        """``K`` at epoch/update ``i`` (an integer >= 0)."""
        if not _is_int(i) or i < 0:
            raise ArgumentError("i", i, "must be an integer >= 0 (epoch or update count)",
                                "pass the 0-based epoch")
        k = max(n for n, (a, _) in enumerate(self.schedule) if a <= i)
        a0, k0 = self.schedule[k]
        if self.mode == "piecewise" or k == len(self.schedule) - 1:
            return k0
        a1, k1 = self.schedule[k + 1]
        return int(math.floor(k0 + (k1 - k0) * (i - a0) / (a1 - a0)))

    @property
    def max_steps(self) -> int:
        """The longest ``K`` of the schedule (the window length a dataset must provide)."""
        return max(k for _, k in self.schedule)

    def to_config(self) -> Dict[str, Any]:
        return {"schedule": [list(p) for p in self.schedule], "mode": self.mode}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "Curriculum":
        return cls([tuple(p) for p in config["schedule"]], config.get("mode", "piecewise"))

    def __repr__(self) -> str:
        return f"Curriculum({self.schedule}, mode={self.mode!r})"


# ------------------------------------------------------------------------- the guard
class LastGoodWeights:
    """A copy of a module's ``state_dict`` (and an optimizer's) to fall back to.

    The trainer calls :meth:`save` after every update whose rollout stayed finite
    and :meth:`restore` when one did not (``info["finite"]`` False), so a single
    blown-up rollout cannot poison the weights or Adam's moments.

    Parameters
    ----------
    module : torch.nn.Module
    optimizer : torch.optim.Optimizer, optional
    scheduler : object with ``state_dict``/``load_state_dict``, optional

    Examples
    --------
    >>> import torch
    >>> net = torch.nn.Linear(2, 1)
    >>> guard = LastGoodWeights(net)
    >>> guard.restore()
    Traceback (most recent call last):
    ...
    RuntimeError: LastGoodWeights.restore() was called before save(); call guard.save() after the first good update (or right after building the model).
    >>> guard.save(); w = net.weight.detach().clone()
    >>> with torch.no_grad():
    ...     _ = net.weight.fill_(float("nan"))
    >>> guard.restore(); torch.equal(net.weight, w)
    True
    """

    def __init__(self, module: torch.nn.Module, optimizer: Optional[Any] = None,
                 scheduler: Optional[Any] = None) -> None:
        self.module, self.optimizer, self.scheduler = module, optimizer, scheduler
        self._saved: Optional[Dict[str, Any]] = None
        self.restores = 0

    @property
    def saved(self) -> bool:
        return self._saved is not None

    def save(self) -> None:
        """Keep a deep copy of the current weights (and optimizer/scheduler states)."""
        self._saved = {
            "module": {k: v.detach().clone() for k, v in self.module.state_dict().items()},
            "optimizer": (None if self.optimizer is None
                          else copy.deepcopy(self.optimizer.state_dict())),
            "scheduler": (None if self.scheduler is None
                          else copy.deepcopy(self.scheduler.state_dict())),
        }

    def restore(self) -> None:
        """Put the saved weights (and states) back; the copy stays for the next restore."""
        if self._saved is None:
            raise RuntimeError("LastGoodWeights.restore() was called before save(); call "
                               "guard.save() after the first good update (or right after "
                               "building the model).")
        self.module.load_state_dict(self._saved["module"])
        if self.optimizer is not None:
            self.optimizer.load_state_dict(copy.deepcopy(self._saved["optimizer"]))
        if self.scheduler is not None:
            self.scheduler.load_state_dict(copy.deepcopy(self._saved["scheduler"]))
        self.restores += 1
