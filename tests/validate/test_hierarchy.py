"""validate(): the whole hierarchy on a tiny trajectory dataset, the report folder, the
command, and the end-to-end demo at CI size."""
from __future__ import annotations

import csv
import json
import math

import pytest
import torch

from meshclosure.cli import main
from meshclosure.errors import ArgumentError, OutputExistsError
from meshclosure.validate import HEADLINE, REPORT_FILES, validate, write_report


@pytest.fixture(scope="module")
def traj(tmp_path_factory):
    """A tiny trajectory dataset whose test split is long enough for three online members:
    40 main coarse steps (16/4/20 by time) plus 4 OOD steps."""
    from conftest import small_kinematic
    from meshclosure.data import generate

    out = tmp_path_factory.mktemp("validate_data") / "traj.nc"
    generate(small_kinematic(), out, n_samples=40, ood_samples=4, fractions=(0.4, 0.1, 0.5),
             trajectory=True, progress=False)
    return out


@pytest.fixture(scope="module")
def trained(traj, tmp_path_factory):
    """A tiny mgn trained on the step-mean flux of :func:`traj`."""
    from meshclosure.train import train

    out = tmp_path_factory.mktemp("validate_model") / "mgn"
    torch.manual_seed(0)
    train(str(traj), out, {"model": "mgn", "target": "step_mean", "epochs": 3,
                                     "batch_size": 4, "model_config": {"hidden": 8,
                                                                       "n_blocks": 1}},
          progress=False)
    return out / "model.pt"


@pytest.fixture(scope="module")
def report(traj, trained, tmp_path_factory):
    out = tmp_path_factory.mktemp("validate_report") / "report"
    result = validate(str(traj), trained, out=out, n_initial=3, audit_steps=40)
    return result, out


def test_every_row_gets_every_headline_number(report):
    result, out = report
    assert result.closures[-2:] == ["none", "replay"]
    assert {"mgn", "constant", "power_law"} <= set(result.closures)
    for name in result.closures:
        assert set(HEADLINE) <= set(result.summary[name]), name
    s = result.summary
    # the zero and the upper bound of the similarity score
    assert s["none"]["online.similarity_mean"] == 0.0
    assert s["replay"]["online.similarity_mean"] > 0.8
    # the replay IS the step-mean flux: 1 against it; against the instantaneous flux it is
    # measured, and below 1 (the flux varies within a coarse step)
    assert s["replay"]["offline.step_mean.r2"] == 1.0
    assert s["replay"]["offline.r2"] < 1.0 and s["replay"]["offline.corr"] < 1.0
    # no closure has per-cell correlation 0 by rule, and R² = 1 − E[y²]/var(y) < 0
    assert s["none"]["offline.corr"] == 0.0 and s["none"]["offline.r2"] < 0
    # nothing blew up, and every flux-form closure kept the budget to rounding over the
    # truth's span plus 40 audit steps
    for name in result.closures:
        assert math.isinf(s[name]["online.time_to_blowup"]), name
        assert abs(s[name]["online.conservation_drift"]) <= 1e-12, name
    # kinematic: the partially coupled stage coincides with the online run, and says so
    assert any("coincides" in n for n in result.notes)


def test_report_folder_holds_every_number(report):
    result, out = report
    assert sorted(p.name for p in out.iterdir() if p.suffix != ".png") == sorted(REPORT_FILES)
    pngs = [p for p in out.iterdir() if p.suffix == ".png"]
    assert len(pngs) >= 6                                 # maps, spectrum, PDF, growth, ...
    page = (out / "index.html").read_text()
    for name in result.closures:
        assert f"<td>{name}</td>" in page
    for png in pngs:
        assert f"src='{png.name}'" in page                # every figure is on the page
    metrics = json.loads((out / "metrics.json").read_text())
    for name in result.closures:
        for key in HEADLINE:
            value = metrics["closures"][name][key]
            expected = result.summary[name][key]
            assert (value == "inf" and math.isinf(expected)) or value == pytest.approx(
                expected, rel=1e-12, abs=0), (name, key)
    with open(out / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    head = {(r["closure"], r["stage"] + "." + r["metric"]): float(r["value"]) for r in rows
            if r["variable"] == "" and r["split"] == ""}
    for name in result.closures:
        assert head[(name, "offline.r2")] == pytest.approx(result.summary[name]["offline.r2"])
        assert head[(name, "online.similarity_mean")] == pytest.approx(
            result.summary[name]["online.similarity_mean"])
    assert len(rows) > 10 * len(result.closures)          # the details, not only headlines
    # a step-mean score keeps its target on the metric and its variable in the column
    sm = [r for r in rows if r["stage"] == "offline" and r["split"] == "test"
          and r["closure"] == "mgn" and r["metric"] == "step_mean.tendency.r2"]
    assert len(sm) == 1 and sm[0]["variable"] == "q"
    assert not any(r["variable"] == "step_mean" for r in rows)


def test_existing_report_is_refused_and_replaced_only_when_complete(report, tmp_path,
                                                                    monkeypatch):
    result, _ = report
    out = tmp_path / "rep"
    write_report(result, out, figures=False)
    before = (out / "metrics.json").read_text()
    with pytest.raises(OutputExistsError, match="overwrite"):
        write_report(result, out, figures=False)
    import meshclosure.validate.report as rep

    def broken(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(rep, "_write_csv", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        write_report(result, out, overwrite=True, figures=False)
    # the old report is intact and no temporary folder is left behind
    assert (out / "metrics.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rep"]


def test_bad_arguments_name_the_argument(traj, tmp_path):
    with pytest.raises(ArgumentError, match="model"):
        validate(str(traj), tmp_path / "missing.pt", stages=("offline",))
    with pytest.raises(ArgumentError, match="stages"):
        validate(str(traj), stages=("offline", "bogus"))
    with pytest.raises(ArgumentError, match="stages"):
        validate(str(traj), stages=())
    with pytest.raises(ArgumentError, match="repeat a row name"):
        validate(str(traj), closures={"power_law": None}, stages=("offline",))
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("mine")
    with pytest.raises(OutputExistsError):
        validate(str(traj), out=tmp_path / "busy")
    # overwrite replaces an earlier REPORT only: a folder with other files stays
    with pytest.raises(OutputExistsError, match="not a meshclosure report"):
        validate(str(traj), out=tmp_path / "busy", overwrite=True)
    assert (tmp_path / "busy" / "x").read_text() == "mine"


def test_offline_only_on_a_dataset_without_trajectories(tmp_path):
    from conftest import small_kinematic
    from meshclosure.data import generate

    data = generate(small_kinematic(), tmp_path / "plain.nc", n_samples=12, progress=False)
    with pytest.raises(ArgumentError, match="trajectory"):
        validate(str(data))                                   # refused before any work
    result = validate(str(data), stages=("offline",))
    assert result.online is None and math.isfinite(result.summary["none"]["offline.r2"])
    assert math.isnan(result.summary["replay"]["offline.r2"])  # no step means to replay


def test_command_writes_the_report(traj, trained, tmp_path, capsys):
    code = main(["validate", "--data", str(traj), "--model", str(trained), "--out",
                 str(tmp_path / "r"), "--stages", "offline,online", "-q"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| mgn |" in printed and "| replay |" in printed
    assert (tmp_path / "r" / "index.html").is_file()
    assert main(["validate", "--data", str(tmp_path / "nope.nc"), "--out",
                 str(tmp_path / "r2")]) == 2
    assert "--data" in capsys.readouterr().err


def test_demo_quick_runs_end_to_end(tmp_path):
    """``meshclosure demo --quick``: generate -> calibrate -> train -> validate -> report."""
    from meshclosure.demo import run_demo

    lines = []
    out = run_demo(tmp_path / "demo", plots=False, echo=lines.append, quick=True)
    result = out["result"]
    assert (out["report"] / "index.html").is_file() and out["model"].is_file()
    printed = "\n".join(lines)
    assert "\n| mgn |" in printed and "report:" in printed
    s = result.summary
    assert s["replay"]["online.similarity_mean"] > 0.8
    assert math.isfinite(s["mgn"]["online.similarity_mean"])    # ran the whole window
    assert "learned closure online: similarity" in printed
    for name in result.closures:
        assert abs(s[name]["online.conservation_drift"]) <= 1e-12, name
