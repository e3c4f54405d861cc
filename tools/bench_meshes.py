"""Benchmark: time to build, validate and graph large meshes, and peak memory.

Each case runs in its own subprocess so its peak resident memory (ru_maxrss)
is its own. A reference workload measured in the same run (a numpy sort of
10^7 float64) gives each time as a ratio, since these machines are shared.

    python tools/bench_meshes.py                    # HEALPix nside 256, icosahedral level 7 (+ dual)
    python tools/bench_meshes.py --cases healpix:64 icosahedral:5
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

_CHILD = r"""
import json, resource, sys, time
import numpy as np
t0 = time.perf_counter()
from meshclosure.mesh import parse_mesh_spec
import healpy, meshio, torch_geometric.data  # imports are timed apart from the work
t_import = time.perf_counter() - t0
t0 = time.perf_counter(); mesh = parse_mesh_spec(sys.argv[1]); t_build = time.perf_counter() - t0
t0 = time.perf_counter(); mesh.validate(); t_validate = time.perf_counter() - t0
t0 = time.perf_counter(); g = mesh.to_graph({"q": mesh.cell_volume}); t_graph = time.perf_counter() - t0
print(json.dumps(dict(n_cells=mesh.n_cells, n_faces=mesh.n_faces, build=t_build,
                      validate=t_validate, graph=t_graph, import_s=t_import,
                      peak_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)))
"""


def reference_seconds(repeats: int = 3) -> float:
    import numpy as np

    x = np.random.default_rng(0).random(10**7)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.sort(x)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", nargs="+",
                        default=["healpix:256", "icosahedral:7", "icosahedral-dual:7"])
    args = parser.parse_args()
    ref = reference_seconds()
    print(f"reference (numpy sort of 1e7 float64): {ref:.3f} s; imports are excluded")
    print(f"{'mesh':<22s}{'cells':>9s}{'faces':>9s}{'build s':>9s}{'valid s':>9s}{'graph s':>9s}"
          f"{'total/ref':>10s}{'peak MB':>9s}")
    for spec in args.cases:
        out = subprocess.run([sys.executable, "-c", _CHILD, spec], capture_output=True, text=True)
        if out.returncode:
            print(f"{spec}: failed\n{out.stderr}")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        total = r["build"] + r["validate"] + r["graph"]
        print(f"{spec:<22s}{r['n_cells']:>9d}{r['n_faces']:>9d}{r['build']:>9.2f}"
              f"{r['validate']:>9.2f}{r['graph']:>9.2f}{total / ref:>10.1f}{r['peak_mb']:>9.0f}")


if __name__ == "__main__":
    main()
