"""zarr stores and lazy reading: atomic writes, integrity per sample, generate --format zarr,
and a SubgridDataset whose memory stays far below the size of the store it iterates.

Run as a script to measure a larger store (the numbers in the report)::

    python tests/data/test_zarr.py build /tmp/big.zarr 200     # a ~200 MB store
    python tests/data/test_zarr.py measure /tmp/big.zarr       # peak memory while iterating
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from meshclosure.data import (DatasetError, SubgridDataset, build_dataset,  # noqa: E402
                              read_dataset, write_dataset)
from meshclosure.data.generate import generate  # noqa: E402
from meshclosure.data.targets import SubgridSample  # noqa: E402
from meshclosure.errors import OutputExistsError  # noqa: E402
from meshclosure.mesh import cartesian  # noqa: E402


# ------------------------------------------------------------- synthetic stores
def synthetic_dataset(n_samples: int, nx: int = 32, n_ood: int = 0, seed: int = 0):
    """A dataset of ``n_samples`` random samples on ``cartesian(nx, nx)`` (not physics:
    just the layout at a chosen size; ~64 kB per sample at nx = 32)."""
    mesh = cartesian(nx, nx)
    rng = np.random.default_rng(seed)

    def sample(t):
        cell = lambda: torch.as_tensor(rng.standard_normal(mesh.n_cells))  # noqa: E731
        face = lambda: torch.as_tensor(rng.standard_normal(mesh.n_faces))  # noqa: E731
        return SubgridSample(t=t, state={"q": cell()}, transport=face(), flux={"q": face()},
                             tendency={"q": cell()}, boundary_flux={"q": torch.zeros(0)},
                             inputs={"grad_q_1": cell(), "grad_q_2": cell()})

    main = [sample(0.1 * k) for k in range(n_samples)]
    ood = [sample(0.1 * k) for k in range(n_ood)]
    return build_dataset(main, mesh, config={"scenario": "synthetic", "nx": nx}, seed=seed,
                         ood_samples=ood)


def store_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def measure(path: str) -> dict:
    """Iterate every item of ``SubgridDataset(path, "all")``; the peak memory it added."""
    import resource
    import tracemalloc

    def rss_kb(key: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    data = SubgridDataset(path, "all")
    data[0]                                          # warm up imports and caches
    before = rss_kb("VmRSS:")
    tracemalloc.start()
    total = 0.0
    for k in range(len(data)):
        total += float(data[k].y.sum())
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"items": len(data), "store_bytes": store_size(Path(path)),
            "rss_before_kb": before, "rss_peak_kb": rss_kb("VmHWM:"),
            "rss_growth_bytes": 1024 * (rss_kb("VmHWM:") - before),
            "tracemalloc_peak_bytes": peak, "checksum": total}


def _script(*args: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True,
                         text=True, env=env, timeout=600)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------- tests
def test_zarr_write_is_atomic_and_refuses_existing(tmp_path, monkeypatch) -> None:
    import xarray as xr

    ds = synthetic_dataset(6, nx=8)
    store = tmp_path / "data.zarr"
    write_dataset(ds, store)
    assert (store / "zarr.json").is_file() or (store / ".zgroup").is_file()
    first = read_dataset(store).load()                # (lazy data would follow the path)
    with pytest.raises(OutputExistsError, match="data.zarr.*exists and was left untouched"):
        write_dataset(ds, store)
    # a write that fails half-way leaves the old store as it was and no temporary folder
    real = xr.Dataset.to_zarr

    def broken(self, path, **kwargs):
        real(self, path, **kwargs)
        raise OSError("disk full")

    monkeypatch.setattr(xr.Dataset, "to_zarr", broken)
    with pytest.raises(OSError, match="disk full"):
        write_dataset(synthetic_dataset(6, nx=8, seed=1), store, overwrite=True)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.zarr"]
    assert read_dataset(store)["state_q"].equals(first["state_q"])
    # overwrite replaces the whole store; a folder that is not a store is never replaced
    write_dataset(synthetic_dataset(6, nx=8, seed=1), store, overwrite=True)
    assert not read_dataset(store)["state_q"].equals(first["state_q"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.zarr"]
    plain = tmp_path / "notes.zarr"
    plain.mkdir()
    (plain / "mine.txt").write_text("keep")
    with pytest.raises(IsADirectoryError, match="not a zarr store"):
        write_dataset(ds, plain, overwrite=True)
    assert (plain / "mine.txt").read_text() == "keep"


def test_reading_is_lazy_and_chunked_along_time(tmp_path) -> None:
    import dask.array

    ds = synthetic_dataset(20, nx=8)
    store = tmp_path / "data.zarr"
    write_dataset(ds, store, chunk_time=4)
    read = read_dataset(store)
    assert isinstance(read["state_q"].data, dask.array.Array)
    assert read["state_q"].data.chunks[1] == (4,) * 5          # chunks along time
    assert read["mesh_cell_volume"].variable._in_memory        # the small tables are read
    data = SubgridDataset(store, "train")
    assert not data.ds["state_q"].variable._in_memory          # samples are read on demand
    g = data[3]
    np.testing.assert_allclose(g.x[:, 0].double().numpy(),
                               (ds["state_q"].values[0, 3] - data.stats.input_mean[0])
                               / data.stats.input_scale[0], rtol=1e-6)
    assert not data.ds["state_q"].variable._in_memory


def test_corrupt_zarr_chunk_is_caught(tmp_path) -> None:
    ds = synthetic_dataset(8, nx=8)
    store = tmp_path / "data.zarr"
    write_dataset(ds, store, chunk_time=1)
    chunks = sorted(p for p in (store / "state_q").rglob("*") if p.is_file()
                    and p.name not in ("zarr.json", ".zarray", ".zattrs"))
    assert len(chunks) == 8
    chunks[5].write_bytes(chunks[2].read_bytes())      # a valid chunk with the wrong data
    with pytest.raises(DatasetError, match=r"data.zarr.*sample \(run 0, time index 5\).*"
                                           "checksum"):
        read_dataset(store)
    data = SubgridDataset(store, "all")               # opens (static check), then per sample
    data[2]
    with pytest.raises(DatasetError, match=r"time index 5"):
        data[5]


def test_generate_zarr_equals_netcdf(tmp_path) -> None:
    from test_generate import _tiny

    nc, zarr = tmp_path / "run.nc", tmp_path / "run.zarr"
    generate(_tiny(), nc, n_samples=4, every=2, ood_samples=1, progress=False, gap=0)
    generate(_tiny(), zarr, n_samples=4, every=2, ood_samples=1, progress=False, gap=0)
    a, b = read_dataset(nc), read_dataset(zarr)
    for name in a.variables:
        assert np.array_equal(a[name].values, b[name].values,
                              equal_nan=a[name].dtype.kind == "f"), name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.nc", "run.zarr"]
    for split in ("train", "ood"):
        x, y = SubgridDataset(nc, split), SubgridDataset(zarr, split)
        assert len(x) == len(y) and torch.equal(x[0].y, y[0].y)


def test_subgrid_dataset_memory_stays_far_below_the_store(tmp_path) -> None:
    """A store 4x the memory budget iterates with a peak far below its size (subprocesses)."""
    store = tmp_path / "big.zarr"
    budget = 8 * 2**20
    built = _script("build", str(store), "34")
    assert built["store_bytes"] >= 4 * budget
    got = _script("measure", str(store))
    assert got["items"] == built["samples"]
    assert got["tracemalloc_peak_bytes"] < budget, got
    assert got["rss_growth_bytes"] < budget, got


if __name__ == "__main__":
    command, path = sys.argv[1], sys.argv[2]
    if command == "build":
        megabytes = float(sys.argv[3])
        n = int(megabytes * 2**20 / (64 * 1024))          # ~64 kB per sample at nx = 32
        write_dataset(synthetic_dataset(n), path, overwrite=True)
        print(json.dumps({"samples": n, "store_bytes": store_size(Path(path))}))
    else:
        print(json.dumps(measure(path)))
