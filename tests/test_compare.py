"""``meshclosure compare`` end to end at a tiny size (kinematic on a 16² plane → 8², two
seeds, two models plus one that does not support the mesh), its resume and its refusals."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from meshclosure.cli import main
from meshclosure.compare import COLUMNS, cell_text, compare, read_cells, read_table, spread
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
