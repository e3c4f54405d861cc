"""Every registered closure on every small mesh of every family it supports.

The per-model test files check each architecture in depth; this one makes
sure nothing in the registry escapes the basic contract: built by name,
exactly antisymmetric, conservative to rounding, permutation-equivariant, and
trainable (a backward pass gives finite gradients on every parameter that
can receive one). A model may refuse a mesh of a supported family only with an
UnsupportedMeshError (e.g. the CNN on a channel that is not doubly periodic).

Batches (issue 10, item 1): a batch ``x (B, n_cells, F)`` of different samples on
the one mesh gives ``(B, n_faces, n_vars)`` equal to the unbatched call on each
sample to 1e-12 in float64, for the mean and (where the model has one) the
heteroscedastic variant, which returns a ``FluxPrediction``; antisymmetry and
conservation hold per sample.
"""
from __future__ import annotations

import pytest
import torch

from meshclosure.mesh import cartesian
from meshclosure.nn import (FluxPrediction, UnsupportedMeshError, build_model, list_models,
                            model_families)
from meshclosure.testing import (assert_antisymmetric, assert_conservative, assert_equivariant,
                                 small_meshes)

MESHES = {**small_meshes(), "column-6": cartesian(6, None, 1.0)}
MODELS = [m for m in list_models() if not m.startswith("_")]
CASES = [(model, mesh) for model in MODELS for mesh, m in MESHES.items()
         if m.family in model_families(model)]
IN = 2
CONFIG = {"e3nn": dict(n_scalars=IN), "transformer": dict(hidden=16, n_blocks=1),
          "gru": dict(hidden=16), "mgn": dict(hidden=16, n_blocks=1)}


#: Models without a heteroscedastic variant (the staggered-grid image models).
MEAN_ONLY = ("cnn", "fno")
#: Other heads, batched too, heteroscedastic (mean and log-variance in one build).
OTHER_HEADS = {"e3nn": dict(head="pairwise"), "mgn": dict(head="potential"),
               "chebnet": dict(head="pairwise"), "sfno": dict(head="pairwise")}
#: Smaller models for the batch test (it builds several variants per case).
SMALL = {"e3nn": dict(hidden="4x0e + 2x1o + 2x1e", n_layers=1, radial_hidden=8, latent=4)}
B = 3


def _build(name, mesh, **extra):
    torch.manual_seed(0)
    try:
        return build_model(name, mesh, **{"in_features": IN, "n_vars": 2,
                                          **CONFIG.get(name, {}), **extra}).double()
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


def _max_dev(got, expected):
    """``max |got − expected| / max(1, max |expected|)``."""
    return float((got - expected).abs().max()) / max(1.0, float(expected.abs().max()))


@pytest.mark.parametrize("name, mesh_name", CASES, ids=[f"{a}-{b}" for a, b in CASES])
def test_batch_equals_each_sample(name, mesh_name):
    mesh = MESHES[mesh_name]
    x = torch.randn(B, mesh.n_cells, IN, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(2))
    variants = [{}] + ([] if name in MEAN_ONLY else [dict(heteroscedastic=True)]) \
        + ([dict(OTHER_HEADS[name], heteroscedastic=True)] if name in OTHER_HEADS else [])
    for variant in variants:
        heteroscedastic = variant.get("heteroscedastic", False)
        model = _build(name, mesh, **SMALL.get(name, {}), **variant)
        with torch.no_grad():
            out = model(mesh, x)
            singles = [model(mesh, x[b]) for b in range(B)]
        assert isinstance(out, FluxPrediction) == heteroscedastic
        parts = out if heteroscedastic else (out,)
        for k, part in enumerate(parts):
            assert part.shape == (B, mesh.n_faces, 2)
            for b in range(B):
                single = singles[b][k] if heteroscedastic else singles[b]
                assert _max_dev(part[b], single) <= 1e-12, (name, variant, k, b)
            # different samples give different fluxes: the batch is not one sample repeated
            assert float((part[1] - part[0]).abs().max()) > 1e-8
        assert_antisymmetric(model, mesh, x)          # per sample: exact directed form, flip
        assert_conservative(model, mesh, x)           # per sample
