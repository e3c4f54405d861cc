"""Validation metrics: spatial skill, distribution distances, extremes, similarity scores.

Pure functions on arrays or tensors, computed in float64 (numpy), following
the definitions of Ross et al. 2023, "Benchmarking of machine learning ocean
subgrid parameterizations in an idealized model", JAMES,
doi:10.1029/2022MS003258 (code: github.com/m2lines/pyqg_parameterization_benchmarks,
``utils.Parameterization.test_offline`` and ``online_metrics``).

* :func:`skill` — offline skill of a prediction ``p`` of a target ``y`` given
  at ``T`` times and ``n`` points (cells or faces). Per point ``i``, over time::

      R²_i   = 1 − mean_t (p_ti − y_ti)² / mean_t (y_ti − ȳ_i)²
      corr_i = Pearson correlation of p_·i and y_·i over t

  then the weighted mean over points (``w_i``: cell volumes, or face area ×
  centre distance for faces) — the benchmark's ``spatial_skill`` and
  ``spatial_correlation``, area-averaged. Points whose target does not vary in
  time have no ``R²_i`` and are left out of these means (counted in
  :attr:`Skill.n_left_out`). Also the pooled ``R²`` and correlation over every
  element (weights ``w_i`` repeated over time) and
  ``RMSE = sqrt(Σ_i w_i mean_t (p − y)² / Σ_i w_i)``.

  The benchmark's code centres the target on its mean over *all* elements
  (``truth - truth.mean()``) in the per-point denominator; the definition
  above (the issue's "1 − MSE/variance per cell over time") centres on each
  point's own time mean. ``centre="pooled"`` reproduces the benchmark's code.
* :func:`wasserstein` — the 1-D Wasserstein distance ``∫ |F_a − F_b| dx``
  between two (weighted) marginal distributions (``scipy.stats.wasserstein_distance``).
* :func:`percentiles` / :func:`extremes_distance` — weighted percentiles
  (Hazen plotting positions) and the mean absolute difference of the
  99th and 99.9th percentiles.
* :func:`similarity` / :func:`similarity_table` — Ross et al. 2023's score
  ``1 − d(model, truth)/d(no closure, truth)``: 1 like the truth, 0 like no
  closure, negative worse than no closure.
* :func:`spectrum_distance` — RMSE between two spectra over ``0 < k < kmax``
  on linear power, as the benchmark's ``spectral_rmse`` (there ``kmax`` is 2/3
  of the Nyquist wavenumber: :func:`meshclosure.validate.spectra.spectrum_kmax`).

Examples
--------
>>> s = skill([[0.0, 1.0], [2.0, 1.0], [4.0, 4.0]], [[0.0, 1.0], [2.0, 2.0], [4.0, 3.0]])
>>> round(s.r2, 12), round(s.corr, 12), s.n, s.n_left_out     # point 1: R² 0, corr √3/2
(0.5, 0.933012701892, 2, 0)
>>> round(wasserstein([0.0, 1.0, 2.0], [0.5, 1.5, 2.5]), 12)
0.5
>>> similarity(0.25, 1.0)
0.75
>>> skill([[1.0], [1.0]], [[2.0], [2.0]])
Traceback (most recent call last):
...
meshclosure.errors.ArgumentError: target=...: must vary in time at some point (R² divides by the per-point variance); ...
"""
from __future__ import annotations

import math
from typing import Any, Dict, Mapping, NamedTuple, Optional, Sequence, Union

import numpy as np

from ..errors import ArgumentError

__all__ = ["Skill", "skill", "wasserstein", "percentiles", "extremes_distance",
           "similarity", "similarity_table", "spectrum_distance", "weighted_rmse",
           "weighted_corr"]

ArrayLike = Any
#: A per-point variance at or below this fraction of the target's mean square counts as zero.
ZERO_VARIANCE = 1e-24


def _array(name: str, x: ArrayLike, ndim: Optional[int] = None) -> np.ndarray:
    """``x`` as a float64 numpy array (tensors detached), finite, of ``ndim`` dims."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise ArgumentError(name, type(x).__name__, "must be an array of numbers",
                            "pass a numpy array or a torch tensor") from None
    if ndim is not None and a.ndim != ndim:
        raise ArgumentError(name, f"array of shape {a.shape}", f"must have {ndim} dims"
                            + (" (T, n_points)" if ndim == 2 else ""),
                            "stack the times along dim 0 and the points along dim 1"
                            if ndim == 2 else "pass a 1-D array")
    if not np.isfinite(a).all():
        bad = int((~np.isfinite(a)).sum())
        raise ArgumentError(name, f"array with {bad} non-finite values", "must be finite",
                            "drop the samples holding NaN/Inf (e.g. after a blow-up) and say so")
    return a


def _weights(name: str, w: ArrayLike, shape: tuple) -> np.ndarray:
    """Non-negative finite weights broadcast to ``shape`` with a positive sum."""
    a = _array(name, w)
    try:
        a = np.broadcast_to(a, shape) if a.ndim <= len(shape) and a.shape != shape else a
    except ValueError:
        a = None
    if a is None or a.shape != shape:
        raise ArgumentError(name, f"array of shape {np.shape(w)}", f"must broadcast to the "
                            f"values' shape {shape}", "pass one weight per point (e.g. the "
                            "cell volumes) or per value")
    if (a < 0).any() or not a.sum() > 0:
        raise ArgumentError(name, f"weights with min {a.min():.3g} and sum {a.sum():.3g}",
                            "must be >= 0 with a positive sum", "pass cell volumes or face "
                            "areas × distances")
    return a


class Skill(NamedTuple):
    """Offline skill of a prediction (module docstring).

    Attributes
    ----------
    r2, corr : float
        Per-point ``R²`` and Pearson correlation over time, weighted mean over
        the points whose target varies in time.
    r2_pooled, corr_pooled : float
        The same over every element at once (weights repeated over time).
    rmse : float
        ``sqrt`` of the weighted mean squared error (every point).
    n : int
        Points in the per-point means.
    n_left_out : int
        Points left out because their target is constant in time.
    """

    r2: float
    corr: float
    r2_pooled: float
    corr_pooled: float
    rmse: float
    n: int
    n_left_out: int


def skill(pred: ArrayLike, target: ArrayLike, weights: Optional[ArrayLike] = None,
          centre: str = "point") -> Skill:
    """Spatial skill of ``pred`` against ``target`` (module docstring; Ross et al. 2023).

    Parameters
    ----------
    pred, target : array or Tensor, shape (T, n_points)
        Values at ``T >= 2`` times (samples) and ``n_points`` cells or faces.
    weights : array or Tensor, shape (n_points,), optional
        Point weights ``w_i >= 0`` (cell volumes; face area × centre distance);
        default equal.
    centre : {"point", "pooled"}
        Centre the per-point variance on each point's time mean (default: the
        variance over time) or on the mean of every element (the benchmark's code).

    Returns
    -------
    Skill
        ``(r2, corr, r2_pooled, corr_pooled, rmse, n, n_left_out)``. A
        prediction constant in time at a point has correlation 0 there (no
        information about the target's variation); one constant everywhere
        has ``corr_pooled = 0``. No closure (``p = 0``) scores
        ``R²_i = 1 − mean_t y²/Var_t y = −ȳ_i²/Var_t y_i``.

    Raises
    ------
    ArgumentError
        Shapes differ, ``T < 2``, a value is not finite, bad weights, or the
        target is constant in time at every point.

    Examples
    --------
    >>> s = skill([[0.0, 0.0], [0.0, 0.0]], [[1.0, 2.0], [3.0, 2.0]], weights=[3.0, 1.0])
    >>> s.r2, s.corr, s.n, s.n_left_out, round(s.rmse, 12)   # R²_0 = 1 − 5/1
    (-4.0, 0.0, 1, 1, 2.17944947177)
    """
    p, y = _array("pred", pred, 2), _array("target", target, 2)
    if p.shape != y.shape:
        raise ArgumentError("pred", f"array of shape {p.shape}", f"must have the target's "
                            f"shape {y.shape}", "score predictions of the same samples and points")
    T, n = y.shape
    if T < 2:
        raise ArgumentError("target", f"array of shape {y.shape}", "must hold T >= 2 times "
                            "(R² and correlation per point are over time)",
                            "score on a split with at least 2 samples")
    if centre not in ("point", "pooled"):
        raise ArgumentError("centre", centre, "must be 'point' or 'pooled'",
                            "use 'point' (variance over time) or 'pooled' (the benchmark's code)")
    w = np.ones(n) if weights is None else _weights("weights", weights, (n,))
    wt = np.broadcast_to(w, (T, n))
    err = ((p - y) ** 2).mean(0)                                        # (n,)
    ref = y.mean(0) if centre == "point" else (wt * y).sum() / wt.sum()
    var = ((y - ref) ** 2).mean(0)                                      # (n,)
    scale = float((wt * y * y).sum() / wt.sum())
    keep = (var > ZERO_VARIANCE * max(scale, np.finfo(float).tiny)) & (w > 0)
    if not keep.any():
        raise ArgumentError("target", f"array of shape {y.shape}", "must vary in time at some "
                            "point (R² divides by the per-point variance)",
                            "score on more or other samples, or report the RMSE instead")
    wk = w[keep]
    r2_i = 1.0 - err[keep] / var[keep]
    corr_i = weighted_corr(p[:, keep], y[:, keep], np.ones((T, 1)), axis=0, constant=0.0)
    ym = (wt * y).sum() / wt.sum()
    sst = float((wt * (y - ym) ** 2).sum())
    r2_pooled = 1.0 - float((wt * (p - y) ** 2).sum()) / sst
    corr_pooled = float(weighted_corr(p, y, wt, axis=None, constant=0.0))
    return Skill(r2=float((wk * r2_i).sum() / wk.sum()),
                 corr=float((wk * corr_i).sum() / wk.sum()),
                 r2_pooled=r2_pooled, corr_pooled=corr_pooled,
                 rmse=float(weighted_rmse(p.reshape(-1), y.reshape(-1), wt.reshape(-1))),
                 n=int(keep.sum()), n_left_out=int(n - keep.sum()))


def wasserstein(a: ArrayLike, b: ArrayLike, weights_a: Optional[ArrayLike] = None,
                weights_b: Optional[ArrayLike] = None) -> float:
    """1-D Wasserstein distance between the marginal distributions of ``a`` and ``b``.

    ``W₁ = ∫ |F_a(x) − F_b(x)| dx`` with ``F`` the weighted empirical CDFs of
    all values of each array (``scipy.stats.wasserstein_distance``; Ross et
    al. 2023 use it on the last snapshots of the runs, pooled over space).
    Units of the values.

    Parameters
    ----------
    a, b : array or Tensor, any shape each (flattened)
        E.g. ``(T, n_cells)`` snapshots of a model run and of the truth.
    weights_a, weights_b : array, optional
        Broadcast to the shape of ``a`` / ``b`` (cell areas ``(n_cells,)``
        repeat over time); default equal.

    Returns
    -------
    float

    Examples
    --------
    >>> wasserstein([0.0, 1.0], [0.0, 1.0], weights_a=[3.0, 1.0])   # |3/4 − 1/2| on [0, 1)
    0.25
    >>> wasserstein([], [1.0])
    Traceback (most recent call last):
    ...
    meshclosure.errors.ArgumentError: a=...: must hold at least one value; ...
    """
    from scipy.stats import wasserstein_distance

    arrays = []
    for name, x, wname, wx in (("a", a, "weights_a", weights_a), ("b", b, "weights_b", weights_b)):
        v = _array(name, x)
        if v.size == 0:
            raise ArgumentError(name, "empty array", "must hold at least one value",
                                "pass the samples of the run")
        wv = None if wx is None else _weights(wname, wx, v.shape).reshape(-1)
        arrays.append((v.reshape(-1), wv))
    (va, wa), (vb, wb) = arrays
    return float(wasserstein_distance(va, vb, wa, wb))


def percentiles(x: ArrayLike, q: Union[float, Sequence[float]] = (99.0, 99.9),
                weights: Optional[ArrayLike] = None) -> np.ndarray:
    """Weighted percentiles of all values of ``x``.

    Sorted values ``x_(j)`` with weights ``w_(j)`` sit at the plotting
    positions ``P_j = 100 (C_j − w_(j)/2) / C`` (``C_j`` the cumulative
    weight, ``C`` the total; Hazen's positions); the ``q``-th percentile is the
    linear interpolation of ``x`` at ``P = q``, clamped to the extreme values.
    With equal weights this is ``numpy.percentile(x, q, method="hazen")``.

    Parameters
    ----------
    x : array or Tensor, any shape (flattened)
    q : float or sequence of float in [0, 100]
    weights : array, optional
        Broadcast to ``x``'s shape (cell areas repeat over time).

    Returns
    -------
    numpy.ndarray, shape (len(q),) (a 0-d array for a scalar ``q``)

    Examples
    --------
    >>> percentiles([1.0, 2.0, 3.0, 4.0], [50.0, 100.0]).tolist()
    [2.5, 4.0]
    >>> percentiles([1.0, 2.0], 50.0, weights=[3.0, 1.0]).tolist()
    1.25
    >>> percentiles([1.0], 101.0)
    Traceback (most recent call last):
    ...
    meshclosure.errors.ArgumentError: q=101.0: must lie in [0, 100]; ...
    """
    v = _array("x", x)
    if v.size == 0:
        raise ArgumentError("x", "empty array", "must hold at least one value",
                            "pass the samples of the run")
    qs = _array("q", q)
    if ((qs < 0) | (qs > 100)).any():
        raise ArgumentError("q", q, "must lie in [0, 100]", "pass percentages, e.g. (99, 99.9)")
    w = np.ones(v.shape) if weights is None else _weights("weights", weights, v.shape)
    v, w = v.reshape(-1), w.reshape(-1)
    order = np.argsort(v, kind="stable")
    v, w = v[order], w[order]
    keep = w > 0
    v, w = v[keep], w[keep]
    pos = 100.0 * (np.cumsum(w) - 0.5 * w) / w.sum()
    return np.interp(qs, pos, v)


def extremes_distance(a: ArrayLike, b: ArrayLike, q: Sequence[float] = (99.0, 99.9),
                      weights_a: Optional[ArrayLike] = None,
                      weights_b: Optional[ArrayLike] = None) -> float:
    """Mean absolute difference of the ``q``-th percentiles: ``(1/|q|) Σ_q |P_q(a) − P_q(b)|``.

    Add low percentiles (e.g. ``q=(0.1, 1, 99, 99.9)``) for a signed field
    whose both tails matter. Units of the values.

    >>> extremes_distance([0.0, 1.0, 2.0], [1.0, 2.0, 3.0])
    1.0
    """
    pa = np.atleast_1d(percentiles(a, q, weights_a))
    pb = np.atleast_1d(percentiles(b, q, weights_b))
    return float(np.abs(pa - pb).mean())


def _distance(name: str, d: Any, allow_inf: bool = False) -> float:
    if isinstance(d, bool) or not isinstance(d, (int, float, np.floating, np.integer)) \
            or math.isnan(float(d)) or float(d) < 0 \
            or (not allow_inf and not math.isfinite(float(d))):
        raise ArgumentError(name, d, "must be a " + ("" if allow_inf else "finite ")
                            + "distance >= 0" + (" (inf: the run blew up)" if allow_inf else ""),
                            "leave out metrics that could not be computed; give a run that "
                            "blew up inside the window the distance inf")
    return float(d)


def similarity(d_model: float, d_none: float) -> float:
    """Ross et al. 2023's similarity score ``1 − d_model / d_none``.

    ``d_model = d(model, truth)``, ``d_none = d(no closure, truth)`` of one
    metric: 1 means like the truth, 0 like no closure, negative worse than no
    closure (``diagnostic_similarities`` of the benchmark). A run that blew up
    inside the window has ``d_model = inf`` and scores ``-inf``.

    Rule for ``d_none == 0`` or ``inf``: the metric cannot rank closures (no
    closure already matches the truth, or itself blew up); the score is
    undefined and an :class:`ArgumentError` is raised. :func:`similarity_table`,
    the rule every stage uses, skips such metrics and names them.

    >>> similarity(2.0, 1.0), similarity(math.inf, 1.0)
    (-1.0, -inf)
    >>> similarity(0.0, 0.0)
    Traceback (most recent call last):
    ...
    meshclosure.errors.ArgumentError: d_none=0.0: must be > 0 and finite (no closure already ...
    """
    dm = _distance("d_model", d_model, allow_inf=True)
    dn = _distance("d_none", d_none, allow_inf=True)
    if dn == 0 or dn == math.inf:
        raise ArgumentError("d_none", dn, "must be > 0 and finite (no closure already matches "
                            "the truth on this metric, or blew up, so it cannot rank closures)",
                            "leave this metric out of the similarity scores and say so "
                            "(similarity_table does)")
    return -math.inf if dm == math.inf else 1.0 - dm / dn


_TABLE_KEYS = ("skipped", "notes")


def similarity_table(distances: Mapping[str, Mapping[str, float]], reference: str = "none"
                     ) -> Dict[str, Any]:
    """Similarity scores of every closure and metric, and their mean per closure: THE
    similarity rule of every validation stage.

    The rule: ``1 − d / d_ref`` (:func:`similarity`); a distance ``inf`` (a run
    that blew up inside the window) scores ``-inf``; a metric whose reference
    distance is 0 or ``inf`` cannot rank closures and is left out of every row
    and named; a row with no metric left has mean NaN and a note saying why.

    Parameters
    ----------
    distances : {closure: {metric: d(closure, truth)}}
        Must hold ``reference`` (no closure) with every metric of the other rows;
        distances ``>= 0``, ``inf`` for a run that blew up. Nested metric names
        (``"q.wasserstein"``) are fine.
    reference : str
        The row that scores 0 (no closure).

    Returns
    -------
    dict
        ``{closure: {metric: score, ..., "mean": mean over its metrics}}`` for
        every closure (the reference row is all 0); ``"skipped": {metric:
        reason}`` (present only when some metric was left out) and ``"notes":
        {closure: note}`` (present only when some row's mean is NaN).

    Examples
    --------
    >>> t = similarity_table({"none": {"w": 2.0, "s": 1.0, "m": 0.0},
    ...                       "learned": {"w": 1.0, "s": 1.5, "m": 0.0},
    ...                       "unstable": {"w": math.inf, "s": math.inf, "m": math.inf}})
    >>> t["learned"], t["none"]["mean"], t["unstable"]["mean"], sorted(t["skipped"])
    ({'w': 0.5, 's': -0.5, 'mean': 0.0}, 0.0, -inf, ['m'])
    >>> t = similarity_table({"none": {"m": 0.0}, "learned": {"m": 1.0}})
    >>> t["learned"], t["notes"]["learned"][:32]
    ({'mean': nan}, 'no similarity: every metric (m) ')
    >>> similarity_table({"learned": {"w": 1.0}})
    Traceback (most recent call last):
    ...
    meshclosure.errors.ArgumentError: reference='none': must be a row of distances (the no-closure run); ...
    """
    if reference not in distances:
        raise ArgumentError("reference", reference, "must be a row of distances (the "
                            "no-closure run)", f"add the no-closure row; rows: {sorted(distances)}")
    clash = sorted(set(distances) & set(_TABLE_KEYS))
    if clash:
        raise ArgumentError("distances", f"rows {sorted(distances)}", f"must not name a row "
                            f"{clash[0]!r} (a key of the table)", "rename the closure")
    ref = distances[reference]
    out: Dict[str, Any] = {}
    skipped: Dict[str, str] = {}
    notes: Dict[str, str] = {}
    for metric, d in ref.items():
        d = _distance(f"distances[{reference!r}][{metric!r}]", d, allow_inf=True)
        if d == 0:
            skipped[metric] = (f"d({reference}, truth) = 0: {reference} already matches the "
                               "truth, so the metric cannot rank closures")
        elif d == math.inf:
            skipped[metric] = (f"d({reference}, truth) = inf: {reference} blew up, so the "
                               "metric has no scale to rank closures by")
    for name, row in distances.items():
        missing = sorted(set(row) - set(ref))
        if missing:
            raise ArgumentError("distances", f"row {name!r} with metrics {missing}",
                                f"must use only the metrics of the {reference!r} row",
                                f"compute those metrics for {reference!r} too")
        scores = {m: similarity(_distance(f"distances[{name!r}][{m!r}]", d, allow_inf=True),
                                ref[m])
                  for m, d in row.items() if m not in skipped}
        if scores:
            scores["mean"] = float(np.mean(list(scores.values())))
        else:
            scores["mean"] = float("nan")
            notes[name] = (f"no similarity: every metric ({', '.join(row) or 'none given'}) "
                           f"was skipped ({reference}'s distance is 0 or inf there)")
        out[name] = scores
    if skipped:
        out["skipped"] = skipped
    if notes:
        out["notes"] = notes
    return out


def weighted_rmse(a: Any, b: Any, weights: Any) -> Any:
    """Weighted RMSE over the last dim, ``sqrt(Σ_i w_i (a_i − b_i)² / Σ_i w_i)``:
    ``(..., n) -> (...)`` (tensors stay tensors; NaN where a value is NaN).

    >>> import torch
    >>> weighted_rmse(torch.tensor([[1.0, 3.0]]), torch.zeros(1, 2), torch.tensor([3.0, 1.0]))
    tensor([1.7321])
    """
    return (((a - b) ** 2 * weights).sum(-1) / weights.sum()) ** 0.5


def weighted_corr(a: Any, b: Any, weights: Any, axis: Optional[int] = -1,
                  constant: float = float("nan")) -> Any:
    """Weighted Pearson correlation along ``axis`` (``None``: over every element):
    ``(..., n) -> (...)`` for the default last dim (tensors stay tensors). ``weights``
    broadcast to ``a``. Where ``a`` is constant (its weighted variance at most
    :data:`ZERO_VARIANCE` of its mean square) the value is ``constant`` (NaN by
    default; :func:`skill` uses 0: a constant prediction carries no information).

    >>> import torch
    >>> weighted_corr(torch.tensor([1.0, 2.0, 4.0]), torch.tensor([2.0, 4.0, 8.0]),
    ...               torch.ones(3))
    tensor(1.)
    >>> weighted_corr(np.ones(3), np.arange(3.0), np.ones(3), constant=0.0)
    0.0
    """
    if hasattr(a, "detach"):
        import torch

        where = torch.where
    else:
        where = np.where
    kw = {} if axis is None else {"axis": axis, "keepdims": True}
    W = (weights * (a * 0 + 1)).sum(**kw)
    da = a - (weights * a).sum(**kw) / W
    db = b - (weights * b).sum(**kw) / W
    red = {} if axis is None else {"axis": axis}
    cov = (weights * da * db).sum(**red)
    va, vb = (weights * da * da).sum(**red), (weights * db * db).sum(**red)
    flat = va <= ZERO_VARIANCE * (weights * a * a).sum(**red) + np.finfo(float).tiny
    with np.errstate(invalid="ignore", divide="ignore"):
        r = cov / (va * vb) ** 0.5
    out = where(flat, constant, r)
    return float(out) if isinstance(out, np.ndarray) and out.ndim == 0 else out


def spectrum_distance(k: ArrayLike, P_a: ArrayLike, P_b: ArrayLike,
                      kmax: Optional[float] = None, log: bool = False) -> float:
    """RMSE between two spectra over the wavenumbers ``0 < k < kmax``.

    ``sqrt(mean_{0<k<kmax} (P_a(k) − P_b(k))²)`` on linear power, as the
    benchmark's ``spectral_rmse`` (Ross et al. 2023, with ``kmax`` 2/3 of the
    Nyquist wavenumber of the coarser model; ``k = 0``, the domain mean, is no
    scale and is left out). ``log=True`` compares ``log10 P`` instead (all
    power must then be positive), which weighs every decade equally.

    Parameters
    ----------
    k : array, shape (n_k,)
        Wavenumbers (or degrees), e.g. from :func:`~meshclosure.validate.spectra.power_spectrum`.
    P_a, P_b : array, shape (n_k,)
        Power on ``k`` (time-mean over a run).
    kmax : float, optional
        Upper bound (exclusive). ``None``: 2/3 of the largest ``k`` — on spheres
        2/3 of the spectrum's ``lmax``; on planes, whose largest bin is the
        corner ``√2 ×`` Nyquist, pass
        :func:`~meshclosure.validate.spectra.spectrum_kmax` (2/3 of Nyquist,
        the benchmark's bound) instead.
    log : bool

    Returns
    -------
    float
        Units of the power (``log=False``) or decades (``log=True``).

    Examples
    --------
    >>> spectrum_distance([0, 1, 2, 3], [9.0, 1.0, 1.0, 5.0], [0.0, 0.0, 2.0, 0.0], kmax=3)
    1.0
    >>> spectrum_distance([0, 1], [1.0, 1.0], [1.0, 1.0], kmax=1)
    Traceback (most recent call last):
    ...
    meshclosure.errors.ArgumentError: kmax=1: must leave at least one wavenumber with 0 < k < kmax; ...
    """
    kk = _array("k", k, 1)
    a, b = _array("P_a", P_a, 1), _array("P_b", P_b, 1)
    if a.shape != kk.shape or b.shape != kk.shape:
        raise ArgumentError("P_a" if a.shape != kk.shape else "P_b",
                            f"array of shape {(a if a.shape != kk.shape else b).shape}",
                            f"must have one value per wavenumber ({kk.size})",
                            "pass both spectra on the same wavenumbers k")
    if kmax is None:
        kmax = 2.0 / 3.0 * float(kk.max()) if kk.size else 0.0
    if isinstance(kmax, bool) or not isinstance(kmax, (int, float, np.integer, np.floating)):
        raise ArgumentError("kmax", kmax, "must be a number or None",
                            "pass e.g. spectrum_kmax(mesh)")
    sel = (kk > 0) & (kk < kmax)
    if not sel.any():
        raise ArgumentError("kmax", kmax, "must leave at least one wavenumber with 0 < k < kmax",
                            f"pass a kmax above {kk[kk > 0].min() if (kk > 0).any() else 0:g}")
    a, b = a[sel], b[sel]
    if log:
        if (a <= 0).any() or (b <= 0).any():
            raise ArgumentError("log", True, "needs positive power at every 0 < k < kmax",
                                "compare linear power ({log}=False) or lower kmax")
        a, b = np.log10(a), np.log10(b)
    return float(np.sqrt(np.mean((a - b) ** 2)))
