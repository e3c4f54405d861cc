"""The :class:`Scenario` base class and helpers shared by the truth scenarios
(see :mod:`meshclosure.data.scenarios`)."""
from __future__ import annotations

import json
import math
import re
import weakref
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from ..._cache import per_mesh
from ..._sparse import csr as _csr, sparse_ok as _sparse_ok, spmm as _spmm
from ...errors import ArgumentError
from ...fv.advection import linear_flux, quadratic_flux, upwind_flux
from ...fv.diffusion import diffusive_flux
from ...fv.operators import divergence
from ...fv.versions import OperatorVersionError, check_operators
from ...mesh import Coarsening, Mesh
from ...solver import NonFinitePart, first_nonfinite, integrate
from ...typing import State

__all__ = ["Scenario", "ood_seed", "rotation_matrix", "State", "closure_operators"]

COMMON_PARAMETERS: Dict[str, Any] = {"operators": None}
"""Parameters every scenario takes: ``operators``, the operator version
(:mod:`meshclosure.fv.versions`) of every resolved operator it uses (fine and coarse
models, ``Φ^res``, gradients); ``None`` means the current version, and the config
records the name."""


def ood_seed(seed: int) -> int:
    """Seed of the out-of-distribution run of a run seeded ``seed`` (:meth:`Scenario.ood`).

    A separate stream: the first 63 bits of ``SeedSequence(seed).spawn(1)[0]``
    (a spawned child sequence never equals a plain ``[seed, stream]`` one), so
    no main run's seed reuses another run's OOD randomness by accident (as
    ``seed + offset`` would), and it is deterministic.

    >>> ood_seed(0) == ood_seed(0) != ood_seed(1)
    True
    """
    child = np.random.SeedSequence(int(seed)).spawn(1)[0]
    return int(child.generate_state(1, np.uint64)[0] >> np.uint64(1))

def canonical_rotation(value: Any) -> Any:
    """``rotation`` as :attr:`Scenario.config` records it: a float tilt (azimuth 0, or
    tilt 0: the identity), else ``[tilt, azimuth]``; raises ArgumentError for others.

    >>> canonical_rotation(30), canonical_rotation([30, 0]), canonical_rotation((30, 90))
    (30.0, 30.0, [30.0, 90.0])
    >>> canonical_rotation("30")
    Traceback (most recent call last):
    ...
    meshclosure.errors.ArgumentError: rotation='30': must be a tilt in degrees ...
    """
    rule = ("must be a tilt in degrees (a finite number) or a pair [tilt, azimuth] of "
            "finite numbers in degrees")
    fix = "pass e.g. {rotation}=30 or {rotation}=[30, 90]"
    pair = value if isinstance(value, (list, tuple)) else [value, 0.0]
    if len(pair) != 2 or not all(isinstance(v, (int, float, np.integer, np.floating))
                                 and not isinstance(v, bool) and math.isfinite(float(v))
                                 for v in pair):
        raise ArgumentError("rotation", value, rule, fix)
    tilt, azimuth = (float(v) for v in pair)
    return tilt if tilt == 0 or azimuth == 0 else [tilt, azimuth]


def rotation_matrix(rotation: Any = 0.0) -> Tensor:
    """The rotation ``R (3, 3)`` (float64) of a sphere scenario's ``rotation`` parameter.

    ``rotation`` is a tilt ``θ`` in degrees, or a pair ``[θ, φ]`` (azimuth ``φ``
    in degrees, default 0): ``R`` turns by ``θ`` about the horizontal axis
    ``(−sin φ, cos φ, 0)`` (the y axis for ``φ = 0``), so the pole goes to
    colatitude ``θ`` and longitude ``φ``:
    ``R ẑ = (sin θ cos φ, sin θ sin φ, cos θ)``. A rotated scenario sees every
    pattern ``p`` of the default one as ``p(Rᵀ x)``.

    Parameters
    ----------
    rotation : float or (float, float)
        ``θ`` or ``[θ, φ]`` in degrees.

    Returns
    -------
    Tensor, shape (3, 3)
        Orthogonal, determinant 1; the identity (exactly) when ``θ = 0``.

    Examples
    --------
    >>> R = rotation_matrix(90)
    >>> [round(float(v), 12) + 0.0 for v in R[:, 2]]       # R ẑ: the pole moves to +x
    [1.0, 0.0, 0.0]
    >>> [round(float(v), 12) + 0.0 for v in rotation_matrix([90, 90])[:, 2]]
    [0.0, 1.0, 0.0]
    >>> rotation_matrix([30, 0, 1])
    Traceback (most recent call last):
    ...
    meshclosure.errors.ArgumentError: rotation=[30, 0, 1]: must be a tilt in degrees ...
    """
    canon = canonical_rotation(rotation)
    tilt, azimuth = (canon, 0.0) if isinstance(canon, float) else canon
    if tilt == 0:
        return torch.eye(3, dtype=torch.float64)
    th, ph = math.radians(tilt), math.radians(azimuth)
    ux, uy = -math.sin(ph), math.cos(ph)                   # the axis u = (ux, uy, 0)
    u = torch.tensor([ux, uy, 0.0], dtype=torch.float64)
    cross = torch.tensor([[0.0, 0.0, uy], [0.0, 0.0, -ux], [-uy, ux, 0.0]],
                         dtype=torch.float64)                  # [u]×: cross @ v = u × v
    return (math.cos(th) * torch.eye(3, dtype=torch.float64) + math.sin(th) * cross
            + (1 - math.cos(th)) * torch.outer(u, u))


BLOCK = 64
"""OU samples whose random fields a scenario synthesises at once (one batched transform,
:class:`~meshclosure.data.random_flows.ModeSynthesis`), in blocks aligned to absolute sample
indices so that no value depends on where a run starts or resumes."""

_MESH_HELP = ("write the fine mesh as 'cartesian:64' (or 'cartesian:64x64'), 'healpix:32', "
              "'icosahedral:5' or 'cubed:32'")


def _check_device(device: Any) -> torch.device:
    """``device`` as a ``torch.device`` (None: the CPU); ArgumentError when it is not one
    this process can use.

    >>> _check_device(None), _check_device("cpu")
    (device(type='cpu'), device(type='cpu'))
    >>> _check_device("gpu")
    Traceback (most recent call last):
    ...
    meshclosure.errors.ArgumentError: device='gpu': must be a torch device ...
    """
    if device is None:
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ArgumentError("device", device, "must be a torch device ('cpu', 'cuda', "
                            "'cuda:1')", "pass e.g. {device}='cuda' or leave it out (CPU)") \
            from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ArgumentError("device", device, "is a CUDA device, and this torch build or "
                            "machine has none", "leave {device} out (CPU)")
    return dev


def _json_ready(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_json_ready(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value


# --------------------------------------------------------------------------- base class
class Scenario:
    """A seeded fine truth run with its coarsening and resolved flux operators.

    Build one with :func:`get_scenario`. Subclasses set :attr:`name`,
    :attr:`variables`, :attr:`families`, :attr:`default_mesh` and
    :attr:`parameters` (defaults; ``None`` means "derived from the mesh", and
    the derived value is what :attr:`config` records).

    Every scenario takes the parameter ``operators`` (:data:`COMMON_PARAMETERS`):
    the operator version (:mod:`meshclosure.fv.versions`, default the current
    one) of the fine and coarse models, ``Φ^res`` and the gradient inputs.
    ``operators="fv1"`` reproduces data made before versions existed, bit for bit.

    Attributes
    ----------
    name : str
    variables : tuple of str
        Conserved prognostic variables that get subgrid targets.
    config : dict
        Complete, JSON-serialisable: ``scenario``, ``mesh`` (canonical spec),
        ``factor``, ``seed``, ``dt``, ``operators`` and every physical and
        numerical parameter.
    operators : str
        The operator version (``config["operators"]``).
    fine, coarse : Mesh
    coarsening : Coarsening
    dt : float
        Fine time step.
    device : torch.device
        Where the fine mesh, the random-field tables and the fine model live
        (``device=`` of :func:`get_scenario`; not part of :attr:`config`: a run's
        values agree across devices to rounding). The OU amplitudes are drawn
        by NumPy on the CPU and moved a block at a time.
    spinup_info : dict
        Filled by :meth:`spin_up` (time reached, diagnostics, criterion).
    """

    name: str = ""
    variables: Tuple[str, ...] = ()
    families: Tuple[str, ...] = ()
    default_mesh: str = ""
    family_default_mesh: Dict[str, str] = {}
    parameters: Dict[str, Any] = {}
    ood_change: Dict[str, Any] = {}

    def __init__(self, mesh: Optional[str] = None, factor: int = 4, seed: int = 0, *,
                 device: Any = None, **config: Any) -> None:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ArgumentError("seed", seed, "must be an integer >= 0", "pass e.g. {seed}=0")
        if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or factor < 1:
            raise ArgumentError("factor", factor, "must be an integer >= 1 (the coarsening "
                                "factor in linear resolution)", "pass e.g. {factor}=4")
        if "rotation" in config and "rotation" not in self.parameters:
            raise ArgumentError("rotation", config["rotation"], f"is a parameter of the sphere "
                                f"scenarios ('kinematic', 'barotropic' on healpix, "
                                f"icosahedral and cubed meshes); the {self.name!r} scenario "
                                "has none",
                                "leave {rotation} out")
        unknown = sorted(set(config) - set(self.parameters) - set(COMMON_PARAMETERS))
        if unknown:
            raise ValueError(f"unknown {self.name!r} scenario parameter(s) {unknown}; the "
                             f"parameters are {sorted(self.parameters)} (plus mesh, factor, "
                             f"seed, {', '.join(COMMON_PARAMETERS)}). Check the spelling.")
        operators = check_operators(config.get("operators"))
        spec = self.default_mesh if mesh is None else mesh
        if not isinstance(spec, str):
            raise ValueError(f"mesh must be a mesh spec string or None; got {mesh!r}; "
                             f"{_MESH_HELP}.")
        self.device = _check_device(device)
        self.fine, spec = self._build_mesh(spec)
        self.fine = self.fine.to(self.device)
        self.coarsening = self._build_coarsening(int(factor))
        self.coarse = self.coarsening.coarse
        self.seed, self.factor = int(seed), int(factor)
        params = {**self.parameters, **config, "operators": operators}
        if "rotation" in params:
            params["rotation"] = canonical_rotation(params["rotation"])
            if params["rotation"] != 0 and not self.fine.is_sphere:
                raise ArgumentError("rotation", config["rotation"], f"tilts the axes of a sphere "
                                    f"scenario; mesh {spec!r} is not a sphere", "use a "
                                    "'healpix:N', 'icosahedral:L' or 'cubed:N' mesh, or leave "
                                    "{rotation} at 0")
        params = self._resolve(params)
        self.params = params
        self.dt = float(params["dt"])
        if not (math.isfinite(self.dt) and self.dt > 0):
            raise ValueError(f"dt must be a positive finite time step; got {params['dt']!r}.")
        self.config = {"scenario": self.name, "mesh": spec, "factor": self.factor,
                       "seed": self.seed, **{k: _json_ready(v) for k, v in params.items()}}
        try:
            json.dumps(self.config)
        except TypeError as err:
            raise ValueError(f"scenario parameters must be JSON-serialisable numbers, strings "
                             f"or lists; {err}.") from err
        self.spinup_info: Dict[str, Any] = {}
        self._per_mesh: "weakref.WeakKeyDictionary[Mesh, dict]" = weakref.WeakKeyDictionary()
        self._setup()

    # ------------------------------------------------------------ construction hooks
    def _build_mesh(self, spec: str) -> Tuple[Mesh, str]:
        from ...mesh.spec import parse_mesh_spec

        family, _, size = spec.partition(":")
        if family not in self.families:
            raise ValueError(f"mesh={spec!r}: the {self.name!r} scenario runs on the families "
                             f"{list(self.families)}; {_MESH_HELP} (only those families).")
        if not size:
            spec = self.family_default_mesh[family]
            family, _, size = spec.partition(":")
        try:
            mesh = parse_mesh_spec(spec)
        except ValueError as err:
            raise ValueError(f"mesh={spec!r} is not a valid fine-mesh spec ({err}); "
                             f"{_MESH_HELP}.") from None
        if family == "cartesian":
            spec = f"cartesian:{mesh.info['nx']}x{mesh.info['ny']}"
        return mesh, spec

    def _build_coarsening(self, factor: int) -> Coarsening:
        from ...mesh.coarsening import native_parent

        try:        # the parent map from the CPU copy; the coarsening lives on the device
            parent, info = native_parent(self.fine.to("cpu"), factor, return_info=True)
            return Coarsening(self.fine, parent, info=info)
        except ValueError as err:
            valid = _valid_factors(self.fine)
            fix = (f"use one of the factors that coarsen it: {valid}" if valid else
                   "no factor > 1 coarsens this mesh natively (see why above)")
            why = re.sub(r"\s*Use factor[^.]*\.", "", str(err)).rstrip(".")  # ours lists them
            raise ArgumentError("factor", factor, f"does not coarsen the {self.fine.family} mesh "
                                f"of {self.fine.n_cells} cells ({why})", fix) from None

    def _resolve(self, params: Dict[str, Any]) -> Dict[str, Any]:
        """Fill the mesh-derived defaults (``None`` values)."""
        return params

    def _setup(self) -> None:
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: Mapping[str, Any], device: Any = None) -> "Scenario":
        """Rebuild a scenario from its :attr:`config` (e.g. read from a dataset's attributes),
        on ``device`` (not part of the config: results agree across devices to rounding)."""
        from . import get_scenario        # the registry imports this module

        config = dict(config)
        name = config.pop("scenario", None)
        return get_scenario(name, device=device, **config)

    # ----------------------------------------------------------------- helpers
    def _cache(self, mesh: Mesh) -> dict:
        """Per-mesh store of derived fields (dropped with the mesh)."""
        return self._per_mesh.setdefault(mesh, {})

    @property
    def operators(self) -> str:
        """The operator version of every resolved operator (``config["operators"]``)."""
        return self.params["operators"]

    def _advect(self, mesh: Mesh, q: Tensor, U: Tensor) -> Tensor:
        scheme, ops = self.params["scheme"], self.operators
        if scheme == "upwind":
            return upwind_flux(mesh, q, U)
        if scheme == "quadratic":
            return quadratic_flux(mesh, q, U, operators=ops)
        return linear_flux(mesh, q, U, limiter="barth_jespersen" if scheme == "limited" else None,
                           operators=ops)

    @staticmethod
    def _diffuse(mesh: Mesh, q: Tensor, kappa: float) -> Optional[Tensor]:
        return None if kappa == 0 else diffusive_flux(mesh, q, kappa)

    def _flux(self, mesh: Mesh, q: Tensor, U: Tensor, kappa: float,
              advected: Optional[Tensor] = None) -> Tensor:
        flux = self._advect(mesh, q if advected is None else advected, U.to(q.dtype))
        diff = self._diffuse(mesh, q, kappa)
        return flux if diff is None else flux + diff

    def _check_state(self, mesh: Mesh, state: Mapping[str, Tensor], names) -> None:
        for v in names:
            if v not in state:
                raise KeyError(f"state has no variable {v!r} (keys {sorted(state)}); the "
                               f"{self.name!r} scenario needs {list(names)}.")
            if state[v].shape != (mesh.n_cells,):
                raise ValueError(f"state[{v!r}] must have shape (n_cells,) = ({mesh.n_cells},) "
                                 f"for this mesh; got {tuple(state[v].shape)}. For the coarse "
                                 "mesh pass coarsening.restrict(fine_state).")

    @property
    def rotation(self) -> Optional[Tensor]:
        """The rotation ``R (3, 3)`` of the ``rotation`` parameter (:func:`rotation_matrix`),
        or ``None`` when the scenario is not rotated (tilt 0, or no such parameter)."""
        value = self.params.get("rotation", 0.0)
        if value == 0:
            return None
        cached = getattr(self, "_rotation_cache", None)
        if cached is None or cached[0] != value:
            cached = self._rotation_cache = (value, rotation_matrix(value))
        return cached[1]

    def _rng(self, stream: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, stream])

    # --------------------------------------------------------------- public API
    @property
    def model(self):
        """The fine model (``rhs(t, state)`` includes the sources)."""
        return self._model

    def rhs(self, t: float, state: Mapping[str, Tensor]) -> State:
        """Fine tendencies of the full state."""
        return self._model.rhs(t, state)

    def initial_state(self) -> State:
        """Seeded float64 initial state ``{name: (n_fine_cells,)}`` (bit-for-bit reproducible)."""
        raise NotImplementedError

    def advance(self, t: float, state: Mapping[str, Tensor], n_steps: int,
                progress: bool = False) -> Tuple[float, State]:
        """``n_steps`` fine SSP-RK3 steps of :attr:`dt` from time ``t``; returns ``(t, state)``."""
        out = integrate(self._model, dict(state), self.dt, int(n_steps), t0=float(t),
                        stepper="ssprk3", progress=progress)
        return out.t, out.state

    def spin_up(self, state: Mapping[str, Tensor],
                progress: bool = False) -> Tuple[float, State]:
        """Run ``config["spinup_time"]`` from ``t = 0``; returns ``(t, state)``.

        A fixed spin-up time checks nothing, so :attr:`spinup_info` records
        ``"converged": None`` ("not checked"); scenarios that test for
        equilibrium (:class:`BarotropicScenario`) override this and record
        ``True``/``False``.
        """
        n = int(round(self.params["spinup_time"] / self.dt))
        t, state = self.advance(0.0, state, n, progress=progress)
        self.spinup_info = {"t": t, "n_steps": n, "criterion": "fixed spin-up time (not checked)",
                            "converged": None}
        return t, state

    def transport(self, t: float, state: Mapping[str, Tensor]) -> Tensor:
        """Fine face transports ``U (n_fine_faces,)`` at ``t``, exactly non-divergent."""
        raise NotImplementedError

    def coarse_transport(self, coarsening: Coarsening, t: float, state: Mapping[str, Tensor],
                         transport: Tensor) -> Tensor:
        """The face transport ``U_c (n_coarse_faces,)`` the COARSE model is given at ``t``.

        Default (DESIGN.md §5): ``coarsening.restrict_flux(transport)``, the
        signed sum of the fine transports over the fine faces of each coarse
        face. A scenario whose coarse model knows a different (filtered)
        resolved flow overrides this (see :class:`KinematicScenario`). Either
        way ``U_c`` must be exactly non-divergent on ``coarsening.coarse``;
        :func:`~meshclosure.data.targets.subgrid_targets` evaluates the
        coarse resolved fluxes with it.

        Parameters
        ----------
        coarsening : Coarsening
            Fine -> coarse map whose fine mesh is this scenario's fine mesh.
        t : float
            Model time.
        state : dict of str -> Tensor, shape (n_fine_cells,)
            Fine state at ``t``.
        transport : Tensor, shape (n_fine_faces,)
            Fine transport ``U`` at ``t`` (from :meth:`transport`).

        Returns
        -------
        Tensor, shape (n_coarse_faces,)
            Integrated coarse face transport, positive owner -> neighbour.
        """
        return coarsening.restrict_flux(transport)

    def resolved_fluxes(self, mesh: Mesh, t: float, state: Mapping[str, Tensor],
                        transport: Tensor) -> Dict[str, Tensor]:
        """Resolved face fluxes ``Φ^res`` ``{v: (n_faces,)}`` of every variable on ``mesh``.

        Same scheme and coefficients on every mesh of the hierarchy; on the
        coarse mesh pass ``restrict(state)`` and ``restrict_flux(U)``.
        Integrated fluxes, positive owner -> neighbour.
        """
        raise NotImplementedError

    def boundary_fluxes(self, mesh: Mesh, t: float,
                        state: Mapping[str, Tensor]) -> Optional[Dict[str, Tensor]]:
        """Prescribed integrated outward boundary fluxes ``{v: (n_boundary_faces,)}`` on
        ``mesh``, or ``None`` (walls)."""
        return None

    def sources(self, t: float, state: Mapping[str, Tensor]) -> Dict[str, Tensor]:
        """Cell-local fine sources ``S_v (n_fine_cells,)`` (relaxation, forcing, drag)."""
        raise NotImplementedError

    def resolved_inputs(self, mesh: Mesh, t: float, state: Mapping[str, Tensor],
                        transport: Tensor) -> Dict[str, Tensor]:
        """Extra closure inputs per cell ``{name: (n_cells,)}`` on ``mesh``."""
        return {}

    # ------------------------------------------------------------- coarse hybrid model
    @property
    def coarse_every(self) -> int:
        """Fine steps per coarse step, ``m`` (``config["coarse_every"]``)."""
        return int(self.params["coarse_every"])

    @property
    def coarse_dt(self) -> float:
        """Time step of the coarse model, ``m · dt`` (see :meth:`coarse_model`)."""
        return self.coarse_every * self.dt

    def random_forcing(self, t: float) -> Dict[str, Tensor]:
        """The random (realisation-dependent) forcing of each variable at the FINE cells at
        ``t``, ``{var: (n_fine_cells,)}``; empty when the scenario has none. The coarse
        model is given ``restrict`` of it (never a re-evaluation at coarse centres)."""
        return {}

    def coarse_model(self, closure=None, forcing=None):
        """The coarse hybrid model the subgrid targets are defined for (DESIGN.md §5).

        ``rhs(t, state)`` on :attr:`coarse` with state ``{var: (n_coarse_cells,)}``:
        exactly the resolved operator ``Φ^res_coarse`` of :func:`subgrid_targets`
        (same scheme, coefficients, boundary fluxes and coarse transport), the
        cell-local sources applied to restricted fine fields, and ``closure``'s
        face fluxes through the same divergence.

        Parameters
        ----------
        closure : closure, optional
            ``(t, state, mesh) -> {var: (n_coarse_faces,)}``, or a
            :class:`~meshclosure.closures.Closure` (e.g. ``ModelClosure``), which
            gets the solver's :class:`~meshclosure.solver.ClosureContext`.
        forcing : callable ``t -> {var: (n_coarse_cells,)}``, optional
            The random forcing; default ``restrict(random_forcing(t))`` (the same
            realisation as the truth run).

        Raises
        ------
        OperatorVersionError
            ``closure`` records an operator version (``closure.operators``, set on
            closures of loaded or trained models) other than :attr:`operators`;
            the message names both (:meth:`_check_closure`).
        """
        raise NotImplementedError(f"the {self.name!r} scenario has no coarse model yet.")

    def _check_closure(self, closure) -> None:
        """Raise :class:`~meshclosure.fv.versions.OperatorVersionError` when ``closure``
        (or a part of a sum or multiple of closures) records an operator version
        (its ``operators`` attribute, e.g. a closure from a loaded model) other than
        this scenario's; closures that record none pass (:func:`closure_operators`)."""
        other = sorted(closure_operators(closure) - {self.operators})
        if other:
            raise OperatorVersionError(
                f"closure was made with operator version {other[0]!r} (its features and "
                f"targets), but this {self.name!r} scenario's coarse model uses "
                f"{self.operators!r}: the closure would see other gradients and be added to "
                f"another resolved flux than it was trained for. Rebuild the scenario with "
                f"operators={other[0]!r} (Scenario.from_config(dataset.scenario_config) does), "
                f"or retrain the closure on data made with operators={self.operators!r}.")

    def _coarse_forcing(self, forcing):
        """``forcing`` or the restricted fine realisation, as ``t -> {var: coarse field}``."""
        if forcing is not None:
            if not callable(forcing):
                raise TypeError(f"forcing must be a callable t -> {{var: (n_coarse_cells,)}}; "
                                f"got {type(forcing).__name__}.")
            return forcing
        c = self.coarsening
        return lambda t: {k: c.restrict(v) for k, v in self.random_forcing(t).items()}

    def ood(self) -> "Scenario":
        """The out-of-distribution variant: the same configuration with
        :attr:`ood_change` applied (see the class docstring), seed
        :func:`ood_seed` ``(seed)`` (an independent realisation from a separate
        random stream), and ``dt`` and
        ``sample_every`` and ``coarse_every`` re-derived for the stronger flow (the time between
        samples stays the same to within a step). Every other parameter,
        including the mesh-derived ones (ν, κ, bands), keeps its value."""
        config = {k: v for k, v in self.params.items()
                  if k not in ("dt", "sample_every", "coarse_every")}
        for key, rule in self.ood_change.items():
            config[key] = rule(self.params[key])
        kw = {} if self.device.type == "cpu" else {"device": self.device}
        out = type(self)(mesh=self.config["mesh"], factor=self.factor,
                         seed=ood_seed(self.seed), **kw, **config)
        interval = self.params["sample_every"] * self.dt
        out.params["sample_every"] = out.config["sample_every"] = max(1, int(round(interval
                                                                                  / out.dt)))
        return out

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(mesh={self.config['mesh']!r}, factor={self.factor}, "
                f"seed={self.seed}, fine={self.fine.n_cells} cells, coarse="
                f"{self.coarse.n_cells} cells, dt={self.dt:.4g})")


# ----------------------------------------------------------------------------- shared bits
def closure_operators(closure: Any, _depth: int = 0) -> set:
    """The operator versions a closure records: its ``operators`` attribute (a name, e.g.
    a :class:`~meshclosure.closures.ModelClosure` of a loaded model) and those of its parts
    (sums, multiples, wrappers: ``parts``, ``closure``, ``inner``, ``members``, ``fn``).
    Empty for closures that record none (baselines, plain functions).

    >>> class C:
    ...     operators = "fv1"
    >>> sorted(closure_operators(C())), closure_operators(None)
    (['fv1'], set())
    """
    if closure is None or _depth > 8:
        return set()
    found = set()
    ops = getattr(closure, "operators", None)
    if isinstance(ops, str):
        found.add(ops)
    for name in ("parts", "members"):
        parts = getattr(closure, name, None)
        if isinstance(parts, (list, tuple, torch.nn.ModuleList)):   # not a method of that name
            for part in parts:
                found |= closure_operators(part, _depth + 1)
    for name in ("closure", "inner", "fn", "learned", "ensemble"):
        part = getattr(closure, name, None)
        if part is not None and part is not closure:
            found |= closure_operators(part, _depth + 1)
    return found


def _valid_factors(mesh: Mesh, limit: int = 1024) -> list:
    """Every factor ``2..limit`` with which :meth:`Coarsening.native` coarsens ``mesh``."""
    from ...mesh.coarsening import native_parent

    n = int(max(mesh.info.get(k) or 0 for k in ("nx", "ny", "nz", "nside", "n"))
            or 2 ** int(mesh.info.get("level") or 0))
    out = []
    for f in range(2, min(n, limit) + 1):
        try:
            native_parent(mesh, f)
        except ValueError:
            continue
        out.append(f)
    return out


def _dx(mesh: Mesh) -> float:
    return float(mesh.cell_distance.min())


def _resolution_wavenumber(mesh: Mesh) -> float:
    """Nyquist wavenumber in the units of :func:`~meshclosure.data.random_flows.mode_basis`:
    plane ``max(lx, ly) / (2 max(Δx, Δy))`` (units 2π/max(lx, ly)), sphere ``π R / Δ``
    (degree), ``Δ = √(area/n)``."""
    if mesh.is_sphere:
        spacing = math.sqrt(4 * math.pi * mesh.radius**2 / mesh.n_cells)
        return math.pi * mesh.radius / spacing
    lx, ly, nx, ny = (mesh.info[k] for k in ("lx", "ly", "nx", "ny"))
    return max(lx, ly) / (2.0 * max(lx / nx, ly / ny))


def _coarse_every(coarse: Mesh, dt: float, velocity: float, courant: float = 0.5) -> int:
    """Fine steps ``m`` per coarse step: the largest ``m`` with ``m dt velocity / Δ_c <= courant``
    (``Δ_c`` the smallest coarse centre distance, ``velocity`` a bound on the speed of
    the coarse transport), at least 1."""
    return max(1, int(math.floor(courant * _dx(coarse) / (max(velocity, 1e-300) * dt) + 1e-9)))


def _noise_window(params: Mapping[str, Any]) -> int:
    """Fine samples an OU process keeps (:class:`~meshclosure.data.random_flows.OrnsteinUhlenbeck`
    ``window``): three coarse steps' worth. SSP-RK3 evaluates the flow at ``t``, ``t + Δt``
    and ``t + Δt/2`` of a coarse step of ``coarse_every`` fine steps; with a shorter
    window the ``t + Δt/2`` stage replays the stream from the seed (measured: 90 % of a
    coarse run's time on ``kinematic`` ``cartesian:32``, where ``coarse_every`` = 35)."""
    return 3 * int(params.get("coarse_every") or 1) + 16


def _tracer_target(mesh: Mesh, rotation: Any = 0.0) -> Tensor:
    """Large-scale relaxation pattern ``q*`` at the cells of ``mesh`` (order 1; cached).

    Sphere: ``q*(x) = (x_z + x_x/2)/R``, or for a ``rotation`` ``R`` (:func:`rotation_matrix`)
    ``q*(Rᵀ x) = x·(R c)/R`` with ``c = (1/2, 0, 1)``. Plane: ``rotation`` must be 0."""
    store = per_mesh(mesh, "scenarios.diffusion", dict)
    rotation = canonical_rotation(rotation)
    if rotation != 0:
        if not mesh.is_sphere:
            raise ArgumentError("rotation", rotation, "tilts a pattern on the sphere; this "
                                "mesh is a plane", "leave {rotation} at 0")
        key = f"q*@{json.dumps(rotation)}"
        if key not in store:
            axis = rotation_matrix(rotation) @ torch.tensor([0.5, 0.0, 1.0], dtype=torch.float64)
            store[key] = mesh.cell_center.double() @ axis.to(mesh.device) / mesh.radius
        return store[key]
    if "q*" not in store:
        x = mesh.cell_center.double()
        if mesh.is_sphere:
            store["q*"] = (x[:, 2] + 0.5 * x[:, 0]) / mesh.radius
        else:
            lx, ly = (float(p) for p in mesh.period)
            store["q*"] = (torch.cos(2 * math.pi * x[:, 0] / lx)
                           + torch.sin(2 * math.pi * x[:, 1] / ly))
    return store["q*"]


def _diffusion_matrix(mesh: Mesh, kappa: float, dtype: torch.dtype, device) -> Tensor:
    """CSR ``M (n_cells, n_cells)`` with ``M q = −div(diffusive_flux(q, κ))`` (cached per mesh).

    The diffusive flux is linear in ``q`` with fixed coefficients, so its tendency
    is ``κ L q`` with ``L`` the assembled Laplacian with walls
    (:func:`~meshclosure.fv.laplacian_matrix`, ``dirichlet=False``: no flux through
    boundary faces, as ``divergence(mesh, diffusive_flux(...))``): the same values to
    rounding, one sparse product per stage instead of a product, a scaling, two
    ``index_add`` and a division."""
    def build() -> Tensor:
        from ...fv import laplacian_matrix

        L = (kappa * laplacian_matrix(mesh, dirichlet=False)).tocoo()
        return _csr(torch.as_tensor(L.row, dtype=torch.long),
                    torch.as_tensor(L.col, dtype=torch.long), torch.as_tensor(L.data),
                    L.shape).to(device=device, dtype=dtype)

    return per_mesh(mesh, ("scenarios.diffusion_matrix", float(kappa), dtype,
                           torch.device(device)), build)


class _Augmented:
    """``rhs`` of a base solver model (built with ν = κ = 0) plus diffusion and sources.

    ``dv/dt = base(v) − div(diffusive_flux(v, diffusivity[v])) + extra(t, state)[v]``:
    the diffusive tendency is one assembled sparse product (:func:`_diffusion_matrix`;
    the divergence of the diffusive fluxes to rounding, so conservative to rounding).
    """

    def __init__(self, base, mesh: Mesh, diffusivity: Mapping[str, float], extra=None) -> None:
        self.base, self.mesh, self.diffusivity, self.extra = base, mesh, dict(diffusivity), extra

    def _diffusion(self, q: Tensor, kappa: float) -> Tensor:
        if isinstance(kappa, (int, float)) and _sparse_ok(q):
            return _spmm(_diffusion_matrix(self.mesh, kappa, q.dtype, q.device), q)
        return -divergence(self.mesh, diffusive_flux(self.mesh, q, kappa))

    def rhs(self, t: float, state: Mapping[str, Tensor]) -> State:
        out = self.base.rhs(t, state)
        for k, kappa in self.diffusivity.items():
            if kappa != 0:
                out[k] = out[k] + self._diffusion(state[k], kappa)
        if self.extra is not None:
            for k, s in self.extra(t, state).items():
                out[k] = out[k] + s
        return out

    def diagnose(self, t: float, state: Mapping[str, Tensor]) -> Optional[NonFinitePart]:
        """The first non-finite part of :meth:`rhs` at ``(t, state)``, or ``None``.

        First the base model's own parts (transport, closure, boundary flux,
        source, relaxation: its ``diagnose``), then the extra sources of this
        scenario, per variable (``NonFinitePart("source", var, "cells",
        first_bad_cells)``). :func:`~meshclosure.solver.integrate` calls it
        when a step turns the state non-finite, so a scenario blow-up names
        its cause.
        """
        base = getattr(self.base, "diagnose", None)
        found = base(t, state) if base is not None else None
        if found is not None or self.extra is None:
            return found
        return first_nonfinite([("source", None, "cells", lambda: self.extra(t, state))])


# ------------------------------------------------------------------------------ kinematic
