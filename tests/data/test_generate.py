"""`generate` and `meshclosure generate`: determinism, safe output, interruption and resume."""
from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

from meshclosure.cli import main
from meshclosure.data import get_scenario, read_dataset
from meshclosure.data.generate import generate, partial_dir
from test_targets import CASES, StandInScenario

TINY = dict(mesh="cartesian:16", factor=4, spinup_time=0.05)


def _tiny(seed=0):
    return get_scenario("kinematic", seed=seed, **TINY)


def _data(path):
    """Every data variable (not the attributes: those hold a creation time)."""
    ds = read_dataset(path)
    return {k: ds[k].values for k in list(ds.data_vars) + ["time"]}


def _same(a, b) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def _folder_listing(folder):
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    path = tmp_path_factory.mktemp("ref") / "ref.nc"
    generate(_tiny(), path, n_samples=5, every=2, ood_samples=2, progress=False)
    return path


def test_output_and_determinism(reference, tmp_path) -> None:
    ds = read_dataset(reference)
    assert ds.sizes["time"] == 7 and list(ds["split"].values) == [0, 0, 0, 1, 2, 3, 3]
    assert ds.attrs["seed"] == 0 and '"scenario": "kinematic"' in ds.attrs["scenario_config"]
    assert '"N_mean": 2.0' in ds.attrs["ood_config"]       # the OOD run has stronger N
    assert ds.attrs["every"] == 2
    # samples every 2 fine steps after the spin-up
    dt = ds.attrs["dt"]
    assert np.allclose(np.diff(ds["time"].values[:5]), 2 * dt, rtol=1e-12)
    # same seed: bit-identical data; another seed: different data
    again = tmp_path / "again.nc"
    generate(_tiny(), again, n_samples=5, every=2, ood_samples=2, progress=False)
    assert _same(_data(reference), _data(again))
    other = tmp_path / "other.nc"
    generate(_tiny(seed=1), other, n_samples=5, every=2, ood_samples=2, progress=False)
    a, b = _data(reference), _data(other)
    assert not np.array_equal(a["sgs_flux_q"], b["sgs_flux_q"])
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


def test_stale_or_unwanted_checkpoints_are_discarded(reference, tmp_path) -> None:
    out = tmp_path / "run.nc"

    def stop(run, done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate(_tiny(seed=1), out, n_samples=5, every=2, ood_samples=2, progress=False,
                 callback=stop)
    with pytest.warns(UserWarning, match="discarding .*other arguments"):
        generate(_tiny(), out, n_samples=5, every=2, ood_samples=2, progress=False)
    assert _same(_data(out), _data(reference))
    out2 = tmp_path / "run2.nc"
    with pytest.raises(KeyboardInterrupt):
        generate(_tiny(), out2, n_samples=5, every=2, ood_samples=2, progress=False,
                 callback=stop)
    calls = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        generate(_tiny(), out2, n_samples=5, every=2, ood_samples=2, progress=False,
                 resume=False, callback=lambda run, done, total: calls.append(done))
    assert calls[0] == 1 and _same(_data(out2), _data(reference))


class _MustNotRun(StandInScenario):
    def initial_state(self):
        raise AssertionError("generate computed before checking the output path")


def test_output_path_errors_come_before_any_computation(tmp_path) -> None:
    mesh, parent = CASES["cartesian"]
    sc = _MustNotRun(mesh, parent=parent)
    existing = tmp_path / "keep.nc"
    existing.write_bytes(b"earlier data")
    with pytest.raises(FileExistsError, match="keep.nc.* exists; pass overwrite=True"):
        generate(sc, existing, n_samples=3, progress=False)
    assert existing.read_bytes() == b"earlier data"
    with pytest.raises(FileNotFoundError, match="does not exist; create it first"):
        generate(sc, tmp_path / "no" / "such" / "dir.nc", n_samples=3, progress=False)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        generate(sc, existing / "x.nc", n_samples=3, progress=False)    # a file as folder
    with pytest.raises(IsADirectoryError, match="is a folder"):
        generate(sc, tmp_path, n_samples=3, progress=False)
    with pytest.raises(ValueError, match="n_samples must be an integer >= 3"):
        generate(sc, tmp_path / "new.nc", n_samples=2, progress=False)
    if os.geteuid() != 0:   # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(PermissionError, match="not writable"):
            generate(sc, locked / "x.nc", n_samples=3, progress=False)
    assert _folder_listing(tmp_path) == ["keep.nc"] + (["locked"] if os.geteuid() else [])


def test_overwrite_replaces_a_file(reference, tmp_path) -> None:
    out = tmp_path / "data.nc"
    out.write_bytes(b"old")
    generate(_tiny(), out, n_samples=5, every=2, ood_samples=2, overwrite=True, progress=False)
    assert _same(_data(out), _data(reference))


def test_gap_between_blocks(tmp_path) -> None:
    """generate() sets one sample aside before the val and the test block by default."""
    from meshclosure.data import read_dataset

    out = tmp_path / "gap.nc"
    generate(_tiny(), out, n_samples=12, every=2, progress=False)
    split = read_dataset(out)["split"].values.tolist()
    assert split == [0] * 8 + [4, 1, 4, 2]            # blocks 8 / 2 / 2, first of each set aside
    generate(_tiny(), out, n_samples=12, every=2, progress=False, overwrite=True, gap=0)
    assert read_dataset(out)["split"].values.tolist() == [0] * 8 + [1, 1, 2, 2]
    with pytest.raises(ValueError, match="gap must be an integer >= 0"):   # before any run
        generate(_tiny(), tmp_path / "bad.nc", n_samples=12, progress=False, gap=-1)
    assert not (tmp_path / "bad.nc").exists() and not (tmp_path / "bad.nc.partial").exists()


def test_cli_end_to_end(tmp_path, capsys) -> None:
    out = tmp_path / "column.nc"
    args = ["generate", "--scenario", "convection", "--mesh", "cartesian:16x8", "--factor", "2",
            "--samples", "3", "--every", "2", "--ood", "1", "--seed", "3", "--out", str(out),
            "--no-progress"]
    assert main(args) == 0
    assert "fine steps/s" in capsys.readouterr().out
    ds = read_dataset(out)
    assert ds.sizes["cell"] == 4 and ds.attrs["seed"] == 3 and "sgs_boundary_flux_b" in ds
    assert "N2" in ds.attrs["inputs"]
    before = out.read_bytes()
    assert main(args) == 2                                   # exists, no --overwrite
    assert "exists; pass overwrite=True (--overwrite)" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert main(args + ["--overwrite"]) == 0
    assert _same(_data(out), {k: ds[k].values for k in list(ds.data_vars) + ["time"]})


@pytest.mark.parametrize("change, message", [
    (["--scenario", "kinetic"], "unknown scenario 'kinetic'"),
    (["--mesh", "hexagonal:3"], "hexagonal:3"),
    (["--factor", "3"], "factor=3"),
    (["--out", "/no/such/folder/x.nc"], "does not exist"),
    (["--samples", "2"], "n_samples must be an integer >= 3"),
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


def test_resume_discards_checkpoints_of_other_package_versions(reference, tmp_path,
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
    calls = []
    with pytest.warns(UserWarning, match="discarding .*other package versions"):
        generate(_tiny(), out, n_samples=5, every=2, ood_samples=2, progress=False,
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
