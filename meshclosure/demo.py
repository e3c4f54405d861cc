"""``meshclosure demo``: the end-to-end job on a small embedded default.

:func:`run_demo` runs the whole chain the toolkit exists for, on the
``kinematic`` scenario (a tracer stirred by a prescribed flow whose small-scale
eddy diffusivity follows ``K(N)``; Cartesian 32² coarse-grained to 8², the
configuration in :data:`DEMO`): it generates a trajectory truth dataset
(with an out-of-distribution run), calibrates the physics baselines, trains a
small conservative closure (``mgn``), validates it offline, partially coupled
(for ``kinematic`` the flow is prescribed, so that stage and the online run
coincide) and online from three truth initial states with a budget audit
every step, writes the report folder and prints the summary table and where the
report is. ``quick=True`` (``meshclosure demo --quick``, what CI runs) is the same
chain at a size that takes about a minute.

:func:`run_tour` (``meshclosure demo --tour``) is the earlier tour of the parts:
every mesh family at a small size, validated and coarsened (one line, a PNG
and a ``.vtu`` per mesh); Williamson et al. (1992) test 1 on icosahedral
triangles (level 4, 5,120 cells: l2 ≈ 0.25 tilted, as the reference prototype)
with the limited and unlimited second-order and the upwind schemes; a small
truth dataset with the identity ``s^sgs = −div_coarse(Φ^sgs)`` checked and
drawn; the calibrated baselines, a small trained closure, ``K_eff(N)`` and the
closure run inside the coarse model.

The demo owns its output folder: every run replaces the files an earlier run
wrote there (and nothing else).
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .mesh import Coarsening, Mesh, agglomerate, cartesian, from_meshio, healpix, icosahedral

__all__ = ["run_demo", "run_tour", "run_test1", "run_truth_data", "run_training",
           "annulus_meshio", "demo_field", "DEMO", "QUICK"]


def annulus_meshio(n_radial: int = 6, n_theta: int = 48, r_in: float = 0.4, r_out: float = 1.0):
    """A planar triangle mesh of an annulus (a domain with a hole) as a ``meshio.Mesh``,
    standing in for a user's own mesh file."""
    import meshio

    r = np.linspace(r_in, r_out, n_radial + 1)
    theta = np.linspace(0, 2 * np.pi, n_theta, endpoint=False)
    rr, tt = np.meshgrid(r, theta, indexing="ij")
    points = np.stack([rr * np.cos(tt), rr * np.sin(tt), np.zeros_like(rr)], -1).reshape(-1, 3)
    i, j = np.meshgrid(np.arange(n_radial), np.arange(n_theta), indexing="ij")
    j1 = (j + 1) % n_theta
    v00, v01 = i * n_theta + j, i * n_theta + j1
    v10, v11 = (i + 1) * n_theta + j, (i + 1) * n_theta + j1
    tri = np.concatenate([np.stack([v00, v01, v11], -1).reshape(-1, 3),
                          np.stack([v00, v11, v10], -1).reshape(-1, 3)])
    return meshio.Mesh(points, [("triangle", tri)])


#: The lon/lat window (degrees) the test-1 figures show: the bell starts and ends
#: at (270°E, 0°) with radius R/3 (19°); upwind smears it over about twice that.
BELL_REGION = (-170.0, -10.0, -50.0, 50.0)

#: The name the figures give :func:`demo_field`.
PATTERN = "test pattern"


def demo_field(mesh: Mesh) -> torch.Tensor:
    """A smooth test field on any mesh: a low-order spherical harmonic pattern on
    the sphere, a doubly periodic wave on the plane. Shape ``(n_cells,)``."""
    x = mesh.cell_center.double()
    if mesh.is_sphere:
        r = x / x.norm(dim=1, keepdim=True)
        lat, lon = torch.asin(r[:, 2]), torch.atan2(r[:, 1], r[:, 0])
        return torch.cos(lat) ** 2 * torch.cos(2 * lon) + 0.5 * torch.sin(lat)
    lx = mesh.period[0] if mesh.period and mesh.period[0] else float(np.ptp(x[:, 0].numpy())) or 1.0
    ly = mesh.period[1] if mesh.period and mesh.period[1] else float(np.ptp(x[:, 1].numpy())) or 1.0
    return torch.sin(2 * math.pi * x[:, 0] / lx) * torch.cos(2 * math.pi * x[:, 1] / ly)


def _cases() -> list[tuple[str, Callable[[], Mesh], Callable[[Mesh], Coarsening]]]:
    return [
        ("cartesian_32x32", lambda: cartesian(32, 32, 1.0, 1.0), lambda m: Coarsening.native(m, 4)),
        ("healpix_nside16", lambda: healpix(16), lambda m: Coarsening.native(m, 4)),
        ("icosahedral_L4", lambda: icosahedral(4), lambda m: Coarsening.native(m, 4)),
        ("icosahedral_dual_L4", lambda: icosahedral(4, dual=True),
         lambda m: Coarsening(m, agglomerate(m, m.n_cells // 16))),
        ("meshio_annulus", lambda: from_meshio(annulus_meshio()),
         lambda m: Coarsening(m, agglomerate(m, m.n_cells // 8))),
    ]


def _line(name: str, mesh: Mesh, seconds: float) -> str:
    area = float(mesh.cell_volume.sum())
    rel = abs(area / mesh.domain_area() - 1)
    return (f"{name:<34s} cells {mesh.n_cells:>6d}  faces {mesh.n_faces:>6d}  "
            f"boundary {mesh.n_boundary_faces:>4d}  area err {rel:8.1e}  "
            f"Euler {mesh.euler_characteristic():>2d}  ({seconds:.2f} s)")


def run_tour(out: str | Path = "meshclosure_output", plots: bool = True,
             echo: Callable[[str], None] = print, test1_level: int = 4) -> list[dict]:
    """The tour of the parts (``meshclosure demo --tour``); returns one record per
    mesh, test-1 run, dataset and trained closure (name, sizes, errors, files)."""
    from .io import write_vtu
    from .plot import plot

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    echo(f"meshclosure demo --tour: writing to {out.resolve()}")
    records = []
    for name, build, coarsen in _cases():
        for label, make in ((name, build), (f"{name} (coarse)", None)):
            t0 = time.perf_counter()
            if make is not None:
                mesh = make()
                fine = mesh
            else:
                c = coarsen(fine)
                mesh = c.coarse
            mesh.validate()
            field = demo_field(mesh) if make is not None else c.restrict(demo_field(fine))
            stem = label.replace(" (coarse)", "_coarse")
            vtu = out / f"{stem}.vtu"
            write_vtu(mesh, {"field": field}, vtu, overwrite=True)
            png = None
            if plots:                                  # the demo owns its folder: overwrite
                png = out / f"{stem}.png"
                plot(mesh, field, path=png, overwrite=True, label=PATTERN, units="nondimensional",
                     title=f"{label}: {mesh.n_cells} cells")
            echo(_line(label, mesh, time.perf_counter() - t0))
            records.append({"name": label, "n_cells": mesh.n_cells, "n_faces": mesh.n_faces,
                            "area_error": abs(float(mesh.cell_volume.sum()) / mesh.domain_area() - 1),
                            "euler": mesh.euler_characteristic(), "vtu": vtu, "png": png})
    records += run_test1(out, level=test1_level, plots=plots, echo=echo)
    truth = run_truth_data(out, plots=plots, echo=echo)
    records += truth
    records += run_training(out, truth[0]["dataset"], plots=plots, echo=echo)
    echo(f"done: {len(records)} results, figures and .vtu files in {out.resolve()}")
    return records


def run_test1(out: Path, level: int = 4, plots: bool = True,
              echo: Callable[[str], None] = print) -> list[dict]:
    """Williamson test 1 (α = 0 and π/2 − 0.05) on icosahedral triangles of ``level``."""
    from .io import write_vtu
    from .plot import plot_comparison
    from .solver.flows import williamson_test1

    mesh = icosahedral(level)
    records = []
    for alpha, alpha_name in ((0.0, "0"), (math.pi / 2 - 0.05, "pi/2-0.05")):
        for scheme in ("limited", "linear", "quadratic", "upwind"):
            t0 = time.perf_counter()
            r = williamson_test1(mesh, alpha=alpha, scheme=scheme)
            name = f"test1 alpha={alpha_name} {scheme}"
            echo(f"{name:<34s} cells {mesh.n_cells:>6d}  steps {r['n_steps']:>5d}  "
                 f"l1 {r['l1']:.3f}  l2 {r['l2']:.3f}  linf {r['linf']:.3f}  "
                 f"min {r['min']:8.2f}  max {r['max']:7.1f}  ({time.perf_counter() - t0:.1f} s)")
            stem = f"test1_alpha{0 if alpha == 0 else 1}_{scheme}"
            fields = {"h": r["h"], "h_exact": r["h_exact"], "error": r["h"] - r["h_exact"]}
            write_vtu(mesh, fields, out / f"{stem}.vtu", overwrite=True)
            png = None
            if plots:
                png = out / f"{stem}.png"
                tilt = alpha_name.replace("pi", "π").replace("-", " − ")
                title = (f"Williamson test 1, α = {tilt}, {scheme} "
                         f"scheme, {mesh.n_cells} cells: l1 {r['l1']:.3f}, l2 {r['l2']:.3f}, "
                         f"l∞ {r['linf']:.3f}")
                plot_comparison(mesh, r["h"], r["h_exact"], label="h", units="m",
                                names=("final: one revolution, 12 days", "exact"),
                                error_title="error: final − exact", region=BELL_REGION,
                                title=title, path=png, overwrite=True)
            records.append({"name": name, "n_cells": mesh.n_cells, "l1": r["l1"],
                            "l2": r["l2"], "linf": r["linf"], "min": r["min"], "max": r["max"],
                            "vtu": out / f"{stem}.vtu", "png": png})
    return records


def run_truth_data(out: Path, plots: bool = True, echo: Callable[[str], None] = print,
                   mesh: str = "cartesian:32", n_samples: int = 16) -> list[dict]:
    """Generate a small ``kinematic`` dataset on ``mesh`` (factor 4), read it back,
    check the subgrid identity and plot fine field, coarse field and subgrid flux."""
    from .data import check_identity, generate, get_scenario, read_dataset, subgrid_targets
    from .plot import face_flux_density, new_figure, plot, save_figure, subplot

    t0 = time.perf_counter()
    scenario = get_scenario("kinematic", mesh, factor=4, seed=0, spinup_time=1.0)
    path = generate(scenario, Path(out) / "truth_kinematic.nc", n_samples=n_samples,
                    overwrite=True, progress=False, echo=None)
    ds = read_dataset(path)
    n_time = ds.sizes["time"]
    # the dataset keeps the coarse side; redo one snapshot to show the fine field too
    t, state = scenario.spin_up(scenario.initial_state())
    sample = subgrid_targets(scenario, scenario.coarsening, t, state,
                             scenario.transport(t, state))
    defect = check_identity(sample, scenario.coarse)
    flux = sample.flux["q"]
    resolved = scenario.coarsening.restrict_flux(
        scenario.resolved_fluxes(scenario.fine, t, state, scenario.transport(t, state))["q"])
    ratio = float(flux.norm() / resolved.norm())
    echo(f"{'truth data kinematic ' + mesh:<34s} fine {scenario.fine.n_cells} -> coarse "
         f"{scenario.coarse.n_cells} cells, {n_time} samples in {path.name}  "
         f"|Φ_sgs|/|Φ_res| {ratio:.2f}  identity defect {defect:.1e}  "
         f"({time.perf_counter() - t0:.1f} s)")
    png = None
    if plots:
        units = "nondimensional"                       # the scenarios' unit system
        fig = new_figure((17, 3.9))
        panels = [(scenario.fine, state["q"], "fine q", "q", False),
                  (scenario.coarse, sample.state["q"], "coarse Q = restrict(q)", "Q", False),
                  (scenario.coarse, face_flux_density(scenario.coarse, flux),
                   "subgrid flux density |Φ_sgs| / A", "|Φ_sgs| / A", False),
                  (scenario.coarse, sample.tendency["q"], "subgrid tendency s_sgs = −div Φ_sgs",
                   "s_sgs", True)]
        lo = float(min(state["q"].min(), sample.state["q"].min()))   # q and Q: one scale
        hi = float(max(state["q"].max(), sample.state["q"].max()))
        for k, (m, field, title, name, diverging) in enumerate(panels):
            limits = {"vmin": lo, "vmax": hi} if k < 2 else {}
            plot(m, field, ax=subplot(fig, m, 1, 4, k + 1), title=title, label=name,
                 units=units, diverging=diverging, **limits)
        fig.suptitle(f"kinematic scenario on {mesh}: fine {scenario.fine.n_cells} cells, coarse "
                     f"{scenario.coarse.n_cells} cells (one snapshot after spin-up)")
        fig.tight_layout()
        png = save_figure(fig, Path(out) / "truth_kinematic.png", overwrite=True, dpi=90)
    return [{"name": f"truth data kinematic {mesh}", "n_cells": scenario.coarse.n_cells,
             "samples": n_time, "identity_defect": defect, "sgs_ratio": ratio,
             "dataset": path, "png": png}]


def run_training(out: Path, data: Path, plots: bool = True,
                 echo: Callable[[str], None] = print, epochs: int = 8) -> list[dict]:
    """Calibrate the baselines on ``data``, train a small conservative closure, compare
    ``K_eff(N)`` and run the closure in the coarse model (see the module docstring)."""
    from .data.scenarios import Scenario
    from .data import read_dataset
    from .solver.steppers import ssprk3_step
    from .train import (baseline_closures, calibrate, effective_diffusivity, keff_error,
                        plot_effective_diffusivity, save_calibration, train)

    t0 = time.perf_counter()
    out = Path(out)
    cal = calibrate(data)
    save_calibration(cal, out / "calibration.json", overwrite=True)
    law = cal["baselines"]["power_law"]["closes"]["q"]
    import logging

    quiet = logging.getLogger("meshclosure.train")     # no per-epoch lines in the demo
    level, quiet.level = quiet.level, max(quiet.getEffectiveLevel(), logging.WARNING)
    try:
        res = train(data, out / "closure", {"model": "mgn", "epochs": epochs, "batch_size": 4,
                                            "lr": 3e-3, "model_config": {"hidden": 16,
                                                                         "n_blocks": 2}},
                    resume=False, overwrite=True, progress=False)
    finally:
        quiet.setLevel(level)
    nodes, truth = effective_diffusivity(None, data, "train")
    _, learned = effective_diffusivity(res.closure, data, "train", nodes=nodes)
    scenario = Scenario.from_config(cal["scenario_config"])
    _, power = effective_diffusivity(baseline_closures(cal, scenario)["power_law"], data,
                                     "train", nodes=nodes)
    err_learned, err_law = keff_error(learned, truth), keff_error(power, truth)
    # the learned closure inside the coarse model: it moves Q between cells, never adds any
    ds = read_dataset(data)
    q0 = torch.as_tensor(ds["state_q"].values[0, 0])
    t = float(ds["model_time"].values[0, 0])
    V = scenario.coarse.cell_volume.double()
    runs = {}
    for name, closure in (("none", None), ("learned", res.closure)):
        model = scenario.coarse_model(closure=closure)
        state = {"q": q0}
        with torch.no_grad():
            for k in range(20):
                state = ssprk3_step(model.rhs, t + k * scenario.coarse_dt, state,
                                    scenario.coarse_dt)
        runs[name] = state["q"]
    drift = float(((V * runs["learned"]).sum() - (V * runs["none"]).sum()).abs()
                  / (V * runs["none"].abs()).sum())
    change = float((runs["learned"] - runs["none"]).abs().max())
    png = None
    if plots:
        lo, hi = cal["keff"]["q"]["train_range"]
        fig = plot_effective_diffusivity(
            {"truth": (nodes, truth), f"power law α={law['alpha']:.3g}, β={law['beta']:.2f}":
             (nodes, power), "learned (mgn)": (nodes, learned)},
            train_range=(lo, hi))
        fig.axes[0].set_title(f"K_eff(N) on the training split ({cal['n_samples']['train']} "
                              "samples of the demo's tiny dataset: the truth's curve is noisy)",
                              fontsize=9)
        from .plot import save_figure

        png = save_figure(fig, out / "keff_kinematic.png", overwrite=True, dpi=90)
    last = res.metrics[-1]
    echo(f"{'calibrate + train kinematic':<34s} power law α={law['alpha']:.3g} "
         f"β={law['beta']:.2f}; mgn {epochs} epochs, val flux R² {last['val_flux_r2']:.3f}; "
         f"K_eff error learned {err_learned:.2f} power law {err_law:.2f}; 20 coarse steps: "
         f"closure changed Q by {change:.2e}, total by {drift:.1e} "
         f"({time.perf_counter() - t0:.1f} s)")
    return [{"name": "calibrate and train kinematic", "keff_error_learned": err_learned,
             "keff_error_power_law": err_law, "total_drift": drift, "closure_change": change,
             "val_flux_r2": last["val_flux_r2"], "model": out / "closure" / "model.pt",
             "png": png}]


# ------------------------------------------------------------------ the end-to-end demo
#: The embedded default of :func:`run_demo`: ``kinematic`` on Cartesian 32² coarse-grained
#: to 8² (relaxation time 1, coarse step ≈ 0.083); half the main run is the test split
#: (the online runs' truth: 25 relaxation times), an out-of-distribution run (stronger
#: stirring) follows; ``mgn`` trained offline on the STEP-MEAN subgrid flux (the flux the
#: coarse model needs over one of its steps; the instantaneous flux of ``kinematic`` is
#: mostly eddy noise: trained on it the same network scored −0.32 online, on the step
#: mean +0.94, measured on seed 0); the online runs continue ``audit_steps`` past the
#: truth for the budget audit (DESIGN.md §10: 10⁴ float64 steps).
DEMO = {"scenario": "kinematic", "mesh": "cartesian:32", "factor": 4, "seed": 0,
        "n_samples": 600, "ood_samples": 60, "fractions": (0.4, 0.1, 0.5),
        "train": {"model": "mgn", "target": "step_mean", "epochs": 40, "batch_size": 8,
                  "lr": 3e-3, "model_config": {"hidden": 32, "n_blocks": 3}},
        "n_initial": 3, "audit_steps": 10_000}

#: :data:`DEMO` at CI size (``meshclosure demo --quick``).
QUICK = {**DEMO, "n_samples": 90, "ood_samples": 12,
         "train": {**DEMO["train"], "epochs": 6, "model_config": {"hidden": 16, "n_blocks": 2}},
         "audit_steps": 200}


def run_demo(out: str | Path = "meshclosure_output", plots: bool = True,
             echo: Callable[[str], None] = print, quick: bool = False,
             config: dict | None = None) -> dict:
    """Generate → calibrate → train → validate → report (see the module docstring).

    Parameters
    ----------
    out : path
        Output folder: ``truth.nc``, ``calibration.json``, ``closure/`` (the
        trained model), ``report/`` (``index.html``, figures, metrics).
    plots : bool
        Draw the report's figures.
    echo : callable
        Receives the progress lines and the summary table.
    quick : bool
        The CI size (:data:`QUICK`) instead of :data:`DEMO`.
    config : dict, optional
        Overrides of :data:`DEMO` / :data:`QUICK` keys.

    Returns
    -------
    dict
        ``dataset``, ``calibration``, ``model``, ``report`` (paths), ``result``
        (the :class:`~meshclosure.validate.ValidationResult`), ``seconds`` per
        stage and in total.
    """
    import logging

    from .data import generate, get_scenario
    from .train import calibrate, save_calibration, train
    from .validate import validate, write_report

    cfg = {**(QUICK if quick else DEMO), **(config or {})}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict = {}
    start = time.perf_counter()
    echo(f"meshclosure demo{' --quick' if quick else ''}: writing to {out.resolve()}")

    t0 = time.perf_counter()
    scenario = get_scenario(cfg["scenario"], cfg["mesh"], factor=cfg["factor"],
                            seed=cfg["seed"])
    data = generate(scenario, out / "truth.nc", n_samples=cfg["n_samples"],
                    ood_samples=cfg["ood_samples"], fractions=cfg["fractions"],
                    trajectory=True, overwrite=True, resume=False, progress=False)
    seconds["generate"] = time.perf_counter() - t0
    echo(f"{'1 generate':<14s} {cfg['scenario']} {cfg['mesh']} -> {scenario.coarse.n_cells} "
         f"coarse cells, {cfg['n_samples']} + {cfg['ood_samples']} (OOD) coarse steps of "
         f"{scenario.coarse_dt:.3g} ({seconds['generate']:.1f} s)")

    t0 = time.perf_counter()
    cal = calibrate(data)
    save_calibration(cal, out / "calibration.json", overwrite=True)
    law = next(iter(cal["baselines"]["power_law"]["closes"].values()))
    seconds["calibrate"] = time.perf_counter() - t0
    echo(f"{'2 calibrate':<14s} power law K = {law['alpha']:.3g} N^{law['beta']:.2f} "
         f"({seconds['calibrate']:.1f} s)")

    t0 = time.perf_counter()
    quiet = logging.getLogger("meshclosure.train")       # no per-epoch lines in the demo
    level, quiet.level = quiet.level, max(quiet.getEffectiveLevel(), logging.WARNING)
    try:
        res = train(data, out / "closure", {**cfg["train"], "seed": cfg["seed"]},
                    resume=False, overwrite=True, progress=False)
    finally:
        quiet.setLevel(level)
    seconds["train"] = time.perf_counter() - t0
    best = next((m for m in res.metrics if m["epoch"] == res.best_epoch), res.metrics[-1])
    echo(f"{'3 train':<14s} {cfg['train']['model']} on the {cfg['train']['target']} flux, "
         f"{len(res.metrics)} epochs, best epoch {res.best_epoch} (val loss "
         f"{best['val_loss']:.3g}) ({seconds['train']:.1f} s)")

    t0 = time.perf_counter()
    result = validate(data, out / "closure" / "model.pt", baselines=cal,
                      n_initial=cfg["n_initial"], audit_steps=cfg["audit_steps"],
                      echo=lambda line: echo(f"{'4 validate':<14s} {line}"))
    result.out = write_report(result, out / "report", overwrite=True, figures=plots)
    seconds["validate"] = time.perf_counter() - t0
    seconds["total"] = time.perf_counter() - start
    echo("")
    echo(result.table())
    echo("")
    learned = result.summary[result.closures[0]]
    echo(f"learned closure online: similarity {learned['online.similarity_mean']:.3f} "
         f"(0: no closure, 1: the truth; power law "
         f"{result.summary['power_law']['online.similarity_mean']:.3f}), budget residual "
         f"{learned['online.conservation_drift']:.1e} over {cfg['audit_steps']} audit steps "
         "past the truth")
    for note in result.notes:
        echo(f"note: {note}")
    echo(f"done in {seconds['total']:.0f} s; report: {(out / 'report' / 'index.html').resolve()}")
    return {"dataset": Path(data), "calibration": out / "calibration.json",
            "model": out / "closure" / "model.pt", "report": out / "report", "result": result,
            "seconds": seconds}
