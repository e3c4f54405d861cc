"""The feature pipeline computes exactly the inputs the dataset stores, batched or not."""
from __future__ import annotations

import pytest
import torch

from meshclosure.closures import FeaturePipeline, Normalizer
from meshclosure.data.scenarios import get_scenario
from meshclosure.data.targets import subgrid_targets
from meshclosure.errors import ArgumentError
from meshclosure.mesh import cartesian, healpix

CASES = [("kinematic", "cartesian:16", 2), ("kinematic", "healpix:4", 2),
         ("kinematic", "icosahedral:3", 2), ("barotropic", "cartesian:16", 2),
         ("convection", "cartesian:16x8", 2)]


@pytest.mark.parametrize("name, mesh, factor", CASES, ids=[f"{a}-{b}" for a, b, _ in CASES])
def test_pipeline_equals_the_stored_inputs(name, mesh, factor):
    sc = get_scenario(name, mesh=mesh, factor=factor)
    t, state = sc.advance(0.0, sc.initial_state(), 5)
    sample = subgrid_targets(sc, sc.coarsening, t, state, sc.transport(t, state))
    pipe = FeaturePipeline.from_scenario(sc)
    expected = [sample.state[v] for v in sc.variables] + list(sample.inputs.values())
    names = [f"state_{v}" for v in sc.variables] + [f"input_{k}" for k in sample.inputs]
    assert pipe.names == tuple(names)
    x = pipe(sc.coarse, sample.state, t, sample.transport)
    ref = torch.stack(expected, -1)
    assert x.shape == ref.shape
    scale = ref.abs().amax(0).clamp_min(1e-300)
    assert float(((x - ref).abs() / scale).max()) <= 1e-12
    # rebuilt from its JSON config (as a saved pipeline is), without the live scenario
    again = FeaturePipeline.from_config(pipe.config())
    assert float(((again(sc.coarse, sample.state, t) - ref).abs() / scale).max()) <= 1e-12


def test_batched_equals_per_sample_and_is_differentiable():
    mesh = healpix(2)
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(3, mesh.n_cells, dtype=torch.float64, generator=gen, requires_grad=True)
    pipe = FeaturePipeline(["q"])
    xb = pipe(mesh, {"q": q})
    assert xb.shape == (3, mesh.n_cells, 3)
    for b in range(3):
        assert torch.equal(xb[b], pipe(mesh, {"q": q[b]}))
    # the gradient features are linear in q: d(sum x)/dq is the same for every sample
    xb.sum().backward()
    assert torch.allclose(q.grad[0], q.grad[1]) and float(q.grad.abs().max()) > 0
    assert torch.autograd.gradcheck(lambda z: pipe(mesh, {"q": z}), (q[0].detach().clone()
                                    .requires_grad_(),))


def test_gradient_features_rotate_with_the_frame():
    """On the plane the two gradient features of q = a x + b y are (a, b) in every cell."""
    mesh = cartesian(6, 5, 1.0, 1.0, periodic=False)
    x, y = mesh.cell_center.double().unbind(1)
    feats = FeaturePipeline(["q"])(mesh, {"q": 2.0 * x - 3.0 * y})
    assert torch.allclose(feats[:, 1], torch.full_like(x, 2.0), atol=1e-12)
    assert torch.allclose(feats[:, 2], torch.full_like(x, -3.0), atol=1e-12)


def test_bad_input_names_the_argument():
    mesh = healpix(1)
    with pytest.raises(ArgumentError, match="has no variable 'q'"):
        FeaturePipeline(["q"])(mesh, {"b": torch.zeros(12)})
    with pytest.raises(ArgumentError, match="n_cells = 12"):
        FeaturePipeline(["q"])(mesh, {"q": torch.zeros(13)})
    with pytest.raises(ArgumentError, match="extra_fn"):
        FeaturePipeline(["q"], extra=["N"])
    with pytest.raises(ArgumentError, match="variables"):
        FeaturePipeline([])


def test_normalizer_round_trip_and_log_variance():
    norm = Normalizer(["a", "b"], [1.0, -2.0], [2.0, 4.0], ["q", "z"], [3.0, 0.5], 7.0)
    x = torch.tensor([[3.0, 2.0]], dtype=torch.float64)
    assert norm.normalize_inputs(x).tolist() == [[1.0, 1.0]]
    y = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    assert norm.denormalize_flux(y).tolist() == [[3.0, 1.0]]
    assert torch.allclose(norm.normalize_flux(norm.denormalize_flux(y)), y)
    # σ scales with the flux: log σ² + 2 log s
    lv = torch.zeros(1, 2, dtype=torch.float64)
    assert torch.allclose(norm.denormalize_log_var(lv).exp().sqrt(), torch.tensor([[3.0, 0.5]],
                          dtype=torch.float64))
    again = Normalizer(**norm.config())
    assert torch.equal(again.input_scale, norm.input_scale) and again.transport_scale == 7.0
    with pytest.raises(ArgumentError, match="flux_scale"):
        Normalizer(["a"], [0.0], [1.0], ["q"], [float("nan")])
