"""Subgrid targets on every mesh family: the flux/tendency identity, conservation, refinement.

Also defines :class:`StandInScenario`, a tiny scenario with the interface of
``meshclosure.data.scenarios`` (a tracer in a fixed non-divergent flow,
optionally with a prescribed bottom flux), used by the other data tests.
"""
from __future__ import annotations

import math

import pytest
import torch

from meshclosure.data.targets import check_identity, coarse_inputs, subgrid_targets
from meshclosure.fv import diffusive_flux, divergence, transport_from_streamfunction
from meshclosure.fv.advection import linear_flux
from meshclosure.fv.versions import OPERATOR_VERSION
from meshclosure.mesh import (Coarsening, agglomerate, cartesian, column_parent, healpix,
                              icosahedral, native_parent)
from meshclosure.solver import TracerModel, integrate


# ------------------------------------------------------------------ stand-in
def _psi(mesh, x, phase=0.0):
    """A multiscale streamfunction at points ``x`` (n, d)."""
    if mesh.is_sphere:
        r = x / x.norm(dim=1, keepdim=True)
        return 0.2 * (r[:, 2] + 0.5 * r[:, 0] * r[:, 1] + 0.3 * torch.sin(5 * r[:, 0] + phase)
                      * r[:, 2])
    lx = mesh.period[0] if mesh.period and mesh.period[0] else 1.0
    ly = float(mesh.vertex_pos[:, 1].max() - mesh.vertex_pos[:, 1].min())
    kx = 2 * math.pi / lx
    if mesh.n_boundary_faces:   # x–z slice: ψ = 0 on the walls
        return 0.05 * torch.sin(math.pi * x[:, 1] / ly) * (torch.cos(kx * x[:, 0] + phase)
                                                            + 0.5 * torch.cos(3 * kx * x[:, 0]))
    ky = 2 * math.pi / mesh.period[1]
    return 0.05 * (torch.sin(kx * x[:, 0] + phase) * torch.cos(ky * x[:, 1])
                   + 0.3 * torch.sin(3 * kx * x[:, 0]) * torch.sin(2 * ky * x[:, 1]))


class StandInScenario:
    """Tracer in a fixed non-divergent flow: the scenario interface at its smallest.

    ``dq/dt = −div(U q_f − κ∇q·n A)`` with the linear scheme (the current operator
    version, recorded in ``config`` as a scenario's is), SSP-RK3, and on a bounded
    slice a prescribed bottom inflow ``B`` (outward flux ``−B A``).
    """

    name = "standin"
    variables = ("q",)

    def __init__(self, mesh, factor=2, seed=0, parent=None, kappa=1e-4, strength=1.0,
                 bottom_flux=0.0):
        self.fine = mesh
        self.coarsening = (Coarsening(mesh, parent) if parent is not None
                           else Coarsening.native(mesh, factor))
        self.coarse = self.coarsening.coarse
        self.seed, self.kappa, self.strength, self.bottom_flux = seed, kappa, strength, bottom_flux
        self.config = {"scenario": self.name, "n_cells": mesh.n_cells, "factor": factor,
                       "seed": seed, "kappa": kappa, "strength": strength,
                       "bottom_flux": bottom_flux, "operators": OPERATOR_VERSION}
        self.operators = OPERATOR_VERSION
        self.U = strength * transport_from_streamfunction(mesh, _psi(mesh, mesh.vertex_pos))
        self.model = TracerModel(mesh, self.U, kappa=kappa, scheme="linear",
                                 boundary_flux=self.boundary_fluxes(mesh, 0.0, None)["q"]
                                 if mesh.n_boundary_faces else None)
        umax = float((self.U.abs() / mesh.face_area).max())
        h = float(mesh.cell_volume.min().sqrt())
        self.dt = 0.3 * h / max(umax, 1e-12)

    def initial_state(self):
        g = torch.Generator().manual_seed(self.seed)
        x = self.fine.cell_center
        k = torch.randn(3, x.shape[1], generator=g, dtype=x.dtype) * 6
        ph = torch.rand(3, generator=g, dtype=x.dtype) * 6.28
        q = sum(torch.cos(x @ k[i] + ph[i]) / (i + 1) for i in range(3))
        return {"q": q}

    def advance(self, t, state, n_steps, progress=False):
        out = integrate(self.model, state, self.dt, n_steps, t0=t, progress=progress)
        return out.t, out.state

    def spin_up(self, state, progress=False):
        return self.advance(0.0, state, 3, progress)

    def transport(self, t, state):
        return self.U

    def resolved_fluxes(self, mesh, t, state, transport):
        q = state["q"]
        return {"q": linear_flux(mesh, q, transport.to(q.dtype))
                + diffusive_flux(mesh, q, self.kappa)}

    def boundary_fluxes(self, mesh, t, state):
        if not mesh.n_boundary_faces:
            return None
        south = mesh.boundary_tag_names.index("south")
        area = mesh.boundary_face_area
        b = torch.where(mesh.boundary_face_tag == south, -self.bottom_flux * area,
                        torch.zeros_like(area))
        return {"q": b}

    def resolved_inputs(self, mesh, t, state, transport):
        return {"N": state["q"] ** 2}

    def ood(self):
        return StandInScenario(self.fine, self.config["factor"], self.seed + 1000,
                               parent=self.coarsening.parent, kappa=self.kappa,
                               strength=2 * self.strength, bottom_flux=self.bottom_flux)


def family_cases():
    """(name, fine mesh, parent) for every family, tiny."""
    ico = icosahedral(2)
    dual = icosahedral(2, dual=True)
    slab = cartesian(8, 6, 2.0, 1.0, periodic=(True, False))
    return {
        "cartesian": (cartesian(16, 16), native_parent(cartesian(16, 16), 4)),
        "healpix": (healpix(8), native_parent(healpix(8), 4)),
        "icosahedral": (ico, native_parent(ico, 2)),
        "dual": (dual, agglomerate(dual, 30)),
        "column": (slab, column_parent(slab)),
    }


CASES = family_cases()


@pytest.fixture(params=list(CASES), scope="module")
def case(request):
    mesh, parent = CASES[request.param]
    sc = StandInScenario(mesh, parent=parent, bottom_flux=0.3)
    t, state = sc.advance(0.0, sc.initial_state(), 2)
    return request.param, sc, t, state


# --------------------------------------------------------------------- tests
def test_identity_conservation_and_coarse_flow(case) -> None:
    name, sc, t, state = case
    c = sc.coarsening
    U = sc.transport(t, state)
    s = subgrid_targets(sc, c, t, state, U)
    # s^sgs (from the restricted fine tendency) = −div_coarse(Φ^sgs, B^sgs)
    assert check_identity(s, c.coarse) < 1e-12
    phi, sgs = s.flux["q"], s.tendency["q"]
    assert float(phi.abs().max()) > 1e-6, "the subgrid flux should not vanish"
    V = c.coarse.cell_volume
    # Σ V s^sgs = net subgrid boundary flux = 0 here (restricted bottom flux is exact)
    assert float(s.boundary_flux["q"].abs().sum()) < 1e-14
    assert abs(float((V * sgs).sum())) < 1e-12 * float((V * sgs.abs()).sum())
    # coarse flow exactly non-divergent, like the fine one
    assert float(divergence(sc.fine, U).abs().max()) < 1e-12 * float(U.abs().max())
    div_c = divergence(c.coarse, s.transport)
    # (on the column the mean vertical transport of a non-divergent slice flow is 0 itself)
    assert float(div_c.abs().max()) <= 1e-12 * float(U.abs().max() / V.min())
    # the coarse state is the volume-weighted mean
    assert torch.allclose((V * s.state["q"]).sum(), (sc.fine.cell_volume * state["q"]).sum(),
                          rtol=1e-13)
    assert set(s.inputs) == {"grad_q_1", "grad_q_2", "N"}
    torch.testing.assert_close(s.inputs["N"], s.state["q"] ** 2)


def test_tendency_is_computed_independently() -> None:
    """s^sgs comes from the restricted fine tendency, so the identity can fail."""
    mesh, parent = CASES["cartesian"]
    c = Coarsening(mesh, parent)
    U = transport_from_streamfunction(mesh, _psi(mesh, mesh.vertex_pos))
    q = torch.sin(2 * math.pi * mesh.cell_center[:, 0])

    good = subgrid_targets(lambda m, t, st, u: {"q": linear_flux(m, st["q"], u)}, c, 0.0,
                           {"q": q}, U)
    assert check_identity(good, c.coarse) < 1e-12
    # perturbing s^sgs by 1e-6 in one cell is detected: the check is not vacuous
    broken = good.tendency["q"].clone()
    broken[0] += 1e-6
    good.tendency["q"] = broken
    assert check_identity(good, c.coarse) > 1e-8


def test_refinement_factor_one_is_zero_and_grows() -> None:
    mesh = cartesian(24, 24)
    U = transport_from_streamfunction(mesh, _psi(mesh, mesh.vertex_pos))
    x = mesh.cell_center
    q = torch.sin(2 * math.pi * x[:, 0]) + 0.5 * torch.cos(2 * math.pi * 6 * x[:, 1]) \
        + 0.3 * torch.sin(2 * math.pi * (5 * x[:, 0] + 3 * x[:, 1]))
    fn = lambda m, t, st, u: {"q": linear_flux(m, st["q"], u)}   # noqa: E731
    size = {}
    for factor in (1, 2, 4):
        c = Coarsening.native(mesh, factor)
        s = subgrid_targets(fn, c, 0.0, {"q": q}, U)
        resolved = c.restrict_flux(fn(mesh, 0.0, {"q": q}, U)["q"])
        # per unit length of coarse face, relative to the resolved flux
        size[factor] = float(s.flux["q"].norm() / resolved.norm())
        assert check_identity(s, c.coarse) < 1e-12 or factor == 1
    assert size[1] < 1e-13
    assert 1e-3 < size[2] < size[4]


def test_float32_identity() -> None:
    mesh, parent = CASES["healpix"]
    m32 = mesh.float()
    c = Coarsening(m32, parent)
    U = transport_from_streamfunction(m32, _psi(m32, m32.vertex_pos))
    q = torch.cos(3 * m32.cell_center[:, 0]) * m32.cell_center[:, 2]
    s = subgrid_targets(lambda m, t, st, u: {"q": linear_flux(m, st["q"], u)}, c, 0.0,
                        {"q": q}, U)
    assert s.flux["q"].dtype == torch.float32
    assert check_identity(s, c.coarse) < 1e-5


def test_gradient_inputs_in_local_frame() -> None:
    """A linear field x on the plane has gradient (1, 0); on the sphere the gradient of z
    points north."""
    plane = cartesian(8, 8)
    g = coarse_inputs(plane, {"q": plane.cell_center[:, 1].clone()}, ["q"])
    interior = (plane.cell_center[:, 1] > 0.2) & (plane.cell_center[:, 1] < 0.8)
    torch.testing.assert_close(g["grad_q_2"][interior], torch.ones(int(interior.sum()),
                                                                   dtype=torch.float64))
    sphere = healpix(4)
    g = coarse_inputs(sphere, {"q": sphere.cell_center[:, 2].clone()}, ["q"])
    assert float(g["grad_q_2"].min()) > 0 and float(g["grad_q_1"].abs().max()) < 0.05


def test_bad_inputs() -> None:
    mesh, parent = CASES["cartesian"]
    c = Coarsening(mesh, parent)
    U = torch.zeros(mesh.n_faces, dtype=torch.float64)
    fn = lambda m, t, st, u: {"q": linear_flux(m, st["q"], u)}   # noqa: E731
    with pytest.raises(KeyError, match="no variable 'b'"):
        subgrid_targets(fn, c, 0.0, {"q": torch.zeros(mesh.n_cells)}, U, variables=["b"])
    with pytest.raises(ValueError, match="transport_fine must have shape"):
        subgrid_targets(fn, c, 0.0, {"q": torch.zeros(mesh.n_cells, dtype=torch.float64)}, U[:3])
    with pytest.raises(ValueError, match="resolved_fluxes must return 'q'"):
        subgrid_targets(lambda m, t, st, u: {"q": torch.zeros(3)}, c, 0.0,
                        {"q": torch.zeros(mesh.n_cells, dtype=torch.float64)}, U)
    other = cartesian(8, 8)     # a state from a mesh this coarsening does not start from
    with pytest.raises(ValueError, match=r"state_fine\['q'\] must have shape \(n_fine_cells,\)"):
        subgrid_targets(fn, c, 0.0, {"q": torch.zeros(other.n_cells, dtype=torch.float64)}, U)
    with pytest.raises(TypeError, match="scenario_or_fluxfn"):
        subgrid_targets(3, c, 0.0, {"q": torch.zeros(mesh.n_cells)}, U)


REAL = [("kinematic", "cartesian:16", 4), ("kinematic", "healpix:4", 2),
        ("kinematic", "icosahedral:3", 2), ("barotropic", "cartesian:16", 4),
        ("barotropic", "healpix:4", 2), ("convection", "cartesian:16x8", 2)]


@pytest.mark.parametrize("name, mesh, factor", REAL, ids=[f"{n}-{m}" for n, m, _ in REAL])
def test_real_scenarios(name, mesh, factor) -> None:
    """The scenarios of meshclosure.data.scenarios at tiny size, a few steps from the start."""
    from meshclosure.data import get_scenario

    sc = get_scenario(name, mesh, factor=factor, seed=0)
    t, state = sc.advance(0.0, sc.initial_state(), 4)
    U = sc.transport(t, state)
    s = subgrid_targets(sc, sc.coarsening, t, state, U)
    assert set(s.flux) == set(sc.variables)
    assert check_identity(s, sc.coarse) < 1e-12
    V = sc.coarse.cell_volume
    for var in sc.variables:
        assert float(s.flux[var].abs().max()) > 0
        net_boundary = float(s.boundary_flux[var].sum())
        assert abs(float((V * s.tendency[var]).sum()) + net_boundary) \
            < 1e-12 * float((V * s.tendency[var].abs()).sum())
    fine_scale = float(U.abs().max() / sc.fine.cell_volume.min())
    assert float(divergence(sc.fine, U).abs().max()) < 1e-12 * fine_scale
    assert float(divergence(sc.coarse, s.transport).abs().max()) \
        < 1e-12 * float(U.abs().max() / V.min())
