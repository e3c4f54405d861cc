"""`generate` and `meshclosure generate`: determinism, safe output, interruption and resume."""
from __future__ import annotations

import logging
import os

import numpy as np
import pytest

from meshclosure.cli import main
from meshclosure.data import get_scenario, read_dataset
from meshclosure.data.generate import (ResumeError, check_generate_arguments, generate,
                                       partial_dir)
from meshclosure.errors import ArgumentError, OutputExistsError
from test_targets import CASES, StandInScenario

TINY = dict(mesh="cartesian:16", factor=4, spinup_time=0.05)


def _tiny(seed=0):
    return get_scenario("kinematic", seed=seed, **TINY)


def _data(path):
    """Every data variable (not the attributes: those hold a creation time)."""
    ds = read_dataset(path)
    return {k: ds[k].values for k in list(ds.data_vars) + ["time", "model_time"]}


def _same(a, b) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k], equal_nan=a[k].dtype.kind
                                                       == "f") for k in a)


def _folder_listing(folder):
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    path = tmp_path_factory.mktemp("ref") / "ref.nc"
    generate(_tiny(), path, n_samples=5, every=2, ood_samples=2, progress=False)
    return path


def test_output_and_determinism(reference, tmp_path) -> None:
    ds = read_dataset(reference)
    assert ds.sizes["run"] == 2 and ds.sizes["time"] == 5
    assert ds["split"].values.tolist() == [[0, 0, 0, 1, 2], [3, 3, -1, -1, -1]]
    assert ds.attrs["split_gap"] == 0          # 5 samples: blocks too small for the default gap
    assert ds.attrs["seed"] == 0 and '"scenario": "kinematic"' in ds.attrs["scenario_config"]
    assert '"N_mean": 2.0' in ds.attrs["ood_config"]       # the OOD run has stronger N
    assert ds.attrs["every"] == 2
    # samples every 2 fine steps after the spin-up; the OOD run at the same interval
    dt = ds.attrs["dt"]
    assert ds["run_dt"].values[0] == dt and ds["run_every"].values[0] == 2
    model_time = ds["model_time"].values
    assert np.allclose(np.diff(model_time[0]), 2 * dt, rtol=1e-12)
    ood_dt, ood_every = ds["run_dt"].values[1], ds["run_every"].values[1]
    assert np.allclose(np.diff(model_time[1, :2]), ood_every * ood_dt, rtol=1e-12)
    assert abs(ood_every * ood_dt - 2 * dt) <= ood_dt / 2 + 1e-12
    assert np.array_equal(ds["time"].values, model_time[0] - model_time[0, 0])
    # same seed: bit-identical data; another seed: different data
    again = tmp_path / "again.nc"
    generate(_tiny(), again, n_samples=5, every=2, ood_samples=2, progress=False)
    assert _same(_data(reference), _data(again))
    other = tmp_path / "other.nc"
    generate(_tiny(seed=1), other, n_samples=5, every=2, ood_samples=2, progress=False)
    a, b = _data(reference), _data(other)
    assert not np.array_equal(a["sgs_flux_q"], b["sgs_flux_q"], equal_nan=True)
    assert np.array_equal(a["mesh_cell_volume"], b["mesh_cell_volume"])
    assert _folder_listing(tmp_path) == ["again.nc", "other.nc"]   # no partial, no temporary


def test_interrupted_run_leaves_no_file_and_resumes(reference, tmp_path) -> None:
    out = tmp_path / "run.nc"
    calls = []

    def interrupt(run, done, total):
        calls.append((run, done))
        if (run, done) == ("main", 3):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate(_tiny(), out, n_samples=5, every=2, ood_samples=2, progress=False,
                 callback=interrupt)
    assert not out.exists()
    assert _folder_listing(tmp_path) == ["run.nc.partial"]     # checkpoints only, clearly named
    assert len(list(partial_dir(out).glob("main_sample_*.pt"))) == 3
    calls.clear()
    generate(_tiny(), out, n_samples=5, every=2, ood_samples=2, progress=False,
             callback=lambda run, done, total: calls.append((run, done)))
    assert calls[0] == ("main", 4)          # resumed after the third sample
    assert _same(_data(out), _data(reference))
    assert _folder_listing(tmp_path) == ["run.nc"]


def test_checkpoints_of_another_run_are_kept_and_refused(reference, tmp_path) -> None:
    out = tmp_path / "run.nc"

    def stop(run, done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate(_tiny(seed=1), out, n_samples=5, every=2, ood_samples=2, progress=False,
                 callback=stop)
    folder = partial_dir(out)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.raises(ResumeError, match=r"run.nc.partial.* other arguments .*config.seed: 1 "
                                          r"there, 0 now.*left untouched.*pass resume=False "
                                          r"\(--no-resume\)"):
        generate(_tiny(), out, n_samples=5, every=2, ood_samples=2, progress=False)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before     # nothing deleted
    assert not out.exists()
    # only resume=False discards them
    calls = []
    generate(_tiny(), out, n_samples=5, every=2, ood_samples=2, progress=False, resume=False,
             callback=lambda run, done, total: calls.append(done))
    assert calls[0] == 1 and _same(_data(out), _data(reference))
    assert _folder_listing(tmp_path) == ["run.nc"]


@pytest.mark.parametrize("damage", ["corrupt", "missing_fine", "missing_meta", "bad_sample"])
def test_broken_checkpoints_say_no_resume(reference, tmp_path, damage) -> None:
    out = tmp_path / "run.nc"

    def stop(run, done, total):
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate(_tiny(), out, n_samples=5, every=2, progress=False, callback=stop)
    folder = partial_dir(out)
    if damage == "corrupt":
        (folder / "main_fine.pt").write_bytes(b"not a checkpoint")
    elif damage == "missing_fine":
        (folder / "main_fine.pt").unlink()
    elif damage == "missing_meta":
        (folder / "meta.json").unlink()
    else:
        (folder / "main_sample_000000.pt").write_bytes(b"\x00" * 10)
    before = sorted(p.name for p in folder.iterdir())
    with pytest.raises(ResumeError, match=r"resume=False \(--no-resume\)"):
        generate(_tiny(), out, n_samples=5, every=2, progress=False)
    assert sorted(p.name for p in folder.iterdir()) == before and not out.exists()
    generate(_tiny(), out, n_samples=5, every=2, progress=False, resume=False)
    assert read_dataset(out).sizes["time"] == 5 and not folder.exists()


class _MustNotRun(StandInScenario):
    def initial_state(self):
        raise AssertionError("generate computed before checking the output path")


def test_output_path_errors_come_before_any_computation(tmp_path) -> None:
    mesh, parent = CASES["cartesian"]
    sc = _MustNotRun(mesh, parent=parent)
    existing = tmp_path / "keep.nc"
    existing.write_bytes(b"earlier data")
    with pytest.raises(OutputExistsError, match="keep.nc.* exists and was left untouched; pass "
                                                "overwrite=True"):
        generate(sc, existing, n_samples=3, progress=False)
    assert existing.read_bytes() == b"earlier data"
    with pytest.raises(FileNotFoundError, match="does not exist; create it first"):
        generate(sc, tmp_path / "no" / "such" / "dir.nc", n_samples=3, progress=False)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        generate(sc, existing / "x.nc", n_samples=3, progress=False)    # a file as folder
    with pytest.raises(IsADirectoryError, match="is a folder"):
        generate(sc, tmp_path, n_samples=3, progress=False)
    if os.geteuid() != 0:   # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(PermissionError, match="not writable"):
            generate(sc, locked / "x.nc", n_samples=3, progress=False)
    assert _folder_listing(tmp_path) == ["keep.nc"] + (["locked"] if os.geteuid() else [])


@pytest.mark.parametrize("kwargs, argument, message", [
    (dict(n_samples=2), "n_samples", "n_samples=2: must be an integer >= 3"),
    (dict(n_samples=3.0), "n_samples", "must be an integer >= 3"),
    (dict(every=0), "every", "every=0: must be an integer >= 1"),
    (dict(ood_samples=-1), "ood_samples", "ood_samples=-1: must be an integer >= 0"),
    (dict(fractions=(0.5, 0.5, 0.5)), "fractions", r"fractions=\(0.5, 0.5, 0.5\): must be "
                                                    "three non-negative numbers"),
    (dict(n_samples=4, gap=100), "gap", r"gap=100: must leave at least 2 samples .* largest "
                                         r"gap for 4 samples is 0; pass gap <= 0, or "
                                         r"n_samples >= \d+ to keep gap=100"),
    (dict(n_samples=20, gap=2), "gap", "largest gap for 20 samples is 1; pass gap <= 1"),
    (dict(gap=-1), "gap", "gap=-1: must be an integer >= 0"),
    (dict(format="hdf5"), "format", "format='hdf5': must be one of"),
    (dict(format="zarr"), "format", "does not match out='(new|keep).nc'"),
    (dict(resume="no"), "resume", "resume='no': must be True or False"),
])
def test_bad_arguments_are_refused_before_any_sample(tmp_path, kwargs, argument, message) -> None:
    """Every argument is checked before any run (the scenario here fails if it is run)."""
    mesh, parent = CASES["cartesian"]
    sc = _MustNotRun(mesh, parent=parent)
    existing = tmp_path / "keep.nc"
    existing.write_bytes(b"earlier data")
    args = dict(n_samples=24, progress=False, overwrite=True) | kwargs
    for out in (tmp_path / "new.nc", existing):
        with pytest.raises(ArgumentError, match=message) as info:
            generate(sc, out, **args)
        assert info.value.argument == argument
    with pytest.raises(ArgumentError, match=message):        # the function the CLI calls
        check_generate_arguments(sc, out=tmp_path / "new.nc",
                                 **{k: v for k, v in args.items() if k != "progress"})
    assert existing.read_bytes() == b"earlier data"
    assert _folder_listing(tmp_path) == ["keep.nc"]          # no file, no partial folder


def test_check_generate_arguments_resolves_defaults(tmp_path) -> None:
    got = check_generate_arguments(_tiny(), n_samples=20, out=tmp_path / "x.zarr")
    assert got["every"] == _tiny().config["sample_every"] and got["format"] == "zarr"
    assert got["gap"] == 1                     # 20 samples: val and test keep 2 each
    assert check_generate_arguments(None, n_samples=12)["gap"] == 0   # 2/2: no room for a gap
    assert check_generate_arguments(None, n_samples=12)["every"] is None
    assert _folder_listing(tmp_path) == []


def test_factor_that_does_not_divide_lists_those_that_do() -> None:
    with pytest.raises(ArgumentError, match=r"factor=16: does not coarsen the cartesian mesh .*"
                                            r"factors that coarsen it: \[2, 4\]") as info:
        get_scenario("kinematic", mesh="cartesian:16", factor=16)
    assert info.value.argument == "factor" and "<= 5" not in str(info.value)
    with pytest.raises(ArgumentError, match=r"\[2, 4, 8\]"):
        get_scenario("kinematic", mesh="healpix:8", factor=3)


def test_overwrite_replaces_a_file(reference, tmp_path) -> None:
    out = tmp_path / "data.nc"
    out.write_bytes(b"old")
    generate(_tiny(), out, n_samples=5, every=2, ood_samples=2, overwrite=True, progress=False)
    assert _same(_data(out), _data(reference))


def test_gap_between_blocks_and_summary_logged(tmp_path, caplog) -> None:
    """generate() sets one sample aside before the val and the test block when they keep 2."""
    out = tmp_path / "gap.nc"
    with caplog.at_level(logging.INFO, logger="meshclosure.data.generate"):
        generate(_tiny(), out, n_samples=20, every=1, progress=False)
    assert any("fine steps/s" in r.getMessage() and r.name == "meshclosure.data.generate"
               for r in caplog.records)
    ds = read_dataset(out)
    assert ds["split"].values[0].tolist() == [0] * 14 + [4, 1, 1, 4, 2, 2]
    assert ds.attrs["split_gap"] == 1
    generate(_tiny(), out, n_samples=20, every=1, progress=False, overwrite=True, gap=0)
    assert read_dataset(out)["split"].values[0].tolist() == [0] * 14 + [1] * 3 + [2] * 3


def test_cli_end_to_end(tmp_path, capsys) -> None:
    out = tmp_path / "column.nc"
    args = ["generate", "--scenario", "convection", "--mesh", "cartesian:16x8", "--factor", "2",
            "--samples", "3", "--every", "2", "--ood", "1", "--seed", "3", "--out", str(out),
            "--no-progress", "--gap", "0"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "fine steps/s" in captured.out + captured.err
    ds = read_dataset(out)
    assert ds.sizes["n_face"] == 4 and ds.attrs["seed"] == 3 and "sgs_flux_b" in ds
    assert ds.sizes["n_edge"] > ds.sizes["n_interior_edge"]    # boundary fluxes after interior
    assert "N2" in ds.attrs["inputs"]
    before = out.read_bytes()
    assert main(args) == 2                                   # exists, no --overwrite
    assert "exists" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert main(args + ["--overwrite"]) == 0
    assert _same(_data(out), {k: ds[k].values for k in list(ds.data_vars) + ["time",
                                                                                "model_time"]})


@pytest.mark.parametrize("change, message", [
    (["--scenario", "kinetic"], "'kinetic'"),
    (["--mesh", "hexagonal:3"], "hexagonal:3"),
    (["--factor", "3"], "factor"),
    (["--out", "/no/such/folder/x.nc"], "does not exist"),
    (["--samples", "2"], "must be an integer >= 3"),
])
def test_cli_errors(change, message, tmp_path, capsys) -> None:
    args = ["generate", "--mesh", "cartesian:16", "--samples", "3", "--every", "1",
            "--out", str(tmp_path / "x.nc"), "--no-progress"] + change
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("meshclosure generate: error:") and message in err
    assert _folder_listing(tmp_path) == []


def test_cli_help_documents_larger_configurations(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    out = capsys.readouterr().out
    assert "Larger" in out and "healpix:64" in out and "--overwrite" in out


def test_cli_interrupt_message(tmp_path, capsys, monkeypatch) -> None:
    import sys

    gen = sys.modules["meshclosure.data.generate"]   # the package attribute is the function

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(gen, "generate", interrupted)
    out = tmp_path / "x.nc"
    assert main(["generate", "--mesh", "cartesian:16", "--out", str(out), "--no-progress"]) == 130
    err = capsys.readouterr().err
    assert "nothing was written" in err and "x.nc.partial/" in err and "resume" in err


def test_resume_refuses_checkpoints_of_other_package_versions(reference, tmp_path,
                                                              monkeypatch) -> None:
    import json
    import sys

    import torch

    gen = sys.modules["meshclosure.data.generate"]
    out = tmp_path / "run.nc"

    def stop(run, done, total):
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate(_tiny(), out, n_samples=5, every=2, ood_samples=2, progress=False,
                 callback=stop)
    meta = json.loads((partial_dir(out) / "meta.json").read_text())
    assert meta["versions"]["torch"] == torch.__version__ and "meshclosure" in meta["versions"]
    real = gen._versions
    monkeypatch.setattr(gen, "_versions", lambda: {**real(), "meshclosure": "999.0"})
    with pytest.raises(ResumeError, match=r"versions.meshclosure: '.*' there, '999.0' now"):
        generate(_tiny(), out, n_samples=5, every=2, ood_samples=2, progress=False)
    calls = []
    generate(_tiny(), out, n_samples=5, every=2, ood_samples=2, progress=False, resume=False,
             callback=lambda run, done, total: calls.append((run, done)))
    assert calls[0] == ("main", 1)                      # started afresh, not resumed
    assert _same(_data(out), _data(reference))


def test_cli_passes_allow_unconverged_and_reports_spin_up_errors(tmp_path, capsys,
                                                                 monkeypatch) -> None:
    import sys

    gen = sys.modules["meshclosure.data.generate"]
    seen = {}

    def fake(scenario, out, **kwargs):
        seen.update(kwargs)
        if not kwargs["allow_unconverged"]:
            raise gen.SpinUpError("did not reach statistical equilibrium; pass "
                                  "allow_unconverged=True")
        return out

    monkeypatch.setattr(gen, "generate", fake)
    args = ["generate", "--scenario", "barotropic", "--mesh", "cartesian:16", "--out",
            str(tmp_path / "x.nc"), "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("meshclosure generate: error:") and "equilibrium" in err
    assert main(args + ["--allow-unconverged"]) == 0 and seen["allow_unconverged"] is True
