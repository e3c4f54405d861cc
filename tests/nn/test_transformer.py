"""GPS graph transformer closure (issue 5, item 2e) on every mesh family.

Checks: exact antisymmetry and conservation (1e-12 float64, 1e-5 float32),
permutation equivariance (with and without random-walk encodings), translation
invariance on periodic/channel planes, that the attention is global (a change
in one cell moves fluxes beyond the message-passing range), the random-walk
encoding against a dense reference, finite gradients on every parameter, and
the ``max_cells`` refusal.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from meshclosure.graph import to_graph
from meshclosure.mesh import cartesian, from_meshio
from meshclosure.nn import build_model, list_models
from meshclosure.nn.transformer import (GPSLayer, GraphTransformer, MeshTooLargeError,
                                        random_walk_encoding)
from meshclosure.testing import (assert_antisymmetric, assert_conservative, assert_equivariant,
                                 small_meshes)

from _value_checks import check_values

IN = 3


def _meshes():
    from conftest import square_with_hole_meshio

    meshes = small_meshes()
    meshes["column-8"] = cartesian(8, None)
    meshes["meshio-hole-4"] = from_meshio(square_with_hole_meshio(4))
    return meshes


MESHES = _meshes()


def _x(mesh, seed=1, dtype=torch.float64):
    return torch.randn(mesh.n_cells, IN, dtype=dtype,
                       generator=torch.Generator().manual_seed(seed))


def _model(mesh, seed=0, **kw):
    torch.manual_seed(seed)
    kw = {"in_features": IN, "n_vars": 2, "hidden": 16, "n_heads": 4, "n_blocks": 2,
          "n_layers": 1, **kw}
    return build_model("transformer", mesh, **kw).double()


@pytest.mark.parametrize("head,rwse", [("pairwise", 3), ("potential", 0)])
@pytest.mark.parametrize("name", list(MESHES))
def test_antisymmetric_conservative_permutation(name, head, rwse):
    mesh = MESHES[name]
    model, x = _model(mesh, head=head, rwse=rwse), _x(mesh)
    assert isinstance(model, GraphTransformer)
    assert_antisymmetric(model, mesh, x)            # exact directed form + flipped mesh
    assert_conservative(model, mesh, x, tol=1e-12)
    assert_equivariant(model, mesh, x, transform="permutation", tol=1e-12)
    assert float(model(mesh, x).detach().abs().max()) > 1e-8


@pytest.mark.parametrize("name", ["healpix-2", "coarsened"])
def test_heteroscedastic(name):
    mesh = MESHES[name]
    model, x = _model(mesh, heteroscedastic=True), _x(mesh)
    assert_antisymmetric(model, mesh, x)            # log_var symmetric exactly as well
    mean, log_var = model(mesh, x)
    assert log_var.shape == mean.shape == (mesh.n_faces, 2)
    assert not torch.equal(log_var, mean)
    assert_equivariant(model, mesh, x, transform="permutation")
    # seeded, batch = samples, input-dependent log_var, the NLL's gradient reaches every weight
    check_values(lambda seed: _model(mesh, seed=seed, heteroscedastic=True), mesh, x)


@pytest.mark.parametrize("name", ["cartesian-8x8", "cartesian-channel-6x4"])
def test_translation_invariant_on_plane(name):
    mesh = MESHES[name]
    model, x = _model(mesh, rwse=2), _x(mesh)
    for seed in range(3):
        assert_equivariant(model, mesh, x, transform="translation", tol=1e-10, seed=seed)


class _IndexEncoded(GraphTransformer):
    """A transformer fed the cell index: what the model must NOT do."""

    def directed_fluxes(self, mesh, x=None):
        index = torch.arange(mesh.n_cells, dtype=x.dtype)[:, None] / mesh.n_cells
        return super().directed_fluxes(mesh, x + index)


def test_node_index_encoding_breaks_permutation_check():
    """The permutation check is sharp: a node-index encoding fails it."""
    mesh = MESHES["healpix-2"]
    torch.manual_seed(0)
    model = _IndexEncoded(mesh, in_features=IN, hidden=16, n_heads=4, n_blocks=1).double()
    assert_conservative(model, mesh, _x(mesh))
    with pytest.raises(AssertionError, match="permutation equivariance: max deviation"):
        assert_equivariant(model, mesh, _x(mesh), transform="permutation")


def test_float32_conservation_and_permutation():
    mesh = MESHES["icosahedral-2"]
    torch.manual_seed(0)
    model = build_model("transformer", mesh, in_features=IN, hidden=16, n_heads=4, n_blocks=2)
    x = _x(mesh, dtype=torch.float32)
    phi = model(mesh, x)
    assert phi.dtype == torch.float32
    assert_conservative(phi.detach(), mesh, tol=1e-5)
    assert_antisymmetric(model, mesh, x, tol=1e-5)
    assert_equivariant(model, mesh, x, transform="permutation", tol=1e-5)


def _hops_from(mesh, cell):
    """Graph distance (in faces) of every cell from ``cell`` (breadth-first)."""
    fc = mesh.face_cells.numpy()
    nbrs = [[] for _ in range(mesh.n_cells)]
    for a, b in fc.T:
        nbrs[a].append(b)
        nbrs[b].append(a)
    dist = np.full(mesh.n_cells, -1)
    dist[cell], frontier = 0, [cell]
    while frontier:
        nxt = []
        for i in frontier:
            for j in nbrs[i]:
                if dist[j] < 0:
                    dist[j] = dist[i] + 1
                    nxt.append(j)
        frontier = nxt
    return dist


@pytest.mark.parametrize("model_name", ["transformer", "mgn"])
def test_attention_is_global(model_name):
    """Changing one cell's input moves the fluxes on faces far outside the message-passing
    range with global attention, and not at all with local message passing alone."""
    mesh = MESHES["icosahedral-2"]
    torch.manual_seed(0)
    kw = {"n_heads": 4} if model_name == "transformer" else {}
    model = build_model(model_name, mesh, in_features=IN, hidden=16, n_blocks=1,
                        **kw).double()
    x = _x(mesh)
    x2 = x.clone()
    x2[0] += 10.0
    phi = model(mesh, x).detach()
    change = (model(mesh, x2).detach() - phi).abs().amax(1)
    hops = _hops_from(mesh, 0)
    far = torch.as_tensor(np.minimum(*hops[mesh.face_cells.numpy()]) > 4)
    assert int(far.sum()) > mesh.n_faces // 2
    if model_name == "transformer":
        # every far face moves, far above rounding (~1e-16 relative)
        assert float(change[far].min()) > 1e-12 * float(phi.abs().max())
    else:
        assert float(change[far].max()) == 0.0


def test_random_walk_encoding_values():
    # column of 8 cells with walls: end cells have 1 neighbour
    rw = random_walk_encoding(MESHES["column-8"], 3)
    assert rw[:, 0].abs().max() == 0                      # no self loops
    assert rw[:, 1].tolist() == [0.5, 0.75, 0.5, 0.5, 0.5, 0.5, 0.75, 0.5]
    assert rw[:, 2].abs().max() == 0                      # bipartite: no odd returns
    # dense reference on an irregular (agglomerated) mesh
    mesh = MESHES["coarsened"]
    n = mesh.n_cells
    A = np.zeros((n, n))
    a, b = mesh.face_cells.numpy()
    np.add.at(A, (a, b), 1.0)
    np.add.at(A, (b, a), 1.0)
    P = A / A.sum(1, keepdims=True)
    ref = np.stack([np.diag(np.linalg.matrix_power(P, s)) for s in (1, 2, 3, 4)], 1)
    got = random_walk_encoding(mesh, 4).numpy()
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-14)
    assert got[:, 1].std() > 1e-3                         # it does tell cells apart
    # from a graph (no cache) the same values
    assert torch.equal(random_walk_encoding(to_graph(mesh), 4), random_walk_encoding(mesh, 4))


def test_graph_input_matches_mesh_input():
    mesh = MESHES["dual-1"]
    model, x = _model(mesh, rwse=2), _x(mesh)
    torch.testing.assert_close(model(to_graph(mesh, x)), model(mesh, x), rtol=0, atol=1e-14)


@pytest.mark.parametrize("name", list(MESHES))
def test_forward_backward_finite_gradients(name):
    mesh = MESHES[name]
    model = _model(mesh, rwse=2, heteroscedastic=True)
    x = _x(mesh).requires_grad_(True)
    mean, log_var = model(mesh, x)
    ((mean ** 2).mean() + log_var.mean()).backward()
    params = dict(model.named_parameters())
    bad = [k for k, p in params.items() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not bad, f"missing or non-finite gradient for {bad}"
    # the output bias of g cancels in ½ (g_ab − g_ba): its gradient is zero, all others are not
    cancels = f"head.g.{len(model.head.g) - 1}.bias"
    assert float(params.pop(cancels).grad.abs().max()) < 1e-12
    zero = [k for k, p in params.items() if float(p.grad.abs().sum()) == 0]
    assert not zero, f"zero gradient for {zero}"
    assert torch.isfinite(x.grad).all() and float(x.grad.abs().sum()) > 0


def test_max_cells_and_errors():
    mesh = MESHES["healpix-2"]
    assert "transformer" in list_models("column") and "transformer" in list_models("healpix")
    model = _model(mesh, max_cells=40)
    with pytest.raises(MeshTooLargeError, match=r"n_cells=48 > max_cells=40.*O\(n_cells²\)"):
        model(mesh, _x(mesh))
    assert isinstance(MeshTooLargeError("x"), ValueError)
    _model(mesh, max_cells=48)(mesh, _x(mesh))            # exactly at the limit is fine
    with pytest.raises(ValueError, match="head='vector'"):
        _model(mesh, head="vector")
    with pytest.raises(ValueError, match="hidden=10 must be a multiple of n_heads=4"):
        GPSLayer(10, n_heads=4)
    with pytest.raises(ValueError, match=r"x must have shape \(n_cells=48, in_features=3\)"):
        _model(mesh)(mesh, torch.zeros(48, 2, dtype=torch.float64))
