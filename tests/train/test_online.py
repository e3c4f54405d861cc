"""Online training through the coarse hybrid model: exact gradients, same gradients with
checkpointing and a long truncation window, a loss that training lowers, a guard that
undoes a blown-up update, and the curriculum.

Float64, 8x8 coarse Cartesian meshes; one small kinematic and one small
barotropic trajectory dataset (the barotropic one from a 5-step start, no
spin-up: only the mechanics are tested here).
"""
from __future__ import annotations

import pytest
import torch

from meshclosure.closures import Closure, FeaturePipeline, ModelClosure, Normalizer
from meshclosure.data import TrajectoryDataset, build_dataset, generate, write_dataset
from meshclosure.data.scenarios import Scenario, get_scenario
from meshclosure.data.trajectory import replay_window, trajectory_samples
from meshclosure.errors import ArgumentError
from meshclosure.nn import build_model
from meshclosure.solver import STAGES, current_stage
from meshclosure.train.online import (Curriculum, LastGoodWeights, online_loss, rollout_finite,
                                      state_scales, unroll)

K = 3


@pytest.fixture(scope="module")
def kinematic(tmp_path_factory):
    out = tmp_path_factory.mktemp("online") / "k.nc"
    sc = get_scenario("kinematic", mesh="cartesian:16", factor=2, spinup_time=0.5)
    generate(sc, out, n_samples=10, ood_samples=0, trajectory=True, progress=False)
    return TrajectoryDataset(out, "train", K)


@pytest.fixture(scope="module")
def barotropic(tmp_path_factory):
    sc = get_scenario("barotropic", mesh="cartesian:16", factor=2)
    t, state = sc.advance(0.0, sc.initial_state(), 5)
    samples = [s for _, _, s in trajectory_samples(sc, t, state, 8)]
    ds = build_dataset(samples, sc.coarse, config=sc.config, seed=0,
                       attrs={"coarse_dt": sc.coarse_dt, "stage_times": STAGES["ssprk3"].c})
    out = write_dataset(ds, tmp_path_factory.mktemp("online") / "b.nc")
    return TrajectoryDataset(out, "train", K)


def _setup(data, seed=0, hidden=4):
    sc = Scenario.from_config(data.scenario_config)
    torch.manual_seed(seed)
    pipe = FeaturePipeline.from_scenario(sc)
    model = build_model("mgn", sc.coarse, in_features=pipe.n_features,
                        n_vars=len(sc.variables), hidden=hidden, n_blocks=1).double()
    return sc, ModelClosure(model, pipe, Normalizer.from_stats(data.stats))


def _batch(data, n=None):
    return data.collate([data[i] for i in range(min(len(data), n or len(data)))])


def _grad(sc, closure, batch, **kw):
    closure.zero_grad()
    loss, _ = online_loss(sc, closure, batch, K, **kw)
    loss.backward()
    return loss.detach(), torch.cat([p.grad.reshape(-1) for p in closure.parameters()])


class _StepMeanFlux(Closure):
    """The window's stored step-mean subgrid flux of the step in progress."""

    def __init__(self, window):
        self.window = window

    def fluxes(self, t, state, mesh, transport=None):
        j = current_stage().step
        return {v: f[j] for v, f in self.window["flux_mean"].items()}


@pytest.mark.parametrize("name", ["kinematic", "barotropic"])
def test_unroll_with_the_stored_flux_is_the_replay(name, request):
    """Known solution: closing with the stored step means reproduces replay_window (the
    stored forcing replayed too), and a batch unrolls as its windows one by one."""
    data = request.getfixturevalue(name)
    sc = Scenario.from_config(data.scenario_config)
    w = data[0]
    ours = unroll(sc, _StepMeanFlux(w), w, K)
    ref = replay_window(sc, w)
    for a, b in zip(ours, ref):
        for v in sc.variables:
            assert torch.equal(a[v], b[v])
    none = unroll(sc.config, None, w, K)                 # a config dict works too
    for a, b in zip(none, replay_window(sc, w, closure=False)):
        assert all(torch.equal(a[v], b[v]) for v in sc.variables)
    # the step-mean closure tracks the truth better than none
    v = sc.variables[0]
    assert float(((ours[-1][v] - w["states"][v][K - 1]) ** 2).sum()) \
        < float(((none[-1][v] - w["states"][v][K - 1]) ** 2).sum())
    _, closure = _setup(data)
    batch = _batch(data, 2)
    with torch.no_grad():
        both = unroll(sc, closure, batch, 2)
        for b in range(len(batch["t"])):
            one = unroll(sc, closure, data[b], 2)
            for j in range(2):
                for v in sc.variables:
                    assert torch.equal(both[j][v][b], one[j][v])


@pytest.mark.parametrize("name", ["kinematic", "barotropic"])
def test_online_gradient_matches_central_differences(name, request):
    """dL/dθ of the K=3 online loss against central differences along the gradient, the
    largest single weight and random directions (barotropic: through the coarse Poisson
    solve, whose transport feeds every later stage)."""
    data = request.getfixturevalue(name)
    sc, closure = _setup(data)
    batch = _batch(data, 2)
    scale = state_scales(data.stats)
    params = [p for p in closure.parameters() if p.requires_grad]
    loss, _ = online_loss(sc, closure, batch, K, state_scale=scale)
    grads = torch.autograd.grad(loss, params)
    g = torch.cat([x.reshape(-1) for x in grads])
    assert float(g.abs().max()) > 0
    theta = torch.cat([p.detach().reshape(-1) for p in params])

    def loss_at(vec):
        with torch.no_grad():
            torch.nn.utils.vector_to_parameters(vec, params)
            value = online_loss(sc, closure, batch, K, state_scale=scale)[0]
            torch.nn.utils.vector_to_parameters(theta, params)
        return float(value)

    def central(d, h):
        return (loss_at(theta + h * d) - loss_at(theta - h * d)) / (2 * h)

    gen = torch.Generator().manual_seed(1)
    top = int(g.abs().argmax())
    directions = [g, torch.nn.functional.one_hot(torch.tensor(top), theta.numel()).double()]
    directions += [torch.randn(theta.shape, dtype=torch.float64, generator=gen)
                   for _ in range(2)]
    for d in directions:
        d = d / d.norm()
        h = 1e-2                 # Richardson-extrapolated central differences: O(h⁴)
        fd = (4 * central(d, h / 2) - central(d, h)) / 3
        ad = float(g @ d)
        assert abs(fd - ad) <= 1e-6 * abs(ad), (name, fd, ad)


@pytest.mark.parametrize("name", ["kinematic", "barotropic"])
def test_checkpointing_and_long_truncation_give_the_plain_gradient(name, request):
    data = request.getfixturevalue(name)
    sc, closure = _setup(data)
    batch = _batch(data, 2)
    l0, g0 = _grad(sc, closure, batch)
    for kw in ({"checkpoint": True}, {"truncation": K}, {"truncation": 10},
               {"checkpoint": True, "truncation": K}):
        l1, g1 = _grad(sc, closure, batch, **kw)
        assert float((l1 - l0).abs()) == 0.0
        assert float((g1 - g0).abs().max()) <= 1e-12, kw
    # truncation=1: the gradient of Σ_j e_j with each step started from the detached state
    l1, g1 = _grad(sc, closure, batch, truncation=1)
    _, g1c = _grad(sc, closure, batch, truncation=1, checkpoint=True)
    assert float(l1) == float(l0) and float((g1 - g1c).abs().max()) <= 1e-12
    assert float((g1 - g0).abs().max()) > 1e-6 * float(g0.abs().max())
    with torch.no_grad():
        free = unroll(sc, closure, batch, K)
    closure.zero_grad()
    total = 0.0
    for j in range(K):
        window = dict(batch)
        if j > 0:
            window["state"] = {v: free[j - 1][v] for v in sc.variables}
        window["t"] = batch["t"][:, j:j + 2]
        window["states"] = {v: batch["states"][v][:, j:j + 1] for v in sc.variables}
        window["forcing_mean"] = {v: f[:, j:j + 1] for v, f in batch["forcing_mean"].items()}
        if "transport_stages" in batch:
            window["transport_stages"] = batch["transport_stages"][:, j:j + 1]
        loss, _ = online_loss(sc, closure, window, 1)
        (loss / K).backward()
        total += float(loss.detach()) / K
    manual = torch.cat([p.grad.reshape(-1) for p in closure.parameters()])
    assert abs(total - float(l1)) <= 1e-12 * abs(total)
    assert float((manual - g1).abs().max()) <= 1e-12 * max(1.0, float(g1.abs().max()))


def test_recurrent_closure_checkpointed_gradient_and_reset(kinematic):
    sc = Scenario.from_config(kinematic.scenario_config)
    torch.manual_seed(0)
    pipe = FeaturePipeline.from_scenario(sc)
    gru = build_model("gru", sc.coarse, in_features=pipe.n_features, n_vars=1,
                      hidden=4).double()
    closure = ModelClosure(gru, pipe, Normalizer.from_stats(kinematic.stats))
    assert closure.recurrent
    batch = _batch(kinematic, 2)
    l0, g0 = _grad(sc, closure, batch)
    l1, g1 = _grad(sc, closure, batch, checkpoint=True)
    assert float(l1) == float(l0) and float((g1 - g0).abs().max()) <= 1e-12
    # the memory is reset per window: the batch's windows unroll as they do alone
    with torch.no_grad():
        both = unroll(sc, closure, batch, K)
        alone = unroll(sc, closure, kinematic[1], K)
    assert torch.equal(both[-1]["q"][1], alone[-1]["q"])


def test_sampled_closure_on_the_global_rng_checkpoints_exactly(kinematic):
    """A stochastic closure drawing from the global RNG: checkpointing restores the RNG for
    the recomputed steps, so the same seed gives the plain gradient."""
    sc = Scenario.from_config(kinematic.scenario_config)
    torch.manual_seed(0)
    pipe = FeaturePipeline.from_scenario(sc)
    model = build_model("mgn", sc.coarse, in_features=pipe.n_features, n_vars=1, hidden=4,
                        n_blocks=1, heteroscedastic=True).double()
    closure = ModelClosure(model, pipe, Normalizer.from_stats(kinematic.stats), mode="sample")
    batch = _batch(kinematic, 1)
    torch.manual_seed(5)
    l0, g0 = _grad(sc, closure, batch)
    torch.manual_seed(5)
    l1, g1 = _grad(sc, closure, batch, checkpoint=True)
    torch.manual_seed(6)
    l2, _ = _grad(sc, closure, batch)
    assert float(l1) == float(l0) != float(l2)
    assert float((g1 - g0).abs().max()) <= 1e-12


def test_loss_is_the_weighted_mean_of_the_step_errors(barotropic):
    """e_j by hand (volume-weighted, per-variable scaled); weights pick steps; statistics
    give the same scales as state_scales."""
    sc, closure = _setup(barotropic)
    w = barotropic[0]
    scale = state_scales(barotropic.stats)
    assert set(scale) == {"zeta", "q"} and scale["zeta"] != scale["q"]
    with torch.no_grad():
        loss, info = online_loss(sc, closure, w, K, state_scale=scale)
        again, _ = online_loss(sc, closure, w, K, state_scale=barotropic.stats)
        first, _ = online_loss(sc, closure, w, K, state_scale=scale, weights=[1.0, 0.0, 0.0])
    V = sc.coarse.cell_volume
    for j in range(K):
        e = sum(float((V * (info["states"][j][v] - w["states"][v][j]) ** 2).sum() / V.sum())
                / scale[v] ** 2 for v in sc.variables) / 2
        assert abs(float(info["step_error"][j]) - e) <= 1e-12 * e
    assert float(loss) == pytest.approx(float(info["step_error"].mean()), rel=1e-14)
    assert float(again) == float(loss) and float(first) == float(info["step_error"][0])
    assert info["steps"] == K and info["finite"]


def test_online_loss_decreases_with_adam(kinematic):
    sc, closure = _setup(kinematic, seed=3, hidden=8)
    batch = _batch(kinematic, 2)
    scale = state_scales(kinematic.stats)
    opt = torch.optim.Adam(closure.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        opt.zero_grad()
        loss, info = online_loss(sc, closure, batch, K, state_scale=scale)
        assert info["finite"]
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    # 0.129 -> 0.081 (no closure: 0.130; the stored step-mean flux: 0.0005, the subgrid
    # flux dominates here)
    assert losses[-1] < 0.8 * losses[0], losses
    assert sum(b < a for a, b in zip(losses, losses[1:])) >= 12, losses


class _BlowUp(Closure):
    """A trainable closure whose flux turns infinite from call ``after`` on."""

    def __init__(self, inner, after):
        self.inner, self.after, self.calls = inner, after, 0

    def fluxes(self, t, state, mesh, transport=None):
        self.calls += 1
        out = self.inner.fluxes(t, state, mesh, transport)
        if self.calls > self.after:
            return {v: f * float("inf") for v, f in out.items()}
        return out


def test_non_finite_rollout_is_reported_and_the_guard_restores(kinematic):
    sc, closure = _setup(kinematic)
    batch = _batch(kinematic, 1)
    opt = torch.optim.Adam(closure.parameters(), lr=1e-2)
    guard = LastGoodWeights(closure, opt)
    loss, info = online_loss(sc, closure, batch, K)
    assert info["finite"] and rollout_finite(info["states"])
    loss.backward()
    opt.step()
    guard.save()
    good = {k: v.clone() for k, v in closure.state_dict().items()}
    moments = {k: v.clone() for k, v in opt.state_dict()["state"][0].items()}
    bad = _BlowUp(closure, after=4)                   # 3 stages a step: step 2 blows up
    loss, info = online_loss(sc, bad, batch, K)
    assert not info["finite"] and not rollout_finite(info["states"])
    assert rollout_finite(info["states"][:1])
    assert not torch.isfinite(info["step_error"][1:]).all()
    opt.zero_grad()
    loss.backward()
    opt.step()                                       # the bad update poisons the weights
    assert not all(torch.isfinite(p).all() for p in closure.parameters())
    guard.restore()
    for k, v in closure.state_dict().items():
        assert torch.equal(v, good[k])
    for k, v in opt.state_dict()["state"][0].items():
        assert torch.equal(v, moments[k])
    assert guard.restores == 1


def test_curriculum():
    c = Curriculum([(0, 1), (5, 3), (10, 10)])
    assert [c(i) for i in range(12)] == [1] * 5 + [3] * 5 + [10] * 2
    assert c.max_steps == 10 and Curriculum.from_config(c.to_config())(7) == 3
    lin = Curriculum([(0, 1), (4, 5), (6, 5)], mode="linear")
    assert [lin(i) for i in range(8)] == [1, 2, 3, 4, 5, 5, 5, 5]
    for bad in ([], [(1, 2)], [(0, 1), (0, 2)], [(0, 0)], [(0, 1.5)], "abc", [(0, 1), (3,)]):
        with pytest.raises(ArgumentError, match="schedule=.*Curriculum\\(\\[\\(0, 1\\)"):
            Curriculum(bad)
    with pytest.raises(ArgumentError, match="mode='cosine'"):
        Curriculum([(0, 1)], mode="cosine")
    with pytest.raises(ArgumentError, match="i=-1"):
        c(-1)


def test_arguments_are_checked(kinematic, barotropic):
    sc, closure = _setup(kinematic)
    w = kinematic[0]
    with pytest.raises(ArgumentError, match="steps=0: must be an integer >= 1"):
        unroll(sc, closure, w, 0)
    with pytest.raises(ArgumentError, match="steps=4: must be <= the window's length \\(3.*"
                                            "length=4"):
        online_loss(sc, closure, w, 4)
    with pytest.raises(ArgumentError, match="truncation=0: must be None or an integer >= 1"):
        unroll(sc, closure, w, 2, truncation=0)
    with pytest.raises(ArgumentError, match="forcing='truth'"):
        unroll(sc, closure, w, 2, forcing="truth")
    with pytest.raises(ArgumentError, match="weights=.*one per step"):
        online_loss(sc, closure, w, 2, weights=[1.0])
    with pytest.raises(ArgumentError, match="state_scale="):
        online_loss(sc, closure, w, 2, state_scale={"q": 0.0})
    other = get_scenario("kinematic", mesh="cartesian:16", factor=2, spinup_time=0.5, seed=7)
    with pytest.raises(ArgumentError, match="scenario=.*the scenario the window was generated"):
        unroll(other, None, w, 1)
    b = Scenario.from_config(barotropic.scenario_config)
    with pytest.raises(ArgumentError, match="must have the window's variables"):
        unroll(b, None, w, 1)
    sampled = ModelClosure(closure.model, closure.features, closure.normalizer, mode="sample",
                           generator=torch.Generator())
    with pytest.raises(ArgumentError, match="checkpoint=True: cannot be used with a closure that "
                                            "samples"):
        unroll(sc, sampled, w, 1, checkpoint=True)
    wrong_dt = dict(w, t=w["t"] * 2)
    with pytest.raises(ArgumentError, match="must have the window's coarse step"):
        unroll(sc, None, wrong_dt, 1)
