"""Training-split normalisation and the torch dataset of PyG graphs, read sample by sample.

:class:`NormalizationStats` is computed in one streaming pass over the
training samples (never val, test or OOD); :class:`SubgridDataset` holds the
coarse mesh and the small per-sample tables and reads each item from the file
when asked, so a dataset larger than memory trains.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Dict, Iterator, Mapping, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from .dataset import _REGENERATE, SPLIT_CODES, SPLITS, DatasetError, _digest, sample_variables
from .store import _chunk_time, mesh_from_dataset, read_dataset

__all__ = ["NormalizationStats", "SubgridDataset"]


# ------------------------------------------------------------- normalization
def _blocks(ds, mask: np.ndarray, step: int = 16) -> Iterator[Tuple[int, slice, np.ndarray]]:
    """``(run, time slice, mask within the slice)`` covering the True entries of ``mask``
    ``(run, time)`` in slices of at most ``step`` samples."""
    for r in range(mask.shape[0]):
        idx = np.nonzero(mask[r])[0]
        if not len(idx):
            continue
        for t0 in range(int(idx[0]), int(idx[-1]) + 1, step):
            sl = slice(t0, min(t0 + step, int(idx[-1]) + 1))
            m = mask[r, sl]
            if m.any():
                yield r, sl, m


class _Moments:
    """Count, mean and centred sum of squares, merged block by block (Chan et al. 1979)."""

    def __init__(self) -> None:
        self.n, self.mean, self.m2, self.sq = 0, 0.0, 0.0, 0.0

    def add(self, a: np.ndarray) -> None:
        a = np.asarray(a, np.float64).ravel()
        if not a.size:
            return
        n, mean = a.size, float(a.mean())
        m2 = float(((a - mean) ** 2).sum())
        total = self.n + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self.m2 += m2 + delta**2 * self.n * n / total
        self.sq += float((a * a).sum())
        self.n = total

    @property
    def std(self) -> float:
        return float(np.sqrt(self.m2 / self.n)) if self.n else 0.0

    @property
    def rms(self) -> float:
        return float(np.sqrt(self.sq / self.n)) if self.n else 0.0


@dataclass
class NormalizationStats:
    """Per-feature shift and scale from the TRAINING split only.

    Inputs are standardised, ``(x − mean) / scale``; the components of a
    gradient (``grad_<var>_1``, ``grad_<var>_2``: a vector in the local frame)
    are only scaled, all by one scale (their joint RMS), so a rotation of the
    frame stays a rotation. Targets (face fluxes and
    tendencies) are only scaled by one ``flux_scale`` per variable, the RMS
    of ``Φ^sgs`` over the interior faces; the same scale on ``s^sgs`` keeps
    ``s = −div(Φ)`` exact. ``transport_scale`` is the RMS of ``U_c`` (1 where
    it is zero). Computed in one streaming pass over the training samples.
    """

    input_names: list
    input_mean: list
    input_scale: list
    variables: list
    flux_scale: list
    transport_scale: float

    @staticmethod
    def from_dataset(ds) -> "NormalizationStats":
        train = np.asarray(ds["split"].values) == SPLIT_CODES["train"]
        if not train.any():
            raise DatasetError("the dataset has no training samples (split == 0); generate at "
                               "least 3 samples.")
        variables = json.loads(ds.attrs["variables"]) if "variables" in ds.attrs else [
            n[len("state_"):] for n in ds.data_vars if n.startswith("state_")]
        n_int = ds.sizes["n_interior_edge"]
        names = _input_variables(ds, variables)
        edge_names = [f"sgs_flux_{v}" for v in variables] + ["transport"]
        acc = {n: _Moments() for n in names + edge_names}
        for r, sl, m in _blocks(ds, train):
            for n in names:
                acc[n].add(np.asarray(ds.variables[n][r, sl].values)[m])
            for n in edge_names:
                acc[n].add(np.asarray(ds.variables[n][r, sl, :n_int].values)[m])
        mean, scale = [], []
        for name in names:
            if name.startswith("input_grad_"):
                stem = name.rsplit("_", 1)[0]
                parts = [n for n in names if n.rsplit("_", 1)[0] == stem
                         and n.startswith("input_grad_")]
                m, s = 0.0, float(np.sqrt(np.mean([acc[n].rms ** 2 for n in parts])))
            else:
                m, s = acc[name].mean, acc[name].std
            mean.append(m)
            scale.append(s if s > 0 else 1.0)
        fscale = [acc[f"sgs_flux_{v}"].rms or 1.0 for v in variables]
        u = acc["transport"].rms
        return NormalizationStats(names, mean, scale, list(variables), fscale, u if u > 0 else 1.0)

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> "NormalizationStats":
        return NormalizationStats(**d)


def _input_variables(ds, variables) -> list:
    inputs = json.loads(ds.attrs["inputs"]) if "inputs" in ds.attrs else sorted(
        n[len("input_"):] for n in ds.data_vars if n.startswith("input_"))
    return [f"state_{v}" for v in variables] + [f"input_{n}" for n in inputs]


# ------------------------------------------------------------ torch dataset
class SubgridDataset(torch.utils.data.Dataset):
    """Time samples of one split as ``torch_geometric`` graphs of the coarse mesh, read on demand.

    Parameters
    ----------
    source : path or xarray.Dataset
        A netCDF file or zarr store from :func:`write_dataset` (opened lazily;
        its mesh, splits and checksums checked), or a dataset.
    split : {"train", "val", "test", "ood", "all"}
        ``"all"``: every present sample (gap samples included, padding never).
    normalize : bool
        Apply the training-split :class:`NormalizationStats` (default).
    stats : NormalizationStats, optional
        Statistics to apply (default: the file's, computed from its training
        split when it was written; recomputed from the training split if
        missing).
    dtype : torch.dtype
        Floating dtype of the graphs (default float32).
    verify : bool
        Check each sample against its ``sample_checksum`` when it is read
        (default True; raises :class:`DatasetError` naming the sample).

    Only the mesh and the small per-sample tables are held; each item reads
    its sample from the file (the stored chunk that holds it, of which the
    last one read is kept: sequential access reads each chunk once), so a
    dataset larger than memory trains. Each
    item is ``to_graph(mesh, x)`` (see :func:`meshclosure.graph.to_graph`) with

    * ``x (n_cells, n_inputs)``: state and resolved inputs, :attr:`input_names`;
    * ``y (n_faces, n_vars)``: subgrid face flux ``Φ^sgs`` per variable;
    * ``y_tendency (n_cells, n_vars)``: ``s^sgs``, ``= −div(y)`` (same scale);
    * ``y_boundary (n_boundary_faces, n_vars)``: ``B^sgs``;
    * ``face_transport (n_faces,)``: ``U_c``;
    * ``t`` (model time), ``run`` and ``time_index`` (indices in the file).

    :attr:`indices` is ``(n_items, 2)``: the ``(run, time index)`` of each item.

    Examples
    --------
    >>> SubgridDataset("missing.nc")
    Traceback (most recent call last):
    ...
    meshclosure.data.dataset.DatasetError: dataset 'missing.nc' does not exist or is not a file ...
    """

    def __init__(self, source: Any, split: str = "train", normalize: bool = True,
                 stats: Optional[NormalizationStats] = None,
                 dtype: torch.dtype = torch.float32, verify: bool = True) -> None:
        super().__init__()
        if split not in SPLITS + ("all",):
            raise ValueError(f"split must be one of {SPLITS + ('all',)}; got {split!r}.")
        ds = (read_dataset(source, verify="static" if verify else False, chunks=None)
              if isinstance(source, (str, os.PathLike)) else source)
        self.ds = ds
        self.split = split
        self.mesh = mesh_from_dataset(ds)
        self.variables = tuple(json.loads(ds.attrs["variables"]))
        self.config = json.loads(ds.attrs["scenario_config"])
        codes = np.asarray(ds["split"].values)
        keep = codes >= 0 if split == "all" else codes == SPLIT_CODES[split]
        self.indices = np.argwhere(keep)               # (n, 2): run, time, in file order
        if stats is None:
            stats = (NormalizationStats.from_dict(json.loads(ds.attrs["normalization"]))
                     if "normalization" in ds.attrs else NormalizationStats.from_dataset(ds))
        self.stats = stats
        self.normalize = normalize
        self.input_names = tuple(stats.input_names)
        self.dtype = dtype
        self.verify = bool(verify) and "sample_checksum" in ds
        self._checksum = np.asarray(ds["sample_checksum"].values) if self.verify else None
        self._names = sample_variables(ds)
        self._step = _chunk_time(ds) if isinstance(source, (str, os.PathLike)) else 1
        self._block_key: Optional[Tuple[int, int]] = None
        self._block: Dict[str, np.ndarray] = {}
        self._times = np.asarray(ds["model_time"].values)
        self._n_int = self.mesh.n_faces
        self._graph = self.mesh.to(dtype=dtype).to_graph()

    def __len__(self) -> int:
        return len(self.indices)

    def read(self, run: int, time_index: int) -> Dict[str, np.ndarray]:
        """The raw arrays of one stored sample ``{name: (n_face,) or (n_edge,)}``, checked
        against its checksum when :attr:`verify`."""
        c = time_index // self._step                 # read one stored chunk, keep the last
        if self._block_key != (run, c):
            sl = slice(c * self._step, (c + 1) * self._step)
            self._block = {n: np.asarray(self.ds.variables[n][run, sl].values)
                           for n in self._names}
            self._block_key = (run, c)
        arrays = {n: a[time_index - c * self._step] for n, a in self._block.items()}
        if self.verify and _digest(arrays) != self._checksum[run, time_index]:
            where = self.ds.attrs.get("source_path", "the dataset")
            raise DatasetError(f"dataset {where!r} is corrupt: sample (run {run}, time index "
                               f"{time_index}) does not match its checksum. {_REGENERATE}")
        return arrays

    def __getitem__(self, i: int):
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for the {self.split!r} split of "
                             f"{len(self)} samples.")
        r, k = (int(v) for v in self.indices[i])
        a = self.read(r, k)
        st = self.stats
        t = lambda v: torch.as_tensor(np.ascontiguousarray(v), dtype=torch.float64)  # noqa: E731
        x = t(np.stack([a[n] for n in st.input_names], -1))
        edge = t(np.stack([a[f"sgs_flux_{v}"] for v in self.variables], -1))
        s = t(np.stack([a[f"sgs_tendency_{v}"] for v in self.variables], -1))
        u = t(a["transport"][:self._n_int])
        y, b = edge[:self._n_int], edge[self._n_int:]
        if self.normalize:
            x = (x - torch.as_tensor(st.input_mean, dtype=x.dtype)) / torch.as_tensor(
                st.input_scale, dtype=x.dtype)
            fs = torch.as_tensor(st.flux_scale, dtype=y.dtype)
            y, s, b = y / fs, s / fs, b / fs
            u = u / st.transport_scale
        g = self._graph.clone()
        g.x, g.y = x.to(self.dtype), y.to(self.dtype)
        g.y_tendency, g.y_boundary = s.to(self.dtype), b.to(self.dtype)
        g.face_transport = u.to(self.dtype)
        g.t = float(self._times[r, k])
        g.run, g.time_index = r, k
        g.feature_names = self.input_names
        return g

    def denormalize_flux(self, y: Tensor) -> Tensor:
        """Undo the target scaling: ``(n_faces, n_vars)`` normalised -> physical units."""
        if not self.normalize:
            return y
        return y * torch.as_tensor(self.stats.flux_scale, dtype=y.dtype, device=y.device)

    def __repr__(self) -> str:
        return (f"SubgridDataset({self.config.get('scenario', '?')}, split={self.split!r}, "
                f"n={len(self)}, variables={self.variables}, n_inputs={len(self.input_names)}, "
                f"mesh={self.mesh!r})")
