"""Icosahedral meshes: subdivided-icosahedron triangles (ICON-like) and their dual (MPAS-like).

The meshes live as compressed binary VTU files ``meshes/icosahedral_L{level}.vtu``
(triangles) and ``meshes/icosahedral_dual_L{level}.vtu`` (pentagons and
hexagons), written by ``tools/make_icosahedral_meshes.py`` and read through
meshio. A level with no file in ``meshes/`` is generated
(:mod:`meshclosure.mesh._icogen`) and cached in ``$MESHCLOSURE_CACHE`` (default
``~/.cache/meshclosure``). Orientation, nesting and ordering conventions are
those of :mod:`meshclosure.mesh._icogen`: triangle ``t`` of level ``L`` is the
parent of triangles ``4t .. 4t + 3`` of level ``L + 1``, every cell is
counter-clockwise seen from outside, dual cell ``i`` surrounds triangle-mesh
vertex ``i``.

File layout (both kinds): float64 points; connectivity as VTK cells in
generator order. The dual is written as consecutive ``polygon`` blocks (one per
run of equal-size polygons, which meshio needs; since dual cells 0..11 are the
pentagons these are one block of 12 pentagons and one of hexagons) plus an
int32 cell-data array ``cell_index`` holding each cell's generator index, used
to restore the order on reading.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from ._icogen import icosahedral_dual, icosahedral_triangles, n_triangles, n_vertices, pad_polygons

__all__ = ["icosahedral", "icosahedral_arrays", "MAX_LEVEL"]

MAX_LEVEL = 10
"""Largest accepted level (20 * 4**10 = 20,971,520 triangles)."""

MESH_DIR = Path(__file__).resolve().parents[2] / "meshes"
_TOOL = "tools/make_icosahedral_meshes.py"


def _check_level(level: int) -> int:
    if isinstance(level, bool) or not isinstance(level, (int, np.integer)) or not 0 <= level <= MAX_LEVEL:
        raise ValueError(
            f"Invalid level={level!r}: the icosahedral subdivision level must be an "
            f"integer with 0 <= level <= {MAX_LEVEL} (level L has 20*4**L triangles, "
            f"10*4**L+2 dual cells); pass e.g. level=4 (5,120 triangles)."
        )
    return int(level)


def mesh_filename(level: int, dual: bool = False) -> str:
    """File name ``icosahedral[_dual]_L{level}.vtu`` of one mesh."""
    return f"icosahedral{'_dual' if dual else ''}_L{int(level)}.vtu"


def cache_dir() -> Path:
    """Cache folder: ``$MESHCLOSURE_CACHE`` or ``~/.cache/meshclosure``."""
    env = os.environ.get("MESHCLOSURE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "meshclosure"


def generate_arrays(level: int, dual: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Generate a mesh in memory; same result as :func:`icosahedral_arrays`."""
    level = _check_level(level)
    if not dual:
        return icosahedral_triangles(level)
    vertices, (offsets, connectivity) = icosahedral_dual(level)
    return vertices, pad_polygons(offsets, connectivity, width=6)


def write_vtu(path: str | os.PathLike, vertices: np.ndarray, cells: np.ndarray,
              compression: str | None = "zlib") -> None:
    """Write one mesh to a compressed binary VTU file atomically.

    Parameters
    ----------
    path : path-like
        Destination; a temporary file in the same folder is renamed onto it.
    vertices : ndarray, shape (n_vertices, 3), float64
    cells : ndarray, shape (n_cells, 3) int (triangles) or (n_cells, 6) int padded
        with -1 (polygons, written as ``polygon`` blocks in order, with a
        ``cell_index`` cell-data array).
    compression : {"zlib", "lzma", None}
        meshio's VTU compression.
    """
    import meshio

    path = Path(path)
    cells = np.asarray(cells)
    if cells.shape[1] == 3 and (cells >= 0).all():
        blocks = [("triangle", cells.astype(np.int32))]
        cell_data = {}
    else:
        sizes = (cells >= 0).sum(axis=1)
        breaks = np.flatnonzero(np.diff(sizes)) + 1
        starts = np.concatenate([[0], breaks])
        ends = np.concatenate([breaks, [len(cells)]])
        blocks = [("polygon", cells[s:e, : sizes[s]].astype(np.int32)) for s, e in zip(starts, ends)]
        cell_data = {"cell_index": [np.arange(s, e, dtype=np.int32) for s, e in zip(starts, ends)]}
    mesh = meshio.Mesh(np.asarray(vertices, dtype=np.float64), blocks, cell_data=cell_data)
    from .._files import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, ".vtu") as tmp:
        meshio.write(tmp, mesh, file_format="vtu", binary=True, compression=compression)


def read_vtu(path: str | os.PathLike, level: int, dual: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Read and check one icosahedral mesh file (see :func:`icosahedral_arrays`).

    Raises
    ------
    MeshError
        The file cannot be parsed or does not hold the level-``level`` mesh.
    """
    import meshio

    from ._mesh import MeshError

    path = Path(path)
    fix = (f"Regenerate it with `python {_TOOL} --levels {level} --out {path.parent}` "
           f"or delete {path} (a missing file is regenerated into the cache).")
    try:
        # meshio.vtu.read, not meshio.read: the latter prints and calls sys.exit(1)
        # on a ReadError
        mesh = meshio.vtu.read(str(path))
    except Exception as err:  # meshio raises many kinds (zlib, XML, ReadError, ...)
        reason = f"{type(err).__name__}: {err}".rstrip(": ")
        raise MeshError(f"Cannot read icosahedral mesh file {path} ({reason}): the file is "
                        f"truncated or corrupt. {fix}") from err
    kind = "polygon" if dual else "triangle"
    n_pts, n_cells = (n_triangles(level), n_vertices(level)) if dual else (n_vertices(level), n_triangles(level))
    vertices = np.asarray(mesh.points, dtype=np.float64)
    blocks = [b for b in mesh.cells if b.type == kind]
    problem = None
    if vertices.shape != (n_pts, 3):
        problem = f"points have shape {vertices.shape}, expected ({n_pts}, 3)"
    elif len(blocks) != len(mesh.cells) or sum(len(b.data) for b in blocks) != n_cells:
        problem = (f"cells are {[(b.type, len(b.data)) for b in mesh.cells]}, expected "
                   f"{n_cells} {kind} cells")
    if problem is None and not dual:
        cells = np.concatenate([b.data for b in blocks]).astype(np.int64)
    elif problem is None:
        cells = np.full((n_cells, 6), -1, dtype=np.int64)
        index = mesh.cell_data.get("cell_index")
        index = (np.concatenate(index).astype(np.int64) if index is not None
                 else np.arange(n_cells))
        if not np.array_equal(np.sort(index), np.arange(n_cells)):
            problem = "cell_index is not a permutation of range(n_cells)"
        else:
            rows = np.split(index, np.cumsum([len(b.data) for b in blocks])[:-1])
            for rows_b, b in zip(rows, blocks):
                if b.data.shape[1] > 6:
                    problem = f"a polygon has {b.data.shape[1]} vertices, expected 5 or 6"
                    break
                cells[rows_b, : b.data.shape[1]] = b.data
    if problem is None and (cells.max() >= n_pts or cells.min() < -1
                            or cells[:, : 5 if dual else 3].min() < 0):
        problem = "cell connectivity points outside the point array"
    if problem is not None:
        raise MeshError(f"Icosahedral mesh file {path} does not hold the level-{level} "
                        f"{'dual ' if dual else ''}mesh: {problem}. {fix}")
    return vertices, cells


def icosahedral_arrays(level: int, dual: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Vertices and cells of an icosahedral mesh on the unit sphere.

    Reads ``meshes/icosahedral[_dual]_L{level}.vtu`` from the repository when
    it exists; otherwise reads (or generates and atomically writes) the same
    file in :func:`cache_dir`.

    Parameters
    ----------
    level : int
        Subdivision level, ``0 <= level <= 10``.
    dual : bool
        False: triangles of the subdivided icosahedron. True: its Voronoi-like
        dual (12 pentagons, the rest hexagons).

    Returns
    -------
    vertices : ndarray, shape (n_vertices, 3), float64
        Unit vectors. Triangles: ``n_vertices = 10 * 4**level + 2``. Dual:
        ``n_vertices = 20 * 4**level``, vertex ``t`` being the circumcentre of
        triangle ``t``.
    cells : ndarray, int64
        Triangles: shape ``(20 * 4**level, 3)``. Dual: shape
        ``(10 * 4**level + 2, 6)``, padded with -1 after the fifth vertex of
        the 12 pentagons (cell ``i`` surrounds triangle-mesh vertex ``i``).
        All counter-clockwise seen from outside.

    Raises
    ------
    ValueError
        Bad ``level``.
    MeshError
        A stored file is truncated, corrupt or inconsistent.

    Examples
    --------
    >>> v, c = icosahedral_arrays(1)
    >>> v.shape, c.shape
    ((42, 3), (80, 3))
    >>> v, c = icosahedral_arrays(1, dual=True)
    >>> c.shape, int((c[:, 5] == -1).sum())
    ((42, 6), 12)
    >>> icosahedral_arrays(11)
    Traceback (most recent call last):
    ...
    ValueError: Invalid level=11: the icosahedral subdivision level must be an integer with 0 <= level <= 10 ...
    """
    level = _check_level(level)
    name = mesh_filename(level, dual)
    for folder in (MESH_DIR, cache_dir()):
        if (folder / name).is_file():
            return read_vtu(folder / name, level, dual)
    vertices, cells = generate_arrays(level, dual)
    try:
        write_vtu(cache_dir() / name, vertices, cells)
    except OSError as err:
        warnings.warn(f"Could not cache {name} in {cache_dir()} ({err}); set "
                      "MESHCLOSURE_CACHE to a writable folder to avoid regenerating it.",
                      stacklevel=2)
    return vertices, cells


def icosahedral(level: int, dual: bool = False, radius: float = 1.0):
    """Icosahedral sphere mesh: ICON-like triangles or MPAS-like hexagons/pentagons.

    Parameters
    ----------
    level : int
        Subdivision level, ``0 <= level <= 10``. Triangles: ``20 * 4**level``
        cells; dual: ``10 * 4**level + 2`` cells.
    dual : bool
        Use the Voronoi-like dual instead of the triangles.
    radius : float
        Sphere radius (the vertices are scaled by it).

    Returns
    -------
    Mesh
        Built by :func:`meshclosure.mesh._build.from_polygons`, with
        ``info = {"family": "icosahedral", "level": level, "dual": dual}``.
        Triangle mesh cells are nested: the level ``level - k`` parent of
        cell ``i`` is ``i // 4**k``.

    Examples
    --------
    >>> icosahedral(2).n_cells
    320
    >>> icosahedral(2, dual=True).n_cells
    162
    >>> icosahedral(2.5)
    Traceback (most recent call last):
    ...
    ValueError: Invalid level=2.5: the icosahedral subdivision level must be an integer ...
    """
    from ._build import from_polygons

    vertices, cells = icosahedral_arrays(level, dual)
    return from_polygons(vertices * radius, cells, radius=radius,
                         info={"family": "icosahedral", "level": int(level), "dual": bool(dual)})
