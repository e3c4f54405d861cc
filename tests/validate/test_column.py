"""The single-column model against the horizontally averaged convection truth.

Known answers: the mixed-layer depth of a hand-built profile (mixed up to
``h``, stable above) is ``h`` to one level, and on a horizontally uniform fine
state it is the scenario's own value; the dataset's ``state_b`` is the
horizontal (and level-group) average; the replay tracks the truth profile far
better than no closure; a column truth from rest deepens its mixed layer; the
paired differences over seeds are those of paired_difference.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from meshclosure.data import build_dataset, get_scenario, write_dataset
from meshclosure.data.trajectory import trajectory_samples
from meshclosure.errors import ArgumentError
from meshclosure.solver import STAGES
from meshclosure.train.baselines import DiffusivityClosure
from meshclosure.train.skill import paired_difference
from meshclosure.validate.column import (ColumnTruth, column_truth, growth_rate,
                                         mixed_layer_depth_profile, single_column)

N_STEPS = 70            # 13.5 time units at coarse_dt 0.193: the layer deepens 0.28 -> 0.41


def _scenario(seed=0):
    return get_scenario("convection", mesh="cartesian:32x16", factor=4, seed=seed)


@pytest.fixture(scope="module")
def truths():
    return [column_truth(_scenario(s), N_STEPS) for s in range(3)]


@pytest.fixture(scope="module")
def result(truths):
    return single_column(truths, {"K": DiffusivityClosure("b", K=2e-3)})


def test_depth_of_a_hand_built_profile_is_h_to_one_level():
    for n in (8, 16, 32):
        z = (np.arange(n) + 0.5) / n
        for h in (0.3, 0.41, 0.5, 0.77):
            b = 1.3 * np.maximum(z - h, 0.0)                     # mixed below h, N² = 1.3 above
            d = mixed_layer_depth_profile(z, b, N2=1.3, height=1.0)
            assert abs(d - h) <= 1.0 / n, (n, h, d)
    z = (np.arange(8) + 0.5) / 8
    assert mixed_layer_depth_profile(z, z, N2=1.0) == z[0]        # stable everywhere
    assert mixed_layer_depth_profile(z, -z, N2=1.0, height=1.0) == 1.0   # unstable to the lid
    batch = np.stack([np.maximum(z - 0.5, 0), np.maximum(z - 0.25, 0)])
    assert mixed_layer_depth_profile(z, batch, 1.0).tolist() == [0.5625, 0.3125]


def test_depth_equals_the_scenarios_on_a_uniform_fine_state():
    sc = _scenario()
    zc = sc.fine.cell_center[:, 1].double().contiguous()
    levels = torch.unique(zc)
    rng = np.random.default_rng(3)
    for h in (0.2, 0.45, 0.7):
        for profile in (lambda z: torch.clamp(z - h, min=0.0),
                        lambda z: torch.clamp(z - h, min=0.0) + 0.05 * torch.sin(9 * z)
                        * (z < h)):
            b_levels = profile(levels)
            b = b_levels[torch.searchsorted(levels, zc)]
            expect = sc.mixed_layer_depth({"b": b, "zeta": torch.zeros_like(b)})
            got = mixed_layer_depth_profile(levels.numpy(), b_levels.numpy(),
                                            sc.params["stratification"], sc.params["height"])
            assert got == expect, (h, got, expect)
    b_levels = torch.as_tensor(rng.standard_normal(len(levels))).cumsum(0)
    b = b_levels[torch.searchsorted(levels, zc)]
    assert mixed_layer_depth_profile(levels, b_levels, 1.0, 1.0) == sc.mixed_layer_depth(
        {"b": b, "zeta": torch.zeros_like(b)})


def test_stored_profile_is_the_horizontal_average():
    sc = _scenario()
    t, state = sc.advance(0.0, sc.initial_state(), 40)
    ((_, _, sample),) = list(trajectory_samples(sc, t, state, 1))
    z = sc.fine.cell_center[:, 1].double().numpy()
    V = sc.fine.cell_volume.double().numpy()
    nz = sc.fine.info["ny"]
    group = np.floor(z * nz / sc.params["height"]).astype(int) // sc.factor
    b = state["b"].numpy()
    by_hand = np.bincount(group, V * b) / np.bincount(group, V)
    zc, bc = sc.column_profile(state)
    assert np.allclose(sample.state["b"].numpy(), by_hand, rtol=0, atol=1e-14)
    assert np.allclose(bc.numpy(), by_hand, rtol=0, atol=1e-14)
    assert np.allclose(zc.numpy(), np.bincount(group, V * z) / np.bincount(group, V))


def test_truth_from_rest_deepens_its_mixed_layer(truths):
    for tr in truths:
        assert tr.b.shape == (N_STEPS + 1, 4) and tr.flux.shape[0] == N_STEPS
        assert tr.depth_fine[0] < 0.3 and tr.depth_fine[-1] - tr.depth_fine[0] >= 0.1
        assert growth_rate(tr.t, tr.depth_fine) > 0.005         # measured ≈ 0.01
        assert np.allclose(tr.t[1:] - tr.t[:-1], tr.scenario.coarse_dt, rtol=1e-12)


def test_replay_tracks_the_truth_far_better_than_none(result):
    m = result.metrics
    assert m["replay"]["profile_rmse"] <= 1e-3 * m["none"]["profile_rmse"]
    assert m["none"]["similarity"] == 0.0 and m["replay"]["similarity"] > 0.99
    assert m["replay"]["depth_error"] == 0.0
    assert m["replay"]["growth_error"] == pytest.approx(0.0, abs=1e-12)
    assert m["truth"]["growth_rate"] > 0 and m["truth"]["growth_rate_fine"] > 0
    for name in ("none", "replay", "K"):
        assert math.isinf(m[name]["blowup_step"])
        assert m[name]["profile_rmse_se"] == pytest.approx(
            np.std(result.per_seed[name]["profile_rmse"], ddof=1) / math.sqrt(3), rel=1e-12)
    t, h = result.series["mixed_layer_depth"]["truth"]
    assert t[0] == 0.0 and len(t) == N_STEPS + 1
    t, e = result.series["profile_rmse"]["none"]
    assert e[0] == 0.0 and e[-1] > 0
    assert set(result.profiles) == {"truth", "none", "replay", "K"}
    assert np.array_equal(result.profiles["truth"][0], result.profiles["none"][0])


def test_paired_differences_over_seeds(result):
    assert set(result.comparisons) == {"none - K"}
    for metric in ("profile_rmse", "depth_error"):
        c = result.comparisons["none - K"].get(metric)
        if c is None:
            continue
        d = paired_difference(result.per_seed["none"][metric], result.per_seed["K"][metric])
        assert (c["mean"], c["se"], c["n"]) == (d.mean, d.se, 3)
        assert c["better"] == (None if abs(d.mean) <= 2 * d.se
                               else ("none" if d.mean < 0 else "K"))
    rows = result.rows()
    assert {"closure": "K", "metric": "profile_rmse", "variable": "b",
            "value": result.metrics["K"]["profile_rmse"]} in rows
    assert any(r["closure"] == "none - K" and r["metric"] == "profile_rmse.paired_mean"
               for r in rows)


def test_a_dataset_gives_windows_of_the_split(tmp_path):
    sc = _scenario()
    t, state = sc.advance(0.0, sc.initial_state(), 100)
    samples = [s for _, _, s in trajectory_samples(sc, t, state, 14)]
    ds = build_dataset(samples, sc.coarse, config=sc.config, seed=0,
                       attrs={"coarse_dt": sc.coarse_dt, "stage_times": STAGES["ssprk3"].c})
    path = write_dataset(ds, tmp_path / "c.nc")
    r = single_column(path, split="train", n_seeds=2)
    assert len(r.per_seed["none"]["profile_rmse"]) == 2
    assert r.metrics["replay"]["profile_rmse"] <= 1e-3 * r.metrics["none"]["profile_rmse"]
    assert any("train window" in n for n in r.notes)


def test_arguments(truths, kinematic_traj):
    with pytest.raises(ArgumentError, match="scenario='kinematic': must be a 'convection'"):
        column_truth(get_scenario("kinematic", mesh="cartesian:8", factor=2), 3)
    with pytest.raises(ArgumentError, match="initial='spun'"):
        column_truth(_scenario(), 3, initial="spun")
    with pytest.raises(ArgumentError, match="prescribed_flow"):
        single_column(kinematic_traj, split="train")
    with pytest.raises(ArgumentError, match="must not name a closure 'none'"):
        single_column(truths[:1], {"none": None})
    with pytest.raises(ArgumentError, match="b='shape \\(4,\\)': must end with the 3 levels"):
        mixed_layer_depth_profile([0.1, 0.2, 0.3], np.zeros(4), 1.0)
    assert isinstance(truths[0], ColumnTruth)


def test_start_time_skips_the_onset():
    sc = _scenario()
    tr = column_truth(sc, 3, start_time=1.0, step_means=False)
    assert tr.t[0] == pytest.approx(round(1.0 / sc.dt) * sc.dt, rel=1e-12) and tr.flux is None
    assert "start_time=1" in tr.source
    r = single_column(tr)
    assert "replay" not in r.metrics and r.metrics["none"]["similarity"] == 0.0
    with pytest.raises(ArgumentError, match="start_time=-1.0: must be a finite time >= 0"):
        column_truth(sc, 3, start_time=-1.0)


class _ZeroTendency:
    variables = ("b",)

    def tendencies(self, t, state, mesh, transport=None):
        return {"b": torch.zeros(mesh.n_cells, dtype=torch.float64)}


def test_a_tendency_closure_runs_through_with_tendency(truths):
    r = single_column(truths[:1], {"zero": _ZeroTendency()})
    assert r.per_seed["zero"] == {**r.per_seed["none"]}


def test_an_early_blowup_is_never_scored_better_than_none(truths):
    """A closure NaN from step 4 on (its first steps exactly the no-closure run) and a
    finite runaway (anti-diffusion: finite, past 10 × max|b| at once): errors inf,
    similarity -inf, the step reported, named in the comparisons, never 'better'."""
    from meshclosure.train.baselines import face_gradient

    dt = truths[0].scenario.coarse_dt

    def nan4(t, state, mesh):
        zero = torch.zeros(mesh.n_faces, dtype=torch.float64)
        return {"b": zero + (float("nan") if t > 3.25 * dt else 0.0)}

    def runaway(t, state, mesh):
        return {"b": 50.0 * face_gradient(mesh, state["b"])}

    r = single_column(truths, {"nan4": nan4, "runaway": runaway})
    assert all(tr.t[0] == 0.0 for tr in truths)
    for name in ("nan4", "runaway"):
        m = r.metrics[name]
        assert m["similarity"] == -math.inf and r.per_seed[name]["similarity"] == [-math.inf] * 3
        assert m["profile_rmse"] == m["depth_error"] == math.inf
        assert "profile_rmse_se" not in m
        for pair in (f"none - {name}", "nan4 - runaway"):
            for metric in ("profile_rmse", "depth_error"):
                c = r.comparisons[pair][metric]
                assert c["better"] is None and name in c["blown_up"], (pair, metric)
        assert any(n.startswith(f"{name}: blew up at step") for n in r.notes)
    assert r.per_seed["nan4"]["blowup_step"] == [4.0] * 3
    assert r.metrics["nan4"]["blowup_time"] == pytest.approx(4 * dt, rel=1e-12)
    assert r.metrics["runaway"]["blowup_step"] == 1
    assert any("runaway: blew up at step 1" in n and "max|b|" in n for n in r.notes)
    # the other rows are unchanged
    assert r.per_seed["none"]["profile_rmse"] == single_column(truths).per_seed["none"][
        "profile_rmse"]
