"""``meshclosure compare`` end to end at a tiny size (kinematic on a 16² plane → 8², two
seeds, two models plus one that does not support the mesh), its resume and its refusals."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from meshclosure.cli import main
from meshclosure.compare import (COLUMNS, TILTED_COLUMNS, cell_text, compare, read_cells,
                                 read_table, spread, tilted_closure)
from meshclosure.compare.table import md_columns
from meshclosure.errors import ArgumentError, OutputExistsError

#: The tiny comparison: ``sfno`` (HEALPix only) must be skipped on the plane.
FLAGS = ["--scenario", "kinematic", "--models", "mgn,cnn,sfno", "--meshes", "cartesian:16",
         "--seeds", "2", "--factor", "2", "--samples", "17", "--ood", "3", "--epochs", "1",
         "--updates", "3", "--batch-size", "4", "--initial", "2",
         "--model-config", '{"mgn": {"hidden": 8, "n_blocks": 1}, '
         '"cnn": {"hidden": 8, "n_layers": 2}}',
         "--scenario-config", '{"spinup_time": 0.5}']


def _python_args(out):
    return dict(scenario="kinematic", models="mgn,cnn,sfno", meshes="cartesian:16", seeds=2,
                out=out, factor=2, n_samples=17, ood_samples=3,
                train={"epochs": 1, "updates_per_epoch": 3, "batch_size": 4, "lr": 3e-3,
                       "target": "step_mean"},
                model_config={"mgn": {"hidden": 8, "n_blocks": 1},
                              "cnn": {"hidden": 8, "n_layers": 2}},
                scenario_config={"spinup_time": 0.5}, n_initial=2)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare") / "cmp"
    assert main(["-q", "compare", *FLAGS, "--out", str(out)]) == 0
    return out


def _csv(out: Path):
    with open(out / "table.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_outputs_and_every_column(run):
    for name in ("table.csv", "table.md", "similarity.png", "arguments.json"):
        assert (run / name).is_file(), name
    rows = _csv(run)
    closures = {r["closure"] for r in rows}
    assert {"mgn", "cnn", "none", "replay", "constant"} <= closures
    assert "sfno" not in closures
    keys = [k for k, _ in md_columns("step_mean.")]
    for name in closures:
        have = {r["metric"] for r in rows if r["closure"] == name}
        assert set(keys) <= have, (name, set(keys) - have)
    # each model row: numbers from both seeds, with their values listed per seed
    for name in ("mgn", "cnn"):
        for key in ("parameters", "train_time_s", "step_time_s", "online.similarity_mean",
                    "offline.step_mean.r2", "peak_memory_mib"):
            r = next(r for r in rows if r["closure"] == name and r["metric"] == key)
            vals = [float(v) for v in r["values"].split(";")]
            assert r["n"] == "2" and len(vals) == 2 and all(math.isfinite(v) for v in vals)
            mean, sd, n = spread(vals)
            assert math.isclose(float(r["mean"]), mean) and n == 2
        params = next(r for r in rows if r["closure"] == name and r["metric"] == "parameters")
        assert float(params["sd"]) == 0.0 and float(params["mean"]) > 100   # same network
    md = (run / "table.md").read_text()
    # every number in the Markdown table is one the CSV holds (as the README check will do)
    for r in read_table(run):
        if r["metric"] in keys and r["n"]:
            assert cell_text(r["mean"], r["sd"], r["n"], r["values"]) in md, r
    for _, header in COLUMNS:
        assert header in md
    assert md.count("| mgn |") == 1 and md.count("| replay |") == 1


def test_reference_rows(run):
    rows = {(r["closure"], r["metric"]): r for r in _csv(run)}
    none = rows[("none", "online.similarity_mean")]
    assert [float(v) for v in none["values"].split(";")] == [0.0, 0.0]
    replay = rows[("replay", "online.similarity_mean")]
    assert all(float(v) > 0.5 for v in replay["values"].split(";"))
    assert float(rows[("replay", "offline.step_mean.r2")]["mean"]) == 1.0   # its own target
    assert float(rows[("none", "parameters")]["mean"]) == 0.0
    assert rows[("replay", "step_time_s")]["n"] == "0"                     # not applicable
    # no closure's step is the cheapest: every closure adds work to the same solver step
    step = {n: float(rows[(n, "step_time_s")]["mean"]) for n in ("none", "mgn", "cnn")}
    assert step["none"] < min(step["mgn"], step["cnn"])
    assert float(rows[("constant", "parameters")]["mean"]) == 1.0           # one K for q


def test_skipped_model_is_a_note(run):
    md = (run / "table.md").read_text()
    assert "skipped: sfno on cartesian:16" in md
    assert not any(c["cell"] == "sfno" for c in read_cells(run))


def test_rerun_skips_every_cell(run):
    before = {p.name: p.read_bytes() for p in (run / "cells").glob("*.json")}
    assert len(before) == 2 * 3                      # 2 seeds × (mgn, cnn, references)
    result = compare(**_python_args(run))
    assert result.trained == 0 and result.computed == []
    assert len(result.skipped) == 6
    assert {p.name: p.read_bytes() for p in (run / "cells").glob("*.json")} == before
    assert result.value("cartesian:16", "none", "online.similarity_mean") == 0.0


def test_other_arguments_refused(run, capsys):
    flags = [f if f != "1" else "2" for f in FLAGS]           # --epochs 2
    assert main(["-q", "compare", *flags, "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert "--epochs 2: must be 1" in err and "arguments.json" in err
    with pytest.raises(ArgumentError, match="models='mgn,cnn': must be mgn,cnn,sfno"):
        compare(**{**_python_args(run), "models": "mgn,cnn"})


def test_bad_arguments_before_any_work(tmp_path):
    with pytest.raises(ArgumentError, match="seeds=1: must be an integer >= 2"):
        compare(**{**_python_args(tmp_path / "a"), "seeds": 1})
    with pytest.raises(ArgumentError, match="models='nope'"):
        compare(**{**_python_args(tmp_path / "a"), "models": "mgn,nope"})
    with pytest.raises(ArgumentError, match="patience"):
        compare(**{**_python_args(tmp_path / "a"), "train": {"patience": 2}})
    with pytest.raises(ArgumentError, match="model_config=.*must hold settings cnn accepts"):
        compare(**{**_python_args(tmp_path / "a"), "model_config": {"cnn": {"nope": 1}}})
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "other.txt").write_text("x")
    with pytest.raises(OutputExistsError, match="not a comparison folder"):
        compare(**_python_args(tmp_path / "b"))
    assert not (tmp_path / "a").exists()
    saved = json.dumps(_python_args("x")["model_config"])
    assert "hidden" in saved


# ------------------------------------------------------------ the symmetry test (rotation)
#: A plane and a sphere, one tiny model, tested also on a tilted dataset (30°).
TILTED_FLAGS = ["--scenario", "kinematic", "--models", "mgn", "--meshes",
                "cartesian:16,healpix:4", "--seeds", "2", "--factor", "2", "--samples", "17",
                "--ood", "3", "--epochs", "1", "--updates", "3", "--batch-size", "4",
                "--initial", "2", "--model-config", '{"mgn": {"hidden": 8, "n_blocks": 1}}',
                "--scenario-config", '{"spinup_time": 0.5}', "--rotation", "30"]


@pytest.fixture(scope="module")
def tilted_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare_tilted") / "cmp"
    assert main(["-q", "compare", *TILTED_FLAGS, "--out", str(out)]) == 0
    return out


def test_tilted_columns_finite_on_the_sphere_and_na_on_the_plane(tilted_run):
    rows = {(r["mesh"], r["closure"], r["metric"]): r for r in read_table(tilted_run)}
    keys = ("tilted.offline.step_mean.r2", "tilted.online.similarity_mean")
    for name in ("mgn", "constant", "power_law", "none", "replay"):
        for key in keys:
            sphere = rows[("healpix:4", name, key)]
            assert sphere["n"] == 2 and all(math.isfinite(v) for v in sphere["values"]), (
                name, key, sphere)
            assert rows[("cartesian:16", name, key)]["n"] == 0                 # n/a
    # the references keep their meaning on the tilted data: none 0, replay its own target
    assert rows[("healpix:4", "none", keys[1])]["values"] == [0.0, 0.0]
    assert rows[("healpix:4", "replay", keys[0])]["mean"] == 1.0
    assert all(v > 0.5 for v in rows[("healpix:4", "replay", keys[1])]["values"])
    # a tilted dataset per sphere seed, none for the plane
    data = sorted(p.name for p in (tilted_run / "data").glob("*_tilted.nc"))
    assert data == ["healpix-4_s0_tilted.nc", "healpix-4_s1_tilted.nc"]
    md = (tilted_run / "table.md").read_text()
    for _, header in TILTED_COLUMNS:
        assert header in md
    assert "tilted (rotation=30.0°)" in md and "planes: n/a" in md
    for r in read_table(tilted_run):
        if r["metric"] in keys and r["n"]:
            assert cell_text(r["mean"], r["sd"], r["n"], r["values"]) in md, r
    # without rotation the table has no tilted columns (the plain run above)


def test_tilted_arguments_saved_resumed_and_refused(tilted_run, capsys):
    saved = json.loads((tilted_run / "arguments.json").read_text())
    assert saved["rotation"] == 30.0
    before = {p.name: p.read_bytes() for p in (tilted_run / "cells").glob("*.json")}
    assert main(["-q", "compare", *TILTED_FLAGS, "--out", str(tilted_run)]) == 0
    assert {p.name: p.read_bytes() for p in (tilted_run / "cells").glob("*.json")} == before
    capsys.readouterr()
    flags = TILTED_FLAGS[:-1] + ["40,90"]
    assert main(["-q", "compare", *flags, "--out", str(tilted_run)]) == 2
    err = capsys.readouterr().err
    assert "--rotation '[40.0, 90.0]': must be 30.0" in err and "pass --rotation 30.0" in err
    with pytest.raises(ArgumentError, match="rotation=.*must be 30.0"):
        compare(**{**_python_args(tilted_run), "models": "mgn",
                   "meshes": "cartesian:16,healpix:4", "model_config": {
                       "mgn": {"hidden": 8, "n_blocks": 1}}})


def test_bad_rotation_refused_before_any_work(tmp_path):
    with pytest.raises(ArgumentError, match="rotation=0.0: must tilt the axis"):
        compare(**{**_python_args(tmp_path / "a"), "rotation": 0})
    with pytest.raises(ArgumentError, match="rotation="):
        compare(**{**_python_args(tmp_path / "a"), "rotation": [30]})
    with pytest.raises(ArgumentError, match="scenario_config=.*must not set 'rotation'"):
        compare(**{**_python_args(tmp_path / "a"), "rotation": 30,
                   "scenario_config": {"rotation": 10}})
    assert not (tmp_path / "a").exists()


def test_plain_table_has_no_tilted_columns(run):
    md = (run / "table.md").read_text()
    assert "tilted" not in md
    assert json.loads((run / "arguments.json").read_text())["rotation"] is None


def test_rebuilt_pipeline_reads_the_tilted_N(tilted_run):
    """The model trained at the default axis, rebuilt for the tilted scenario, gets the
    tilted N at the coarse cell centres: the default N at Rᵀx (its saved pipeline would
    compute the untilted N)."""
    import torch

    from meshclosure.data import get_scenario
    from meshclosure.data.scenarios import rotation_matrix
    from meshclosure.validate import load_closure

    kw = dict(factor=2, seed=0, spinup_time=0.5)
    s0 = get_scenario("kinematic", "healpix:4", **kw)
    s1 = get_scenario("kinematic", "healpix:4", rotation=30, **kw)
    path = tilted_run / "work" / "healpix-4_s0" / "mgn" / "model.pt"
    mesh = s1.coarse
    state = {"q": torch.linspace(-1, 1, mesh.n_cells, dtype=torch.float64)}
    U = torch.zeros(mesh.n_faces, dtype=torch.float64)
    saved = load_closure(path, mesh)[0]
    col = saved.features.names.index("input_N")
    x = mesh.cell_center.double()
    R = rotation_matrix(30)
    t = 1.3
    default_N = saved.features(mesh, state, t, U)[:, col].double()
    assert torch.allclose(default_N, s0.N(x, t).to(default_N), atol=1e-6)
    tilted = tilted_closure(load_closure(path, mesh)[0], s1)
    got = tilted.features(mesh, state, t, U)[:, col].double()
    assert torch.allclose(got, s0.N(x @ R, t), atol=1e-6)              # default N at Rᵀx
    assert torch.allclose(got, s1.N(x, t), atol=1e-6)
    assert float((got - default_N).abs().max()) > 0.1                  # really moved
    assert tilted.features.names == saved.features.names
