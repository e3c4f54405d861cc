"""The ``meshclosure`` command.

Subcommands: ``demo`` (the end-to-end job on a small default) and ``mesh``
(build or read a mesh, validate it, export it). ``generate``, ``train``,
``calibrate``, ``validate`` and ``compare`` join as their parts land.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["main", "parse_mesh_spec"]


def parse_mesh_spec(spec: str):
    """Build a mesh from ``cartesian:NXxNY``, ``healpix:NSIDE``, ``icosahedral:LEVEL``,
    ``icosahedral-dual:LEVEL`` or a mesh file path (read with ``from_meshio``).

    >>> parse_mesh_spec("healpix:4").n_cells
    192
    >>> parse_mesh_spec("hexagonal:3")
    Traceback (most recent call last):
    ...
    ValueError: mesh spec 'hexagonal:3' is not a known family or an existing file; ...
    """
    from .mesh import cartesian, from_meshio, healpix, icosahedral

    family, _, arg = spec.partition(":")
    try:
        if family == "cartesian" and arg:
            nx, _, ny = arg.partition("x")
            return cartesian(int(nx), int(ny or nx), 1.0)
        if family == "healpix" and arg:
            return healpix(int(arg))
        if family in ("icosahedral", "icosahedral-dual") and arg:
            return icosahedral(int(arg), dual=family.endswith("dual"))
    except ValueError as err:
        if "invalid literal" in str(err):
            raise ValueError(f"mesh spec {spec!r}: {arg!r} is not an integer size; write e.g. "
                             "healpix:16 or cartesian:64x32.") from err
        raise
    if Path(spec).is_file():
        return from_meshio(spec)
    raise ValueError(f"mesh spec {spec!r} is not a known family or an existing file; use "
                     "cartesian:NXxNY, healpix:NSIDE, icosahedral:LEVEL, icosahedral-dual:LEVEL "
                     "or the path of a mesh file meshio reads.")


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(args.out, plots=not args.no_plots, test1_level=args.test1_level)
    return 0


def _cmd_mesh(args: argparse.Namespace) -> int:
    mesh = parse_mesh_spec(args.spec)
    problems = mesh.validate(raise_on_error=False)
    print(mesh)
    print(f"  domain area {mesh.domain_area():.12g}, sum of cell volumes "
          f"{float(mesh.cell_volume.sum()):.12g}, Euler characteristic "
          f"{mesh.euler_characteristic()}, boundary tags {list(mesh.boundary_tag_names)}")
    print("  valid" if not problems else "  INVALID:\n  - " + "\n  - ".join(problems))
    if args.vtu:
        from .io import write_vtu

        write_vtu(mesh, {}, args.vtu)
        print(f"  wrote {args.vtu}")
    if args.png:
        from .plot import plot

        plot(mesh, None, path=args.png, title=args.spec)
        print(f"  wrote {args.png}")
    return 1 if problems else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meshclosure",
        description="Learned, exactly conservative subgrid closures on Earth-system meshes.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the end-to-end demo on a small default",
                          description="Build every mesh family at a small size, validate and "
                          "coarsen it, print one line per mesh, write a PNG and a .vtu per "
                          "mesh into the output folder, then run Williamson test 1 and print "
                          "its errors.")
    demo.add_argument("--out", default="meshclosure_output",
                      help="output folder (default: %(default)s)")
    demo.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    demo.add_argument("--test1-level", type=int, default=4,
                      help="icosahedral level of the Williamson test 1 runs (default: %(default)s)")
    demo.set_defaults(func=_cmd_demo)
    mesh = sub.add_parser("mesh", help="build or read a mesh, validate and export it",
                          description="Build a mesh (cartesian:NXxNY, healpix:NSIDE, "
                          "icosahedral:LEVEL, icosahedral-dual:LEVEL) or read a mesh file, "
                          "print its geometry summary and validation result; exit status 1 if "
                          "it is invalid.")
    mesh.add_argument("spec", help="family:size or a mesh file path")
    mesh.add_argument("--vtu", help="write the mesh to this .vtu file")
    mesh.add_argument("--png", help="plot the mesh to this PNG file")
    mesh.set_defaults(func=_cmd_mesh)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``meshclosure`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError) as err:
        print(f"meshclosure {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
