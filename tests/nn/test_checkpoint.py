"""save_model / load_model: bit-identical rebuilds, weights only, the right mesh or a clear no."""
from __future__ import annotations

import json

import pytest
import torch

from meshclosure.closures import FeaturePipeline, Normalizer
from meshclosure.errors import OutputExistsError
from meshclosure.mesh import cartesian, healpix, icosahedral
from meshclosure.nn import build_model, list_models, model_families
from meshclosure.nn.checkpoint import CheckpointError, load_model, save_model
from meshclosure.testing import small_meshes

MESHES = small_meshes()
CASES = [(name, key) for name in list_models(conservative=None) if not name.startswith("_")
         for key, mesh in MESHES.items() if mesh.family in model_families(name)][::3]
SMALL = {"mgn": dict(hidden=8, n_blocks=1), "transformer": dict(hidden=8, n_blocks=1),
         "gru": dict(hidden=8), "e3nn": dict(n_scalars=2), "nodewise": dict(hidden=8),
         "nodewise_mean_free": dict(hidden=8)}


@pytest.mark.parametrize("name, key", CASES, ids=[f"{a}-{b}" for a, b in CASES])
def test_rebuilt_model_is_bit_identical(name, key, tmp_path):
    mesh = MESHES[key]
    torch.manual_seed(0)
    try:
        model = build_model(name, mesh, in_features=2, n_vars=2, **SMALL.get(name, {})).double()
    except ValueError as err:          # a documented refusal (e.g. a CNN on a channel)
        pytest.skip(str(err)[:80])
    save_model(model, tmp_path / "m.pt")
    torch.manual_seed(123)              # a different initialisation: the weights must win
    loaded = load_model(tmp_path / "m.pt", mesh)
    x = torch.randn(mesh.n_cells, 2, dtype=torch.float64, generator=torch.Generator()
                    .manual_seed(1))
    with torch.no_grad():
        a, b = model(mesh, x), loaded.model(mesh, x)
    a, b = (a[0], b[0]) if isinstance(a, tuple) else (a, b)
    assert torch.equal(a, b) and float(a.abs().max()) > 0


def test_pipeline_and_normalizer_travel_with_the_model(tmp_path):
    mesh = healpix(2)
    pipe = FeaturePipeline(["q"])
    norm = Normalizer(pipe.names, [0.5, 0.0, 0.0], [2.0, 3.0, 3.0], ["q"], [4.0])
    model = build_model("mgn", mesh, in_features=3, hidden=8, n_blocks=1)
    save_model(model, tmp_path / "m.pt", features=pipe, normalizer=norm, extra={"epochs": 3})
    loaded = load_model(tmp_path / "m.pt", mesh)
    assert loaded.features.names == pipe.names and loaded.extra == {"epochs": 3}
    assert torch.equal(loaded.normalizer.input_scale, norm.input_scale)
    q = torch.randn(mesh.n_cells)
    from meshclosure.closures import ModelClosure
    ours = ModelClosure(model, pipe, norm)(0.0, {"q": q}, mesh)["q"]
    theirs = loaded.closure()(0.0, {"q": q}, mesh)["q"]
    assert torch.equal(ours, theirs)


def test_another_mesh_is_refused_naming_both(tmp_path):
    model = build_model("mgn", healpix(2), hidden=8, n_blocks=1)
    save_model(model, tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match=r"nside=2.*nside=4"):
        load_model(tmp_path / "m.pt", healpix(4))
    with pytest.raises(CheckpointError, match="family=healpix.*family=icosahedral"):
        load_model(tmp_path / "m.pt", icosahedral(1))


class Payload:
    """Any pickled object: loading it by pickle would import and run this module's code."""


def test_a_file_that_could_run_code_is_refused(tmp_path):
    torch.save({"format": "meshclosure-model", "object": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="could run code"):
        load_model(tmp_path / "evil.pt", healpix(1))
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_model(tmp_path / "junk.pt", healpix(1))
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a meshclosure model file"):
        load_model(tmp_path / "other.pt", healpix(1))


def test_save_refuses_to_overwrite_and_unbuilt_models(tmp_path):
    mesh = cartesian(4, 4)
    model = build_model("mgn", mesh, hidden=8, n_blocks=1)
    save_model(model, tmp_path / "m.pt")
    before = (tmp_path / "m.pt").read_bytes()
    with pytest.raises(OutputExistsError):
        save_model(model, tmp_path / "m.pt")
    assert (tmp_path / "m.pt").read_bytes() == before
    save_model(model, tmp_path / "m.pt", overwrite=True)
    with pytest.raises(ValueError, match="build_model"):
        save_model(torch.nn.Linear(2, 2), tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()
    config = json.loads(torch.load(tmp_path / "m.pt", weights_only=True)["config"])
    assert config == {"hidden": 8, "n_blocks": 1}
