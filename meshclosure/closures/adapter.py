"""Closures the solver runs: a network in physical units, and sums and multiples of closures.

A *closure* is what the solver models (``TracerModel``, ``BarotropicModel``,
a scenario's ``coarse_model``) call at every stage: it returns the subgrid
face flux of each prognostic variable it closes, ``{var: Φ (n_faces,)}``,
integrated over the face, positive owner -> neighbour ([v]·length²/time); the
model adds it to the resolved flux before the one divergence, so any closure
conserves exactly.

:class:`ModelClosure` turns a registered network (:func:`meshclosure.nn.build_model`)
into such a closure::

    x  = normalizer.normalize_inputs(features(mesh, state, t, transport))
    ŷ  = model(mesh, x)                       (n_faces, n_vars), antisymmetric
    Φ_v = flux_scale_v · ŷ[:, v]

For heteroscedastic models (``FluxPrediction(mean, log_var)``) it returns the
mean, or in ``mode="sample"`` one Gaussian draw per face,
``Φ = μ + σ ε`` with ``ε ~ N(0, 1)`` (still one number per face, so still
exactly conservative): a stochastic parameterization.

Closures compose as pyqg's parameterizations do: ``a + b`` sums the fluxes of
every variable either closes, ``c * a`` scales them (``c`` a number or a
tensor per face).

Examples
--------
>>> import torch
>>> phi = torch.ones(4)
>>> a = as_closure(lambda t, state, mesh: {"q": phi})
>>> b = 0.5 * a + a
>>> b(0.0, {}, None)["q"].tolist()
[1.5, 1.5, 1.5, 1.5]
>>> (a + "not a closure")
Traceback (most recent call last):
...
TypeError: can only add a closure (callable (t, state, mesh) -> {var: flux}) to a closure; got str.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from ..errors import ArgumentError

__all__ = ["Closure", "FunctionClosure", "SumClosure", "ScaledClosure", "ModelClosure",
           "as_closure"]

Fluxes = Dict[str, Tensor]


def _context(args: Tuple[Any, ...], kwargs: Mapping[str, Any]):
    """``(t, state, mesh, transport)`` from a call ``(t, state, mesh)`` or ``(context)``."""
    if len(args) == 1 and not kwargs and hasattr(args[0], "state"):
        ctx = args[0]
        return ctx.t, ctx.state, ctx.mesh, getattr(ctx, "transport", None)
    if len(args) == 3:
        return args[0], args[1], args[2], kwargs.get("transport")
    raise TypeError("a closure is called as closure(t, state, mesh) or closure(context); got "
                    f"{len(args)} positional arguments.")


def _stage(args: Tuple[Any, ...]) -> Optional[int]:
    """The stepper stage of a context call (``None`` for ``(t, state, mesh)`` calls)."""
    return getattr(args[0], "stage", None) if len(args) == 1 else None


class Closure:
    """Base of the composable closures: ``a + b``, ``c * a``, ``a * c``.

    The solver calls them with a :class:`~meshclosure.solver.ClosureContext`
    (``takes_context``); they also accept ``(t, state, mesh)``.
    """

    takes_context = True

    def fluxes(self, t: float, state: Mapping[str, Tensor], mesh: Any,
               transport: Optional[Tensor] = None) -> Fluxes:
        raise NotImplementedError

    def __call__(self, *args, **kwargs) -> Fluxes:
        return self.fluxes(*_context(args, kwargs))

    def __add__(self, other: Any) -> "SumClosure":
        if not callable(other):
            raise TypeError("can only add a closure (callable (t, state, mesh) -> {var: flux}) "
                            f"to a closure; got {type(other).__name__}.")
        return SumClosure(self, as_closure(other))

    __radd__ = __add__

    def __mul__(self, factor: Union[float, Tensor]) -> "ScaledClosure":
        return ScaledClosure(factor, self)

    __rmul__ = __mul__


class FunctionClosure(Closure):
    """A plain function ``(t, state, mesh) -> {var: flux}`` as a :class:`Closure`."""

    def __init__(self, fn: Callable) -> None:
        self.fn = fn

    def fluxes(self, t, state, mesh, transport=None) -> Fluxes:
        return dict(self.fn(t, state, mesh))


def as_closure(fn: Any) -> Closure:
    """``fn`` itself if it is a :class:`Closure`, else wrapped in :class:`FunctionClosure`."""
    if isinstance(fn, Closure):
        return fn
    if not callable(fn):
        raise TypeError(f"a closure must be callable (t, state, mesh) -> {{var: flux}}; got "
                        f"{type(fn).__name__}.")
    return FunctionClosure(fn)


class SumClosure(Closure):
    """``a + b``: the fluxes of both, summed per variable (a variable only one closes keeps
    that one's flux)."""

    def __init__(self, *parts: Closure) -> None:
        self.parts = tuple(parts)

    def fluxes(self, t, state, mesh, transport=None) -> Fluxes:
        out: Fluxes = {}
        for part in self.parts:
            for k, v in part.fluxes(t, state, mesh, transport).items():
                out[k] = v if k not in out else out[k] + v
        return out


class ScaledClosure(Closure):
    """``c * a``: every flux of ``a`` times ``c`` (a number, or a tensor broadcast per face)."""

    def __init__(self, factor: Union[float, Tensor], closure: Closure) -> None:
        if not isinstance(factor, (int, float, Tensor)) or isinstance(factor, bool):
            raise TypeError(f"a closure can be scaled by a number or a tensor; got "
                            f"{type(factor).__name__}.")
        self.factor, self.closure = factor, as_closure(closure)

    def fluxes(self, t, state, mesh, transport=None) -> Fluxes:
        return {k: self.factor * v for k, v in
                self.closure.fluxes(t, state, mesh, transport).items()}


class ModelClosure(torch.nn.Module, Closure):
    """A network as a closure in physical units (see the module docstring).

    Parameters
    ----------
    model : torch.nn.Module
        ``model(mesh, x (n_cells, F))`` -> ``(n_faces, n_vars)`` or
        ``FluxPrediction(mean, log_var)`` / ``(mean, log_var)``.
    features : FeaturePipeline
    normalizer : Normalizer, optional
        ``None``: the model works in physical units.
    variables : sequence of str, optional
        The variable of each output column (default ``normalizer.variables``, else
        ``features.variables``).
    mode : {"mean", "sample"}
        For heteroscedastic models: the mean, or one draw per face per call.
    generator : torch.Generator, optional
        For ``mode="sample"``.

    The parameters of ``model`` are this module's parameters, so a loss on a
    solver run that uses the closure trains the network (online training).

    :attr:`operators` is the operator version of its features (``features.operators``,
    :mod:`meshclosure.fv.versions`): the version of the data it was trained on.
    ``scenario.coarse_model(closure=...)`` refuses a closure of another version.

    A recurrent model (one with ``step(mesh, x, h) -> (flux, h_new)``, the ``gru``)
    keeps its memory here, updated once per solver step: at stage 0 of a step
    (from the solver's :class:`~meshclosure.solver.ClosureContext`; every call made
    without a context counts as a new step) the memory advances, ``h ← h_new``,
    and every stage of the step uses the memory the step started with. This is
    the rule of :class:`~meshclosure.nn.RecurrentHook`, which is the same closure
    with the model's own input function; :meth:`reset` forgets the memory
    before a new run, :meth:`detach_state` truncates backpropagation through it.
    """

    def __init__(self, model: torch.nn.Module, features: torch.nn.Module,
                 normalizer: Optional[torch.nn.Module] = None,
                 variables: Optional[Sequence[str]] = None, mode: str = "mean",
                 generator: Optional[torch.Generator] = None) -> None:
        torch.nn.Module.__init__(self)
        if mode not in ("mean", "sample"):
            raise ArgumentError("mode", mode, "must be 'mean' or 'sample'",
                                "use 'sample' for one Gaussian draw per face (stochastic)")
        if variables is None:
            variables = getattr(normalizer, "variables", None) or features.variables
        self.model, self.features, self.normalizer = model, features, normalizer
        self.variables, self.mode, self.generator = tuple(variables), mode, generator
        self.recurrent = callable(getattr(model, "step", None)) and hasattr(model, "init_state")
        self.reset()
        if normalizer is not None and tuple(normalizer.input_names) != tuple(features.names):
            raise ArgumentError("normalizer", tuple(normalizer.input_names),
                                f"must list the pipeline's features {tuple(features.names)} in "
                                "the same order", "build both from the same dataset")

    @property
    def operators(self) -> Optional[str]:
        """The operator version of the features (``None`` when they record none)."""
        return getattr(self.features, "operators", None)

    def reset(self) -> None:
        """Forget a recurrent model's memory (before a new run)."""
        self.h: Optional[Tensor] = None
        self._h_step: Optional[Tensor] = None

    def detach_state(self) -> None:
        """Cut the autograd history of the memory (truncated backpropagation through time)."""
        self.h = None if self.h is None else self.h.detach()
        self._h_step = None if self._h_step is None else self._h_step.detach()

    def predict(self, t: float, state: Mapping[str, Tensor], mesh: Any,
                transport: Optional[Tensor] = None,
                stage: Optional[int] = None) -> Tuple[Tensor, Optional[Tensor]]:
        """Physical ``(mean, log_var)`` face fluxes ``(n_faces, n_vars)`` (``log_var`` None
        for deterministic models); ``stage`` drives a recurrent model's memory."""
        x = self.features(mesh, state, t, transport)
        if self.normalizer is not None:
            x = self.normalizer.normalize_inputs(x)
        dtype = next((p.dtype for p in self.model.parameters() if p.is_floating_point()), None)
        if dtype is not None and x.dtype != dtype:      # e.g. a float32 model, float64 state
            x = x.to(dtype)
        if self.recurrent:
            first = stage is None or stage == 0
            if first:
                self._h_step = self.h
            out, h_new = self.model.step(mesh, x, self._h_step)
            if first:
                self.h = h_new
        else:
            out = self.model(mesh, x)
        mean, log_var = (out[0], out[1]) if isinstance(out, tuple) else (out, None)
        if mean.shape[-1] != len(self.variables):
            raise ArgumentError("variables", self.variables, f"must name each of the model's "
                                f"{mean.shape[-1]} output columns", "pass one name per column")
        if self.normalizer is not None:
            mean = self.normalizer.denormalize_flux(mean)
            if log_var is not None:
                log_var = self.normalizer.denormalize_log_var(log_var)
        return mean, log_var

    def fluxes(self, t, state, mesh, transport=None, stage=None) -> Fluxes:
        mean, log_var = self.predict(t, state, mesh, transport, stage)
        if self.mode == "sample":
            if log_var is None:
                raise ArgumentError("mode", "sample", "needs a heteroscedastic model (one "
                                    "that predicts log_var)", "use mode='mean' or build the "
                                    "model with heteroscedastic=True")
            eps = torch.randn(mean.shape, dtype=mean.dtype, device=mean.device,
                              generator=self.generator)
            mean = mean + torch.exp(0.5 * log_var) * eps
        ref = state[self.variables[0]] if self.variables[0] in state else None
        if ref is not None:
            mean = mean.to(ref.dtype)
        return {v: mean[..., i] for i, v in enumerate(self.variables)}

    def forward(self, *args, **kwargs) -> Fluxes:
        return self.fluxes(*_context(args, kwargs), stage=_stage(args))

    __call__ = torch.nn.Module.__call__
