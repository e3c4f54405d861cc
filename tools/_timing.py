"""Timing shared by the benchmark scripts (``tools/bench_*.py``).

Imported as ``from _timing import median_time``: a script run as ``python tools/x.py``
has the tools folder first on ``sys.path`` (the scripts also insert it, so they import
the same way when loaded from elsewhere).

Examples
--------
>>> import torch
>>> median_time(lambda: None, 3, torch.device("cpu")) >= 0.0
True
>>> median_time(lambda: None, 0, torch.device("cpu"))
Traceback (most recent call last):
...
meshclosure.errors.ArgumentError: repeats=0: must be an integer >= 1; pass e.g. repeats=5.
"""
from __future__ import annotations

import statistics
import time
from typing import Callable

import torch

from meshclosure.errors import ArgumentError

__all__ = ["median_time"]


def median_time(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls after one warm-up call, [s].

    On CUDA the device is synchronised before and after each call, so the time
    covers the kernels ``fn`` launched, not only their launch.

    Parameters
    ----------
    fn : callable
        Called with no arguments.
    repeats : int
        Timed calls (>= 1).
    device : torch.device
        Where ``fn`` runs.

    Returns
    -------
    float
        Seconds.
    """
    if not isinstance(repeats, int) or repeats < 1:
        raise ArgumentError("repeats", repeats, "must be an integer >= 1", "pass e.g. repeats=5")
    fn()                                              # warm-up (caches, allocations)
    cuda = torch.device(device).type == "cuda"
    times = []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)
