"""The non-conservative references: registered apart, batched, and visibly not conservative."""
from __future__ import annotations

import pytest
import torch

from meshclosure.nn import build_model, list_models
from meshclosure.testing import small_meshes

MESHES = small_meshes()


def test_references_are_listed_apart():
    assert {"nodewise", "nodewise_mean_free"} <= set(list_models(conservative=False))
    assert not {"nodewise", "nodewise_mean_free"} & set(list_models())
    assert set(list_models(conservative=None)) == set(list_models()) | set(
        list_models(conservative=False))


@pytest.mark.parametrize("key", list(MESHES))
def test_nodewise_batches_and_breaks_conservation(key):
    mesh = MESHES[key]
    V = mesh.cell_volume.double()[:, None]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, mesh.n_cells, 2, dtype=torch.float64, generator=gen)
    for name in ("nodewise", "nodewise_mean_free"):
        torch.manual_seed(0)
        model = build_model(name, mesh, in_features=2, n_vars=2, hidden=8, n_blocks=1).double()
        with torch.no_grad():
            out = model(mesh, x)
            assert out.shape == (3, mesh.n_cells, 2)
            for b in range(3):
                assert torch.allclose(out[b], model(mesh, x[b]), rtol=0, atol=1e-12)
            total = (V * out).sum(-2).abs().max()
            scale = (V * out.abs()).sum(-2).max()
        if name == "nodewise":
            assert float(total / scale) > 1e-6            # nothing holds the total
        else:
            assert float(total / scale) < 1e-11           # the global total (rounding)
