"""The demo owns its output folder: a second run replaces its own files (and only
those), and its figures are what they claim (test 1: three panels side by side)."""
from __future__ import annotations

import matplotlib.image
import pytest

import meshclosure.demo as demo

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def small_demo(monkeypatch):
    """The demo on one small mesh, test 1 on 320 triangles and a 16² truth dataset."""
    cases = demo._cases()[:1]                                   # cartesian 32x32
    truth = demo.run_truth_data
    monkeypatch.setattr(demo, "_cases", lambda: cases)
    monkeypatch.setattr(demo, "run_truth_data", lambda out, plots, echo: truth(
        out, plots=plots, echo=echo, mesh="cartesian:16", n_samples=12))
    return lambda out: demo.run_tour(out, plots=True, echo=lambda line: None, test1_level=2)


def test_demo_reruns_into_its_own_folder(tmp_path, small_demo):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")                      # not the demo's
    first = small_demo(out)
    files = sorted(p.name for p in out.iterdir())
    second = small_demo(out)                                    # no OutputExistsError
    assert sorted(p.name for p in out.iterdir()) == files
    assert (out / "notes.txt").read_text() == "mine"
    assert [r["name"] for r in first] == [r["name"] for r in second]
    pngs = [r["png"] for r in second if r.get("png")]
    assert len(pngs) == 2 + 8 + 1 + 1                           # meshes, test 1, truth, K_eff
    for png in pngs:
        assert png.read_bytes()[:8] == PNG
    for r in second:
        if r["name"].startswith("test1"):                       # final | exact | error
            height, width = matplotlib.image.imread(r["png"]).shape[:2]
            assert width > 2.5 * height, r["png"]
    trained = [r for r in second if r["name"].startswith("calibrate and train")]
    assert len(trained) == 1                                    # the learned closure ran:
    assert trained[0]["closure_change"] > 1e-6                  # it moved Q between cells
    assert trained[0]["total_drift"] < 1e-12                    # and added none
    assert (out / "calibration.json").is_file() and trained[0]["model"].is_file()
