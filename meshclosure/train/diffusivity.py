"""Discovery made visible: the effective diffusivity ``K_eff(N)`` of any closure.

The truth's subgrid flux, a fitted law's and a learned closure's are measured
by ONE regression: per node ``N_j``, the hat-weighted least-squares ``K`` in
``Φ ≈ K G`` over every face and sample of a split
(:func:`~meshclosure.train.baselines.binned_diffusivity`), with
``G = −(Q_b − Q_a) A_f / d_f`` and ``N`` the scenario's resolved measure at
the faces (``kinematic``: the input ``N``; ``convection``: ``N²``;
``barotropic``: the strain rate ``|S|``). A closure that has learned the
diffusive part of the truth has the truth's curve; :func:`keff_error` is the
mean relative distance between two curves over the training range's bins,
and :func:`plot_effective_diffusivity` draws curves across the training and
out-of-distribution ranges.

Examples
--------
>>> keff_error([1.0, 2.0, 3.0], [1.0, 2.0, 4.0])
0.08333333333333333
>>> keff_error([1.0, 2.0], [0.0, float("nan")])
Traceback (most recent call last):
...
meshclosure.errors.ArgumentError: K_truth=[0.0, nan]: must be finite and nonzero at some node (inside train_range); ...
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from ..closures import as_closure
from ..errors import ArgumentError
from ..mesh import Mesh
from .baselines import binned_diffusivity, face_gradient, face_mean
from .eddy_viscosity import strain_rate, vorticity_gradient

__all__ = ["SampleTable", "load_table", "measure_function", "primary_measure",
           "effective_diffusivity", "keff_error", "plot_effective_diffusivity"]

#: The measure ``N`` of ``K_eff(N)`` per ``(scenario, variable)``.
PRIMARY_MEASURES = {("kinematic", "q"): "input:N", ("convection", "b"): "input:N2",
                    ("barotropic", "zeta"): "strain_rate", ("barotropic", "q"): "strain_rate"}

_STATE_MEASURES = {"strain_rate": strain_rate, "vorticity_gradient": vorticity_gradient}


def primary_measure(scenario: str, var: str) -> str:
    """The measure of ``K_eff(N)`` for ``var`` of ``scenario`` (:data:`PRIMARY_MEASURES`)."""
    try:
        return PRIMARY_MEASURES[(scenario, var)]
    except KeyError:
        raise ArgumentError("var", var, f"has no default measure N in scenario {scenario!r} "
                            f"(known: {sorted(PRIMARY_MEASURES)})",
                            "pass measure='input:<name>', 'strain_rate' or "
                            "'vorticity_gradient'") from None


def measure_function(name: str, scenario: Any = None) -> Callable[[float, Mapping[str, Tensor],
                                                                   Mesh], Tensor]:
    """``(t, state, mesh) -> (n_cells,)`` computing the measure ``name`` from a coarse state.

    ``"input:<X>"``: ``scenario.resolved_inputs(mesh, t, state, None)[X]`` (needs the
    scenario); ``"strain_rate"`` / ``"vorticity_gradient"``: from ``state["zeta"]``
    (:mod:`~meshclosure.train.eddy_viscosity`).
    """
    if name in _STATE_MEASURES:
        fn = _STATE_MEASURES[name]
        return lambda t, state, mesh: fn(mesh, state["zeta"])
    if isinstance(name, str) and name.startswith("input:"):
        key = name[len("input:"):]
        if scenario is None or not hasattr(scenario, "resolved_inputs"):
            raise ArgumentError("scenario", type(scenario).__name__, f"must be a Scenario to "
                                f"compute the measure {name!r}", "pass the scenario (or "
                                "scenario.ood() for the out-of-distribution run)")
        return lambda t, state, mesh: scenario.resolved_inputs(mesh, t, state, None)[key]
    raise ArgumentError("measure", name, "must be 'input:<name>', 'strain_rate' or "
                        "'vorticity_gradient'", "use one of these measures")


@dataclass
class SampleTable:
    """The physical samples of one split, stacked: ``state {var: (S, n_cells)}``, ``inputs
    {name: (S, n_cells)}``, ``flux {var: (S, n_faces)}`` (``Φ^sgs``), ``t (S,)``,
    ``transport (S, n_faces)``, the stored model inputs ``x (S, n_cells, F)`` named
    ``input_names`` (physical units), float64; ``source`` reopens other splits.
    ``flux_mean {var: (S, n_faces)}``: the step-mean ``Φ̄^sgs`` over the coarse step that
    starts at each sample (``sgs_flux_mean_<var>`` of a trajectory dataset), ``None`` when
    the dataset has none."""

    mesh: Mesh
    variables: tuple
    config: dict
    source: Any
    split: str
    state: Dict[str, Tensor]
    inputs: Dict[str, Tensor]
    flux: Dict[str, Tensor]
    t: Tensor
    transport: Tensor
    x: Optional[Tensor] = None
    input_names: tuple = ()
    flux_mean: Optional[Dict[str, Tensor]] = None
    _measures: Dict[str, Tensor] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return int(self.t.numel())

    @property
    def dataset(self) -> Any:
        return self.source

    def sample(self, i: int) -> Dict[str, Tensor]:
        """The state of sample ``i``: ``{var: (n_cells,)}``."""
        return {v: s[i] for v, s in self.state.items()}

    def measure(self, name: str) -> Tensor:
        """The measure ``name`` at the cells of every sample, ``(S, n_cells)`` (inputs from
        the file; state measures computed, once)."""
        if name not in self._measures:
            if name.startswith("input:") and name[len("input:"):] in self.inputs:
                self._measures[name] = self.inputs[name[len("input:"):]]
            elif name.startswith("input:"):
                raise ArgumentError("measure", name, f"must be one of the dataset's inputs "
                                    f"{sorted('input:' + k for k in self.inputs)}",
                                    "choose a measure the dataset holds")
            else:
                fn = measure_function(name)
                self._measures[name] = torch.stack([fn(float(self.t[i]), self.sample(i),
                                                       self.mesh) for i in range(len(self))])
        return self._measures[name]


def load_table(data: Any, split: str = "train", max_samples: Optional[int] = None
               ) -> SampleTable:
    """Read the physical samples of ``split`` (path, xarray.Dataset, SubgridDataset or a
    :class:`SampleTable`, returned as it is when its split matches); a trajectory
    dataset's step-mean flux too (``SampleTable.flux_mean``)."""
    from ..data import SubgridDataset

    if isinstance(data, SampleTable):
        if data.split == split:
            return data
        data = data.source
    if isinstance(data, SubgridDataset):
        data = data.ds
    if max_samples is not None and not (isinstance(max_samples, int) and max_samples >= 1):
        raise ArgumentError("max_samples", max_samples, "must be a whole number >= 1 or None",
                            "pass e.g. max_samples=200")
    ds = SubgridDataset(data, split, normalize=False, dtype=torch.float64)
    idx = np.arange(len(ds))
    if max_samples is not None and len(idx) > max_samples:
        idx = np.unique(np.linspace(0, len(idx) - 1, max_samples).round().astype(int))
    items, raw = [], []
    for i in idx:                       # each sample read once: its item and its raw arrays
        r, k = (int(v) for v in ds.indices[int(i)])
        a = ds.read(r, k)
        items.append(ds.item(r, k, a))
        raw.append(a)
    names = list(ds.input_names)
    col = lambda n: (torch.stack([it.x[:, names.index(n)] for it in items])  # noqa: E731
                     if items else torch.zeros(0, ds.mesh.n_cells, dtype=torch.float64))
    nf = ds.mesh.n_faces
    flux = {v: (torch.stack([it.y[:, k] for it in items]) if items else
                torch.zeros(0, nf, dtype=torch.float64)) for k, v in enumerate(ds.variables)}
    flux_mean = None
    if all(f"sgs_flux_mean_{v}" in ds.ds.variables for v in ds.variables):
        flux_mean = {v: (torch.stack([torch.as_tensor(np.asarray(a[f"sgs_flux_mean_{v}"][:nf]),
                                                      dtype=torch.float64) for a in raw])
                         if raw else torch.zeros(0, nf, dtype=torch.float64))
                     for v in ds.variables}
    return SampleTable(
        mesh=ds.mesh, variables=tuple(ds.variables), config=dict(ds.config),
        source=ds.ds if not isinstance(data, (str, os.PathLike)) else data, split=split,
        state={v: col(f"state_{v}") for v in ds.variables},
        inputs={n[len("input_"):]: col(n) for n in names if n.startswith("input_")
                and not n.startswith("input_grad_")},
        flux=flux, t=torch.tensor([float(it.t) for it in items], dtype=torch.float64),
        transport=(torch.stack([it.face_transport for it in items]) if items
                   else torch.zeros(0, nf, dtype=torch.float64)),
        x=(torch.stack([it.x for it in items]) if items
           else torch.zeros(0, ds.mesh.n_cells, len(names), dtype=torch.float64)),
        input_names=tuple(names), flux_mean=flux_mean)


def batched_outputs(closure: Any, table: SampleTable, batch_size: int = 16
                    ) -> Optional[Tuple[Tensor, Optional[Tensor]]]:
    """``(mean, log_var)`` ``(S, n_faces, V)`` (physical units, float64; ``log_var`` None
    for a deterministic head) of a feed-forward :class:`~meshclosure.closures.ModelClosure`
    run in batches on the stored inputs of ``table`` (the same features the pipeline
    computes, and for the OOD run the OOD scenario's inputs); ``None`` when that does not
    apply (not a ModelClosure, recurrent, or other input names than the table's)."""
    from ..closures import ModelClosure

    if not (isinstance(closure, ModelClosure) and not closure.recurrent
            and table.x is not None
            and tuple(closure.features.names) == tuple(table.input_names)):
        return None
    dtype = next((p.dtype for p in closure.model.parameters() if p.is_floating_point()),
                 torch.float64)
    means, log_vars = [], []
    with torch.no_grad():
        for i in range(0, len(table), batch_size):
            x = table.x[i:i + batch_size]
            if closure.normalizer is not None:
                x = closure.normalizer.normalize_inputs(x)
            out = closure.model(table.mesh, x.to(dtype))
            mean, log_var = (out[0], out[1]) if isinstance(out, tuple) else (out, None)
            if closure.normalizer is not None:
                mean = closure.normalizer.denormalize_flux(mean)
                log_var = None if log_var is None else \
                    closure.normalizer.denormalize_log_var(log_var)
            means.append(mean.double())
            log_vars.append(None if log_var is None else log_var.double())
    lv = None if any(v is None for v in log_vars) else torch.cat(log_vars)
    return torch.cat(means), lv


def _batched_model_fluxes(closure: Any, table: SampleTable, var: str,
                          batch_size: int) -> Optional[Tensor]:
    """``(S, n_faces)`` of ``var`` from :func:`batched_outputs` (mean mode only)."""
    if getattr(closure, "mode", "mean") != "mean" or var not in getattr(closure, "variables",
                                                                        ()):
        return None
    out = batched_outputs(closure, table, batch_size)
    return None if out is None else out[0][..., list(closure.variables).index(var)]


def _closure_fluxes(closure: Any, table: SampleTable, var: str, batch_size: int = 16
                    ) -> Tensor:
    """``(S, n_faces)``: the closure's flux of ``var`` at every sample (no gradients)."""
    batched = _batched_model_fluxes(closure, table, var, batch_size)
    if batched is not None:
        return batched
    c = as_closure(closure)
    out = []
    with torch.no_grad():
        for i in range(len(table)):
            t, state, U = float(table.t[i]), table.sample(i), table.transport[i]
            try:
                phi = c(t, state, table.mesh, transport=U)
            except TypeError:
                phi = c(t, state, table.mesh)
            if var not in phi:
                raise ArgumentError("closure", type(closure).__name__, f"must return a flux "
                                    f"for {var!r} (it returned {sorted(phi)})",
                                    "pick var among the variables the closure closes")
            out.append(phi[var].detach().double().reshape(-1))
    return torch.stack(out)


def effective_diffusivity(closure: Any, data: Any, split: str = "train",
                          nodes: Optional[Sequence[float]] = None, var: Optional[str] = None,
                          measure: Optional[str] = None, n_nodes: int = 8,
                          max_samples: Optional[int] = None, batch_size: int = 16
                          ) -> Tuple[np.ndarray, np.ndarray]:
    """``K_eff(N)`` of a closure (or of the truth) on one split of a dataset.

    Parameters
    ----------
    closure : Closure, callable or None
        ``None``: the truth's ``Φ^sgs``. A feed-forward
        :class:`~meshclosure.closures.ModelClosure` whose features are the
        dataset's inputs runs in batches of ``batch_size`` on the stored inputs
        (normalised by its own normalizer). Any other closure (a fitted
        baseline, a recurrent model, a function) is called per sample as
        ``closure(t, state, mesh, transport=U)`` at the sample's coarse state,
        time and transport; for the OOD split, one that computes scenario inputs
        must then be built for ``scenario.ood()``.
    data : path, xarray.Dataset, SubgridDataset or SampleTable
    split : str
    nodes : sequence of float, optional
        Equally spaced nodes of ``N``; default ``n_nodes`` spanning the split's
        range at the faces. Pass the same nodes to compare curves.
    var : str, optional
        The variable (default the dataset's first).
    measure : str, optional
        The ``N`` (default :func:`primary_measure`), see :func:`measure_function`.

    Returns
    -------
    nodes : ndarray, shape (n_nodes,)
    K_eff : ndarray, shape (n_nodes,)
        [length²/time]; ``nan`` at a node no face is near.
    """
    table = load_table(data, split, max_samples)
    if not len(table):
        raise ArgumentError("split", split, "must hold samples", "choose a split with samples")
    var = table.variables[0] if var is None else var
    if var not in table.variables:
        raise ArgumentError("var", var, f"must be one of the dataset's variables "
                            f"{table.variables}", "pick one of them")
    measure = primary_measure(table.config.get("scenario", "?"), var) if measure is None \
        else measure
    mesh = table.mesh
    G = face_gradient(mesh, table.state[var].T).T
    N = face_mean(mesh, table.measure(measure).T).T
    if nodes is None:
        nodes = np.linspace(float(N.min()), float(N.max()), n_nodes)
    flux = table.flux[var] if closure is None else _closure_fluxes(closure, table, var,
                                                                   batch_size)
    nodes = np.asarray(nodes, dtype=np.float64)
    return nodes, binned_diffusivity(flux, G, N, nodes)


def keff_error(K, K_truth, nodes: Optional[Sequence[float]] = None,
               train_range: Optional[Tuple[float, float]] = None) -> float:
    """Mean relative error ``mean_j |K_j − K_truth,j| / |K_truth,j|`` over the nodes where
    both are finite and ``K_truth ≠ 0`` (and, given ``nodes`` and ``train_range``, inside
    the training range)."""
    K = np.asarray(K, dtype=np.float64)
    T = np.asarray(K_truth, dtype=np.float64)
    if K.shape != T.shape:
        raise ArgumentError("K", K.shape, f"must have the shape of K_truth {T.shape}",
                            "measure both curves at the same nodes")
    ok = np.isfinite(K) & np.isfinite(T) & (T != 0)
    if nodes is not None and train_range is not None:
        n = np.asarray(nodes, dtype=np.float64)
        ok &= (n >= train_range[0] - 1e-12) & (n <= train_range[1] + 1e-12)
    if not ok.any():
        raise ArgumentError("K_truth", T.tolist(), "must be finite and nonzero at some node "
                            "(inside train_range)", "measure K_eff on nodes that faces reach")
    return float(np.mean(np.abs(K[ok] - T[ok]) / np.abs(T[ok])))


def plot_effective_diffusivity(curves: Mapping[str, Tuple[Sequence[float], Sequence[float]]],
                               train_range: Optional[Tuple[float, float]] = None,
                               ood_range: Optional[Tuple[float, float]] = None,
                               path: Any = None, overwrite: bool = False, ax: Any = None,
                               xlabel: str = "N", ylabel: str = "K_eff"):
    """Draw ``K_eff(N)`` curves ``{label: (nodes, K)}``; the training range shaded, the
    OOD range hatched. Saved atomically to ``path`` (``.png``/``.pdf``/``.svg``,
    :func:`meshclosure.plot.save_figure`) when given. Returns the figure.

    >>> plot_effective_diffusivity({})
    Traceback (most recent call last):
    ...
    meshclosure.errors.ArgumentError: curves={}: must hold at least one (nodes, K) curve; ...
    """
    from .._files import check_folder, refuse_existing
    from ..plot import FORMATS, new_figure, save_figure

    if not curves:
        raise ArgumentError("curves", {}, "must hold at least one (nodes, K) curve",
                            "pass e.g. {'truth': effective_diffusivity(None, data)}")
    if path is not None:                        # checked before drawing
        if Path(path).suffix.lower() not in FORMATS:
            raise ArgumentError("path", str(path), f"must end in {', '.join(FORMATS)} (the "
                                "suffix picks the file format)", "rename it, e.g. keff.png")
        check_folder(path, name="path")
        refuse_existing(path, overwrite, name="path")
    if ax is None:
        fig = new_figure((6.0, 4.0))
        ax = fig.add_subplot(1, 1, 1)
    else:
        fig = ax.figure
    if train_range is not None:
        ax.axvspan(*train_range, color="0.9", label="training range", zorder=0)
    if ood_range is not None:
        ax.axvspan(*ood_range, facecolor="none", edgecolor="0.6", hatch="//",
                   label="out of distribution", zorder=0)
    styles = {"truth": dict(color="k", lw=2.2)}
    for label, (nodes, K) in curves.items():
        ax.plot(np.asarray(nodes), np.asarray(K), marker="o", ms=3,
                label=label, **styles.get(label, {}))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(frameon=False, fontsize="small")
    if path is not None:
        save_figure(fig, path, overwrite=True)
    return fig
