"""Checks shared by the io writers and readers: files, cell-value arrays, attributes."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from ..mesh import Mesh, MeshError


Fields = Mapping[str, Any]


def _check_file(path: str | os.PathLike, what: str) -> None:
    if not Path(path).is_file():
        raise MeshError(f"{what} {str(path)!r} does not exist or is not a file; check the path.")


def _numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _check_values(name: str, values: Any, n_cells: int, time_first: bool = False) -> np.ndarray:
    """``values`` as an array with ``n_cells`` rows (or columns, ``time_first``), all finite."""
    a = _numpy(values)
    if a.dtype == bool:
        a = a.astype(np.int8)
    axis = a.ndim - 1 if time_first else 0
    shape = "(n_cells,) or (time, n_cells)" if time_first else "(n_cells,) or (n_cells, k)"
    if a.ndim not in (1, 2) or a.shape[axis] != n_cells or a.dtype.kind not in "biuf":
        raise ValueError(f"{name} must have n_cells={n_cells} rows (one per cell); got shape "
                         f"{a.shape} and dtype {a.dtype}. Pass a real array of shape {shape}.")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        bad = np.unique(np.nonzero(~np.isfinite(a))[axis])
        raise ValueError(f"{name} has non-finite values (NaN/Inf) in {len(bad)} cells, e.g. "
                         f"cells {bad[:10].tolist()}; nothing was written. Fill or mask them "
                         "first.")
    return a


def _check_fields(mesh: Mesh, fields: Fields | None, time_first: bool = False,
                  reserved: tuple = ()) -> dict[str, np.ndarray]:
    if fields is None:
        return {}
    if not isinstance(fields, Mapping):
        raise TypeError(f"fields must be a dict name -> cell values; got {type(fields).__name__}. "
                        "Pass e.g. {'q': q}.")
    out = {}
    for name, values in fields.items():
        if not isinstance(name, str) or not name or name in reserved:
            raise ValueError(f"field name {name!r} is not allowed: names are non-empty strings "
                             f"other than {list(reserved)}. Rename the field.")
        out[name] = _check_values(f"field {name!r}", values, mesh.n_cells, time_first)
    return out


def _lonlat(xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Longitude in [-180, 180) and latitude in degrees of points ``(n, 3)``."""
    lon = np.degrees(np.arctan2(xyz[:, 1], xyz[:, 0]))
    lat = np.degrees(np.arcsin(np.clip(xyz[:, 2] / np.linalg.norm(xyz, axis=1), -1, 1)))
    return np.where(lon >= 180.0, lon - 360.0, lon), lat


def _attr(value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)
    return value if isinstance(value, (int, float, str, np.number)) else str(value)
