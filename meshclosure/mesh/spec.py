"""Mesh specs: one string names a mesh, ``family:size`` or the path of a mesh file.

The command line, the scenarios and the tools build meshes from these strings;
this module is the one parser they share.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import ArgumentError
from .cartesian import cartesian
from .cubed import cubed_sphere
from .healpix import check_nside, healpix
from .icosahedral import icosahedral

__all__ = ["parse_mesh_spec"]


def parse_mesh_spec(spec: str):
    """Build a mesh from ``cartesian:NXxNY``, ``healpix:NSIDE``, ``icosahedral:LEVEL``,
    ``icosahedral-dual:LEVEL``, ``cubed:N`` (equiangular cubed sphere, ``N × N``
    cells per panel) or the path of a mesh file: any file
    :func:`meshclosure.io.read_mesh` reads (``.vtu`` and UGRID ``.nc`` written
    by meshclosure, datasets ``.nc``/``.zarr``, and every format meshio reads).

    >>> parse_mesh_spec("healpix:4").n_cells
    192
    >>> parse_mesh_spec("healpix:6")
    Traceback (most recent call last):
    ...
    ValueError: mesh spec 'healpix:6': nside must be a power of 2 (1, 2, 4, 8, ...) for NESTED HEALPix; got 6. Use e.g. healpix:16 (3072 cells); ...
    >>> parse_mesh_spec("cubed:8").n_cells
    384
    >>> parse_mesh_spec("cubed:0")
    Traceback (most recent call last):
    ...
    meshclosure.errors.ArgumentError: spec='cubed:0': in cubed:N, the number of cells per panel edge must be an integer from 1 to 2048 (the cubed sphere has 6 n² cells); write e.g. cubed:16 (1,536 cells) or cubed:32 (6,144 cells).
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
        if family == "cubed" and arg:
            n = int(arg)
            try:
                return cubed_sphere(n)
            except ArgumentError as err:   # the fix is spelled as a spec, as it was given
                raise ArgumentError("spec", spec, f"in cubed:N, {err.rule}",
                                    "write e.g. cubed:16 (1,536 cells) or cubed:32 (6,144 "
                                    "cells)") from err
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
                     "cartesian:NXxNY, healpix:NSIDE, icosahedral:LEVEL, icosahedral-dual:LEVEL, "
                     "cubed:N or the path of a mesh file (.vtu, UGRID or dataset .nc/.zarr, or any "
                     "format meshio reads).")
