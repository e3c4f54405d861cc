"""Truth data for closures: scenarios, subgrid targets, datasets on disk (DESIGN.md §5).

* :mod:`~meshclosure.data.targets`: coarse state, inputs and the subgrid
  flux/tendency targets of a fine snapshot (``s^sgs = −div_coarse(Φ^sgs)``).
* :mod:`~meshclosure.data.dataset`: the file layout (UGRID dims, a ``run``
  dimension, CF attributes, coarse mesh included) and :func:`build_dataset`;
  :mod:`~meshclosure.data.store`: netCDF or zarr, written atomically, read
  lazily with integrity checks; :mod:`~meshclosure.data.torch_dataset`:
  :class:`SubgridDataset` of PyG graphs read on demand, :class:`TrajectoryDataset`
  of unroll windows, batches on one shared graph (:class:`GraphBatch`).
* :mod:`~meshclosure.data.trajectory`: coarse steps of a truth run with their
  step means (what the coarse model replays), :func:`trajectory_windows`.
* :mod:`~meshclosure.data.generate`: :func:`generate` and
  :func:`check_generate_arguments`, behind ``meshclosure generate``;
  :mod:`~meshclosure.data.multirun`: :func:`generate_runs`, many runs on
  dask.distributed into one zarr store (``generate --runs R``), :func:`run_seeds`,
  :func:`scenario_for_run`.
* :mod:`~meshclosure.data.scenarios`: the truth runs (``kinematic``,
  ``barotropic``, ``convection``): :func:`get_scenario`, ``SCENARIOS``.
"""
from __future__ import annotations

from .dataset import (FORMAT_VERSION, SPLIT_CODES, SPLITS, DatasetError, NormalizationStats,
                      SubgridDataset, build_dataset, check_compatible, mesh_from_dataset,
                      read_dataset, split_boundaries, write_dataset)
from .generate import ResumeError, check_generate_arguments, check_output_path, generate
from .multirun import SharedPathError, generate_runs, run_seeds, scenario_for_run
from .scenarios import SCENARIOS, Scenario, get_scenario
from .targets import SubgridSample, check_identity, coarse_inputs, subgrid_targets
from .torch_dataset import GraphBatch, TrajectoryDataset
from .trajectory import coarse_steps, replay, trajectory_samples, trajectory_windows

__all__ = [
    "subgrid_targets", "SubgridSample", "check_identity", "coarse_inputs",
    "build_dataset", "write_dataset", "read_dataset", "mesh_from_dataset", "check_compatible",
    "split_boundaries", "SPLITS", "SPLIT_CODES", "FORMAT_VERSION", "DatasetError",
    "NormalizationStats", "SubgridDataset", "generate", "check_generate_arguments",
    "check_output_path", "ResumeError", "get_scenario", "SCENARIOS", "Scenario",
    "TrajectoryDataset", "GraphBatch", "trajectory_windows", "trajectory_samples",
    "coarse_steps", "replay", "generate_runs", "run_seeds", "scenario_for_run",
    "SharedPathError",
]

