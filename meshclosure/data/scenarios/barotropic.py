"""The ``barotropic`` scenario: forced–dissipative 2-D turbulence with a tracer."""
from __future__ import annotations

import math
import warnings
from typing import Dict, Mapping

import numpy as np
import torch
from torch import Tensor

from ...mesh import Mesh
from ...solver import BarotropicModel
from ..random_flows import ModeSynthesis, OrnsteinUhlenbeck
from .base import (BLOCK, Scenario, State, _Augmented, _coarse_every, _dx, _noise_window,
                   _resolution_wavenumber, _tracer_target)

__all__ = ["BarotropicScenario"]


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
      ``ε = Σ_k σ_k² τ_F / λ_k``; default ``τ_F = 0.01 = 0.16/μ``, nearly
      white on the drag time, so the injection rate barely fluctuates).
    * Drag ``μ = drag`` (default 16, with ``ε = 16``: ``u = √(ε/μ) = 1`` and
      the inverse cascade arrested at ``ℓ_μ = ε^½ μ^(−3/2) = 1/16``, i.e.
      wavelength ``2π ℓ_μ ≈ 0.4``, inside the unit box, so no box-size
      condensate and a spin-up of a few ``1/μ``; Boffetta & Ecke 2012 §4);
      viscosity ``ν`` (no hyperviscosity; default ``nu = 0.05 u Δ``, grid
      Reynolds number 20); tracer diffusivity ``kappa`` (default ``= nu``),
      relaxation ``relax_rate`` to the pattern ``q*`` of the kinematic scenario.
    * Spin-up (:meth:`spin_up`): from small seeded noise (zero area mean), run
      until energy ``E`` and enstrophy ``Z`` are statistically flat. Criterion
      (:meth:`drift`), for each of E and Z over the last ``spinup_window``
      time units ``W`` (default ``300/μ``), sampled every ``diagnostic_every``
      (default ``0.5/μ``) and cut into ``spinup_batches`` (10) batches of
      ``W/10 = 30/μ``, much longer than the correlation time of E and Z
      (``≈ 0.6/μ`` measured), so the batch means are nearly independent.
      With ``trend = |slope| W / mean`` (the relative change across the
      window of the least-squares line through the batch means) and ``se``
      its standard error (from their residuals), accept when

          trend + spinup_sigmas · se <= spinup_tol    and    2 se <= spinup_tol

      (defaults ``spinup_tol = 0.15``, ``spinup_sigmas = 1``): the drift is
      below 15 % even at its one-sigma upper bound, and the window is long
      enough to have seen a 15 % drift. E and Z fluctuate by ≈ 20 % rms at the
      default (``se ≈ 0.045``), so a shorter window cannot tell such a drift
      from noise; a 20 % drift passes with probability ≈ 2 %, a stationary
      series fails a given check with ≈ 2–5 % (and is checked again).
      The window never reaches back before ``spinup_min_time`` (default
      ``5/μ``, the transient); checked every ``spinup_check`` (default ``5/μ``)
      up to ``spinup_max_time`` (default ``spinup_min_time + 2 W``; then a
      ``RuntimeWarning``, ``"converged": False``, and
      :func:`~meshclosure.data.generate` refuses to keep samples unless told
      ``allow_unconverged=True``). The outcome (criterion, tolerance, window,
      time, trends and their standard errors, window means, the E/Z series) is
      in :attr:`spinup_info`.

    * Rotation (sphere only; the symmetry test of issue 13): ``rotation``
      (degrees; default 0, today's scenario bit for bit) tilts the planetary
      rotation axis and the tracer pattern by ``R`` =
      :func:`~meshclosure.data.scenarios.base.rotation_matrix` ``(rotation)``
      (a tilt ``θ``, or ``[θ, φ]``: the pole moves to colatitude ``θ`` and
      longitude ``φ``): ``f = 2Ω (R ẑ · x)/R`` (:meth:`coriolis`; given to the
      fine, coarse and transport models by replacing the
      :class:`~meshclosure.solver.BarotropicModel` buffer ``f``, which itself
      only knows ``2Ω z/R``) and ``q*(x) = q*_0(Rᵀx)``. Seeds and the forcing
      modes are unchanged. ``config["rotation"]`` records it (a float tilt, or
      ``[θ, φ]`` when ``φ ≠ 0``); a nonzero ``rotation`` on the plane is an
      :class:`~meshclosure.errors.ArgumentError`.

    Time step: ``dt = courant Δ / (3 √(ε/μ))``; ``sample_every ≈ 0.1 / dt``.

    Resolved inputs: ``"f"`` (Coriolis parameter on the mesh).
    Out of distribution (:meth:`ood`): ``epsilon × 4`` (forcing amplitude × 2).

    Default: ``cartesian:64`` (coarse 16²); ``healpix:16`` and ``icosahedral:4``
    on the sphere. Larger: ``cartesian:256`` factor 8 (forcing at ``kf = 16``,
    a decade of inverse cascade down to ``ℓ_μ``), ``healpix:64``,
    ``icosahedral:6``. References: Boffetta & Ecke 2012,
    doi:10.1146/annurev-fluid-120710-101240 (forced 2-D turbulence);
    Frezat et al. 2022, doi:10.1029/2022MS003124 (learned closures for it).
    """

    name = "barotropic"
    variables = ("zeta", "q")
    families = ("cartesian", "healpix", "icosahedral", "cubed")
    default_mesh = "cartesian:64x64"
    family_default_mesh = {"cartesian": "cartesian:64x64", "healpix": "healpix:16",
                           "icosahedral": "icosahedral:4", "cubed": "cubed:24"}
    parameters = {
        "epsilon": 16.0, "drag": 16.0, "nu": None, "kappa": None, "omega": 2.0, "f0": 0.0,
        "forcing_band": None, "tau_forcing": 0.01, "relax_rate": 0.5, "initial_noise": 1e-2,
        "scheme": "linear", "courant": 0.4, "dt": None,
        "spinup_window": None, "spinup_tol": 0.15, "spinup_sigmas": 1.0, "spinup_batches": 10,
        "spinup_min_time": None, "spinup_check": None, "spinup_max_time": None,
        "diagnostic_every": None, "sample_every": None, "coarse_every": None,
        "coarse_transport": "poisson", "rotation": 0.0,
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
        for key, multiple in (("spinup_window", 300.0), ("spinup_min_time", 5.0),
                              ("spinup_check", 5.0), ("diagnostic_every", 0.5)):
            if p[key] is None:
                p[key] = multiple / damping
        if p["spinup_max_time"] is None:
            p["spinup_max_time"] = p["spinup_min_time"] + 2.0 * p["spinup_window"]
        if p["coarse_every"] is None:
            # coarse Courant 0.5 for a 3-sigma speed, and a coarse step no longer than the
            # forcing's correlation time (see coarse_model)
            p["coarse_every"] = max(1, min(_coarse_every(self.coarse, p["dt"], 3.0 * u),
                                           int(math.floor(p["tau_forcing"] / p["dt"] + 1e-9))))
        if p["coarse_transport"] not in ("poisson", "restrict_flux"):
            raise ValueError(f"coarse_transport must be 'poisson' (the transport the coarse "
                             f"model computes from restrict(zeta), the default) or "
                             f"'restrict_flux' (restrict_flux of the fine transport, which no "
                             f"coarse model can know online); got {p['coarse_transport']!r}.")
        if int(p["spinup_batches"]) < 3:
            raise ValueError(f"spinup_batches must be >= 3 (a trend and its standard error "
                             f"need 3 batch means); got {p['spinup_batches']!r}.")
        return p

    def _setup(self) -> None:
        p, mesh = self.params, self.fine
        syn = ModeSynthesis(mesh, p["forcing_band"], mesh.cell_center, device=mesh.device)
        lam = syn.lam
        share = np.full(len(lam), 1.0 / len(lam))
        var = share * p["epsilon"] * lam.numpy() / p["tau_forcing"]
        self._forcing_synthesis = syn
        self._forcing_blocks: Dict[int, Tensor] = {}
        self.ou = OrnsteinUhlenbeck(np.sqrt(var), p["tau_forcing"], self.dt, seed=[self.seed, 2],
                                     window=_noise_window(p) + BLOCK)
        kw = {"omega": p["omega"]} if mesh.is_sphere else {"f0": p["f0"]}
        self.base = self._rotated(BarotropicModel(mesh, drag=p["drag"], forcing=self.forcing,
                                                  scheme=p["scheme"], operators=self.operators,
                                                  **kw))
        self._model = _Augmented(self.base, mesh, {"zeta": p["nu"], "q": p["kappa"]},
                                 self._tracer_sources)

    def _forcing_sample(self, n: int) -> Tensor:
        """``F`` at the fine cells at OU sample ``n``, ``(n_fine_cells,)``: synthesised a block
        of :data:`~meshclosure.data.scenarios.base.BLOCK` samples at a time, blocks
        aligned to absolute sample indices (so independent of where a run starts)."""
        b, i = divmod(int(n), BLOCK)
        block = self._forcing_blocks.get(b)
        if block is None:
            a = torch.as_tensor(self.ou.samples(b * BLOCK, (b + 1) * BLOCK))
            block = self._forcing_synthesis(a)
            if len(self._forcing_blocks) > 1:
                self._forcing_blocks.pop(next(iter(self._forcing_blocks)))
            self._forcing_blocks[b] = block
        return block[i]

    def forcing(self, t: float, state=None) -> Tensor:
        """Vorticity forcing ``F (n_fine_cells,)`` at time ``t``: ``Σ_k a_k(t) e_k`` at the
        cells, its per-sample values (:meth:`_forcing_sample`) interpolated in time with
        :meth:`~meshclosure.data.random_flows.OrnsteinUhlenbeck.stencil` (the forcing is
        linear in the amplitudes)."""
        st = self.ou.stencil(t)
        if len(st) == 1:
            return self._forcing_sample(st[0][0]).clone()
        (n0, w0), (n1, w1) = st
        return torch.mul(self._forcing_sample(n0), w0).add_(self._forcing_sample(n1), alpha=w1)

    def _tracer_sources(self, t, state):
        return {"q": -self.params["relax_rate"] * (state["q"] - self._target(self.fine))}

    def _target(self, mesh: Mesh) -> Tensor:
        """The relaxation pattern ``q*`` at the cells of ``mesh`` (rotated by ``rotation``)."""
        return _tracer_target(mesh, self.params["rotation"])

    def _rotated(self, model: BarotropicModel) -> BarotropicModel:
        """``model`` with its Coriolis buffer ``f`` replaced by :meth:`coriolis` on its mesh
        when the scenario is rotated (:class:`~meshclosure.solver.BarotropicModel` itself
        only knows ``f = 2Ω z/R``); unchanged otherwise."""
        if self.rotation is not None:
            model.f = self.coriolis(model.mesh).to(device=model.f.device, dtype=model.f.dtype)
        return model

    def coriolis(self, mesh: Mesh) -> Tensor:
        """Coriolis parameter ``f (n_cells,)`` at the cells of ``mesh``: ``f0`` (plane),
        ``2Ω (Ω̂·x)/R`` (sphere; ``Ω̂ = R_rot ẑ``, the pole tilted by ``rotation``)."""
        store = self._cache(mesh)
        if "f" not in store:
            x = mesh.cell_center.double()
            if mesh.is_sphere and self.rotation is not None:
                pole = self.rotation[:, 2].to(x.device)
                store["f"] = 2 * self.params["omega"] * (x @ pole) / mesh.radius
            elif mesh.is_sphere:
                store["f"] = 2 * self.params["omega"] * x[:, 2] / mesh.radius
            else:
                store["f"] = torch.full((mesh.n_cells,), float(self.params["f0"]),
                                        dtype=torch.float64, device=x.device)
        return store["f"]

    def initial_state(self) -> State:
        """Seeded white-noise vorticity of rms ``initial_noise`` with its area-weighted
        mean removed (``∫ζ dA = 0``: on the closed plane and sphere the
        circulation of a non-divergent flow vanishes), and ``q = q*``."""
        rng = self._rng(3)
        noise = torch.as_tensor(rng.standard_normal(self.fine.n_cells)).to(self.fine.device)
        V = self.fine.cell_volume.double()
        noise = noise - (V * noise).sum() / V.sum()
        return {"zeta": self.params["initial_noise"] * noise,
                "q": self._target(self.fine).clone()}

    def transport(self, t, state) -> Tensor:
        return self.base.transport(state["zeta"])

    def random_forcing(self, t: float) -> Dict[str, Tensor]:
        return {"zeta": self.forcing(t)}

    def _planetary(self) -> dict:
        p = self.params
        return {"omega": p["omega"]} if self.fine.is_sphere else {"f0": p["f0"]}

    def coarse_transport(self, coarsening, t, state, transport):
        """``U_c`` of the coarse model: the transport it computes itself from the coarse
        vorticity ``restrict(ζ)`` through the coarse Poisson solve (``coarse_transport =
        "poisson"``, the default, DESIGN.md §5), so a perfect closure reproduces the
        coarse-grained truth online; or ``restrict_flux(U)`` (``"restrict_flux"``: the
        former definition, which no coarse model can know online)."""
        if self.params["coarse_transport"] == "restrict_flux":
            return coarsening.restrict_flux(transport)
        store = self._cache(coarsening.coarse)
        if "transport_model" not in store:
            store["transport_model"] = self._rotated(BarotropicModel(
                coarsening.coarse, scheme=self.params["scheme"], operators=self.operators,
                **self._planetary()))
        zeta = coarsening.restrict(state["zeta"])
        return store["transport_model"].transport(zeta).to(transport.dtype)

    def coarse_model(self, closure=None, forcing=None):
        """The coarse barotropic model (see :meth:`Scenario.coarse_model`): prognostic, its
        transport from the coarse state through the coarse Poisson solve; drag, ``ν``,
        ``κ`` and the scheme of the fine run; the vorticity forcing
        ``restrict(F(t))`` (or ``forcing``); tracer relaxation to ``restrict(q*)``.

        Its step :attr:`coarse_dt` obeys two bounds: coarse Courant number 0.5 for a
        3-sigma speed, and ``coarse_dt <= tau_forcing``. The second is measured, not
        assumed: replaying the step-mean subgrid flux and forcing from the coarse-grained
        truth (tests/data/test_coarse_models.py) beats the coarse model without closure
        by 25x after 10 steps on ``cartesian:64`` (``m = 5``, ``coarse_dt ≈ τ_F``), but on
        ``healpix:16`` only by 5x at ``m = 2`` and not at all at ``m = 5``
        (``coarse_dt ≈ 3.5 τ_F``): when the forcing decorrelates within a coarse step,
        the timing of its increments inside the step matters through the nonlinear
        advection, and no step-mean forcing can carry that."""
        self._check_closure(closure)
        c, p = self.coarsening, self.params
        F = self._coarse_forcing(forcing)
        base = self._rotated(BarotropicModel(c.coarse, drag=p["drag"],
                                             forcing=lambda t, state: F(t)["zeta"],
                                             scheme=p["scheme"], closure=closure,
                                             operators=self.operators, **self._planetary()))
        target = c.restrict(self._target(self.fine))
        rate = p["relax_rate"]
        return _Augmented(base, c.coarse, {"zeta": p["nu"], "q": p["kappa"]},
                          lambda t, state: {"q": -rate * (state["q"] - target)})

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
        """Run until E and Z are flat (criterion in the class docstring); returns ``(t, state)``.

        Sets :attr:`spinup_info`: ``converged`` (bool), ``criterion`` (in words),
        ``tolerance``, ``window``, ``batches``, ``t``, the relative trends of E
        and Z over the last window and their standard errors, the window
        means and the E/Z series. Not converged by ``spinup_max_time``: a
        ``RuntimeWarning`` and ``converged=False``.
        """
        p = self.params
        tol, sig, W = p["spinup_tol"], p["spinup_sigmas"], p["spinup_window"]
        nb = int(p["spinup_batches"])
        every = max(1, int(round(p["diagnostic_every"] / self.dt)))
        check = max(1, int(round(p["spinup_check"] / (every * self.dt))))
        times, E, Z = [0.0], [self.energy(state["zeta"])], [self.enstrophy(state["zeta"])]
        t, state = 0.0, dict(state)
        dE = dZ = {"trend": float("inf"), "se": float("inf"), "mean": float("nan")}
        converged = False
        bar = None
        if progress:
            from tqdm.auto import tqdm

            # disable=None: no bar when stderr is not a terminal (logs, CI, pipes)
            bar = tqdm(total=p["spinup_max_time"], desc=f"spin-up {self.name}", unit="time",
                       disable=None)
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
                if t >= p["spinup_min_time"] + W - 1e-9 and k % check == 0:
                    dE, dZ = (self.drift(times, y, W, nb) for y in (E, Z))
                    if all(self.is_flat(d, tol, sig) for d in (dE, dZ)):
                        converged = True
                        break
        finally:
            if bar is not None:
                bar.close()
        if not converged and t >= W - 1e-9:
            dE, dZ = (self.drift(times, y, W, nb) for y in (E, Z))
        criterion = (f"over the last {W:.6g} time units (window) cut into {nb} batches, for "
                     f"energy and enstrophy: trend + {sig:g} se <= {tol} and 2 se <= {tol}, "
                     f"trend = |slope of the batch means| * window / mean, se its standard "
                     f"error")
        if not converged:
            warnings.warn(f"barotropic spin-up did not reach equilibrium by t={t:.4g} "
                          f"(spinup_max_time): criterion {criterion}; measured relative trend "
                          f"E {dE['trend']:.3g} ± {dE['se']:.3g}, Z {dZ['trend']:.3g} ± "
                          f"{dZ['se']:.3g}. Raise spinup_max_time, use a larger mesh, or "
                          "loosen spinup_tol.", RuntimeWarning, stacklevel=2)
        window = np.asarray(times) > t - W + 1e-9
        self.spinup_info = {
            "t": t, "n_steps": int(round(t / self.dt)), "converged": converged,
            "criterion": criterion, "tolerance": tol, "sigmas": sig, "window": W,
            "batches": nb, "min_time": p["spinup_min_time"], "max_time": p["spinup_max_time"],
            "energy_trend": dE["trend"], "energy_trend_se": dE["se"],
            "enstrophy_trend": dZ["trend"], "enstrophy_trend_se": dZ["se"],
            "energy": float(np.mean(np.asarray(E)[window])),
            "enstrophy": float(np.mean(np.asarray(Z)[window])),
            "times": list(times), "energy_series": list(E), "enstrophy_series": list(Z),
        }
        return t, state

    @staticmethod
    def is_flat(drift: Mapping[str, float], tol: float, sigmas: float = 1.0) -> bool:
        """The equilibrium test on one :meth:`drift` result:
        ``trend + sigmas·se <= tol`` (no drift beyond ``tol``, even at its upper
        bound) and ``2·se <= tol`` (measured precisely enough to have seen one).

        >>> BarotropicScenario.is_flat({"trend": 0.05, "se": 0.04}, tol=0.15)
        True
        >>> BarotropicScenario.is_flat({"trend": 0.05, "se": 0.1}, tol=0.15)   # too noisy
        False
        """
        return bool(drift["trend"] + sigmas * drift["se"] <= tol and 2.0 * drift["se"] <= tol)

    @staticmethod
    def drift(times, values, window: float, batches: int = 10) -> Dict[str, float]:
        """Relative drift of a series over its last ``window``, with its standard error.

        The samples with ``t > t_last − window`` are cut into ``batches``
        equal-time batches; a straight line is fitted to the batch means
        ``y_b`` at the batch centres; ``trend = |slope| · window / mean`` (the
        relative change across the window) and ``se`` is its standard error
        from the residuals (``batches − 2`` degrees of freedom), valid when
        a batch is longer than the correlation time of the series.

        Parameters
        ----------
        times, values : sequence of float, shape (n_samples,)
            Increasing sample times and the series.
        window : float
            Length of the trailing window (time units).
        batches : int
            Number of batches (>= 3).

        Returns
        -------
        dict
            ``trend``, ``se`` (relative, dimensionless) and ``mean`` (window
            mean of the batch means); ``trend = se = inf`` when the window is
            not covered (an empty batch).

        Examples
        --------
        >>> t = np.linspace(0, 10, 1001)
        >>> d = BarotropicScenario.drift(t, 1 + 0.02 * t, window=10.0, batches=10)
        >>> round(d["trend"], 2), d["se"] < 1e-3         # +20 % over the window, mean 1.1
        (0.18, True)
        """
        tt, yy = np.asarray(times, dtype=float), np.asarray(values, dtype=float)
        nb = int(batches)
        sel = tt > tt[-1] - window + 1e-9 * max(window, 1.0)
        batch = np.minimum(((tt[sel] - (tt[-1] - window)) / window * nb).astype(int), nb - 1)
        counts = np.bincount(batch, minlength=nb)
        if nb < 3 or np.any(counts == 0):
            return {"trend": float("inf"), "se": float("inf"), "mean": float("nan")}
        x = (np.arange(nb) + 0.5) * window / nb
        x = x - x.mean()
        y = np.bincount(batch, yy[sel], nb) / counts
        slope, icpt = np.polyfit(x, y, 1)
        res = y - (slope * x + icpt)
        se = math.sqrt((res * res).sum() / (nb - 2) / (x * x).sum())
        scale = max(abs(float(y.mean())), 1e-300)
        return {"trend": float(abs(slope) * window / scale), "se": float(se * window / scale),
                "mean": float(y.mean())}



# ----------------------------------------------------------------------------- convection
