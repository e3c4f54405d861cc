"""What a comparison measures besides :func:`~meshclosure.validate.validate`: parameters,
the peak resident memory a call adds, and the wall time of one coarse solver step.

Examples
--------
>>> import torch
>>> count_parameters(torch.nn.Linear(3, 2))          # 3 · 2 weights + 2 biases
8
>>> with PeakRSS() as mem:
...     block = bytearray(64 * 2**20)                 # 64 MiB, touched
...     block[::4096] = b"x" * len(block[::4096])
>>> mem.peak_growth_mib > 32
True
>>> step_seconds(None, {}, 0.0, 1.0)
Traceback (most recent call last):
...
meshclosure.errors.ArgumentError: model=None: must have rhs(t, state) (a coarse model); ...
"""
from __future__ import annotations

import gc
import os
import resource
import statistics
import sys
import threading
import time
from typing import Any, Mapping, Optional

from ..errors import ArgumentError

__all__ = ["count_parameters", "PeakRSS", "step_seconds", "coarse_model_for",
           "MEMORY_METHOD"]

#: How peak memory is measured (quoted in the table's notes).
MEMORY_METHOD = ("peak resident-set-size growth of the process during the call "
                 "(/proc/self/statm sampled every 5 ms after glibc malloc_trim; "
                 "ru_maxrss growth where /proc is absent)")


def count_parameters(model: Any) -> int:
    """Trainable parameters of a torch module (every element of every parameter)."""
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))


def _rss_bytes() -> Optional[int]:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _maxrss_bytes() -> int:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(r) if sys.platform == "darwin" else int(r) * 1024


def _trim() -> None:
    """Hand freed heap memory back to the system (glibc ``malloc_trim``), so that memory
    an earlier call freed is not reused unseen; a no-op elsewhere."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakRSS:
    """Context manager: the largest growth of the process's resident memory while it is
    open, in MiB (``peak_growth_mib``), sampled by a thread every ``interval`` seconds.

    Resident memory counts every allocation (torch tensors included, which
    :mod:`tracemalloc` does not see). Freed heap memory is handed back to the system
    first (glibc ``malloc_trim``); what the allocator still keeps from earlier work is
    reused without growth, so a call that fits in it reads low.
    """

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = float(interval)
        self.peak_growth_mib = float("nan")
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            now = _rss_bytes()
            if now is not None and now > self._peak:
                self._peak = now

    def __enter__(self) -> "PeakRSS":
        gc.collect()
        _trim()
        self._proc = _rss_bytes() is not None
        self._start = _rss_bytes() if self._proc else _maxrss_bytes()
        self._peak = self._start
        if self._proc:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._proc:
            self._stop.set()
            self._thread.join()
            self._peak = max(self._peak, _rss_bytes() or 0)
        else:
            self._peak = _maxrss_bytes()
        self.peak_growth_mib = max(self._peak - self._start, 0) / 2**20


def coarse_model_for(scenario: Any, closure: Any) -> Any:
    """``scenario.coarse_model`` with ``closure`` (None: no closure): face fluxes through the
    model's divergence, or a per-cell tendency closure (``tendencies(...)``, e.g.
    ``nodewise``) added to its right-hand side."""
    if callable(getattr(closure, "tendencies", None)):
        from ..closures.tendency import with_tendency

        return with_tendency(scenario.coarse_model(), closure)
    return scenario.coarse_model(closure=closure)


def step_seconds(model: Any, state: Mapping[str, Any], t: float, dt: float,
                 repeats: int = 5, stepper: Optional[str] = None) -> float:
    """Median wall time (s) of one coarse step of ``model`` from ``state`` (after one
    warm-up step), with the datasets' stepper (SSP-RK3) and no gradients.

    Parameters
    ----------
    model : coarse model with ``rhs(t, state)``
    state : dict of str -> Tensor, shape (n_cells,)
    t, dt : float
        Model time and the coarse time step.
    repeats : int
        Timed steps (the median is returned).
    """
    import torch

    from ..data.trajectory import STEPPER
    from ..solver.steppers import get_stepper

    if not callable(getattr(model, "rhs", None)):
        raise ArgumentError("model", model, "must have rhs(t, state) (a coarse model)",
                            "pass coarse_model_for(scenario, closure)")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ArgumentError("repeats", repeats, "must be an integer >= 1", "pass repeats=5")
    step = get_stepper(stepper or STEPPER)
    times = []
    with torch.no_grad():
        step(model.rhs, t, dict(state), dt)
        for _ in range(repeats):
            t0 = time.perf_counter()
            step(model.rhs, t, dict(state), dt)
            times.append(time.perf_counter() - t0)
    return float(statistics.median(times))
