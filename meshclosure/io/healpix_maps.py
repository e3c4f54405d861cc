"""HEALPix meshes as healpy maps (NESTED by default) and FITS files."""
from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np
import torch

from .._files import atomic_path as _atomic
from .._files import refuse_existing as _refuse
from ..mesh import Mesh, MeshError
from ._common import _check_file, _check_values, _numpy


def _nside(mesh: Mesh) -> int:
    if mesh.family != "healpix" or not mesh.info.get("nest", True):
        raise ValueError(f"mesh must be a NESTED HEALPix mesh (info['family'] == 'healpix'); got "
                         f"{mesh!r}. Build it with meshclosure.mesh.healpix(nside), or use "
                         "write_vtu / write_ugrid for other meshes.")
    return int(mesh.info["nside"])


def to_healpix_map(mesh: Mesh, values: Any, nest: bool = True) -> np.ndarray:
    """Cell values on a HEALPix mesh as a healpy map.

    Parameters
    ----------
    mesh : Mesh
        From :func:`meshclosure.mesh.healpix` (cells are NESTED pixels).
    values : array or Tensor, shape (n_cells,) or (n_cells, k)
    nest : bool
        NESTED order (default: the cell order) or RING (``healpy.reorder``).

    Returns
    -------
    ndarray, shape (npix,) or (k, npix)
    """
    import healpy

    _nside(mesh)
    m = _check_values("values", values, mesh.n_cells).T.copy()
    return m if nest else np.asarray(healpy.reorder(m, n2r=True))


def from_healpix_map(mesh: Mesh, m: Any, nest: bool = True) -> torch.Tensor:
    """A healpy map (NESTED by default, RING with ``nest=False``) as cell values.

    Returns
    -------
    Tensor, shape (n_cells,) or (n_cells, k)
    """
    import healpy

    nside = _nside(mesh)
    a = _numpy(m)
    npix = a.shape[-1] if a.ndim else 0
    if a.ndim not in (1, 2) or npix != 12 * nside**2:
        got = f"nside {healpy.npix2nside(npix)}" if healpy.isnpixok(npix) else "no valid nside"
        raise ValueError(f"m must be a map of 12*nside**2 = {12 * nside**2} pixels for the mesh's "
                         f"nside={nside}; got shape {a.shape} ({got}). Use a map of the same "
                         "nside (healpy.ud_grade changes resolution).")
    if not nest:
        a = np.asarray(healpy.reorder(a, r2n=True))
    return torch.as_tensor(np.ascontiguousarray(a.T))


def write_healpix_map(mesh: Mesh, values: Any, path: str | os.PathLike,
                      overwrite: bool = False) -> None:
    """Write cell values as a NESTED healpy FITS map (``healpy.write_map``), atomically.

    ``values`` of shape ``(n_cells,)`` or ``(n_cells, k)`` must be finite (use
    ``healpy.UNSEEN`` for masked pixels); their dtype is kept. An existing
    ``path`` is refused (:class:`~meshclosure.errors.OutputExistsError`, file
    untouched) unless ``overwrite``.
    """
    import healpy

    _refuse(path, overwrite, name="path")
    m = to_healpix_map(mesh, values)
    with _atomic(path, ".fits") as tmp:
        healpy.write_map(tmp, m, nest=True, overwrite=True, dtype=m.dtype)


def read_healpix_map(path: str | os.PathLike) -> np.ndarray:
    """Read a healpy FITS map in NESTED order (RING files are reordered).

    Returns
    -------
    ndarray, shape (npix,) or (k, npix)

    Raises
    ------
    MeshError
        Missing, unreadable or truncated file.
    """
    import healpy

    _check_file(path, "HEALPix map")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # astropy warns before it fails on a truncated file
            m = np.asarray(healpy.read_map(str(path), field=None, nest=True, dtype=None))
        return m.astype(m.dtype.newbyteorder("="))  # FITS is big-endian
    except Exception as err:  # astropy raises OSError, ValueError, TypeError...
        raise MeshError(f"HEALPix map {str(path)!r} cannot be read ({type(err).__name__}: {err}); "
                        "it is truncated or not a healpy FITS map. Rewrite it.") from err


# ------------------------------------------------------------------ UGRID
