"""The ``kinematic`` scenario: a passive tracer in a prescribed multiscale flow."""
from __future__ import annotations

import math
from typing import Dict, Mapping, Tuple

import numpy as np
import torch
from torch import Tensor

from ...fv.operators import transport_from_streamfunction
from ...mesh import Coarsening
from ...solver import TracerModel
from ...solver.tracer import SCHEMES
from ..random_flows import ModeSynthesis, OrnsteinUhlenbeck, band_variances, mode_basis
from .base import (BLOCK, Scenario, State, _Augmented, _coarse_every, _dx, _noise_window,
                   _resolution_wavenumber, _tracer_target)

__all__ = ["KinematicScenario"]


class KinematicScenario(Scenario):
    r"""Passive tracer in a prescribed multiscale, time-correlated flow modulated by ``N``.

    Equations (non-dimensional; unit periodic square or unit sphere)::

        ∂t q + ∇·(u q) = κ ∇²q − r (q − q*),        u = k × ∇ψ
        ψ(x, t) = Σ_{k∈L} a_k(t) e_k(x) + g(N(x, t)) Σ_{k∈S} a_k(t) e_k(x)
        g(N) = (N/N0) / √(1 + (N/N0)²)
        N(x, t) = N̄ (1 + ε P(x, t))

    * ``e_k``: unit-mean-square Fourier modes (plane) or real spherical harmonics
      (sphere), :func:`~meshclosure.data.random_flows.mode_basis`; large band
      ``L = large_band`` (default degrees 1–3 on the sphere, ``|k|`` 1–2 in
      units of ``2π/L`` on the plane), small band ``S = small_band``, set
      relative to the COARSE grid: default ``[k_c, min(2 k_c, k_f/2)]`` with
      ``k_c = k_f / factor`` the coarse and ``k_f`` the fine Nyquist wavenumber
      (:func:`_resolution_wavenumber`). The eddies (half a wavelength ≤ the
      coarse spacing) are unresolved on the coarse grid and resolved by ≥ 4
      fine cells per wavelength (``[8, 16]`` on ``cartesian:64``, factor 4).
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
      diffusivity is ``K(N) ≈ g(N)² u_small² τ_small / 2`` (Taylor's
      short-correlation estimate, fair for a Kubo number
      ``Ku = u_small τ_small / ℓ ≲ 1``, ``ℓ = 1/|k|`` at the low end of the small
      band), i.e. ``K ∝ N²/(1 + (N/N0)²)``: quadratic for ``N ≪ N0``,
      saturating for ``N ≫ N0`` — a power law ``K = αN^β`` fits only locally.
      Default ``tau_small = KUBO ℓ / u_small`` (``KUBO = 0.8``). The fitted
      ``K`` of the truth data (tests/data/test_kinematic_physics.py) is about
      0.4–0.8 of the estimate, in every ``N`` bin: the fine grid damps the
      eddy-scale tracer variance and ``Ku`` is not ≪ 1.
    * ``q* = cos(2πx/lx) + sin(2πy/ly)`` (plane) or ``(z + x/2)/R`` (sphere);
      ``κ`` (default ``0.02 u_small Δ``, ``Δ`` the fine spacing) is much smaller
      than ``K``. The defaults ``u_small = 2``, ``u_large = 0.25`` make ``K``
      (about ``5e-3`` at ``N = N0`` on ``cartesian:64``) large next to the coarse
      scheme's own numerical diffusion in the large-scale flow (``(2–6)e-4``,
      more diffusive than the truth; DESIGN.md §10), while the large-scale
      flow still dominates the domain-scale transport (Péclet
      ``u_large L / K ≈ 50``).

    Coarse model (:meth:`coarse_transport`), a departure from DESIGN.md §5's
    ``U_c = restrict_flux(U)``: the coarse model is given the large-band flow
    only, ``U_c = ψ_L(V0) − ψ_L(V1)`` at the coarse vertices. The integrated
    transport of a streamfunction through a coarse face is a difference of
    POINT values of ψ at its two end vertices, so ``restrict_flux(U)`` does not
    filter the eddies: it holds ``ψ_S(V0) − ψ_S(V1)`` at full amplitude, and a
    coarse model fed with it mixes the tracer itself (grid-scale noise plus
    the scheme's numerical diffusion), leaving only a correction in
    ``Φ^sgs``: with the current defaults less than half of ``K``, and not
    positive at small ``N``. (The former defaults, eddies ``|k|`` 5–10 on a
    16² coarse grid, i.e. partly resolved by it, and ``Ku ≈ 1.6``, gave a
    negative ``K`` independent of ``N`` with either ``U_c``: the eddy band
    must lie below the coarse grid scale.) With ``U_c`` from ``ψ_L`` the whole
    eddy flux is in ``Φ^sgs``: a mean down-gradient part ``K(N)`` plus the zero-mean
    stochastic part ``(ψ_S(V0) − ψ_S(V1)) Q_f``, whose projection on the
    discrete gradient of ``Q`` telescopes to (nearly) zero, so fits of ``K``
    should weight faces smoothly in ``N`` rather than in sharp bins.

    Time step: ``dt = courant Δ / (3 √(u_large² + g_max² u_small²))`` (``Δ`` the
    smallest centre distance, ``g_max = g(N_mean (1 + N_amplitude))``: Courant
    number ≈ ``courant`` for a 3σ velocity); ``sample_every`` (a suggestion for
    the dataset) ``≈ 10 tau_small / dt`` steps (the eddies decorrelate between
    samples and the large-scale state moves on).

    Rotation (sphere only; the symmetry test of issue 13): ``rotation`` (degrees;
    default 0, today's scenario bit for bit) tilts the axes of the physics by
    ``R`` = :func:`~meshclosure.data.scenarios.base.rotation_matrix` ``(rotation)``:
    a tilt ``θ``, or a pair ``[θ, φ]`` that moves the pole to colatitude ``θ``
    and longitude ``φ`` (a turn by ``θ`` about the horizontal axis
    ``(−sin φ, cos φ, 0)``; ``φ = 0``: about the y axis, the pole towards +x).
    Rotated: ``N(x, t) = N_0(Rᵀx, t)`` (the axis ``n̂(t)`` becomes ``R n̂(t)``) and
    ``q*(x) = q*_0(Rᵀx)``; the seeds and the flow modes ``e_k`` (isotropic in
    distribution) are unchanged, so a tilted run differs from the default only
    by the rotated patterns. ``config["rotation"]`` records it (a float tilt, or
    ``[θ, φ]`` when ``φ ≠ 0``); a nonzero ``rotation`` on the plane is an
    :class:`~meshclosure.errors.ArgumentError`.

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
    families = ("cartesian", "healpix", "icosahedral", "cubed")
    default_mesh = "cartesian:64x64"
    family_default_mesh = {"cartesian": "cartesian:64x64", "healpix": "healpix:16",
                           "icosahedral": "icosahedral:4", "cubed": "cubed:24"}
    parameters = {
        "u_large": 0.25, "u_small": 2.0, "tau_large": 1.0, "tau_small": None,
        "large_band": None, "small_band": None, "spectral_slope": -5.0 / 3.0,
        "N_mean": 1.0, "N_amplitude": 0.8, "N0": 1.0, "N_period": 10.0,
        "kappa": None, "relax_rate": 1.0, "scheme": "linear", "courant": 0.4,
        "dt": None, "spinup_time": 3.0, "sample_every": None, "coarse_every": None,
        "rotation": 0.0,
    }
    ood_change = {"N_mean": lambda v: 2.0 * v}
    KUBO = 0.8
    """Kubo number ``u_small τ_small / ℓ`` of the default ``tau_small``."""

    def _resolve(self, p):
        mesh = self.fine
        kmax_res = _resolution_wavenumber(mesh)
        if p["large_band"] is None:
            p["large_band"] = [1, 3] if mesh.is_sphere else [1, 2]
        if p["small_band"] is None:
            k_c = kmax_res / self.factor           # coarse Nyquist wavenumber
            hi = max(int(math.floor(min(2 * k_c, kmax_res / 2) + 1e-9)), 2)
            lo = max(int(math.ceil(min(k_c, hi / 2) - 1e-9)), 1)
            p["small_band"] = [lo, hi]
        p["large_band"] = [int(v) if mesh.is_sphere else float(v) for v in p["large_band"]]
        p["small_band"] = [int(v) if mesh.is_sphere else float(v) for v in p["small_band"]]
        if p["tau_small"] is None:
            p["tau_small"] = self.KUBO * self.eddy_length(p["small_band"]) / p["u_small"]
        if p["kappa"] is None:
            p["kappa"] = 0.02 * p["u_small"] * _dx(mesh)
        if p["dt"] is None:
            gmax = self.modulation(p["N_mean"] * (1 + abs(p["N_amplitude"])), p["N0"])
            umax = 3.0 * math.hypot(p["u_large"], gmax * p["u_small"])
            p["dt"] = p["courant"] * _dx(mesh) / umax
        if p["sample_every"] is None:
            p["sample_every"] = max(1, int(round(10 * p["tau_small"] / p["dt"])))
        if p["scheme"] not in SCHEMES:
            raise ValueError(f"scheme must be one of {SCHEMES}; got {p['scheme']!r}.")
        if p["coarse_every"] is None:     # coarse Courant 0.5 for a 3-sigma large-band speed
            p["coarse_every"] = _coarse_every(self.coarse, p["dt"], 3.0 * p["u_large"])
        return p

    @staticmethod
    def modulation(N, N0: float = 1.0):
        """Small-scale amplitude factor ``g(N) = (N/N0)/√(1 + (N/N0)²)`` (0 to 1)."""
        r = N / N0
        return r / (1 + r * r) ** 0.5

    def eddy_length(self, band=None) -> float:
        """Eddy length ``ℓ = 1/|k|`` at the low end of the small band (length):
        ``max(lx, ly) / (2π k_lo)`` on the plane, ``R / √(l_lo (l_lo + 1))`` on the sphere."""
        lo = float((self.params["small_band"] if band is None else band)[0])
        mesh = self.fine
        if mesh.is_sphere:
            return float(mesh.radius) / math.sqrt(lo * (lo + 1))
        return max(float(v) for v in mesh.period) / (2 * math.pi * lo)

    def kubo_number(self) -> float:
        """``Ku = u_small τ_small / ℓ`` (:meth:`eddy_length`); the estimate
        :meth:`eddy_diffusivity` is fair for ``Ku ≲ 1``."""
        p = self.params
        return p["u_small"] * p["tau_small"] / self.eddy_length()

    def eddy_diffusivity(self, N):
        """Short-correlation estimate ``K(N) = g(N)² u_small² τ_small / 2`` (length²/time)."""
        p = self.params
        return self.modulation(N, p["N0"]) ** 2 * p["u_small"] ** 2 * p["tau_small"] / 2

    def _setup(self) -> None:
        p, mesh = self.params, self.fine
        syn_l = ModeSynthesis(mesh, p["large_band"], device=mesh.device)
        syn_s = ModeSynthesis(mesh, p["small_band"], device=mesh.device)
        var_l = band_variances(syn_l.lam, syn_l.kappa, p["u_large"], p["spectral_slope"])
        var_s = band_variances(syn_s.lam, syn_s.kappa, p["u_small"], p["spectral_slope"])
        self._synthesis = (syn_l, syn_s)
        self.ou = OrnsteinUhlenbeck(
            np.sqrt(np.r_[var_l, var_s]),
            np.r_[np.full(len(var_l), p["tau_large"]), np.full(len(var_s), p["tau_small"])],
            self.dt, seed=[self.seed, 1], window=_noise_window(p) + BLOCK)
        self._n_large = len(var_l)
        self._last: Dict[float, Tensor] = {}
        self._blocks: Dict[int, Tuple[Tensor, Tensor]] = {}
        self._face_vertices = (mesh.face_vertices[0].contiguous(),
                               mesh.face_vertices[1].contiguous())
        x = mesh.vertex_pos.double()
        if mesh.is_sphere:
            self._vertex_unit = tuple((x[:, i] / mesh.radius).contiguous() for i in range(3))
            if self.rotation is not None:
                self._rotation_rows = self.rotation.tolist()
        else:       # cos(a − w) cos b = cos w (cos a cos b) + sin w (sin a cos b)
            lx, ly = (float(v) for v in mesh.period)
            a, cb = 2 * math.pi * x[:, 0] / lx, torch.cos(2 * math.pi * x[:, 1] / ly)
            self._vertex_trig = (torch.cos(a) * cb, torch.sin(a) * cb)
        self.base = TracerModel(mesh, self._transport_at,
                                relaxation=(p["relax_rate"], self._target(mesh)),
                                scheme=p["scheme"], operators=self.operators)
        self._model = _Augmented(self.base, mesh, {"q": p["kappa"]})

    def _axis(self, t: float) -> Tuple[float, float, float]:
        """Sphere: the axis ``n̂(t)`` of the pattern ``P = n̂·x/R`` (rotated), as floats."""
        a, w = math.pi / 4, 2 * math.pi * t / self.params["N_period"]
        axis = (math.sin(a) * math.cos(w), math.sin(a) * math.sin(w), math.cos(a))
        if self.rotation is not None:
            R = self._rotation_rows
            axis = tuple(sum(R[i][j] * axis[j] for j in range(3)) for i in range(3))
        return axis

    def N(self, points: Tensor, t: float) -> Tensor:
        """The resolved field ``N(x, t)`` at ``points (n, d)``."""
        p = self.params
        x = points.double()
        if self.fine.is_sphere:
            axis = torch.tensor(self._axis(t), dtype=torch.float64, device=x.device)
            P = x @ axis / self.fine.radius
        else:
            w = 2 * math.pi * t / p["N_period"]
            lx, ly = (float(v) for v in self.fine.period)
            P = torch.cos(2 * math.pi * x[:, 0] / lx - w) * torch.cos(2 * math.pi * x[:, 1] / ly)
        return p["N_mean"] * (1 + p["N_amplitude"] * P)

    def _vertex_modulation(self, t: float) -> Tensor:
        """``g(N(x, t))`` at the fine vertices ``(n_vertices,)``: :meth:`N` and
        :meth:`modulation` from cached functions of the fixed vertex coordinates, the
        constants folded in (``r = N/N0 = a + b P``; equal to them to rounding)."""
        p = self.params
        b = p["N_mean"] * p["N_amplitude"] / p["N0"]
        if self.fine.is_sphere:
            ux, uy, uz = self._vertex_unit
            ax, ay, az = self._axis(t)
            r = torch.mul(ux, b * ax).add_(uy, alpha=b * ay).add_(uz, alpha=b * az)
        else:
            w = 2 * math.pi * t / p["N_period"]
            cc, sc = self._vertex_trig
            r = torch.mul(cc, b * math.cos(w)).add_(sc, alpha=b * math.sin(w))
        r.add_(p["N_mean"] / p["N0"])
        return torch.mul(r, r).add_(1.0).rsqrt_().mul_(r)

    def _sample_fields(self, n: int) -> Tuple[Tensor, Tensor]:
        """Large- and small-band sums ``(n_vertices,)`` at OU sample ``n``. Synthesised a block
        of :data:`~meshclosure.data.scenarios.base.BLOCK` samples at a time
        (:class:`~meshclosure.data.random_flows.ModeSynthesis`), the blocks aligned to
        absolute sample indices (block ``b``: samples ``b·BLOCK … b·BLOCK + BLOCK − 1``), so
        the values never depend on where a run starts or resumes."""
        b, i = divmod(int(n), BLOCK)
        fields = self._blocks.get(b)
        if fields is None:
            a = torch.as_tensor(self.ou.samples(b * BLOCK, (b + 1) * BLOCK))
            syn_l, syn_s = self._synthesis
            fields = (syn_l(a[:, :self._n_large]), syn_s(a[:, self._n_large:]))
            if len(self._blocks) > 1:
                self._blocks.pop(next(iter(self._blocks)))
            self._blocks[b] = fields
        return fields[0][i], fields[1][i]

    def psi_vertex(self, t: float, parts: Tuple[str, ...] = ("large", "small")) -> Tensor:
        """Streamfunction at the fine vertices ``(n_vertices,)`` (``parts`` selects the bands).

        The band sums are linear in the OU amplitudes, so they are computed
        once per OU sample index (:meth:`_sample_fields`, a block of samples at a
        time) and interpolated in time with
        :meth:`~meshclosure.data.random_flows.OrnsteinUhlenbeck.stencil`.
        """
        st = self.ou.stencil(t)
        if len(st) == 1:
            large, small = self._sample_fields(st[0][0])
        else:
            (n0, _), (n1, w1) = st
            (l0, s0), (l1, s1) = self._sample_fields(n0), self._sample_fields(n1)
            large, small = torch.lerp(l0, l1, w1), torch.lerp(s0, s1, w1)
        if "small" in parts:
            g = self._vertex_modulation(t)
            return torch.addcmul(large, g, small) if "large" in parts else g.mul_(small)
        return large.clone() if "large" in parts else torch.zeros_like(large)

    def _transport_at(self, t: float) -> Tensor:
        t = float(t)
        U = self._last.get(t)
        if U is None:       # transport_from_streamfunction, by index_select (faster, same values)
            psi = self.psi_vertex(t)
            v0, v1 = self._face_vertices
            U = torch.index_select(psi, 0, v0).sub_(torch.index_select(psi, 0, v1))
            if len(self._last) > 4:
                self._last.pop(next(iter(self._last)))
            self._last[t] = U
        return U

    def _target(self, mesh) -> Tensor:
        """The relaxation pattern ``q*`` at the cells of ``mesh`` (rotated by ``rotation``)."""
        return _tracer_target(mesh, self.params["rotation"])

    def initial_state(self) -> State:
        return {"q": self._target(self.fine).clone()}

    def transport(self, t, state=None) -> Tensor:
        return self._transport_at(t)

    def coarse_transport(self, coarsening: Coarsening, t: float, state: Mapping[str, Tensor],
                         transport: Tensor) -> Tensor:
        """``U_c = ψ_L(V0) − ψ_L(V1)`` on the coarse faces: the large-band streamfunction
        ``ψ_L = Σ_{k∈L} a_k(t) e_k`` at the coarse vertices (the resolved flow a
        coarse model knows), exactly non-divergent; shape ``(n_coarse_faces,)``.

        Not DESIGN.md §5's ``restrict_flux(U)`` (see the class docstring). A
        "coarsening" that keeps every fine cell (factor 1) resolves the whole
        flow: it gets ``restrict_flux(transport)``, so its subgrid flux is zero.
        """
        coarse = coarsening.coarse
        if coarse.n_cells == self.fine.n_cells:
            return coarsening.restrict_flux(transport)
        store = self._cache(coarse)
        if "basis_large" not in store:
            store["basis_large"] = mode_basis(coarse, self.params["large_band"])[0]
        basis = store["basis_large"]
        a = torch.as_tensor(self.ou(t))[:self._n_large].to(basis.device)
        psi = basis @ a
        return transport_from_streamfunction(coarse, psi).to(transport.dtype)

    def coarse_model(self, closure=None, forcing=None):
        """The coarse tracer model (see :meth:`Scenario.coarse_model`): the prescribed
        coarse transport ``U_c(t)`` of :meth:`coarse_transport`, the same scheme and
        ``κ``, relaxation to ``restrict(q*)``; no random forcing (``forcing`` unused)."""
        self._check_closure(closure)
        c, p = self.coarsening, self.params
        dummy = torch.zeros(0, dtype=torch.float64)
        if c.coarse.n_cells == self.fine.n_cells:
            def transport(t):
                return c.restrict_flux(self._transport_at(t))
        else:
            def transport(t):
                return self.coarse_transport(c, t, None, dummy)
        base = TracerModel(c.coarse, transport, scheme=p["scheme"], closure=closure,
                           operators=self.operators,
                           relaxation=(p["relax_rate"], c.restrict(self._target(self.fine))))
        return _Augmented(base, c.coarse, {"q": p["kappa"]})

    def resolved_fluxes(self, mesh, t, state, transport):
        self._check_state(mesh, state, ("q",))
        return {"q": self._flux(mesh, state["q"], transport, self.params["kappa"])}

    def sources(self, t, state):
        return {"q": -self.params["relax_rate"] * (state["q"] - self._target(self.fine))}

    def resolved_inputs(self, mesh, t, state, transport):
        return {"N": self.N(mesh.cell_center, t)}


# ----------------------------------------------------------------------------- barotropic
