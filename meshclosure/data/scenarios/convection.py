"""The ``convection`` scenario: a heated Boussinesq slice averaged onto a column."""
from __future__ import annotations

import math
from typing import Mapping, Tuple

import numpy as np
import torch
from torch import Tensor

from ...mesh import Coarsening
from ...mesh import Mesh
from ...mesh.coarsening import column_parent
from ...solver import BoussinesqModel, TracerModel
from .base import Scenario, State, _Augmented, _coarse_every, _dx

__all__ = ["ConvectionScenario"]


class ConvectionScenario(Scenario):
    r"""Boussinesq convection in an x–z slice, heated from below, averaged onto a column.

    Equations (non-dimensional; ``x ∈ [0, lx)`` periodic, ``z ∈ [0, H]`` walls;
    :class:`~meshclosure.solver.BoussinesqModel`)::

        ∂t ζ + ∇·(u ζ) = ν ∇²ζ + ∂b/∂x,        ∇²ψ = ζ,  ψ = 0 on the walls
        ∂t b + ∇·(u b) = κ ∇²b − r (b̄(z) − b_r(z)),
        −κ ∂b/∂z = B at z = 0,  −κ ∂b/∂z = −κ N2 at z = H

    * Surface buoyancy flux ``B = buoyancy_flux`` enters through the bottom
      faces as the prescribed outward boundary flux ``−B A_f``; the top lid
      conducts the reference stratification's diffusive flux (outward
      ``−κ N2 A_f``, tiny: ``κ N2 ≈ 0.1 B`` at the defaults), so without
      relaxation the total buoyancy grows exactly as ``(B + κ N2) lx t``.
    * Reference profile ``b_r = N2 max(z − h0, 0)`` (``N2 = stratification``,
      ``h0 = mixed_layer``). The horizontal mean ``b̄(z)`` (over the fine
      level of the cell) is relaxed to it at the rate ``r = relax_rate``
      (default 0.2, i.e. 5 time units ≈ 2.5 convective turnovers ``h/w*``)
      over the whole depth: a large-scale cooling (as radiative cooling plus
      subsidence warming in a convective boundary layer) that removes the
      surface heating and restores the stratification eroded by
      entrainment, while the eddies ``b − b̄`` are not damped. Without it the
      mixed layer would deepen as ``h² ≈ h0² + 2Bt/N2`` until the box is
      fully mixed and no ``N²`` signal is left. With it the column reaches a
      statistically steady state; encroachment balance
      ``B = r N2 (h² − h0²)/2`` estimates the mixed-layer depth
      ``h_e = √(h0² + 2B/(r N2))`` (0.40 at the defaults, 0.51 for the OOD
      ``B × 2``; entrainment adds a little), with the stable layer above it
      kept at ``N² ≈ N2``.
      The source is ``S_b = −r (b̄ − b_r)`` (:meth:`sources`), constant along a
      level and linear in ``b``: its coarse-graining onto the column is exact
      (``restrict(S(b)) = S(restrict b)`` when ``h0`` is a column-cell edge,
      as at the defaults), so the coarse column model applies the same term.
    * Initial state (already near the steady state, so that the spin-up is
      short): ``b = max(N2 (h_e − h0), b_r(z))`` (a mixed layer of depth
      ``h_e``) plus seeded uniform noise of amplitude ``noise`` (default the
      convective buoyancy scale ``b* = B/w*``: developed-turbulence size)
      below ``h_e``; ``ζ = 0``. Convection sets in within a few time units.
    * ``ν = κ`` (default ``0.15 w* Δ``, ``w* = (B H)^{1/3}``).
    * Coarsening: the horizontal average onto the column (the parent of a
      cell is its level), with ``factor`` fine levels per column cell
      (``factor=1``: the fine levels). On the column ``restrict_flux(U) = 0``
      through every level, so ``Φ^sgs_b = lx · (⟨w b⟩ − ⟨w⟩⟨b⟩)`` plus the
      diffusive difference: the vertical eddy buoyancy flux ``\overline{w'b'}``
      integrated over the level.

    Time step: ``dt = min(courant Δ / (3 w*), 0.2 / N, 0.2 Δ² / ν)`` (advection,
    buoyancy oscillations, diffusion); ``spinup_time`` (default ``10 + 3/r`` =
    25: the onset of convection from the noise, whose kinetic energy reaches
    its plateau by ``t ≈ 11`` at the defaults, then three relaxation times
    (≈ 8 turnovers ``h/w*``) for the profile to settle; a fixed time, so
    :attr:`spinup_info` says ``"converged": None`` and records the
    mixed-layer depth and kinetic energy over the spin-up);
    ``sample_every ≈ 0.25 / dt``. Long runs stay statistically steady: the
    mixed-layer depth keeps fluctuating about its mean without drift and
    ``N² ≈ N2`` in the upper quarter (tested).

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
        "relax_rate": 0.2, "noise": None, "nu": None, "kappa": None, "scheme": "linear",
        "courant": 0.4, "dt": None, "spinup_time": None, "sample_every": None,
        "coarse_every": None,
    }
    ood_change = {"buoyancy_flux": lambda v: 2.0 * v}

    def _build_mesh(self, spec: str):
        from ...mesh import cartesian

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

    def __init__(self, mesh=None, factor=4, seed=0, *, device=None, **config):
        # _build_mesh runs before the parameters are merged and needs the height
        self._pending_height = config.get("height", self.parameters["height"])
        super().__init__(mesh=mesh, factor=factor, seed=seed, device=device, **config)

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
        if not (math.isfinite(p["relax_rate"]) and p["relax_rate"] >= 0):
            raise ValueError(f"relax_rate must be a finite rate >= 0 (1/time); got "
                             f"{p['relax_rate']!r}. The default is 0.2.")
        if p["coarse_every"] is None:     # coarse Courant 0.5 for a 3 w* convective speed
            p["coarse_every"] = _coarse_every(self.coarse, p["dt"], 3.0 * max(wstar, 1e-12))
        if p["noise"] is None:
            p["noise"] = abs(p["buoyancy_flux"]) / max(wstar, 1e-12)       # b* = B / w*
        if p["spinup_time"] is None:
            p["spinup_time"] = 10.0 + (3.0 / p["relax_rate"] if p["relax_rate"] > 0 else 0.0)
        return p

    def equilibrium_depth(self) -> float:
        """Encroachment estimate of the steady mixed-layer depth
        ``h_e = √(h0² + 2B/(r N2))`` (``h0`` when ``r = 0``; at most ``0.9 H``)."""
        p = self.params
        h0, H = p["mixed_layer"], p["height"]
        if p["relax_rate"] <= 0 or p["stratification"] <= 0:
            return float(h0)
        h = math.sqrt(h0 * h0 + 2 * abs(p["buoyancy_flux"]) / (p["relax_rate"]
                                                               * p["stratification"]))
        return float(min(h, 0.9 * H))

    def reference_profile(self, mesh: Mesh) -> Tensor:
        """``b_r = N2 max(z − h0, 0)`` at the cells of ``mesh`` ``(n_cells,)`` (cached)."""
        store = self._cache(mesh)
        if "b_r" not in store:
            z = mesh.cell_center[:, 1].double()
            p = self.params
            store["b_r"] = p["stratification"] * torch.clamp(z - p["mixed_layer"], min=0.0)
        return store["b_r"]

    def _level_mean(self, b: Tensor) -> Tensor:
        """Horizontal mean of ``b`` over each fine level, at every fine cell ``(n_cells,)``."""
        store = self._cache(self.fine)
        if "fine_column" not in store:
            store["fine_column"] = Coarsening(self.fine, column_parent(self.fine))
        col = store["fine_column"]
        return col.restrict(b)[col.parent]

    def _relaxation(self, t: float, state: Mapping[str, Tensor]) -> State:
        r = self.params["relax_rate"]
        b = state["b"]
        if r == 0:
            return {"b": torch.zeros_like(b)}
        return {"b": -r * (self._level_mean(b) - self.reference_profile(self.fine).to(b.dtype))}

    def _setup(self) -> None:
        p, mesh = self.params, self.fine
        self.base = BoussinesqModel(mesh, buoyancy_flux=self._bottom_flux(mesh),
                                    scheme=p["scheme"], operators=self.operators)
        self._model = _Augmented(self.base, mesh, {"zeta": p["nu"], "b": p["kappa"]},
                                 self._relaxation)

    def _bottom_flux(self, mesh: Mesh) -> Tensor:
        """Prescribed outward wall fluxes ``(n_boundary_faces,)``: ``−B A`` at the bottom
        (heating) and ``−κ N2 A`` at the top (the lid conducts the diffusive flux
        of the reference stratification, so ``b_r`` is a steady state of the
        diffusion there: no spurious well-mixed layer under an insulating lid)."""
        store = self._cache(mesh)
        if "bflux" not in store:
            p = self.params
            names = list(mesh.boundary_tag_names)
            bottom = names.index("south") if "south" in names else names.index("bottom")
            top = names.index("north") if "north" in names else names.index("top")
            area = mesh.boundary_face_area.double()
            tag = mesh.boundary_face_tag
            flux = torch.where(tag == bottom, -p["buoyancy_flux"] * area, torch.zeros_like(area))
            store["bflux"] = torch.where(tag == top, -p["kappa"] * p["stratification"] * area,
                                         flux)
        return store["bflux"]

    def initial_state(self) -> State:
        """A mixed layer of depth :meth:`equilibrium_depth` over ``b_r``, seeded noise of
        amplitude ``noise`` in it, ``ζ = 0`` (class docstring)."""
        p = self.params
        z = self.fine.cell_center[:, 1].double()
        rng = self._rng(4)
        noise = torch.as_tensor(rng.uniform(-1.0, 1.0, self.fine.n_cells)).to(z.device)
        h = self.equilibrium_depth()
        b_mixed = p["stratification"] * max(h - p["mixed_layer"], 0.0)
        b = torch.clamp(self.reference_profile(self.fine), min=b_mixed)
        b = b + p["noise"] * noise * (z < h)
        return {"zeta": torch.zeros(self.fine.n_cells, dtype=torch.float64, device=z.device),
                "b": b}

    def spin_up(self, state, progress: bool = False):
        """Run ``spinup_time`` (a fixed time: ``"converged": None``), recording the
        mixed-layer depth and kinetic energy every ``spinup_time / 20`` in
        :attr:`spinup_info` (``times``, ``mixed_layer_series``, ``ke_series``)."""
        n = int(round(self.params["spinup_time"] / self.dt))
        chunks = np.diff(np.linspace(0, n, 21).round().astype(int))
        t, state = 0.0, dict(state)
        times, depth, ke = [0.0], [self.mixed_layer_depth(state)], [self.kinetic_energy(state)]
        for m in chunks:
            t, state = self.advance(t, state, int(m), progress=progress)
            times.append(t)
            depth.append(self.mixed_layer_depth(state))
            ke.append(self.kinetic_energy(state))
        self.spinup_info = {"t": t, "n_steps": n, "converged": None,
                            "criterion": "fixed spin-up time (not checked)",
                            "equilibrium_depth_estimate": self.equilibrium_depth(),
                            "times": times, "mixed_layer_series": depth, "ke_series": ke}
        return t, state

    def kinetic_energy(self, state: Mapping[str, Tensor]) -> float:
        """Kinetic energy per unit area ``½⟨|u|²⟩ = −½⟨ψζ⟩`` (``ψ = 0`` on the walls)."""
        return float(self.base.energy(state["zeta"]))

    def transport(self, t, state) -> Tensor:
        return self.base.transport(state["zeta"])

    def coarse_transport(self, coarsening, t, state, transport):
        """``U_c = 0`` on the column: a column model has no resolved vertical transport
        (the horizontal mean of ``w`` vanishes on every level of the periodic slice, so
        ``restrict_flux(U)`` is zero up to rounding); on a coarse slice, ``restrict_flux(U)``."""
        if self._is_column(coarsening.coarse):
            return torch.zeros(coarsening.coarse.n_faces, dtype=transport.dtype,
                               device=transport.device)
        return coarsening.restrict_flux(transport)

    def _is_column(self, mesh: Mesh) -> bool:
        return mesh.n_cells == self.fine.info["ny"] // self.factor and mesh.n_cells < \
            self.fine.n_cells

    def coarse_model(self, closure=None, forcing=None):
        """The single-column model (see :meth:`Scenario.coarse_model`): buoyancy ``b`` on the
        column, diffusivity ``κ``, the prescribed wall fluxes (surface heating ``B``, the
        lid's conduction), relaxation to ``restrict(b_r)``, no resolved transport, and
        ``closure``'s vertical fluxes (the convective transport it must supply)."""
        self._check_closure(closure)
        c, p = self.coarsening, self.params
        if not self._is_column(c.coarse):
            raise ValueError("coarse_model is the single-column model; this scenario's coarse "
                             f"mesh {c.coarse!r} is not a column.")
        zero = torch.zeros(c.coarse.n_faces, dtype=torch.float64, device=c.coarse.device)
        base = TracerModel(c.coarse, zero, scheme=p["scheme"], closure=closure, var="b",
                           operators=self.operators,
                           boundary_flux=self._bottom_flux(c.coarse),
                           relaxation=(p["relax_rate"], c.restrict(self.reference_profile(
                               self.fine))))
        return _Augmented(base, c.coarse, {"b": p["kappa"]})

    def resolved_fluxes(self, mesh, t, state, transport):
        self._check_state(mesh, state, ("b",))
        return {"b": self._flux(mesh, state["b"], transport, self.params["kappa"])}

    def boundary_fluxes(self, mesh, t, state):
        return {"b": self._bottom_flux(mesh)}

    def sources(self, t, state):
        """``S_b = −r (b̄(z) − b_r(z))`` ``(n_fine_cells,)``: the relaxation of each fine
        level's mean buoyancy (local along the level, not cell by cell)."""
        return self._relaxation(t, state)

    def resolved_inputs(self, mesh, t, state, transport):
        return {"N2": self.vertical_derivative(mesh, state["b"])}

    def vertical_derivative(self, mesh: Mesh, b: Tensor) -> Tensor:
        """``∂b/∂z (n_cells,)``: differences across horizontal faces, averaged to cells."""
        store = self._cache(mesh)
        if "vertical" not in store:
            nz = mesh.face_normal[:, 1].double()
            horizontal = nz.abs() > 0.5
            count = torch.zeros(mesh.n_cells, dtype=torch.float64, device=mesh.device)
            for row in mesh.face_cells:
                count = count.index_add(0, row[horizontal], torch.ones(
                    int(horizontal.sum()), dtype=torch.float64, device=mesh.device))
            store["vertical"] = (horizontal, torch.sign(nz) / mesh.cell_distance.double(),
                                 count.clamp_min(1.0))
        horizontal, scale, count = store["vertical"]
        a, c = mesh.face_cells[0], mesh.face_cells[1]
        g = torch.where(horizontal, (b[c] - b[a]) * scale.to(b.dtype), torch.zeros_like(scale))
        out = torch.zeros(mesh.n_cells, dtype=b.dtype, device=b.device).index_add(0, a, g) \
            .index_add(0, c, g)
        return out / count.to(b.dtype)

    def column_profile(self, state: Mapping[str, Tensor]) -> Tuple[Tensor, Tensor]:
        """Column heights ``z (n_coarse,)`` and horizontally averaged buoyancy ``b̄``."""
        return self.coarse.cell_center[:, 1].double(), self.coarsening.restrict(state["b"])

    def mixed_layer_depth(self, state: Mapping[str, Tensor]) -> float:
        """Top of the convective layer: the lowest fine-level height from which the
        horizontal-mean ``N²`` exceeds half the stratification ``N2`` at every
        level up to the lid (a stable bump inside the convective layer does not
        count); ``H`` when the top level itself is not stable."""
        store = self._cache(self.fine)
        if "fine_column" not in store:
            store["fine_column"] = Coarsening(self.fine, column_parent(self.fine))
        col = store["fine_column"]
        n2 = self.vertical_derivative(col.coarse, col.restrict(state["b"]))
        z = col.coarse.cell_center[:, 1].double()
        unstable = torch.nonzero(n2 <= 0.5 * self.params["stratification"]).flatten()
        if len(unstable) == 0:
            return float(z[0])
        last = int(unstable[-1])
        return float(z[last + 1]) if last + 1 < len(z) else float(self.params["height"])


# ------------------------------------------------------------------------------ registry
