"""The validation report: a self-contained folder with ``index.html``, its figures,
``metrics.json`` and ``metrics.csv`` (DESIGN.md §9).

:func:`write_report` builds the folder next to its destination under a temporary
name and renames it into place at the end, so an interrupted or failed report
never leaves a half-written folder (an existing report is replaced only with
``overwrite=True``, and only once the new one is complete).
"""
from __future__ import annotations

import csv
import html
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence

import numpy as np

from ..errors import ArgumentError, OutputExistsError

__all__ = ["write_report", "check_out", "REPORT_FILES"]

#: Files every report folder holds (figures come on top).
REPORT_FILES = ("index.html", "metrics.json", "metrics.csv")

#: The ``format`` of ``metrics.json``.
FORMAT = "meshclosure-validation-1"

_COLORS = {"truth": "k", "replay": "0.45", "none": "tab:red"}


def _is_report(folder: Path) -> bool:
    """True when ``folder`` is a report this module wrote: its ``metrics.json`` has our
    format, and it holds nothing but :data:`REPORT_FILES` and figures."""
    try:
        fmt = json.loads((folder / "metrics.json").read_text()).get("format")
    except (OSError, ValueError, AttributeError):
        return False
    return fmt == FORMAT and all(p.name in REPORT_FILES or (p.suffix == ".png" and p.is_file())
                                 for p in folder.iterdir())


def check_out(out: Any, overwrite: bool) -> Path:
    """``out`` as a Path, after refusing an existing folder (unless ``overwrite`` and it
    is an earlier report: a folder holding anything else is never replaced) or one
    whose parent folder is missing; called before any work is done."""
    if not isinstance(out, (str, os.PathLike)) or not str(out):
        raise ArgumentError("out", out, "must be a folder path", "pass e.g. out='report'")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ArgumentError("out", str(out), "is a file; the report is a folder",
                            "choose a folder path")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise OutputExistsError(f"out={str(out)!r}: the report folder exists and was left "
                                    "untouched; pass overwrite=True (--overwrite) to replace "
                                    "it, or choose another folder.")
        if not _is_report(out):
            raise OutputExistsError(f"out={str(out)!r}: the folder holds files that are not a "
                                    "meshclosure report (no metrics.json of ours, or other "
                                    "files); it was left untouched, even with overwrite. Choose "
                                    "a new or empty folder for the report.")
    parent = out.resolve().parent
    if not parent.is_dir():
        raise FileNotFoundError(f"out={str(out)!r}: the folder {str(parent)!r} does not exist; "
                                "create it first (mkdir -p) or choose another path.")
    return out


def _json_ready(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):
        return _json_ready(value.tolist())
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)     # JSON has no NaN/Inf
    if isinstance(value, (int, str, bool)) or value is None:
        return value
    return str(value)


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    try:
        f = float(v)
    except (TypeError, ValueError):
        return html.escape(str(v))
    if math.isnan(f):
        return "n/a"
    if math.isinf(f):
        return "∞" if f > 0 else "−∞"
    return f"{f:.3g}"


# ----------------------------------------------------------------------------- figures
def _save(fig, folder: Path, name: str) -> str:
    from ..plot import save_figure

    save_figure(fig, folder / name, overwrite=True, dpi=80)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return name


_PALETTE = ("C0", "C1", "C2", "C4", "C5", "C6", "C8", "C9")   # no red/grey: taken above


def _color(name: str, k: int) -> Any:
    return _COLORS.get(name, _PALETTE[k % len(_PALETTE)])


def _fig_maps(result, folder: Path) -> List[tuple]:
    """Time-mean maps of the truth and every closure, per variable (online window)."""
    from ..plot import new_figure, plot, subplot

    online = result.online
    maps = getattr(online, "maps", None) or {}
    if "truth" not in maps or result.mesh is None:
        return []
    out = []
    names = [n for n in maps if n != "truth"]
    for var in maps["truth"]:
        for stat in ("mean", "variance"):
            panels = [("truth", maps["truth"][var][stat])] + [
                (n, maps[n][var][stat]) for n in names if var in maps[n]]
            truth = np.asarray(panels[0][1], dtype=float)
            lo, hi = float(np.nanmin(truth)), float(np.nanmax(truth))
            fig = new_figure((3.3 * len(panels), 3.0))
            for k, (name, field) in enumerate(panels):
                ax = subplot(fig, result.mesh, 1, len(panels), k + 1)
                plot(result.mesh, np.asarray(field, dtype=float), ax=ax, title=name,
                     label=f"{stat} of {var}", vmin=lo, vmax=hi)
            fig.suptitle(f"time-{stat} of {var} over the online window (members pooled)")
            fig.tight_layout()
            out.append((_save(fig, folder, f"map_{stat}_{var}.png"),
                        f"Time-{stat} maps of {var}: truth and each closure, one colour scale."))
    return out


def _line_figure(series: Mapping[str, Any], xlabel: str, ylabel: str, title: str,
                 logx: bool = False, logy: bool = False):
    from ..plot import new_figure

    fig = new_figure((6.0, 3.8))
    ax = fig.add_subplot(1, 1, 1)
    for k, (name, (x, y)) in enumerate(series.items()):
        x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
        if logy:
            y = np.where(y > 0, y, np.nan)
        ax.plot(x, y, label=name, color=_color(name, k),
                lw=2.0 if name == "truth" else 1.3, ls="--" if name == "replay" else "-",
                zorder=5 if name == "truth" else 2)      # the truth on top, replay dashed
    ax.set_xscale("log" if logx else "linear")
    if logx:                                             # integer wavenumbers, not 2×10⁰
        from matplotlib.ticker import ScalarFormatter

        for axis in (ax.xaxis,):
            axis.set_major_formatter(ScalarFormatter())
            axis.set_minor_formatter(ScalarFormatter())
    ax.set_yscale("log" if logy else "linear")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _per_var(data: Mapping[str, Any]) -> Dict[str, Dict[str, Any]]:
    """``{name: {var: (x, y)}}`` or ``{name: (x, y)}`` -> ``{var: {name: (x, y)}}``."""
    out: Dict[str, Dict[str, Any]] = {}
    for name, value in data.items():
        if isinstance(value, Mapping):
            for var, xy in value.items():
                out.setdefault(var, {})[name] = xy
        else:
            out.setdefault("", {})[name] = value
    return out


def _fig_spectra(result, folder: Path) -> List[tuple]:
    spectra = getattr(result.online, "spectra", None) or {}
    out = []
    for var, series in _per_var(spectra).items():
        series = {n: (np.asarray(k)[1:], np.asarray(P)[..., 1:]) for n, (k, P) in series.items()}
        fig = _line_figure(series, "wavenumber |k| (units of 2π/L) or degree l",
                           f"power (sums to the area mean of {var}²)",
                           f"spectrum of {var} over the online window", logx=True, logy=True)
        out.append((_save(fig, folder, f"spectrum_{var or 'all'}.png"),
                    f"Power spectrum of {var} (Fourier on planes, angular power on spheres)."))
    return out


def _fig_pdfs(result, folder: Path) -> List[tuple]:
    from ..plot import new_figure

    values = getattr(result.online, "values", None) or {}
    out = []
    for var, series in _per_var({n: v for n, v in values.items()}).items():
        fig = new_figure((6.0, 3.8))
        ax = fig.add_subplot(1, 1, 1)
        pooled = np.concatenate([np.asarray(v, dtype=float).ravel() for v in series.values()])
        pooled = pooled[np.isfinite(pooled)]
        if pooled.size == 0:
            continue
        lo, hi = np.percentile(pooled, [0.05, 99.95])
        bins = np.linspace(lo, hi, 60)
        for k, (name, v) in enumerate(series.items()):
            v = np.asarray(v, dtype=float).ravel()
            dens, edges = np.histogram(v[np.isfinite(v)], bins=bins, density=True)
            ax.step(0.5 * (edges[1:] + edges[:-1]), np.where(dens > 0, dens, np.nan),
                    label=name, color=_color(name, k), where="mid")
        ax.set_yscale("log")
        ax.set_xlabel(var)
        ax.set_ylabel("probability density")
        ax.set_title(f"PDF of {var} over the online window", fontsize=10)
        ax.legend(fontsize=8)
        fig.tight_layout()
        out.append((_save(fig, folder, f"pdf_{var or 'all'}.png"),
                    f"PDFs of {var} (log density: the tails are the extremes)."))
    return out


def _fig_series(data: Mapping[str, Any], folder: Path, name: str, xlabel: str, ylabel: str,
                title: str, caption: str, logy: bool = False) -> List[tuple]:
    if not data:
        return []
    out = []
    for var, series in _per_var(data).items():
        fig = _line_figure(series, xlabel, ylabel, title + (f" ({var})" if var else ""),
                           logy=logy)
        out.append((_save(fig, folder, f"{name}{'_' + var if var else ''}.png"), caption))
    return out


def _fig_training(result, folder: Path) -> List[tuple]:
    rows = result.training
    if not rows:
        return []
    from ..plot import new_figure

    fig = new_figure((6.0, 3.8))
    ax = fig.add_subplot(1, 1, 1)
    epochs = [r.get("epoch") for r in rows]
    for key in ("train_loss", "val_loss"):
        y = [r.get(key) for r in rows]
        if any(isinstance(v, float) and math.isfinite(v) for v in y):
            ax.plot(epochs, [v if isinstance(v, float) else np.nan for v in y], label=key)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title("training curves (the model folder's metrics.csv)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return [(_save(fig, folder, "training.png"), "Training and validation loss per epoch.")]


def _fig_keff(result, folder: Path) -> List[tuple]:
    if not result.keff:
        return []
    from ..train import plot_effective_diffusivity

    k = result.keff
    curves = {name: (k["nodes"], K) for name, K in k["curves"].items()}
    fig = plot_effective_diffusivity(curves, train_range=tuple(k["train_range"])
                                     if k.get("train_range") else None)
    return [(_save(fig, folder, "keff.png"),
             f"Effective diffusivity K_eff({k.get('measure') or 'N'}) of {k['var']} on the "
             "training split: truth, calibrated baselines, learned closure.")]


def _fig_column(result, folder: Path) -> List[tuple]:
    col = result.column
    if col is None:
        return []
    out = []
    series = getattr(col, "series", None) or {}
    for key, s in series.items():
        if isinstance(s, Mapping):
            out += _fig_series(s, folder, f"column_{key}", "time", key,
                               f"single column: {key}", f"Single-column model: {key} against "
                               "time.")
    profiles = getattr(col, "profiles", None)
    if profiles:
        from ..plot import new_figure

        z, curves = profiles[0], profiles[1]
        fig = new_figure((5.0, 4.5))
        ax = fig.add_subplot(1, 1, 1)
        for k, (name, b) in enumerate(curves.items()):
            b = np.asarray(b, dtype=float)
            b = b[-1] if b.ndim > 1 else b
            ax.plot(b, np.asarray(z, dtype=float), label=name, color=_color(name, k))
        ax.set_xlabel("b (horizontal mean)")
        ax.set_ylabel("z")
        ax.set_title("single column: final profiles", fontsize=10)
        ax.legend(fontsize=8)
        fig.tight_layout()
        out.append((_save(fig, folder, "column_profiles.png"),
                    "Horizontally averaged buoyancy at the end of the run."))
    return out


def _figures(result, folder: Path) -> List[tuple]:
    figs: List[tuple] = []
    online = result.online
    for build in (_fig_maps, _fig_spectra, _fig_pdfs):
        figs += build(result, folder)
    if online is not None:
        figs += _fig_series(getattr(online, "error_growth", None) or {}, folder,
                            "error_growth", "lead time", "RMSE against the truth",
                            "online error growth", "RMSE against the coarse-grained truth "
                            "against lead time (members averaged).")
        figs += _fig_series(getattr(online, "budget_series", None) or {}, folder,
                            "conservation", "step", "accumulated budget residual / Σ V|q|",
                            "conservation audit", "Budget residual accumulated every step "
                            "(rounding for flux-form closures).")
        figs += _fig_series(getattr(online, "spread_skill", None) or {}, folder,
                            "spread_skill", "lead time", "spread / skill",
                            "ensemble spread–skill ratio", "Spread–skill ratio of stochastic "
                            "closures against lead time (1: calibrated).")
    coupled = result.coupled
    if coupled is not None:
        for key, s in (getattr(coupled, "series", None) or {}).items():
            if isinstance(s, Mapping):
                figs += _fig_series(s, folder, f"coupled_{key}", "time", key,
                                    f"partially coupled: {key}", "Tracer under the truth's "
                                    f"flow: {key} against time.")
    figs += _fig_column(result, folder)
    figs += _fig_training(result, folder)
    figs += _fig_keff(result, folder)
    return figs


# ----------------------------------------------------------------------------- writers
def _write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    cols = ["closure", "stage", "metric", "variable", "split", "value"]
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        for row in rows:
            w.writerow({c: (repr(float(row[c])) if c == "value" else row.get(c, ""))
                        for c in cols})


def _metrics_json(result) -> Dict[str, Any]:
    online = result.online
    details: Dict[str, Any] = {"offline": result.offline}
    if online is not None:
        details["online"] = {"metrics": getattr(online, "metrics", {}),
                             "window": getattr(online, "window", None)}
    for stage in ("coupled", "column"):
        r = getattr(result, stage)
        if r is not None:
            details[stage] = {"metrics": getattr(r, "metrics", {})}
    return _json_ready({
        "format": FORMAT, "scenario": result.scenario,
        "closures": {name: result.summary.get(name, {}) for name in result.closures},
        "details": details, "keff": result.keff, "notes": result.notes,
        "timings_s": result.timings, "info": result.info})


def _table_html(result, columns: Sequence[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ("closure",) + tuple(columns))
    body = []
    for name in result.closures:
        m = result.summary.get(name, {})
        body.append("<tr><td>" + html.escape(name) + "</td>" +
                    "".join(f"<td>{_fmt(m.get(c))}</td>" for c in columns) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _html(result, figures: Sequence[tuple]) -> str:
    from .hierarchy import HEADLINE

    extra = sorted({k for m in result.summary.values() for k in m if k not in HEADLINE})
    window = getattr(result.online, "window", None)
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>meshclosure validation: {html.escape(result.scenario)}</title>",
        "<style>body{font-family:sans-serif;max-width:1200px;margin:auto;padding:1em}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:3px 8px;"
        "text-align:right}td:first-child{text-align:left}img{max-width:100%}"
        "figure{margin:1.5em 0}</style></head><body>",
        f"<h1>Validation of closures for the {html.escape(result.scenario)} scenario</h1>",
        "<p>Rows: the learned closure(s), the calibrated baselines, <b>none</b> (no closure: "
        "the zero of every similarity score) and <b>replay</b> (the stored step-mean subgrid "
        "flux replayed: the upper bound). Similarity per metric is 1 − d(model, truth) / "
        "d(no closure, truth) (Ross et al. 2023): 1 like the truth, 0 like no closure, "
        "negative worse than no closure. time_to_blowup is in model time (∞: none); "
        "conservation_drift is the budget residual accumulated over the run divided by "
        "Σ V|q|.</p>",
        "<h2>Summary</h2>", _table_html(result, HEADLINE)]
    if extra:
        parts += ["<h2>Stage headlines</h2>", _table_html(result, extra)]
    if window:
        parts.append(f"<p>Online window: {html.escape(json.dumps(_json_ready(window)))}</p>")
    if result.notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>"
                                                    for n in result.notes) + "</ul>")
    parts.append("<h2>Figures</h2>")
    for name, caption in figures:
        parts.append(f"<figure><img src='{html.escape(name)}' alt='{html.escape(name)}'>"
                     f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    parts.append("<h2>Files</h2><p><a href='metrics.json'>metrics.json</a> (every number, "
                 "nested), <a href='metrics.csv'>metrics.csv</a> (one row per number).</p>")
    parts.append("<h2>Run</h2><pre>" + html.escape(json.dumps(_json_ready(
        {"info": result.info, "timings_s": result.timings}), indent=1)) + "</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(result, out: Any, overwrite: bool = False, figures: bool = True) -> Path:
    """Write ``result`` (a :class:`~meshclosure.validate.ValidationResult`) as a report folder.

    Parameters
    ----------
    result : ValidationResult
    out : path
        The report folder; its parent must exist.
    overwrite : bool
        Replace an existing folder (only after the new one is complete).
    figures : bool
        Draw the figures (PNG); False writes only the tables and metrics.

    Returns
    -------
    Path
        ``out``, holding ``index.html``, ``metrics.json``, ``metrics.csv`` and the PNGs.
    """
    out = check_out(out, overwrite)
    parent = out.resolve().parent
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=parent))
    try:
        figs = _figures(result, tmp) if figures else []
        (tmp / "metrics.json").write_text(json.dumps(_metrics_json(result), indent=1))
        _write_csv(tmp / "metrics.csv", result.rows())
        (tmp / "index.html").write_text(_html(result, figs), encoding="utf-8")
        os.chmod(tmp, 0o755)
        check_out(out, overwrite)                 # still ours to replace?
        trash = None
        if out.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=parent))
            os.replace(out, trash / "old")
        try:
            os.replace(tmp, out)
        except BaseException:
            if trash is not None:                 # put the old report back
                os.replace(trash / "old", out)
                shutil.rmtree(trash, ignore_errors=True)
            raise
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
