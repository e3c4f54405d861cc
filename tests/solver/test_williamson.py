"""Williamson et al. (1992) test 1 (cosine bell, solid-body rotation, one revolution).

The cheap icosahedral level 3 is checked against the stored table below
(measured with ``python tools/williamson_convergence.py``); the order between
the two finest of levels 3, 4, 5 (≥ 1.8) is checked on icosahedral triangles
(about a minute); the full table for every family is the tools script's.
"""
import math

import pytest

from meshclosure.mesh import healpix, icosahedral
from meshclosure.solver.flows import williamson_test1

TILT = math.pi / 2 - 0.05

# (family, size, scheme, alpha) -> (l1, l2, linf), SSP-RK3 at outflow Courant 1/k_max
REFERENCE = {
    ("icosahedral", 3, "linear", 0.0): (1.4118, 0.6353, 0.5909),
    ("icosahedral", 3, "linear", TILT): (0.9934, 0.5603, 0.5519),
    ("icosahedral", 3, "limited", 0.0): (1.0799, 0.7205, 0.7225),
    ("icosahedral", 3, "upwind", TILT): (1.7410, 0.9316, 0.9361),
}


@pytest.mark.parametrize("key", list(REFERENCE))
def test_regression_table(key):
    family, size, scheme, alpha = key
    r = williamson_test1(icosahedral(size), alpha, scheme)
    for name, ref in zip(("l1", "l2", "linf"), REFERENCE[key]):
        assert r[name] == pytest.approx(ref, rel=2e-3, abs=2e-4), name


@pytest.mark.parametrize("mesh_fn", [lambda: icosahedral(3), lambda: icosahedral(2, dual=True),
                                     lambda: healpix(4)])
def test_limited_scheme_no_new_extrema(mesh_fn):
    r = williamson_test1(mesh_fn(), TILT, "limited")
    assert r["min"] >= -1e-9 * 1000 and r["max"] <= 1000.0 * (1 + 1e-12)
    assert r["courant"] <= 1.0 / 3.0 + 1e-12


def test_second_order_beats_upwind_and_converges():
    lin = [williamson_test1(icosahedral(n), TILT, "linear")["l2"] for n in (2, 3)]
    up = williamson_test1(icosahedral(3), TILT, "upwind")["l2"]
    assert lin[1] < 0.65 * up and lin[1] < lin[0]


@pytest.mark.slow
def test_order_levels_4_5():
    e4, e5 = (williamson_test1(icosahedral(n), TILT, "linear")["l2"] for n in (4, 5))
    assert e4 == pytest.approx(0.2455, rel=2e-3)     # reference prototype: 0.25
    assert math.log2(e4 / e5) >= 1.8
