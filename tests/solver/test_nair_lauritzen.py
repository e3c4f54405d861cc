"""Nair & Lauritzen (2010) case 4: non-divergent deformational flow with a background
translation, doi:10.1016/j.jcp.2010.08.014.

The flow deforms the tracer into thin filaments and brings it back: at
``t = T`` the exact solution equals the initial field, so the error after one
period measures the scheme alone. Runs on the unit sphere with ``T = 5``,
SSP-RK3, at an outflow Courant number ``0.95/k_max`` (``k_max = 3`` faces per
triangle) taken over the whole period.

Measured with :func:`run_case4` (Gaussian hills, normalized errors after one period,
linear scheme): level 3 (1,280 cells) l1 0.751, l2 0.530, l∞ 0.535; level 4
(5,120 cells) l1 0.384, l2 0.305, l∞ 0.337. Slotted cylinders, level 3: limited
stays in [0.1000047, 0.5205], the linear scheme undershoots to 0.0287; Σ V q
drifts by 4e-14 relative.
"""
from __future__ import annotations

import math

import pytest
import torch

from meshclosure.fv.advection import outflow_courant
from meshclosure.mesh import icosahedral
from meshclosure.solver import TracerModel, integrate
from meshclosure.solver.flows import (error_norms, gaussian_hills, nair_lauritzen_transport,
                                      slotted_cylinders)

PERIOD = 5.0


def run_case4(mesh, scheme, q0, courant_safety=0.95):
    """Advect ``q0`` for one period ``T``; return the final field and the largest
    outflow Courant number met over the period."""
    transport = nair_lauritzen_transport(mesh, PERIOD)
    k_max = int((mesh.cell_vertices >= 0).sum(1).max())
    rate = max(float(outflow_courant(mesh, transport(t)).max())
               for t in torch.linspace(0, PERIOD, 101).tolist())
    n_steps = math.ceil(PERIOD * rate * k_max / courant_safety)
    model = TracerModel(mesh, transport, scheme=scheme)
    with torch.no_grad():
        out = integrate(model, {"q": q0}, PERIOD / n_steps, n_steps, progress=False)
    return out.state["q"], rate * PERIOD / n_steps


@pytest.fixture(scope="module")
def hills_linear():
    """Normalized errors of the Gaussian hills after one period, levels 3 and 4."""
    errors = {}
    for level in (3, 4):
        mesh = icosahedral(level)
        q0 = gaussian_hills(mesh)
        q, _ = run_case4(mesh, "linear", q0)
        errors[level] = error_norms(mesh, q, q0)
    return errors


def test_gaussian_hills_return_with_converging_error(hills_linear):
    """Measured l2 0.530 (level 3) and 0.305 (level 4): the error falls by 1.74x when
    the spacing halves (the filaments are under-resolved at these sizes, so not yet 4x)."""
    e3, e4 = hills_linear[3], hills_linear[4]
    for norm in ("l1", "l2", "linf"):
        assert e4[norm] < 0.7 * e3[norm], (norm, e3, e4)
    assert e4["l2"] < 0.34 and e4["linf"] < 0.38, e4
    assert e3["l2"] < 0.6, e3


def test_slotted_cylinders_limited_bounded_and_conservative():
    """The Barth–Jespersen scheme keeps the cylinders inside their initial range
    [0.1, 1] through the deformation, and Σ V q is constant to rounding; the
    unlimited scheme, on the same run, does not stay in range."""
    mesh = icosahedral(3)
    q0 = slotted_cylinders(mesh)
    lo, hi = float(q0.min()), float(q0.max())
    assert (lo, hi) == (0.1, 1.0)
    V = mesh.cell_volume
    q, courant = run_case4(mesh, "limited", q0)
    assert courant <= 1.0 / 3.0
    assert float(q.min()) >= lo - 1e-12 and float(q.max()) <= hi + 1e-12, \
        (float(q.min()), float(q.max()))
    drift = abs(float((V * q).sum() - (V * q0).sum())) / float((V * q0).sum())
    assert drift < 1e-12, drift
    assert float(q.max()) > 0.45                    # the cylinders are still there (0.52)
    q_lin, _ = run_case4(mesh, "linear", q0)
    assert float(q_lin.min()) < lo - 1e-3 or float(q_lin.max()) > hi + 1e-3
