"""Truth data for closures: scenarios, subgrid targets, datasets on disk (DESIGN.md §5).

* :mod:`~meshclosure.data.targets`: coarse state, inputs and the subgrid
  flux/tendency targets of a fine snapshot (``s^sgs = −div_coarse(Φ^sgs)``).
* :mod:`~meshclosure.data.dataset`: the netCDF layout (coarse mesh included),
  reading with integrity checks, and :class:`SubgridDataset` of PyG graphs.
* :mod:`~meshclosure.data.generate`: :func:`generate`, behind ``meshclosure generate``.
* :mod:`~meshclosure.data.scenarios`: the truth runs (``kinematic``,
  ``barotropic``, ``convection``): :func:`get_scenario`, ``SCENARIOS``.
"""
from __future__ import annotations

from .dataset import (SPLITS, DatasetError, NormalizationStats, SubgridDataset, build_dataset,
                      check_compatible, mesh_from_dataset, read_dataset, split_boundaries,
                      write_dataset)
from .generate import check_output_path, generate
from .scenarios import SCENARIOS, Scenario, get_scenario
from .targets import SubgridSample, check_identity, coarse_inputs, subgrid_targets

__all__ = [
    "subgrid_targets", "SubgridSample", "check_identity", "coarse_inputs",
    "build_dataset", "write_dataset", "read_dataset", "mesh_from_dataset", "check_compatible",
    "split_boundaries", "SPLITS", "DatasetError", "NormalizationStats", "SubgridDataset",
    "generate", "check_output_path", "get_scenario", "SCENARIOS", "Scenario",
]

