"""Mesh specs: one string names a mesh, ``family:size`` or the path of a mesh file.

The command line, the scenarios and the tools build meshes from these strings;
this module is the one parser they share.
"""
from __future__ import annotations

from pathlib import Path

from .cartesian import cartesian
from .healpix import check_nside, healpix
from .icosahedral import icosahedral

__all__ = ["parse_mesh_spec"]


def parse_mesh_spec(spec: str):
    """Build a mesh from ``cartesian:NXxNY``, ``healpix:NSIDE``, ``icosahedral:LEVEL``,
    ``icosahedral-dual:LEVEL`` or the path of a mesh file: any file
    :func:`meshclosure.io.read_mesh` reads (``.vtu`` and UGRID ``.nc`` written
    by meshclosure, datasets ``.nc``/``.zarr``, and every format meshio reads).

    >>> parse_mesh_spec("healpix:4").n_cells
    192
    >>> parse_mesh_spec("healpix:6")
    Traceback (most recent call last):
    ...
    ValueError: mesh spec 'healpix:6': nside must be a power of 2 (1, 2, 4, 8, ...) for NESTED HEALPix; got 6. Use e.g. healpix:16 (3072 cells); ...
    >>> parse_mesh_spec("hexagonal:3")
    Traceback (most recent call last):
    ...
    ValueError: mesh spec 'hexagonal:3' is not a known family or an existing file; ...
    """
    family, _, arg = spec.partition(":")
    try:
        if family == "cartesian" and arg:
            nx, _, ny = arg.partition("x")
            return cartesian(int(nx), int(ny or nx), 1.0)
        if family == "healpix" and arg:
            nside = int(arg)
            try:
                check_nside(nside)
            except ValueError as err:   # the fix is spelled as a spec, as it was given
                raise ValueError(f"mesh spec {spec!r}: nside must be a power of 2 (1, 2, 4, 8, "
                                 f"...) for NESTED HEALPix; got {nside}. Use e.g. healpix:16 "
                                 "(3072 cells); the cell count is 12 * nside**2.") from err
            return healpix(nside)
        if family in ("icosahedral", "icosahedral-dual") and arg:
            return icosahedral(int(arg), dual=family.endswith("dual"))
    except ValueError as err:
        if "invalid literal" in str(err):
            raise ValueError(f"mesh spec {spec!r}: {arg!r} is not an integer size; write e.g. "
                             "healpix:16 or cartesian:64x32.") from err
        raise
    if Path(spec).exists():
        from ..io import read_mesh   # late: io imports mesh

        return read_mesh(spec)
    raise ValueError(f"mesh spec {spec!r} is not a known family or an existing file; use "
                     "cartesian:NXxNY, healpix:NSIDE, icosahedral:LEVEL, icosahedral-dual:LEVEL "
                     "or the path of a mesh file (.vtu, UGRID or dataset .nc/.zarr, or any format "
                     "meshio reads).")
