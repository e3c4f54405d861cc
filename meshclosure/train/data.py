"""The data of one training run: offline samples and, when needed, trajectory windows.

:class:`TrainingData` opens a dataset from :func:`meshclosure.data.generate`
for :func:`meshclosure.train.train`: a :class:`~meshclosure.data.SubgridDataset`
per split, or — for online training, the weak-form constraint or the
step-mean target — :class:`~meshclosure.data.TrajectoryDataset` windows (kept
in float64: the coarse model integrates their states in the mesh's dtype; a
network's inputs are cast to its own dtype when it is called). It also holds
the scales the losses are measured in: the training split's flux scale, the
RMS of the subgrid tendency and of the truth's variance production.

Examples
--------
>>> TrainingData("missing.nc", TrainConfig(), torch.float32)
Traceback (most recent call last):
...
meshclosure.data.dataset.DatasetError: dataset 'missing.nc' does not exist or is not a file ...
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from ..data import SubgridDataset, TrajectoryDataset
from ..data.scenarios import Scenario
from ..errors import ArgumentError
from .config import TrainConfig

__all__ = ["TrainingData", "stack_vars"]


def stack_vars(d: Mapping[str, Tensor], variables: Sequence[str]) -> Tensor:
    return torch.stack([d[v] for v in variables], -1)


class TrainingData:
    """The datasets of one run: offline samples and (if needed) trajectory windows."""

    def __init__(self, data: Any, cfg: TrainConfig, dtype: torch.dtype) -> None:
        self.traj = cfg.needs_trajectories
        # trajectory windows in float64: the coarse model integrates their states in the
        # mesh's dtype; the network's inputs are cast to its own dtype when it is called
        make = (lambda split, n: TrajectoryDataset(data, split, n, dtype=torch.float64)) \
            if self.traj else None
        if self.traj:
            self.train, self.val = make("train", 1), make("val", 1)
            k = cfg.max_steps
            self.online_train = make("train", k) if k else None
            self.online_val = make("val", k) if k else None
            if k and not len(self.online_train):
                raise ArgumentError("online_steps", k, "needs training windows of that many "
                                    "coarse steps inside the training split",
                                    "pass a smaller {online_steps} or generate more samples")
        else:
            self.train = SubgridDataset(data, "train", dtype=dtype)
            self.val = SubgridDataset(data, "val", dtype=dtype)
            self.online_train = self.online_val = None
        if not len(self.train):
            raise ArgumentError("data", str(data), "has no training samples",
                                "generate a dataset with more samples (--samples)")
        ref = self.train
        self.mesh, self.variables, self.stats = ref.mesh, tuple(ref.variables), ref.stats
        self.config = ref.scenario_config if self.traj else ref.config
        self.flux_scale = torch.as_tensor(self.stats.flux_scale, dtype=torch.float64)
        names = list(self.stats.input_names)
        self.state_cols = [names.index(f"state_{v}") for v in self.variables]
        self.state_scale = {v: float(self.stats.input_scale[i])
                            for v, i in zip(self.variables, self.state_cols)}
        self._scenario: Optional[Scenario] = None
        self._by_run: Dict[int, Scenario] = {}
        self.tendency_scale, self.production_scale = self._loss_scales()

    def _loss_scales(self, n: int = 32) -> tuple:
        """Per-variable RMS of the (normalised) subgrid tendency and of the truth's
        variance production ``P = Σ_f Φ_f (Q_b − Q_a)`` over up to ``n`` training samples:
        the tendency loss and the dissipation penalty are measured in these units, so
        their weights are comparable with the flux loss's (all O(1))."""
        from .dissipation import variance_production
        from .losses import tendency

        ds = self.train
        idx = np.linspace(0, len(ds) - 1, min(n, len(ds))).round().astype(int)
        b = self.batch(ds, np.unique(idx), "instantaneous")
        y = b["y"].to(torch.float64)
        s = b["s"].to(torch.float64) if b["s"] is not None else tendency(self.mesh, y)
        t_scale = s.pow(2).mean(dim=(0, 1)).sqrt()
        x = b["x"].to(torch.float64)
        p = torch.stack([variance_production(self.mesh, y[..., i], x[..., c])
                         for i, c in enumerate(self.state_cols)], -1)
        p_scale = p.pow(2).mean(dim=0).sqrt()
        one = torch.ones_like(t_scale)
        return (torch.where(t_scale > 0, t_scale, one), torch.where(p_scale > 0, p_scale, one))

    @property
    def scenario(self) -> Scenario:
        """The scenario of the dataset's first run (its features and coarse mesh serve all runs)."""
        if self._scenario is None:
            self._scenario = Scenario.from_config(self.config)
        return self._scenario

    def scenario_for(self, run: int) -> Scenario:
        """The scenario of run ``run`` (its own seed: a dataset of many runs,
        :func:`~meshclosure.data.generate_runs`), built once per run.

        The online loss unrolls each window with its run's coarse model (the
        prescribed transport and the random forcing are the run's own)."""
        from ..data import scenario_for_run

        run = int(run)
        if run not in self._by_run:
            ref = self.online_train if self.online_train is not None else self.train
            self._by_run[run] = scenario_for_run(ref.ds, run)
        return self._by_run[run]

    def batch(self, ds, idx: Sequence[int], target: str) -> Dict[str, Any]:
        """Offline batch: ``x (B, n_cells, F)``, ``y (B, n_faces, V)`` and ``s (B, n_cells, V)``
        (normalised), plus the collated trajectory batch (``window``) if any."""
        items = [ds[int(i)] for i in idx]
        if not self.traj:
            b = ds.collate(items)
            return {"x": b.x, "y": b.y, "s": b.y_tendency, "window": None}
        w = ds.collate(items)
        y = w["y"][:, 0]
        s = None
        if target == "step_mean":
            y = (stack_vars(w["flux_mean"], self.variables)[:, 0]
                 / self.flux_scale.to(w["x"].dtype)).to(w["x"].dtype)
        return {"x": w["x"][:, 0], "y": y, "s": s, "window": w}


