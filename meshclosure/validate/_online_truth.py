"""The coarse-grained truth of one split of a trajectory dataset, for
:mod:`meshclosure.validate.online`."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, List, Tuple

import numpy as np
import torch
from torch import Tensor

from ..errors import ArgumentError

__all__ = ["Truth", "load_truth", "member_starts", "check_count"]


@dataclass
class Truth:
    """Consecutive coarse states of one split and the step means between them.

    Attributes
    ----------
    scenario : Scenario
        Rebuilt from the file (the OOD run's own configuration for ``split="ood"``).
    mesh : Mesh
        ``scenario.coarse``.
    variables : tuple of str
    t : ndarray, shape (K,)
        Model times of the ``K`` states.
    states : dict of str -> Tensor, shape (K, n_cells)
    flux_mean : dict of str -> Tensor, shape (K, n_faces)
        ``Φ̄^sgs`` of the step from state ``k`` to ``k + 1`` (the last one leads out of
        the split and is never used).
    forcing_mean : dict of str -> Tensor, shape (K, n_cells)
        Only variables with a random forcing.
    bound : dict of str -> float
        ``max |truth|`` over the split.
    coarse_dt : float
    run : int
    index : ndarray, shape (K,)
        The states' time indices in the file.
    note : str
        Non-empty when the split held more than one contiguous block (the longest is used).
    """

    scenario: Any
    mesh: Any
    variables: Tuple[str, ...]
    t: np.ndarray
    states: Dict[str, Tensor]
    flux_mean: Dict[str, Tensor]
    forcing_mean: Dict[str, Tensor]
    bound: Dict[str, float]
    coarse_dt: float
    run: int
    index: np.ndarray
    note: str = ""

    @property
    def n_steps(self) -> int:
        return len(self.t) - 1


def load_truth(data: Any, split: str) -> Truth:
    """Read the states of ``split`` (one contiguous block of one run) from a trajectory
    dataset (path or ``xarray.Dataset``) and rebuild its scenario."""
    from ..data import read_dataset, scenario_for_run
    from ..data.dataset import SPLIT_CODES, SPLITS

    if split not in SPLITS:
        raise ArgumentError("split", split, f"must be one of {SPLITS}",
                            "pass {split}='test' (or 'train', 'val', 'ood')")
    ds = read_dataset(data) if isinstance(data, (str, os.PathLike)) else data
    if not hasattr(ds, "attrs") or "split" not in getattr(ds, "data_vars", {}):
        raise ArgumentError("data", type(data).__name__, "must be a meshclosure dataset (a "
                            "path or an xarray.Dataset from read_dataset)",
                            "pass the file written by `meshclosure generate --trajectory`")
    if int(ds.attrs.get("trajectory", 0)) != 1:
        where = ds.attrs.get("source_path", str(data) if isinstance(data, (str, os.PathLike))
                             else "the dataset")
        raise ArgumentError("data", where, "must be a TRAJECTORY dataset (a sample at every "
                            "coarse step with the step-mean subgrid flux between them); this one "
                            "holds independent samples", "generate one with generate(..., "
                            "trajectory=True) (`meshclosure generate ... --trajectory`)")
    codes = np.asarray(ds["split"].values)
    runs = [r for r in range(codes.shape[0]) if (codes[r] == SPLIT_CODES[split]).any()]
    if not runs:
        raise ArgumentError("split", split, "must be a split the dataset holds",
                            "pick another {split} (the OOD split needs ood_samples > 0)")
    run = runs[0]
    idx = np.nonzero(codes[run] == SPLIT_CODES[split])[0]
    blocks = np.split(idx, np.nonzero(np.diff(idx) != 1)[0] + 1)
    block = max(blocks, key=len)
    note = ("" if len(blocks) == 1 else f"the {split!r} split of run {run} holds "
            f"{len(blocks)} blocks; the longest ({len(block)} states) is used")
    if len(block) < 2:
        raise ArgumentError("split", split, f"must hold at least 2 consecutive states (it holds "
                            f"{len(block)})", "generate more samples or pick another {split}")
    scenario = scenario_for_run(ds, run)        # the run's own seed (many-run datasets)
    variables = tuple(scenario.variables)
    mesh = scenario.coarse
    n_int = mesh.n_faces
    sel = dict(run=run, time=slice(int(block[0]), int(block[-1]) + 1))

    def read(name: str) -> Tensor:
        return torch.as_tensor(np.asarray(ds[name].isel(**sel).values, dtype=np.float64))

    t = np.asarray(ds["model_time"].isel(**sel).values, dtype=np.float64)
    states = {v: read(f"state_{v}") for v in variables}
    flux = {v: read(f"sgs_flux_mean_{v}")[:, :n_int].contiguous() for v in variables}
    forcing = {n[len("forcing_mean_"):]: read(n) for n in ds.data_vars
               if n.startswith("forcing_mean_")}
    dt = float(np.median(np.diff(t)))
    if not np.isclose(dt, scenario.coarse_dt, rtol=1e-9, atol=0.0):
        raise ArgumentError("data", f"coarse step {dt:.6g}", f"must equal the coarse model's "
                            f"step {scenario.coarse_dt:.6g} (the file and its scenario_config "
                            "disagree)", "regenerate the dataset with this version")
    for v, x in states.items():
        if not bool(torch.isfinite(x).all()):
            raise ArgumentError("data", f"state_{v}", f"must be finite over the {split!r} split",
                                "regenerate the dataset")
    bound = {v: float(x.abs().max()) for v, x in states.items()}
    return Truth(scenario=scenario, mesh=mesh, variables=variables, t=t, states=states,
                 flux_mean=flux, forcing_mean=forcing, bound=bound, coarse_dt=dt, run=run,
                 index=block, note=note)



def check_count(name: str, value: Any, low: int = 1, why: str = "") -> int:
    """``value`` as an int, refused unless a whole number ``>= low`` (the one check of
    ``n_initial``, ``n_steps``, ``n_seeds``, ... of the validation stages).

    >>> check_count("n_steps", 0)
    Traceback (most recent call last):
    ...
    meshclosure.errors.ArgumentError: n_steps=0: must be a whole number >= 1; pass e.g. n_steps=3.
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ArgumentError(name, value, f"must be a whole number >= {low}{why}",
                            f"pass e.g. {{{name}}}={max(low, 3)}")
    return int(value)


def member_starts(n_steps: int, n_initial: int) -> List[int]:
    """Start indices of ``n_initial`` members spaced evenly over the first half of a
    truth of ``n_steps`` steps (so every member has at least half of it ahead).

    >>> member_starts(16, 3), member_starts(4, 3)
    ([0, 4, 8], [0, 1, 2])
    >>> member_starts(2, 3)
    Traceback (most recent call last):
    ...
    meshclosure.errors.ArgumentError: n_initial=3: must leave every member at least one truth step ahead (the split has 2 coarse steps); pass n_initial <= 2, or a longer split.
    """
    check_count("n_initial", n_initial, why=" (3 or more for an ensemble)")
    if n_initial > n_steps:
        raise ArgumentError("n_initial", n_initial, f"must leave every member at least one "
                            f"truth step ahead (the split has {n_steps} coarse steps)",
                            f"pass {{n_initial}} <= {n_steps}, or a longer split")
    half = max(n_steps // 2, n_initial - 1)
    starts = np.round(np.linspace(0, half, n_initial)).astype(int)
    return [int(s) for s in starts]
