"""Emergent statistics of online runs against the coarse-grained truth (helpers of
:mod:`meshclosure.validate.online`).

Every statistic compares model states with truth states at the SAME times (a
member's state ``j`` steps after its start against the truth ``j`` steps after
that start), pooled over the members: so the truth's statistics are over
exactly the times the model's are. Per variable, each a distance ``d``:

* ``mean_rmse``: area-weighted RMSE between the time-mean maps,
  ``√(Σ_i V_i (x̄_i − ȳ_i)² / Σ_i V_i)``;
* ``variance_rmse``: the same between the time-variance maps (divisor ``P``);
* ``spectrum``: :func:`~meshclosure.validate.metrics.spectrum_distance` between the
  time-mean power spectra (:func:`~meshclosure.validate.spectra.power_spectrum`;
  planes and spheres only) up to ``kmax``;
* ``wasserstein``: 1-D Wasserstein distance between the marginal distributions of
  the values, each value weighted by its cell's volume;
* ``p99``, ``p99.9``: ``|Δ|`` of the area-weighted 99th and 99.9th percentiles.

The similarity score of a closure is ``1 − d(model, truth) / d(none, truth)``
per metric (Ross et al. 2023, doi:10.1029/2022MS003258), 1 like the truth, 0 like
no closure, negative worse: :func:`~meshclosure.validate.metrics.similarity_table`,
the rule of every stage.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from ..errors import ArgumentError

__all__ = ["METRICS", "field_statistics", "distances", "subsample",
           "error_growth", "spread_skill"]

METRICS = ("mean_rmse", "variance_rmse", "spectrum", "wasserstein", "p99", "p99.9")
"""The distances of the emergent statistics, in the order they are reported."""

MAX_VALUES = 20_000
"""At most this many values per closure and variable are kept for PDFs."""


def field_statistics(mesh: Any, x: Tensor) -> Dict[str, Any]:
    """Maps, spectrum and values of one variable over pooled times.

    Parameters
    ----------
    mesh : Mesh
    x : Tensor, shape (P, n_cells)
        States at the pooled (member, lead) times.

    Returns
    -------
    dict
        ``mean``, ``variance`` (n_cells,) numpy; ``spectrum`` ``(k, P)`` (time mean) or
        ``None`` on meshes without spectra; ``values`` (P·n_cells,) and ``weights``.
    """
    from .spectra import power_spectrum

    x = x.double()
    V = mesh.cell_volume.double()
    out: Dict[str, Any] = {"mean": x.mean(0).numpy(), "variance": x.var(0, unbiased=False).numpy()}
    try:
        k, P = power_spectrum(mesh, x)
        P = np.asarray(P, dtype=np.float64).reshape(x.shape[0], -1).mean(0)
        out["spectrum"] = (np.asarray(k, dtype=np.float64), P)
    except ArgumentError as err:
        out["spectrum"] = None
        out["spectrum_note"] = str(err)
    out["values"] = x.reshape(-1).numpy()
    out["weights"] = V.expand(x.shape[0], -1).reshape(-1).numpy()
    return out


def distances(model: Mapping[str, Any], truth: Mapping[str, Any], V: Tensor,
              kmax: Optional[float]) -> Dict[str, float]:
    """The distances of :data:`METRICS` between two :func:`field_statistics` results
    (``spectrum`` left out when the mesh has none)."""
    from .metrics import extremes_distance, spectrum_distance, wasserstein, weighted_rmse

    V = V.double()
    d: Dict[str, float] = {
        key: float(weighted_rmse(torch.as_tensor(model[key]), torch.as_tensor(truth[key]), V))
        for key in ("mean", "variance")}
    d = {"mean_rmse": d["mean"], "variance_rmse": d["variance"]}
    if model.get("spectrum") is not None and truth.get("spectrum") is not None:
        k, Pm = model["spectrum"]
        _, Pt = truth["spectrum"]
        d["spectrum"] = float(spectrum_distance(k, Pm, Pt, kmax))
    d["wasserstein"] = float(wasserstein(model["values"], truth["values"],
                                         model["weights"], truth["weights"]))
    for key, q in (("p99", 99.0), ("p99.9", 99.9)):
        d[key] = extremes_distance(model["values"], truth["values"], (q,),
                                   model["weights"], truth["weights"])
    return d


def subsample(values: np.ndarray, weights: np.ndarray, n: int = MAX_VALUES,
              seed: int = 0) -> np.ndarray:
    """At most ``n`` of ``values``, drawn without replacement with probability
    proportional to ``weights`` (the cell volumes: an area-weighted sample), seeded."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if values.size <= n:
        return values.copy()
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    rng = np.random.default_rng(seed)
    idx = rng.choice(values.size, size=n, replace=False, p=w / w.sum())
    return values[np.sort(idx)]


def error_growth(V: Tensor, runs: List[Tensor], truths: List[Tensor], dt: float
                 ) -> Tuple[np.ndarray, np.ndarray]:
    """Area-weighted RMSE against lead time, pooled over the runs alive at each lead.

    Parameters
    ----------
    V : Tensor, shape (n_cells,)
    runs, truths : list of Tensor, shape (L_r + 1, n_cells)
        Each run's states from lead 0 and the truth at the same times.
    dt : float
        Coarse step.

    Returns
    -------
    (lead_time (L + 1,), rmse (L + 1,))
        ``L`` the longest run; lead 0 has RMSE 0.

    >>> V = torch.ones(2, dtype=torch.float64)
    >>> x = torch.tensor([[0.0, 0.0], [1.0, 3.0]], dtype=torch.float64)   # RMSE √5 at lead 1
    >>> y = torch.zeros(2, 2, dtype=torch.float64)                     # the truth: 0
    >>> lead, rmse = error_growth(V, [x, x[:1]], [y, y[:1]], dt=0.5)   # one run ends at 0
    >>> lead.tolist(), [round(float(r) ** 2, 12) for r in rmse]
    ([0.0, 0.5], [0.0, 5.0])
    """
    L = max((len(r) for r in runs), default=1) - 1
    V = V.double()
    sse, count = np.zeros(L + 1), np.zeros(L + 1)
    for x, y in zip(runs, truths):
        n = len(x)
        err = ((V * (x.double() - y.double()) ** 2).sum(1) / V.sum()).numpy()
        sse[:n] += err
        count[:n] += 1
    rmse = np.sqrt(sse / np.maximum(count, 1))
    return dt * np.arange(L + 1, dtype=np.float64), rmse


def spread_skill(V: Tensor, ensembles: List[Tensor], truths: List[Tensor], dt: float
                 ) -> Tuple[np.ndarray, np.ndarray]:
    """Spread–skill ratio (WeatherBench 2, with the ``√((M+1)/M)`` correction) against
    lead time, area-weighted, pooled over initial states.

    Parameters
    ----------
    V : Tensor, shape (n_cells,)
    ensembles : list of Tensor, shape (M, L_i + 1, n_cells)
        Per initial state the ensemble members' states from lead 0 (members that blew
        up are left out by the caller).
    truths : list of Tensor, shape (L_i + 1, n_cells)
    dt : float

    Returns
    -------
    (lead_time (L,), ratio (L,))
        From lead 1 (at lead 0 spread and skill are both 0).
    """
    from ..train.uncertainty import spread_skill_ratio

    L = max((e.shape[1] for e in ensembles), default=1) - 1
    w = (V.double() / V.double().sum()).sqrt()
    ratio = np.full(L, np.nan)
    for j in range(1, L + 1):
        pred = [e[:, j] * w for e in ensembles if e.shape[1] > j]
        target = [y[j] * w for e, y in zip(ensembles, truths) if e.shape[1] > j]
        if not pred:
            continue
        try:
            ratio[j - 1] = spread_skill_ratio(torch.cat(pred, 1), torch.cat(target))
        except ArgumentError:            # skill exactly 0: the ratio is undefined
            ratio[j - 1] = math.inf
    return dt * np.arange(1, L + 1, dtype=np.float64), ratio
