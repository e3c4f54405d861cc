"""MeshGraphNet, the global-coordinate MLP baseline and the registry, on every mesh family."""
from __future__ import annotations

import pytest
import torch

from meshclosure.graph import to_graph
from meshclosure.nn import (GlobalMLP, MeshGraphNet, UnknownModelError, UnsupportedMeshError,
                            build_model, list_models, model_families, register)
from meshclosure.nn import registry
from meshclosure.testing import (assert_antisymmetric, assert_conservative, assert_equivariant,
                                 small_meshes)

from _value_checks import check_values

MESHES = small_meshes()
IN = 3


def _x(mesh, seed=1):
    return torch.randn(mesh.n_cells, IN, dtype=torch.float64,
                       generator=torch.Generator().manual_seed(seed))


def _mgn(mesh, head="pairwise", heteroscedastic=False, seed=0):
    torch.manual_seed(seed)
    return build_model("mgn", mesh, in_features=IN, n_vars=2, hidden=16, n_blocks=2,
                       head=head, heteroscedastic=heteroscedastic).double()


@pytest.mark.parametrize("head", ["pairwise", "potential"])
@pytest.mark.parametrize("name", list(MESHES))
def test_mgn_antisymmetric_conservative_permutation(name, head):
    mesh = MESHES[name]
    model, x = _mgn(mesh, head), _x(mesh)
    assert_antisymmetric(model, mesh, x)            # exact directed form + flipped mesh
    assert_conservative(model, mesh, x, tol=1e-12)
    assert_equivariant(model, mesh, x, transform="permutation", tol=1e-12)
    assert float(model(mesh, x).detach().abs().max()) > 1e-8


@pytest.mark.parametrize("name", ["healpix-2", "coarsened"])
def test_mgn_heteroscedastic(name):
    mesh = MESHES[name]
    model, x = _mgn(mesh, heteroscedastic=True), _x(mesh)
    assert_antisymmetric(model, mesh, x)            # log_var symmetric exactly as well
    mean, log_var = model(mesh, x)
    assert log_var.shape == mean.shape == (mesh.n_faces, 2)
    assert_equivariant(model, mesh, x, transform="permutation")
    # seeded, batch = samples, input-dependent log_var, the NLL's gradient reaches every weight
    check_values(lambda seed: _mgn(mesh, heteroscedastic=True, seed=seed), mesh, x)


@pytest.mark.parametrize("name", ["cartesian-8x8", "cartesian-channel-6x4"])
def test_mgn_translation_invariant_on_plane(name):
    mesh = MESHES[name]
    model, x = _mgn(mesh), _x(mesh)
    for seed in range(3):
        assert_equivariant(model, mesh, x, transform="translation", tol=1e-10, seed=seed)


def test_mgn_graph_input_matches_mesh_input():
    mesh = MESHES["dual-1"]
    model, x = _mgn(mesh), _x(mesh)
    g = to_graph(mesh, x)
    assert torch.equal(model(g), model(mesh, x))


def test_mgn_not_rotation_invariant_east_north_frame():
    """Documented limitation: the (east, north) edge frame depends on the pole."""
    mesh = MESHES["icosahedral-2"]
    with pytest.raises(AssertionError, match="rotation invariance"):
        assert_equivariant(_mgn(mesh), mesh, _x(mesh), transform="rotation")


@pytest.mark.parametrize("name", ["healpix-2", "icosahedral-2", "dual-1", "coarsened"])
def test_mlp_global_conserves_but_fails_rotation(name):
    mesh = MESHES[name]
    torch.manual_seed(0)
    model = build_model("mlp_global", mesh, in_features=IN, hidden=16).double()
    assert isinstance(model, GlobalMLP)
    x = _x(mesh)
    assert_antisymmetric(model, mesh, x)
    assert_conservative(model, mesh, x)
    assert_equivariant(model, mesh, x, transform="permutation")
    with pytest.raises(AssertionError, match="rotation invariance: max deviation"):
        assert_equivariant(model, mesh, x, transform="rotation")


def test_mlp_global_fails_translation():
    mesh = MESHES["cartesian-8x8"]
    torch.manual_seed(0)
    model = build_model("mlp_global", mesh, in_features=IN, hidden=16).double()
    with pytest.raises(AssertionError, match="translation invariance"):
        assert_equivariant(model, mesh, _x(mesh), transform="translation")


@pytest.mark.parametrize("model_name", ["mgn", "mlp_global"])
@pytest.mark.parametrize("name", list(MESHES))
def test_forward_backward_finite_gradients(model_name, name):
    mesh = MESHES[name]
    torch.manual_seed(0)
    model = build_model(model_name, mesh, in_features=IN, n_vars=2, hidden=8).double()
    x = _x(mesh).requires_grad_(True)
    loss = (model(mesh, x) ** 2).mean()
    loss.backward()
    params = list(model.parameters())
    assert params and all(p.grad is not None and torch.isfinite(p.grad).all() for p in params)
    assert sum(float(p.grad.abs().sum()) for p in params) > 0
    assert torch.isfinite(x.grad).all() and float(x.grad.abs().sum()) > 0


def test_float32_model_on_float64_mesh():
    mesh = MESHES["healpix-2"]
    model = build_model("mgn", mesh, in_features=IN, hidden=8)
    phi = model(mesh, _x(mesh).float())
    assert phi.dtype == torch.float32
    assert_conservative(phi.detach(), mesh, tol=1e-5)


# ------------------------------------------------------------------ registry
@pytest.fixture
def healpix_only():
    @register("_test_healpix_only", families=("healpix",), instead="mgn")
    class HealpixOnly(MeshGraphNet):
        """Test-only model supported on HEALPix alone."""

    yield HealpixOnly
    registry._REGISTRY.pop("_test_healpix_only")


def test_registry_lists_models_and_families(healpix_only):
    assert {"mgn", "mlp_global", "_test_healpix_only"} <= set(list_models())
    assert "_test_healpix_only" in list_models("healpix")
    assert "_test_healpix_only" not in list_models("icosahedral")
    assert model_families("_test_healpix_only") == ("healpix",)
    assert healpix_only.name == "_test_healpix_only"
    model = build_model("_test_healpix_only", MESHES["healpix-2"], in_features=IN, hidden=8)
    assert isinstance(model, healpix_only)


def test_registry_refuses_unsupported_family(healpix_only):
    with pytest.raises(UnsupportedMeshError) as err:
        build_model("_test_healpix_only", MESHES["icosahedral-2"])
    msg = str(err.value)
    assert "supports mesh families ('healpix',)" in msg
    assert "family 'icosahedral'" in msg
    # the suggestions are exactly the registered models that support the family
    suggested = msg.split("Use ")[-1].removesuffix(" instead.").split(" or ")
    assert "'mgn'" in suggested
    assert sorted(s.strip("'") for s in suggested) == sorted(
        n for n in list_models() if "icosahedral" in model_families(n))
    assert isinstance(err.value, ValueError)


def test_registry_errors():
    with pytest.raises(UnknownModelError, match="unknown model 'nope'.*'mgn'"):
        build_model("nope", MESHES["healpix-2"])
    with pytest.raises(ValueError, match="unknown families"):
        register("_bad", families=("torus",))
    with pytest.raises(ValueError, match="already registered"):
        register("mgn")(GlobalMLP)
    with pytest.raises(ValueError, match="head='vector'"):
        build_model("mgn", MESHES["healpix-2"], head="vector")


@pytest.mark.parametrize("which", ["cubed-sphere", "square-with-hole"])
def test_mgn_on_meshio_meshes(which):
    from conftest import cubed_sphere_meshio, square_with_hole_meshio

    from meshclosure.mesh import from_meshio

    mesh = from_meshio(cubed_sphere_meshio(2) if which == "cubed-sphere"
                       else square_with_hole_meshio(4))
    assert mesh.family == "meshio"
    model, x = _mgn(mesh), _x(mesh)
    assert_antisymmetric(model, mesh, x)
    assert_conservative(model, mesh, x, tol=1e-12)
    assert_equivariant(model, mesh, x, transform="permutation")
    if not mesh.is_sphere:
        assert_equivariant(model, mesh, x, transform="translation")


@pytest.mark.parametrize("name", ["icosahedral-2", "cartesian-channel-6x4"])
def test_batched_gradients_equal_summed_sample_gradients(name):
    """Training on a batch: the gradient of a summed loss over ``x (B, n_cells, F)`` equals
    the sum of the per-sample gradients (1e-12), on the Mesh and on its graph."""
    mesh = MESHES[name]
    model = _mgn(mesh)
    x = torch.stack([_x(mesh, seed=s) for s in (1, 2, 3)])

    def grads(loss):
        model.zero_grad()
        loss.backward()
        return torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    batched = grads(model(mesh, x).square().sum())
    summed = sum(grads(model(mesh, x[b]).square().sum()) for b in range(3))
    assert float((batched - summed).abs().max()) <= 1e-12 * float(summed.abs().max())
    graph = to_graph(mesh)
    on_graph = model(graph, x).detach()
    assert float((on_graph - model(mesh, x).detach()).abs().max()) <= 1e-12
