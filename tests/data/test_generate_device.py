"""``meshclosure generate --device``: the fine run on a chosen torch device, samples written
from the CPU. On the CPU the flag changes nothing (the same file, bit for bit); a device this
machine lacks is refused before any work, naming the flag. (The CUDA run itself is compared
with the CPU in tests/test_gpu_scenarios.py, skipped without a GPU.)"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from meshclosure.cli import main
from meshclosure.data import read_dataset
from meshclosure.data.dataset import sample_variables

ARGS = ["generate", "--scenario", "kinematic", "--mesh", "cartesian:16", "--factor", "4",
        "--samples", "3", "--every", "2", "--ood", "0", "--no-progress"]


def test_device_cpu_writes_the_same_file(tmp_path):
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert main(ARGS + ["--out", str(tmp_path / "plain.nc")]) == 0
        assert main(ARGS + ["--device", "cpu", "--out", str(tmp_path / "cpu.nc")]) == 0
    finally:
        torch.set_num_threads(old)
    a, b = read_dataset(tmp_path / "plain.nc"), read_dataset(tmp_path / "cpu.nc")
    names = sample_variables(a)
    assert names and names == sample_variables(b)
    for n in names:
        assert np.array_equal(a[n].values, b[n].values, equal_nan=True), n


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_missing_device_is_refused_before_any_file(tmp_path, capsys):
    out = tmp_path / "never.nc"
    assert main(ARGS + ["--device", "cuda", "--out", str(out)]) != 0
    err = capsys.readouterr().err
    assert "--device 'cuda'" in err and "leave --device out" in err
    assert not out.exists() and not list(tmp_path.iterdir())
