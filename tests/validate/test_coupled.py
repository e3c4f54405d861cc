"""Partially coupled validation: the tracer runs with the flow prescribed from the truth.

Known answers: the replay of the stored step-mean subgrid flux tracks the truth
far better than no closure; "none" has similarity 0 by definition; a zero
closure gives exactly the "none" row; the closure sees the truth vorticity at
the stored coarse steps; an anti-diffusive closure blows up and is reported.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from meshclosure.data import build_dataset, get_scenario, read_dataset, write_dataset
from meshclosure.data.trajectory import trajectory_samples
from meshclosure.errors import ArgumentError
from meshclosure.solver import STAGES
from meshclosure.train.baselines import face_gradient
from meshclosure.validate.coupled import metric_rows, prescribed_flow
from meshclosure.validate.metrics import weighted_corr, weighted_rmse


def _trajectory_file(path, name, mesh, factor, spin, n):
    """A trajectory dataset of ``n`` coarse steps after ``spin`` time units (no generate():
    the barotropic spin-up to equilibrium would take minutes)."""
    sc = get_scenario(name, mesh=mesh, factor=factor)
    t, state = sc.advance(0.0, sc.initial_state(), int(round(spin / sc.dt)))
    samples = [s for _, _, s in trajectory_samples(sc, t, state, n)]
    ds = build_dataset(samples, sc.coarse, config=sc.config, seed=0,
                       attrs={"coarse_dt": sc.coarse_dt, "stage_times": STAGES["ssprk3"].c})
    return write_dataset(ds, path)


@pytest.fixture(scope="module")
def baro(tmp_path_factory):
    """barotropic cartesian:32 -> 8², 15 coarse steps (train block: 10 states)."""
    return _trajectory_file(tmp_path_factory.mktemp("coupled") / "b.nc", "barotropic",
                            "cartesian:32", 4, 0.5, 15)


def test_replay_beats_none_and_none_scores_zero(baro):
    r = prescribed_flow(baro, split="train", n_initial=2, n_steps=8)
    assert r.evolved == ("q",) and r.prescribed == ("zeta",)
    none, replay = r.metrics["none"], r.metrics["replay"]
    assert none["similarity"] == 0.0 and none["q.similarity"] == 0.0
    assert replay["q.rmse_end"] <= 0.05 * none["q.rmse_end"]       # measured 0.0011 vs 0.116
    assert replay["similarity"] > 0.95
    assert replay["q.corr_mean"] > none["q.corr_mean"]
    assert math.isinf(none["blowup_step"]) and math.isinf(replay["blowup_step"])
    lead, rms = r.series["q.rmse"]["none"]
    assert lead.shape == rms.shape == (9,) and rms[0] == 0.0      # starts on the truth
    assert np.allclose(np.diff(lead), r.window["coarse_dt"], rtol=1e-12)
    assert r.window["n_initial"] == 2 and len(r.window["starts"]) == 2
    assert "zeta" in r.notes[0]
    rows = r.rows()
    assert {"closure": "replay", "metric": "rmse_end", "variable": "q",
            "value": replay["q.rmse_end"]} in rows


def test_the_closure_sees_the_truth_flow_and_a_zero_closure_is_none(baro):
    seen = []

    def zero(t, state, mesh):
        seen.append((t, state["zeta"].clone()))
        return {"q": torch.zeros(mesh.n_faces, dtype=torch.float64)}

    r = prescribed_flow(baro, {"zero": zero}, split="train", n_initial=1, n_steps=3)
    assert r.metrics["zero"] == r.metrics["none"]
    ds = read_dataset(baro)
    t = np.asarray(ds["model_time"].values[0])
    zeta = np.asarray(ds["state_zeta"].values[0])
    times = [s for s, _ in seen]
    assert len(seen) == 9                                          # 3 steps x 3 stages
    k0 = int(np.argmin(np.abs(t - times[0])))
    for s, z in seen:
        x = (s - t[k0]) / (t[k0 + 1] - t[k0])
        j = int(np.floor(x + 1e-9))
        theta = x - j
        if abs(theta) < 1e-9:                                      # a stored coarse step
            assert np.allclose(z.numpy(), zeta[k0 + j], rtol=0, atol=1e-13)
        else:                                                      # a mid-step stage
            expect = (1 - theta) * zeta[k0 + j] + theta * zeta[k0 + j + 1]
            assert np.allclose(z.numpy(), expect, rtol=0, atol=1e-12)


class _ZeroTendency:
    """A cell-tendency closure (the interface of nodewise's) that adds nothing."""

    variables = ("q",)

    def tendencies(self, t, state, mesh, transport=None):
        return {"q": torch.zeros(mesh.n_cells, dtype=torch.float64)}


def test_a_tendency_closure_runs_through_with_tendency(baro):
    r = prescribed_flow(baro, {"zero": _ZeroTendency()}, split="train", n_initial=1,
                        n_steps=3)
    assert r.metrics["zero"] == r.metrics["none"]


def test_an_unstable_closure_blows_up_and_is_reported(baro):
    def anti(t, state, mesh):
        return {"q": -1e30 * face_gradient(mesh, state["q"])}

    r = prescribed_flow(baro, {"anti": anti}, split="train", n_initial=1, n_steps=8)
    step = r.metrics["anti"]["blowup_step"]
    assert 1 <= step <= 8 and any("anti: blew up at step" in n for n in r.notes)
    lead, rms = r.series["q.rmse"]["anti"]
    assert np.isnan(rms[int(step):]).all() and not np.isnan(rms[:int(step)]).any()
    assert r.metrics["anti"]["similarity"] == -math.inf


def _nan_after(t_bad):
    def closure(t, state, mesh):
        zero = torch.zeros(mesh.n_faces, dtype=torch.float64)
        return {"q": zero + (float("nan") if t > t_bad else 0.0)}
    return closure


def test_an_early_blowup_is_never_scored_better_than_none(baro):
    """A closure NaN at step 4 (its first steps exactly the truth-free "none" run) and a
    finite runaway flux (1e300, no NaN for a while): both blown up, distance inf,
    similarity -inf, the step reported, never better than no closure."""
    probe = prescribed_flow(baro, split="train", n_initial=2, n_steps=8)
    t0, dt = probe.window["starts"], probe.window["coarse_dt"]

    def nan4(t, state, mesh):                     # NaN from the stages of step 4 of each member
        lead = min(t - s for s in t0 if t >= s - 1e-12)
        zero = torch.zeros(mesh.n_faces, dtype=torch.float64)
        return {"q": zero + (float("nan") if lead > 3.25 * dt else 0.0)}

    def runaway(t, state, mesh):
        return {"q": torch.full((mesh.n_faces,), 1e300, dtype=torch.float64)
                * torch.sign(face_gradient(mesh, state["q"]))}

    r = prescribed_flow(baro, {"nan4": nan4, "runaway": runaway}, split="train",
                        n_initial=2, n_steps=8)
    none = r.metrics["none"]
    for name in ("nan4", "runaway"):
        m = r.metrics[name]
        assert m["similarity"] == -math.inf and m["q.similarity"] == -math.inf, name
        assert m["q.rmse_mean"] == math.inf and m["q.rmse_end"] == math.inf
        assert m["q.rmse_mean"] > none["q.rmse_mean"]
        assert any(n.startswith(f"{name}: blew up at step") for n in r.notes)
    assert r.metrics["nan4"]["blowup_step"] == 4
    assert r.metrics["nan4"]["blowup_time"] == pytest.approx(4 * dt)
    assert r.metrics["runaway"]["blowup_step"] == 1          # past 10 × max|q| at once
    assert any("runaway: blew up at step 1" in n and "max|q|" in n for n in r.notes)
    # the none and replay rows are unchanged by them
    assert r.metrics["none"] == probe.metrics["none"]


def test_kinematic_coincides_with_online(kinematic_traj):
    r = prescribed_flow(kinematic_traj, split="train", n_initial=3, n_steps=5)
    assert r.prescribed == () and r.evolved == ("q",)
    assert any("coincides with the online run" in n for n in r.notes)
    assert r.metrics["replay"]["q.rmse_end"] <= 0.2 * r.metrics["none"]["q.rmse_end"]
    assert r.metrics["none"]["similarity"] == 0.0


def test_arguments(baro, tmp_path):
    with pytest.raises(ArgumentError, match="n_initial=20: must be at most the"):
        prescribed_flow(baro, split="train", n_initial=20, n_steps=8)
    with pytest.raises(ArgumentError, match="closures=.*must not name a closure 'none'"):
        prescribed_flow(baro, {"none": None}, split="train")
    with pytest.raises(ArgumentError, match="growth_bound=1"):
        prescribed_flow(baro, split="train", growth_bound=1)
    with pytest.raises(ArgumentError, match="n_steps=0: must be a whole number >= 1"):
        prescribed_flow(baro, split="train", n_steps=0)
    conv = _trajectory_file(tmp_path / "c.nc", "convection", "cartesian:16x8", 2, 0.5, 6)
    with pytest.raises(ArgumentError, match="single_column"):
        prescribed_flow(conv, split="train")


def test_helpers_by_hand():
    V = torch.tensor([1.0, 3.0], dtype=torch.float64)
    a, b = torch.tensor([1.0, 2.0], dtype=torch.float64), torch.tensor([0.0, 0.0],
                                                                      dtype=torch.float64)
    assert float(weighted_rmse(a, b, V)) == pytest.approx(math.sqrt((1 + 12) / 4), rel=1e-15)
    assert float(weighted_corr(a, 2 * a + 1, V)) == pytest.approx(1.0, rel=1e-14)
    assert float(weighted_corr(a, -a, V)) == pytest.approx(-1.0, rel=1e-14)
    assert metric_rows({"x": {"q.a": 1, "b": 2}}) == [
        {"closure": "x", "metric": "a", "variable": "q", "value": 1.0},
        {"closure": "x", "metric": "b", "variable": "", "value": 2.0}]
