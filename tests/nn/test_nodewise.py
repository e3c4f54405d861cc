"""The non-conservative references: registered apart, batched, seeded, permutation
equivariant per cell, the mean-free variant exactly ``nodewise`` minus its volume-weighted
mean, and visibly not conservative."""
from __future__ import annotations

import pytest
import torch

from meshclosure.nn import build_model, list_models
from meshclosure.testing import assert_equivariant, small_meshes

from _value_checks import check_values

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


@pytest.mark.parametrize("key", ["healpix-2", "coarsened"])
def test_mean_free_is_nodewise_minus_its_weighted_mean(key):
    """Same seed, same weights: ``nodewise_mean_free = s − Σ V s / Σ V`` with ``s`` the
    ``nodewise`` output, computed here by hand; ``nodewise`` follows a renumbering of the
    cells (a per-cell head on a permutation-equivariant backbone)."""
    mesh = MESHES[key]
    x = torch.randn(mesh.n_cells, 2, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(4))

    def build(name, seed=0):
        torch.manual_seed(seed)
        return build_model(name, mesh, in_features=2, n_vars=2, hidden=8, n_blocks=1).double()

    with torch.no_grad():
        s = build("nodewise")(mesh, x)
        free = build("nodewise_mean_free")(mesh, x)
    V = mesh.cell_volume.double()[:, None]
    want = s - (V * s).sum(0) / V.sum()
    torch.testing.assert_close(free, want, rtol=0, atol=1e-13)
    for name in ("nodewise", "nodewise_mean_free"):
        check_values(lambda seed: build(name, seed), mesh, x)
    assert_equivariant(build("nodewise"), mesh, x, transform="permutation", tol=1e-12)


@pytest.mark.parametrize("key", ["coarsened", "healpix-2"])
def test_mean_free_follows_a_renumbering_of_unequal_cells(key):
    """The mean removed is weighted by the volumes of the mesh (or graph) the model is
    called with, in its cell order: on a renumbered mesh of unequal cells (the agglomerated
    icosahedron's volumes differ by tens of per cent) the output is the renumbered output,
    batched or not, and the total stays 0; the volumes of the mesh the model was built on
    would give the wrong mean there (checked: the deviation is far above rounding)."""
    mesh = MESHES[key]
    V = mesh.cell_volume.double()
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(2, mesh.n_cells, 2, dtype=torch.float64, generator=gen)
    torch.manual_seed(0)
    model = build_model("nodewise_mean_free", mesh, in_features=2, n_vars=2, hidden=8,
                        n_blocks=1).double()
    with torch.no_grad():
        assert_equivariant(model, mesh, x, transform="permutation", tol=1e-12, seed=3)
        assert_equivariant(model, mesh, x[0], transform="permutation", tol=1e-12, seed=5)
        perm = torch.randperm(mesh.n_cells, generator=gen)
        new = mesh.permute_cells(perm)
        got = model(new, x[:, perm])
        torch.testing.assert_close(got, model(mesh, x)[:, perm], rtol=0, atol=1e-12)
        total = (new.cell_volume.double()[:, None] * got).sum(-2)
        assert float(total.abs().max()) < 1e-12 * float((V[:, None] * got.abs()).sum(-2).max())
        graph = new.to_graph()                         # a graph carries its own volumes
        torch.testing.assert_close(model(graph, x[:, perm]), got, rtol=0, atol=1e-12)
        # the stored volumes of the unpermuted mesh would have removed a different mean:
        # got − Σ V_old got / Σ V_old, off by that weighted mean (not rounding when the cells
        # differ)
        stale_shift = (V[:, None] * got).sum(-2) / V.sum()
        if key == "coarsened":
            assert float((V.max() - V.min()) / V.mean()) > 0.1
            assert float(stale_shift.abs().max()) > 1e-6
