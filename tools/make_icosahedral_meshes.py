#!/usr/bin/env python
"""Write the icosahedral meshes to compressed binary VTU files.

For every level L this writes ``OUT/icosahedral_L{L}.vtu`` (triangles) and
``OUT/icosahedral_dual_L{L}.vtu`` (pentagons and hexagons), atomically, then
reads each file back and checks that the arrays are identical to the
generator's (cell order included).

Usage::

    python tools/make_icosahedral_meshes.py --levels 0-6 --out meshes/
    python tools/make_icosahedral_meshes.py --levels 3,5 --compression lzma
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from meshclosure.mesh.icosahedral import (  # noqa: E402
    MAX_LEVEL,
    generate_arrays,
    mesh_filename,
    read_vtu,
    write_vtu,
)


def parse_levels(text: str) -> list[int]:
    """``"0-6"`` -> [0, ..., 6]; ``"2,4"`` -> [2, 4]; ranges and lists combine."""
    levels: set[int] = set()
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            levels.update(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid --levels {text!r}: use a range like 0-6 or a list like 2,4") from None
    if not levels or min(levels) < 0 or max(levels) > MAX_LEVEL:
        raise argparse.ArgumentTypeError(
            f"invalid --levels {text!r}: levels must lie in 0..{MAX_LEVEL}")
    return sorted(levels)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", type=parse_levels, default=parse_levels("0-6"),
                        help="levels to write, e.g. 0-6 or 2,4 (default 0-6)")
    parser.add_argument("--out", type=Path, default=Path("meshes"), help="output folder")
    parser.add_argument("--compression", choices=["zlib", "lzma", "none"], default="zlib",
                        help="VTU compression (default zlib: readable by every ParaView)")
    parser.add_argument("--no-dual", action="store_true", help="skip the dual meshes")
    args = parser.parse_args(argv)
    compression = None if args.compression == "none" else args.compression

    total = 0
    for level in args.levels:
        for dual in (False, True) if not args.no_dual else (False,):
            t0 = time.perf_counter()
            vertices, cells = generate_arrays(level, dual)
            t1 = time.perf_counter()
            path = args.out / mesh_filename(level, dual)
            write_vtu(path, vertices, cells, compression=compression)
            t2 = time.perf_counter()
            v2, c2 = read_vtu(path, level, dual)
            if not (np.array_equal(v2, vertices) and np.array_equal(c2, cells)):
                print(f"ERROR: round trip of {path} changed the arrays", file=sys.stderr)
                return 1
            size = path.stat().st_size
            total += size
            print(f"{path}: {len(cells):>9} cells, {size / 1e6:8.3f} MB, "
                  f"generate {t1 - t0:6.3f} s, write {t2 - t1:6.3f} s, round trip ok")
    print(f"total {total / 1e6:.3f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
