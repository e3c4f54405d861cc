"""Training-split normalisation and the torch datasets, read sample by sample.

:class:`NormalizationStats` is computed in one streaming pass over the
training samples (never val, test or OOD); :class:`SubgridDataset` holds the
coarse mesh and the small per-sample tables and reads each item from the file
when asked, so a dataset larger than memory trains. :class:`TrajectoryDataset`
gives unroll windows of a trajectory dataset (``generate(..., trajectory=True)``):
a start state, the next ``length`` states and the step means that lead from
each to the next.

Batches share ONE graph: every item's graph structure is the dataset's own
(no per-sample copy), and ``collate_fn=dataset.collate`` stacks items into
``x (B, n_cells, F)``, ``y (B, n_faces, n_vars)``, ... next to that single
graph (:class:`GraphBatch`), the batched form the registered models take.

Examples
--------
>>> GraphBatch.stack([])
Traceback (most recent call last):
...
meshclosure.errors.ArgumentError: items=[]: must hold at least one sample; ...
"""
from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass
from typing import Any, Dict, Iterator, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from ..errors import ArgumentError
from .dataset import (_REGENERATE, SPLIT_CODES, SPLITS, DatasetError, _digest,
                      fill_operator_version, sample_variables)
from .store import _chunk_time, mesh_from_dataset, read_dataset
from .trajectory import trajectory_windows

__all__ = ["NormalizationStats", "SubgridDataset", "TrajectoryDataset", "GraphBatch"]


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

    Every item shares the tensors of the dataset's one graph (:attr:`graph`; no
    per-sample copy), so never modify them in place. ``DataLoader(dataset,
    batch_size=B, collate_fn=dataset.collate)`` gives :class:`GraphBatch` es.

    :attr:`indices` is ``(n_items, 2)``: the ``(run, time index)`` of each item.
    :attr:`operators` is the operator version of the data (``"fv1"`` for datasets
    made before versions existed): load models for it with
    ``load_model(path, mesh, operators=dataset.operators)``.

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
        self.operators = fill_operator_version(ds)       # read_dataset did, for a file
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
        return self.item(r, k)

    def item(self, run: int, time_index: int, arrays: Optional[Mapping[str, np.ndarray]] = None):
        """The item of the stored sample ``(run, time_index)`` (``arrays``: its raw arrays,
        already read with :meth:`read`)."""
        r, k = int(run), int(time_index)
        a = self.read(r, k) if arrays is None else arrays
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
        g = copy.copy(self._graph)          # shares the graph's tensors: no per-sample copy
        g.x, g.y = x.to(self.dtype), y.to(self.dtype)
        g.y_tendency, g.y_boundary = s.to(self.dtype), b.to(self.dtype)
        g.face_transport = u.to(self.dtype)
        g.t = float(self._times[r, k])
        g.run, g.time_index = r, k
        g.feature_names = self.input_names
        return g

    @property
    def graph(self):
        """The one graph of the coarse mesh that every item and batch shares."""
        return self._graph

    def collate(self, items: Sequence[Any]) -> "GraphBatch":
        """``collate_fn`` for :class:`torch.utils.data.DataLoader`: stack items on the
        dataset's one graph (:meth:`GraphBatch.stack`)."""
        return GraphBatch.stack(items, self._graph)

    def denormalize_flux(self, y: Tensor) -> Tensor:
        """Undo the target scaling: ``(n_faces, n_vars)`` normalised -> physical units."""
        if not self.normalize:
            return y
        return y * torch.as_tensor(self.stats.flux_scale, dtype=y.dtype, device=y.device)

    def __repr__(self) -> str:
        return (f"SubgridDataset({self.config.get('scenario', '?')}, split={self.split!r}, "
                f"n={len(self)}, variables={self.variables}, n_inputs={len(self.input_names)}, "
                f"mesh={self.mesh!r})")


# ------------------------------------------------------------------- batches
_PER_SAMPLE = ("x", "y", "y_tendency", "y_boundary", "face_transport")


@dataclass
class GraphBatch:
    """Samples stacked on one shared graph of the coarse mesh.

    Attributes
    ----------
    graph : torch_geometric.data.Data
        The dataset's graph (``edge_index``, geometry): one object, never copied.
    x : Tensor, shape (B, n_cells, n_inputs)
    y : Tensor, shape (B, n_faces, n_vars)
    y_tendency : Tensor, shape (B, n_cells, n_vars)
    y_boundary : Tensor, shape (B, n_boundary_faces, n_vars)
    face_transport : Tensor, shape (B, n_faces)
    t : Tensor, shape (B,)
        Model times (float64).
    run, time_index : LongTensor, shape (B,)
        Where each sample lives in the file.
    feature_names : tuple of str
    """

    graph: Any
    x: Tensor
    y: Tensor
    y_tendency: Tensor
    y_boundary: Tensor
    face_transport: Tensor
    t: Tensor
    run: Tensor
    time_index: Tensor
    feature_names: tuple = ()

    @staticmethod
    def stack(items: Sequence[Any], graph: Any = None) -> "GraphBatch":
        """Stack :class:`SubgridDataset` items (graphs sharing one structure) along a new
        first dim; ``graph`` default: the first item's graph without its per-sample data
        (its tensors are the dataset's, shared)."""
        if not len(items):
            raise ArgumentError("items", list(items), "must hold at least one sample",
                                "pass a non-empty list of SubgridDataset items")
        if graph is None:
            graph = copy.copy(items[0])
            for k in _PER_SAMPLE + ("t", "run", "time_index", "feature_names"):
                if k in graph:
                    del graph[k]
        cat = {k: torch.stack([it[k] for it in items]) for k in _PER_SAMPLE}
        return GraphBatch(graph=graph, **cat,
                          t=torch.tensor([float(it.t) for it in items], dtype=torch.float64),
                          run=torch.tensor([int(it.run) for it in items]),
                          time_index=torch.tensor([int(it.time_index) for it in items]),
                          feature_names=tuple(items[0].feature_names))

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def to(self, device: Any) -> "GraphBatch":
        """The batch on ``device``; its graph is a shallow copy moved there (on the same
        device the very same tensors, still shared)."""
        moved = {k: (v.to(device) if isinstance(v, Tensor) else v)
                 for k, v in ((k, getattr(self, k)) for k in self.__dataclass_fields__)
                 if k != "graph"}
        return GraphBatch(graph=copy.copy(self.graph).to(device), **moved)


# ---------------------------------------------------------------- trajectories
class TrajectoryDataset(torch.utils.data.Dataset):
    """Unroll windows of a trajectory dataset: a start state, the next ``length`` states,
    and the step means that lead from each state to the next.

    Parameters
    ----------
    source : path or xarray.Dataset
        A trajectory dataset (``generate(..., trajectory=True)``).
    split : {"train", "val", "test", "ood"}
    length : int
        Coarse steps per window; the windows are
        :func:`~meshclosure.data.trajectory.trajectory_windows` ``(ds, split, length)``:
        never across a split boundary, a gap or padding.
    normalize : bool
        Scale ``x`` and ``y`` with the training-split statistics (the states and step
        means, which the coarse model consumes, stay in physical units).
    dtype : torch.dtype
        Floating dtype (default float64: the coarse model's).
    verify : bool
        Check each stored sample against its checksum when read.

    Each item is a dict (``collate_fn=dataset.collate`` stacks them on the one graph):

    * ``state``: ``{var: (n_cells,)}``, the coarse state at the window's start;
    * ``states``: ``{var: (length, n_cells)}``, the following states;
    * ``flux_mean``: ``{var: (length, n_faces)}``, ``Φ̄^sgs`` of each step;
    * ``boundary_flux_mean``: ``{var: (length, n_boundary_faces)}``;
    * ``forcing_mean``: ``{var: (length, n_cells)}``, only variables with a forcing;
    * ``transport_stages``: ``(length, n_stages, n_faces)`` (prescribed flow only);
    * ``x``: ``(length + 1, n_cells, n_inputs)`` and ``y``: ``(length + 1, n_faces,
      n_vars)``, the offline inputs and instantaneous targets of every state;
    * ``t``: ``(length + 1,)`` model times; ``run``, ``start``: where it lives in the file.

    :attr:`coarse_dt` and :attr:`stage_times` come from the file's attributes;
    :attr:`scenario_config` rebuilds the scenario (and so ``scenario.coarse_model``).
    """

    def __init__(self, source: Any, split: str = "train", length: int = 1,
                 normalize: bool = True, stats: Optional[NormalizationStats] = None,
                 dtype: torch.dtype = torch.float64, verify: bool = True) -> None:
        super().__init__()
        self._reader = SubgridDataset(source, "all", normalize, stats, dtype, verify)
        ds = self.ds = self._reader.ds
        if int(ds.attrs.get("trajectory", 0)) != 1:
            where = ds.attrs.get("source_path", "the dataset")
            raise DatasetError(f"{where!r} is not a trajectory dataset (no step means between "
                               "its samples); generate one with `meshclosure generate ... "
                               "--trajectory` (generate(..., trajectory=True)).")
        self.windows = trajectory_windows(ds, split, length)
        self.split, self.length = split, int(length)
        self.mesh, self.variables = self._reader.mesh, self._reader.variables
        self.stats, self.dtype = self._reader.stats, dtype
        self.scenario_config = json.loads(ds.attrs["scenario_config"])
        self.operators = self._reader.operators
        self.coarse_dt = float(ds.attrs["coarse_dt"])
        self.stage_times = tuple(json.loads(ds.attrs["stage_times"]))
        self.forced = tuple(n[len("forcing_mean_"):] for n in ds.data_vars
                            if n.startswith("forcing_mean_"))
        self.has_transport_stages = "transport_stages" in ds.data_vars

    @property
    def graph(self):
        """The one graph of the coarse mesh that every batch shares."""
        return self._reader.graph

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> Dict[str, Any]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for the {len(self)} windows of length "
                             f"{self.length} in the {self.split!r} split.")
        r, k = self.windows[i]
        raw = [self._reader.read(r, k + j) for j in range(self.length + 1)]
        graphs = [self._reader.item(r, k + j, a) for j, a in enumerate(raw)]
        n_int = self.mesh.n_faces
        t = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=self.dtype)  # noqa: E731
        steps = raw[:-1]
        item: Dict[str, Any] = {
            "state": {v: t(raw[0][f"state_{v}"]) for v in self.variables},
            "states": {v: t(np.stack([a[f"state_{v}"] for a in raw[1:]]))
                       for v in self.variables},
            "flux_mean": {v: t(np.stack([a[f"sgs_flux_mean_{v}"][:n_int] for a in steps]))
                          for v in self.variables},
            "boundary_flux_mean": {v: t(np.stack([a[f"sgs_flux_mean_{v}"][n_int:]
                                                  for a in steps])) for v in self.variables},
            "forcing_mean": {v: t(np.stack([a[f"forcing_mean_{v}"] for a in steps]))
                             for v in self.forced},
            "x": torch.stack([g.x for g in graphs]), "y": torch.stack([g.y for g in graphs]),
            "t": torch.tensor([float(g.t) for g in graphs], dtype=torch.float64),
            "run": r, "start": k,
        }
        if self.has_transport_stages:
            item["transport_stages"] = t(np.stack([a["transport_stages"][:, :n_int]
                                                   for a in steps]))
        return item

    def collate(self, items: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
        """``collate_fn`` for :class:`torch.utils.data.DataLoader`: every tensor stacked on a
        new first dim (``x (B, length + 1, n_cells, F)``, ...), plus ``graph`` and ``mesh``,
        the dataset's own objects (shared, not copied)."""
        if not len(items):
            raise ArgumentError("items", list(items), "must hold at least one window",
                                "pass a non-empty list of TrajectoryDataset items")
        out = torch.utils.data.default_collate(list(items))
        out["graph"], out["mesh"] = self.graph, self.mesh
        return out

    def __repr__(self) -> str:
        return (f"TrajectoryDataset({self.scenario_config.get('scenario', '?')}, "
                f"split={self.split!r}, length={self.length}, n={len(self)}, "
                f"coarse_dt={self.coarse_dt:.4g}, mesh={self.mesh!r})")
