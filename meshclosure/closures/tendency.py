"""Closures in tendency form: a network's per-cell subgrid tendency added to a model's rhs.

Every closure of :mod:`meshclosure.closures` returns face fluxes, which the
solver models add to their resolved fluxes before the one divergence
(conservative by construction). The non-conservative references of
:mod:`meshclosure.nn.nodewise` (``nodewise``, ``nodewise_mean_free``) instead
predict the subgrid tendency ``s^sgs = −div Φ^sgs`` of each cell directly. So
that they run the same way as the flux closures (the validation hierarchy
contrasts the two), this module gives them

* :class:`TendencyClosure`: the network in physical units,
  ``tendencies(t, state, mesh) -> {var: (n_cells,)}`` [var/time] (the inputs
  from the :class:`~meshclosure.closures.FeaturePipeline`, normalised by the
  :class:`~meshclosure.closures.Normalizer`; the output times the
  normalizer's ``flux_scale``, the scale the dataset divides ``s^sgs`` by);
* :func:`with_tendency`: any solver model whose ``rhs(t, state)`` gains the
  closure's tendencies, ``dv/dt = rhs_v + s_v``; ``diagnose`` blames the
  closure when it is the first non-finite part, and every other attribute
  (``mesh``, ``total``, ``cfl_dt``, ...) is the wrapped model's, so
  :func:`~meshclosure.solver.rollout` and :func:`~meshclosure.solver.integrate`
  run it as they run the model.

The budget: a tendency changes ``Σ_i V_i v_i`` by ``Σ_i V_i s_i`` per unit
time. ``nodewise_mean_free`` removes the volume-weighted mean of ``s``, so
the total changes by rounding only; plain ``nodewise`` does not.

Examples
--------
>>> import torch
>>> from meshclosure.mesh import cartesian
>>> from meshclosure.nn import build_model
>>> mesh = cartesian(4, 4).to(dtype=torch.float64)
>>> net = build_model("nodewise_mean_free", mesh, in_features=1, hidden=4, n_blocks=1).double()
>>> closure = TendencyClosure(net, _StateOnly(), variables=["q"])
>>> s = closure.tendencies(0.0, {"q": torch.rand(16, dtype=torch.float64)}, mesh)["q"].detach()
>>> s.shape, abs(float((mesh.cell_volume * s).sum())) < 1e-14
(torch.Size([16]), True)
>>> TendencyClosure(torch.nn.Linear(1, 1), _StateOnly())
Traceback (most recent call last):
...
meshclosure.errors.ArgumentError: model='Linear': must predict cell tendencies (a model with output = 'tendency', e.g. 'nodewise'); run a face-flux model with meshclosure.closures.ModelClosure.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence

import torch
from torch import Tensor

from ..errors import ArgumentError
from .adapter import ModelClosure

__all__ = ["TendencyClosure", "TendencyModel", "with_tendency", "is_tendency_model"]


def is_tendency_model(model: Any) -> bool:
    """Whether ``model`` predicts cell tendencies (``output == "tendency"``, e.g. ``nodewise``)
    rather than face fluxes; a DDP or closure wrapper is looked through (``.module``)."""
    while model is not None:
        if getattr(model, "output", "flux") == "tendency":
            return True
        model = getattr(model, "module", None)
    return False


class TendencyClosure(torch.nn.Module):
    """A tendency network (``nodewise``, ``nodewise_mean_free``) in physical units.

    Parameters
    ----------
    model : torch.nn.Module
        ``model(mesh, x (n_cells, F))`` -> ``(n_cells, n_vars)`` normalised tendencies
        (``output = "tendency"``).
    features : FeaturePipeline
        Its inputs from a coarse state.
    normalizer : Normalizer, optional
        Input standardisation and the output scale (``flux_scale``: the scale the
        dataset divides ``s^sgs`` by); ``None``: the model works in physical units.
    variables : sequence of str, optional
        The variable of each output column (default: the normalizer's, else the
        pipeline's).

    The model's parameters are this module's, so a loss on a run that uses the
    closure trains the network. Calling it as a flux closure (``closure(t, state,
    mesh)``, as a solver model given it as ``closure=`` does) raises
    :class:`~meshclosure.errors.ArgumentError`: it has no face fluxes.
    """

    def __init__(self, model: torch.nn.Module, features: torch.nn.Module,
                 normalizer: Optional[torch.nn.Module] = None,
                 variables: Optional[Sequence[str]] = None) -> None:
        super().__init__()
        if not is_tendency_model(model):
            raise ArgumentError("model", type(model).__name__, "must predict cell tendencies "
                                "(a model with output = 'tendency', e.g. 'nodewise')",
                                "run a face-flux model with meshclosure.closures.ModelClosure")
        # the input and output plumbing of ModelClosure (features, dtype, normalisation)
        self.inner = ModelClosure(model, features, normalizer, variables)

    @property
    def model(self) -> torch.nn.Module:
        return self.inner.model

    @property
    def features(self) -> torch.nn.Module:
        return self.inner.features

    @property
    def normalizer(self) -> Optional[torch.nn.Module]:
        return self.inner.normalizer

    @property
    def variables(self) -> tuple:
        return self.inner.variables

    def predict(self, t: float, state: Mapping[str, Tensor], mesh: Any,
                transport: Optional[Tensor] = None) -> Tensor:
        """Physical cell tendencies ``(n_cells, n_vars)`` (or ``(B, n_cells, n_vars)`` for a
        batched state), [var/time]."""
        s, _ = self.inner.predict(t, state, mesh, transport)
        return s

    def tendencies(self, t: float, state: Mapping[str, Tensor], mesh: Any,
                   transport: Optional[Tensor] = None) -> Dict[str, Tensor]:
        """``{var: s (n_cells,)}``: the subgrid tendency of each variable, [var/time], in the
        dtype of the state's variable."""
        s = self.predict(t, state, mesh, transport)
        out = {}
        for i, v in enumerate(self.variables):
            ref = state.get(v)
            out[v] = s[..., i].to(ref.dtype) if ref is not None else s[..., i]
        return out

    def fluxes(self, *args: Any, **kwargs: Any):
        """Refused: a solver model that calls this closure for face fluxes (passed as its
        ``closure=``) gets an error that says to use :func:`with_tendency`."""
        raise ArgumentError("closure", "TendencyClosure", "has no face fluxes (it predicts "
                            "cell tendencies; not conservative)", "add it to a model's "
                            "right-hand side with meshclosure.closures.with_tendency(model, "
                            "closure) instead of passing it as the model's closure")

    forward = fluxes


class TendencyModel:
    """``model`` with a :class:`TendencyClosure` added to its right-hand side
    (:func:`with_tendency`); every other attribute is ``model``'s."""

    def __init__(self, model: Any, closure: TendencyClosure) -> None:
        if not callable(getattr(model, "rhs", None)):
            raise ArgumentError("model", type(model).__name__, "must have rhs(t, state)",
                                "pass a solver model, e.g. scenario.coarse_model()")
        if not callable(getattr(closure, "tendencies", None)):
            raise ArgumentError("closure", type(closure).__name__, "must have "
                                "tendencies(t, state, mesh)", "pass a TendencyClosure "
                                "(load_model(path, mesh).closure() of a nodewise model)")
        mesh = getattr(model, "mesh", None)
        if mesh is None:
            raise ArgumentError("model", type(model).__name__, "must have a mesh attribute "
                                "(the tendency closure runs on it)", "pass a solver model")
        self.__dict__.update(model=model, closure=closure, mesh=mesh)

    def _transport(self, t: float) -> Optional[Tensor]:
        """The model's face transport at ``t`` where it has one (prescribed flows)."""
        m = self.model
        while m is not None:
            f = getattr(type(m), "face_transport", None)
            if callable(f):
                return m.face_transport(t)
            m = getattr(m, "base", None)
        return None

    def tendencies(self, t: float, state: Mapping[str, Tensor]) -> Dict[str, Tensor]:
        """The closure's tendencies at ``(t, state)``, ``{var: (n_cells,)}``."""
        return self.closure.tendencies(t, state, self.mesh, transport=self._transport(t))

    def rhs(self, t: float, state: Mapping[str, Tensor]) -> Dict[str, Tensor]:
        """``model.rhs(t, state)`` plus the closure's tendency of each variable it closes."""
        out = dict(self.model.rhs(t, state))
        for v, s in self.tendencies(t, state).items():
            if v not in out:
                raise ArgumentError("closure", sorted(self.closure.variables),
                                    f"must close variables of the model ({sorted(out)})",
                                    "train the tendency model on this model's dataset")
            out[v] = out[v] + s.to(out[v])
        return out

    def diagnose(self, t: float, state: Mapping[str, Tensor]):
        """The model's first non-finite part, else the closure's tendencies (part
        ``"closure"``, cells) if they are not finite, else ``None``."""
        from ..solver import first_nonfinite

        base = getattr(self.model, "diagnose", None)
        found = base(t, state) if base is not None else None
        if found is not None:
            return found
        return first_nonfinite([("closure", None, "cells",
                                 lambda: self.tendencies(t, state))])

    def __getattr__(self, name: str) -> Any:
        model = self.__dict__.get("model")
        if model is None:
            raise AttributeError(name)
        return getattr(model, name)


def with_tendency(model: Any, closure: TendencyClosure) -> TendencyModel:
    """``model`` whose ``rhs(t, state)`` adds ``closure``'s cell tendencies.

    Parameters
    ----------
    model : solver model
        With ``rhs(t, state)`` and ``mesh`` (e.g. ``scenario.coarse_model()``,
        built without a flux closure or with one: both add).
    closure : TendencyClosure

    Returns
    -------
    TendencyModel
        ``rhs = model.rhs + closure.tendencies``; ``diagnose`` as the model's, then
        the closure's; any other attribute is the model's.
    """
    return TendencyModel(model, closure)


class _StateOnly(torch.nn.Module):
    """A minimal feature pipeline for the doctest: the state ``q`` as the one input."""

    names = ("state_q",)
    variables = ("q",)

    def forward(self, mesh, state, t=0.0, transport=None):
        return state["q"][..., None]
