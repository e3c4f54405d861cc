"""VTU files for ParaView: cell fields plus the exact mesh in the field data."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .._files import atomic_path as _atomic
from .._files import refuse_existing as _refuse
from .._polygons import unwrapped_polygons as _unwrapped_polygons
from ..mesh import Mesh, MeshError
from ._common import Fields, _attr, _check_fields
from .exact import exact_mesh_variables, mesh_from_exact_variables


def write_vtu(mesh: Mesh, fields: Fields | None, path: str | os.PathLike,
              compression: str | None = "zlib", overwrite: bool = False,
              exact: bool = True) -> None:
    """Write cell fields on ``mesh`` as VTU cell data (ParaView), atomically.

    Cells are grouped into meshio blocks by polygon size (``triangle``,
    ``quad``, ``polygon``); the int cell-data array ``cell_index`` gives each
    block row's original cell. A 1-D column is written as ``line`` cells
    along x = z; planar points get z = 0; on a periodic plane each cell's
    polygon is unwrapped from its first vertex (wrapped vertices duplicated),
    so the cells tile the rectangle without overlap.

    The polygons are the cells' full outlines (for coarse meshes with the fine
    vertices along coarse faces, so agglomerated, non-convex cells draw as they
    are). With ``exact`` (default) every mesh array is also stored as VTK
    ``FieldData`` (``meshclosure_mesh_<field>``, ignored by ParaView's
    rendering), so :func:`read_mesh` gives back the mesh bit for bit;
    :func:`~meshclosure.mesh.from_meshio` instead rebuilds a mesh from the
    polygons, which for agglomerated coarse cells has one face per fine edge
    and fails ``validate()`` where a cell is not convex.

    Parameters
    ----------
    mesh : Mesh
    fields : dict of str -> array or Tensor, shape (n_cells,) or (n_cells, k), or None
        Finite values; ``"cell_index"`` is reserved.
    path : path-like
        Destination ``.vtu``; its folder must exist.
    compression : {"zlib", "lzma", None}
    overwrite : bool
        Replace an existing ``path`` (default: refuse it).
    exact : bool
        Store the exact mesh arrays as field data (default; the file grows
        about 8x, e.g. 0.3 -> 2.9 MB at 20,480 cells; ``False`` for
        display-only files).

    Raises
    ------
    OutputExistsError
        ``path`` exists and ``overwrite`` is False (the file is left untouched).
    ValueError
        A field with the wrong shape, a reserved name, or NaN/Inf (nothing written).
    FileNotFoundError, PermissionError
        The destination folder is missing or not writable.
    """
    import meshio

    _refuse(path, overwrite, name="path")
    data = _check_fields(mesh, fields, reserved=("cell_index",))
    points, cells = _unwrapped_polygons(mesh)
    sizes = (cells >= 0).sum(1)
    order = np.argsort(sizes, kind="stable")
    names = {3: "triangle", 4: "quad"}
    blocks, index = [], []
    for k in np.unique(sizes):
        rows = order[sizes[order] == k]
        kind = "line" if mesh.dim == 1 else names.get(int(k), "polygon")
        blocks.append((kind, cells[rows, :k].astype(np.int64)))
        index.append(rows)
    cell_data = {"cell_index": [r.astype(np.int64) for r in index]}
    cell_data.update({name: [a[r] for r in index] for name, a in data.items()})
    out = meshio.Mesh(points, blocks, cell_data=cell_data)
    with _atomic(path, ".vtu") as tmp:
        meshio.write(tmp, out, file_format="vtu", binary=True, compression=compression)
        if exact:
            _add_vtu_field_data(tmp, _exact_arrays(mesh), compression)


_VTU_PREFIX = "meshclosure_mesh_"
_VTU_TYPES = {np.dtype(np.float64): "Float64", np.dtype(np.int64): "Int64",
              np.dtype(np.uint8): "UInt8"}


def _exact_arrays(mesh: Mesh) -> dict[str, np.ndarray]:
    """The exact mesh arrays, flattened, with one JSON byte array of shapes and attributes."""
    ds = exact_mesh_variables(mesh)
    arrays = {name: np.ascontiguousarray(ds[name].values) for name in ds.data_vars}
    meta = {"attrs": {k: _attr(v) for k, v in ds.attrs.items()},
            "shapes": {name: list(a.shape) for name, a in arrays.items()}}
    out = {_VTU_PREFIX + name[len("mesh_"):]: a.reshape(-1) for name, a in arrays.items()}
    out[_VTU_PREFIX + "json"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    return out


def _add_vtu_field_data(path: str, arrays: Mapping[str, np.ndarray],
                        compression: str | None) -> None:
    """Insert ``<FieldData>`` with ``arrays`` into the VTU file meshio wrote at ``path``,
    encoded as meshio/VTK binary (UInt32 headers, one block, compressed as the file)."""
    import base64
    import lzma
    import zlib

    blocks = []
    for name, a in arrays.items():
        raw = np.ascontiguousarray(a, a.dtype.newbyteorder("=")).tobytes()
        if compression:
            packed = {"zlib": zlib, "lzma": lzma}[compression].compress(raw)
            header = np.array([1, len(raw), len(raw), len(packed)], np.uint32)
            text = base64.b64encode(header.tobytes()).decode() + base64.b64encode(packed).decode()
        else:
            text = base64.b64encode(np.array(len(raw), np.uint32).tobytes() + raw).decode()
        blocks.append(f'<DataArray type="{_VTU_TYPES[a.dtype]}" Name="{name}" '
                      f'NumberOfTuples="{a.size}" format="binary">\n{text}\n</DataArray>\n')
    xml = Path(path).read_bytes()
    tag = b"<UnstructuredGrid>"
    at = xml.index(tag) + len(tag)
    note = (b"\n<!--meshclosure: FieldData meshclosure_mesh_* holds the exact finite-volume mesh "
            b"(flattened arrays; shapes and attributes in meshclosure_mesh_json). Read it with "
            b"meshclosure.io.read_mesh(path) or `meshclosure mesh PATH`: rebuilding cells from "
            b"the polygons (meshio, from_meshio) gives one face per polygon edge, and coarse "
            b"agglomerated cells are not convex.-->")
    Path(path).write_bytes(xml[:at] + note + b"\n<FieldData>\n" + "".join(blocks).encode()
                           + b"</FieldData>" + xml[at:])


def _exact_from_vtu(m) -> Mesh | None:
    """The exact mesh stored by :func:`write_vtu` in a meshio mesh's field data, or None."""
    import xarray as xr

    key = _VTU_PREFIX + "json"
    if key not in m.field_data:
        return None
    meta = json.loads(np.asarray(m.field_data[key], np.uint8).tobytes().decode())
    ds = xr.Dataset(attrs=meta["attrs"])
    for name, shape in meta["shapes"].items():
        a = np.asarray(m.field_data[_VTU_PREFIX + name[len("mesh_"):]]).reshape(shape)
        ds[name] = (tuple(f"{name}_{k}" for k in range(len(shape))), a)
    return mesh_from_exact_variables(ds)


def read_vtu(path: str | os.PathLike) -> tuple[Any, dict[str, np.ndarray]]:
    """Read a VTU file written by :func:`write_vtu`.

    Returns
    -------
    meshio.Mesh
        The file's mesh; cells in block order (``cell_data["cell_index"]``
        gives each block row's original cell).
    dict of str -> ndarray, shape (n_cells,) or (n_cells, k)
        The cell fields in original cell order (without ``cell_index``).

    Raises
    ------
    MeshError
        Missing, unreadable or truncated file, or a bad ``cell_index``.
    """
    from ..mesh.meshio_adapter import read_meshio

    m = read_meshio(path)
    n = sum(len(b.data) for b in m.cells)
    index = (np.concatenate(m.cell_data["cell_index"]).astype(np.int64)
             if "cell_index" in m.cell_data else np.arange(n))
    if not np.array_equal(np.sort(index), np.arange(n)):
        raise MeshError(f"VTU file {str(path)!r}: cell data 'cell_index' is not a permutation of "
                        f"range({n}); the file was not written by write_vtu or is corrupt.")
    fields = {}
    for name, blocks in m.cell_data.items():
        if name != "cell_index":
            a = np.concatenate(blocks)
            fields[name] = np.empty_like(a)
            fields[name][index] = a
    return m, fields
