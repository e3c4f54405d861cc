"""Small datasets shared by the training tests (built once per session)."""
from __future__ import annotations

import pytest

from meshclosure.data import generate
from meshclosure.data.scenarios import get_scenario


def small_kinematic():
    """``kinematic`` on a 16² plane coarse-grained to 8²: seconds to generate."""
    return get_scenario("kinematic", mesh="cartesian:16", factor=2, spinup_time=0.5)


@pytest.fixture(scope="session")
def kinematic_traj(tmp_path_factory):
    """A trajectory dataset: 17 main samples (windows of up to 10 steps in train) + 3 OOD."""
    out = tmp_path_factory.mktemp("train_data") / "kinematic_traj.nc"
    generate(small_kinematic(), out, n_samples=17, ood_samples=3, trajectory=True,
             progress=False)
    return out
