"""Soft physics constraints for training: the weak-form residual and the dissipation penalty.

Two loss terms a trainer adds, each with its own weight (DESIGN.md §8, issue 11 item 2).

**Weak-form residual.** On trajectory data, one coarse step of the hybrid
model with the predicted flux ``Φ̂`` held constant over the step's stages
(as :func:`~meshclosure.data.trajectory.replay_window` replays the stored
step mean ``Φ̄^sgs``) should land on the next coarse-grained state::

    R = (Q̄^{n+1} − step_c(Q̄^n; Φ̂)) / Δ_c,        p_{v,m} = ⟨R_v, φ_m⟩ = Σ_i V_i R_{v,i} φ_{m,i}

with ``step_c`` one SSP-RK3 step of ``scenario.coarse_model`` and ``φ_m``
``M`` smooth test functions of the mesh (:func:`test_functions`). The loss
``Σ_v Σ_m p_{v,m}²`` penalises only the large-scale part of the one-step
tendency error, differentiates the solver step and not the network's
inputs, and (by default) is divided per variable by its value for no
closure (``Φ̂ = 0``), so it is dimensionless: 0 is a perfect step, 1 is no
better than no closure. This is a weak (Galerkin) form of the discrete
evolution equation in the sense of weak-form system identification
(Messenger & Bortz 2021, doi:10.1016/j.jcp.2021.110525), with the test
functions in space and one coarse step in time.

**Dissipation.** The variance production ``P = Σ_f Φ_f (Q_b − Q_a)`` and the
penalty ``mean([P]_+²)`` live in :mod:`meshclosure.train.dissipation` (derivation
there); they are re-exported here.

Examples
--------
>>> import torch
>>> from meshclosure.mesh import cartesian
>>> mesh = cartesian(8, 8)
>>> phi = test_functions(mesh, n=1)                     # 1, and (cos, sin)(2πx), (cos, sin)(2πy)
>>> tuple(phi.shape)
(5, 64)
>>> gram = (phi * mesh.cell_volume) @ phi.T             # orthonormal on the unit square
>>> bool(torch.allclose(gram, torch.eye(5, dtype=torch.float64), atol=1e-12))
True
>>> q = torch.sin(6.283185307179586 * mesh.cell_center[:, 0])
>>> a, b = mesh.face_cells
>>> down = -(q[b] - q[a])                                # down-gradient flux (K = 1)
>>> float(variance_production(mesh, down, q)) < 0, float(dissipation_penalty(mesh, down, q))
(True, 0.0)
>>> test_functions(mesh, n=4)
Traceback (most recent call last):
...
meshclosure.errors.ArgumentError: n=4: must be a number in (0, 2] on this cartesian mesh (test ...; pass e.g. n=1 (the large-scale band k_c/4), or a finer mesh.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from .._cache import per_mesh
from ..data.trajectory import PRESCRIBED_FLOW
from ..errors import ArgumentError
from ..mesh import Mesh
from ..solver.steppers import STAGES, ssprk3_step
from .dissipation import dissipation_penalty, positive_production_fraction, variance_production

__all__ = ["test_functions", "project", "weak_form_projections", "weak_form_residual",
           "weak_form_loss", "variance_production", "dissipation_penalty",
           "positive_production_fraction"]

Scale = Union[None, str, float, Tensor]


# --------------------------------------------------------------------------- test functions
def _number(name: str, value: Any, low: float, high: float, where: str, fix: str) -> float:
    ok = (not isinstance(value, bool) and isinstance(value, (int, float))
          and math.isfinite(value) and low < value <= high + 1e-9)
    if not ok:
        raise ArgumentError(name, value, f"must be a number in (0, {high:g}] on this {where}", fix)
    return float(value)


def _plane_axes(mesh: Mesh) -> List[Tuple[str, float, float]]:
    """Per axis ``(kind, length, origin)``; kind ``periodic``, ``bounded`` or ``flat``
    (all cell centres share one coordinate: only the constant along it)."""
    out = []
    c, v = mesh.cell_center.double(), mesh.vertex_pos.double()
    for a in range(mesh.dim):
        lo, hi = float(v[:, a].min()), float(v[:, a].max())
        period = float(mesh.period[a]) if mesh.period is not None else 0.0
        length = period if period > 0 else hi - lo
        spread = float(c[:, a].max() - c[:, a].min())
        if length <= 0 or spread <= 1e-9 * max(length, 1e-300):
            out.append(("flat", 1.0, 0.0))
        else:
            out.append(("periodic" if period > 0 else "bounded", length, lo))
    return out


def _plane_spacing(mesh: Mesh, axes) -> float:
    """Cell size ``Δ`` that limits the resolved wavenumber (the coarser axis of a grid)."""
    info = mesh.info
    if all(k in info for k in ("nx", "ny", "lx", "ly")) and info.get("ny"):
        return max(float(info["lx"]) / int(info["nx"]), float(info["ly"]) / int(info["ny"]))
    if "nz" in info and "height" in info:
        return float(info["height"]) / int(info["nz"])
    live = [ax for ax in axes if ax[0] != "flat"]
    area = float(mesh.cell_volume.double().sum())
    if len(live) == 1:
        return live[0][1] / mesh.n_cells
    return math.sqrt(area / mesh.n_cells)


def _axis_functions(kind: str, length: float, origin: float, x: Tensor, jmax: int, L: float):
    """1-D functions of unit mean square along one axis: ``[(κ, values)]``, ``κ`` the
    wavenumber in units of ``2π/L``."""
    out = [(0.0, torch.ones_like(x))]
    if kind == "flat":
        return out
    r2 = math.sqrt(2.0)
    for j in range(1, jmax + 1):
        if kind == "periodic":
            arg = 2 * math.pi * j * x / length
            out += [(j * L / length, r2 * torch.cos(arg)), (j * L / length, r2 * torch.sin(arg))]
        else:
            out.append((j * L / (2 * length), r2 * torch.cos(math.pi * j * (x - origin) / length)))
    return out


def _plane_functions(mesh: Mesh, n: Optional[float]) -> Tensor:
    axes = _plane_axes(mesh)
    live = [ax for ax in axes if ax[0] != "flat"]
    if not live:
        raise ArgumentError("mesh", mesh, "must extend along at least one axis",
                            "pass a plane, a column or a sphere mesh")
    L = max(ax[1] for ax in live)
    k_c = L / (2 * _plane_spacing(mesh, axes))
    fix = (f"pass e.g. {{n}}={max(1, int(k_c // 4))} (the large-scale band k_c/4), or a finer "
           "mesh")
    n = max(1, int(k_c // 4)) if n is None else n
    n = _number("n", n, 0.0, k_c / 2, f"{mesh.family} mesh (test functions resolved by >= 4 "
                f"cells per wavelength: n <= k_c/2, k_c = {k_c:g} the grid's Nyquist wavenumber "
                f"in units of 2π/L, L = {L:g})", fix)
    c = mesh.cell_center.double()
    per_axis = []
    for a, (kind, length, origin) in enumerate(axes):
        jmax = int(math.floor(n * (2 if kind == "bounded" else 1) * length / L + 1e-9))
        per_axis.append(_axis_functions(kind, length, origin, c[:, a], jmax, L))
    funcs = [(0.0, torch.ones_like(c[:, 0]))]
    for parts in per_axis:
        funcs = [(math.hypot(k1, k2), f1 * f2) for k1, f1 in funcs for k2, f2 in parts
                 if math.hypot(k1, k2) <= n + 1e-9]
    funcs.sort(key=lambda kf: kf[0])                        # stable: constant first
    return torch.stack([f for _, f in funcs])


def _sphere_functions(mesh: Mesh, degree: Optional[int]) -> Tensor:
    from ..data.random_flows import spherical_harmonic_basis

    R = float(mesh.radius)
    area = float(mesh.cell_volume.double().sum())
    l_c = math.pi * R / math.sqrt(area / mesh.n_cells)
    top = max(1, int(l_c // 2))
    degree = max(1, int(l_c // 4)) if degree is None else degree
    if (isinstance(degree, bool) or not isinstance(degree, int) or not 1 <= degree <= top):
        raise ArgumentError("degree", degree, f"must be an integer in [1, {top}] on this "
                            f"{mesh.family} mesh of {mesh.n_cells} cells (harmonics resolved by "
                            f">= 4 cells per wavelength: degree <= l_c/2, l_c = πR/Δ = {l_c:.3g})",
                            f"pass e.g. {{degree}}={max(1, int(l_c // 4))} (the large-scale band "
                            "l_c/4), or a finer mesh")
    values, _, _ = spherical_harmonic_basis(mesh.cell_center.double(), R, 0, degree)
    return values.T.contiguous()


def test_functions(mesh: Mesh, n: Optional[float] = None, degree: Optional[int] = None) -> Tensor:
    """``M`` smooth test functions of ``mesh`` at its cell centres, each of unit mean square.

    * Sphere (``mesh.is_sphere``): the real spherical harmonics ``√(4π) Y_l^m``
      of degree ``0 ≤ l ≤ degree``
      (:func:`~meshclosure.data.random_flows.spherical_harmonic_basis`), ``M = (degree+1)²``;
      orthogonal up to the mesh's quadrature error (and not orthogonal on an open region).
    * Plane or column: per axis, on a periodic axis the Fourier modes ``1, √2 cos(2πj x/L_a),
      √2 sin(2πj x/L_a)`` (wavenumber ``j L/L_a`` in units of ``2π/L``, ``L`` the
      longest side), on a bounded axis the cosines ``1, √2 cos(πj (x − x₀)/L_a)``
      (wavenumber ``j L/(2 L_a)``; zero normal derivative at the walls), on an
      axis along which every cell centre is the same (a column stored as a
      2-D mesh) only the constant; all products whose wavenumber vector has
      length ``≤ n``. On a doubly periodic square with ``n = 1`` that is
      ``1, (cos, sin)(2πx), (cos, sin)(2πy)`` (``M = 5``); with ``n = 2``, ``M = 13``
      (the products span the same space as ``cos/sin 2π(k_x x + k_y y)``, ``|k| ≤ n``); on a
      column of height ``H``, ``cos(πj z/H)`` for ``j ≤ 2n`` (``M = 2n + 1``).
      On a uniform grid the functions are exactly orthonormal in the
      volume-weighted sum (discrete Fourier / DCT-II orthogonality).

    The constant is included (``⟨R, 1⟩`` does not depend on a conservative
    closure, but it keeps the total's error in the residual).

    Parameters
    ----------
    mesh : Mesh
    n : float, optional
        Planes and columns: the largest wavenumber, in units of ``2π/L``. Must be
        ``≤ k_c/2`` (``k_c = L/(2Δ)`` the Nyquist wavenumber: at least 4 cells per
        wavelength); default ``k_c/4`` (at least 1), the large-scale band of issue 11.
    degree : int, optional
        Spheres: the largest degree, ``≤ l_c/2`` with ``l_c = πR/Δ``, ``Δ = √(area/n_cells)``;
        default ``l_c/4`` (at least 1).

    Returns
    -------
    Tensor, shape (M, n_cells), float64
        Cached per mesh and arguments (the same tensor is returned again: do not modify it).
    """
    if not isinstance(mesh, Mesh):
        raise ArgumentError("mesh", type(mesh).__name__, "must be a meshclosure.mesh.Mesh",
                            "build one with meshclosure.mesh.cartesian/healpix/icosahedral")
    if mesh.is_sphere:
        return per_mesh(mesh, ("train.test_functions", "sphere", degree),
                        lambda: _sphere_functions(mesh, degree))
    if mesh.dim == 3:
        raise ArgumentError("mesh", mesh.family, "must be a sphere, a plane or a column: no "
                            "test functions are defined on a curved surface other than a sphere",
                            "pass a sphere mesh (healpix, icosahedral) or a planar one")
    return per_mesh(mesh, ("train.test_functions", "plane", n), lambda: _plane_functions(mesh, n))


test_functions.__test__ = False     # a library function, not a test: pytest must not collect it


def project(mesh: Mesh, field: Tensor, phi: Tensor) -> Tensor:
    """``⟨R, φ_m⟩ = Σ_i V_i R_i φ_{m,i}``: a cell field against every test function.

    Parameters
    ----------
    mesh : Mesh
    field : Tensor, shape (n_cells,), (B, n_cells) or (B, n_cells, n_vars)
    phi : Tensor, shape (M, n_cells)
        E.g. :func:`test_functions`; cast to ``field``'s dtype and device.

    Returns
    -------
    Tensor, shape (M,), (B, M) or (B, n_vars, M)
        In the units of ``field`` × volume.
    """
    nc = mesh.n_cells
    if phi.dim() != 2 or phi.shape[1] != nc:
        raise ArgumentError("phi", tuple(phi.shape), f"must be (M, n_cells) = (M, {nc})",
                            "build it with test_functions(mesh)")
    cell_axis = 1 if field.dim() == 3 else field.dim() - 1
    if field.dim() not in (1, 2, 3) or field.shape[cell_axis] != nc:
        raise ArgumentError("field", tuple(field.shape), f"must be (n_cells,), (B, n_cells) or "
                            f"(B, n_cells, n_vars) with n_cells = {nc}",
                            "pass one value per cell of the mesh")
    w = phi.to(field) * mesh.cell_volume.to(field)           # (M, n_cells)
    if field.dim() == 3:
        return torch.einsum("bcv,mc->bvm", field, w)
    return field @ w.T


# --------------------------------------------------------------------------- weak form
def _batched(name: str, values: Mapping[str, Tensor], variables: Sequence[str], size: int,
             batch: Optional[int]) -> Tuple[Dict[str, Tensor], bool]:
    """``{v: (B, size)}`` from ``{v: (size,)}`` or ``{v: (B, size)}``; and whether it had B."""
    out, had = {}, None
    for v in variables:
        if v not in values:
            raise ArgumentError(name, sorted(values),
                                f"must hold every variable {list(variables)}",
                                f"pass {{{name}}}={{var: tensor}} for each of them")
        x = values[v]
        if not isinstance(x, Tensor) or x.dim() not in (1, 2) or x.shape[-1] != size:
            raise ArgumentError(f"{name}[{v!r}]", tuple(getattr(x, "shape", ())),
                                f"must be ({size},) or (B, {size})",
                                "pass one value per cell (face) of the coarse mesh")
        had = x.dim() == 2 if had is None else had
        out[v] = x if x.dim() == 2 else x.unsqueeze(0)
        if batch is not None and out[v].shape[0] != batch:
            raise ArgumentError(f"{name}[{v!r}]", tuple(x.shape), f"must have B = {batch} samples",
                                "pass the same number of samples in every argument")
    return out, bool(had)


def _flux_dict(flux, variables: Sequence[str], n_faces: int, batch: int) -> Dict[str, Tensor]:
    if isinstance(flux, Tensor):
        if flux.dim() == 2:
            flux = flux.unsqueeze(0)
        if flux.dim() != 3 or flux.shape[1:] != (n_faces, len(variables)):
            raise ArgumentError("flux", tuple(flux.shape), f"must be (B, n_faces, n_vars) = (B, "
                                f"{n_faces}, {len(variables)}), variables in the order "
                                f"{list(variables)}", "pass physical fluxes per face and variable")
        flux = {v: flux[..., k] for k, v in enumerate(variables)}
    out, _ = _batched("flux", flux, variables, n_faces, None)
    if any(x.shape[0] != batch for x in out.values()):
        raise ArgumentError("flux", {v: tuple(x.shape) for v, x in out.items()},
                            f"must have B = {batch} samples", "one flux per sample of the state")
    return out


def _stage_transport(transport_stages: Tensor, t0: float, dt: float):
    c = STAGES["ssprk3"].c

    def transport(t):
        s = min(range(len(c)), key=lambda k: abs(t - t0 - c[k] * dt))
        if abs(t - t0 - c[s] * dt) > 1e-9 * max(1.0, abs(t0) + abs(dt)):
            raise ArgumentError("transport_stages", f"t={t}", f"has values only at the stage "
                                f"times t0 + c dt, c in {c}",
                                "pass the step's own stage transports")
        return transport_stages[s]

    return transport


def weak_form_projections(scenario, state: Mapping[str, Tensor], next_state: Mapping[str, Tensor],
                          flux, dt: float, t, forcing: Optional[Mapping[str, Tensor]] = None,
                          transport_stages: Optional[Tensor] = None,
                          phi: Optional[Tensor] = None) -> Tensor:
    """``p_{v,m} = ⟨R_v, φ_m⟩`` of the one-step residual (module docstring), per sample.

    Parameters
    ----------
    scenario : Scenario
        Its ``coarse_model(closure, forcing)`` takes the step (e.g.
        ``Scenario.from_config(dataset.scenario_config)``).
    state, next_state : dict of str -> Tensor, shape (B, n_cells) or (n_cells,)
        ``Q̄^n`` and ``Q̄^{n+1}`` for every variable in ``scenario.variables``.
    flux : Tensor (B, n_faces, n_vars) or dict of str -> Tensor (B, n_faces), or None
        The predicted subgrid flux ``Φ̂`` in physical units (variables in the order
        of ``scenario.variables``), constant over the step's stages; ``None``: no closure.
    dt : float
        The coarse step ``Δ_c`` (``scenario.coarse_dt``).
    t : float or Tensor, shape (B,)
        Model time at the step's start.
    forcing : dict of str -> Tensor, shape (B, n_cells), optional
        The step-mean forcing (a trajectory's ``forcing_mean``); default the coarse
        model's own.
    transport_stages : Tensor, shape (B, n_stages, n_faces), optional
        A prescribed flow's coarse transport at the stage times (the dataset's);
        default the coarse model's own ``U_c(t)`` (the same values).
    phi : Tensor, shape (M, n_cells), optional
        Default :func:`test_functions` ``(scenario.coarse)``.

    Returns
    -------
    Tensor, shape (B, n_vars, M) (or (n_vars, M) for an unbatched state)
        In units of [Q] × volume / time; differentiable with respect to ``flux``.
    """
    mesh = scenario.coarse
    variables = tuple(scenario.variables)
    if isinstance(dt, bool) or not isinstance(dt, (int, float)) or not dt > 0:
        raise ArgumentError("dt", dt, "must be a positive number (the coarse step)",
                            "pass {dt}=scenario.coarse_dt")
    q0, batched = _batched("state", state, variables, mesh.n_cells, None)
    B = next(iter(q0.values())).shape[0]
    q1, _ = _batched("next_state", next_state, variables, mesh.n_cells, B)
    fluxes = None if flux is None else _flux_dict(flux, variables, mesh.n_faces, B)
    # the step runs in the coarse model's own dtype and device (float64, like the
    # trajectory data): R is a small difference of two states, which float32 would
    # swamp; the projections come back in the flux's (else the state's) dtype and device
    like = next(iter((fluxes or q0).values()))
    work = dict(dtype=mesh.cell_volume.dtype, device=mesh.cell_volume.device)
    q0 = {v: x.to(**work) for v, x in q0.items()}
    q1 = {v: x.to(**work) for v, x in q1.items()}
    forced = None
    if forcing is not None:
        forced, _ = _batched("forcing", forcing, tuple(forcing), mesh.n_cells, B)
    times = torch.as_tensor(t, dtype=torch.float64).reshape(-1).tolist()
    if len(times) == 1:
        times = times * B
    if len(times) != B:
        raise ArgumentError("t", t, f"must be a number or hold B = {B} times", "one per sample")
    if transport_stages is not None:
        if transport_stages.dim() == 2:
            transport_stages = transport_stages.unsqueeze(0)
        if transport_stages.shape[0] != B or transport_stages.shape[-1] != mesh.n_faces:
            raise ArgumentError("transport_stages", tuple(transport_stages.shape),
                                f"must be (B, n_stages, n_faces) = ({B}, 3, {mesh.n_faces})",
                                "pass the trajectory's transport_stages of this step")
    phi = test_functions(mesh) if phi is None else phi

    current = [0]                                            # the sample being stepped

    def closure(t_, s, m):                                   # Φ̂ constant over the stages
        return {v: fluxes[v][current[0]].to(**work) for v in variables}

    def forcing_fn(t_):                                      # the stored step mean
        return {v: f[current[0]].to(**work) for v, f in forced.items()}

    model = scenario.coarse_model(closure=None if fluxes is None else closure,
                                  forcing=None if forced is None else forcing_fn)
    base = getattr(model, "base", model)
    if transport_stages is not None and (scenario.name not in PRESCRIBED_FLOW
                                         or not hasattr(base, "transport")):
        raise ArgumentError("transport_stages", tuple(transport_stages.shape),
                            f"applies only to a prescribed flow; the {scenario.name!r} coarse "
                            "model computes its transport from the state", "leave it None")
    residuals = []
    for b in range(B):
        current[0] = b
        if transport_stages is not None:
            base.transport = _stage_transport(transport_stages[b].to(**work), times[b],
                                              float(dt))
        new = ssprk3_step(model.rhs, times[b], {v: q0[v][b] for v in variables}, float(dt))
        residuals.append(torch.stack([(q1[v][b] - new[v]) / dt for v in variables], -1))
    p = project(mesh, torch.stack(residuals), phi).to(like)  # (B, n_vars, M)
    return p if batched else p[0]


def weak_form_residual(scenario, state, next_state, flux, dt: float, t, forcing=None,
                       transport_stages=None, phi: Optional[Tensor] = None,
                       scale: Scale = "no_closure") -> Tensor:
    """The weak-form residual ``Σ_v Σ_m p_{v,m}²`` of one coarse step, normalised.

    Arguments as in :func:`weak_form_projections` (which gives the per-mode values), and

    scale : "no_closure" (default), None, float or Tensor (n_vars,)
        ``"no_closure"``: per variable divided by the same sum for ``Φ̂ = 0``
        (computed without gradient), then averaged over variables — dimensionless,
        ``1`` = no better than no closure; None: the raw sum ([Q]² volume² / time²);
        a number or per-variable tensor ``s_v``: ``Σ_v Σ_m (p_{v,m} / s_v)²``.

    Returns
    -------
    Tensor, shape (B,) (a scalar for an unbatched state)
    """
    p = weak_form_projections(scenario, state, next_state, flux, dt, t, forcing,
                              transport_stages, phi)
    energy = (p ** 2).sum(-1)                                # (B, n_vars)
    if isinstance(scale, str):
        if scale != "no_closure":
            raise ArgumentError("scale", scale, "must be 'no_closure', None, a number or a "
                                "tensor (n_vars,)", "pass {scale}='no_closure'")
        with torch.no_grad():
            p0 = weak_form_projections(scenario, state, next_state, None, dt, t, forcing,
                                       transport_stages, phi)
        ref = (p0 ** 2).sum(-1).to(energy).clamp_min(torch.finfo(energy.dtype).tiny)
        return (energy / ref).mean(-1)
    if scale is None:
        return energy.sum(-1)
    s = torch.as_tensor(scale, dtype=p.dtype, device=p.device)
    if not bool(torch.isfinite(s).all()) or not bool((s > 0).all()):
        raise ArgumentError("scale", scale, "must be positive and finite",
                            "pass the typical size of ⟨R, φ⟩ per variable")
    return ((p / s.unsqueeze(-1)) ** 2).sum((-1, -2))


def weak_form_loss(scenario, batch: Mapping[str, Any], flux: Tensor, phi: Optional[Tensor] = None,
                   scale: Scale = "no_closure", step: int = 0) -> Tensor:
    """Mean over a batch of :func:`weak_form_residual` for the step ``step`` of its windows.

    Parameters
    ----------
    scenario : Scenario
        ``Scenario.from_config(dataset.scenario_config)``.
    batch : dict
        A collated :class:`~meshclosure.data.TrajectoryDataset` batch (``state``,
        ``states``, ``t``, ``forcing_mean``, ``transport_stages`` when present).
    flux : Tensor, shape (B, n_faces, n_vars)
        The predicted flux at the step's start state, in PHYSICAL units (a
        normalised network output times ``stats.flux_scale``).
    step : int
        Which step of the windows (0: from ``batch["state"]``).

    Returns
    -------
    Tensor, scalar
    """
    variables = tuple(scenario.variables)
    length = batch["states"][variables[0]].shape[1]
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step < length:
        raise ArgumentError("step", step, f"must be an integer in [0, {length - 1}] (the windows "
                            f"hold {length} steps)", "pass {step}=0")
    if step == 0:
        q0 = {v: batch["state"][v] for v in variables}
    else:
        q0 = {v: batch["states"][v][:, step - 1] for v in variables}
    q1 = {v: batch["states"][v][:, step] for v in variables}
    forcing = {v: f[:, step] for v, f in batch.get("forcing_mean", {}).items()} or None
    stages = batch.get("transport_stages")
    stages = None if stages is None else stages[:, step]
    t = batch["t"][:, step]
    return weak_form_residual(scenario, q0, q1, flux, float(scenario.coarse_dt), t, forcing,
                              stages, phi, scale).mean()
