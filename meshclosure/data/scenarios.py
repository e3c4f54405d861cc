"""Named, seeded truth scenarios: fine runs whose coarse-graining gives subgrid targets.

A :class:`Scenario` owns a fine mesh, its :class:`~meshclosure.mesh.Coarsening`,
a fine model advanced by SSP-RK3 (:func:`meshclosure.solver.integrate`), and the
resolved flux operator ``Φ^res`` of every conserved prognostic variable, which
it evaluates on ANY mesh of the hierarchy with the same scheme and
coefficients. The fine tendency of every variable ``v`` in
:attr:`Scenario.variables` is, exactly (to rounding) ::

    dv/dt = −div_fine(Φ^res_fine[v], Φ^b_fine[v]) + S_v

(``Φ^b`` the prescribed boundary fluxes, :meth:`Scenario.boundary_fluxes`;
``S_v`` the cell-local sources, :meth:`Scenario.sources`), so the subgrid flux
of DESIGN.md §5 ::

    Φ^sgs = restrict_flux(Φ^res_fine(v, U)) − Φ^res_coarse(restrict(v), restrict_flux(U))

closes the coarse budget: ``restrict(−div_fine Φ) = −div_coarse(restrict_flux Φ)``.

Scenarios (:data:`SCENARIOS`, :func:`get_scenario`), all non-dimensional
(unit plane ``[0, 1)²`` or unit sphere), each documented in its class:

* ``"kinematic"`` (:class:`KinematicScenario`): passive tracer in a prescribed
  multiscale Ornstein–Uhlenbeck flow whose small-scale intensity follows a
  resolved field ``N``; families cartesian, healpix, icosahedral.
* ``"barotropic"`` (:class:`BarotropicScenario`): forced–dissipative 2-D
  turbulence with a passive tracer, spun up to statistical equilibrium;
  cartesian (f-plane), healpix and icosahedral (rotating sphere).
* ``"convection"`` (:class:`ConvectionScenario`): Boussinesq convection in an
  x–z slice heated from below, averaged horizontally onto a column.

Every scenario's :attr:`~Scenario.config` is complete and JSON-serialisable:
``get_scenario(**config)`` (or :meth:`Scenario.from_config`) rebuilds it exactly.
Randomness comes only from NumPy generators seeded by ``config["seed"]``
(never the global torch seed), so runs are bit-for-bit reproducible.
"""
from __future__ import annotations

import json
import math
import warnings
import weakref
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from ..fv.advection import linear_flux, quadratic_flux, upwind_flux
from ..fv.diffusion import diffusive_flux
from ..fv.operators import divergence, transport_from_streamfunction
from ..mesh import Coarsening
from ..mesh._mesh import Mesh
from ..mesh.coarsening import column_parent
from ..solver import BarotropicModel, BoussinesqModel, TracerModel, integrate
from ..solver.tracer import SCHEMES
from .random_flows import OrnsteinUhlenbeck, band_variances, mode_basis

__all__ = ["SCENARIOS", "get_scenario", "Scenario", "KinematicScenario", "BarotropicScenario",
           "ConvectionScenario", "OOD_SEED_OFFSET"]

State = Dict[str, Tensor]

OOD_SEED_OFFSET = 10007
"""The out-of-distribution variant (:meth:`Scenario.ood`) uses ``seed + OOD_SEED_OFFSET``,
an independent realisation, besides its changed parameter."""

_MESH_HELP = ("write the fine mesh as 'cartesian:64' (or 'cartesian:64x64'), 'healpix:32' or "
              "'icosahedral:5'")


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

    Attributes
    ----------
    name : str
    variables : tuple of str
        Conserved prognostic variables that get subgrid targets.
    config : dict
        Complete, JSON-serialisable: ``scenario``, ``mesh`` (canonical spec),
        ``factor``, ``seed``, ``dt`` and every physical and numerical parameter.
    fine, coarse : Mesh
    coarsening : Coarsening
    dt : float
        Fine time step.
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

    def __init__(self, mesh: Optional[str] = None, factor: int = 4, seed: int = 0,
                 **config: Any) -> None:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be an integer >= 0; got {seed!r}. Pass e.g. seed=0.")
        if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or factor < 1:
            raise ValueError(f"factor must be an integer >= 1 (coarsening factor in linear "
                             f"resolution); got {factor!r}. Pass e.g. factor=4.")
        unknown = sorted(set(config) - set(self.parameters))
        if unknown:
            raise ValueError(f"unknown {self.name!r} scenario parameter(s) {unknown}; the "
                             f"parameters are {sorted(self.parameters)} (plus mesh, factor, "
                             "seed). Check the spelling.")
        spec = self.default_mesh if mesh is None else mesh
        if not isinstance(spec, str):
            raise ValueError(f"mesh must be a mesh spec string or None; got {mesh!r}; "
                             f"{_MESH_HELP}.")
        self.fine, spec = self._build_mesh(spec)
        self.coarsening = self._build_coarsening(int(factor))
        self.coarse = self.coarsening.coarse
        self.seed, self.factor = int(seed), int(factor)
        params = self._resolve({**self.parameters, **config})
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
        from ..cli import parse_mesh_spec

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
        try:
            return Coarsening.native(self.fine, factor)
        except ValueError as err:
            raise ValueError(f"factor={factor} does not coarsen mesh "
                             f"{self.fine.family} ({self.fine.n_cells} cells): {err}") from None

    def _resolve(self, params: Dict[str, Any]) -> Dict[str, Any]:
        """Fill the mesh-derived defaults (``None`` values)."""
        return params

    def _setup(self) -> None:
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "Scenario":
        """Rebuild a scenario from its :attr:`config` (e.g. read from a dataset's attributes)."""
        config = dict(config)
        name = config.pop("scenario", None)
        return get_scenario(name, **config)

    # ----------------------------------------------------------------- helpers
    def _cache(self, mesh: Mesh) -> dict:
        """Per-mesh store of derived fields (dropped with the mesh)."""
        return self._per_mesh.setdefault(mesh, {})

    def _advect(self, mesh: Mesh, q: Tensor, U: Tensor) -> Tensor:
        scheme = self.params["scheme"]
        if scheme == "upwind":
            return upwind_flux(mesh, q, U)
        if scheme == "quadratic":
            return quadratic_flux(mesh, q, U)
        return linear_flux(mesh, q, U, limiter="barth_jespersen" if scheme == "limited" else None)

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
        """Run ``config["spinup_time"]`` from ``t = 0``; returns ``(t, state)``."""
        n = int(round(self.params["spinup_time"] / self.dt))
        t, state = self.advance(0.0, state, n, progress=progress)
        self.spinup_info = {"t": t, "n_steps": n, "criterion": "fixed spin-up time",
                            "converged": True}
        return t, state

    def transport(self, t: float, state: Mapping[str, Tensor]) -> Tensor:
        """Fine face transports ``U (n_fine_faces,)`` at ``t``, exactly non-divergent."""
        raise NotImplementedError

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

    def ood(self) -> "Scenario":
        """The out-of-distribution variant: the same configuration with
        :attr:`ood_change` applied (see the class docstring), ``seed +
        OOD_SEED_OFFSET`` (an independent realisation), and ``dt`` and
        ``sample_every`` re-derived for the stronger flow (the time between
        samples stays the same to within a step). Every other parameter,
        including the mesh-derived ones (ν, κ, bands), keeps its value."""
        config = {k: v for k, v in self.params.items() if k not in ("dt", "sample_every")}
        for key, rule in self.ood_change.items():
            config[key] = rule(self.params[key])
        out = type(self)(mesh=self.config["mesh"], factor=self.factor,
                         seed=self.seed + OOD_SEED_OFFSET, **config)
        interval = self.params["sample_every"] * self.dt
        out.params["sample_every"] = out.config["sample_every"] = max(1, int(round(interval
                                                                                  / out.dt)))
        return out

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(mesh={self.config['mesh']!r}, factor={self.factor}, "
                f"seed={self.seed}, fine={self.fine.n_cells} cells, coarse="
                f"{self.coarse.n_cells} cells, dt={self.dt:.4g})")


# ----------------------------------------------------------------------------- shared bits
_DIFFUSION: "weakref.WeakKeyDictionary[Mesh, dict]" = weakref.WeakKeyDictionary()


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


def _tracer_target(mesh: Mesh) -> Tensor:
    """Large-scale relaxation pattern ``q*`` at the cells of ``mesh`` (order 1; cached)."""
    store = _DIFFUSION.setdefault(mesh, {})
    if "q*" not in store:
        x = mesh.cell_center.double()
        if mesh.is_sphere:
            store["q*"] = (x[:, 2] + 0.5 * x[:, 0]) / mesh.radius
        else:
            lx, ly = (float(p) for p in mesh.period)
            store["q*"] = (torch.cos(2 * math.pi * x[:, 0] / lx)
                           + torch.sin(2 * math.pi * x[:, 1] / ly))
    return store["q*"]


class _Augmented:
    """``rhs`` of a base solver model (built with ν = κ = 0) plus diffusion and sources.

    ``dv/dt = base(v) − div(diffusive_flux(v, diffusivity[v])) + extra(t, state)[v]``:
    the diffusive fluxes go through the same divergence as the base model's
    advective fluxes (one more divergence of a flux: conservative to rounding).
    """

    def __init__(self, base, mesh: Mesh, diffusivity: Mapping[str, float], extra=None) -> None:
        self.base, self.mesh, self.diffusivity, self.extra = base, mesh, dict(diffusivity), extra

    def rhs(self, t: float, state: Mapping[str, Tensor]) -> State:
        out = self.base.rhs(t, state)
        for k, kappa in self.diffusivity.items():
            if kappa != 0:
                out[k] = out[k] - divergence(self.mesh, diffusive_flux(self.mesh, state[k],
                                                                            kappa))
        if self.extra is not None:
            for k, s in self.extra(t, state).items():
                out[k] = out[k] + s
        return out


# ------------------------------------------------------------------------------ kinematic
class KinematicScenario(Scenario):
    r"""Passive tracer in a prescribed multiscale, time-correlated flow modulated by ``N``.

    Equations (non-dimensional; unit periodic square or unit sphere)::

        ∂t q + ∇·(u q) = κ ∇²q − r (q − q*),        u = k × ∇ψ
        ψ(x, t) = Σ_{k∈L} a_k(t) e_k(x) + g(N(x, t)) Σ_{k∈S} a_k(t) e_k(x)
        g(N) = (N/N0) / √(1 + (N/N0)²)
        N(x, t) = N̄ (1 + ε P(x, t))

    * ``e_k``: unit-mean-square Fourier modes (plane) or real spherical harmonics
      (sphere), :func:`~meshclosure.data.random_flows.mode_basis`; large band
      ``L = large_band``, small band ``S = small_band`` (default: ``[K/2, K]``
      with ``K`` = the fine Nyquist wavenumber / 3, i.e. ≥ 6 fine cells per
      wavelength, mostly below the coarse grid scale).
    * ``a_k``: stationary OU processes (:class:`~meshclosure.data.random_flows.OrnsteinUhlenbeck`)
      sampled exactly every ``dt``; correlation times ``tau_large``, ``tau_small``;
      variances from :func:`~meshclosure.data.random_flows.band_variances` so the
      rms velocities are ``u_large`` and ``u_small`` (at ``g = 1``), shell
      spectrum ``|k|^spectral_slope``.
    * ``U_f = ψ(v0) − ψ(v1)`` from ψ at the vertices: exactly non-divergent.
    * ``N``: a slowly moving large-scale pattern, ``P = cos(2πx/lx − 2πt/N_period)
      cos(2πy/ly)`` on the plane, ``P = n̂(t)·x/R`` on the sphere with ``n̂`` at 45°
      from the pole, turning about it with period ``N_period``.
    * Eddy intensity: small-scale velocity variance ``∝ g(N)²``, so the eddy
      diffusivity is ``K(N) ≈ g(N)² u_small² τ_small / 2`` (short-correlation
      estimate), i.e. ``K ∝ N²/(1 + (N/N0)²)``: quadratic for ``N ≪ N0``,
      saturating for ``N ≫ N0`` — a power law ``K = αN^β`` fits only locally.
    * ``q* = cos(2πx/lx) + sin(2πy/ly)`` (plane) or ``(z + x/2)/R`` (sphere);
      ``κ`` (default ``0.05 u_small Δ``) is much smaller than ``K``.

    Time step: ``dt = courant Δ / (3 √(u_large² + g_max² u_small²))`` (``Δ`` the
    smallest centre distance, ``g_max = g(N_mean (1 + N_amplitude))``: Courant
    number ≈ ``courant`` for a 3σ velocity); ``sample_every`` (a suggestion for
    the dataset) ``≈ tau_small / dt`` steps.

    Initial state ``q = q*``; :meth:`spin_up` runs ``spinup_time`` (3 relaxation
    times; the OU amplitudes start stationary).

    Resolved inputs: ``"N"`` (the analytic field at the cell centres of any mesh).
    Out of distribution (:meth:`ood`): ``N_mean × 2`` (eddy diffusivity beyond
    the saturation seen in training).

    Default: ``cartesian:64`` (coarse 16² at factor 4), spin-up 3 time units;
    larger: ``cartesian:256`` factor 8, ``healpix:64`` factor 4, ``icosahedral:6``
    factor 4. Stochastic-flow transport models: Kraichnan 1970
    (Phys. Fluids 13, 22); eddy-diffusivity closures: Taylor 1922
    (doi:10.1112/plms/s2-20.1.196).
    """

    name = "kinematic"
    variables = ("q",)
    families = ("cartesian", "healpix", "icosahedral")
    default_mesh = "cartesian:64x64"
    family_default_mesh = {"cartesian": "cartesian:64x64", "healpix": "healpix:16",
                           "icosahedral": "icosahedral:4"}
    parameters = {
        "u_large": 0.5, "u_small": 0.5, "tau_large": 1.0, "tau_small": 0.1,
        "large_band": None, "small_band": None, "spectral_slope": -5.0 / 3.0,
        "N_mean": 1.0, "N_amplitude": 0.8, "N0": 1.0, "N_period": 10.0,
        "kappa": None, "relax_rate": 1.0, "scheme": "linear", "courant": 0.4,
        "dt": None, "spinup_time": 3.0, "sample_every": None,
    }
    ood_change = {"N_mean": lambda v: 2.0 * v}

    def _resolve(self, p):
        mesh = self.fine
        kmax_res = _resolution_wavenumber(mesh)
        if p["large_band"] is None:
            p["large_band"] = [1, 3] if mesh.is_sphere else [1, 2]
        if p["small_band"] is None:
            hi = max(int(math.floor(2 * kmax_res / 6)), 2)
            lo = max(int(math.ceil(hi / 2)), 1)
            p["small_band"] = [lo, hi]
        p["large_band"] = [int(v) if mesh.is_sphere else float(v) for v in p["large_band"]]
        p["small_band"] = [int(v) if mesh.is_sphere else float(v) for v in p["small_band"]]
        if p["kappa"] is None:
            p["kappa"] = 0.05 * p["u_small"] * _dx(mesh)
        if p["dt"] is None:
            gmax = self.modulation(p["N_mean"] * (1 + abs(p["N_amplitude"])), p["N0"])
            umax = 3.0 * math.hypot(p["u_large"], gmax * p["u_small"])
            p["dt"] = p["courant"] * _dx(mesh) / umax
        if p["sample_every"] is None:
            p["sample_every"] = max(1, int(round(p["tau_small"] / p["dt"])))
        if p["scheme"] not in SCHEMES:
            raise ValueError(f"scheme must be one of {SCHEMES}; got {p['scheme']!r}.")
        return p

    @staticmethod
    def modulation(N, N0: float = 1.0):
        """Small-scale amplitude factor ``g(N) = (N/N0)/√(1 + (N/N0)²)`` (0 to 1)."""
        r = N / N0
        return r / (1 + r * r) ** 0.5

    def eddy_diffusivity(self, N):
        """Short-correlation estimate ``K(N) = g(N)² u_small² τ_small / 2`` (length²/time)."""
        p = self.params
        return self.modulation(N, p["N0"]) ** 2 * p["u_small"] ** 2 * p["tau_small"] / 2

    def _setup(self) -> None:
        p, mesh = self.params, self.fine
        Bl, lam_l, k_l = mode_basis(mesh, p["large_band"])
        Bs, lam_s, k_s = mode_basis(mesh, p["small_band"])
        var_l = band_variances(lam_l, k_l, p["u_large"], p["spectral_slope"])
        var_s = band_variances(lam_s, k_s, p["u_small"], p["spectral_slope"])
        self._basis_large, self._basis_small = Bl, Bs
        self.ou = OrnsteinUhlenbeck(
            np.sqrt(np.r_[var_l, var_s]),
            np.r_[np.full(len(var_l), p["tau_large"]), np.full(len(var_s), p["tau_small"])],
            self.dt, seed=[self.seed, 1])
        self._n_large = len(var_l)
        self._last: Dict[float, Tensor] = {}
        self.base = TracerModel(mesh, self._transport_at,
                                relaxation=(p["relax_rate"], _tracer_target(mesh)),
                                scheme=p["scheme"])
        self._model = _Augmented(self.base, mesh, {"q": p["kappa"]})

    def N(self, points: Tensor, t: float) -> Tensor:
        """The resolved field ``N(x, t)`` at ``points (n, d)``."""
        p = self.params
        x = points.double()
        w = 2 * math.pi * t / p["N_period"]
        if self.fine.is_sphere:
            a = math.pi / 4
            axis = torch.tensor([math.sin(a) * math.cos(w), math.sin(a) * math.sin(w),
                                 math.cos(a)], dtype=torch.float64)
            P = x @ axis / self.fine.radius
        else:
            lx, ly = (float(v) for v in self.fine.period)
            P = torch.cos(2 * math.pi * x[:, 0] / lx - w) * torch.cos(2 * math.pi * x[:, 1] / ly)
        return p["N_mean"] * (1 + p["N_amplitude"] * P)

    def psi_vertex(self, t: float, parts: Tuple[str, ...] = ("large", "small")) -> Tensor:
        """Streamfunction at the fine vertices ``(n_vertices,)`` (``parts`` selects the bands)."""
        a = torch.as_tensor(self.ou(t))
        psi = torch.zeros(self.fine.n_vertices, dtype=torch.float64)
        if "large" in parts:
            psi = psi + self._basis_large @ a[:self._n_large]
        if "small" in parts:
            g = self.modulation(self.N(self.fine.vertex_pos, t), self.params["N0"])
            psi = psi + g * (self._basis_small @ a[self._n_large:])
        return psi

    def _transport_at(self, t: float) -> Tensor:
        t = float(t)
        U = self._last.get(t)
        if U is None:
            U = transport_from_streamfunction(self.fine, self.psi_vertex(t))
            if len(self._last) > 4:
                self._last.pop(next(iter(self._last)))
            self._last[t] = U
        return U

    def initial_state(self) -> State:
        return {"q": _tracer_target(self.fine).clone()}

    def transport(self, t, state=None) -> Tensor:
        return self._transport_at(t)

    def resolved_fluxes(self, mesh, t, state, transport):
        self._check_state(mesh, state, ("q",))
        return {"q": self._flux(mesh, state["q"], transport, self.params["kappa"])}

    def sources(self, t, state):
        return {"q": -self.params["relax_rate"] * (state["q"] - _tracer_target(self.fine))}

    def resolved_inputs(self, mesh, t, state, transport):
        return {"N": self.N(mesh.cell_center, t)}


# ----------------------------------------------------------------------------- barotropic
class BarotropicScenario(Scenario):
    r"""Forced–dissipative barotropic turbulence with a passive tracer.

    Equations (non-dimensional; unit periodic square, f-plane; or unit sphere
    rotating at ``omega``)::

        ∂t ζ + ∇·(u (ζ + f)) = ν ∇²ζ − μ ζ + F(x, t),    ∇²ψ = ζ, u = k × ∇ψ
        ∂t q + ∇·(u q) = κ ∇²q − r (q − q*)

    :class:`~meshclosure.solver.BarotropicModel`; ``f = f0`` (plane) or
    ``2Ω sin(lat)`` (sphere; evaluated on whatever mesh the fluxes are taken on).
    The Coriolis term is inside the absolute-vorticity flux ``U (ζ + f)``.

    * Forcing ``F = Σ_k a_k(t) e_k(x)`` over the band ``forcing_band``
      (default ``[kf − 1, kf + 1]``, ``kf`` = fine Nyquist / 8: intermediate
      scale, resolved by the coarse mesh at factor 4), OU amplitudes with
      correlation time ``tau_forcing``, variances set so the energy injection
      rate is ``≈ epsilon`` (exact for ``tau_forcing → 0``:
      ``ε = Σ_k σ_k² τ_F / λ_k``).
    * Drag ``μ = drag``; viscosity ``ν`` (no hyperviscosity; default
      ``nu = 0.05 u Δ``, grid Reynolds number 20 at ``u = √(ε/μ)``); tracer
      diffusivity ``kappa`` (default ``= nu``), relaxation ``relax_rate`` to the
      pattern ``q*`` of the kinematic scenario.
    * Spin-up (:meth:`spin_up`): from small seeded noise, run until energy ``E``
      and enstrophy ``Z`` are statistically flat: over the last
      ``spinup_window`` (default ``2/μ``) time units (E, Z recorded every
      ``diagnostic_every``),
      the least-squares linear trend of the ``spinup_batches`` (8) batch means,
      times the window and relative to the window mean, is at most
      ``spinup_tol`` (5 %) plus ``spinup_sigmas`` (2) standard errors of that
      trend (from the residuals of the batch means), for both; i.e. no drift
      beyond 5 % that the turbulent fluctuations cannot explain. Checked every ``spinup_check``
      time units from ``max(spinup_window, spinup_min_time)`` on (default
      ``3/μ``: six e-foldings of the drag's energy decay), up to
      ``spinup_max_time`` (default ``30/μ``; then a ``RuntimeWarning``). The outcome (time,
      trends, their standard errors, window means, the E/Z series) is in
      :attr:`spinup_info`.

    Time step: ``dt = courant Δ / (3 √(ε/μ))``; ``sample_every ≈ 0.1 / dt``.

    Resolved inputs: ``"f"`` (Coriolis parameter on the mesh).
    Out of distribution (:meth:`ood`): ``epsilon × 4`` (forcing amplitude × 2).

    Default: ``cartesian:64`` (coarse 16²); ``healpix:16`` and ``icosahedral:4``
    on the sphere. Larger: ``cartesian:256`` factor 4 (``drag=0.1``),
    ``healpix:64``, ``icosahedral:6``. References: Boffetta & Ecke 2012,
    doi:10.1146/annurev-fluid-120710-101240 (forced 2-D turbulence);
    Frezat et al. 2022, doi:10.1029/2022MS003124 (learned closures for it).
    """

    name = "barotropic"
    variables = ("zeta", "q")
    families = ("cartesian", "healpix", "icosahedral")
    default_mesh = "cartesian:64x64"
    family_default_mesh = {"cartesian": "cartesian:64x64", "healpix": "healpix:16",
                           "icosahedral": "icosahedral:4"}
    parameters = {
        "epsilon": 1.0, "drag": 1.0, "nu": None, "kappa": None, "omega": 2.0, "f0": 0.0,
        "forcing_band": None, "tau_forcing": 0.05, "relax_rate": 0.5, "initial_noise": 1e-2,
        "scheme": "linear", "courant": 0.4, "dt": None,
        "spinup_window": None, "spinup_tol": 0.05, "spinup_sigmas": 2.0, "spinup_batches": 8,
        "spinup_min_time": None, "spinup_check": 0.25, "spinup_max_time": None,
        "diagnostic_every": 0.05, "sample_every": None,
    }
    ood_change = {"epsilon": lambda v: 4.0 * v}

    def _resolve(self, p):
        mesh = self.fine
        u = math.sqrt(p["epsilon"] / p["drag"]) if p["drag"] > 0 else 1.0
        if p["forcing_band"] is None:
            kf = max(2, int(round(_resolution_wavenumber(mesh) / 8)))
            p["forcing_band"] = [kf - 1, kf + 1]
        p["forcing_band"] = [int(v) if mesh.is_sphere else float(v) for v in p["forcing_band"]]
        if p["nu"] is None:
            p["nu"] = 0.05 * u * _dx(mesh)
        if p["kappa"] is None:
            p["kappa"] = p["nu"]
        if p["dt"] is None:
            p["dt"] = p["courant"] * _dx(mesh) / (3.0 * u)
        if p["sample_every"] is None:
            p["sample_every"] = max(1, int(round(0.1 / p["dt"])))
        damping = p["drag"] if p["drag"] > 0 else 1.0
        for key, multiple in (("spinup_window", 2.0), ("spinup_min_time", 3.0),
                              ("spinup_max_time", 30.0)):
            if p[key] is None:
                p[key] = multiple / damping
        return p

    def _setup(self) -> None:
        p, mesh = self.params, self.fine
        B, lam, k = mode_basis(mesh, p["forcing_band"], mesh.cell_center)
        share = np.full(len(lam), 1.0 / len(lam))
        var = share * p["epsilon"] * lam.numpy() / p["tau_forcing"]
        self._forcing_basis = B
        self.ou = OrnsteinUhlenbeck(np.sqrt(var), p["tau_forcing"], self.dt, seed=[self.seed, 2])
        kw = {"omega": p["omega"]} if mesh.is_sphere else {"f0": p["f0"]}
        self.base = BarotropicModel(mesh, drag=p["drag"], forcing=self.forcing,
                                    scheme=p["scheme"], **kw)
        self._model = _Augmented(self.base, mesh, {"zeta": p["nu"], "q": p["kappa"]},
                                 self._tracer_sources)

    def forcing(self, t: float, state=None) -> Tensor:
        """Vorticity forcing ``F (n_fine_cells,)`` at time ``t``."""
        return self._forcing_basis @ torch.as_tensor(self.ou(t))

    def _tracer_sources(self, t, state):
        return {"q": -self.params["relax_rate"] * (state["q"] - _tracer_target(self.fine))}

    def coriolis(self, mesh: Mesh) -> Tensor:
        """Coriolis parameter ``f (n_cells,)`` at the cells of ``mesh``."""
        store = self._cache(mesh)
        if "f" not in store:
            x = mesh.cell_center.double()
            if mesh.is_sphere:
                store["f"] = 2 * self.params["omega"] * x[:, 2] / mesh.radius
            else:
                store["f"] = torch.full((mesh.n_cells,), float(self.params["f0"]),
                                        dtype=torch.float64)
        return store["f"]

    def initial_state(self) -> State:
        rng = self._rng(3)
        noise = torch.as_tensor(rng.standard_normal(self.fine.n_cells))
        return {"zeta": self.params["initial_noise"] * noise,
                "q": _tracer_target(self.fine).clone()}

    def transport(self, t, state) -> Tensor:
        return self.base.transport(state["zeta"])

    def resolved_fluxes(self, mesh, t, state, transport):
        self._check_state(mesh, state, self.variables)
        zeta, p = state["zeta"], self.params
        f = self.coriolis(mesh).to(zeta.dtype)
        return {"zeta": self._flux(mesh, zeta, transport, p["nu"], advected=zeta + f),
                "q": self._flux(mesh, state["q"], transport, p["kappa"])}

    def sources(self, t, state):
        p = self.params
        return {"zeta": -p["drag"] * state["zeta"] + self.forcing(t),
                **self._tracer_sources(t, state)}

    def resolved_inputs(self, mesh, t, state, transport):
        return {"f": self.coriolis(mesh)}

    def energy(self, zeta: Tensor) -> float:
        """Kinetic energy per unit area ``−½⟨ψζ⟩``."""
        return float(self.base.energy(zeta))

    def enstrophy(self, zeta: Tensor) -> float:
        """Enstrophy per unit area ``½⟨ζ²⟩``."""
        return float(self.base.enstrophy(zeta))

    def spin_up(self, state, progress: bool = False):
        """Run until E and Z are flat (class docstring); returns ``(t, state)``."""
        p = self.params
        every = max(1, int(round(p["diagnostic_every"] / self.dt)))
        check = max(1, int(round(p["spinup_check"] / (every * self.dt))))
        times, E, Z = [0.0], [self.energy(state["zeta"])], [self.enstrophy(state["zeta"])]
        t, state = 0.0, dict(state)
        trend_e = trend_z = (float("inf"), float("inf"))
        converged = False
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=p["spinup_max_time"], desc=f"spin-up {self.name}", unit="time")
        k = 0
        try:
            while t < p["spinup_max_time"] - 1e-12:
                t, state = self.advance(t, state, every)
                times.append(t)
                E.append(self.energy(state["zeta"]))
                Z.append(self.enstrophy(state["zeta"]))
                if bar is not None:
                    bar.update(every * self.dt)
                k += 1
                if t >= max(p["spinup_window"], p["spinup_min_time"]) - 1e-9 and k % check == 0:
                    trend_e, trend_z = self._trends(times, E, Z)
                    if all(tr <= p["spinup_tol"] + p["spinup_sigmas"] * se
                           for tr, se in (trend_e, trend_z)):
                        converged = True
                        break
        finally:
            if bar is not None:
                bar.close()
        if not converged:
            trend_e, trend_z = self._trends(times, E, Z)
            warnings.warn(f"barotropic spin-up did not reach equilibrium by t={t:.3g}: relative "
                          f"trends (value, standard error) E {trend_e}, Z {trend_z} exceed "
                          f"spinup_tol={p['spinup_tol']} + {p['spinup_sigmas']} standard errors; "
                          "raise spinup_max_time.", RuntimeWarning, stacklevel=2)
        window = np.asarray(times) >= t - p["spinup_window"] - 1e-9
        self.spinup_info = {
            "t": t, "n_steps": int(round(t / self.dt)), "converged": converged,
            "criterion": (f"|linear trend| * window / mean <= {p['spinup_tol']} + "
                          f"{p['spinup_sigmas']} standard errors, for energy and enstrophy over "
                          f"the last {p['spinup_window']} time units"),
            "energy_trend": float(trend_e[0]), "energy_trend_se": float(trend_e[1]),
            "enstrophy_trend": float(trend_z[0]), "enstrophy_trend_se": float(trend_z[1]),
            "energy": float(np.mean(np.asarray(E)[window])),
            "enstrophy": float(np.mean(np.asarray(Z)[window])),
            "times": list(times), "energy_series": list(E), "enstrophy_series": list(Z),
        }
        return t, state

    def _trends(self, times, E, Z):
        """Relative trends ``|slope| W / mean`` of E and Z over the last window, and their
        standard errors, by batch means: the window is cut into ``spinup_batches``
        equal batches, a line is fitted to the batch means, and the standard error
        of its slope comes from their residuals (batches longer than the
        correlation time are nearly independent)."""
        W, nb = self.params["spinup_window"], int(self.params["spinup_batches"])
        tt = np.asarray(times)
        sel = tt > tt[-1] - W + 1e-9
        batch = np.minimum(((tt[sel] - (tt[-1] - W)) / W * nb).astype(int), nb - 1)
        counts = np.bincount(batch, minlength=nb)
        if np.any(counts == 0):
            return (float("inf"), 0.0), (float("inf"), 0.0)
        x = (np.arange(nb) + 0.5) * W / nb
        x = x - x.mean()
        out = []
        for series in (E, Z):
            y = np.bincount(batch, np.asarray(series)[sel], nb) / counts
            slope, icpt = np.polyfit(x, y, 1)
            res = y - (slope * x + icpt)
            se = math.sqrt((res * res).sum() / (nb - 2) / (x * x).sum())
            scale = max(abs(y.mean()), 1e-300)
            out.append((abs(slope) * W / scale, se * W / scale))
        return out[0], out[1]


# ----------------------------------------------------------------------------- convection
class ConvectionScenario(Scenario):
    r"""Boussinesq convection in an x–z slice, heated from below, averaged onto a column.

    Equations (non-dimensional; ``x ∈ [0, lx)`` periodic, ``z ∈ [0, H]`` walls;
    :class:`~meshclosure.solver.BoussinesqModel`)::

        ∂t ζ + ∇·(u ζ) = ν ∇²ζ + ∂b/∂x,        ∇²ψ = ζ,  ψ = 0 on the walls
        ∂t b + ∇·(u b) = κ ∇²b,   −κ ∂b/∂z = B at z = 0,  −κ ∂b/∂z = 0 at z = H

    * Surface buoyancy flux ``B = buoyancy_flux`` enters through the bottom
      faces as the prescribed outward boundary flux ``−B A_f``; the top is
      insulating, so the total buoyancy grows exactly as ``B lx t``.
    * Initial state: a mixed layer of depth ``h0 = mixed_layer`` below a
      stable layer, ``b = N2 max(z − h0, 0)`` (``N2 = stratification``), plus
      seeded noise of amplitude ``noise`` in the mixed layer; ``ζ = 0``.
    * ``ν = κ`` (default ``0.15 w* Δ``, ``w* = (B H)^{1/3}``).
    * Coarsening: the horizontal average onto the column (the parent of a
      cell is its level), with ``factor`` fine levels per column cell
      (``factor=1``: the fine levels). On the column ``restrict_flux(U) = 0``
      through every level, so ``Φ^sgs_b = lx · (⟨w b⟩ − ⟨w⟩⟨b⟩)`` plus the
      diffusive difference: the vertical eddy buoyancy flux ``\overline{w'b'}``
      integrated over the level.

    Time step: ``dt = min(courant Δ / (3 w*), 0.2 / N, 0.2 Δ² / ν)`` (advection,
    buoyancy oscillations, diffusion); ``spinup_time`` (10) covers the onset of
    convection from the seeded noise and a few turnovers ``h/w*``;
    ``sample_every ≈ 0.25 / dt``.

    Mesh spec: ``"cartesian:NXxNZ"`` (square cells; ``lx = H NX / NZ``).
    Resolved inputs: ``"N2" = ∂b/∂z`` (two-point differences at horizontal
    faces, averaged to cells), on the slice and on the column.
    Out of distribution (:meth:`ood`): ``buoyancy_flux × 2`` (stronger heating).
    Variables: ``("b",)`` (``ζ`` is prognostic but not coarse-grained).

    Default: ``cartesian:64x32`` (``lx = 2``), column of 8 levels at factor 4;
    larger: ``cartesian:256x128`` with ``factor=4`` (32 levels). Reference:
    Deardorff 1970 (doi:10.1175/1520-0469(1970)027<1211:CVATSF>2.0.CO;2) for
    ``w*``; convective boundary-layer SCM truth as in Siebesma et al. 2007
    (doi:10.1175/JAS3888.1).
    """

    name = "convection"
    variables = ("b",)
    families = ("cartesian",)
    default_mesh = "cartesian:64x32"
    family_default_mesh = {"cartesian": "cartesian:64x32"}
    parameters = {
        "height": 1.0, "buoyancy_flux": 0.01, "stratification": 1.0, "mixed_layer": 0.25,
        "noise": 1e-2, "nu": None, "kappa": None, "scheme": "linear", "courant": 0.4,
        "dt": None, "spinup_time": 10.0, "sample_every": None,
    }
    ood_change = {"buoyancy_flux": lambda v: 2.0 * v}

    def _build_mesh(self, spec: str):
        from ..mesh import cartesian

        family, _, size = spec.partition(":")
        if family != "cartesian":
            raise ValueError(f"mesh={spec!r}: the 'convection' scenario runs in an x–z slice; "
                             "write it as 'cartesian:NXxNZ' (e.g. 'cartesian:64x32').")
        nx, _, nz = (size or "64x32").partition("x")
        try:
            nx, nz = int(nx), int(nz or int(nx) // 2)
        except ValueError:
            raise ValueError(f"mesh={spec!r}: sizes must be integers; write e.g. "
                             "'cartesian:64x32' (NX columns, NZ levels).") from None
        H = float(self._pending_height)
        mesh = cartesian(nx, nz, H * nx / nz, H, periodic=(True, False))
        return mesh, f"cartesian:{nx}x{nz}"

    def __init__(self, mesh=None, factor=4, seed=0, **config):
        # _build_mesh runs before the parameters are merged and needs the height
        self._pending_height = config.get("height", self.parameters["height"])
        super().__init__(mesh=mesh, factor=factor, seed=seed, **config)

    def _build_coarsening(self, factor: int) -> Coarsening:
        nz = self.fine.info["ny"]
        if nz % factor or nz // factor < 2:
            raise ValueError(f"factor={factor} must divide the number of levels nz={nz} and "
                             f"leave at least 2 column cells; choose a divisor of {nz}.")
        return Coarsening(self.fine, column_parent(self.fine) // factor)

    def _resolve(self, p):
        mesh = self.fine
        wstar = (abs(p["buoyancy_flux"]) * p["height"]) ** (1.0 / 3.0)
        dx = _dx(mesh)
        if p["nu"] is None:
            p["nu"] = 0.15 * wstar * dx
        if p["kappa"] is None:
            p["kappa"] = p["nu"]
        if p["dt"] is None:
            dt_adv = p["courant"] * dx / (3.0 * max(wstar, 1e-12))
            dt_n = 0.2 / math.sqrt(max(p["stratification"], 1e-12))
            dt_diff = 0.2 * dx * dx / max(p["nu"], p["kappa"], 1e-300)
            p["dt"] = min(dt_adv, dt_n, dt_diff)
        if p["sample_every"] is None:
            p["sample_every"] = max(1, int(round(0.25 / p["dt"])))
        return p

    def _setup(self) -> None:
        p, mesh = self.params, self.fine
        self.base = BoussinesqModel(mesh, buoyancy_flux=self._bottom_flux(mesh),
                                    scheme=p["scheme"])
        self._model = _Augmented(self.base, mesh, {"zeta": p["nu"], "b": p["kappa"]})

    def _bottom_flux(self, mesh: Mesh) -> Tensor:
        store = self._cache(mesh)
        if "bflux" not in store:
            names = list(mesh.boundary_tag_names)
            bottom = names.index("south") if "south" in names else names.index("bottom")
            is_bottom = mesh.boundary_face_tag == bottom
            store["bflux"] = torch.where(is_bottom, -self.params["buoyancy_flux"]
                                         * mesh.boundary_face_area.double(),
                                         torch.zeros_like(mesh.boundary_face_area.double()))
        return store["bflux"]

    def initial_state(self) -> State:
        p = self.params
        z = self.fine.cell_center[:, 1].double()
        rng = self._rng(4)
        noise = torch.as_tensor(rng.uniform(-1.0, 1.0, self.fine.n_cells))
        b = p["stratification"] * torch.clamp(z - p["mixed_layer"], min=0.0)
        b = b + p["noise"] * noise * (z < p["mixed_layer"])
        return {"zeta": torch.zeros(self.fine.n_cells, dtype=torch.float64), "b": b}

    def transport(self, t, state) -> Tensor:
        return self.base.transport(state["zeta"])

    def resolved_fluxes(self, mesh, t, state, transport):
        self._check_state(mesh, state, ("b",))
        return {"b": self._flux(mesh, state["b"], transport, self.params["kappa"])}

    def boundary_fluxes(self, mesh, t, state):
        return {"b": self._bottom_flux(mesh)}

    def sources(self, t, state):
        return {"b": torch.zeros_like(state["b"])}

    def resolved_inputs(self, mesh, t, state, transport):
        return {"N2": self.vertical_derivative(mesh, state["b"])}

    def vertical_derivative(self, mesh: Mesh, b: Tensor) -> Tensor:
        """``∂b/∂z (n_cells,)``: differences across horizontal faces, averaged to cells."""
        store = self._cache(mesh)
        if "vertical" not in store:
            nz = mesh.face_normal[:, 1].double()
            horizontal = nz.abs() > 0.5
            count = torch.zeros(mesh.n_cells, dtype=torch.float64)
            for row in mesh.face_cells:
                count = count.index_add(0, row[horizontal],
                                        torch.ones(int(horizontal.sum()), dtype=torch.float64))
            store["vertical"] = (horizontal, torch.sign(nz) / mesh.cell_distance.double(),
                                 count.clamp_min(1.0))
        horizontal, scale, count = store["vertical"]
        a, c = mesh.face_cells[0], mesh.face_cells[1]
        g = torch.where(horizontal, (b[c] - b[a]) * scale.to(b.dtype), torch.zeros_like(scale))
        out = torch.zeros(mesh.n_cells, dtype=b.dtype).index_add(0, a, g).index_add(0, c, g)
        return out / count.to(b.dtype)

    def column_profile(self, state: Mapping[str, Tensor]) -> Tuple[Tensor, Tensor]:
        """Column heights ``z (n_coarse,)`` and horizontally averaged buoyancy ``b̄``."""
        return self.coarse.cell_center[:, 1].double(), self.coarsening.restrict(state["b"])

    def mixed_layer_depth(self, state: Mapping[str, Tensor]) -> float:
        """Lowest fine-level height where the mean ``N²`` exceeds half the initial
        stratification (the top of the convective layer)."""
        store = self._cache(self.fine)
        if "fine_column" not in store:
            store["fine_column"] = Coarsening(self.fine, column_parent(self.fine))
        col = store["fine_column"]
        n2 = self.vertical_derivative(col.coarse, col.restrict(state["b"]))
        z = col.coarse.cell_center[:, 1].double()
        above = torch.nonzero(n2 > 0.5 * self.params["stratification"]).flatten()
        return float(z[above[0]]) if len(above) else float(self.params["height"])


# ------------------------------------------------------------------------------ registry
SCENARIOS: Dict[str, type] = {cls.name: cls for cls in (KinematicScenario, BarotropicScenario,
                                                        ConvectionScenario)}
"""Scenario classes by name."""


def get_scenario(name: str, mesh: Optional[str] = None, factor: int = 4, seed: int = 0,
                 **config: Any) -> Scenario:
    """Build a named truth scenario.

    Parameters
    ----------
    name : {"kinematic", "barotropic", "convection"}
    mesh : str, optional
        Fine-mesh spec: ``"cartesian:64"``, ``"cartesian:64x64"``, ``"healpix:32"``,
        ``"icosahedral:5"`` (convection: ``"cartesian:NXxNZ"``); a bare family
        name (``"healpix"``) takes that family's default size; ``None`` the
        scenario's default mesh.
    factor : int
        Coarsening factor in linear resolution (native nesting; convection:
        fine levels per column cell).
    seed : int
        Seed of every random number in the run.
    **config
        Scenario parameters (see each class; unknown keys are an error).

    Examples
    --------
    >>> s = get_scenario("kinematic", "cartesian:16", factor=4, seed=1)
    >>> s.variables, s.coarse.n_cells, s.config["seed"]
    (('q',), 16, 1)
    >>> get_scenario("kinetic")
    Traceback (most recent call last):
    ...
    ValueError: name must be one of ['barotropic', 'convection', 'kinematic']; got 'kinetic'. ...
    """
    if name not in SCENARIOS:
        raise ValueError(f"name must be one of {sorted(SCENARIOS)}; got {name!r}. Pick a "
                         "scenario from meshclosure.data.SCENARIOS.")
    return SCENARIOS[name](mesh=mesh, factor=factor, seed=seed, **config)
