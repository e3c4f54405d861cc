"""Subgrid targets: what a coarse model misses, as coarse face fluxes (DESIGN.md §5).

For a conserved quantity ``q`` transported by the integrated face transport ``U``
with the resolved flux operator ``Φ^res(q, U)`` of a scenario, a fine state
``q`` and its coarsening (parent map, :class:`~meshclosure.mesh.Coarsening`)::

    Q     = restrict(q)                                  coarse state
    U_c   = scenario.coarse_transport(...)               coarse transport
            (default restrict_flux(U), DESIGN.md §5)
    Φ^sgs = restrict_flux(Φ^res_fine(q, U)) − Φ^res_coarse(Q, U_c)
    B^sgs = restrict_boundary_flux(B_fine(q)) − B_coarse(Q)
    s^sgs = restrict(T_fine(q)) − T_coarse(Q),      T = −div(Φ^res, B)

``B`` are the scenario's outward boundary fluxes (zero at walls, so ``B^sgs``
is usually zero). ``s^sgs`` is computed on its own, from the restricted fine
tendency, and not from ``Φ^sgs``: interior fine faces of a coarse cell
cancel in ``restrict(div_fine(·))``, so the identity

    s^sgs = −div_coarse(Φ^sgs, B^sgs)

holds to rounding and is a real check of the pair (:func:`check_identity`).
Cell-local sources ``S(q)`` of a scenario (relaxation, forcing, drag) are
not part of ``T``: they need no flux, and their coarse-graining residual
``restrict(S(q)) − S(Q)`` (zero for sources linear in ``q`` with
coefficients constant on each coarse cell) is not a target here.

Every flux is integrated over its face and positive owner -> neighbour
(units ``[q]·length²/time`` on a surface); ``U_c`` is exactly non-divergent
(``restrict_flux(U)`` whenever ``U`` is; a scenario's ``coarse_transport`` by
its contract).

The coarse transport is the one the COARSE model is given: a scenario's
``coarse_transport(coarsening, t, state, U)`` when it has one, else (and for
a plain flux function) ``restrict_flux(U)``. The ``kinematic`` scenario
departs from DESIGN.md §5 here: its transport comes from a streamfunction,
and the integrated transport of a streamfunction through a coarse face is
the difference of its POINT values at the face's two end vertices, so
``restrict_flux(U)`` does not filter the small-scale eddies at all; a coarse
model given it mixes the tracer itself, and ``Φ^sgs`` keeps only a
correction (with the scenario's former defaults a negative eddy diffusivity
that did not depend on ``N``; with the current ones less than half of it,
not positive at small ``N``). It gives the coarse model the large-scale
streamfunction at the coarse vertices instead
(:meth:`~meshclosure.data.scenarios.KinematicScenario.coarse_transport`).
Both ``Φ^sgs`` and ``s^sgs`` use the same ``Φ^res_coarse(Q, U_c)``, so the
identity above stays exact whatever ``U_c`` is.

Examples
--------
>>> import torch
>>> from meshclosure.mesh import Coarsening, cartesian
>>> from meshclosure.fv.advection import upwind_flux
>>> fine = cartesian(8, 8)
>>> c = Coarsening.native(fine, 2)
>>> U = 0.3 * fine.face_normal[:, 0] * fine.face_area
>>> q = torch.sin(6.283 * fine.cell_center[:, 0])
>>> flux = lambda mesh, t, state, U: {"q": upwind_flux(mesh, state["q"], U)}
>>> s = subgrid_targets(flux, c, 0.0, {"q": q}, U)
>>> check_identity(s, c.coarse) < 1e-12
True
>>> subgrid_targets(flux, c, 0.0, {"q": q[:5]}, U)
Traceback (most recent call last):
...
ValueError: state_fine['q'] must have shape (n_fine_cells,) = (64,); got (5,). ...
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

import torch
from torch import Tensor

from ..closures.features import FeaturePipeline
from ..fv.operators import divergence
from ..mesh import Coarsening, Mesh

__all__ = ["SubgridSample", "subgrid_targets", "check_identity", "coarse_inputs"]

FluxFn = Callable[[Mesh, float, Mapping[str, Tensor], Tensor], Mapping[str, Tensor]]


@dataclass
class SubgridSample:
    """One coarse-grained snapshot and its subgrid targets.

    Attributes
    ----------
    t : float
        Model time.
    state : dict of str -> Tensor, shape (n_cells,)
        Coarse state ``Q = restrict(q)`` per conserved variable.
    transport : Tensor, shape (n_faces,)
        Coarse transport ``U_c`` given to the coarse model (``restrict_flux(U)``
        unless the scenario's ``coarse_transport`` says otherwise).
    flux : dict of str -> Tensor, shape (n_faces,)
        Subgrid face flux ``Φ^sgs`` per variable.
    tendency : dict of str -> Tensor, shape (n_cells,)
        Subgrid tendency ``s^sgs`` per variable, from the restricted fine tendency.
    boundary_flux : dict of str -> Tensor, shape (n_boundary_faces,)
        Subgrid outward boundary flux ``B^sgs`` (zeros without boundary fluxes).
    inputs : dict of str -> Tensor, shape (n_cells,)
        Resolved inputs a closure may use (see :func:`coarse_inputs`).
    step_flux : dict of str -> Tensor, shape (n_faces,)
        Trajectory samples only (:func:`~meshclosure.data.trajectory.trajectory_samples`):
        the step-mean subgrid flux ``Φ̄^sgs`` over the coarse step that starts here.
    step_boundary_flux : dict of str -> Tensor, shape (n_boundary_faces,)
        Its boundary part (step mean of ``B^sgs``).
    step_forcing : dict of str -> Tensor, shape (n_cells,)
        Step mean of the restricted random forcing (scenarios that have one).
    transport_stages : Tensor, shape (n_stages, n_faces), optional
        Prescribed-flow scenarios: the coarse transport at every stage time of the step.
    """

    t: float
    state: Dict[str, Tensor]
    transport: Tensor
    flux: Dict[str, Tensor]
    tendency: Dict[str, Tensor]
    boundary_flux: Dict[str, Tensor]
    inputs: Dict[str, Tensor] = field(default_factory=dict)
    step_flux: Dict[str, Tensor] = field(default_factory=dict)
    step_boundary_flux: Dict[str, Tensor] = field(default_factory=dict)
    step_forcing: Dict[str, Tensor] = field(default_factory=dict)
    transport_stages: Optional[Tensor] = None

    @property
    def variables(self) -> tuple:
        return tuple(self.flux)

    def to(self, device: Any) -> "SubgridSample":
        """A copy with every tensor on ``device`` (``self`` when all are there already):
        a scenario on a GPU computes its samples there, and the writer moves only
        the coarse results with ``sample.to("cpu")``.

        >>> import torch
        >>> s = SubgridSample(0.0, {"q": torch.ones(2)}, torch.ones(3), {}, {}, {})
        >>> s.to("cpu") is s
        True
        """
        dev = torch.device(device)
        tensors = [self.transport, self.transport_stages, *self.state.values(),
                   *self.flux.values(), *self.tendency.values(), *self.boundary_flux.values(),
                   *self.inputs.values(), *self.step_flux.values(),
                   *self.step_boundary_flux.values(), *self.step_forcing.values()]
        if all(x is None or x.device == dev for x in tensors):
            return self
        move = lambda d: {k: v.to(dev) for k, v in d.items()}  # noqa: E731
        return replace(self, state=move(self.state), transport=self.transport.to(dev),
                       flux=move(self.flux), tendency=move(self.tendency),
                       boundary_flux=move(self.boundary_flux), inputs=move(self.inputs),
                       step_flux=move(self.step_flux),
                       step_boundary_flux=move(self.step_boundary_flux),
                       step_forcing=move(self.step_forcing),
                       transport_stages=None if self.transport_stages is None
                       else self.transport_stages.to(dev))


def _check_state(state: Mapping[str, Tensor], variables: Sequence[str], n: int) -> None:
    for var in variables:
        if var not in state:
            raise KeyError(f"state_fine has no variable {var!r} (keys {sorted(state)}); the "
                           "scenario's variables must all be in the state.")
        if tuple(state[var].shape) != (n,):
            raise ValueError(f"state_fine[{var!r}] must have shape (n_fine_cells,) = ({n},); got "
                             f"{tuple(state[var].shape)}. Pass the fine state of the coarsening's "
                             "fine mesh.")


def coarse_inputs(mesh: Mesh, state: Mapping[str, Tensor], variables: Sequence[str],
                  extra: Optional[Mapping[str, Tensor]] = None,
                  operators: Optional[str] = None) -> Dict[str, Tensor]:
    """Resolved cell inputs on a (coarse) mesh: gradients in the local frame, plus ``extra``.

    ``grad_<var>_1`` and ``grad_<var>_2`` are the least-squares cell gradient
    (:func:`meshclosure.fv.gradient`, of operator version ``operators``;
    default the current one) projected on the local tangent frame
    (x, y on the plane; east, north on the sphere; see
    :func:`meshclosure.graph.local_frame`), units ``[q]/length``. The state
    itself is not repeated here.

    Returns
    -------
    dict of str -> Tensor, shape (n_cells,)
    """
    extra = dict(extra or {})
    for name, value in extra.items():
        if name.startswith("grad_") and name[len("grad_"):].rsplit("_", 1)[0] in variables:
            raise ValueError(f"resolved input {name!r} clashes with a gradient input; rename it "
                             "in the scenario's resolved_inputs.")
        if tuple(value.shape) != (mesh.n_cells,):
            raise ValueError(f"resolved input {name!r} must have shape (n_cells,) = "
                             f"({mesh.n_cells},); got {tuple(value.shape)}.")
    # one code path: the pipeline the online closure runs (meshclosure.closures.features)
    pipe = FeaturePipeline(variables, gradients=True, extra=tuple(extra),
                           extra_fn=lambda *args: extra, operators=operators)
    x = pipe(mesh, state)                                # (n_cells, F)
    return {name[len("input_"):]: x[:, k] for k, name in enumerate(pipe.names)
            if name.startswith("input_")}


def _fluxes(fn: FluxFn, mesh: Mesh, t: float, state, U, variables) -> Dict[str, Tensor]:
    out = dict(fn(mesh, t, state, U))
    for var in variables:
        if var not in out or tuple(out[var].shape) != (mesh.n_faces,):
            got = tuple(out[var].shape) if var in out else "missing"
            raise ValueError(f"resolved_fluxes must return {var!r} with shape (n_faces,) = "
                             f"({mesh.n_faces},) on {mesh!r}; got {got}.")
    return out


def subgrid_targets(scenario_or_fluxfn: Any, coarsening: Coarsening, t: float,
                    state_fine: Mapping[str, Tensor], transport_fine: Tensor,
                    variables: Optional[Sequence[str]] = None,
                    inputs: bool = True, tendency: bool = True) -> SubgridSample:
    """Coarse state, coarse transport and subgrid flux/tendency targets of one fine snapshot.

    Parameters
    ----------
    scenario_or_fluxfn : Scenario or callable
        A scenario (with ``variables``, ``resolved_fluxes(mesh, t, state, U)``,
        ``boundary_fluxes(mesh, t, state)``, ``resolved_inputs(mesh, t,
        state, U)`` and optionally ``coarse_transport(coarsening, t, state,
        U)``, which gives ``U_c``), or just a resolved-flux function ``(mesh, t,
        state, U) -> {var: Tensor (n_faces,)}`` (no boundary fluxes, no extra
        inputs, ``U_c = restrict_flux(U)``).
    coarsening : Coarsening
        Fine -> coarse map; its fine mesh is the mesh of ``state_fine``.
    t : float
        Model time of the snapshot.
    state_fine : dict of str -> Tensor, shape (n_fine_cells,)
        Fine state (other keys than the variables are restricted as well).
    transport_fine : Tensor, shape (n_fine_faces,)
        Fine integrated face transport ``U``.
    variables : sequence of str, optional
        Conserved variables with targets (default: the scenario's, or every
        key of ``state_fine`` for a flux function).
    inputs : bool
        Compute the resolved inputs (gradients, scenario inputs).
    tendency : bool
        Compute ``s^sgs``; ``False`` leaves :attr:`SubgridSample.tendency` empty (the
        step means of :func:`~meshclosure.data.trajectory.coarse_steps` need only the
        fluxes: two divergences and a restriction fewer per fine stage).

    Returns
    -------
    SubgridSample
    """
    fine, coarse = coarsening.fine, coarsening.coarse
    is_scenario = hasattr(scenario_or_fluxfn, "resolved_fluxes")
    if is_scenario:
        sc = scenario_or_fluxfn
        flux_fn = sc.resolved_fluxes
        boundary_fn = sc.boundary_fluxes
        variables = tuple(variables or sc.variables)
    elif callable(scenario_or_fluxfn):
        flux_fn, boundary_fn = scenario_or_fluxfn, (lambda mesh, t, state: None)
        variables = tuple(variables or state_fine)
    else:
        raise TypeError("scenario_or_fluxfn must be a Scenario or a callable (mesh, t, state, U) "
                        f"-> {{var: face flux}}; got {type(scenario_or_fluxfn).__name__}.")
    _check_state(state_fine, variables, fine.n_cells)
    if tuple(transport_fine.shape) != (fine.n_faces,):
        raise ValueError(f"transport_fine must have shape (n_fine_faces,) = ({fine.n_faces},); "
                         f"got {tuple(transport_fine.shape)}.")

    Q = {k: coarsening.restrict(v) for k, v in state_fine.items()}
    if is_scenario and hasattr(sc, "coarse_transport"):
        Uc = sc.coarse_transport(coarsening, t, state_fine, transport_fine)
        if tuple(Uc.shape) != (coarse.n_faces,):
            raise ValueError(f"coarse_transport must return shape (n_coarse_faces,) = "
                             f"({coarse.n_faces},); got {tuple(Uc.shape)}.")
    else:
        Uc = coarsening.restrict_flux(transport_fine)
    phi_f = _fluxes(flux_fn, fine, t, state_fine, transport_fine, variables)
    phi_c = _fluxes(flux_fn, coarse, t, Q, Uc, variables)
    b_f = boundary_fn(fine, t, state_fine) or {}
    b_c = boundary_fn(coarse, t, Q) or {}

    flux, tend, bflux = {}, {}, {}
    for var in variables:
        dtype = phi_f[var].dtype
        bf = b_f.get(var)
        bc = b_c.get(var)
        bf = bf if bf is not None else phi_f[var].new_zeros(fine.n_boundary_faces)
        bc = bc if bc is not None else phi_c[var].new_zeros(coarse.n_boundary_faces)
        flux[var] = coarsening.restrict_flux(phi_f[var]) - phi_c[var]
        bflux[var] = coarsening.restrict_boundary_flux(bf.to(dtype)) - bc.to(dtype)
        if tendency:
            T_f = -divergence(fine, phi_f[var], bf.to(dtype) if fine.n_boundary_faces else None)
            T_c = -divergence(coarse, phi_c[var],
                              bc.to(dtype) if coarse.n_boundary_faces else None)
            tend[var] = coarsening.restrict(T_f) - T_c
    extra: Dict[str, Tensor] = {}
    if inputs:
        resolved = sc.resolved_inputs(coarse, t, Q, Uc) if is_scenario else {}
        extra = coarse_inputs(coarse, Q, variables, resolved,
                              getattr(sc, "operators", None) if is_scenario else None)
    return SubgridSample(t=float(t), state={v: Q[v] for v in variables}, transport=Uc,
                         flux=flux, tendency=tend, boundary_flux=bflux, inputs=extra)


def check_identity(sample: SubgridSample, coarse: Mesh) -> float:
    """Largest relative defect of ``s^sgs = −div_coarse(Φ^sgs, B^sgs)`` over the variables.

    Relative to the largest of ``max|s^sgs|`` and ``max|div(Φ^sgs)|`` (and the
    floor ``1e-300``); near ``1e-15`` in float64 for a consistent pair.
    """
    worst = 0.0
    for var, phi in sample.flux.items():
        b = sample.boundary_flux.get(var)
        d = -divergence(coarse, phi, b if coarse.n_boundary_faces else None)
        s = sample.tendency[var]
        scale = max(float(s.abs().max()), float(d.abs().max()), 1e-300)
        worst = max(worst, float((s - d).abs().max()) / scale)
    return worst
