"""One closure plumbing for every solver model (tracer, barotropic, Boussinesq).

Each model's right-hand side adds to the resolved face flux of every
prognostic variable ``v`` the closure's flux and, optionally, Gaussian face
noise, and then takes ONE divergence (DESIGN.md §6)::

    Φ_v = Φ^res_v + Φ^closure_v + Φ^noise_v,      dv/dt = −div(Φ_v) + (cell sources)

so ``Σ_i V_i dv_i/dt`` is the sources' integral minus the boundary outflow,
to rounding, whatever the closure or the noise return. This module holds the
rules once:

* :func:`closure_fluxes` calls the closure once per right-hand side and
  checks what it returns (a dict of real floating-point face fluxes
  ``(n_faces, ...)``, one per variable the model has, on the state's
  device); anything else raises :class:`ClosureError`. The closure is
  called here and only here, so the closure context of issue 10 (``t``,
  state, mesh, transport, step, stage) lands in this one function.
* :func:`add_flux_noise` adds the conservative face noise.
* :class:`ClosureCalls` keeps (detached) the closure's last few outputs, so
  a diagnosis after a blow-up reads what the closure really returned at the
  failing stage instead of calling it again (a stateful closure, such as the
  GRU hook, or a sampling one would not return the same values twice).
* :func:`first_nonfinite` and :class:`NonFinitePart` are what a model's
  ``diagnose(t, state)`` returns: the first part of its right-hand side
  (transport, closure, forcing, source, boundary flux) that is not finite,
  used by :func:`~meshclosure.solver.integrate` to say what produced a NaN.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ..errors import ArgumentError
from ..fv.diffusion import check_coefficient
from .._checks import describe
from ..mesh import Mesh
from .steppers import current_stage

__all__ = ["Closure", "ClosureError", "ClosureCalls", "closure_fluxes", "add_flux_noise",
           "check_flux_noise",
           "recorded_or_fresh", "NonFinitePart", "first_nonfinite", "PARTS"]

Closure = Callable[[float, Dict[str, Tensor], Mesh], Mapping[str, Tensor]]
"""``closure(t, state, mesh) -> {var: Φ (n_faces, ...)}``: integrated subgrid face fluxes,
positive owner -> neighbour, in the units of ``var`` × length²/time."""

@dataclass(frozen=True)
class ClosureContext:
    """What a closure is told at every right-hand-side evaluation.

    A closure whose attribute ``takes_context`` is true (every
    :class:`meshclosure.closures.Closure`, the GRU hook) is called as
    ``closure(context)``; any other callable as ``closure(t, state, mesh)``.

    Attributes
    ----------
    t : float
        Stage time.
    state : dict name -> Tensor, shape (n_cells, ...)
        The stage state (a shallow copy).
    mesh : Mesh
    transport : Tensor, shape (n_faces,), or None
        The face transport the model uses at this stage (prescribed or computed
        from the state), ``None`` for a model without one.
    step : int or None
        0-based step index inside :func:`~meshclosure.solver.integrate` /
        :func:`~meshclosure.solver.rollout` (``None`` otherwise).
    stage : int or None
        0-based stage index of the stepper (``None`` when ``rhs`` is called directly).
    stepper : str or None
        The stepper's name; its stage times and weights are
        ``meshclosure.solver.STAGES[stepper]``.
    dt : float or None
        The step size.
    """

    t: float
    state: Dict[str, Tensor]
    mesh: Mesh
    transport: Optional[Tensor] = None
    step: Optional[int] = None
    stage: Optional[int] = None
    stepper: Optional[str] = None
    dt: Optional[float] = None


PARTS = ("transport", "closure", "boundary_flux", "forcing", "source")
"""Names of the right-hand-side parts a model's ``diagnose`` can blame."""


class ClosureError(ArgumentError, TypeError):
    """A closure returned something the model cannot use (a bare tensor, a variable the
    model does not have, a flux of the wrong shape, dtype or device)."""


ClosureError.__module__ = "meshclosure.solver"     # its public home, shown in tracebacks


class _shown(str):
    """Text shown in an error message as is (``repr`` without quotes)."""

    def __repr__(self) -> str:
        return str(self)


class ClosureCalls:
    """The last ``size`` closure outputs of a model, detached, keyed by ``(t, state object)``.

    References only (``detach()`` shares storage): a few face-flux tensors per
    model. Used by the models' ``diagnose`` after a blow-up.
    """

    def __init__(self, size: int = 8) -> None:
        self._items: deque = deque(maxlen=size)

    def record(self, t: float, state: Mapping[str, Tensor], fluxes: Mapping[str, Tensor]) -> None:
        self._items.append((t, id(state), {k: v.detach() for k, v in fluxes.items()}))

    def find(self, t: float, state: Mapping[str, Tensor]) -> Optional[Dict[str, Tensor]]:
        """The fluxes recorded for this exact call, or ``None``."""
        for ts, sid, fluxes in reversed(self._items):
            if ts == t and sid == id(state):
                return fluxes
        return None


def closure_fluxes(closure: Optional[Closure], t: float, state: Mapping[str, Tensor],
                   mesh: Mesh, variables: Sequence[str], hint: str = "",
                   calls: Optional[ClosureCalls] = None,
                   transport: Optional[Tensor] = None) -> Dict[str, Tensor]:
    """Call ``closure`` once and return its checked fluxes ``{var: (n_faces, ...)}``.

    Parameters
    ----------
    closure : callable ``(t, state, mesh) -> dict``, or None
        ``None`` returns ``{}``.
    t : float
        Time of the right-hand-side evaluation (a stage time).
    state : dict name -> Tensor, shape (n_cells, ...)
        The stage state (the closure gets a shallow copy).
    mesh : Mesh
    variables : sequence of str
        The prognostic variables of the model, in order; the closure may
        return fluxes for any subset.
    hint : str
        Where the model's variable names come from, for the message.
    calls : ClosureCalls, optional
        Where to record the checked output (for :meth:`ClosureCalls.find`).
    transport : Tensor, shape (n_faces,), optional
        The model's face transport at this stage (for the :class:`ClosureContext`).

    Returns
    -------
    dict var -> Tensor, shape (n_faces, ...)
        Each flux cast to its variable's float dtype (a float32 closure in a
        float64 model is promoted), trailing dims those of ``state[var]``.

    Raises
    ------
    ClosureError
        The closure returned a non-dict, a variable the model does not have,
        a non-tensor, an integer/bool/complex tensor, the wrong shape, or a
        tensor on another device. The message names the closure's output,
        the rule and the fix.

    Examples
    --------
    >>> import torch
    >>> from meshclosure.mesh import cartesian
    >>> mesh = cartesian(4, 4)
    >>> state = {"q": torch.zeros(16, dtype=torch.float64)}
    >>> phi = closure_fluxes(lambda t, s, m: {"q": torch.ones(m.n_faces)}, 0.0, state, mesh, ["q"])
    >>> phi["q"].dtype, tuple(phi["q"].shape)
    (torch.float64, (32,))
    >>> closure_fluxes(lambda t, s, m: {"b": torch.ones(m.n_faces)}, 0.0, state, mesh, ["q"])
    Traceback (most recent call last):
    ...
    meshclosure.solver.ClosureError: closure=<returned keys ['b']>: may return face fluxes only for the model's variables ['q'] (a flux for any other name would be silently ignored); rename 'b' to one of ['q'], or drop it.
    """
    if closure is None:
        return {}
    if getattr(closure, "takes_context", False):
        pos = current_stage()
        ctx = ClosureContext(float(t), dict(state), mesh, transport, pos.step, pos.stage,
                             pos.stepper, pos.dt)
        out = closure(ctx)
    else:
        out = closure(t, dict(state), mesh)
    out = _check_output(out, state, mesh, variables, hint)
    if calls is not None:
        calls.record(t, state, out)
    return out


def recorded_or_fresh(closure: Optional[Closure], calls: ClosureCalls, t: float,
                      state: Mapping[str, Tensor], mesh: Mesh,
                      variables: Sequence[str]) -> Dict[str, Tensor]:
    """What the closure returned at ``(t, state)`` if recorded, else a fresh (checked) call."""
    found = calls.find(t, state)
    return found if found is not None else closure_fluxes(closure, t, state, mesh, variables)


def _check_output(out, state: Mapping[str, Tensor], mesh: Mesh,
                  variables: Sequence[str], hint: str = "") -> Dict[str, Tensor]:
    names = list(variables)
    example = f"a dict mapping {names[0]!r} to the flux" if names else "a dict"
    if isinstance(out, Tensor) or not isinstance(out, Mapping):
        raise ClosureError("closure", _shown(f"<returned {describe(out)!r}>"),
                           "must return a dict {variable: face flux (n_faces, ...)}",
                           f"return {example}; the model's variables are {names}")
    unknown = [k for k in out if k not in names]
    if unknown:
        raise ClosureError("closure", _shown(f"<returned keys {sorted(map(str, out))}>"),
                           f"may return face fluxes only for the model's variables {names} (a "
                           f"flux for any other name would be silently ignored)",
                           f"rename {unknown[0]!r} to one of {names}"
                           + (f" ({hint})" if hint else "") + ", or drop it")
    checked: Dict[str, Tensor] = {}
    for name in names:
        if name not in out:
            continue
        phi, q = out[name], state[name]
        shown = _shown(f"<returned {{{name!r}: {describe(phi)!r}}}>")
        if not isinstance(phi, Tensor):
            raise ClosureError("closure", shown, "must return torch tensors as face fluxes",
                               f"return torch.as_tensor(flux) as the value of {name!r}")
        if not phi.is_floating_point():
            raise ClosureError("closure", shown, f"the flux for {name!r} must be a real "
                               "floating-point tensor (an integer or complex flux cannot be "
                               "added to the resolved flux)",
                               f"return flux.to(state[{name!r}].dtype)")
        expected = (mesh.n_faces,) + tuple(q.shape[1:])
        if tuple(phi.shape) != expected:
            raise ClosureError("closure", shown, f"closure flux for {name!r} must have shape "
                               f"(n_faces, ...) = {expected} (one integrated flux per face, "
                               "positive owner -> neighbour)",
                               f"return one value per face of the mesh (mesh.n_faces = "
                               f"{mesh.n_faces}) with the trailing dims of state[{name!r}]")
        if phi.device != q.device:
            raise ClosureError("closure", shown, f"the flux for {name!r} must be on the state's "
                               f"device {q.device}",
                               f"build it on state[{name!r}].device or move it with "
                               f".to(state[{name!r}].device)")
        checked[name] = phi.to(q.dtype)
    return checked


def check_flux_noise(flux_noise, n_faces: int):
    """Check the noise amplitude: a number or a ``(n_faces,)`` tensor, finite and ``>= 0``."""
    return check_coefficient(flux_noise, n_faces, "flux_noise",
                             what="standard deviation of the face-flux noise")


def _is_zero(x) -> bool:
    return isinstance(x, (int, float)) and x == 0


def add_flux_noise(flux: Optional[Tensor], sigma, shape: Tuple[int, ...], like: Tensor,
                   generator: Optional[torch.Generator]) -> Optional[Tensor]:
    """``flux + σ_f ξ_f`` with one standard normal ``ξ_f`` per face and call.

    Parameters
    ----------
    flux : Tensor, shape (n_faces, ...), or None
        The flux so far (``None``: zero).
    sigma : float or Tensor, shape (n_faces,)
        Noise standard deviation per face; ``0`` returns ``flux`` unchanged
        (and draws nothing, so the generator is untouched).
    shape : tuple
        ``(n_faces, ...)``.
    like : Tensor
        Gives the dtype and device.
    generator : torch.Generator, optional

    Returns
    -------
    Tensor, shape (n_faces, ...), or None
        Each face carries one value, so the noise enters its two cells with
        opposite signs: conservative to rounding.
    """
    if _is_zero(sigma):
        return flux
    noise = torch.randn(shape, dtype=like.dtype, device=like.device, generator=generator)
    s = torch.as_tensor(sigma, dtype=like.dtype, device=like.device)
    noise = noise * s.reshape(s.shape + (1,) * (len(shape) - s.dim()))
    return noise if flux is None else flux + noise


class NonFinitePart(NamedTuple):
    """The first non-finite part of a right-hand side, as found by a model's ``diagnose``.

    Attributes
    ----------
    part : str
        One of :data:`PARTS`.
    variable : str or None
        The variable the part belongs to (``None`` for the transport).
    where : str
        ``"faces"``, ``"boundary faces"`` or ``"cells"``.
    index : list of int
        The first offending rows (at most 10).
    """

    part: str
    variable: Optional[str]
    where: str
    index: List[int]

    def describe(self) -> str:
        """E.g. ``"the closure (its flux for 'q' at faces [5])"``."""
        what = {"transport": "the transport", "closure": "the closure",
                "boundary_flux": "the boundary flux", "forcing": "the forcing",
                "source": "the source"}[self.part]
        of = "" if self.variable is None else f" for {self.variable!r}"
        return f"{what}{of} (non-finite at {self.where} {self.index})"


def _bad_rows(x: Tensor) -> List[int]:
    ok = torch.isfinite(x)
    if x.dim() == 0:
        return [] if bool(ok) else [0]
    return (~ok.reshape(x.shape[0], -1).all(1)).nonzero().flatten()[:10].tolist()


def first_nonfinite(parts: Iterable[Tuple[str, Optional[str], str, Callable[[], object]]]
                    ) -> Optional[NonFinitePart]:
    """The first of ``parts`` whose value is not finite, or ``None``.

    Parameters
    ----------
    parts : iterable of (part, variable, where, thunk)
        Evaluated lazily in order; ``thunk()`` returns a Tensor, a number,
        a dict of tensors (checked per key, the key becoming the variable) or
        ``None`` (skipped).

    Examples
    --------
    >>> import torch
    >>> first_nonfinite([("transport", None, "faces", lambda: torch.ones(3)),
    ...                  ("source", "q", "cells", lambda: torch.tensor([0.0, float("nan")]))])
    NonFinitePart(part='source', variable='q', where='cells', index=[1])
    """
    for part, variable, where, thunk in parts:
        value = thunk()
        items = value.items() if isinstance(value, Mapping) else [(variable, value)]
        for var, x in items:
            if x is None:
                continue
            x = torch.as_tensor(x)
            if not (x.is_floating_point() or x.is_complex()):
                continue
            bad = _bad_rows(x.detach())
            if bad:
                return NonFinitePart(part, var, where, bad)
    return None
