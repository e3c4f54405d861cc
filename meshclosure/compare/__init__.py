"""Compare architectures across mesh types (issue 13): :func:`compare`.

Per mesh and seed ``s`` one trajectory dataset (scenario seed ``s``), the
baselines calibrated on it, every model that supports the mesh's coarse family
trained with the same budget (equal optimizer updates at one batch size) and
training seed ``s``, then :func:`~meshclosure.validate.validate` (offline on the
test and OOD splits, online runs). The table has one row per (mesh, closure) —
the models, the calibrated baselines, no closure and the truth replay — with
parameters, training time, the wall time of one coarse solver step, offline R²
(test and OOD), online similarity, time to blow-up, conservation drift and peak
memory, each as mean ± standard deviation over seeds with ``n``
(:mod:`~meshclosure.compare.table`). Every finished (mesh, seed, model) cell is
a JSON file under ``OUT/cells/``: a rerun with the same arguments skips it.
With ``rotation`` (the symmetry test) every sphere mesh and seed also gets a
tilted dataset, on which the models trained at the default axis and the
baselines calibrated there are validated (columns ``offline R² tilted`` and
``online similarity tilted``; n/a on planes).

Command line: ``meshclosure compare --scenario kinematic --models mgn,cnn
--meshes cartesian:32,healpix:8 --seeds 3 --out DIR``.
"""
from .measure import MEMORY_METHOD, PeakRSS, coarse_model_for, count_parameters, step_seconds
from .runner import DEFAULT_TRAIN, REFERENCES, CompareResult, compare, tilted_closure
from .table import (COLUMNS, CSV_FIELDS, TILTED_COLUMNS, cell_text, collect, markdown,
                    read_cells, read_table,
                    spread, write_table)

__all__ = ["compare", "CompareResult", "DEFAULT_TRAIN", "REFERENCES", "COLUMNS", "CSV_FIELDS",
           "TILTED_COLUMNS", "tilted_closure",
           "spread", "cell_text", "collect", "read_cells", "read_table", "markdown",
           "write_table", "count_parameters",
           "PeakRSS", "step_seconds", "coarse_model_for", "MEMORY_METHOD"]
