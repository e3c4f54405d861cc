"""Barotropic vorticity equation, and its 2-D Boussinesq cousin in an x–z slice.

Barotropic vorticity (DESIGN.md §6), on the sphere or the plane::

    ∂t ζ + ∇·(u (ζ + f)) = ν∇²ζ − μζ + F,      ∇²ψ = ζ,      u = k × ∇ψ

discretised in flux form on any :class:`~meshclosure.mesh.Mesh` ::

    dζ_i/dt = −div(U (ζ + f)|_f + Φ^visc + Φ^closure + Φ^noise)_i − μ ζ_i + F_i

with ``ψ`` solved at cells by :class:`~meshclosure.fv.poisson.PoissonSolver` (FFTs on
periodic Cartesian grids and slices, SuperLU on the CPU or a dense inverse on CUDA
otherwise: one exact linear map), interpolated to vertices, and
``U_f = ψ(v0) − ψ(v1)`` (exactly non-divergent).
Because ``∇·u = 0``, ``∇·(u f) = u·∇f``: the planetary vorticity is advected
with the relative one, which keeps ``Σ V ζ`` exact to rounding. Coriolis:
``f = 2Ω sin(lat)`` on the sphere; ``f = f0 + β (y − y0)`` on the plane.

Passive tracers in ``state`` (any key other than ``"zeta"``) are carried by
the same transports, with diffusivity ``kappa``.

Boussinesq slice (:class:`BoussinesqModel`): in an x–z slice (``y`` of the
mesh is height ``z``; periodic in x, walls at bottom and top) the buoyancy
``b`` is a prognostic tracer, and vorticity ``ζ = ∂w/∂x − ∂u/∂z = ∇²ψ``
(``u = −∂ψ/∂z``, ``w = ∂ψ/∂x``) is driven by its horizontal gradient::

    ∂t ζ + ∇·(u ζ) = ν∇²ζ + ∂b/∂x,      ∂t b + ∇·(u b) = κ∇²b  (+ boundary buoyancy flux)

References: Williamson et al. 1992 (Rossby–Haurwitz wave, test 6),
doi:10.1016/S0021-9991(05)80016-6; Haurwitz 1940, J. Mar. Res. 3, 254–267.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Mapping, Optional, Union

import torch
from torch import Tensor

from .._cache import per_mesh
from .._checks import check_float as _check_float
from .._checks import check_rows as _check_rows
from .._sparse import csr, sparse_ok
from ..fv.advection import cfl_dt, linear_flux, quadratic_flux, upwind_flux
from ..fv.gradients import gradient, least_squares
from ..fv.diffusion import check_coefficient, diffusive_flux
from ..fv.operators import divergence, transport_from_streamfunction
from ..fv.poisson import PoissonSolver, vertex_streamfunction
from ..fv.versions import check_operators
from ..mesh import Mesh
from ._closure import (Closure, ClosureCalls, NonFinitePart, add_flux_noise, check_flux_noise,
                       closure_fluxes, first_nonfinite, recorded_or_fresh)

__all__ = ["BarotropicModel", "BoussinesqModel", "EARTH_OMEGA", "EARTH_RADIUS"]

EARTH_OMEGA = 7.292e-5
"""Earth's rotation rate (1/s), as in Williamson et al. 1992."""
EARTH_RADIUS = 6.37122e6
"""Earth's radius (m), as in Williamson et al. 1992."""


def _x_gradient(mesh: Mesh, q: Tensor, operators: Optional[str] = None) -> Tensor:
    """``∂q/∂x (n_cells,)``: the x row of :func:`~meshclosure.fv.gradients.gradient`
    (least squares of operator version ``operators``, the same differences
    ``q_j − q_i`` and weights) as one cached sparse product; equal to
    ``gradient(mesh, q, operators=operators)[:, 0]`` to rounding."""
    operators = check_operators(operators)
    if not sparse_ok(q):
        return gradient(mesh, q, operators=operators)[:, 0]

    def build():
        lsq = least_squares(mesh, operators)
        coef = lsq.coefficients(False, q.dtype, q.device)[:, 0]
        cell, nb = lsq.cell.to(q.device), lsq.neighbour.to(q.device)
        rows = torch.arange(len(cell), device=q.device)
        return cell, nb, csr(cell, rows, coef, (mesh.n_cells, len(cell)))

    cell, nb, mat = per_mesh(mesh, ("solver.barotropic.x_gradient", operators, q.dtype,
                                    str(q.device)), build)
    return mat @ (q[nb] - q[cell])


def _is_zero(x) -> bool:
    return isinstance(x, (int, float)) and x == 0


class BarotropicModel(torch.nn.Module):
    """Forced–dissipative barotropic vorticity right-hand side on a mesh.

    Parameters
    ----------
    mesh : Mesh
        Sphere (closed) or plane (doubly periodic, or bounded: walls, ψ = 0).
    omega : float
        Rotation rate Ω on the sphere (1/time): ``f = 2Ω sin(lat)``.
    f0, beta, y0 : float
        Plane only: ``f = f0 + β (y − y0)`` (f-plane when ``beta = 0``).
    nu : float or Tensor (n_faces,)
        Viscosity ν (length²/time), finite and ``>= 0`` at every face.
    drag : float
        Linear drag μ (1/time).
    forcing : Tensor (n_cells,) or callable ``(t, state) -> Tensor``, optional
        Vorticity forcing F (1/time²).
    kappa : float or Tensor (n_faces,)
        Diffusivity of the passive tracers, finite and ``>= 0`` at every face.
    scheme : {"linear", "limited", "upwind", "quadratic"}
        Advection scheme for vorticity and tracers (see
        :class:`~meshclosure.solver.TracerModel`).
    closure : callable ``(t, state, mesh) -> dict var -> (n_faces,)``, optional
        Subgrid face fluxes per prognostic variable (keys of the state: ``"zeta"``
        and the passive tracers), added before the divergence; other keys, a
        bare tensor, a wrong shape, dtype or device raise
        :class:`~meshclosure.solver.ClosureError`.
    flux_noise : float or Tensor (n_faces,)
        Std of Gaussian face-flux noise on every variable (conservative).
    generator : torch.Generator, optional
    operators : str, optional
        Operator version of the reconstruction stencils and gradients
        (:mod:`meshclosure.fv.versions`; default the current one). ``"fv1"``
        reproduces data made before the vertex stencils. Stored, checked, as
        ``self.operators``.

    Examples
    --------
    >>> import torch
    >>> from meshclosure.mesh import healpix
    >>> mesh = healpix(4)
    >>> model = BarotropicModel(mesh, omega=1.0)
    >>> zeta = torch.randn(mesh.n_cells, dtype=torch.float64)
    >>> tend = model.rhs(0.0, {"zeta": zeta})["zeta"]
    >>> abs(float((mesh.cell_volume * tend).sum())) < 1e-12
    True
    >>> BarotropicModel(mesh, drag=-1.0)
    Traceback (most recent call last):
    ...
    ValueError: drag must be a finite number >= 0; got -1.0. ...
    """

    def __init__(self, mesh: Mesh, omega: float = 0.0, f0: float = 0.0, beta: float = 0.0,
                 y0: Optional[float] = None, nu: Union[float, Tensor] = 0.0, drag: float = 0.0,
                 forcing: Union[Tensor, Callable, None] = None,
                 kappa: Union[float, Tensor] = 0.0,
                 scheme: str = "linear", closure: Optional[Closure] = None,
                 flux_noise: Union[float, Tensor] = 0.0,
                 generator: Optional[torch.Generator] = None,
                 operators: Optional[str] = None) -> None:
        super().__init__()
        if not isinstance(mesh, Mesh) or (mesh.dim != 2 and not mesh.is_sphere):
            raise TypeError("mesh must be a 2-D meshclosure Mesh (plane or sphere); got "
                            f"{mesh!r}.")
        for name, value in (("omega", omega), ("f0", f0), ("beta", beta)):
            if not (isinstance(value, (int, float)) and math.isfinite(value)):
                raise ValueError(f"{name} must be a finite number; got {value!r}.")
        if not (isinstance(drag, (int, float)) and math.isfinite(drag) and drag >= 0):
            raise ValueError(f"drag must be a finite number >= 0; got {drag!r}. "
                             "Use 0 to switch the term off.")
        nu = check_coefficient(nu, mesh.n_faces, "nu", what="viscosity")
        kappa = check_coefficient(kappa, mesh.n_faces, "kappa", what="diffusivity")
        flux_noise = check_flux_noise(flux_noise, mesh.n_faces)
        if closure is not None and not callable(closure):
            raise TypeError(f"closure must be a callable (t, state, mesh) -> dict of face "
                            f"fluxes; got {type(closure).__name__}.")
        if scheme not in ("linear", "limited", "upwind", "quadratic"):
            raise ValueError(f"scheme must be 'linear', 'limited', 'upwind' or 'quadratic'; got "
                             f"{scheme!r}.")
        if beta and mesh.period is not None and mesh.period[1]:
            raise ValueError(f"beta={beta!r} needs walls in y: f = f0 + β y is not periodic, so a "
                             "mesh periodic in y would see a jump in f at the seam. Use "
                             "cartesian(nx, ny, lx, ly, periodic=(True, False)) (a β-channel).")
        if mesh.is_sphere and (f0 or beta):
            raise ValueError("f0/beta are for planar meshes; on the sphere f = 2Ω sin(lat): "
                             "pass omega instead.")
        self.mesh, self.nu, self.drag, self.kappa = mesh, nu, drag, kappa
        self.forcing, self.scheme, self.closure = forcing, scheme, closure
        self.flux_noise, self.generator = flux_noise, generator
        self.operators = check_operators(operators)
        self._closure_calls = ClosureCalls()
        self.poisson = PoissonSolver(mesh)
        x = mesh.cell_center
        if mesh.is_sphere:
            self.register_buffer("f", 2 * omega * x[:, 2] / mesh.radius)
        else:
            y = x[:, 1]
            y0 = float(y.mean()) if y0 is None else y0
            self.register_buffer("f", f0 + beta * (y - y0))

    # ----------------------------------------------------------------- pieces
    def streamfunction(self, zeta: Tensor) -> Tensor:
        """Cell streamfunction ``ψ (n_cells,)`` with ``∇²ψ = ζ`` (zero mean, or ψ = 0 on walls)."""
        return self.poisson(zeta)

    def transport(self, zeta: Tensor) -> Tensor:
        """Integrated, exactly non-divergent face transports ``U (n_faces,)``."""
        psi_v = vertex_streamfunction(self.mesh, self.streamfunction(zeta))
        return transport_from_streamfunction(self.mesh, psi_v)

    def _advect(self, q: Tensor, U: Tensor) -> Tensor:
        if self.scheme == "upwind":
            return upwind_flux(self.mesh, q, U)
        if self.scheme == "quadratic":
            return quadratic_flux(self.mesh, q, U, operators=self.operators)
        return linear_flux(self.mesh, q, U,
                           limiter="barth_jespersen" if self.scheme == "limited" else None,
                           operators=self.operators)

    def _variables(self, state: Mapping[str, Tensor]) -> list:
        return ["zeta"] + [k for k in state if k != "zeta"]

    def _finish(self, flux: Tensor, extra: Mapping[str, Tensor], name: str) -> Tensor:
        """Resolved flux plus the closure's flux and the noise for ``name`` (one rule for all)."""
        if name in extra:
            flux = flux + extra[name]
        return add_flux_noise(flux, self.flux_noise, tuple(flux.shape), flux, self.generator)

    def rhs(self, t: float, state: Mapping[str, Tensor]) -> Dict[str, Tensor]:
        """Tendencies of ``"zeta"`` and every passive tracer in ``state``."""
        if "zeta" not in state:
            raise KeyError(f"state needs 'zeta' (relative vorticity); got keys {sorted(state)}.")
        zeta = state["zeta"]
        if zeta.shape != (self.mesh.n_cells,):
            raise ValueError(f"state['zeta'] must have shape (n_cells,) = ({self.mesh.n_cells},); "
                             f"got {tuple(zeta.shape)}.")
        for name, q in state.items():
            _check_float(f"state[{name!r}]", q)
        U = self.transport(zeta)
        extra = closure_fluxes(self.closure, t, state, self.mesh, self._variables(state),
                               "the state's keys are the model's variables", self._closure_calls,
                               transport=U)
        f = self.f.to(zeta.dtype)
        flux = self._advect(zeta + f, U)
        if not _is_zero(self.nu):
            flux = flux + diffusive_flux(self.mesh, zeta, self.nu)
        flux = self._finish(flux, extra, "zeta")
        out = {"zeta": -divergence(self.mesh, flux)}
        if not _is_zero(self.drag):
            out["zeta"] = out["zeta"] - self.drag * zeta
        if self.forcing is not None:
            out["zeta"] = out["zeta"] + (self.forcing(t, state) if callable(self.forcing)
                                         else self.forcing)
        for name, q in state.items():
            if name == "zeta":
                continue
            tflux = self._advect(q, U)
            if not _is_zero(self.kappa):
                tflux = tflux + diffusive_flux(self.mesh, q, self.kappa)
            tflux = self._finish(tflux, extra, name)
            out[name] = -divergence(self.mesh, tflux)
        return out

    def _parts(self, t: float, state: Mapping[str, Tensor]) -> list:
        forcing = self.forcing
        return [
            ("transport", None, "faces", lambda: self.transport(state["zeta"])),
            ("closure", None, "faces",
             lambda: recorded_or_fresh(self.closure, self._closure_calls, t, state, self.mesh,
                                       self._variables(state))),
            ("forcing", "zeta", "cells",
             lambda: forcing(t, state) if callable(forcing) else forcing),
        ]

    def diagnose(self, t: float, state: Mapping[str, Tensor]) -> Optional[NonFinitePart]:
        """The first part of :meth:`rhs` that is not finite at ``(t, state)``, or ``None``.

        Re-evaluates the transport (from the Poisson solve), the closure (its
        recorded output for this exact call when there is one), the
        forcing (and, for :class:`BoussinesqModel`, the boundary buoyancy
        flux), without drawing noise. :func:`~meshclosure.solver.integrate`
        calls it when a step turns the state non-finite; ``None`` means every
        part was finite, so the step itself produced the non-finite value.
        """
        return first_nonfinite(self._parts(t, state))

    forward = rhs

    def cfl_dt(self, zeta: Tensor, courant: float = 0.5) -> float:
        """Advective time step for the current flow at outflow Courant number ``courant``."""
        return cfl_dt(self.mesh, self.transport(zeta), courant)

    def energy(self, zeta: Tensor) -> Tensor:
        """Kinetic energy per unit area ``−½ ⟨ψ ζ⟩`` (area-weighted mean)."""
        V = self.mesh.cell_volume.to(zeta.dtype)
        return -0.5 * (V * self.streamfunction(zeta) * zeta).sum() / V.sum()

    def enstrophy(self, zeta: Tensor) -> Tensor:
        """Enstrophy per unit area ``½ ⟨ζ²⟩``."""
        V = self.mesh.cell_volume.to(zeta.dtype)
        return 0.5 * (V * zeta**2).sum() / V.sum()


class BoussinesqModel(BarotropicModel):
    """2-D Boussinesq convection in a vertical x–z slice (periodic x, walls in z).

    State: ``"zeta"`` (vorticity, 1/time) and ``"b"`` (buoyancy, length/time²);
    other keys are passive tracers.

    Parameters
    ----------
    mesh : Mesh
        ``cartesian(nx, nz, lx, lz, periodic=(True, False))``: mesh ``y`` is height.
    nu, kappa : float or Tensor (n_faces,)
        Viscosity and buoyancy diffusivity (length²/time), finite and ``>= 0``.
    buoyancy_flux : Tensor (n_boundary_faces,) or callable ``t -> Tensor``, optional
        Prescribed integrated OUTWARD buoyancy flux through the boundary faces
        (e.g. ``−B · A_b`` at the bottom heats from below); walls elsewhere.
    scheme, closure, flux_noise, generator, operators
        As in :class:`BarotropicModel`.
    """

    def __init__(self, mesh: Mesh, nu: Union[float, Tensor] = 0.0,
                 kappa: Union[float, Tensor] = 0.0,
                 buoyancy_flux: Union[Tensor, Callable, None] = None, scheme: str = "linear",
                 closure: Optional[Closure] = None, flux_noise: Union[float, Tensor] = 0.0,
                 generator: Optional[torch.Generator] = None,
                 operators: Optional[str] = None) -> None:
        if not isinstance(mesh, Mesh) or mesh.is_sphere or mesh.n_boundary_faces == 0:
            raise ValueError("BoussinesqModel needs a vertical slice with walls at bottom and top, "
                             "e.g. cartesian(nx, nz, lx, lz, periodic=(True, False)).")
        super().__init__(mesh, nu=nu, kappa=kappa, scheme=scheme, closure=closure,
                         flux_noise=flux_noise, generator=generator, operators=operators)
        self.buoyancy_flux = buoyancy_flux

    def _parts(self, t: float, state: Mapping[str, Tensor]) -> list:
        flux = self.buoyancy_flux
        return super()._parts(t, state) + [
            ("boundary_flux", "b", "boundary faces", lambda: flux(t) if callable(flux) else flux)]

    def rhs(self, t: float, state: Mapping[str, Tensor]) -> Dict[str, Tensor]:
        """Tendencies of ``"zeta"``, ``"b"`` and passive tracers."""
        if "b" not in state:
            raise KeyError(f"state needs 'b' (buoyancy) and 'zeta'; got keys {sorted(state)}.")
        out = super().rhs(t, state)
        b = state["b"]
        out["zeta"] = out["zeta"] + _x_gradient(self.mesh, b, self.operators)
        if self.buoyancy_flux is not None:
            bflux = self.buoyancy_flux(t) if callable(self.buoyancy_flux) else self.buoyancy_flux
            # divergence(mesh, 0, bflux) without the interior faces: the same values
            _check_rows("boundary_flux", bflux, self.mesh.n_boundary_faces, "n_boundary_faces")
            total = b.new_zeros(self.mesh.n_cells).index_add(
                0, self.mesh.boundary_face_cell.to(b.device), bflux.to(device=b.device, dtype=b.dtype))
            out["b"] = out["b"] - total / self.mesh.cell_volume.to(b.dtype)
        return out
