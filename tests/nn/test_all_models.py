"""Every registered closure on every small mesh of every family it supports.

The per-model test files check each architecture in depth; this one makes
sure nothing in the registry escapes the basic contract: built by name,
exactly antisymmetric, conservative to rounding, permutation-equivariant, and
trainable (a backward pass gives finite gradients on every parameter that
can receive one). A model may refuse a mesh of a supported family only with an
UnsupportedMeshError (e.g. the CNN on a channel that is not doubly periodic).
"""
from __future__ import annotations

import pytest
import torch

from meshclosure.mesh import cartesian
from meshclosure.nn import UnsupportedMeshError, build_model, list_models, model_families
from meshclosure.testing import (assert_antisymmetric, assert_conservative, assert_equivariant,
                                 small_meshes)

MESHES = {**small_meshes(), "column-6": cartesian(6, None, 1.0)}
MODELS = [m for m in list_models() if not m.startswith("_")]
CASES = [(model, mesh) for model in MODELS for mesh, m in MESHES.items()
         if m.family in model_families(model)]
IN = 2
CONFIG = {"e3nn": dict(n_scalars=IN), "transformer": dict(hidden=16, n_blocks=1),
          "gru": dict(hidden=16), "mgn": dict(hidden=16, n_blocks=1)}


def _build(name, mesh):
    torch.manual_seed(0)
    try:
        return build_model(name, mesh, **{"in_features": IN, "n_vars": 2,
                                          **CONFIG.get(name, {})}).double()
    except UnsupportedMeshError as err:
        pytest.skip(f"{name} refuses {mesh!r} with a clear error: {str(err)[:80]}")


def test_every_model_runs_somewhere():
    ran = {model for model, mesh in CASES}
    assert set(MODELS) == ran
    assert {"mgn", "e3nn", "chebnet", "spectral", "sfno", "cnn", "fno", "transformer",
            "gru"} <= set(MODELS)


@pytest.mark.parametrize("name, mesh_name", CASES, ids=[f"{a}-{b}" for a, b in CASES])
def test_model_contract(name, mesh_name):
    mesh = MESHES[mesh_name]
    model = _build(name, mesh)
    x = torch.randn(mesh.n_cells, IN, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(1))
    assert_antisymmetric(model, mesh, x)
    assert_conservative(model, mesh, x)
    if name not in ("cnn", "fno"):   # image models: a renumbered grid is not an image
        assert_equivariant(model, mesh, x, transform="permutation")
    out = model(mesh, x)
    out = out[0] if isinstance(out, tuple) else out
    assert out.shape == (mesh.n_faces, 2) and torch.isfinite(out).all()
    assert out.abs().max() > 0
    out.square().sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is None or torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads if g is not None) > 0
