"""Meshes and cell fields in and out: VTU for ParaView, HEALPix maps for healpy, UGRID netCDF
for uxarray, and :func:`read_mesh` for every mesh file meshclosure writes.

Every writer refuses an existing ``path`` unless ``overwrite=True``
(:class:`~meshclosure.errors.OutputExistsError`, the file left untouched) and
is atomic: it writes a temporary file in the destination folder and renames
it onto ``path`` (``os.replace``), so a failed write leaves an existing file
untouched and no temporary file behind. Fields are validated (name,
``n_cells`` rows, finite) before anything is written.

VTU and UGRID files carry the exact mesh (:func:`exact_mesh_variables`), so
:func:`read_mesh` returns it bit for bit; UGRID polygons list the cells' own
corners only (no hanging fine vertices on coarse meshes), so uxarray derives
the stored edges.

One module per format: :mod:`~meshclosure.io.vtu`,
:mod:`~meshclosure.io.healpix_maps`, :mod:`~meshclosure.io.ugrid`,
:mod:`~meshclosure.io.exact` (the exact mesh arrays) and
:mod:`~meshclosure.io.read` (:func:`read_mesh`); every public name is
importable from :mod:`meshclosure.io`.

Vocabulary (DESIGN.md §2): our *cells*, *faces* and *vertices* are UGRID
*faces* (dim ``n_face``), *edges* (``n_edge``) and *nodes* (``n_node``).

Examples
--------
>>> import tempfile, os, torch
>>> from meshclosure.mesh import healpix
>>> mesh = healpix(1)
>>> q = torch.arange(12.0)
>>> with tempfile.TemporaryDirectory() as tmp:
...     write_vtu(mesh, {"q": q}, os.path.join(tmp, "q.vtu"))
...     _, fields = read_vtu(os.path.join(tmp, "q.vtu"))
>>> fields["q"].tolist() == q.tolist()
True
>>> to_healpix_map(mesh, torch.zeros(13))
Traceback (most recent call last):
...
ValueError: values must have n_cells=12 rows (one per cell); got shape (13,) and dtype float32. ...
"""

from __future__ import annotations

from .exact import (EXACT_MESH_DIMS, EXACT_MESH_FORMAT, exact_mesh_variables,
                    mesh_from_exact_variables)
from .healpix_maps import from_healpix_map, read_healpix_map, to_healpix_map, write_healpix_map
from .read import mesh_from_ugrid, read_mesh
from .ugrid import read_ugrid, to_ugrid_dataset, write_ugrid
from .vtu import read_vtu, write_vtu

__all__ = ["write_vtu", "read_vtu", "to_healpix_map", "from_healpix_map", "write_healpix_map",
           "read_healpix_map", "to_ugrid_dataset", "write_ugrid", "read_ugrid",
           "exact_mesh_variables", "mesh_from_exact_variables", "EXACT_MESH_DIMS", "read_mesh",
           "mesh_from_ugrid"]
