"""The `meshclosure` command: help on every subcommand, the demo, the mesh inspector."""
from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from meshclosure.cli import build_parser, main, parse_mesh_spec


def test_help_on_every_subcommand(capsys) -> None:
    parser = build_parser()
    subcommands = parser._subparsers._group_actions[0].choices
    assert {"demo", "mesh"} <= set(subcommands)
    for name in subcommands:
        with pytest.raises(SystemExit) as exit_info:
            main([name, "--help"])
        assert exit_info.value.code == 0
        assert "usage: meshclosure " + name in capsys.readouterr().out


def test_console_script_runs() -> None:
    out = subprocess.run([sys.executable, "-m", "meshclosure.cli", "--help"],
                         capture_output=True, text=True, check=True)
    assert "demo" in out.stdout and "mesh" in out.stdout


def test_demo_writes_valid_outputs(tmp_path, capsys) -> None:
    from meshclosure.demo import run_demo
    from meshclosure.io import read_vtu

    records = run_demo(tmp_path / "out", plots=True, echo=lambda s: None)
    meshes = [r for r in records if "area_error" in r]
    test1 = {r["name"]: r for r in records if r["name"].startswith("test1")}
    names = [r["name"] for r in meshes]
    assert len(meshes) == 10 and "healpix_nside16" in names
    # test 1 at 5,120 cells: the limited scheme creates no new extrema, upwind is the
    # most diffusive, the second-order schemes beat it; tilted linear l2 = 0.2455 as the
    # reference prototype's 0.25
    for alpha in ("0", "pi/2-0.05"):
        lim, lin, up = (test1[f"test1 alpha={alpha} {s}"] for s in ("limited", "linear", "upwind"))
        assert lim["min"] >= -1e-9 and lim["max"] <= 1000.0
        assert lin["l2"] < up["l2"] and lim["l2"] < up["l2"]
        assert up["max"] < lim["max"] < 1000.0
    assert test1["test1 alpha=pi/2-0.05 linear"]["l2"] == pytest.approx(0.2455, abs=2e-3)
    truth = next(r for r in records if r["name"].startswith("truth data"))
    # the subgrid flux is a sizeable part of the restricted fine flux (0.96 measured)
    assert truth["identity_defect"] < 1e-12 and 0.2 < truth["sgs_ratio"] < 3.0
    assert truth["samples"] == 6 and truth["png"].stat().st_size > 1000
    from meshclosure.data import read_dataset
    assert read_dataset(truth["dataset"]).sizes["cell"] == truth["n_cells"] == 64
    for r in meshes:
        assert r["area_error"] < 1e-12, r
        assert r["vtu"].stat().st_size > 0 and r["png"].stat().st_size > 1000
        _, fields = read_vtu(r["vtu"])
        assert len(fields["field"]) == r["n_cells"]
        assert np.isfinite(fields["field"]).all()
    euler = {r["name"]: r["euler"] for r in meshes}
    assert euler["healpix_nside16"] == euler["icosahedral_dual_L4"] == 2
    assert euler["cartesian_32x32"] == 0 and euler["meshio_annulus"] == 0


def test_demo_prints_one_line_per_mesh(tmp_path, capsys) -> None:
    assert main(["demo", "--out", str(tmp_path), "--no-plots", "--test1-level", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    lines = [l for l in out if "cells" in l and "Euler" in l]
    assert len(lines) == 10
    assert all("area err" in l for l in lines)
    assert sum(l.startswith("test1") and "l2" in l for l in out) == 8
    assert sum(l.startswith("truth data") and "identity defect" in l for l in out) == 1


def test_mesh_inspector(tmp_path, capsys) -> None:
    assert main(["mesh", "icosahedral:2", "--vtu", str(tmp_path / "m.vtu")]) == 0
    out = capsys.readouterr().out
    assert "valid" in out and f"{4 * math.pi:.12g}" in out
    # the written file reads back as the same mesh
    assert main(["mesh", str(tmp_path / "m.vtu")]) == 0
    assert "n_cells=320" in capsys.readouterr().out


def test_mesh_inspector_bad_spec(capsys) -> None:
    assert main(["mesh", "healpix:6"]) == 2
    assert "power of 2" in capsys.readouterr().err
    with pytest.raises(ValueError, match="not an integer size"):
        parse_mesh_spec("healpix:abc")
