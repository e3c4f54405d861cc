"""The coarse hybrid model is part of the data contract (DESIGN.md §5).

Two replays test that the subgrid targets are defined with exactly the
resolved operator, transport, boundary fluxes and sources that
``scenario.coarse_model`` computes online:

* stage-wise, with the coarse step equal to the fine step: a coarse step that
  is given, at each of its stages, the ``Φ^sgs`` of the fine run's own stage
  state reproduces ``restrict(q^{n+1})`` to rounding;
* step-mean, at the real coarse step (``m = coarse_every`` fine steps): the
  coarse model replaying the step-mean ``Φ̄^sgs`` and forcing tracks the
  coarse-grained truth far better than the coarse model with no closure,
  while replaying instantaneous samples (what a dataset of snapshots holds)
  or targets made with a transport the coarse model never sees does not.
"""
from __future__ import annotations

import pytest
import torch

from meshclosure.data.scenarios import get_scenario
from meshclosure.data.trajectory import coarse_steps, replay

STAGEWISE = [
    ("kinematic", "cartesian:16", 2), ("kinematic", "healpix:4", 2),
    ("kinematic", "icosahedral:3", 2), ("kinematic", "cubed:8", 2),
    ("barotropic", "cartesian:16", 2), ("barotropic", "healpix:4", 2),
    ("barotropic", "icosahedral:3", 2), ("barotropic", "cubed:8", 2),
    ("convection", "cartesian:16x8", 2),
]


def _rel_max(a, b, variables):
    return max(float((a[v] - b[v]).abs().max() / b[v].abs().max()) for v in variables)


def _rel_l2(mesh, a, b, variables):
    V = mesh.cell_volume
    return max(float(((V * (a[v] - b[v]) ** 2).sum() / (V * b[v] ** 2).sum()).sqrt())
               for v in variables)


def _truth(scenario, t, state, n_steps, every=None, keep_stages=False):
    c = scenario.coarsening
    steps, truth = [], []
    for _, s, step in coarse_steps(scenario, t, state, n_steps, every=every,
                                   keep_stages=keep_stages):
        steps.append(step)
        truth.append({k: c.restrict(v) for k, v in s.items()})
    return steps, truth


@pytest.mark.parametrize("name, mesh, factor", STAGEWISE,
                         ids=[f"{a}-{b}" for a, b, _ in STAGEWISE])
def test_stagewise_replay_is_exact(name, mesh, factor):
    sc = get_scenario(name, mesh=mesh, factor=factor)
    assert sc.coarse.n_cells < sc.fine.n_cells
    t, state = sc.advance(0.0, sc.initial_state(), 10)
    steps, truth = _truth(sc, t, state, 1, every=1, keep_stages=True)
    assert len(steps[0].stage_flux) == 3                      # SSP-RK3 stages
    exact = replay(sc, steps, closure=True, stagewise=True)[-1]
    none = replay(sc, steps, closure=False, stagewise=True)[-1]
    err = _rel_max(exact, truth[-1], sc.variables)
    err_none = _rel_max(none, truth[-1], sc.variables)
    change = _rel_max(steps[0].state, truth[-1], sc.variables)
    assert err <= 1e-12, (err, err_none, change)
    assert err <= 1e-9 * change           # rounding, not a small fraction of the step
    assert err_none >= 1e3 * err          # the subgrid flux matters in one step


STEP_MEAN = [
    ("kinematic", "cartesian:32", 4, 3.0),
    ("kinematic", "healpix:8", 2, 3.0),
    ("kinematic", "icosahedral:3", 2, 3.0),
    ("kinematic", "cubed:12", 2, 3.0),
    ("barotropic", "cartesian:32", 4, 0.5),
    ("barotropic", "healpix:32", 4, 0.25),     # m = 2: coarse_dt <= tau_forcing binds
    ("convection", "cartesian:32x16", 4, 5.0),
]


@pytest.mark.parametrize("name, mesh, factor, spin", STEP_MEAN,
                         ids=[f"{a}-{b}" for a, b, _, _ in STEP_MEAN])
def test_step_mean_replay_beats_no_closure(name, mesh, factor, spin):
    sc = get_scenario(name, mesh=mesh, factor=factor)
    assert sc.coarse_every > 1 and sc.coarse_dt == pytest.approx(sc.coarse_every * sc.dt)
    t, state = sc.advance(0.0, sc.initial_state(), int(round(spin / sc.dt)))
    steps, truth = _truth(sc, t, state, 10)
    closed = replay(sc, steps, closure=True)[-1]
    none = replay(sc, steps, closure=False)[-1]
    instant = replay(sc, steps, closure=True, instantaneous=True)[-1]
    err = _rel_l2(sc.coarse, closed, truth[-1], sc.variables)
    err_none = _rel_l2(sc.coarse, none, truth[-1], sc.variables)
    err_instant = _rel_l2(sc.coarse, instant, truth[-1], sc.variables)
    assert err_none >= 5 * err, (err, err_none)
    # an instantaneous sample cannot stand for a step spanning several eddy lifetimes
    assert err_instant >= 2 * err, (err, err_instant)


def test_old_barotropic_transport_cannot_be_replayed():
    """Targets made with ``restrict_flux(U_fine)``, a transport the prognostic coarse model
    never sees, leave an error a step-mean replay cannot remove."""
    errs = {}
    for kind in ("poisson", "restrict_flux"):
        sc = get_scenario("barotropic", mesh="cartesian:32", factor=4, coarse_transport=kind)
        assert sc.config["coarse_transport"] == kind
        t, state = sc.advance(0.0, sc.initial_state(), int(round(0.5 / sc.dt)))
        steps, truth = _truth(sc, t, state, 10)
        errs[kind] = _rel_l2(sc.coarse, replay(sc, steps)[-1], truth[-1], sc.variables)
    assert errs["restrict_flux"] >= 3 * errs["poisson"], errs


def test_coarse_model_conserves_with_any_closure():
    """Σ V dQ/dt of the coarse model is the sources' integral whatever the closure returns."""
    sc = get_scenario("kinematic", mesh="healpix:4", factor=2)
    gen = torch.Generator().manual_seed(0)
    phi = torch.randn(sc.coarse.n_faces, dtype=torch.float64, generator=gen)
    closed = sc.coarse_model(closure=lambda t, s, mesh: {"q": phi})
    plain = sc.coarse_model()
    Q = sc.coarsening.restrict(sc.initial_state()["q"])
    V = sc.coarse.cell_volume
    d1 = float((V * closed.rhs(0.0, {"q": Q})["q"]).sum())
    d0 = float((V * plain.rhs(0.0, {"q": Q})["q"]).sum())
    assert abs(d1 - d0) <= 1e-13 * float((V * phi.abs().max()).sum())
    assert float((closed.rhs(0.0, {"q": Q})["q"] - plain.rhs(0.0, {"q": Q})["q"]).abs().max()) > 0


def test_coarse_step_follows_the_coarse_courant_rule():
    sc = get_scenario("kinematic")
    from meshclosure.fv.advection import outflow_courant
    U = sc.coarse_model().base.face_transport(1.0)
    courant = float(outflow_courant(sc.coarse, U, sc.coarse_dt).max())
    assert 0.05 < courant <= 0.5, courant
    assert sc.ood().coarse_dt == pytest.approx(sc.coarse_dt, rel=0.1)
