"""Recurrent (GRU) closure with per-cell memory across solver steps, and its solver hook.

A closure with temporal memory: the subgrid flux at step ``n`` may depend on
the resolved history, not only on the current state (non-Markovian closures;
e.g. Chorin, Hald & Kupferman 2002, doi:10.1073/pnas.102142499, for the
Mori–Zwanzig view). :class:`RecurrentClosure` (registered ``"gru"``) is ::

    z, e   = Encoder(x)                   MeshGraphNet encoder + processor (local MP)
    h_new  = GRUCell(z, h)                per cell; h (n_cells, memory) is the memory
    Φ      = Head([z, h_new], e)          antisymmetric head -> exactly conservative

API
---
- ``model.step(mesh, x, h) -> (fluxes, h_new)``: the functional form
  (``fluxes`` is ``(n_faces, n_vars)`` or a ``FluxPrediction(mean, log_var)``;
  a batch ``x (B, n_cells, F)`` has one memory per sample,
  ``h (B, n_cells, memory)``); ``h=None`` means zeros
  (:meth:`RecurrentClosure.init_state`).
- ``model(mesh, x, h=None) -> fluxes``: the :class:`FluxModel` call, stateless
  (zero memory unless ``h`` is given), so the generic invariant checks of
  :mod:`meshclosure.testing` apply.
- ``model.as_closure(dt, input_fn, var, stages=...)`` -> :class:`RecurrentHook`,
  the solver closure ``closure(t, state, mesh) -> {var: flux}`` that keeps ``h``
  and advances it once per solver step.

Memory update rule of the hook (once per step, not per Runge–Kutta stage):
the solver calls the closure ``stages`` times per step (1 Euler, 3 SSP-RK3,
4 RK4), the first call of a step at the step's own state ``yⁿ`` and time
``tⁿ``. Counting calls from the last :meth:`RecurrentHook.reset`, call ``c``
starts a step when ``c % stages == 0``; at that call the hook sets ::

    h_step = hⁿ                       (memory used by every stage of this step)
    hⁿ⁺¹   = GRUCell(z(yⁿ), hⁿ)       (stored as hook.h; n_updates += 1)

and every stage ``s`` of the step returns ::

    Φ(y⁽ˢ⁾) = Head([z(y⁽ˢ⁾), GRUCell(z(y⁽ˢ⁾), hⁿ)])

So the memory sees only the states the trajectory actually visits, never
Runge–Kutta intermediates, and after ``N`` steps ``hook.h`` equals rolling
``model.step`` over ``y⁰ … yᴺ⁻¹``. Time is checked at every call: with the
hook's ``dt`` and a named stepper, stage ``s`` of step ``n`` must come at
``t⁰ + (n + c_s) dt`` (``c = (0,)`` Euler, ``(0, 1, ½)`` SSP-RK3,
``(0, ½, ½, 1)`` RK4, as in :mod:`meshclosure.solver.steppers`); with an
integer ``stages``, step starts must come at ``t⁰ + n dt``. A stepper, stage
count or time step that does not match the solver's therefore raises instead
of silently advancing the memory at the wrong rate. Call :meth:`reset` before
a new run, and never call the hook outside the solver in between (it counts
calls). Nothing is detached: gradients flow through ``h`` across steps (online
training); :meth:`RecurrentHook.detach_state` cuts them (truncated
backpropagation through time).
"""
from __future__ import annotations

from typing import Callable, Dict, Mapping, Optional, Union

import torch
from torch import Tensor, nn

from ..mesh import Mesh
from ..solver.steppers import STAGES as _STEPPER_STAGES
from .heads import FluxModel, FluxPrediction, MeshOrGraph, _faces, _inputs, face_geometry
from .mgn import EncodeProcess, ProcessorBlock, apply_head, flux_head
from .registry import ALL_FAMILIES, register

__all__ = ["RecurrentClosure", "RecurrentHook", "STAGES", "STAGE_TIMES"]

#: Right-hand-side evaluations per step of the built-in steppers (from their stage records).
STAGES = {name: st.n for name, st in _STEPPER_STAGES.items()}
"""Right-hand-side calls per step of each stepper (``meshclosure.solver.STAGES[name].n``)."""

STAGE_TIMES = {name: st.c for name, st in _STEPPER_STAGES.items()}
"""Time of each stage within a step, in units of ``dt`` (``meshclosure.solver.STAGES[name].c``)."""

InputFn = Callable[[float, Mapping[str, Tensor], Mesh], Tensor]


@register("gru", families=ALL_FAMILIES, instead="mgn")
class RecurrentClosure(FluxModel):
    """Recurrent closure: local message-passing encoder, per-cell GRU memory, antisymmetric head.

    Parameters
    ----------
    mesh : Mesh
        Sets ``length_scale`` (mean centre distance) for the edge geometry.
    in_features, n_vars : int
        Cell input features and flux variables.
    hidden : int
        Width of the encoder's node and edge latents.
    memory : int, optional
        Width of the hidden state ``h`` (default ``hidden``).
    n_blocks : int
        Message-passing blocks of the encoder.
    n_layers : int
        Hidden layers of every MLP.
    latent : int, optional
        Width of the encoder latents ``z`` (default ``hidden``).
    head : {"pairwise", "potential"}
    heteroscedastic : bool
        Return a :class:`~meshclosure.nn.FluxPrediction` ``(mean, log_var)``.

    Shapes: ``x (n_cells, in_features)``, ``h (n_cells, memory)`` ->
    fluxes ``(n_faces, n_vars)``, ``h_new (n_cells, memory)``. A batch of
    samples on the one mesh, ``x (B, n_cells, in_features)``, has one memory
    per sample, ``h (B, n_cells, memory)`` -> fluxes ``(B, n_faces, n_vars)``,
    ``h_new (B, n_cells, memory)``.

    Examples
    --------
    >>> import torch
    >>> from meshclosure.mesh import healpix
    >>> mesh = healpix(1)
    >>> model = RecurrentClosure(mesh, hidden=8, n_blocks=1).double()
    >>> x = torch.randn(mesh.n_cells, 1, dtype=torch.float64)
    >>> phi, h = model.step(mesh, x)                 # memory starts at zero
    >>> phi2, h2 = model.step(mesh, x, h)            # same input, other memory
    >>> phi.shape, h.shape, bool((phi2 - phi).abs().max() > 0)
    (torch.Size([24, 1]), torch.Size([12, 8]), True)
    >>> torch.equal(model(mesh, x), phi)             # stateless call = zero memory
    True
    >>> model.step(mesh, x, torch.zeros(5, 8))
    Traceback (most recent call last):
    ...
    ValueError: h must have shape (n_cells=12, memory=8); got (5, 8). ...

    A batch keeps one memory per sample:

    >>> xb = torch.randn(3, mesh.n_cells, 1, dtype=torch.float64)
    >>> phi_b, h_b = model.step(mesh, xb)
    >>> phi_b.shape, h_b.shape
    (torch.Size([3, 24, 1]), torch.Size([3, 12, 8]))
    """

    def __init__(self, mesh: Mesh, in_features: int = 1, n_vars: int = 1, hidden: int = 64,
                 memory: int | None = None, n_blocks: int = 2, n_layers: int = 2,
                 latent: int | None = None, head: str = "pairwise",
                 heteroscedastic: bool = False) -> None:
        super().__init__()
        latent, memory = latent or hidden, memory or hidden
        self.in_features, self.n_vars, self.head_kind = in_features, n_vars, head
        self.memory, self.heteroscedastic = memory, heteroscedastic
        self.encoder = EncodeProcess(mesh, in_features, hidden, latent, n_layers,
                                     [ProcessorBlock(hidden, n_layers) for _ in range(n_blocks)])
        self.gru = nn.GRUCell(latent, memory)
        self.head = flux_head(head, latent + memory, n_vars, hidden, n_layers, heteroscedastic)

    # ----------------------------------------------------------------- state
    def init_state(self, mesh_or_graph: MeshOrGraph, dtype: torch.dtype | None = None,
                   batch: int | None = None) -> Tensor:
        """Zero memory ``(n_cells, memory)``, or ``(batch, n_cells, memory)`` (one memory per
        sample), in the dtype and device of the parameters by default."""
        p = next(self.parameters())
        n_cells = face_geometry(mesh_or_graph).pos.shape[0]
        lead = () if batch is None else (batch,)
        return torch.zeros(*lead, n_cells, self.memory, dtype=dtype or p.dtype, device=p.device)

    def _check_h(self, h: Tensor | None, geo, x: Tensor) -> Tensor:
        n_cells = geo.pos.shape[0]
        shape = (*x.shape[:-2], n_cells, self.memory)
        if h is None:
            return torch.zeros(shape, dtype=x.dtype, device=x.device)
        if tuple(h.shape) != shape:
            want = ", ".join([f"B={x.shape[0]}"] * (x.dim() - 2)
                             + [f"n_cells={n_cells}", f"memory={self.memory}"])
            raise ValueError(f"h must have shape ({want}); got {tuple(h.shape)}. Start from "
                             f"model.init_state(mesh{', batch=B' if x.dim() > 2 else ''}) on "
                             f"this mesh.")
        return h.to(x.dtype)

    # --------------------------------------------------------------- forward
    def directed_step(self, mesh_or_graph: MeshOrGraph, x: Tensor | None = None,
                      h: Tensor | None = None):
        """``(Φ_dir, h_new)``: directed fluxes ``(..., 2 n_faces, n_vars)`` (or a
        :class:`~meshclosure.nn.FluxPrediction`) and the new memory ``(..., n_cells, memory)``."""
        geo = face_geometry(mesh_or_graph)
        x = _inputs(mesh_or_graph, x, self.in_features)
        h = self._check_h(h, geo, x)
        z, e = self.encoder(geo, x)
        # GRUCell takes (rows, features): every cell of every sample is one row
        h_new = self.gru(z.reshape(-1, z.shape[-1]), h.reshape(-1, self.memory)).reshape(h.shape)
        return apply_head(self.head, self.head_kind, torch.cat([z, h_new], -1), geo, e), h_new

    def step(self, mesh_or_graph: MeshOrGraph, x: Tensor | None = None,
             h: Tensor | None = None):
        """Face fluxes ``(..., n_faces, n_vars)`` (or a :class:`~meshclosure.nn.FluxPrediction`)
        and the new memory ``h_new (..., n_cells, memory)``; ``h=None`` is zero memory."""
        out, h_new = self.directed_step(mesh_or_graph, x, h)
        return _faces(out, face_geometry(mesh_or_graph).n_faces), h_new

    def directed_fluxes(self, mesh_or_graph: MeshOrGraph, x: Tensor | None = None,
                        h: Tensor | None = None):
        return self.directed_step(mesh_or_graph, x, h)[0]

    def forward(self, mesh_or_graph: MeshOrGraph, x: Tensor | None = None,
                h: Tensor | None = None):
        """Stateless face fluxes with memory ``h`` (default zero); see :meth:`step`."""
        return self.step(mesh_or_graph, x, h)[0]

    def as_closure(self, dt: float, input_fn: InputFn | None = None, var: str = "q",
                   stages: Union[int, str] = "ssprk3") -> "RecurrentHook":
        """The solver closure hook keeping this model's memory; see :class:`RecurrentHook`."""
        return RecurrentHook(self, dt, input_fn, var, stages)


class RecurrentHook(nn.Module):
    """Solver closure ``(t, state, mesh) -> {var: flux}`` advancing the memory once per step.

    The rule (module docstring): call ``c`` (counted from :meth:`reset`) with
    ``c % stages == 0`` starts a step; there ``h`` advances to
    ``GRUCell(z(yⁿ), hⁿ)``; every stage of the step uses the memory ``hⁿ``.

    Parameters
    ----------
    model : RecurrentClosure
    input_fn : callable ``(t, state, mesh) -> Tensor (n_cells, in_features)``, optional
        Model inputs from the solver state; default ``state[var]`` as
        ``(n_cells, -1)``.
    var : str
        The prognostic variable the fluxes are for.
    dt : float
        The solver's time step; every call's time is checked against it
        (module docstring), so a mismatched stepper cannot go unnoticed.
    stages : int or {"euler", "ssprk3", "rk4"}
        The solver's stepper (its stage times are then checked too), or its
        number of right-hand-side calls per step.

    Attributes
    ----------
    h : Tensor (n_cells, memory) or None
        Memory after the last started step (``None`` before the first step).
    n_updates : int
        Steps started (memory updates) since :meth:`reset`.
    n_calls : int
        Closure calls since :meth:`reset`.

    With a heteroscedastic model the hook returns the mean flux.

    Examples
    --------
    >>> import torch
    >>> from meshclosure.mesh import cartesian
    >>> from meshclosure.solver import TracerModel, integrate
    >>> mesh = cartesian(4, 4)
    >>> hook = RecurrentClosure(mesh, hidden=8, n_blocks=1).double().as_closure(0.01, stages="rk4")
    >>> U = 0.3 * mesh.face_normal[:, 0] * mesh.face_area
    >>> solver = TracerModel(mesh, U, closure=hook)
    >>> out = integrate(solver, {"q": torch.rand(16, dtype=torch.float64)}, 0.01, 5,
    ...                 stepper="rk4", progress=False)
    >>> hook.n_calls, hook.n_updates, tuple(hook.h.shape)
    (20, 5, (16, 8))
    >>> RecurrentHook(hook.model, 0.01, stages="rk5")
    Traceback (most recent call last):
    ...
    ValueError: stages='rk5' is not a positive int or one of ['euler', 'ssprk3', 'rk4']. ...
    """

    takes_context = True
    """Called by the solver with a :class:`~meshclosure.solver.ClosureContext`."""

    def __init__(self, model: RecurrentClosure, dt: float, input_fn: InputFn | None = None,
                 var: str = "q", stages: Union[int, str] = "ssprk3") -> None:
        super().__init__()
        offsets, self.stepper = None, None
        if isinstance(stages, str) and stages in _STEPPER_STAGES:
            self.stepper = stages
            offsets = _STEPPER_STAGES[stages].c
            stages = _STEPPER_STAGES[stages].n
        if isinstance(stages, bool) or not isinstance(stages, int) or stages < 1:
            raise ValueError(f"stages={stages!r} is not a positive int or one of "
                             f"{list(STAGES)}. Pass the name of your stepper, or the number of "
                             f"rhs calls per step (1 Euler, 3 SSP-RK3, 4 RK4).")
        if isinstance(dt, bool) or not isinstance(dt, (int, float)) or not dt > 0:
            raise ValueError(f"dt={dt!r} must be the solver's positive time step: the hook "
                             f"checks every call's time against it.")
        self.model, self.input_fn, self.var = model, input_fn, var
        self.stages, self.dt, self._offsets = stages, float(dt), offsets
        self.reset()

    def reset(self) -> None:
        """Forget the memory and the call count (before a new run)."""
        self.h: Optional[Tensor] = None
        self._h_step: Optional[Tensor] = None
        self.n_calls = self.n_updates = 0
        self._t0: Optional[float] = None

    def detach_state(self) -> None:
        """Cut the autograd history of the memory (truncated backpropagation through time)."""
        if self.h is not None:
            self.h = self.h.detach()
        if self._h_step is not None:
            self._h_step = self._h_step.detach()

    def _inputs(self, t: float, state: Mapping[str, Tensor], mesh: Mesh) -> Tensor:
        if self.input_fn is not None:
            return self.input_fn(t, state, mesh)
        if self.var not in state:
            raise KeyError(f"state has no variable {self.var!r} (keys {sorted(state)}); set "
                           f"var= or pass input_fn=.")
        q = state[self.var]
        return q.reshape(q.shape[0], -1)

    def _check_time(self, t: float) -> None:
        n, stage = divmod(self.n_calls, self.stages)
        if self._t0 is None:
            self._t0 = t
        if stage == 0 or self._offsets is not None:
            offset = 0.0 if self._offsets is None else self._offsets[stage]
            expected = self._t0 + n * self.dt + offset * self.dt
            if abs(t - expected) > 1e-9 * max(abs(expected), self.dt):
                raise RuntimeError(
                    f"RecurrentHook: call {self.n_calls} (step {n}, stage {stage}) came at "
                    f"t={t}, expected {expected} for stages={self.stages}, dt={self.dt}. Do "
                    f"the hook's stepper and dt match the solver's? Call reset() before a new "
                    f"run.")

    def _check_context(self, ctx) -> None:
        """The solver's own record of the stage must agree with the hook's count."""
        if ctx.stage is None:
            return
        stage = self.n_calls % self.stages
        if ctx.stage != stage or (self.stepper is not None and ctx.stepper is not None
                                  and ctx.stepper != self.stepper):
            raise RuntimeError(
                f"RecurrentHook: the solver is at stage {ctx.stage} of a {ctx.stepper!r} step, "
                f"but the hook counted stage {stage} of {self.stepper or self.stages!r}. Do the "
                f"hook's stepper and dt match the solver's? Build the hook with "
                f"stages={ctx.stepper!r}, use one hook per model, and call reset() before a "
                "new run.")

    def forward(self, *args) -> Dict[str, Tensor]:
        """``{var: Φ (n_faces, ...)}``; the shape follows ``state[var]`` (``(n_faces,)`` for a
        scalar tracer). Called as ``hook(context)`` by the solver, or ``hook(t, state, mesh)``."""
        if len(args) == 1 and hasattr(args[0], "state"):
            ctx = args[0]
            self._check_context(ctx)
            t, state, mesh = ctx.t, ctx.state, ctx.mesh
        elif len(args) == 3:
            t, state, mesh = args
        else:
            raise TypeError("RecurrentHook is called as hook(context) or hook(t, state, mesh); "
                            f"got {len(args)} arguments.")
        t = float(t)
        first = self.n_calls % self.stages == 0
        self._check_time(t)
        if first:
            self._h_step = self.h
        x = self._inputs(t, state, mesh)
        out, h_new = self.model.step(mesh, x, self._h_step)
        if first:
            self.h = h_new
            self.n_updates += 1
        self.n_calls += 1
        flux = out.mean if isinstance(out, FluxPrediction) else out
        q = state.get(self.var)
        if q is not None:
            shape = (flux.shape[0],) + tuple(q.shape[1:])
            if flux.numel() != torch.Size(shape).numel():
                raise ValueError(f"the model gives {flux.shape[1]} flux variables per face; "
                                 f"state[{self.var!r}] has shape {tuple(q.shape)}, which needs "
                                 f"{tuple(shape)}. Build the model with matching n_vars.")
            flux = flux.reshape(shape)
        return {self.var: flux}
