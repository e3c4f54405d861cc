"""Nair & Jablonowski (2008) moving-vortices convergence table.

Runs :func:`meshclosure.solver.vortices.moving_vortices` (solid-body axis
``α = π/2``, SSP-RK3 at outflow Courant number ``1/k_max``) one revolution
(12 days) on icosahedral triangles, their hexagonal duals, HEALPix, the
equiangular cubed sphere and clustered irregular Delaunay spheres, for the
quadratic and linear schemes, and prints normalized l1, l2, l∞ errors at 6
and 12 days and the l2 order between successive resolutions,
``log(e1/e2) / (0.5 log(N2/N1))`` with ``N`` the cell count.

    python tools/moving_vortices_convergence.py [--quick] [--json out.json]
        [--families cubed healpix] [--schemes quadratic] [--sizes 16 32 64] [--days 6]

``--sizes`` replaces each chosen family's resolutions (level, nside, cells per
panel edge, or number of points of the irregular sphere). On the irregular
sphere the step is set by its smallest cells: 2562 points (5120 cells) take
about 117,000 steps for 12 days. Results: tools/results/moving_vortices.md.
"""
from __future__ import annotations

import argparse
import json
import math
import time

import torch

from meshclosure.mesh import cubed_sphere, healpix, icosahedral, irregular_sphere
from meshclosure.solver.vortices import moving_vortices

FAMILIES = {
    "icosahedral": (lambda n: icosahedral(n), (3, 4, 5, 6)),
    "icosahedral_dual": (lambda n: icosahedral(n, dual=True), (4, 5, 6)),
    "healpix": (lambda n: healpix(n), (16, 32, 64)),
    "cubed": (lambda n: cubed_sphere(n), (16, 32, 64, 128)),
    "irregular": (lambda n: irregular_sphere(n, seed=0), (162, 642, 2562)),
}
QUICK = {"icosahedral": (2, 3, 4), "icosahedral_dual": (3, 4), "healpix": (8, 16),
         "cubed": (8, 16), "irregular": (42, 162)}


def _order(prev: dict, row: dict, key: str):
    if prev is None:
        return None
    return math.log(prev[key] / row[key]) / (0.5 * math.log(row["cells"] / prev["cells"]))


def _describe(row: dict, d: str) -> str:
    o = row[f"order_l2_{d}"]
    return (f"[{d} l1={row[f'l1_{d}']:.3e} l2={row[f'l2_{d}']:.3e} linf={row[f'linf_{d}']:.3e}"
            f" order_l2={'-' if o is None else format(o, '.2f')}]")


def convergence(families, schemes, days: float, device: str = "cpu", sizes=None,
                quick: bool = False) -> list[dict]:
    samples = tuple(d for d in (6.0, 12.0) if d <= days) or (days,)
    rows = []
    for fam in families:
        build, default_sizes = FAMILIES[fam]
        fam_sizes = sizes or (QUICK[fam] if quick else default_sizes)
        for scheme in schemes:
            prev = None
            for n in fam_sizes:
                mesh = build(n).to(device=device)
                t0 = time.time()
                r = moving_vortices(mesh, days=days, scheme=scheme, sample_days=samples)
                row = dict(family=fam, size=n, cells=r["n_cells"], scheme=scheme,
                           steps=r["n_steps"], dt=r["dt"], seconds=time.time() - t0)
                for d in samples:
                    e = r["errors"][d]
                    for k in ("l1", "l2", "linf", "min", "max"):
                        row[f"{k}_{d:g}d"] = e[k]
                for d in samples:
                    row[f"order_l2_{d:g}d"] = _order(prev, row, f"l2_{d:g}d")
                rows.append(row)
                prev = row
                text = " ".join(_describe(row, f"{d:g}d") for d in samples)
                print(f"{fam:16s} {n:6d} {row['cells']:7d} {scheme:9s} {text} "
                      f"steps={row['steps']} ({row['seconds']:.1f}s)", flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    days = sorted({k.split("_")[-1] for r in rows for k in r if k.startswith("order_l2_")},
                  key=lambda s: float(s[:-1]))
    head = "| family | size | cells | scheme | steps |"
    sep = "|---|---:|---:|---|---:|"
    for d in days:
        head += f" l1 {d} | l2 {d} | l∞ {d} | order l2 {d} |"
        sep += "---:|---:|---:|---:|"
    lines = [head + " seconds |", sep + "---:|"]
    for r in rows:
        line = f"| {r['family']} | {r['size']} | {r['cells']} | {r['scheme']} | {r['steps']} |"
        for d in days:
            o = r[f"order_l2_{d}"]
            line += (f" {r[f'l1_{d}']:.3e} | {r[f'l2_{d}']:.3e} | {r[f'linf_{d}']:.3e} |"
                     f" {'' if o is None else format(o, '.2f')} |")
        lines.append(line + f" {r['seconds']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--families", nargs="*", default=list(FAMILIES), choices=list(FAMILIES))
    p.add_argument("--schemes", nargs="*", default=["quadratic", "linear"])
    p.add_argument("--sizes", nargs="*", type=int, default=None,
                   help="resolutions instead of each family's defaults")
    p.add_argument("--days", type=float, default=12.0, help="length of the run (days)")
    p.add_argument("--quick", action="store_true", help="small meshes only (seconds)")
    p.add_argument("--json", default=None, help="write the rows to this JSON file")
    p.add_argument("--markdown", action="store_true", help="print the rows as a table")
    args = p.parse_args()
    torch.set_default_dtype(torch.float64)
    rows = convergence(args.families, args.schemes, args.days, args.device, args.sizes,
                       args.quick)
    if args.markdown:
        print(markdown(rows))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"moving_vortices": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
