"""Antisymmetric flux heads: exact antisymmetry, conservation, symmetric variance, invariance."""
from __future__ import annotations

import pytest
import torch

from meshclosure.fv import divergence
from meshclosure.graph import to_graph
from meshclosure.nn import FluxPrediction, PairwiseHead, PotentialHead, VectorHead
from meshclosure.testing import (assert_antisymmetric, assert_conservative, assert_equivariant,
                                 random_rotation, small_meshes)

MESHES = small_meshes()
F = 5


def _head(kind: str, heteroscedastic: bool = False):
    torch.manual_seed(0)
    if kind == "pairwise":
        return PairwiseHead(F, n_vars=2, hidden=16, heteroscedastic=heteroscedastic).double()
    if kind == "potential":
        return PotentialHead(F, n_vars=2, hidden=16, heteroscedastic=heteroscedastic).double()
    return VectorHead(F, n_vars=2, heteroscedastic=heteroscedastic).double()


class _AsModel(torch.nn.Module):
    """A head on fixed random latents as a ``model(mesh, x)`` for the testing module."""

    def __init__(self, head):
        super().__init__()
        self.head = head

    def forward(self, mesh, x):
        return self.head(x, mesh)

    def directed_fluxes(self, mesh, x):
        return self.head.directed(x, mesh)


@pytest.mark.parametrize("heteroscedastic", [False, True], ids=["mean", "hetero"])
@pytest.mark.parametrize("kind", ["pairwise", "potential", "vector"])
@pytest.mark.parametrize("name", list(MESHES))
def test_head_antisymmetric_and_conservative(name, kind, heteroscedastic):
    mesh = MESHES[name]
    z = torch.randn(mesh.n_cells, F, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(1))
    model = _AsModel(_head(kind, heteroscedastic))
    # exact directed form and flipped mesh; symmetric log-variance
    assert_antisymmetric(model, mesh, z, tol=1e-13)
    assert_conservative(model, mesh, z, tol=1e-12)
    out = model(mesh, z)
    if heteroscedastic:
        mean, log_var = out
        assert log_var.shape == mean.shape == (mesh.n_faces, 2)
        out = mean
    out = out.detach()
    # the fluxes are not trivially zero, and the divergence is not either
    assert float(out.abs().max()) > 1e-6
    assert float(divergence(mesh, out.detach()).abs().max()) > 1e-8


@pytest.mark.parametrize("kind", ["pairwise", "potential", "vector"])
def test_head_same_on_mesh_and_graph(kind):
    mesh = MESHES["healpix-2"]
    z = torch.randn(mesh.n_cells, F, dtype=torch.float64)
    head = _head(kind)
    assert torch.allclose(head(z, mesh), head(z, to_graph(mesh)), rtol=0, atol=1e-14)


def test_potential_head_is_down_gradient_of_its_potential():
    """Linear h: Φ = (h_a − h_b) A/d exactly, i.e. minus the two-point gradient times A."""
    mesh = MESHES["icosahedral-2"]
    head = PotentialHead(1, n_vars=1, n_layers=0).double()
    with torch.no_grad():
        head.h[0].weight.fill_(2.0)
        head.h[0].bias.fill_(0.3)
    q = torch.randn(mesh.n_cells, 1, dtype=torch.float64)
    a, b = mesh.face_cells
    expected = 2.0 * (q[a, 0] - q[b, 0]) * mesh.face_area / mesh.cell_distance
    assert torch.allclose(head(q, mesh)[:, 0], expected, rtol=1e-14, atol=0)


def test_vector_head_uniform_vector_gives_exact_transport():
    """A constant vector u on the periodic plane gives Φ_f = (u·n_f) A_f; zero divergence."""
    mesh = MESHES["cartesian-8x8"]
    u = torch.tensor([0.7, -0.2], dtype=torch.float64)
    w = u.expand(mesh.n_cells, 2)
    phi = VectorHead(0)(None, mesh, w=w)[:, 0]
    assert torch.allclose(phi, (mesh.face_normal @ u) * mesh.face_area, rtol=1e-15, atol=1e-16)
    assert float(divergence(mesh, phi).abs().max()) < 1e-13


@pytest.mark.parametrize("name", ["healpix-2", "icosahedral-2", "dual-1", "coarsened"])
def test_potential_head_rotation_invariant_on_scalar_inputs(name):
    mesh = MESHES[name]
    head = _head("potential")
    x = torch.randn(mesh.n_cells, F, dtype=torch.float64)
    assert_equivariant(lambda m, x: head(x, m), mesh, x, transform="rotation", tol=1e-10)


@pytest.mark.parametrize("name", ["healpix-2", "icosahedral-2", "dual-1"])
def test_vector_head_rotation_invariant_with_rotated_vectors(name):
    """Global vector inputs rotated with the mesh: face fluxes unchanged to 1e-10."""
    mesh = MESHES[name]
    head = VectorHead(0, n_vars=2)
    x = torch.randn(mesh.n_cells, 6, dtype=torch.float64)

    def model(m, x):
        return head(None, m, w=x.reshape(-1, 2, 3))

    assert_equivariant(model, mesh, x, transform="rotation", vectors=[(0, 1, 2), (3, 4, 5)],
                       tol=1e-10)
    # ... and forgetting to rotate the vectors is caught
    with pytest.raises(AssertionError, match="rotation invariance"):
        assert_equivariant(model, mesh, x, transform="rotation", tol=1e-10)


def test_vector_head_local_frame_matches_global_vectors():
    """Local-frame components (east, north) give the same flux as the global vectors they encode."""
    from meshclosure.graph import local_frame

    mesh = MESHES["icosahedral-2"]
    head = _head("vector")
    z = torch.randn(mesh.n_cells, F, dtype=torch.float64)
    comp = head.w(z).reshape(mesh.n_cells, 2, 2)
    e1, e2 = local_frame(mesh, mesh.cell_center)
    w = comp[..., :1] * e1[:, None, :] + comp[..., 1:] * e2[:, None, :]
    assert torch.allclose(head(z, mesh), VectorHead(0, 2)(None, mesh, w=w), rtol=0, atol=1e-13)


def test_head_rejects_wrong_latent_width():
    mesh = MESHES["healpix-2"]
    with pytest.raises(ValueError, match="in_features=5"):
        _head("pairwise")(torch.randn(mesh.n_cells, 3, dtype=torch.float64), mesh)
    with pytest.raises(ValueError, match="pass the Mesh"):
        VectorHead(0)(None, to_graph(mesh), w=torch.randn(mesh.n_cells, 3))


def test_random_rotation_is_proper():
    R = random_rotation(3)
    assert torch.allclose(R @ R.T, torch.eye(3, dtype=torch.float64), atol=1e-14)
    assert abs(float(torch.det(R)) - 1.0) < 1e-14


@pytest.mark.parametrize("kind", ["pairwise", "potential", "vector"])
@pytest.mark.parametrize("name", ["icosahedral-2", "cartesian-channel-6x4"])
def test_head_batch_equals_each_sample(name, kind):
    """Latents ``(B, n_cells, F)`` on one mesh: each sample as if alone (1e-12), a
    FluxPrediction when heteroscedastic, exact antisymmetry per sample."""
    mesh = MESHES[name]
    z = torch.randn(3, mesh.n_cells, F, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(4))
    model = _AsModel(_head(kind, heteroscedastic=True))
    with torch.no_grad():
        out = model(mesh, z)
        assert isinstance(out, FluxPrediction) and out.mean.shape == (3, mesh.n_faces, 2)
        for b in range(3):
            single = model(mesh, z[b])
            for got, expected in zip(out, single):
                assert float((got[b] - expected).abs().max()) <= 1e-12 * max(
                    1.0, float(expected.abs().max()))
    assert_antisymmetric(model, mesh, z, tol=1e-13)


def test_vector_head_batched_global_vectors_and_edge_features():
    """Global vectors ``w (B, n_cells, n_vars, d)`` and per-sample edge features
    ``(B, 2 n_faces, E)`` batch like the latents."""
    mesh = MESHES["healpix-2"]
    gen = torch.Generator().manual_seed(6)
    w = torch.randn(3, mesh.n_cells, 2, 3, dtype=torch.float64, generator=gen)
    head = VectorHead(0, n_vars=2)
    out = head.directed(None, mesh, w=w)
    for b in range(3):
        assert torch.allclose(out[b], head.directed(None, mesh, w=w[b]), rtol=0, atol=1e-14)
    pair = _head("pairwise")
    z = torch.randn(3, mesh.n_cells, F, dtype=torch.float64, generator=gen)
    e = torch.randn(3, 2 * mesh.n_faces, 6, dtype=torch.float64, generator=gen)
    e[:, mesh.n_faces:] = e[:, : mesh.n_faces]       # any features: antisymmetry is the head's
    with torch.no_grad():
        got = pair.directed(z, mesh, edge_features=e)
        for b in range(3):
            assert torch.allclose(got[b], pair.directed(z[b], mesh, edge_features=e[b]),
                                  rtol=0, atol=1e-13)
    assert torch.equal(got[:, mesh.n_faces:], -got[:, : mesh.n_faces])
