"""cfl_dt over a time window for a time-dependent transport (issue 15 item 3)."""
from __future__ import annotations

import math

import pytest
import torch

from meshclosure.errors import ArgumentError
from meshclosure.fv import transport_from_streamfunction
from meshclosure.fv.advection import cfl_dt, outflow_courant
from meshclosure.mesh import cartesian, icosahedral
from meshclosure.solver import TracerModel

T_PEAK = 0.75


def _speed(t: float) -> float:
    """1 away from the peak, 3 at t = T_PEAK (a Gaussian pulse of width 0.1)."""
    return 1.0 + 2.0 * math.exp(-(((t - T_PEAK) / 0.1) ** 2))


@pytest.fixture(scope="module")
def sphere_flow():
    mesh = icosahedral(3)
    U0 = transport_from_streamfunction(mesh, -mesh.vertex_pos[:, 2])   # solid-body rotation
    return mesh, U0, (lambda t: _speed(t) * U0)


def test_window_equals_instant_at_the_peak(sphere_flow):
    mesh, _, U = sphere_flow
    # 41 samples on [0, 2]: every 0.05, so the peak t = 0.75 = 2 * 15 / 40 is sampled exactly
    dt, when = cfl_dt(mesh, U, 0.5, t0=0.0, t1=2.0, n_samples=41, return_time=True)
    assert when == T_PEAK
    assert dt == cfl_dt(mesh, U(T_PEAK), 0.5)
    at_start = cfl_dt(mesh, U(0.0), 0.5)
    assert dt < at_start and math.isclose(at_start / dt, _speed(T_PEAK) / _speed(0.0),
                                          rel_tol=1e-12)
    # the bound holds at every sample time: no cell's outflow Courant number exceeds 0.5
    for k in range(41):
        t = 2.0 * k / 40
        assert float(outflow_courant(mesh, U(t), dt).max()) <= 0.5 * (1 + 1e-12)
    # sample_step gives the same sample times here
    assert cfl_dt(mesh, U, 0.5, t0=0.0, t1=2.0, sample_step=0.25) == dt


def test_between_samples_is_an_estimate_that_converges(sphere_flow):
    """A peak between sample times is missed (the documented estimate), and finer
    sampling approaches the true smallest step from above."""
    mesh, U0, _ = sphere_flow
    U = lambda t: _speed(t - 0.0137) * U0         # noqa: E731 - peak at 0.7637, off the grid
    exact = cfl_dt(mesh, U(T_PEAK + 0.0137), 0.5)
    coarse = cfl_dt(mesh, U, 0.5, t0=0.0, t1=2.0, n_samples=9)
    fine = cfl_dt(mesh, U, 0.5, t0=0.0, t1=2.0, sample_step=1e-3)
    assert exact < fine < coarse
    assert fine / exact - 1 < 1e-3 < coarse / exact - 1


def test_fixed_transport_and_single_instant(sphere_flow):
    mesh, U0, U = sphere_flow
    ref = cfl_dt(mesh, U0, 0.4)
    assert cfl_dt(mesh, U0, 0.4, t0=1.0, t1=5.0) == ref
    assert cfl_dt(mesh, U0, 0.4, t0=1.0, t1=5.0, return_time=True) == (ref, 1.0)
    assert cfl_dt(mesh, U, 0.4, t0=T_PEAK) == cfl_dt(mesh, U(T_PEAK), 0.4)


def test_boundary_transport_is_sampled_too():
    mesh = cartesian(8, 8, periodic=False)
    U = torch.zeros(mesh.n_faces, dtype=torch.float64)
    ones = torch.ones(mesh.n_boundary_faces, dtype=torch.float64) * mesh.boundary_face_area
    bt = lambda t: (1.0 + t) * ones                  # noqa: E731 - outflow grows in time
    dt, when = cfl_dt(mesh, U, 0.5, bt, t0=0.0, t1=1.0, n_samples=5, return_time=True)
    assert when == 1.0
    assert dt == cfl_dt(mesh, U, 0.5, bt(1.0))


def test_tracer_model_window(sphere_flow):
    mesh, U0, U = sphere_flow
    model = TracerModel(mesh, U, scheme="limited")
    courant = 1.0 / 3.0                               # 1/k_max on triangles
    assert model.cfl_dt() == cfl_dt(mesh, U(0.0), courant)
    dt, when = model.cfl_dt(t=0.0, t1=2.0, n_samples=41, return_time=True)
    assert when == T_PEAK and dt == cfl_dt(mesh, U(T_PEAK), courant)
    assert model.cfl_dt(0.5, t=T_PEAK) == cfl_dt(mesh, U(T_PEAK), 0.5)
    fixed = TracerModel(mesh, U0)
    assert fixed.cfl_dt(t=0.0, t1=10.0) == fixed.cfl_dt() == cfl_dt(mesh, U0, 0.5)


@pytest.mark.parametrize("kwargs, argument", [
    (dict(), "t0"),                                        # a callable needs a window
    (dict(t0=1.0, t1=0.0), "t1"),
    (dict(t0=0.0, t1=1.0, n_samples=1), "n_samples"),
    (dict(t0=0.0, t1=1.0, n_samples=5, sample_step=0.1), "sample_step"),
    (dict(t0=0.0, t1=1.0, sample_step=-0.1), "sample_step"),
    (dict(t0=float("nan"), t1=1.0), "t0"),
])
def test_bad_window_names_the_argument(sphere_flow, kwargs, argument):
    mesh, _, U = sphere_flow
    with pytest.raises(ArgumentError) as err:
        cfl_dt(mesh, U, 0.5, **kwargs)
    assert err.value.argument == argument


def test_zero_or_nan_flow_in_the_window(sphere_flow):
    mesh, U0, _ = sphere_flow
    with pytest.raises(ValueError, match="zero everywhere at every sample time"):
        cfl_dt(mesh, lambda t: 0 * U0, 0.5, t0=0.0, t1=1.0)
    # zero at some times only: those samples impose nothing
    assert cfl_dt(mesh, lambda t: t * U0, 0.5, t0=0.0, t1=1.0, n_samples=3) == \
        cfl_dt(mesh, U0, 0.5)
    with pytest.raises(ValueError, match="at t=0.5"):
        cfl_dt(mesh, lambda t: U0 * (float("nan") if t == 0.5 else 1.0), 0.5, t0=0.0, t1=1.0,
               n_samples=3)
