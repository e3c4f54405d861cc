"""A network as a closure the solver runs: physical units, exact conservation, composition."""
from __future__ import annotations

import pytest
import torch

from meshclosure.closures import FeaturePipeline, ModelClosure, Normalizer, as_closure
from meshclosure.data.scenarios import get_scenario
from meshclosure.errors import ArgumentError
from meshclosure.nn import build_model
from meshclosure.solver import BarotropicModel, TracerModel
from meshclosure.testing import budget_residual
from meshclosure.mesh import cartesian, healpix


def _closure(mesh, variables=("q",), heteroscedastic=False, mode="mean", seed=0, scale=2.5):
    torch.manual_seed(seed)
    pipe = FeaturePipeline(variables)
    model = build_model("mgn", mesh, in_features=pipe.n_features, n_vars=len(variables),
                        hidden=8, n_blocks=1, heteroscedastic=heteroscedastic).double()
    norm = Normalizer(pipe.names, [0.1] * pipe.n_features, [2.0] * pipe.n_features,
                      variables, [scale] * len(variables))
    gen = torch.Generator().manual_seed(seed)
    return ModelClosure(model, pipe, norm, mode=mode, generator=gen), model, pipe, norm


def test_model_closure_is_the_network_in_physical_units():
    mesh = healpix(2)
    closure, model, pipe, norm = _closure(mesh)
    q = torch.randn(mesh.n_cells, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    flux = closure(0.0, {"q": q}, mesh)["q"]
    raw = model(mesh, norm.normalize_inputs(pipe(mesh, {"q": q})))
    assert torch.equal(flux, 2.5 * raw[:, 0])
    # through the coarse model: conservative to rounding, and it changes the tendency
    sc = get_scenario("kinematic", mesh="healpix:4", factor=2)
    closure, *_ = _closure(sc.coarse)
    Q = sc.coarsening.restrict(sc.initial_state()["q"])
    with_c = sc.coarse_model(closure=closure).rhs(0.5, {"q": Q})["q"]
    without = sc.coarse_model().rhs(0.5, {"q": Q})["q"]
    V = sc.coarse.cell_volume
    diff = (with_c - without).detach()
    assert abs(float((V * diff).sum())) <= 1e-14 * float((V * diff.abs()).sum())
    assert float(diff.abs().max()) > 0
    # the network's parameters are the closure's: a loss on the tendency reaches them
    (with_c ** 2).sum().backward()
    assert all(p.grad is not None for p in closure.parameters() if p.requires_grad)


def test_sampled_mode_draws_one_flux_per_face_and_conserves():
    mesh = cartesian(6, 6)
    closure, model, pipe, norm = _closure(mesh, heteroscedastic=True, mode="sample")
    q = torch.randn(mesh.n_cells, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        mean, log_var = ModelClosure(model, pipe, norm).predict(0.0, {"q": q}, mesh)
        draws = torch.stack([closure(0.0, {"q": q}, mesh)["q"] for _ in range(400)])
    assert draws.std(0).min() > 0
    # mean and spread of the draws: the predicted Gaussian (400 draws: 4 standard errors)
    sigma = log_var[:, 0].exp().sqrt()
    assert float(((draws.mean(0) - mean[:, 0]).abs() / sigma).max()) < 4 * 400 ** -0.5 * 1.5
    assert float((draws.std(0) / sigma - 1).abs().mean()) < 0.1
    from meshclosure.fv import divergence
    V = mesh.cell_volume.double()
    for d in draws[:5]:
        assert abs(float((V * divergence(mesh, d)).sum())) < 1e-13 * float(d.abs().sum())
    with pytest.raises(ArgumentError, match="heteroscedastic"):
        _closure(mesh, mode="sample")[0](0.0, {"q": q}, mesh)


def test_closures_compose():
    phi = torch.arange(4.0, dtype=torch.float64)
    a = as_closure(lambda t, s, m: {"q": phi})
    b = as_closure(lambda t, s, m: {"q": 2 * phi, "zeta": phi})
    assert torch.equal((a + b)(0.0, {}, None)["q"], 3 * phi)
    assert torch.equal((a + b)(0.0, {}, None)["zeta"], phi)
    w = torch.tensor([0.0, 1.0, 0.5, 1.0], dtype=torch.float64)
    blend = w * a + (1 - w) * b          # a per-face blend is a closure too
    assert torch.equal(blend(0.0, {}, None)["q"], w * phi + (1 - w) * 2 * phi)
    with pytest.raises(TypeError, match="only add a closure"):
        a + 3
    with pytest.raises(ArgumentError, match="mode"):
        ModelClosure(torch.nn.Identity(), FeaturePipeline(["q"]), mode="median")


def test_budget_closes_with_a_learned_closure_tracer():
    """Sources, relaxation and boundary fluxes on; a network's fluxes change nothing in the
    budget: the accumulated residual is rounding (DESIGN.md §10). A few hundred steps here;
    ``python tools/budget_check.py`` runs the 10^4-step version."""
    mesh = cartesian(6, 4, 1.0, 1.0, periodic=(True, False))
    gen = torch.Generator().manual_seed(3)
    closure, *_ = _closure(mesh, scale=0.05)
    U = 0.2 * mesh.face_normal[:, 0].double() * mesh.face_area.double()
    S = torch.randn(mesh.n_cells, dtype=torch.float64, generator=gen)
    target = torch.randn(mesh.n_cells, dtype=torch.float64, generator=gen)
    bflux = 0.1 * torch.randn(mesh.n_boundary_faces, dtype=torch.float64, generator=gen)
    model = TracerModel(mesh, U, kappa=0.01, source=S, relaxation=(0.5, target),
                        boundary_flux=bflux, closure=closure)
    V = mesh.cell_volume.double()
    with torch.no_grad():
        q0 = {"q": torch.randn(mesh.n_cells, dtype=torch.float64, generator=gen)}
        res, q = budget_residual(
            model, q0, 0.01, 200, lambda s: (V * s["q"]).sum(),
            lambda t, s: (V * (S - 0.5 * (s["q"] - target))).sum(), lambda t: bflux.sum())
    scale = float((V * q["q"].abs()).sum())
    assert abs(res) / scale <= 1e-12, res / scale
    # the same run with the non-conservative reference in the closure's place: its
    # per-cell tendency is a source nobody accounts for, and the budget shows it
    node = build_model("nodewise", mesh, in_features=3, hidden=8, n_blocks=1).double()
    pipe = FeaturePipeline(["q"])
    model = TracerModel(mesh, U, kappa=0.01, relaxation=(0.5, target), boundary_flux=bflux,
                        source=lambda t, s: S + 0.05 * node(mesh, pipe(mesh, s))[:, 0])
    with torch.no_grad():
        res_node, q = budget_residual(
            model, q0, 0.01, 200, lambda s: (V * s["q"]).sum(),
            lambda t, s: (V * (S - 0.5 * (s["q"] - target))).sum(), lambda t: bflux.sum())
    assert abs(res_node) / float((V * q["q"].abs()).sum()) > 1e-6


def test_budget_closes_with_a_learned_closure_barotropic():
    mesh = healpix(2)
    gen = torch.Generator().manual_seed(4)
    closure, *_ = _closure(mesh, variables=("zeta", "q"), scale=0.05)
    F = torch.randn(mesh.n_cells, dtype=torch.float64, generator=gen)
    model = BarotropicModel(mesh, omega=1.0, nu=0.01, drag=0.3, forcing=F, kappa=0.01,
                            closure=closure)
    V = mesh.cell_volume.double()
    with torch.no_grad():
        s0 = {"zeta": 0.1 * torch.randn(mesh.n_cells, dtype=torch.float64, generator=gen),
              "q": torch.randn(mesh.n_cells, dtype=torch.float64, generator=gen)}
        res, s = budget_residual(model, s0, 0.01, 100, lambda s: (V * s["zeta"]).sum(),
                               lambda t, s: (V * (F - 0.3 * s["zeta"])).sum(), lambda t: 0.0)
    assert abs(res) / float((V * s["zeta"].abs()).sum()) <= 1e-12


def test_gru_memory_in_model_closure_is_the_hook_rule():
    """A recurrent network through ModelClosure advances its memory once per solver step,
    exactly as the GRU hook does (same fluxes, same memory)."""
    from meshclosure.solver import integrate
    mesh = cartesian(5, 5)
    torch.manual_seed(0)
    gru = build_model("gru", mesh, in_features=1, hidden=8, n_blocks=1).double()
    U = 0.3 * mesh.face_normal[:, 0].double() * mesh.face_area.double()
    q0 = {"q": torch.sin(4.0 * mesh.cell_center[:, 1].double())}
    with torch.no_grad():
        hook = gru.as_closure(0.01, var="q", stages="ssprk3")
        a = integrate(TracerModel(mesh, U, closure=hook), q0, 0.01, 5, progress=False)
        closure = ModelClosure(gru, FeaturePipeline(["q"], gradients=False))
        b = integrate(TracerModel(mesh, U, closure=closure), q0, 0.01, 5, progress=False)
    assert torch.equal(a.state["q"], b.state["q"]) and torch.equal(hook.h, closure.h)
    closure.reset()
    assert closure.h is None
