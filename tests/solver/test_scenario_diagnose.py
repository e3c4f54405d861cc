"""Scenario models name the cause of a blow-up, and scenario arguments fail as ArgumentError."""
from __future__ import annotations

import pytest
import torch

from meshclosure.data.scenarios import get_scenario
from meshclosure.errors import ArgumentError
from meshclosure.solver import NonFinitePart, NonFiniteStateError, integrate


def _nan_source(cells):
    def extra(t, state):
        s = torch.zeros_like(state["q"])
        s[cells] = float("nan")
        return {"q": s}
    return extra


def test_scenario_blow_up_from_a_nan_source_names_the_source():
    sc = get_scenario("kinematic", mesh="cartesian:16", factor=2)
    model, state = sc.model, sc.initial_state()
    assert model.diagnose(0.0, state) is None               # every part finite
    model.extra = _nan_source([5, 9])
    assert model.diagnose(0.0, state) == NonFinitePart("source", "q", "cells", [5, 9])
    with pytest.raises(NonFiniteStateError) as err:
        integrate(model, state, sc.dt, 2, progress=False)
    msg = str(err.value)
    assert "Cause (source)" in msg and "the source for 'q' (non-finite at cells [5, 9])" in msg


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_base_model_parts_come_before_the_extra_sources():
    sc = get_scenario("barotropic", mesh="cartesian:16", factor=2)
    model, state = sc.model, sc.initial_state()
    assert model.extra is not None and model.diagnose(0.0, state) is None
    bad = dict(state)
    bad["zeta"] = state["zeta"].clone()
    bad["zeta"][3] = float("inf")                            # the transport goes non-finite first
    model.extra = _nan_source([7])
    found = model.diagnose(0.0, bad)
    assert found is not None and found.part != "source", found


@pytest.mark.parametrize("kw, name", [({"seed": -1}, "seed"), ({"seed": 1.5}, "seed"),
                                      ({"seed": True}, "seed"), ({"factor": 0}, "factor"),
                                      ({"factor": 2.0}, "factor")])
def test_seed_and_factor_range_checks_are_argument_errors(kw, name):
    with pytest.raises(ArgumentError) as err:
        get_scenario("kinematic", mesh="cartesian:16", **kw)
    assert err.value.argument == name and err.value.value == kw[name]
    assert str(err.value.renamed({name: f"--{name}"})).startswith(f"--{name} ")
    assert f"pass e.g. --{name}=" in str(err.value.renamed({name: f"--{name}"}))
