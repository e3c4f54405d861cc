"""One per-mesh cache (meshclosure._cache) serves fv, nn and the scenarios, and lets meshes go."""
from __future__ import annotations

import gc
import weakref

import torch

from meshclosure import _cache
from meshclosure.fv import divergence, gradient
from meshclosure.mesh import cartesian
from meshclosure.nn import face_geometry


def test_operators_and_models_share_one_cache_that_drops_the_mesh():
    mesh = cartesian(4, 4, 1.0)
    q = torch.arange(16.0, dtype=torch.float64)
    d1 = divergence(mesh, torch.ones(mesh.n_faces, dtype=torch.float64))
    g1 = gradient(mesh, q)
    geo = face_geometry(mesh)
    keys = _cache.cached_keys(mesh)
    assert ("fv", ("lsq", "face")) in keys and "nn.face_geometry" in keys
    assert any(k[0] == "fv.sparse" for k in keys if isinstance(k, tuple))
    # cached values are reused (same object) and give the same numbers
    assert face_geometry(mesh) is geo
    assert torch.equal(gradient(mesh, q), g1)
    assert torch.equal(divergence(mesh, torch.ones(mesh.n_faces, dtype=torch.float64)), d1)
    assert abs(float((mesh.cell_volume * d1).sum())) < 1e-12   # closed domain: Σ V div = 0
    ref = weakref.ref(mesh)
    del mesh, geo
    gc.collect()
    assert ref() is None                              # the cache did not keep the mesh alive
    assert all(m is not None for m in list(_cache._STORE.keys()))


def test_a_failed_build_caches_nothing():
    mesh = cartesian(3, 3, 1.0)

    def broken():
        raise RuntimeError("no")
    try:
        _cache.per_mesh(mesh, "test.broken", broken)
    except RuntimeError:
        pass
    assert "test.broken" not in _cache.cached_keys(mesh)
    assert _cache.per_mesh(mesh, "test.broken", lambda: 7) == 7
