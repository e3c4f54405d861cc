"""Benchmark: Chebyshev graph filters vs spherical-harmonic filters on HEALPix, one thread.

Times one filter layer ``(n_cells, C) -> (n_cells, C)`` forward and
forward+backward (gradients for the input and the weights):

- ``cheb K coo|csr``: :class:`meshclosure.nn.chebyshev.ChebConv` with ``K``
  terms on the Gaussian-weighted graph Laplacian of ``healpix(nside)``
  (DeepSphere), stored as sparse COO or as CSR (what ``chebyshev_laplacian``
  returns since the measurements below showed CSR faster); its response is a degree ``K − 1`` polynomial of the Laplacian,
  filter support ``K − 1`` faces;
- ``sht lmax``: :class:`meshclosure.nn.spectral.SphericalHarmonicFilter`
  (free isotropic response ``h_l``): analysis, per-degree channel mixing,
  synthesis with :class:`meshclosure.sht.HealpixSHT` at ``lmax``
  (``lmax + 1`` independent degrees, i.e. what a Chebyshev filter needs
  ``K ≈ lmax`` terms to resolve).

Each time is the median and the minimum of ``--repeats`` runs after one
warm-up (on a shared machine the minimum is the steadier); set-up costs
(mesh, Laplacian, Legendre tables) are printed apart. Perraudin et al. 2019
(DeepSphere, doi:10.1016/j.ascom.2019.03.004, Fig. 8) report graph filtering
10-20x faster than harmonic-space filtering at high nside.

Measured (2026-11-23, shared 2-core CPU, float32, C = 16, min of 5 / 3 repeats,
``--lmax-factor 2 3``): forward ms, and forward+backward ms

=====  ================  ================  ===============  ===============
nside  cheb K=3 coo      cheb K=3 csr      sht lmax=2nside  sht lmax=3nside−1
=====  ================  ================  ===============  ===============
64     23.6 / 44.6       4.9 / 29.9        44.1 / 64.9      63.1 / 113.6
256    609.5 / 1396.5    376.6 / 1201.7    1342.3 / 2960.9  2006.3 / 4292.3
=====  ================  ================  ===============  ===============

so the harmonic filter is 2-4x slower than K = 3 graph filtering at nside 256
(9x against CSR at nside 64, where the CSR product runs from cache), not
10-20x: the transform batches all channels through BLAS-3 products. Its cost
grows as nside³ against nside², so the gap widens with nside; with K = 9 the
graph filter is already as slow as the transform.

    python tools/bench_spherical_filters.py                      # nside 64 and 256
    python tools/bench_spherical_filters.py --nside 64 --channels 8 --repeats 7
"""
from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch


def _times(fn, repeats: int) -> tuple[float, float]:
    """(median, min) seconds of ``repeats`` calls after one warm-up."""
    fn()                                    # warm-up (caches, allocator)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times)


def bench(nside: int, channels: int, ks: list[int], lmaxes: list[int], repeats: int,
          dtype: torch.dtype) -> list[tuple]:
    from meshclosure.mesh import healpix
    from meshclosure.nn.chebyshev import ChebConv, chebyshev_laplacian
    from meshclosure.sht import HealpixSHT
    from meshclosure.nn.spectral import SphericalHarmonicFilter

    t0 = time.perf_counter()
    mesh = healpix(nside)
    t_mesh = time.perf_counter() - t0
    t0 = time.perf_counter()
    lap = chebyshev_laplacian(mesh, dtype=dtype)
    t_lap = time.perf_counter() - t0
    print(f"nside {nside}: {mesh.n_cells} cells; set-up: mesh {t_mesh:.1f} s, Laplacian "
          f"{t_lap:.2f} s", flush=True)
    x = torch.randn(mesh.n_cells, channels, dtype=dtype, generator=torch.Generator().manual_seed(0))
    rows = []

    def run(layer, call):
        xg = x.clone().requires_grad_(True)

        def fwd():
            with torch.no_grad():
                call(x)

        def fwd_bwd():
            layer.zero_grad(set_to_none=True)
            xg.grad = None
            call(xg).square().sum().backward()
        return (*_times(fwd, repeats), *_times(fwd_bwd, repeats))

    csr, coo = lap.to_sparse_csr(), lap.to_sparse_coo().coalesce()
    for k in ks:
        conv = ChebConv(channels, channels, K=k).to(dtype)
        for fmt, mat in (("coo", coo), ("csr", csr)):
            rows.append((nside, f"cheb K={k} {fmt}", *run(conv, lambda t: conv(t, mat))))
            print(f"  {rows[-1][1]}: done", flush=True)
    for lmax in lmaxes:
        t0 = time.perf_counter()
        sht = HealpixSHT(nside, lmax)
        sht._tables(dtype, torch.device("cpu"))
        t_tab = time.perf_counter() - t0
        filt = SphericalHarmonicFilter(channels, channels, lmax).to(dtype)
        rows.append((nside, f"sht lmax={lmax}", *run(filt, lambda t: filt(t, sht))))
        print(f"  {rows[-1][1]}: done (Legendre tables {t_tab:.1f} s, "
              f"{sht.table_bytes(dtype) / 2**20:.0f} MiB)", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nside", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--K", type=int, nargs="+", default=[3, 9])
    parser.add_argument("--lmax-factor", type=float, nargs="+", default=[2.0],
                        help="lmax = factor * nside (2 or 3 - 1/nside)")
    parser.add_argument("--repeats", type=int, default=5, help="capped at 3 for nside >= 256")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
    dtype = getattr(torch, args.dtype)
    rows = []
    for nside in args.nside:
        lmaxes = [min(int(round(f * nside)), 3 * nside - 1) for f in args.lmax_factor]
        repeats = min(args.repeats, 3) if nside >= 256 else args.repeats
        rows += bench(nside, args.channels, args.K, lmaxes, repeats, dtype)
    print(f"\n{args.dtype}, C = {args.channels} channels in and out, 1 thread; times in ms as "
          f"median / min of the repeats; ratio = min time / min time of 'cheb K={args.K[0]} coo' "
          f"(ChebConv with the COO Laplacian it used before CSR) at the same nside")
    print(f"{'nside':>6s} {'filter':<18s}{'fwd ms':>16s}{'fwd+bwd ms':>18s}{'ratio fwd':>11s}"
          f"{'ratio f+b':>11s}")
    for nside in args.nside:
        mine = [r for r in rows if r[0] == nside]
        base = mine[0]
        for r in mine:
            fwd = f"{1e3 * r[2]:.1f} / {1e3 * r[3]:.1f}"
            both = f"{1e3 * r[4]:.1f} / {1e3 * r[5]:.1f}"
            print(f"{nside:>6d} {r[1]:<18s}{fwd:>16s}{both:>18s}{r[3] / base[3]:>11.2f}"
                  f"{r[5] / base[5]:>11.2f}")


if __name__ == "__main__":
    main()
