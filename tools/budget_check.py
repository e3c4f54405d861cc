"""The budget with a learned closure, over 10^4 float64 steps (DESIGN.md §10).

A registry model runs inside ``TracerModel`` and ``BarotropicModel`` through
``ModelClosure``, with sources, relaxation, drag, forcing and boundary fluxes
on. Per SSP-RK3 step the total ``T = Σ V q`` must change by exactly
``Δt Σ_s b_s (∫S^(s) − boundary outflow^(s))`` (``b = (1/6, 1/6, 2/3)``); the
residual, accumulated over the run and divided by ``Σ V|q|`` at the end, is
rounding for every flux-form closure. The ``nodewise`` reference, the same
backbone with a per-cell tendency head added as a source, shows what leaving
the flux form costs.

    python tools/budget_check.py [--steps 10000]
"""
from __future__ import annotations

import argparse
import time

import torch

from meshclosure.closures import FeaturePipeline, ModelClosure
from meshclosure.mesh import cartesian, healpix
from meshclosure.nn import build_model
from meshclosure.solver import BarotropicModel, TracerModel
from meshclosure.testing import budget_residual



def budget(model, state, dt, n_steps, var, sources, outflow):
    """The accumulated budget residual divided by ``Σ V|q|`` at the end."""
    V = model.mesh.cell_volume.double()
    with torch.no_grad():
        residual, state = budget_residual(model, state, dt, n_steps,
                                          lambda s: (V * s[var]).sum(), sources, outflow)
    return residual / float((V * state[var].abs()).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10_000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    rows = []

    mesh = cartesian(8, 6, 1.0, 1.0, periodic=(True, False))
    V = mesh.cell_volume.double()
    U = 0.2 * mesh.face_normal[:, 0].double() * mesh.face_area.double()
    S = torch.randn(mesh.n_cells, dtype=torch.float64, generator=gen)
    target = torch.randn(mesh.n_cells, dtype=torch.float64, generator=gen)
    bflux = 0.1 * torch.randn(mesh.n_boundary_faces, dtype=torch.float64, generator=gen)
    q0 = {"q": torch.randn(mesh.n_cells, dtype=torch.float64, generator=gen)}
    pipe = FeaturePipeline(["q"])
    src = lambda t, s: (V * (S - 0.5 * (s["q"] - target))).sum()  # noqa: E731
    out = lambda t: bflux.sum()  # noqa: E731
    torch.manual_seed(0)
    mgn = build_model("mgn", mesh, in_features=3, hidden=16, n_blocks=2).double()
    closure = 0.05 * ModelClosure(mgn, pipe)
    for label, model in (
            ("mgn (flux form)", TracerModel(mesh, U, kappa=0.01, source=S,
                                            relaxation=(0.5, target), boundary_flux=bflux,
                                            closure=closure)),
            ("nodewise (tendency)", TracerModel(
                mesh, U, kappa=0.01, relaxation=(0.5, target), boundary_flux=bflux,
                source=(lambda node: lambda t, s: S + 0.05 * node(mesh, pipe(mesh, s))[:, 0])(
                    build_model("nodewise", mesh, in_features=3, hidden=16,
                                n_blocks=2).double())))):
        t0 = time.perf_counter()
        r = budget(model, dict(q0), 0.01, args.steps, "q", src, out)
        rows.append(("TracerModel, walls + boundary flux, source, relaxation", label, r,
                     time.perf_counter() - t0))

    mesh = healpix(4)
    V = mesh.cell_volume.double()
    F = torch.randn(mesh.n_cells, dtype=torch.float64, generator=gen)
    pipe = FeaturePipeline(["zeta", "q"])
    torch.manual_seed(0)
    mgn = build_model("mgn", mesh, in_features=pipe.n_features, n_vars=2, hidden=16,
                      n_blocks=2).double()
    model = BarotropicModel(mesh, omega=1.0, nu=0.01, drag=0.3, forcing=F, kappa=0.01,
                            closure=0.05 * ModelClosure(mgn, pipe))
    s0 = {"zeta": 0.1 * torch.randn(mesh.n_cells, dtype=torch.float64, generator=gen),
          "q": torch.randn(mesh.n_cells, dtype=torch.float64, generator=gen)}
    t0 = time.perf_counter()
    r = budget(model, s0, 0.01, args.steps, "zeta",
               lambda t, s: (V * (F - 0.3 * s["zeta"])).sum(), lambda t: 0.0)
    rows.append(("BarotropicModel healpix:4, drag + forcing (zeta)", "mgn (flux form)", r,
                 time.perf_counter() - t0))

    print(f"| model | closure | budget residual / Σ V|q| after {args.steps} steps | wall |")
    print("|---|---|---|---|")
    for case, label, r, wall in rows:
        print(f"| {case} | {label} | {r:.2e} | {wall:.0f} s |")


if __name__ == "__main__":
    main()
