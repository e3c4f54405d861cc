"""The comparison table from the finished cells: mean ± standard deviation over seeds
per (mesh, closure, metric), written as ``table.csv`` (every number and its per-seed
values), ``table.md`` and one figure (online similarity with error bars).

Examples
--------
>>> spread([1.0, 2.0, 3.0])
(2.0, 1.0, 3)
>>> spread([float("inf"), float("inf"), float("nan")])   # NaN: not applicable, not counted
(inf, 0.0, 2)
>>> cell_text(*spread([0.5, 0.7]))
'0.6 ± 0.14 (n=2)'
>>> cell_text(*spread([197379, 197379, 197379]))
'197379 ± 0 (n=3)'
>>> blowup = [float("inf"), 0.58]                        # one seed blew up at t = 0.58
>>> cell_text(*spread(blowup), values=blowup)
'0.58 (n=1) + 1× ∞'
>>> spread("x")
Traceback (most recent call last):
...
meshclosure.errors.ArgumentError: values='x': must be a sequence of numbers (one per seed); ...
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Tuple

from .._files import atomic_path
from ..errors import ArgumentError

__all__ = ["COLUMNS", "TILTED_COLUMNS", "CSV_FIELDS", "spread", "cell_text", "collect",
           "write_table",
           "read_cells", "read_table", "md_columns", "markdown"]

#: The table's columns: (metric key, header). ``offline.*.r2`` follow the training target
#: (``step_mean`` keys when the models were trained on the step-mean flux).
COLUMNS: Tuple[Tuple[str, str], ...] = (
    ("parameters", "parameters"),
    ("train_time_s", "training time (s)"),
    ("step_time_s", "solver step (s)"),
    ("offline.r2", "offline R² test"),
    ("offline.ood.r2", "offline R² OOD"),
    ("online.similarity_mean", "online similarity"),
    ("online.time_to_blowup", "time to blow-up"),
    ("online.conservation_drift", "conservation drift"),
    ("peak_memory_mib", "peak memory (MiB)"),
)

#: The columns of the symmetry test (``rotation``): every model trained at the default axis
#: and every baseline calibrated there, tested on a tilted dataset; n/a on planes.
TILTED_COLUMNS: Tuple[Tuple[str, str], ...] = (
    ("tilted.offline.r2", "offline R² tilted"),
    ("tilted.online.similarity_mean", "online similarity tilted"),
)

CSV_FIELDS = ("mesh", "closure", "kind", "metric", "mean", "sd", "n", "seeds", "values")


def spread(values: Sequence[float]) -> Tuple[float, float, int]:
    """``(mean, sd, n)`` of the per-seed ``values``: NaN (not applicable) is left out of
    ``n``; ``sd`` is the sample standard deviation (NaN for ``n < 2``; 0 when every value
    is the same infinity, NaN when finite and infinite values mix)."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise ArgumentError("values", values, "must be a sequence of numbers (one per seed)",
                            "pass e.g. [0.1, 0.2, 0.3]")
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    n = len(vals)
    if not n:
        return float("nan"), float("nan"), 0
    if all(math.isinf(v) for v in vals) and len(set(vals)) == 1:
        return vals[0], 0.0, n
    if any(math.isinf(v) for v in vals):
        return sum(vals), float("nan"), n                # ±inf (or NaN for inf − inf)
    mean = sum(vals) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1)) if n > 1 else float("nan")
    return mean, sd, n


def _num(v: float) -> str:
    if math.isinf(v):
        return "∞" if v > 0 else "−∞"
    if v.is_integer() and abs(v) < 1e9:
        return str(int(v))                               # counts: 197379, not 1.97e+05
    return f"{v:.3g}"


def cell_text(mean: float, sd: float, n: int, values: Any = None) -> str:
    """One Markdown cell: ``mean ± sd (n=N)``; ``n/a`` when nothing applies. With the
    per-seed ``values`` (a list, or the CSV's ``;``-joined text), a mix of finite and
    infinite values (some seeds blew up) shows the finite ones' spread and counts the
    others: ``0.58 (n=1) + 1× ∞``."""
    if values is not None:
        vals = [float(v) for v in (values.split(";") if isinstance(values, str) else values)
                if v != ""]
        vals = [v for v in vals if not math.isnan(v)]
        finite = [v for v in vals if math.isfinite(v)]
        if finite and len(finite) < len(vals):
            extra = " + ".join(f"{sum(1 for v in vals if v == x)}× {_num(x)}"
                               for x in (math.inf, -math.inf) if x in vals)
            return cell_text(*spread(finite)) + " + " + extra
    if n == 0 or math.isnan(mean):
        return "n/a"
    if math.isnan(sd) or (math.isinf(mean) and sd == 0.0):
        return f"{_num(mean)} (n={n})"
    return f"{_num(mean)} ± {sd:.2g} (n={n})"


def read_table(path: Any) -> List[dict]:
    """``table.csv`` (or its folder) back as rows with floats: mean, sd, n, and ``values``
    as a list (one per seed, NaN where the seed lacks the number) — for notebooks and the
    check that a published table's numbers are the ones the command wrote."""
    path = Path(path)
    if path.is_dir():
        path = path / "table.csv"
    if not path.is_file():
        raise ArgumentError("path", str(path), "must be a table.csv written by compare (or "
                            "its folder)", "run `meshclosure compare ... --out DIR` first")
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        r["mean"], r["sd"], r["n"] = float(r["mean"]), float(r["sd"]), int(r["n"])
        r["seeds"] = [int(s) for s in r["seeds"].split(";") if s]
        r["values"] = [float(v) for v in r["values"].split(";") if v]
    return rows


def read_cells(out: Path) -> List[dict]:
    """Every finished cell's JSON under ``out/cells`` (sorted by file name)."""
    folder = Path(out) / "cells"
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


def collect(cells: Sequence[Mapping], meshes: Sequence[str], models: Sequence[str],
            seeds: Sequence[int], required: Sequence[str] = ()) -> List[dict]:
    """The table's rows: one per (mesh, closure, metric) with mean, sd, n and the values
    per seed (NaN for a seed without the number). Order: meshes as given; per mesh the
    models as given, the baselines, ``none``, ``replay``. Every closure gets a row for
    each metric in ``required`` (``n = 0`` where it does not apply)."""
    per: Dict[Tuple[str, str], Dict[str, Any]] = {}
    for cell in cells:
        if cell.get("status") != "done":
            continue
        for name, row in cell["rows"].items():
            entry = per.setdefault((cell["mesh"], name), {"kind": row.get("kind", ""),
                                                          "seeds": {}})
            entry["seeds"][int(cell["seed"])] = row
    out: List[dict] = []
    for mesh in meshes:
        names = [n for (m, n) in per if m == mesh]
        order = ([n for n in models if n in names]
                 + sorted(n for n in names if per[(mesh, n)]["kind"] == "baseline")
                 + [n for n in ("none", "replay") if n in names])
        for name in order:
            entry = per[(mesh, name)]
            metrics = sorted({k for r in entry["seeds"].values() for k in r if k != "kind"}
                             | set(required))
            for metric in metrics:
                vals = [_float(entry["seeds"].get(s, {}).get(metric)) for s in seeds]
                mean, sd, n = spread(vals)
                out.append({"mesh": mesh, "closure": name, "kind": entry["kind"],
                            "metric": metric, "mean": mean, "sd": sd, "n": n,
                            "seeds": ";".join(str(s) for s in seeds),
                            "values": ";".join(repr(v) for v in vals)})
    return out


def _float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def write_table(rows: Sequence[Mapping], out: Path, meshes: Sequence[str], notes: Sequence[str],
                header: Sequence[str] = (), r2_key: str = "") -> Dict[str, Path]:
    """Write ``table.csv``, ``table.md`` and ``similarity.png`` into ``out`` (atomically);
    ``r2_key`` (``"step_mean."`` or ``""``) picks the offline R² shown in the Markdown."""
    out = Path(out)
    paths = {"csv": out / "table.csv", "md": out / "table.md", "figure": out / "similarity.png"}
    with atomic_path(paths["csv"], ".csv") as tmp:
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
            w.writeheader()
            for r in rows:
                w.writerow({k: (repr(r[k]) if isinstance(r[k], float) else r[k])
                            for k in CSV_FIELDS})
    with atomic_path(paths["md"], ".md") as tmp:
        Path(tmp).write_text(markdown(rows, meshes, notes, header, r2_key))
    _figure(rows, meshes, paths["figure"])
    return paths


def md_columns(r2_key: str = "", tilted: bool = False) -> List[Tuple[str, str]]:
    """:data:`COLUMNS` with the offline R² keys of the training target; with ``tilted``
    the :data:`TILTED_COLUMNS` follow the online similarity."""
    cols: List[Tuple[str, str]] = []
    for k, h in COLUMNS:
        cols.append((k, h))
        if tilted and k == "online.similarity_mean":
            cols += list(TILTED_COLUMNS)
    return [(k.replace("offline.", f"offline.{r2_key}") if k.endswith("offline.r2") else
             k.replace("offline.ood.", f"offline.ood.{r2_key}") if k == "offline.ood.r2"
             else k, h) for k, h in cols]


def markdown(rows: Sequence[Mapping], meshes: Sequence[str], notes: Sequence[str] = (),
             header: Sequence[str] = (), r2_key: str = "") -> str:
    """The table as Markdown: one table per mesh, one row per closure (the tilted columns
    when the rows hold them)."""
    cols = md_columns(r2_key, any(str(r["metric"]).startswith("tilted.") for r in rows))
    lines = list(header)
    index = {(r["mesh"], r["closure"], r["metric"]): r for r in rows}
    for mesh in meshes:
        names: List[str] = []
        for r in rows:
            if r["mesh"] == mesh and r["closure"] not in names:
                names.append(r["closure"])
        lines += [f"## {mesh}", "", "| closure | " + " | ".join(h for _, h in cols) + " |",
                  "|---|" + "---|" * len(cols)]
        for name in names:
            cells = []
            for key, _ in cols:
                r = index.get((mesh, name, key))
                cells.append(cell_text(r["mean"], r["sd"], r["n"], r["values"]) if r
                             else "n/a")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    if notes:
        lines += ["Notes:", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


def _figure(rows: Sequence[Mapping], meshes: Sequence[str], path: Path) -> None:
    """Online similarity (mean ± sd over seeds) per closure, one bar per mesh."""
    from ..plot import new_figure, save_figure

    key = "online.similarity_mean"
    names: List[str] = []
    for r in rows:
        if r["metric"] == key and r["closure"] not in names:
            names.append(r["closure"])
    fig = new_figure((max(6.0, 0.9 * len(names) + 2), 4.0))
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / max(len(meshes), 1)
    for j, mesh in enumerate(meshes):
        xs, ys, es = [], [], []
        for i, name in enumerate(names):
            r = next((r for r in rows if r["mesh"] == mesh and r["closure"] == name
                      and r["metric"] == key), None)
            if r is None or not r["n"] or not math.isfinite(r["mean"]):
                continue
            xs.append(i + (j - (len(meshes) - 1) / 2) * width)
            ys.append(r["mean"])
            es.append(r["sd"] if math.isfinite(r["sd"]) else 0.0)
        ax.bar(xs, ys, width=width, yerr=es, capsize=3, label=mesh)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=30, ha="right")
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_ylabel("online similarity (1: truth, 0: no closure)")
    ax.set_title("Online similarity, mean ± sd over seeds")
    if meshes:
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, overwrite=True, dpi=110)
