"""The ``time`` coordinate spans every run: an out-of-distribution run longer than the main
run (or a longer run in a many-run store) gets finite, strictly increasing times, never NaN
from the shorter run's padding."""
from __future__ import annotations

import numpy as np

from meshclosure.data import generate, get_scenario, read_dataset


def test_time_axis_spans_a_longer_ood_run(tmp_path):
    scenario = get_scenario("kinematic", "cartesian:16", factor=4, spinup_time=0.05)
    out = generate(scenario, tmp_path / "d.nc", n_samples=3, ood_samples=6, every=2,
                   progress=False)
    ds = read_dataset(out)
    time = np.asarray(ds["time"].values)
    assert time.shape == (6,) and np.isfinite(time).all() and (np.diff(time) > 0).all()
    mt = np.asarray(ds["model_time"].values)
    # the axis is the OOD run's (the longest), and the main run's times match it where held
    np.testing.assert_allclose(time, mt[1] - mt[1, 0], rtol=0, atol=1e-12)
    # (the OOD run samples at the main run's interval to within one of its fine steps)
    step = float(ds["run_dt"].values[1])
    assert (np.abs(mt[0, :3] - mt[0, 0] - time[:3]) <= np.arange(3) * step + 1e-12).all()
