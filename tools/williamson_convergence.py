"""Williamson et al. (1992) test 1 convergence table and a long conservation run.

Runs the cosine bell once around the sphere (12 days) with SSP-RK3 at the
limited scheme's no-new-extrema Courant number ``1/k_max`` on icosahedral
triangles (levels 3–5), their duals (4–6), HEALPix (nside 16–64) and the
equiangular cubed sphere (16–64 cells per panel edge), jittered quasi-uniform
Delaunay triangulations (``jittered_sphere``, 2,500–40,000 points) and
clustered random Delaunay meshes with slivers (``irregular_sphere``, 500 and
1,000 points: a stability check, their smallest cells set a tiny step), for
the upwind, linear, limited and quadratic schemes, ``α = 0, π/2 − 0.05`` and
the operator versions asked for (default: the current one), and prints normalized l1, l2, l∞ errors,
the extremes of the final field and the l2 order between successive
resolutions. Then runs 10⁴ float64 steps of a tracer with a random
antisymmetric closure flux and flux noise and prints the relative drift of
``Σ V q``.

    python tools/williamson_convergence.py [--device cuda] [--json out.json]
        [--shape gaussian]   # smooth hill: the scheme's own order, not capped by the C1 bell
        [--operators fv1 fv2] [--families cubed irregular] [--sizes 32 64]

On the irregular meshes the step is ``cfl_dt`` at the outflow Courant number
``1/k_max`` like the others, so the smallest cells set it.
"""
from __future__ import annotations

import argparse
import json
import math
import time

import torch

from meshclosure.mesh import (cubed_sphere, healpix, icosahedral, irregular_sphere,
                             jittered_sphere)
from meshclosure.solver import TracerModel, integrate
from meshclosure.fv.versions import OPERATOR_VERSION, OPERATOR_VERSIONS
from meshclosure.solver.flows import williamson_test1

FAMILIES = {
    "icosahedral": (lambda n: icosahedral(n), (3, 4, 5)),
    "icosahedral_dual": (lambda n: icosahedral(n, dual=True), (4, 5, 6)),
    "healpix": (lambda n: healpix(n), (16, 32, 64)),
    "cubed": (lambda n: cubed_sphere(n), (16, 32, 64)),
    # a size is the number of points; the triangulation has 2 n - 4 cells. Jittered: a
    # quasi-uniform irregular triangulation (min angle ~9°); irregular: clustered points with
    # slivers (min angle < 1°, areas varying by > 1e3: the smallest cells set a tiny step)
    "jittered": (lambda n: jittered_sphere(n, seed=0), (2500, 10000, 40000)),
    "irregular": (lambda n: irregular_sphere(n, seed=0), (500, 1000)),
}
ALPHAS = {"0": 0.0, "pi/2-0.05": math.pi / 2 - 0.05}


def convergence(device: str, families, schemes, alphas, shape: str = "cosine_bell",
                sizes=None, operators=(None,)) -> list[dict]:
    rows = []
    for ops, fam in ((o, f) for o in operators for f in families):
        build, default_sizes = FAMILIES[fam]
        fam_sizes = default_sizes if sizes is None else sizes
        for aname in alphas:
            for scheme in schemes:
                prev = None
                for n in fam_sizes:
                    mesh = build(n).to(device=device)
                    t0 = time.time()
                    r = williamson_test1(mesh, ALPHAS[aname], scheme, shape=shape,
                                         operators=ops)
                    row = dict(family=fam, operators=ops or OPERATOR_VERSION, size=n,
                               cells=r["n_cells"], scheme=scheme, alpha=aname,
                               l1=r["l1"], l2=r["l2"], linf=r["linf"], min=r["min"],
                               max=r["max"], steps=r["n_steps"], seconds=time.time() - t0)
                    row["order_l2"] = (None if prev is None else
                                       math.log(prev["l2"] / r["l2"])
                                       / (0.5 * math.log(r["n_cells"] / prev["cells"])))
                    rows.append(row)
                    prev = row
                    print(f"{row['operators']} {fam:17s} {n:3d} {row['cells']:6d} {scheme:8s} "
                          f"{aname:9s} "
                          f"l1={row['l1']:.4f} l2={row['l2']:.4f} linf={row['linf']:.4f} "
                          f"order_l2={'' if row['order_l2'] is None else format(row['order_l2'], '.2f'):5s} "
                          f"min={row['min']:.3g} max={row['max']:.4g} steps={row['steps']} "
                          f"({row['seconds']:.1f}s)", flush=True)
    return rows


def conservation(device: str, n_steps: int = 10_000) -> dict:
    from meshclosure.solver.flows import cosine_bell, solid_body_transport

    mesh = icosahedral(3).to(device=device)
    U = solid_body_transport(mesh, 0.3)
    gen = torch.Generator(device=device).manual_seed(0)
    scale = float(U.abs().max()) * 100.0

    def closure(t, state, m):
        return {"q": scale * 0.01 * torch.randn(m.n_faces, dtype=state["q"].dtype,
                                                device=state["q"].device, generator=gen)}

    model = TracerModel(mesh, U, scheme="limited", closure=closure, flux_noise=scale * 0.01,
                        generator=gen)
    q0 = cosine_bell(mesh.cell_center, 1.0)
    dt = model.cfl_dt()
    with torch.no_grad():
        out = integrate(model, {"q": q0}, dt, n_steps, progress=False)
    total0, total1 = model.total({"q": q0}), model.total(out.state)
    return {"steps": n_steps, "relative_drift": float((total1 - total0).abs() / total0.abs())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--families", nargs="*", default=list(FAMILIES))
    p.add_argument("--schemes", nargs="*", default=["upwind", "linear", "limited", "quadratic"])
    p.add_argument("--alphas", nargs="*", default=list(ALPHAS))
    p.add_argument("--sizes", nargs="*", type=int, default=None,
                   help="resolutions to run (level, nside or cells per panel edge) instead of "
                        "each family's three")
    p.add_argument("--shape", default="cosine_bell", choices=["cosine_bell", "gaussian"],
                   help="initial field: Williamson's C1 bell, or a smooth Gaussian hill")
    p.add_argument("--operators", nargs="*", default=[OPERATOR_VERSION],
                   choices=list(OPERATOR_VERSIONS), help="operator versions to run")
    p.add_argument("--json", default=None, help="write the table to this JSON file")
    p.add_argument("--skip-conservation", action="store_true")
    args = p.parse_args()
    rows = convergence(args.device, args.families, args.schemes, args.alphas, args.shape,
                       args.sizes, args.operators)
    result = {"williamson_test1": rows}
    if not args.skip_conservation:
        result["conservation"] = conservation(args.device)
        print("conservation:", result["conservation"], flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)


if __name__ == "__main__":
    main()
