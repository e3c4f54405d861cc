"""Closure benchmark: forward and forward+backward time and parameter count per model per family.

Every registered model (``meshclosure.nn.list_models()``) on every family it
supports, at a moderate size: Cartesian 128² (16,384 cells), HEALPix
nside 32 (12,288 cells), icosahedral level 5 (20,480 triangles) and its dual
(10,242 hexagons and pentagons), on CPU (or ``--device cuda``), float32, with the model's default
width. Times are medians of ``--repeats`` runs after a warm-up; the
"ratio" columns divide by the same-run time of ``"mgn"`` on the same mesh, so
they can be compared across machines.

    python tools/bench_closures.py [--threads 2] [--repeats 5] [--device cpu] [--models mgn,cnn]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import median_time  # noqa: E402  (tools/_timing.py)

from meshclosure.mesh import cartesian, healpix, icosahedral
from meshclosure.nn import build_model, list_models, model_families

IN_FEATURES = 3
N_VARS = 1

MESHES = {
    "cartesian 128x128": lambda: cartesian(128, 128, 1.0, 1.0),
    "healpix nside 32": lambda: healpix(32),
    "icosahedral L5": lambda: icosahedral(5),
    "icosahedral-dual L5": lambda: icosahedral(5, dual=True),
}

#: Per-model build options and input layout (columns); default: IN_FEATURES scalars.
CONFIG = {
    "e3nn": dict(in_features=IN_FEATURES + 3, n_scalars=IN_FEATURES, n_vectors=1),
}
VECTOR_COLUMNS = {"e3nn": 3}     # extra input columns holding one 3-D tangent vector


def _inputs(name: str, mesh, device, generator) -> torch.Tensor:
    n = IN_FEATURES + VECTOR_COLUMNS.get(name, 0)
    return torch.randn(mesh.n_cells, n, generator=generator).to(device)




def bench(models, repeats: int, device) -> list[dict]:
    rows = []
    gen = torch.Generator().manual_seed(0)
    for label, build_mesh in MESHES.items():
        mesh = build_mesh().to(device=device, dtype=torch.float32)
        for name in models:
            if mesh.family not in model_families(name):
                continue
            torch.manual_seed(0)
            try:
                model = build_model(name, mesh, **{"in_features": IN_FEATURES, "n_vars": N_VARS,
                                                   **CONFIG.get(name, {})}).to(device)
            except (ValueError, TypeError) as err:     # e.g. a size limit of global attention
                rows.append(dict(mesh=label, model=name, error=str(err).splitlines()[0][:80]))
                print(f"{label:20s} {name:12s} skipped: {rows[-1]['error']}", flush=True)
                continue
            x = _inputs(name, mesh, device, gen)
            params = sum(p.numel() for p in model.parameters())

            def forward():
                with torch.no_grad():
                    out = model(mesh, x)
                return out

            def forward_backward():
                model.zero_grad(set_to_none=True)
                out = model(mesh, x)
                out = out[0] if isinstance(out, tuple) else out
                out.square().mean().backward()

            row = dict(mesh=label, model=name, cells=mesh.n_cells, params=params,
                       forward_ms=1e3 * median_time(forward, repeats, device),
                       fwd_bwd_ms=1e3 * median_time(forward_backward, repeats, device))
            rows.append(row)
            print(f"{label:20s} {name:12s} params={params:8d} fwd={row['forward_ms']:9.2f} ms "
                  f"fwd+bwd={row['fwd_bwd_ms']:9.2f} ms", flush=True)
    ref = {r["mesh"]: r for r in rows if r["model"] == "mgn" and "error" not in r}
    print("\n| mesh | cells | model | parameters | forward (ms) | fwd+bwd (ms) | fwd / mgn | fwd+bwd / mgn |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        if "error" in r:
            print(f"| {r['mesh']} | | {r['model']} | | skipped: {r['error']} | | | |")
            continue
        m = ref.get(r["mesh"])
        f = f"{r['forward_ms'] / m['forward_ms']:.2f}" if m else "–"
        b = f"{r['fwd_bwd_ms'] / m['fwd_bwd_ms']:.2f}" if m else "–"
        print(f"| {r['mesh']} | {r['cells']} | {r['model']} | {r['params']} | "
              f"{r['forward_ms']:.1f} | {r['fwd_bwd_ms']:.1f} | {f} | {b} |")
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", default=None, help="comma-separated subset of list_models()")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    models = [m for m in list_models() if not m.startswith("_")]
    if args.models:
        models = [m for m in args.models.split(",") if m in models]
    print(f"torch {torch.__version__}, {args.threads} threads, device {args.device}, float32, "
          f"in_features={IN_FEATURES}, n_vars={N_VARS}, median of {args.repeats}")
    bench(models, args.repeats, torch.device(args.device))


if __name__ == "__main__":
    main()
