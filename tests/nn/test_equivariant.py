"""The rotation-equivariant e3nn closure "e3nn" on sphere meshes (issue 5, item 2b).

Checks: exact antisymmetry and conservation, permutation equivariance, face
fluxes unchanged to 1e-10 when the mesh and the vector inputs are rotated
(both heads, several rotations), node outputs transforming as their irreps,
the rotation check FAILING for models that read coordinates or when the
vector inputs are not rotated, the vector head against its formula, float32,
gradients, and the refusal of planar meshes.
"""
from __future__ import annotations

import functools

import pytest
import torch
from e3nn import o3

import meshclosure.nn.equivariant  # noqa: F401  (registers "e3nn")
from meshclosure.mesh import Coarsening, agglomerate, cartesian, from_meshio, icosahedral
from meshclosure.nn import UnsupportedMeshError, build_model, list_models
from meshclosure.nn.equivariant import EquivariantGNN
from meshclosure.testing import (assert_antisymmetric, assert_conservative, assert_equivariant,
                                 random_rotation, rotate_mesh, small_meshes)

SMALL = small_meshes()
MESHES = {"healpix-2": SMALL["healpix-2"], "icosahedral-1": icosahedral(1),
          "icosahedral-2": SMALL["icosahedral-2"], "dual-1": SMALL["dual-1"],
          "coarsened": SMALL["coarsened"]}
HEADS = ["vector", "pairwise"]
VEC = [(2, 3, 4)]                       # x = [q, ζ, gx, gy, gz]: irreps "2x0e + 1x1o"
SMALL_NET = dict(hidden="8x0e + 4x1o + 4x1e", n_layers=2, latent=8, radial_hidden=16)


def _x(mesh, seed=1, dtype=torch.float64):
    """Two scalars and one tangent vector (global Cartesian components) per cell."""
    gen = torch.Generator().manual_seed(seed)
    s = torch.randn(mesh.n_cells, 2, dtype=torch.float64, generator=gen)
    v = torch.randn(mesh.n_cells, 3, dtype=torch.float64, generator=gen)
    r = mesh.cell_center / mesh.cell_center.norm(dim=1, keepdim=True)
    v = v - (v * r).sum(1, keepdim=True) * r
    return torch.cat([s, v], 1).to(dtype)


@functools.lru_cache(maxsize=None)
def _model(name, head="vector", heteroscedastic=True, seed=0):
    """Heteroscedastic by default: the mean checks hold the same and log_var is checked too."""
    torch.manual_seed(seed)
    return build_model("e3nn", MESHES[name], n_scalars=2, n_vectors=1, n_vars=2, head=head,
                       heteroscedastic=heteroscedastic, **SMALL_NET).double()


# ------------------------------------------------------------------ invariants
@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("name", list(MESHES))
def test_antisymmetric_conservative_permutation(name, head):
    mesh, model, x = MESHES[name], _model(name, head), _x(MESHES[name])
    assert_antisymmetric(model, mesh, x)            # exact directed form + flipped mesh
    assert_conservative(model, mesh, x, tol=1e-12)
    assert_equivariant(model, mesh, x, transform="permutation", tol=1e-12)
    assert float(model(mesh, x)[0].detach().abs().max()) > 1e-3


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("name", list(MESHES))
def test_rotation_invariant_fluxes(name, head):
    mesh, model, x = MESHES[name], _model(name, head), _x(MESHES[name])
    for seed in range(3):
        assert_equivariant(model, mesh, x, transform="rotation", vectors=VEC, seed=seed,
                           tol=1e-10)


@pytest.mark.parametrize("head", HEADS)
def test_heteroscedastic_symmetric_and_invariant(head):
    name = "dual-1"
    mesh, model, x = MESHES[name], _model(name, head), _x(MESHES[name])
    assert_antisymmetric(model, mesh, x)            # log_var exactly symmetric too
    mean, log_var = model(mesh, x)
    assert mean.shape == log_var.shape == (mesh.n_faces, 2)
    R = random_rotation(3)
    x_rot = x.clone()
    x_rot[:, 2:] = x[:, 2:] @ R.T
    mean_r, log_var_r = model(rotate_mesh(mesh, R), x_rot)
    torch.testing.assert_close(mean_r, mean, rtol=0, atol=1e-10)
    torch.testing.assert_close(log_var_r, log_var, rtol=0, atol=1e-10)
    assert_equivariant(model, mesh, x, transform="permutation", tol=1e-12)


@pytest.mark.parametrize("name", ["healpix-2", "coarsened"])
def test_node_outputs_transform_as_irreps(name):
    """Scalars ``s`` are invariant and vectors ``w`` rotate: ``w(R·mesh, R·x) = R w(mesh, x)``."""
    mesh, model, x = MESHES[name], _model(name, "pairwise"), _x(MESHES[name])
    s, w = (t.detach() for t in model.node_outputs(mesh, x))
    assert s.shape == (mesh.n_cells, 8) and w.shape == (mesh.n_cells, 2, 3)
    for seed in (4, 5):
        R = random_rotation(seed)
        x_rot = x.clone()
        x_rot[:, 2:] = x[:, 2:] @ R.T
        s_r, w_r = (t.detach() for t in model.node_outputs(rotate_mesh(mesh, R), x_rot))
        torch.testing.assert_close(s_r, s, rtol=0, atol=1e-12)
        torch.testing.assert_close(w_r, w @ R.T, rtol=0, atol=1e-12)
    assert float(w.abs().max()) > 1e-3 and float(s.abs().max()) > 1e-3


def test_rotation_check_can_fail():
    """The same check fails for models that see coordinates or the pole, and when the
    vector inputs are left unrotated."""
    name = "icosahedral-2"
    mesh, x = MESHES[name], _x(MESHES[name])
    torch.manual_seed(0)
    for other in ("mlp_global", "mgn"):
        baseline = build_model(other, mesh, in_features=5, n_vars=2, hidden=8).double()
        with pytest.raises(AssertionError, match="rotation invariance: max deviation"):
            assert_equivariant(baseline, mesh, x, transform="rotation", vectors=VEC)
    for head in HEADS:
        with pytest.raises(AssertionError, match="rotation invariance: max deviation"):
            assert_equivariant(_model(name, head), mesh, x, transform="rotation")  # no vectors=


def test_vector_inputs_matter():
    """Rotating only the vector inputs (mesh fixed) changes the fluxes: they are used."""
    mesh, model, x = MESHES["healpix-2"], _model("healpix-2"), _x(MESHES["healpix-2"])
    x_rot = x.clone()
    x_rot[:, 2:] = x[:, 2:] @ random_rotation(1).T
    assert float((model(mesh, x_rot)[0] - model(mesh, x)[0]).detach().abs().max()) > 1e-3


def test_vector_head_formula():
    """``Φ_f = ½ (P_a w_a + P_b w_b) · n_f A_f`` with ``P_i`` the tangent projector at cell i."""
    mesh, x = MESHES["dual-1"], _x(MESHES["dual-1"])
    model = _model("dual-1", heteroscedastic=False)
    assert model.irreps_out == o3.Irreps("2x1o")     # only the vectors w are computed
    _, w = model.node_outputs(mesh, x)
    r = mesh.cell_center / mesh.cell_center.norm(dim=1, keepdim=True)
    w = w - (w * r[:, None]).sum(-1, keepdim=True) * r[:, None]
    a, b = mesh.face_cells
    expected = 0.5 * ((w[a] + w[b]) * mesh.face_normal[:, None]).sum(-1) * mesh.face_area[:, None]
    torch.testing.assert_close(model(mesh, x), expected, rtol=0, atol=1e-14)


def test_pairwise_head_formula():
    """``Φ_f = ½ (g(s_a, s_b, e_ab) − g(s_b, s_a, e_ba)) A_f`` with invariant ``e``."""
    mesh, model, x = MESHES["dual-1"], _model("dual-1", "pairwise"), _x(MESHES["dual-1"])
    s, w = model.node_outputs(mesh, x)
    a, b = mesh.face_cells
    n, ell = mesh.face_normal[:, None], model.length_scale
    geom = torch.stack([mesh.face_area, mesh.cell_distance], 1) / ell
    e_ab = torch.cat([geom, (w[a] * n).sum(-1), (w[b] * n).sum(-1)], 1)
    e_ba = torch.cat([geom, -(w[b] * n).sum(-1), -(w[a] * n).sum(-1)], 1)
    g = model.head.g
    expected = 0.5 * (g(torch.cat([s[a], s[b], e_ab], 1)) - g(torch.cat([s[b], s[a], e_ba], 1)))
    torch.testing.assert_close(model(mesh, x)[0], expected * mesh.face_area[:, None], rtol=0,
                               atol=1e-14)


# ------------------------------------------------------------------ dtypes
@pytest.mark.parametrize("head", HEADS)
def test_float32(head):
    name = "icosahedral-1"
    mesh, x = MESHES[name], _x(MESHES[name])
    torch.manual_seed(0)
    model = build_model("e3nn", mesh, n_scalars=2, n_vectors=1, n_vars=2, head=head,
                        **SMALL_NET)                 # float32 by default
    assert next(model.parameters()).dtype == torch.float32
    x32 = x.float()
    phi = model(mesh, x32).detach()
    assert phi.dtype == torch.float32
    assert_antisymmetric(model, mesh, x32, tol=1e-5)
    assert_conservative(phi.detach(), mesh, tol=1e-5)
    assert_equivariant(model, mesh, x32, transform="rotation", vectors=VEC, tol=1e-5)
    phi64 = model.double()(mesh, x).detach()         # same weights in float64
    scale = float(phi64.abs().max())
    assert float((phi.double() - phi64).abs().max()) <= 1e-5 * scale


def test_float32_round_trip_keeps_exact_constants():
    """Wigner-3j buffers come back exactly after .float().double() and after loading a
    float32 state dict, so equivariance holds to float64 rounding again."""
    name = "healpix-2"
    mesh, x = MESHES[name], _x(MESHES[name])
    model = _model(name, "pairwise")
    w3j = {k: v.clone() for k, v in model.named_buffers() if "_w3j" in k}
    assert w3j and all(v.dtype == torch.float64 for v in w3j.values())
    model.float().double()
    for k, v in model.named_buffers():
        if k in w3j:
            assert torch.equal(v, w3j[k])
    assert_equivariant(model, mesh, x, transform="rotation", vectors=VEC, tol=1e-12)
    torch.manual_seed(0)
    fresh = build_model("e3nn", mesh, n_scalars=2, n_vectors=1, n_vars=2, head="pairwise",
                        heteroscedastic=True, **SMALL_NET).double()
    fresh.load_state_dict(model.float().state_dict())
    model.double()
    for k, v in fresh.named_buffers():
        if k in w3j:
            assert torch.equal(v, w3j[k])
    assert_equivariant(fresh, mesh, x, transform="rotation", vectors=VEC, tol=1e-12)


# ------------------------------------------------------------------ training
@pytest.mark.parametrize("name", list(MESHES))
def test_forward_backward_reaches_all_parameters(name):
    mesh = MESHES[name]
    cases = [(head, True) for head in HEADS] + ([("vector", False)] if name == "dual-1" else [])
    for head, heteroscedastic in cases:
        model = _model(name, head, heteroscedastic)
        model.zero_grad()
        x = _x(mesh).requires_grad_(True)
        out = model(mesh, x)
        mean, log_var = out if heteroscedastic else (out, torch.zeros(()))
        ((mean ** 2).mean() + (log_var ** 2).mean()).backward()
        for pname, p in model.named_parameters():
            if p.numel() == 0:
                continue
            assert p.grad is not None, f"{head}: no gradient reaches {pname}"
            assert bool(torch.isfinite(p.grad).all()), pname
            assert float(p.grad.abs().sum()) > 0, f"{head}: zero gradient for {pname}"
        assert bool(torch.isfinite(x.grad).all()) and float(x.grad[:, 2:].abs().sum()) > 0


# ------------------------------------------------------------------ registry, errors
def test_families_and_errors():
    assert "e3nn" in list_models("healpix") and "e3nn" in list_models("icosahedral")
    assert "e3nn" not in list_models("cartesian")
    with pytest.raises(UnsupportedMeshError) as err:
        build_model("e3nn", cartesian(4, 4))
    msg = str(err.value)
    assert "('healpix', 'icosahedral', 'cubed', 'meshio', 'coarsened')" in msg and "'mgn'" in msg
    plane = cartesian(8, 8)
    with pytest.raises(UnsupportedMeshError, match="needs a sphere mesh"):
        build_model("e3nn", Coarsening(plane, agglomerate(plane, 16)).coarse)
    from conftest import square_with_hole_meshio

    with pytest.raises(UnsupportedMeshError, match="needs a sphere mesh"):
        build_model("e3nn", from_meshio(square_with_hole_meshio(4)))
    mesh = MESHES["icosahedral-1"]
    with pytest.raises(ValueError, match="head='potential'"):
        EquivariantGNN(mesh, head="potential")
    with pytest.raises(ValueError, match="in_features=3 does not match irreps_in=2x0e"):
        EquivariantGNN(mesh, n_scalars=2, in_features=3)
    with pytest.raises(ValueError, match="in_features=3 does not match irreps_in=3x0e.1x1o"):
        EquivariantGNN(mesh, n_scalars=3, n_vectors=1, in_features=3)
    model = _model("icosahedral-1", heteroscedastic=False)
    with pytest.raises(ValueError, match=r"x must have shape \(n_cells=80, in_features=5\)"):
        model(mesh, torch.zeros(80, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="global 3-D face normals"):
        model(mesh.to_graph(), _x(mesh))


def test_generic_config_keys():
    """``in_features`` (all columns) and an int ``hidden`` work as for the other models."""
    mesh = MESHES["icosahedral-1"]
    model = build_model("e3nn", mesh, in_features=5, n_vectors=1, hidden=8, n_layers=1)
    assert str(model.irreps_in) == "2x0e+1x1o"
    assert str(model.gates[0].irreps_out) == "8x0e+4x1o+4x1e"
    assert str(build_model("e3nn", mesh, in_features=3, n_layers=0).irreps_in) == "3x0e"
    assert_equivariant(model.double(), mesh, _x(mesh), transform="rotation", vectors=VEC)


def test_graph_with_normals_and_irreps_string():
    mesh = MESHES["icosahedral-1"]
    model, x = _model("icosahedral-1", "pairwise"), _x(mesh)
    g = mesh.to_graph(x)
    g.face_normal = mesh.face_normal
    torch.testing.assert_close(model(g), model(mesh, x), rtol=0, atol=1e-14)
    # irreps string input: one scalar and two vectors, columns [q, v1 (3), v2 (3)]
    torch.manual_seed(0)
    two = build_model("e3nn", mesh, irreps_in="1x0e + 2x1o", **SMALL_NET).double()
    assert two.in_features == 7
    x2 = torch.randn(mesh.n_cells, 7, dtype=torch.float64)
    assert_equivariant(two, mesh, x2, transform="rotation", vectors=[(1, 2, 3), (4, 5, 6)])
    with pytest.raises(AssertionError, match="rotation invariance"):
        assert_equivariant(two, mesh, x2, transform="rotation", vectors=[(1, 2, 3)])


@pytest.mark.parametrize("head", HEADS)
def test_batch_with_vector_inputs_rotation_invariant_per_sample(head):
    """A batch of inputs with tangent vectors: each sample as if alone, and rotating the
    mesh and every sample's vectors leaves every sample's fluxes unchanged."""
    name = "icosahedral-1"
    mesh, model = MESHES[name], _model(name, head)
    x = torch.stack([_x(mesh, seed=s) for s in (1, 2)])
    with torch.no_grad():
        out = model(mesh, x)
        for b in range(2):
            for got, expected in zip(out, model(mesh, x[b])):
                assert float((got[b] - expected).abs().max()) <= 1e-12
    assert_equivariant(model, mesh, x, transform="rotation", vectors=VEC)
