"""Chebyshev graph convolutions and the "chebnet" closure on sphere meshes (issue 5, item 2c).

Checks: conservation and antisymmetry, permutation equivariance, commuting to
1e-10 with the exact symmetries of HEALPix (90° about the pole) and of the
icosahedral mesh (72° about a vertex, 120° about a face centre), a model that
reads coordinates FAILING that check, and ChebConv against a dense reference.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import meshclosure.nn.chebyshev  # noqa: F401  (registers "chebnet")
from meshclosure.graph import to_graph
from meshclosure.mesh import Coarsening, agglomerate, cartesian, healpix, icosahedral
from meshclosure.nn import UnsupportedMeshError, build_model, list_models
from meshclosure.nn.chebyshev import ChebConv, ChebNetClosure, chebyshev_laplacian
from meshclosure.testing import (assert_antisymmetric, assert_commutes, assert_conservative,
                                 assert_equivariant, axis_rotation, small_meshes)

from _value_checks import check_values

IN = 2
SMALL = small_meshes()
MESHES = {"healpix-2": SMALL["healpix-2"], "icosahedral-2": SMALL["icosahedral-2"],
          "dual-1": SMALL["dual-1"], "coarsened": SMALL["coarsened"]}


def _x(mesh, n=IN, seed=1):
    return torch.randn(mesh.n_cells, n, dtype=torch.float64,
                       generator=torch.Generator().manual_seed(seed))


def _chebnet(mesh, head="potential", seed=0, **kw):
    torch.manual_seed(seed)
    kw = {"in_features": IN, "n_vars": 2, "hidden": 8, "n_layers": 2, "K": 3, **kw}
    return build_model("chebnet", mesh, head=head, **kw).double()


def _ico_rotations(mesh):
    """72° about vertex 0 (the north pole) and 120° about the centre of face (0, 1, 2)
    of the base icosahedron (its vertices are the first 12 mesh vertices, or the
    first 12 cells of the dual mesh)."""
    v = (mesh.cell_center if mesh.info.get("dual") else mesh.vertex_pos).numpy()
    assert np.allclose(v[0], [0, 0, 1])
    face = v[0] + v[1] + v[2]
    assert np.allclose([v[0] @ v[1], v[1] @ v[2], v[0] @ v[2]], 1 / math.sqrt(5))
    return [axis_rotation([0, 0, 1], 2 * math.pi / 5), axis_rotation(face, 2 * math.pi / 3)]


SYMMETRIES = {
    "healpix-2": lambda m: [axis_rotation([0, 0, 1], math.pi / 2)],
    "icosahedral-2": _ico_rotations,
    "dual-1": _ico_rotations,
}


# ------------------------------------------------------------------ invariants
@pytest.mark.parametrize("head", ["potential", "pairwise"])
@pytest.mark.parametrize("name", list(MESHES))
def test_antisymmetric_conservative_permutation(name, head):
    mesh = MESHES[name]
    model, x = _chebnet(mesh, head), _x(mesh)
    assert_antisymmetric(model, mesh, x)            # exact directed form + flipped mesh
    assert_conservative(model, mesh, x, tol=1e-12)
    assert_equivariant(model, mesh, x, transform="permutation", tol=1e-12)
    assert float(model(mesh, x).detach().abs().max()) > 1e-8


@pytest.mark.parametrize("head", ["potential", "pairwise"])
@pytest.mark.parametrize("name", list(SYMMETRIES))
def test_commutes_with_mesh_symmetries(name, head):
    mesh = MESHES[name]
    for weights in ("gaussian", "fv"):
        model, x = _chebnet(mesh, head, weights=weights), _x(mesh)
        for R in SYMMETRIES[name](mesh):
            assert_commutes(model, mesh, x, R)
    # also under a random rotation of the whole sphere (no coordinates are used)
    assert_equivariant(model, mesh, x, transform="rotation")


class _WithLongitudeInput(torch.nn.Module):
    """A chebnet fed the global x coordinate as an extra input: not invariant."""

    def __init__(self, mesh):
        super().__init__()
        self.net = _chebnet(mesh, in_features=IN + 1)

    def forward(self, mesh, x):
        return self.net(mesh, torch.cat([x, mesh.cell_center[:, :1].to(x.dtype)], 1))


@pytest.mark.parametrize("name", list(SYMMETRIES))
def test_symmetry_check_can_fail(name):
    mesh = MESHES[name]
    x = _x(mesh)
    torch.manual_seed(0)
    baseline = build_model("mlp_global", mesh, in_features=IN, n_vars=2, hidden=8).double()
    for model in (_WithLongitudeInput(mesh), baseline):
        for R in SYMMETRIES[name](mesh):
            with pytest.raises(AssertionError, match="symmetry"):
                assert_commutes(model, mesh, x, R)


def test_graph_input_matches_mesh():
    mesh = MESHES["icosahedral-2"]
    model, x = _chebnet(mesh, "pairwise"), _x(mesh)
    torch.testing.assert_close(model(to_graph(mesh), x), model(mesh, x), rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------ ChebConv
def _dense_laplacian(mesh, weights, lambda_max):
    """Independent numpy construction of L̃ = 2 (I − D^-½ W D^-½) / λ_max − I."""
    a, b = mesh.face_cells.numpy()
    d, area = mesh.cell_distance.numpy(), mesh.face_area.numpy()
    w = np.exp(-d**2 / (2 * d.mean()**2)) if weights == "gaussian" else \
        (area / d) / (area / d).mean()
    W = np.zeros((mesh.n_cells, mesh.n_cells))
    np.add.at(W, (a, b), w)
    np.add.at(W, (b, a), w)
    s = 1 / np.sqrt(W.sum(1))
    L = np.eye(mesh.n_cells) - s[:, None] * W * s[None, :]
    return 2 * L / lambda_max - np.eye(mesh.n_cells)


@pytest.mark.parametrize("weights", ["gaussian", "fv"])
@pytest.mark.parametrize("lambda_max", [2.0, 1.7])
@pytest.mark.parametrize("name", ["healpix-2", "dual-1"])
def test_chebconv_matches_dense_reference(name, weights, lambda_max):
    mesh = MESHES[name]
    lap = chebyshev_laplacian(mesh, weights, lambda_max=lambda_max)
    Lt = _dense_laplacian(mesh, weights, lambda_max)
    np.testing.assert_allclose(lap.to_dense().numpy(), Lt, rtol=0, atol=1e-14)
    torch.manual_seed(0)
    conv = ChebConv(3, 4, K=5).double()
    x = _x(mesh, 3)
    theta, bias = conv.weight.detach().numpy(), conv.bias.detach().numpy()
    T = [np.eye(mesh.n_cells), Lt]
    for _ in range(2, 5):
        T.append(2 * Lt @ T[-1] - T[-2])
    expected = sum(T[k] @ x.numpy() @ theta[k] for k in range(5)) + bias
    np.testing.assert_allclose(conv(x, lap).detach().numpy(), expected, rtol=0, atol=1e-12)


def test_chebconv_k1_identity():
    mesh = MESHES["icosahedral-2"]
    conv = ChebConv(3, 3, K=1, bias=False).double()
    with torch.no_grad():
        conv.weight.copy_(torch.eye(3, dtype=torch.float64)[None])
    x = _x(mesh, 3)
    assert torch.equal(conv(x, chebyshev_laplacian(mesh)), x)


@pytest.mark.parametrize("name", ["healpix-2", "icosahedral-2", "dual-1"])
def test_chebconv_on_null_vector(name):
    """``v = D^{1/2} 1`` spans the null space of ``L``: ``L̃ v = −v`` and
    ``T_k(L̃) v = (−1)^k v``, so the filter output is ``Σ_k θ_k (−1)^k v``."""
    mesh = MESHES[name]
    d = mesh.cell_distance
    w = torch.exp(-(d / d.mean()) ** 2 / 2)
    deg = torch.zeros(mesh.n_cells, dtype=torch.float64)
    deg.index_add_(0, mesh.face_cells[0], w).index_add_(0, mesh.face_cells[1], w)
    v = deg.sqrt()[:, None]
    conv = ChebConv(1, 1, K=4, bias=False).double()
    theta = conv.weight.detach().reshape(-1)
    expected = float(sum(theta[k] * (-1) ** k for k in range(4))) * v
    for lambda_max in (2.0, 1.5):
        got = conv(v, chebyshev_laplacian(mesh, lambda_max=lambda_max)).detach()
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-12 * float(v.max()))


# ------------------------------------------------------------------ registry, training
@pytest.mark.parametrize("head", ["potential", "pairwise"])
@pytest.mark.parametrize("name", list(MESHES))
def test_forward_backward(name, head):
    mesh = MESHES[name]
    model = _chebnet(mesh, head, heteroscedastic=True)
    x = _x(mesh).requires_grad_(True)
    mean, log_var = model(mesh, x)
    assert mean.shape == log_var.shape == (mesh.n_faces, 2)
    (mean.square().sum() + log_var.sum()).backward()
    grads = [p.grad for p in model.parameters()] + [x.grad]
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
    assert float(model.convs[0].weight.grad.abs().sum()) > 0
    # seeded, batch = samples, input-dependent log_var, the NLL's gradient reaches every weight
    check_values(lambda seed: _chebnet(mesh, head, seed=seed, heteroscedastic=True), mesh,
                 _x(mesh))


def test_families_and_errors():
    assert "chebnet" in list_models("healpix") and "chebnet" in list_models("icosahedral")
    assert "chebnet" not in list_models("cartesian")
    with pytest.raises(UnsupportedMeshError, match="supports mesh families"):
        build_model("chebnet", cartesian(4, 4))
    plane = cartesian(8, 8)
    coarse_plane = Coarsening(plane, agglomerate(plane, 16)).coarse
    with pytest.raises(UnsupportedMeshError, match="needs a sphere mesh"):
        build_model("chebnet", coarse_plane)
    with pytest.raises(ValueError, match="head='vector'"):
        ChebNetClosure(healpix(1), head="vector")
    with pytest.raises(ValueError, match="weights='knn'"):
        ChebNetClosure(icosahedral(1), weights="knn")
