"""Any triangle, quad or polygon mesh that meshio reads (MPAS, ICON, gmsh, cubed sphere...)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ._build import from_polygons
from ._mesh import Mesh, MeshError

__all__ = ["from_meshio", "read_meshio"]

_SURFACE_TYPES = ("triangle", "quad", "polygon")


def read_meshio(path: str | os.PathLike):
    """``meshio.read`` with a clear :class:`MeshError` for missing, unreadable or truncated files."""
    import meshio

    path = Path(path)
    if not path.is_file():
        raise MeshError(f"mesh file {str(path)!r} does not exist or is not a file; check the path.")
    from meshio._helpers import reader_map  # meshio.read() calls sys.exit on failure

    suffixes = "".join(path.suffixes[-2:]).lower()
    formats = meshio.extension_to_filetypes.get(suffixes) or \
        meshio.extension_to_filetypes.get(path.suffix.lower())
    if path.suffix.lower() in (".nc", ".nc4", ".zarr"):
        raise MeshError(f"mesh file {str(path)!r} is netCDF/zarr, which meshio does not read as a "
                        "surface mesh; read UGRID files and meshclosure datasets with "
                        "meshclosure.io.read_mesh(path) (or `meshclosure mesh PATH`).")
    if not formats:
        raise MeshError(f"mesh file {str(path)!r} has extension {path.suffix!r}, which meshio does "
                        "not know; rename it with its format's extension (.vtu, .msh, .vtk, "
                        ".obj, ...), or read UGRID/dataset .nc and .zarr files with "
                        "meshclosure.io.read_mesh.")
    errors = []
    for fmt in formats:
        try:
            return reader_map[fmt](str(path))
        except Exception as err:  # meshio raises many types (ReadError, ParseError, zlib.error...)
            errors.append(f"as {fmt}: {type(err).__name__}: {err}")
    raise MeshError(f"mesh file {str(path)!r} cannot be read by meshio ({'; '.join(errors)}); it "
                    "is unreadable or truncated. Re-export or regenerate it, and check that the "
                    "extension matches the format.")


def _polygons(mesh) -> list[np.ndarray] | np.ndarray:
    blocks = [b for b in mesh.cells if b.type in _SURFACE_TYPES or b.type.startswith("polygon")]
    if not blocks:
        types = sorted({b.type for b in mesh.cells})
        raise MeshError(f"the mesh has no surface cells (cell types found: {types}); meshclosure "
                        f"needs {list(_SURFACE_TYPES)} cells. Export the 2-D surface mesh.")
    width = max(b.data.shape[1] for b in blocks)
    rows = sum(len(b.data) for b in blocks)
    padded = np.full((rows, width), -1, dtype=np.int64)
    start = 0
    for b in blocks:
        padded[start:start + len(b.data), : b.data.shape[1]] = b.data
        start += len(b.data)
    return padded


def from_meshio(source: Any, sphere: bool | None = None, radius: float | None = None,
                info: dict | None = None) -> Mesh:
    """A :class:`Mesh` from a meshio mesh or any file meshio reads.

    Parameters
    ----------
    source : str, path or meshio.Mesh
    sphere : bool, optional
        Force spherical (``True``) or planar (``False``) geometry. By default
        points with ``z = 0`` are planar and points equidistant from the
        origin (to 1e-6) are a sphere.
    radius : float, optional
        Sphere radius; default: the mean distance of the points from the origin.
    info : dict, optional
        Extra metadata stored on the mesh.

    Returns
    -------
    Mesh
        Open boundaries are found and tagged (``"outer"``, ``"hole_k"``).
        Vertices not used by any cell are dropped. Cells come in the file's
        block order, one face per shared polygon edge. A ``.vtu`` written by
        :func:`meshclosure.io.write_vtu` also holds the exact mesh (coarse
        meshes with their grouped faces, in the original cell order): read it
        with :func:`meshclosure.io.read_mesh`.

    Raises
    ------
    MeshError
        Unreadable or truncated file, no surface cells, points neither planar
        nor spherical, and every check of :func:`from_polygons`.
    """
    import meshio

    meta = {"family": "meshio"}
    if isinstance(source, meshio.Mesh):
        m = source
    else:
        m = read_meshio(source)
        meta["source"] = str(source)
    meta.update(info or {})
    cells = _polygons(m)
    points = np.asarray(m.points, dtype=np.float64)
    used = np.unique(cells[cells >= 0])
    renumber = np.full(len(points), -1, dtype=np.int64)
    renumber[used] = np.arange(len(used))
    cells = np.where(cells >= 0, renumber[np.maximum(cells, 0)], -1)
    points = points[used]
    if points.shape[1] == 2:
        points3 = np.c_[points, np.zeros(len(points))]
    else:
        points3 = points
    r = np.linalg.norm(points3, axis=1)
    planar = np.all(np.abs(points3[:, 2]) <= 1e-12 * max(np.abs(points3).max(), 1e-300))
    on_sphere = r.min() > 0 and (r.max() - r.min()) <= 1e-6 * r.mean()
    if sphere is None:
        if planar:
            sphere = False
        elif on_sphere:
            sphere = True
        else:
            raise MeshError("the mesh points are neither planar (z = 0) nor on a sphere centred at "
                            f"the origin (distances {r.min():.6g}..{r.max():.6g}); pass "
                            "sphere=True to project them onto a sphere, or flatten the mesh.")
    if sphere:
        radius = float(r.mean()) if radius is None else float(radius)
        meta["radius"] = radius
        return from_polygons(radius * points3 / r[:, None], cells, radius=radius, info=meta)
    if not planar:
        raise MeshError("sphere=False but the points have non-zero z; meshclosure's planar meshes "
                        "live in the (x, y) plane. Drop or zero the z coordinate.")
    return from_polygons(points3[:, :2], cells, info=meta)
