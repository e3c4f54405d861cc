"""The GRU hook through the closure context: the same results as before the context existed.

``tests/fixtures/gru_hook_reference.npz`` holds the final tracer and memory of
6 steps of each stepper on two meshes, made with the hook as it was before the
solver passed a context (counting its calls); the hook must reproduce them.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from meshclosure.mesh import cartesian, healpix
from meshclosure.nn import build_model
from meshclosure.solver import STAGES, TracerModel, integrate

REFERENCE = Path(__file__).resolve().parents[1] / "fixtures" / "gru_hook_reference.npz"
MESHES = {"cartesian": lambda: cartesian(6, 6), "healpix": lambda: healpix(2)}


@pytest.mark.parametrize("key", list(MESHES))
@pytest.mark.parametrize("stepper", list(STAGES))
def test_gru_hook_matches_its_previous_results(key, stepper):
    ref = np.load(REFERENCE)
    mesh = MESHES[key]()
    torch.manual_seed(0)
    model = build_model("gru", mesh, in_features=1, hidden=8, n_blocks=1).double()
    hook = model.as_closure(0.01, var="q", stages=stepper)
    seen = []
    inner = hook._check_context

    def spy(ctx):                       # the solver really passes the context
        seen.append((ctx.step, ctx.stage, ctx.stepper))
        inner(ctx)

    hook._check_context = spy
    U = 0.3 * mesh.face_normal[:, 0].double() * mesh.face_area.double()
    q0 = (torch.sin(3.0 * mesh.cell_center[:, 0].double())
          + 0.1 * torch.arange(mesh.n_cells, dtype=torch.float64) / mesh.n_cells)
    with torch.no_grad():
        res = integrate(TracerModel(mesh, U, closure=hook), {"q": q0}, 0.01, 6,
                        stepper=stepper, progress=False)
    np.testing.assert_allclose(res.state["q"].numpy(), ref[f"{key}_{stepper}_q"], rtol=0,
                               atol=1e-13)
    np.testing.assert_allclose(hook.h.numpy(), ref[f"{key}_{stepper}_h"], rtol=0, atol=1e-13)
    n = STAGES[stepper].n
    assert seen == [(k // n, k % n, stepper) for k in range(6 * n)]


def test_hook_refuses_a_solver_at_another_stage():
    mesh = cartesian(4, 4)
    hook = build_model("gru", mesh, hidden=8, n_blocks=1).double().as_closure(0.01,
                                                                               stages="rk4")
    U = 0.3 * mesh.face_normal[:, 0].double() * mesh.face_area.double()
    with pytest.raises(RuntimeError, match="solver is at stage .* 'ssprk3'"):
        integrate(TracerModel(mesh, U, closure=hook), {"q": torch.rand(16,
                  dtype=torch.float64)}, 0.01, 2, stepper="ssprk3", progress=False)
