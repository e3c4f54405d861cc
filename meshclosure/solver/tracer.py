"""Advection–diffusion of a passive tracer in flux form, with a closure hook.

The model solves, on any :class:`~meshclosure.mesh.Mesh`, ::

    ∂t q + ∇·(u q) = ∇·(κ ∇q) + S − r (q − q*)

in the finite-volume form (DESIGN.md §2, §6) ::

    dq_i/dt = −div(Φ^adv + Φ^diff + Φ^closure + Φ^noise)_i + S_i − r (q_i − q*_i)

with all face fluxes integrated over the face and positive owner -> neighbour:

* ``Φ^adv_f = U_f q_f`` (:mod:`meshclosure.fv.advection`; ``U`` the integrated
  face transport, exactly non-divergent when it comes from a streamfunction),
* ``Φ^diff_f = −κ ∇q·n_f A_f`` (:func:`meshclosure.fv.diffusion.diffusive_flux`),
* ``Φ^closure`` from the learned (or any) closure ``closure(t, state, mesh)``,
* ``Φ^noise_f ~ N(0, σ_f²)``, one sample per face and call: a stochastic flux
  that is conservative because each face carries one value.

Every flux passes through the one divergence, so ``Σ_i V_i dq_i/dt`` equals the
volume integral of the sources minus the net boundary flux, to rounding,
whatever the closure or the noise.
"""
from __future__ import annotations

from typing import Callable, Dict, Mapping, Optional, Tuple, Union

import torch
from torch import Tensor

from .._checks import check_float as _check_float
from .._sparse import sparse_ok as _sparse_ok, spmm as _spmm
from ..fv.advection import (advection_matrix, cfl_dt, linear_flux, max_faces_per_cell,
                             quadratic_flux, upwind_flux)
from ..fv.diffusion import check_coefficient
from ..fv.operators import divergence
from ..fv.versions import check_operators
from ..mesh import Mesh
from ._closure import (Closure, ClosureCalls, NonFinitePart, add_flux_noise, check_flux_noise,
                       closure_fluxes, first_nonfinite, recorded_or_fresh)

__all__ = ["TracerModel", "SCHEMES"]

SCHEMES = ("linear", "limited", "upwind", "quadratic")
"""Advection schemes: unlimited linear reconstruction (2nd order), Barth–Jespersen
limited linear reconstruction (2nd order, no new extrema), first-order upwind, and
quadratic least-squares reconstruction (2nd order, smaller error, not limited)."""


class TracerModel(torch.nn.Module):
    """Tracer advection–diffusion right-hand side on a mesh.

    Parameters
    ----------
    mesh : Mesh
    transport : Tensor, shape (n_faces,), or callable ``t -> Tensor (n_faces,)``
        Integrated face transports ``U_f`` (length²/time), positive owner ->
        neighbour, e.g. :func:`meshclosure.fv.transport_from_streamfunction`;
        a callable for time-dependent flows. A fixed tensor is turned into a
        cached advection matrix; change the flow by assigning a new tensor
        (``model.transport = U2``) or with in-place torch ops, not through
        ``U.data`` or ``U.numpy()``, which the cache cannot see.
    kappa : float or Tensor (n_faces,)
        Diffusivity (length²/time), finite and ``>= 0`` at every face;
        ``0`` disables diffusion.
    source : Tensor (n_cells, ...) or callable ``(t, state) -> Tensor``, optional
        Source ``S`` ([q]/time).
    relaxation : (rate, target), optional
        Newtonian relaxation ``−rate (q − target)``; ``rate`` in 1/time,
        ``target`` a number or Tensor (n_cells, ...).
    scheme : {"linear", "limited", "upwind", "quadratic"}
        Advection scheme (see :data:`SCHEMES`): linear reconstruction,
        the same limited (no new extrema), first-order upwind, or quadratic
        reconstruction (:func:`meshclosure.fv.advection.quadratic_flux`:
        second order, smaller errors, not limited).
    closure : callable ``(t, state, mesh) -> dict var -> Tensor (n_faces, ...)``, optional
        Subgrid face fluxes added to the resolved flux before the divergence.
        It may return a flux for ``var`` only (or an empty dict); anything
        else (another name, a bare tensor, a wrong shape, an integer or
        complex dtype, another device) raises
        :class:`~meshclosure.solver.ClosureError`.
        If it is an ``nn.Module`` its parameters are this model's parameters.
    flux_noise : float or Tensor (n_faces,)
        Standard deviation of Gaussian face-flux noise ([q]·length²/time);
        drawn anew at every ``rhs`` call (every Runge–Kutta stage).
    boundary_flux : Tensor (n_boundary_faces, ...) or callable ``t -> Tensor``, optional
        Prescribed outward flux of ``q`` through boundary faces; walls (zero)
        by default.
    var : str
        Name of the tracer in the state dict (default ``"q"``).
    generator : torch.Generator, optional
        Random generator for the flux noise.
    operators : str, optional
        Operator version of the reconstruction stencils
        (:mod:`meshclosure.fv.versions`; default the current one, ``"fv2"``:
        k-exact quadratic reconstruction, vertex-neighbour gradients on meshes
        with slivers, where the linear scheme is then stable). ``"fv1"``
        reproduces data made before operator versions existed.

    Examples
    --------
    >>> import torch
    >>> from meshclosure.mesh import cartesian
    >>> mesh = cartesian(8, 8)
    >>> U = 0.3 * mesh.face_normal[:, 0] * mesh.face_area
    >>> model = TracerModel(mesh, U, scheme="upwind", flux_noise=0.1)
    >>> q = torch.rand(mesh.n_cells, dtype=torch.float64)
    >>> dq = model.rhs(0.0, {"q": q})["q"]
    >>> abs(float((mesh.cell_volume * dq).sum())) < 1e-14
    True
    >>> TracerModel(mesh, U, scheme="weno")
    Traceback (most recent call last):
    ...
    ValueError: scheme must be one of ('linear', 'limited', 'upwind', 'quadratic'); got 'weno'. ...
    >>> bad = TracerModel(mesh, U, closure=lambda t, s, m: {"b": torch.zeros(m.n_faces)})
    >>> bad.rhs(0.0, {"q": q})
    Traceback (most recent call last):
    ...
    meshclosure.solver.ClosureError: closure=<returned keys ['b']>: may return face fluxes only for the model's variables ['q'] (a flux for any other name would be silently ignored); rename 'b' to one of ['q'] (TracerModel(var=...) names the tracer), or drop it.
    """

    def __init__(self, mesh: Mesh, transport: Union[Tensor, Callable[[float], Tensor]],
                 kappa: Union[float, Tensor] = 0.0,
                 source: Union[Tensor, Callable, None] = None,
                 relaxation: Optional[Tuple[float, Union[float, Tensor]]] = None,
                 scheme: str = "linear", closure: Optional[Closure] = None,
                 flux_noise: Union[float, Tensor] = 0.0,
                 boundary_flux: Union[Tensor, Callable, None] = None,
                 var: str = "q", generator: Optional[torch.Generator] = None,
                 operators: Optional[str] = None) -> None:
        super().__init__()
        if not isinstance(mesh, Mesh):
            raise TypeError(f"mesh must be a meshclosure.mesh.Mesh; got {type(mesh).__name__}.")
        if scheme not in SCHEMES:
            raise ValueError(f"scheme must be one of {SCHEMES}; got {scheme!r}. Use 'limited' "
                             "for bounded tracers, 'linear' or 'quadratic' for accuracy, "
                             "'upwind' for a first-order reference.")
        if isinstance(transport, Tensor):
            if transport.shape[:1] != (mesh.n_faces,) or transport.dim() != 1:
                raise ValueError(f"transport must have shape (n_faces,) = ({mesh.n_faces},); "
                                 f"got {tuple(transport.shape)}. Build it with "
                                 "meshclosure.fv.transport_from_streamfunction(mesh, psi).")
        elif not callable(transport):
            raise TypeError(f"transport must be a Tensor (n_faces,) or a callable t -> Tensor; "
                            f"got {type(transport).__name__}.")
        if relaxation is not None and (not isinstance(relaxation, (tuple, list))
                                       or len(relaxation) != 2):
            raise ValueError(f"relaxation must be a pair (rate, target); got {relaxation!r}.")
        kappa = check_coefficient(kappa, mesh.n_faces, "kappa")
        flux_noise = check_flux_noise(flux_noise, mesh.n_faces)
        if closure is not None and not callable(closure):
            raise TypeError(f"closure must be a callable (t, state, mesh) -> dict of face "
                            f"fluxes; got {type(closure).__name__}.")
        self.mesh = mesh
        self.transport = transport
        self.kappa = kappa
        self.source = source
        self.relaxation = relaxation
        self.scheme = scheme
        self.operators = check_operators(operators)
        self.closure = closure
        self.flux_noise = flux_noise
        self.boundary_flux = boundary_flux
        self.var = var
        self.generator = generator
        self._operator: Optional[dict] = None
        self._closure_calls = ClosureCalls()

    def _advection_operator(self, q: Tensor) -> Optional[Tensor]:
        """Assembled advective tendency ``L`` (CSR) for a fixed transport tensor, or ``None``.

        With a constant ``U`` the "upwind" and "linear" schemes are linear in
        ``q``, so ``−div(Φ^adv) = L q`` (:func:`meshclosure.fv.advection.advection_matrix`):
        one sparse product per call instead of a reconstruction, an upwind
        selection and a divergence. Assembled on the second call with the
        same transport tensor (same object, unchanged ``_version``), so a
        transport used once costs nothing extra; not used when the transport
        is callable or needs a gradient.
        """
        U = self.transport
        if (self.scheme == "limited" or not isinstance(U, Tensor) or not _sparse_ok(q)
                or q.numel() == 0 or (U.requires_grad and torch.is_grad_enabled())):
            return None
        key = (U._version, q.dtype, q.device)
        cache = self._operator
        if cache is None or cache["transport"] is not U or cache["key"] != key:
            self._operator = {"transport": U, "key": key, "matrix": None}
            return None
        if cache["matrix"] is None:
            cache["matrix"] = advection_matrix(self.mesh, U.to(device=q.device, dtype=q.dtype),
                                               self.scheme, self.operators)
        return cache["matrix"]

    # ----------------------------------------------------------------- pieces
    def face_transport(self, t: float) -> Tensor:
        """Integrated face transport ``U (n_faces,)`` at time ``t``."""
        U = self.transport(t) if callable(self.transport) else self.transport
        if U.shape != (self.mesh.n_faces,):
            raise ValueError(f"transport(t={t}) returned shape {tuple(U.shape)}; expected "
                             f"(n_faces,) = ({self.mesh.n_faces},).")
        return U

    def advective_flux(self, t: float, q: Tensor) -> Tensor:
        """Resolved advective face flux ``(n_faces, ...)`` of the chosen scheme."""
        U = self.face_transport(t).to(q.dtype)
        if self.scheme == "upwind":
            return upwind_flux(self.mesh, q, U)
        if self.scheme == "quadratic":
            return quadratic_flux(self.mesh, q, U, operators=self.operators)
        limiter = "barth_jespersen" if self.scheme == "limited" else None
        return linear_flux(self.mesh, q, U, limiter=limiter, operators=self.operators)

    def resolved_flux(self, t: float, q: Tensor) -> Tensor:
        """Advective plus diffusive face flux ``(n_faces, ...)``."""
        flux = self.advective_flux(t, q)
        if not (isinstance(self.kappa, (int, float)) and self.kappa == 0):
            flux = flux + self._diffusive_flux(q)
        return flux

    def _diffusive_flux(self, q: Tensor) -> Tensor:
        from ..fv.diffusion import diffusive_flux

        return diffusive_flux(self.mesh, q, self.kappa)

    def rhs(self, t: float, state: Mapping[str, Tensor]) -> Dict[str, Tensor]:
        """Tendencies ``{var: dq/dt (n_cells, ...)}`` (see the module docstring)."""
        if self.var not in state:
            raise KeyError(f"state has no variable {self.var!r} (keys {sorted(state)}); pass "
                           f"{{{self.var!r}: q}} or set TracerModel(var=...).")
        q = state[self.var]
        if q.shape[:1] != (self.mesh.n_cells,):
            raise ValueError(f"state[{self.var!r}] must have n_cells = {self.mesh.n_cells} rows; "
                             f"got shape {tuple(q.shape)}.")
        _check_float(f"state[{self.var!r}]", q)
        operator = self._advection_operator(q)
        tend: Optional[Tensor] = None
        flux: Optional[Tensor] = None
        if operator is None:
            flux = self.resolved_flux(t, q)
        else:
            # fixed transport: the advective tendency is one sparse product
            tend = _spmm(operator, q)
            if not (isinstance(self.kappa, (int, float)) and self.kappa == 0):
                flux = self._diffusive_flux(q)
        flux_shape = (self.mesh.n_faces,) + tuple(q.shape[1:])
        U = (self.face_transport(t) if getattr(self.closure, "takes_context", False)
             else None)                               # the closure context carries it
        extra = closure_fluxes(self.closure, t, state, self.mesh, [self.var],
                               "TracerModel(var=...) names the tracer", self._closure_calls,
                               transport=U)
        if self.var in extra:
            flux = extra[self.var] if flux is None else flux + extra[self.var]
        flux = add_flux_noise(flux, self.flux_noise, flux_shape, q, self.generator)
        bflux = self.boundary_flux(t) if callable(self.boundary_flux) else self.boundary_flux
        if flux is not None or bflux is not None:
            if flux is None:
                flux = q.new_zeros(flux_shape)
            div = divergence(self.mesh, flux, bflux)
            tend = -div if tend is None else tend - div
        if self.source is not None:
            tend = tend + (self.source(t, state) if callable(self.source) else self.source)
        if self.relaxation is not None:
            rate, target = self.relaxation
            tend = tend - rate * (q - target)
        return {self.var: tend}

    forward = rhs

    def diagnose(self, t: float, state: Mapping[str, Tensor]) -> Optional[NonFinitePart]:
        """The first part of :meth:`rhs` that is not finite at ``(t, state)``, or ``None``.

        Re-evaluates, in order, the transport, the closure (reading its
        recorded output for this exact call when there is one, so a stateful
        or sampling closure is not called again), the boundary flux, the
        source and the relaxation (not the noise, which is finite by
        construction, and without drawing from the generator).
        :func:`~meshclosure.solver.integrate` calls it at the failing stage
        when a step turns the state non-finite; ``None`` means every part
        was finite, so the step itself (the resolved fluxes at this ``dt``)
        produced the non-finite value.

        Returns
        -------
        NonFinitePart or None
        """
        q = state[self.var]

        def source():
            return self.source(t, state) if callable(self.source) else self.source

        def relaxation():
            if self.relaxation is None:
                return None
            rate, target = self.relaxation
            return rate * (q - target)

        def boundary():
            return self.boundary_flux(t) if callable(self.boundary_flux) else self.boundary_flux

        return first_nonfinite([
            ("transport", None, "faces", lambda: self.face_transport(t)),
            ("closure", self.var, "faces",
             lambda: recorded_or_fresh(self.closure, self._closure_calls, t, state, self.mesh,
                                       [self.var])),
            ("boundary_flux", self.var, "boundary faces", boundary),
            ("source", self.var, "cells", source),
            ("source", self.var, "cells", relaxation),
        ])

    # ---------------------------------------------------------------- helpers
    def total(self, state: Mapping[str, Tensor]) -> Tensor:
        """Domain integral ``Σ_i V_i q_i`` (conserved without sources/boundary flux)."""
        q = state[self.var]
        V = self.mesh.cell_volume.to(q.dtype)
        return (V.reshape((-1,) + (1,) * (q.dim() - 1)) * q).sum(0)

    def cfl_dt(self, courant: Optional[float] = None, t: float = 0.0,
               t1: Optional[float] = None, n_samples: Optional[int] = None,
               sample_step: Optional[float] = None, return_time: bool = False):
        """An advective time step: outflow Courant number ``courant`` (default
        ``1/k_max`` for ``"limited"``, the no-new-extrema bound; 0.5 otherwise).

        For a time-dependent transport, pass the window ``[t, t1]``: the
        transport is sampled at ``n_samples`` equally spaced times (default
        101) or every ``sample_step``, and the smallest step is returned (with
        the time where it is attained if ``return_time``); see
        :func:`meshclosure.fv.advection.cfl_dt`.

        What it guarantees: every cell's outflow Courant number is at most
        ``courant`` at the sampled times (between samples an estimate). It
        does not make an unstable scheme stable: on meshes with slivers the
        unlimited ``"linear"`` scheme can grow at any step (``mesh.validate()``
        warns and names ``"quadratic"``, ``"limited"`` or ``"upwind"``).
        """
        if courant is None:
            if self.scheme == "limited":
                courant = 1.0 / max_faces_per_cell(self.mesh)
            else:
                courant = 0.5
        if t1 is None and n_samples is None and sample_step is None:
            dt = cfl_dt(self.mesh, self.face_transport(t), courant)
            return (dt, t) if return_time else dt
        U = self.face_transport if callable(self.transport) else self.face_transport(t)
        return cfl_dt(self.mesh, U, courant, t0=t, t1=t1,
                      n_samples=n_samples, sample_step=sample_step, return_time=return_time)
