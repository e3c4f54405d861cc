"""Calibration: every physics baseline that applies to a dataset, fitted on its training split.

:func:`calibrate` reads the physical (un-normalised) subgrid face fluxes of a
dataset (:class:`~meshclosure.data.SubgridDataset` with ``normalize=False``),
fits on the training split, per scenario,

============  ===========  ==================================================
scenario      variable     baselines (``name: law``, ``N`` at the faces)
============  ===========  ==================================================
kinematic     q            constant ``K``; power_law ``α N^β``, ``N`` = input N
barotropic    zeta         constant; smagorinsky ``(c_S Δ)² |S|``; leith
                           ``(c_L Δ)³ |∇ζ|``
barotropic    q            constant; power_law ``α |S|^β``
convection    b            constant; convective ``K₀`` (``N² ≤ 0``), ``α N^β``
other         every var    constant
============  ===========  ==================================================

(with ``G = −(Q_b − Q_a) A_f / d_f``, :mod:`~meshclosure.train.baselines`,
:mod:`~meshclosure.train.eddy_viscosity`), and reports for each baseline, and
for ``none`` (no closure), the coefficients with 95 % intervals, the fitted
range of ``N``, the flux MSE and pooled ``R² = 1 − MSE / Var(Φ)`` on every
split present (train, val, test, ood), and the effective diffusivity
``K_eff(N)`` (:func:`~meshclosure.train.baselines.binned_diffusivity`, nodes
spanning the training range) of the truth and of each baseline, with the
mean relative error :func:`~meshclosure.train.diffusivity.keff_error`.

The result is a JSON-ready dict: :func:`save_calibration` writes it
atomically; :func:`baseline_closures` rebuilds runnable closures from it.

Examples
--------
>>> calibrate("missing.nc")
Traceback (most recent call last):
...
meshclosure.data.dataset.DatasetError: dataset 'missing.nc' does not exist or is not a file ...
"""
from __future__ import annotations

import json
import logging
import math
from typing import Any, Dict, Mapping, Optional

import numpy as np
import torch
from torch import Tensor

from .._files import atomic_path, refuse_existing
from ..closures import Closure
from ..errors import ArgumentError
from ..mesh import Mesh
from .baselines import (ConvectiveClosure, DiffusivityClosure, binned_diffusivity,
                        describe_range, face_gradient, face_mean, fit_constant, fit_convective,
                        fit_power_law)
from .diffusivity import SampleTable, keff_error, load_table, measure_function, primary_measure
from .eddy_viscosity import EddyViscosityClosure, fit_eddy_viscosity, viscosity_shape

__all__ = ["BASELINES", "calibrate", "save_calibration", "load_calibration",
           "baseline_closures", "summary"]

FORMAT = "meshclosure-calibration-1"

log = logging.getLogger("meshclosure.train.calibrate")

#: ``{scenario: {variable: {baseline: (kind, measure)}}}``; other scenarios: a constant K.
BASELINES = {
    "kinematic": {"q": {"constant": ("constant", None), "power_law": ("power_law", "input:N")}},
    "barotropic": {"zeta": {"constant": ("constant", None),
                            "smagorinsky": ("smagorinsky", "strain_rate"),
                            "leith": ("leith", "vorticity_gradient")},
                   "q": {"constant": ("constant", None),
                         "power_law": ("power_law", "strain_rate")}},
    "convection": {"b": {"constant": ("constant", None),
                         "convective": ("convective", "input:N2")}},
}


def _plan(scenario: str, variables) -> Dict[str, Dict[str, tuple]]:
    table = BASELINES.get(scenario, {})
    return {v: table.get(v, {"constant": ("constant", None)}) for v in variables}


def _faces(mesh: Mesh, cells: Tensor) -> Tensor:
    """Face means of a ``(S, n_cells)`` field: ``(S, n_faces)``."""
    return face_mean(mesh, cells.T).T


def _grad(mesh: Mesh, Q: Tensor) -> Tensor:
    return face_gradient(mesh, Q.T).T


_UP = ("the flux of {var} is not down-gradient on average (unconstrained least squares "
       "gives K = {K:.3g} < 0): {what}")


def _fit(kind: str, var: str, measure: Optional[str], table: SampleTable) -> dict:
    """One law fitted to the table's faces: a JSON-ready spec (``warning``: why a fit
    says little, when it does)."""
    mesh = table.mesh
    G, flux = _grad(mesh, table.state[var]), table.flux[var]
    spec: Dict[str, Any] = {"kind": kind, "measure": measure}
    free = fit_constant(G, flux).K
    up = _UP.format(var=var, K=free, what="{what}")
    if kind == "constant":
        f = fit_constant(G, flux, nonnegative=True)
        spec.update(K=f.K, K_se=f.se, K_interval=list(f.interval), n=f.n, rmse=f.rmse)
    elif kind == "power_law":
        N = _faces(mesh, table.measure(measure))
        f = fit_power_law(N, G, flux)
        spec.update(alpha=f.alpha, beta=f.beta, alpha_interval=list(f.alpha_interval),
                    beta_interval=list(f.beta_interval), n=f.n, rmse=f.rmse,
                    cov_log_alpha_beta=f.cov_log_alpha_beta, N_range=describe_range(N))
    elif kind == "convective":
        f = fit_convective(_faces(mesh, table.measure(measure)), G, flux)
        law = f.power_law
        spec.update(K0=f.K0, K0_se=f.K0_se, K0_interval=list(f.K0_interval),
                    n_convective=f.n_convective, alpha=law.alpha, beta=law.beta,
                    alpha_interval=list(law.alpha_interval),
                    beta_interval=list(law.beta_interval), n=f.n_convective + law.n,
                    N2_range=f.N2_range, N_range=f.N_range)
    else:
        shape = torch.stack([viscosity_shape(mesh, kind, z) for z in table.state["zeta"]])
        M = _faces(mesh, table.measure(measure))
        f = fit_eddy_viscosity(kind, shape, G, flux, measure=M)
        spec.update(c=f.c, c_interval=list(f.c_interval), theta=f.theta, theta_se=f.theta_se,
                    n=f.n, rmse=f.rmse, N_range=f.measure_range)
    clipped = {"constant": free <= 0, "power_law": free <= 0,
               "convective": spec.get("K0") == 0.0}.get(kind, spec.get("c") == 0.0)
    if clipped:
        spec["warning"] = up.format(what={
            "power_law": "alpha -> 0 and beta is not identified; never extrapolate it",
            "convective": "K0 clipped to 0"}.get(kind, "clipped to 0 (no closure)"))
    elif kind in ("power_law", "convective") and (
            spec["beta_interval"][1] - spec["beta_interval"][0] > 10):
        spec["warning"] = (f"beta of {var} is poorly determined (95 % interval "
                           f"[{spec['beta_interval'][0]:.3g}, {spec['beta_interval'][1]:.3g}]):"
                           " the fitted range of N is too narrow; do not extrapolate")
    return spec


def _predict(var: str, spec: Mapping[str, Any], table: SampleTable) -> Tensor:
    """The law's face flux ``(S, n_faces)`` at the table's states (the same formulas as the
    closures of :func:`baseline_closures`)."""
    mesh, kind = table.mesh, spec["kind"]
    G = _grad(mesh, table.state[var])
    if kind == "constant":
        return spec["K"] * G
    if kind == "power_law":
        return spec["alpha"] * _faces(mesh, table.measure(spec["measure"])) ** spec["beta"] * G
    if kind == "convective":
        N2 = _faces(mesh, table.measure(spec["measure"]))
        stable = N2 > 0
        N = torch.sqrt(torch.where(stable, N2, torch.ones_like(N2)))
        return torch.where(stable, spec["alpha"] * N ** spec["beta"],
                           torch.full_like(N2, spec["K0"])) * G
    p = 2 if kind == "smagorinsky" else 3
    shape = torch.stack([viscosity_shape(mesh, kind, z) for z in table.state["zeta"]])
    return spec["c"] ** p * shape * G


def _errors(pred: Optional[Tensor], flux: Tensor) -> dict:
    f = flux.reshape(-1).double()
    p = torch.zeros_like(f) if pred is None else pred.reshape(-1).double()
    mse = float(((p - f) ** 2).mean())
    var = float(f.var(unbiased=False))
    return {"mse": mse, "r2": 1.0 - mse / var if var > 0 else float("nan"), "n": int(f.numel())}


def calibrate(data: Any, split: str = "train", n_nodes: int = 8,
              max_samples: Optional[int] = None) -> dict:
    """Fit every baseline that applies to ``data``'s scenario on one split; JSON-ready.

    Parameters
    ----------
    data : path, xarray.Dataset or SubgridDataset
        A dataset from :func:`~meshclosure.data.generate`.
    split : str
        The split fitted on (default ``"train"``; the others are evaluated).
    n_nodes : int
        Nodes of the ``K_eff(N)`` curves, spanning the fitted range of ``N``.
    max_samples : int, optional
        Use at most this many samples per split (evenly spaced), for large files.

    Returns
    -------
    dict
        ``format``, ``scenario``, ``scenario_config``, ``variables``, ``split``,
        ``n_samples`` per split, ``warnings`` (fits that say little: a flux
        that is not down-gradient on average, an exponent the data cannot
        determine; also logged), ``baselines``: ``{name: {"closes": {var: spec},
        "errors": {split: {var: {mse, r2, n}}}}}`` (``none`` included), and
        ``keff``: ``{var: {"measure", "nodes", "train_range", split: {"nodes", "truth": K,
        name: K, "error": {name: mean relative error}}}}`` (nodes spanning the
        training range; for ``ood``, spanning the OOD run's range).
    """
    if not (isinstance(n_nodes, int) and n_nodes >= 2):
        raise ArgumentError("n_nodes", n_nodes, "must be a whole number >= 2",
                            "pass e.g. n_nodes=8")
    tables = {split: load_table(data, split, max_samples)}
    if not len(tables[split]):
        raise ArgumentError("split", split, "must hold samples to fit on",
                            "generate more samples or choose another split")
    base = tables[split]
    for other in ("train", "val", "test", "ood"):
        if other != split:
            t = load_table(base.dataset, other, max_samples)
            if len(t):
                tables[other] = t
    scenario = base.config.get("scenario", "?")
    plan = _plan(scenario, base.variables)
    baselines: Dict[str, dict] = {"none": {"closes": {}, "errors": {}}}
    for var, laws in plan.items():
        for name, (kind, measure) in laws.items():
            entry = baselines.setdefault(name, {"closes": {}, "errors": {}})
            entry["closes"][var] = _fit(kind, var, measure, base)
    keff: Dict[str, dict] = {}
    for var in base.variables:
        measure = primary_measure(scenario, var)
        N_train = _faces(base.mesh, base.measure(measure))
        lo, hi = float(N_train.min()), float(N_train.max())
        nodes = np.linspace(lo, hi, n_nodes)
        keff[var] = {"measure": measure, "nodes": nodes.tolist(), "train_range": [lo, hi]}
    for sp, table in tables.items():
        preds = {name: {v: _predict(v, spec, table) for v, spec in b["closes"].items()}
                 for name, b in baselines.items()}
        for name, b in baselines.items():
            b["errors"][sp] = {v: _errors(preds[name].get(v), table.flux[v])
                               for v in table.variables}
        for var, k in keff.items():
            G = _grad(table.mesh, table.state[var])
            N = _faces(table.mesh, table.measure(k["measure"]))
            nodes = (np.linspace(float(N.min()), float(N.max()), n_nodes) if sp == "ood"
                     else np.asarray(k["nodes"]))
            truth = binned_diffusivity(table.flux[var], G, N, nodes)
            out = {"nodes": nodes.tolist(), "truth": truth.tolist(), "error": {}}
            for name in baselines:
                if var in preds[name]:
                    K = binned_diffusivity(preds[name][var], G, N, nodes)
                    out[name] = K.tolist()
                    out["error"][name] = keff_error(K, truth)
            k[sp] = out
    warnings = [f"{name}: {spec['warning']}" for name, b in baselines.items()
                for spec in b["closes"].values() if "warning" in spec]
    for w in warnings:
        log.warning(w)
    return _json_ready({
        "format": FORMAT, "warnings": warnings, "scenario": scenario, "scenario_config": base.config,
        "variables": list(base.variables), "split": split,
        "n_samples": {sp: len(t) for sp, t in tables.items()},
        "baselines": baselines, "keff": keff,
    })


def _json_ready(x: Any) -> Any:
    """Floats that JSON can hold (``NaN``/``Inf`` -> ``None``)."""
    if isinstance(x, dict):
        return {k: _json_ready(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_ready(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def save_calibration(result: Mapping[str, Any], path, overwrite: bool = False) -> str:
    """Write a :func:`calibrate` result as JSON, atomically; returns the path.

    >>> save_calibration({"format": "x"}, "c.json")
    Traceback (most recent call last):
    ...
    meshclosure.errors.ArgumentError: result=...: must be a calibrate() result (format 'meshclosure-calibration-1'); ...
    """
    if not isinstance(result, Mapping) or result.get("format") != FORMAT:
        raise ArgumentError("result", type(result).__name__ if not isinstance(result, Mapping)
                            else f"format {result.get('format')!r}",
                            f"must be a calibrate() result (format {FORMAT!r})",
                            "pass what calibrate() returned")
    path = refuse_existing(path, overwrite, name="path")
    text = json.dumps(_json_ready(dict(result)), indent=1, allow_nan=False)
    with atomic_path(path, ".json") as tmp:
        with open(tmp, "w") as fh:
            fh.write(text + "\n")
    return str(path)


def load_calibration(path) -> dict:
    """Read a calibration JSON written by :func:`save_calibration` (format checked)."""
    with open(path) as fh:
        result = json.load(fh)
    if not isinstance(result, dict) or result.get("format") != FORMAT:
        raise ArgumentError("path", str(path), f"must hold a calibration (format {FORMAT!r})",
                            "write it with `meshclosure calibrate` or save_calibration()")
    return result


def _closure(var: str, spec: Mapping[str, Any], scenario: Any) -> Closure:
    kind = spec["kind"]
    if kind == "constant":
        return DiffusivityClosure(var, K=float(spec["K"]))
    if kind in ("smagorinsky", "leith"):
        return EddyViscosityClosure(kind, float(spec["c"]), var)
    measure = measure_function(spec["measure"], scenario)
    if kind == "power_law":
        return DiffusivityClosure(var, alpha=float(spec["alpha"]), beta=float(spec["beta"]),
                                  measure=measure)
    if kind == "convective":
        return ConvectiveClosure(var, float(spec["K0"]), float(spec["alpha"]),
                                 float(spec["beta"]), measure)
    raise ArgumentError("kind", kind, "must be a baseline kind this version knows",
                        "recalibrate with this version of meshclosure")


def baseline_closures(calibration: Mapping[str, Any], scenario_or_mesh: Any = None
                      ) -> Dict[str, Optional[Closure]]:
    """The calibrated baselines as closures, ``{name: Closure}`` (``"none"``: ``None``).

    Parameters
    ----------
    calibration : dict
        A :func:`calibrate` result or :func:`load_calibration` of its JSON.
    scenario_or_mesh : Scenario or Mesh, optional
        The scenario whose ``resolved_inputs`` give the input measures (``N`` of
        ``kinematic``, ``N²`` of ``convection``); default: rebuilt from the
        calibration's ``scenario_config``. A mesh is enough for baselines whose
        measure comes from the state (constant, Smagorinsky, Leith, the
        barotropic power law). For the out-of-distribution run pass
        ``scenario.ood()``.

    A baseline that closes several variables is the sum of one closure per
    variable; each runs in ``scenario.coarse_model(closure=...)``.

    >>> baseline_closures({"baselines": {}})
    Traceback (most recent call last):
    ...
    meshclosure.errors.ArgumentError: calibration='dict': must be a calibrate() result (format 'meshclosure-calibration-1'); ...
    """
    if not isinstance(calibration, Mapping) or calibration.get("format") != FORMAT:
        raise ArgumentError("calibration", type(calibration).__name__, "must be a calibrate() "
                            f"result (format {FORMAT!r})", "pass calibrate()'s result or "
                            "load_calibration(path)")
    scenario = scenario_or_mesh
    out: Dict[str, Optional[Closure]] = {}
    for name, entry in calibration["baselines"].items():
        parts = []
        for var, spec in entry["closes"].items():
            if (spec.get("measure") or "").startswith("input:") and (
                    scenario is None or isinstance(scenario, Mesh)):
                from ..data.scenarios import Scenario

                scenario = Scenario.from_config(calibration["scenario_config"])
            parts.append(_closure(var, spec, scenario))
        out[name] = None if not parts else (parts[0] if len(parts) == 1
                                             else sum(parts[1:], parts[0]))
    return out


def summary(calibration: Mapping[str, Any], split: str = "val") -> str:
    """A short text table: each baseline's coefficients and its ``split`` MSE and R²."""
    rows = [f"{'baseline':<12} {'var':<5} {'coefficients':<44} {split + ' R2':>9} "
            f"{'K_eff err':>9}"]
    keff = calibration.get("keff", {})
    for name, entry in calibration["baselines"].items():
        errs = entry["errors"].get(split) or entry["errors"].get(calibration["split"], {})
        for var in calibration["variables"]:
            spec = entry["closes"].get(var)
            if spec is None and name != "none":
                continue
            coef = _coefficients(spec)
            r2 = errs.get(var, {}).get("r2")
            ke = keff.get(var, {}).get(split, keff.get(var, {}).get(calibration["split"], {}))
            e = ke.get("error", {}).get(name) if ke else None
            rows.append(f"{name:<12} {var:<5} {coef:<44} "
                        f"{'nan' if r2 is None else format(r2, '.4f'):>9} "
                        f"{'-' if e is None else format(e, '.3f'):>9}")
    return "\n".join(rows)


def _coefficients(spec: Optional[Mapping[str, Any]]) -> str:
    if spec is None:
        return "-"
    k = spec["kind"]
    if k == "constant":
        return f"K={spec['K']:.4g} [{spec['K_interval'][0]:.3g}, {spec['K_interval'][1]:.3g}]"
    if k == "power_law":
        return f"alpha={spec['alpha']:.4g} beta={spec['beta']:.3f}"
    if k == "convective":
        return f"K0={spec['K0']:.4g} alpha={spec['alpha']:.4g} beta={spec['beta']:.3f}"
    return f"c={spec['c']:.4g} [{spec['c_interval'][0]:.3g}, {spec['c_interval'][1]:.3g}]"
