"""Meshes as finite-volume geometry: the `Mesh`, its adapters, and coarsening."""
from ._build import PolygonGeometry, from_polygons
from ._mesh import Mesh, MeshError
from ._validate import AREA_RATIO_LIMIT, SLIVER_ANGLE, MeshQualityWarning
from .cartesian import cartesian, cells_to_grid, grid_to_cells
from .cubed import cubed_sphere
from .coarsening import Coarsening, agglomerate, column_parent, native_parent
from .healpix import healpix
from .icosahedral import icosahedral
from .irregular import irregular_sphere, jittered_sphere
from .meshio_adapter import from_meshio
from .spec import parse_mesh_spec

__all__ = [
    "Mesh", "MeshError", "from_polygons", "cartesian", "healpix", "icosahedral", "cubed_sphere",
    "from_meshio",
    "Coarsening", "native_parent", "agglomerate", "column_parent", "grid_to_cells",
    "cells_to_grid", "parse_mesh_spec", "PolygonGeometry",
    "irregular_sphere", "jittered_sphere", "MeshQualityWarning", "SLIVER_ANGLE",
    "AREA_RATIO_LIMIT",
]
