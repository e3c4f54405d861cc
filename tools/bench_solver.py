"""Benchmark: one SSP-RK3 step of the second-order tracer scheme (DESIGN.md §12).

Cell updates per second of ONE SSP-RK3 step (unlimited linear reconstruction
from the least-squares gradient, upwind face value, flux divergence) on a
doubly periodic Cartesian grid ``cartesian(n, n, 1.0, 1.0)`` with the constant,
non-divergent transport ``U_f = u·n_f A_f``, ``u = (1, 0.5)``:

(a) graph   the meshclosure graph solver, ``TracerModel`` + ``ssprk3_step``,
            with the ``fv1`` operators (face-neighbour least-squares gradient);
(b) stencil the same scheme as a vectorized structured-grid stencil in torch
            (on a uniform periodic grid the ``fv1`` least-squares gradient is
            the central difference ``(q[i+1] − q[i−1]) / 2dx``; the ``fv2``
            vertex-neighbour gradient is not), halo by circular padding,
            slices as views, fused updates; checked against (a) to rounding;
(c) pyg     the same step written with PyG ``MessagePassing`` (a gradient
            convolution over the ``fv1`` face pairs and a face-flux
            convolution, ``aggr="add"``);
(d) roofline the least bytes one step must move (see :func:`min_bytes`)
            divided by the bandwidth of a STREAM triad ``a = b + s c`` on large
            float64 arrays measured in the same run; ``%roof`` is roofline
            time / measured time.

Times are the median (and best) of ``--repeats`` steps after warm-up (the
warm-up builds the per-mesh operators, as any run of more than one step
would). The machine is shared: compare ratios within one run.

``--stencils`` (issue 15 item 2) compares the operator versions on sphere
meshes (``cubed_sphere(64)``, ``icosahedral(6)``, ``healpix(64)``,
``irregular_sphere(20000)``; solid-body rotation): for ``fv1``/``fv2`` x
``linear``/``quadratic``, the non-zeros per row of the reconstruction matrix
``[R_a; R_b]`` (per face side) and of the advection matrix (per cell), the
one-time build time of the advection matrix on a mesh with an empty operator
cache (gradient or quadratic fit, the sparse reconstruction, the product; best
of two), and one SSP-RK3 step of ``TracerModel`` (the cached matrix path; the four
cases of a mesh timed round-robin), each also as a ratio to ``fv1 linear`` on
the same mesh in the same run.

    python tools/bench_solver.py                              # 1e4, 1e5, 1e6 cells; 1 and 2 threads
    python tools/bench_solver.py --sizes 100 316 --threads 1 --dtypes float64
    python tools/bench_solver.py --sphere                     # also HEALPix 256, icosahedral 7
    python tools/bench_solver.py --stencils --threads 1       # only the operator versions
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

U_VEL = (1.0, 0.5)


# --------------------------------------------------------------------------- set-up
def make_case(n: int, dtype: torch.dtype):
    """Mesh, face transports ``U (n_faces,)``, initial ``q (n_cells,)`` and ``dt``."""
    from meshclosure.mesh import cartesian

    mesh = cartesian(n, n, 1.0, 1.0)
    U = ((mesh.face_normal[:, 0] * U_VEL[0] + mesh.face_normal[:, 1] * U_VEL[1])
         * mesh.face_area).to(dtype)
    x, y = mesh.cell_center[:, 0], mesh.cell_center[:, 1]
    g = torch.Generator().manual_seed(0)
    q = (torch.sin(2 * torch.pi * x) * torch.cos(4 * torch.pi * y)
         + 0.1 * torch.rand(mesh.n_cells, generator=g, dtype=torch.float64)).to(dtype)
    dt = 0.4 / (n * (abs(U_VEL[0]) + abs(U_VEL[1])))
    return mesh, U, q, dt


def graph_stepper(mesh, U: Tensor, operators: str | None = "fv1",
                  scheme: str = "linear") -> Callable[[Tensor, float], Tensor]:
    """(a) ``TracerModel`` + ``ssprk3_step`` (default: scheme "linear", operators "fv1",
    the scheme (b) and (c) compute)."""
    from meshclosure.solver.steppers import ssprk3_step
    from meshclosure.solver.tracer import TracerModel

    model = TracerModel(mesh, U, scheme=scheme, operators=operators)
    return lambda q, dt: ssprk3_step(model.rhs, 0.0, {"q": q}, dt)["q"]


# --------------------------------------------------------------------- (b) stencil
def _grid_transports(mesh, U: Tensor) -> tuple[Tensor, Tensor]:
    """Transports through the east and north face of every cell, in +x / +y, ``(ny, nx)``."""
    nx, ny = mesh.info["nx"], mesh.info["ny"]
    a, b = mesh.face_cells
    nrm = mesh.face_normal
    ux = U.new_zeros(ny * nx)
    uy = U.new_zeros(ny * nx)
    east = nrm[:, 0] > 0.5          # owner's east face
    west = nrm[:, 0] < -0.5         # wrap-around: the neighbour's east face
    north, south = nrm[:, 1] > 0.5, nrm[:, 1] < -0.5
    ux[a[east]] = U[east]
    ux[b[west]] = -U[west]
    uy[a[north]] = U[north]
    uy[b[south]] = -U[south]
    return ux.reshape(ny, nx), uy.reshape(ny, nx)


def stencil_stepper(mesh, U: Tensor) -> Callable[[Tensor, float], Tensor]:
    """(b) The same scheme as a structured stencil on ``(ny, nx)`` arrays.

    Per stage: circular halo of width 2 (one copy), then per axis the face
    differences ``d``, the doubled central difference ``s = d[k] + d[k−1]``
    (``= 2 dx ∂q/∂x``), the face values from both sides ``q_k ± s_k / 4``, the
    upwind flux ``U⁺ q_L + U⁻ q_R`` with ``U±`` pre-scaled by ``−dt/V``, and
    its difference; the stage update is fused (``add``/``lerp``).
    """
    nx, ny = mesh.info["nx"], mesh.info["ny"]
    vol = float(mesh.cell_volume[0])
    ux, uy = _grid_transports(mesh, U)
    cache: dict = {}

    def scaled(dt: float):
        if cache.get("dt") != dt:
            s = -dt / vol
            # east faces of cells −1..nx−1 (north faces of rows −1..ny−1)
            ex, ey = torch.cat([ux[:, -1:], ux], 1), torch.cat([uy[-1:], uy], 0)
            cache.update(dt=dt, upx=ex.clamp(min=0) * s, umx=ex.clamp(max=0) * s,
                         upy=ey.clamp(min=0) * s, umy=ey.clamp(max=0) * s)
        return cache["upx"], cache["umx"], cache["upy"], cache["umy"]

    def increment(q: Tensor, upx, umx, upy, umy) -> Tensor:
        """``dt · dq/dt`` on the grid ``(ny, nx)``."""
        p = F.pad(q[None, None], (2, 2, 2, 2), mode="circular")[0, 0]
        # x: rows 2..ny+1 of the padded array; padded column k is cell k − 2
        px = p[2:-2]
        d = px[:, 1:] - px[:, :-1]                      # d[k] = q[k+1] − q[k]
        s = d[:, 1:] + d[:, :-1]                        # s[k] at padded column k + 1
        ql = torch.add(px[:, 1:-2], s[:, :-1], alpha=0.25)   # owner side, cells −1..nx−1
        qr = torch.add(px[:, 2:-1], s[:, 1:], alpha=-0.25)   # neighbour side
        fx = torch.addcmul(upx * ql, umx, qr)
        py = p[:, 2:-2]
        d = py[1:] - py[:-1]
        s = d[1:] + d[:-1]
        ql = torch.add(py[1:-2], s[:-1], alpha=0.25)
        qr = torch.add(py[2:-1], s[1:], alpha=-0.25)
        fy = torch.addcmul(upy * ql, umy, qr)
        inc = fx[:, 1:] - fx[:, :-1]
        return inc.add_(fy[1:] - fy[:-1])

    def step(q: Tensor, dt: float) -> Tensor:
        c = scaled(dt)
        q0 = q.reshape(ny, nx)
        y1 = q0 + increment(q0, *c)
        y2 = torch.lerp(q0, y1 + increment(y1, *c), 0.25)
        y3 = torch.lerp(q0, y2 + increment(y2, *c), 2.0 / 3.0)
        return y3.reshape(-1)

    return step


# ------------------------------------------------------------------------- (c) PyG
def pyg_stepper(mesh, U: Tensor) -> Callable[[Tensor, float], Tensor]:
    """(c) The same step with PyG ``MessagePassing``.

    ``GradConv``: least-squares gradient, message ``c_ij (q_j − q_i)`` on the
    directed edges ``j -> i``. ``FluxConv``: on both directed copies of every
    face, message ``−Φ_out``, the upwind flux leaving the target cell
    ``i``, with face values reconstructed from ``i`` or ``j``; sum, ``/V``.
    """
    from torch_geometric.nn import MessagePassing

    from meshclosure.fv.advection import face_displacement
    from meshclosure.fv.gradients import LeastSquaresGradient
    from meshclosure.solver.steppers import ssprk3_step

    dtype = U.dtype

    class GradConv(MessagePassing):
        def __init__(self) -> None:
            super().__init__(aggr="add")

        def forward(self, q: Tensor, edge_index: Tensor, coef: Tensor) -> Tensor:
            return self.propagate(edge_index, q=q[:, None], coef=coef)

        def message(self, q_i: Tensor, q_j: Tensor, coef: Tensor) -> Tensor:
            return coef * (q_j - q_i)

    class FluxConv(MessagePassing):
        def __init__(self) -> None:
            super().__init__(aggr="add")

        def forward(self, q, grad, edge_index, u_out, r_dst, r_src) -> Tensor:
            return self.propagate(edge_index, q=q[:, None], grad=grad, u_out=u_out,
                                  r_dst=r_dst, r_src=r_src)[:, 0]

        def message(self, q_i, q_j, grad_i, grad_j, u_out, r_dst, r_src) -> Tensor:
            qi = q_i + (grad_i * r_dst).sum(1, keepdim=True)
            qj = q_j + (grad_j * r_src).sum(1, keepdim=True)
            return -u_out * torch.where(u_out >= 0, qi, qj)

    lsq = LeastSquaresGradient(mesh, stencil="face")            # fv1: as (a) and (b)
    grad_index = torch.stack([lsq.neighbour, lsq.cell])         # source j -> target i
    coef = lsq.coefficients(False, dtype, "cpu")
    a, b = mesh.face_cells
    ra, rb = (r.to(dtype) for r in face_displacement(mesh))
    flux_index = torch.stack([torch.cat([b, a]), torch.cat([a, b])])
    u_out = torch.cat([U, -U])[:, None]
    r_dst = torch.cat([ra, rb])
    r_src = torch.cat([rb, ra])
    inv_vol = 1.0 / mesh.cell_volume.to(dtype)
    gconv, fconv = GradConv(), FluxConv()

    def rhs(t, state):
        q = state["q"]
        g = gconv(q, grad_index, coef)
        return {"q": fconv(q, g, flux_index, u_out, r_dst, r_src) * inv_vol}

    return lambda q, dt: ssprk3_step(rhs, 0.0, {"q": q}, dt)["q"]


# ----------------------------------------------------------------------- roofline
def min_bytes(n_cells: int, n_faces: int, itemsize: int) -> int:
    """Least bytes one SSP-RK3 step moves.

    State: stage 1 reads ``qⁿ`` and writes ``y1``; stages 2 and 3 read their
    input and ``qⁿ`` and write their output: ``8 N`` values. Face transports:
    read once per stage, ``3 F`` values. Index data of the graph solver: the
    owner and neighbour of each face as int32, once per stage, ``3 · 2F · 4``
    bytes. Geometry (reconstruction weights, volumes) is not counted: on this
    grid it is uniform, so the stencil needs none; the graph solver does.
    """
    return 8 * n_cells * itemsize + 3 * n_faces * itemsize + 3 * 2 * n_faces * 4


def triad_bandwidth(n: int = 20_000_000, repeats: int = 7) -> float:
    """Bytes/s of ``a = b + s c`` on float64 arrays (24 bytes per element, as STREAM)."""
    b = torch.rand(n, dtype=torch.float64)
    c = torch.rand(n, dtype=torch.float64)
    a = torch.empty_like(b)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.add(b, c, alpha=3.0, out=a)
        best = min(best, time.perf_counter() - t0)
    return 24 * n / best


def timeit(step: Callable[[Tensor, float], Tensor], q: Tensor, dt: float,
           repeats: int, warmup: int = 2) -> tuple[float, float]:
    """(median, best) seconds of one step."""
    with torch.no_grad():
        for _ in range(warmup):
            step(q, dt)
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            step(q, dt)
            ts.append(time.perf_counter() - t0)
    return statistics.median(ts), min(ts)


# --------------------------------------------------------------------------- main
def run_table(sizes, dtype, threads, repeats, pyg, bandwidth) -> None:
    names = ["graph (a)", "stencil (b)"] + (["pyg (c)"] if pyg else [])
    print(f"\n{dtype}, {threads} thread(s), triad {bandwidth / 1e9:.1f} GB/s  "
          "[Mcell-updates/s of one SSP-RK3 step (median; best)  ns/cell  %roofline]")
    head = f"{'cells':>9s} {'roof Mc/s':>10s}"
    for nm in names:
        head += f" | {nm:^30s}"
    print(head + " | a/b   a/c")
    for n in sizes:
        mesh, U, q, dt = make_case(n, dtype)
        roof = min_bytes(mesh.n_cells, mesh.n_faces, q.element_size()) / bandwidth
        builders = [graph_stepper, stencil_stepper] + ([pyg_stepper] if pyg else [])
        res, outs = [], []
        for build in builders:
            step = build(mesh, U)
            med, best = timeit(step, q, dt, repeats)
            res.append((med, best))
            with torch.no_grad():
                outs.append(step(q, dt))
        check_same_scheme(outs, q, names)
        line = f"{mesh.n_cells:>9d} {mesh.n_cells / roof / 1e6:>10.1f}"
        for med, best in res:
            line += (f" | {mesh.n_cells / med / 1e6:6.2f};{mesh.n_cells / best / 1e6:6.2f} "
                     f"{med / mesh.n_cells * 1e9:7.1f}ns {100 * roof / med:5.1f}%")
        line += f" | {res[0][0] / res[1][0]:4.2f}"
        line += f"  {res[0][0] / res[2][0]:4.2f}" if pyg else ""
        print(line, flush=True)


def check_same_scheme(outs: list, q: Tensor, names: list) -> None:
    """Refuse to report timings of steps that do not compute the same scheme: every step
    must agree with (a) to ``100 eps |q|`` (the fv2 gradient on this grid differs by
    ``O(dx²)`` of the field's third derivatives, far above that)."""
    tol = 100 * torch.finfo(q.dtype).eps * float(q.abs().max())
    for name, out in zip(names[1:], outs[1:]):
        diff = float((out - outs[0]).abs().max())
        if not diff <= tol:
            raise SystemExit(f"{name} differs from {names[0]} by {diff:.3g} (> {tol:.3g}): "
                             "not the same scheme; the comparison would be meaningless")


def run_sphere(threads: int, repeats: int) -> None:
    from meshclosure.mesh import healpix, icosahedral

    print(f"\nsphere, graph solver (a) scheme linear, operators fv1, float64, "
          f"{threads} thread(s)")
    for name, build in (("healpix nside 256", lambda: healpix(256)),
                        ("icosahedral level 7", lambda: icosahedral(7))):
        mesh = build()
        x = mesh.cell_center.double()
        lon = torch.atan2(x[:, 1], x[:, 0])
        # solid-body rotation transports from a streamfunction ψ = −R u0 sin(lat)
        from meshclosure.fv.operators import transport_from_streamfunction
        v = mesh.vertex_pos.double()
        psi = -v[:, 2] / v.norm(dim=1) * mesh.radius
        U = transport_from_streamfunction(mesh, psi)
        q = torch.cos(lon)
        dt = 0.1 * float((mesh.cell_volume.min()).sqrt() / mesh.radius)
        med, best = timeit(graph_stepper(mesh, U), q, dt, repeats)
        print(f"  {name:<22s} {mesh.n_cells:>9d} cells  step {med * 1e3:8.1f} ms (best "
              f"{best * 1e3:.1f})  {mesh.n_cells / med / 1e6:6.2f} Mcell/s", flush=True)


STENCIL_MESHES = {
    "cubed_sphere(64)": lambda: __import__("meshclosure.mesh", fromlist=["x"]).cubed_sphere(64),
    "icosahedral(6)": lambda: __import__("meshclosure.mesh", fromlist=["x"]).icosahedral(6),
    "healpix(64)": lambda: __import__("meshclosure.mesh", fromlist=["x"]).healpix(64),
    "irregular_sphere(20000)":
        lambda: __import__("meshclosure.mesh", fromlist=["x"]).irregular_sphere(20000),
}
STENCIL_CASES = (("fv1", "linear"), ("fv2", "linear"), ("fv1", "quadratic"),
                 ("fv2", "quadratic"))


def stencil_build(mesh, U: Tensor, operators: str, scheme: str) -> dict:
    """Build one ``--stencils`` case on a fresh operator cache: the build time of the
    advection matrix, the non-zeros per row of it and of ``[R_a; R_b]``, and a stepper."""
    import copy

    from meshclosure.fv.advection import _reconstruction_matrix, advection_matrix

    build = float("inf")
    for _ in range(2):                  # best of two builds, each on an empty cache
        fresh = copy.copy(mesh)         # a new object: an empty per-mesh operator cache
        t0 = time.perf_counter()
        L = advection_matrix(fresh, U, scheme, operators)
        build = min(build, time.perf_counter() - t0)
    R = _reconstruction_matrix(fresh, torch.float64, "cpu", scheme, operators)
    return dict(build=build, nnz_adv=L._nnz() / mesh.n_cells,
                nnz_rec=R._nnz() / (2 * mesh.n_faces),
                step_fn=graph_stepper(fresh, U, operators, scheme))


def run_stencils(repeats: int, threads: int, meshes=None) -> None:
    """The ``--stencils`` table (markdown): fv1/fv2 x linear/quadratic on sphere meshes.

    The four steppers of a mesh are timed round-robin (one step of each per round,
    ``repeats`` rounds after 3 warm-up rounds), so a change of the shared machine's load
    hits all four alike; median and best of the rounds."""
    from meshclosure.fv.advection import cfl_dt
    from meshclosure.solver.flows import solid_body_transport

    print(f"\noperator versions, float64, {threads} thread(s), {repeats} rounds "
          "(median; best)")
    print("| mesh | cells | operators | scheme | nnz/row R (face side) | nnz/row L (cell) "
          "| build s | step ms median (best) | build / fv1 lin | step / fv1 lin median (best) |")
    print("|---|---:|---|---|---:|---:|---:|---:|---:|---:|")
    for name in meshes or STENCIL_MESHES:
        mesh = STENCIL_MESHES[name]()
        U = solid_body_transport(mesh, 0.0)
        x = mesh.cell_center.double() / mesh.radius
        q = torch.exp(x[:, 0]) * torch.sin(2 * x[:, 1]) + x[:, 2] ** 2
        dt = cfl_dt(mesh, U, 0.5)
        cases = [stencil_build(mesh, U, ops, scheme) for ops, scheme in STENCIL_CASES]
        times: list = [[] for _ in cases]
        with torch.no_grad():
            for k in range(repeats + 3):
                for case, ts in zip(cases, times):
                    t0 = time.perf_counter()
                    case["step_fn"](q, dt)
                    if k >= 3:
                        ts.append(time.perf_counter() - t0)
        ref_build, ref_med, ref_best = (cases[0]["build"], statistics.median(times[0]),
                                        min(times[0]))
        for (ops, scheme), r, ts in zip(STENCIL_CASES, cases, times):
            med = statistics.median(ts)
            print(f"| {name} | {mesh.n_cells} | {ops} | {scheme} | {r['nnz_rec']:.2f} "
                  f"| {r['nnz_adv']:.2f} | {r['build']:.2f} | {med * 1e3:.2f} "
                  f"({min(ts) * 1e3:.2f}) | {r['build'] / ref_build:.2f} "
                  f"| {med / ref_med:.2f} ({min(ts) / ref_best:.2f}) |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 316, 1000])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--dtypes", nargs="+", default=["float64", "float32"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-pyg", action="store_true", help="skip (c)")
    parser.add_argument("--sphere", action="store_true",
                        help="also time (a) on HEALPix nside 256 and icosahedral level 7")
    parser.add_argument("--stencils", action="store_true",
                        help="only the operator-version table (fv1/fv2 x linear/quadratic on "
                             "cubed_sphere(64), icosahedral(6), healpix(64), "
                             "irregular_sphere(20000))")
    parser.add_argument("--stencil-meshes", nargs="+", choices=list(STENCIL_MESHES),
                        default=None, help="a subset of the --stencils meshes")
    args = parser.parse_args()
    if args.stencils:
        for threads in args.threads:
            torch.set_num_threads(threads)
            run_stencils(args.repeats, threads, args.stencil_meshes)
        return
    pyg = not args.no_pyg
    if pyg:
        try:
            import torch_geometric  # noqa: F401
        except ImportError:
            print("torch_geometric not installed: skipping (c)")
            pyg = False
    for threads in args.threads:
        torch.set_num_threads(threads)
        bw = triad_bandwidth()
        for name in args.dtypes:
            run_table(args.sizes, getattr(torch, name), threads, args.repeats, pyg, bw)
        if args.sphere:
            run_sphere(threads, args.repeats)


if __name__ == "__main__":
    main()
