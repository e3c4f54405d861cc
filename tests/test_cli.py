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
    """``python -m meshclosure`` (meshclosure/__main__.py) is the command."""
    import meshclosure

    out = subprocess.run([sys.executable, "-m", "meshclosure", "--version"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"meshclosure {meshclosure.__version__}"


def test_demo_writes_valid_outputs(tmp_path, capsys) -> None:
    from meshclosure.demo import run_tour
    from meshclosure.io import read_vtu

    records = run_tour(tmp_path / "out", plots=True, echo=lambda s: None)
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
    assert truth["samples"] == 16 and truth["png"].stat().st_size > 1000
    from meshclosure.data import read_dataset
    assert read_dataset(truth["dataset"]).sizes["n_face"] == truth["n_cells"] == 64
    # every mesh and dataset file the demo writes reads back as a valid mesh (issue 9)
    written = sorted(p for p in (tmp_path / "out").iterdir() if p.suffix in (".vtu", ".nc",
                                                                              ".zarr"))
    assert len(written) >= len(meshes) + 1
    for path in written:
        assert main(["mesh", str(path), "-q"]) == 0, path
        assert capsys.readouterr().out.splitlines()[-1] == "  valid", path
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
    assert main(["demo", "--tour", "--out", str(tmp_path), "--no-plots", "--test1-level", "2"]) == 0
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


# ------------------------------------------------------------------ issue 9: a CLI that speaks CLI
import importlib
import logging
import warnings
from pathlib import Path

import meshclosure
from meshclosure import cli
from meshclosure.errors import ArgumentError


def _listing(folder: Path) -> dict:
    """Every file below ``folder`` with its bytes: equal before and after = nothing changed."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def _gen(tmp_path: Path, *extra: str) -> list[str]:
    """A tiny generate command line (cartesian:16, 3 samples, no OOD) writing into tmp_path."""
    return ["generate", "--mesh", "cartesian:16", "--samples", "3", "--every", "1", "--ood",
            "0", "--no-progress", "--out", str(tmp_path / "x.nc"), *extra]


@pytest.fixture
def no_run(monkeypatch):
    """Replace generate by a fake that records its arguments and logs the summary line as the
    real one does (on the meshclosure.data.generate logger); fails if it is reached when
    ``calls["forbid"]`` is set."""
    gen = importlib.import_module("meshclosure.data.generate")
    calls = {"kwargs": None, "forbid": False}

    def fake(scenario, out, **kwargs):
        assert not calls["forbid"], "generate ran although an argument was bad"
        calls["kwargs"] = kwargs
        logging.getLogger("meshclosure.data.generate").info("wrote %s: 3 samples", out)
        logging.getLogger("meshclosure.data.generate").debug("debug detail")
        return out

    monkeypatch.setattr(gen, "generate", fake)
    return calls


def test_version(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"meshclosure {meshclosure.__version__}"


@pytest.mark.parametrize("change, flag, value, rule, fix", [
    (["--samples", "2"], "--samples", "2", "must be an integer >= 3", "--samples 24"),
    (["--every", "0"], "--every", "0", "must be an integer >= 1", "--every 10"),
    (["--ood", "-1"], "--ood", "-1", "must be an integer >= 0", "pass 0"),
    (["--samples", "4", "--gap", "100"], "--gap", "100",
     "must leave at least 2 samples in each of the val and test blocks", "--gap <= 0"),
    (["--seed", "-3"], "--seed", "-3", "must be an integer >= 0", "--seed 0"),
    (["--factor", "0"], "--factor", "0", "must be an integer >= 1", "--factor 4"),
    (["--scenario", "kinetic"], "--scenario", "'kinetic'", "is not a scenario", "kinematic"),
    (["--format", "zarr"], "--format", "'zarr'", "does not match --out", ".zarr suffix"),
])
def test_generate_errors_name_flag_value_rule_fix(change, flag, value, rule, fix, tmp_path,
                                                 capsys, no_run) -> None:
    no_run["forbid"] = True                       # refused before any sample runs
    assert main(_gen(tmp_path, *change)) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"meshclosure generate: error: {flag} {value}: {rule}"), err
    assert fix in err and err.count("\n") == 1    # one line, no traceback
    for python_name in ("n_samples", "ood_samples", "overwrite=True", "resume=False", "gap=",
                        "every=", "seed=", "factor="):
        assert python_name not in err, (python_name, err)
    assert _listing(tmp_path) == {}


def test_factor_that_does_not_divide_lists_factors_that_do(tmp_path, capsys, no_run) -> None:
    no_run["forbid"] = True
    args = ["generate", "--mesh", "cartesian:16x16", "--factor", "16", "--out",
            str(tmp_path / "x.nc")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("meshclosure generate: error: --factor 16: ") and "factor=" not in err
    suggested = [int(k) for k in err.split("coarsen it: [")[1].split("]")[0].split(",")]
    assert suggested and all(16 % k == 0 and 16 // k >= 3 for k in suggested), err
    assert _listing(tmp_path) == {}


def test_non_integer_flag_is_a_usage_error(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(_gen(tmp_path, "--samples", "many"))
    assert exit_info.value.code == 2
    assert "argument --samples: 'many' is not a whole number; write e.g. --samples" in \
        capsys.readouterr().err


def test_generate_refuses_existing_output_naming_the_flag(tmp_path, capsys, no_run) -> None:
    out = tmp_path / "x.nc"
    out.write_bytes(b"an earlier dataset")
    no_run["forbid"] = True
    assert main(_gen(tmp_path)) == 2
    err = capsys.readouterr().err
    assert f"--out '{out}'" in err and "pass --overwrite to replace it" in err
    assert "overwrite=True" not in err and out.read_bytes() == b"an earlier dataset"
    no_run["forbid"] = False
    assert main(_gen(tmp_path, "--overwrite")) == 0 and no_run["kwargs"]["overwrite"] is True


@pytest.mark.parametrize("meta", ["{not json", '{"format": 2, "config": {"seed": 99}}'])
def test_resume_problems_say_no_resume_and_keep_checkpoints(meta, tmp_path, capsys) -> None:
    """A corrupt checkpoint folder, or one of another run (another --seed), is left untouched
    and the message says --no-resume (the real generate: it stops before the spin-up)."""
    partial = tmp_path / "x.nc.partial"
    partial.mkdir()
    (partial / "meta.json").write_text(meta)
    (partial / "main_sample_000000.pt").write_bytes(b"a finished sample")
    before = _listing(tmp_path)
    assert main(_gen(tmp_path)) == 2
    err = capsys.readouterr().err
    assert err.startswith("meshclosure generate: error:") and "--no-resume" in err, err
    assert "resume=False" not in err and "Traceback" not in err
    assert _listing(tmp_path) == before


def test_interrupt_says_resume_and_no_resume(tmp_path, capsys, monkeypatch) -> None:
    gen = importlib.import_module("meshclosure.data.generate")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(gen, "generate", interrupted)
    assert main(_gen(tmp_path)) == 130
    err = capsys.readouterr().err
    assert "nothing was written" in err and "x.nc.partial/" in err and "--no-resume" in err


def test_generate_passes_format_from_suffix_or_flag(tmp_path, capsys, no_run,
                                                     monkeypatch) -> None:
    assert main(_gen(tmp_path)) == 0 and no_run["kwargs"]["format"] == "netcdf"
    args = _gen(tmp_path)
    args[args.index("--out") + 1] = str(tmp_path / "x.zarr")
    assert main(args) == 0 and no_run["kwargs"]["format"] == "zarr"
    monkeypatch.chdir(tmp_path)                   # the default name follows --format
    assert main(["generate", "--mesh", "cartesian:16", "--format", "zarr"]) == 0
    assert no_run["kwargs"]["format"] == "zarr"
    assert capsys.readouterr().err.splitlines()[-1].startswith("wrote meshclosure_kinematic.zarr")


@pytest.mark.parametrize("where", ["before", "after"])
def test_quiet_and_verbose_set_the_log_level(where, tmp_path, capsys, no_run) -> None:
    def run(flag):
        args = _gen(tmp_path)
        args = [flag, *args] if where == "before" else [*args, flag]
        assert main([a for a in args if a]) == 0
        return capsys.readouterr()

    default = run("")
    assert "wrote " in default.err and "debug detail" not in default.err and default.out == ""
    quiet = run("--quiet")
    assert quiet.err == "" and quiet.out == ""
    assert no_run["kwargs"]["progress"] is False       # --quiet turns the bars off
    verbose = run("-v")
    assert "wrote " in verbose.err
    assert "[meshclosure.data.generate] debug detail" in verbose.err
    # the CLI's handler is gone after the command: a library caller configures its own
    logger = logging.getLogger("meshclosure")
    assert not [h for h in logger.handlers if isinstance(h, logging.StreamHandler)]
    assert logger.propagate and logger.level == logging.NOTSET


def test_quiet_and_verbose_together_is_a_usage_error(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["-q", "mesh", "healpix:1", "-v"])
    assert exit_info.value.code == 2 and "--quiet and --verbose" in capsys.readouterr().err


def test_verbose_shows_the_traceback(capsys) -> None:
    assert main(["mesh", "healpix:6"]) == 2
    plain = capsys.readouterr().err
    assert "Traceback" not in plain and plain.count("\n") == 1
    assert main(["mesh", "healpix:6", "--verbose"]) == 2
    verbose = capsys.readouterr().err
    assert "Traceback (most recent call last)" in verbose
    assert verbose.splitlines()[-1] == plain.strip()


def test_library_warnings_become_one_line(capsys, monkeypatch) -> None:
    real = cli.parse_mesh_spec

    def warns(spec):
        warnings.warn_explicit("overwrite=True was assumed", UserWarning,
                               filename=meshclosure.__file__, lineno=1)
        return real(spec)

    monkeypatch.setattr(cli, "parse_mesh_spec", warns)
    assert main(["mesh", "healpix:1"]) == 0
    err = capsys.readouterr().err
    assert err == "meshclosure mesh: warning: --overwrite was assumed\n"


def _no_build(monkeypatch):
    def boom(spec):
        raise AssertionError("the mesh was built although an output was refused")

    monkeypatch.setattr(cli, "parse_mesh_spec", boom)


def test_mesh_refuses_existing_vtu_before_building(tmp_path, capsys, monkeypatch) -> None:
    vtu = tmp_path / "good.vtu"
    assert main(["mesh", "icosahedral:1", "--vtu", str(vtu)]) == 0
    assert capsys.readouterr().err == f"wrote {vtu}\n"
    before = _listing(tmp_path)
    with monkeypatch.context() as m:
        _no_build(m)
        assert main(["mesh", "healpix:4", "--vtu", str(vtu)]) == 2
    err = capsys.readouterr().err
    assert err == (f"meshclosure mesh: error: --vtu '{vtu}': the file exists and was left "
                   "untouched; pass --overwrite to replace it, or choose another path.\n")
    assert _listing(tmp_path) == before                        # byte-identical, nothing new
    assert main(["mesh", str(vtu)]) == 0 and "n_cells=80" in capsys.readouterr().out
    assert main(["mesh", "healpix:4", "--vtu", str(vtu), "--overwrite", "-q"]) == 0
    assert main(["mesh", str(vtu)]) == 0 and "n_cells=192" in capsys.readouterr().out


@pytest.mark.parametrize("name, magic", [("m.pdf", b"%PDF"), ("m.svg", b"<?xml"),
                                         ("m.png", b"\x89PNG")])
def test_mesh_plot_format_follows_suffix(name, magic, tmp_path, capsys) -> None:
    flag = "--png" if name.endswith(".pdf") else "--plot"    # --png: the old name, kept
    assert main(["mesh", "healpix:1", flag, str(tmp_path / name)]) == 0
    assert (tmp_path / name).read_bytes().startswith(magic)
    assert _listing(tmp_path).keys() == {name}                  # no temporary file left


@pytest.mark.parametrize("args, message", [
    (["--png", "{tmp}/m.jpg2"], "--plot '{tmp}/m.jpg2': must end in .png, .pdf or .svg (the "
     "suffix picks the file format); write e.g. --plot m.png."),
    (["--vtu", "{tmp}/m.vtk"], "--vtu '{tmp}/m.vtk': must end in .vtu"),
    (["--vtu", "{tmp}/no/such/m.vtu"], "--vtu '{tmp}/no/such/m.vtu': the folder "
     "'{tmp}/no/such' does not exist"),
    (["--vtu", "{tmp}/a.vtu", "--plot", "{tmp}/m.gif"], "--plot '{tmp}/m.gif': must end in"),
])
def test_mesh_checks_every_output_before_building(args, message, tmp_path, capsys,
                                                  monkeypatch) -> None:
    _no_build(monkeypatch)
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert main(["mesh", "healpix:4", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("meshclosure mesh: error: " + message.replace("{tmp}", str(tmp_path)))
    assert _listing(tmp_path) == {}


def test_mesh_reads_a_ugrid_netcdf_file(tmp_path, capsys) -> None:
    from meshclosure.io import write_ugrid

    path = tmp_path / "hp.nc"
    write_ugrid(parse_mesh_spec("healpix:2"), {}, path)
    assert main(["mesh", str(path)]) == 0
    out = capsys.readouterr().out
    assert "n_cells=48" in out and "valid" in out and f"{4 * math.pi:.12g}" in out


def test_error_spelling_table() -> None:
    spelled = cli._as_flags(ArgumentError("n_samples", 2, "must be an integer >= 3",
                                          "e.g. {n_samples}=24"), cli.GENERATE_FLAGS)
    assert spelled == "--samples 2: must be an integer >= 3; e.g. --samples 24."
    no_flag = cli._as_flags(ArgumentError("fractions", (0.5, 0.5, 0.5), "must sum to 1"),
                            cli.GENERATE_FLAGS)
    assert no_flag.startswith("fractions=(0.5, 0.5, 0.5): must sum to 1") and \
        "has no command-line flag" in no_flag
    resume = cli.cli_spelling("cannot be resumed. Pass resume=False (--no-resume) to discard "
                              "it; or pass allow_unconverged=True (--allow-unconverged).")
    assert resume == ("cannot be resumed. Pass --no-resume to discard it; or pass "
                      "--allow-unconverged.")
    # plain words are left alone unless written as name=value
    assert cli.cli_spelling("every sample, seed and gap; timeout=3") == \
        "every sample, seed and gap; timeout=3"


def test_generate_trajectory_writes_every_coarse_step(tmp_path, capsys) -> None:
    """A real (tiny) trajectory run: samples one coarse step apart, with the step means."""
    import json

    import xarray as xr

    out = tmp_path / "traj.nc"
    rc = main(["-q", "generate", "--scenario", "kinematic", "--mesh", "cartesian:16",
               "--factor", "2", "--samples", "4", "--ood", "0", "--trajectory",
               "--out", str(out)])
    assert rc == 0 and out.is_file()
    with xr.open_dataset(out) as ds:
        assert int(ds.attrs["coarse_every"]) == json.loads(ds.attrs["scenario_config"])[
            "coarse_every"]
        dt = np.diff(ds["model_time"].values[0, :4])
        assert np.allclose(dt, float(ds.attrs["coarse_dt"]), rtol=1e-12)
        assert "sgs_flux_mean_q" in ds and "transport_stages" in ds
    # --every contradicts a trajectory: refused before any run, naming the flag
    rc = main(["generate", "--scenario", "kinematic", "--mesh", "cartesian:16", "--factor",
               "2", "--samples", "4", "--every", "3", "--trajectory", "--out",
               str(tmp_path / "t2.nc")])
    err = capsys.readouterr().err
    assert rc == 2 and "--every" in err and not (tmp_path / "t2.nc").exists()


# -------------------------------------------------------------------- calibrate
@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    from meshclosure.data import generate, get_scenario

    out = tmp_path_factory.mktemp("calibrate") / "kin.nc"
    generate(get_scenario("kinematic", mesh="cartesian:16", factor=2, spinup_time=0.5), out,
             n_samples=6, ood_samples=2, progress=False)
    return out


def test_calibrate_writes_calibration_json(small_dataset, tmp_path, capsys) -> None:
    import json

    from meshclosure.train.calibrate import baseline_closures, load_calibration

    out = tmp_path / "cal"
    assert main(["calibrate", "--data", str(small_dataset), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "power_law" in err and "calibration.json" in err         # the summary table
    cal = load_calibration(out / "calibration.json")
    law = cal["baselines"]["power_law"]["closes"]["q"]
    assert law["alpha"] > 0 and law["N_range"]["min"] <= law["N_range"]["max"]
    assert set(cal["baselines"]["power_law"]["errors"]) == {"train", "val", "test", "ood"}
    assert cal["dataset"] == str(small_dataset)
    assert set(baseline_closures(cal)) == {"none", "constant", "power_law"}
    # an existing output is refused and left untouched; --overwrite replaces it
    (out / "calibration.json").write_text(json.dumps({"keep": 1}))
    assert main(["calibrate", "--data", str(small_dataset), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--overwrite" in err and "overwrite=True" not in err
    assert json.loads((out / "calibration.json").read_text()) == {"keep": 1}
    assert main(["-q", "calibrate", "--data", str(small_dataset), "--out", str(out),
                 "--overwrite"]) == 0
    assert load_calibration(out / "calibration.json")["scenario"] == "kinematic"


def test_calibrate_bad_data_names_the_flag(tmp_path, capsys) -> None:
    rc = main(["calibrate", "--data", str(tmp_path / "missing.nc"), "--out",
               str(tmp_path / "cal")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("meshclosure calibrate: error: --data ")
    assert "must be an existing dataset" in err and "meshclosure generate" in err
    bad = tmp_path / "bad.nc"
    bad.write_text("not a dataset")
    assert main(["calibrate", "--data", str(bad), "--out", str(tmp_path / "cal")]) == 2
    assert "corrupt" in capsys.readouterr().err and not (tmp_path / "cal").exists()
    with pytest.raises(SystemExit) as usage:
        main(["calibrate", "--data", str(bad), "--out", str(tmp_path), "--nodes", "x"])
    assert usage.value.code == 2 and "--nodes 4" in capsys.readouterr().err
