"""Shared test configuration: one dtype-tolerance table and the mesh-family fixtures.

Every mesh-level test runs across the cases in :data:`MESH_CASES` (each family
at three or more resolutions, including a sphere of radius != 1) through the
``mesh_case`` fixture, and across dtypes through ``dtype`` / ``tol``.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest
import torch

from meshclosure.mesh import Mesh, cartesian, from_meshio, healpix, icosahedral

# Small tensors: one intra-op thread avoids oversubscription on shared 2-core machines
# (measured 4x slower test runs with the default under load).
torch.set_num_threads(1)

# ---------------------------------------------------------------- tolerances
#: Relative tolerance of an exactly-zero-up-to-rounding quantity, per dtype.
TOLERANCE = {torch.float64: 1e-12, torch.float32: 1e-5}

DTYPES = list(TOLERANCE)


@pytest.fixture(params=DTYPES, ids=lambda d: str(d).removeprefix("torch."))
def dtype(request) -> torch.dtype:
    return request.param


@pytest.fixture
def tol(dtype) -> float:
    return TOLERANCE[dtype]


@pytest.fixture
def tolerance() -> dict:
    """The whole table, for tests that pick a dtype themselves."""
    return TOLERANCE


# ------------------------------------------------------ meshes built in tests
def square_with_hole_points(n: int, seed: int = 0):
    """Unit square with the square hole [1/4, 3/4]², triangulated by Delaunay.

    ``n`` (a multiple of 4) grid intervals per side; interior grid points not on
    the outer or hole boundary are jittered by 0.1/n, so the mesh is not a
    structured grid. Triangles whose centroid is in the hole are dropped.
    Exact area: 1 - 1/4 = 3/4.

    Returns points (n_points, 3) with z = 0 and triangles (n_tri, 3), CCW.
    """
    from scipy.spatial import Delaunay

    assert n % 4 == 0
    k = np.arange(n + 1)
    ii, jj = np.meshgrid(k, k, indexing="ij")
    ii, jj = ii.ravel(), jj.ravel()
    lo, hi = n // 4, 3 * n // 4
    in_hole = (ii > lo) & (ii < hi) & (jj > lo) & (jj < hi)
    ii, jj = ii[~in_hole], jj[~in_hole]
    pts = np.stack([ii, jj], 1) / n
    on_outer = (ii == 0) | (ii == n) | (jj == 0) | (jj == n)
    on_hole = ((ii >= lo) & (ii <= hi) & (jj >= lo) & (jj <= hi))
    free = ~(on_outer | on_hole)
    rng = np.random.default_rng(seed)
    pts[free] += rng.uniform(-0.1, 0.1, size=(int(free.sum()), 2)) / n
    tri = Delaunay(pts).simplices
    c = pts[tri].mean(1)
    keep = ~((c[:, 0] > 0.25) & (c[:, 0] < 0.75) & (c[:, 1] > 0.25) & (c[:, 1] < 0.75))
    tri = tri[keep]
    p = pts[tri]
    signed = (p[:, 1, 0] - p[:, 0, 0]) * (p[:, 2, 1] - p[:, 0, 1]) \
        - (p[:, 2, 0] - p[:, 0, 0]) * (p[:, 1, 1] - p[:, 0, 1])
    tri = np.where((signed < 0)[:, None], tri[:, ::-1], tri)
    return np.c_[pts, np.zeros(len(pts))], tri


def square_with_hole_meshio(n: int):
    import meshio

    pts, tri = square_with_hole_points(n)
    return meshio.Mesh(pts, [("triangle", tri.astype(np.int32))])


def cubed_sphere_meshio(n: int, radius: float = 1.0):
    """Gnomonic cubed sphere: each of the 6 cube faces an ``n × n`` grid of quads,
    projected to the sphere of radius ``radius``, shared vertices merged.
    Quads are counter-clockwise seen from outside."""
    import meshio

    pts, quads = [], []
    # (normal axis, sign): face spanned by axes u, v with u x v = outward normal
    for axis in range(3):
        for sign in (-1, 1):
            normal = np.zeros(3)
            normal[axis] = sign
            u = np.zeros(3)
            u[(axis + 1) % 3] = 1
            v = np.cross(normal, u)
            k = np.arange(n + 1)
            a, b = np.meshgrid(k, k, indexing="ij")  # integer lattice, side n
            lattice = (n * normal[None, None] + (2 * a[..., None] - n) * u
                       + (2 * b[..., None] - n) * v)  # coordinates in [-n, n], integers
            base = sum(len(p) for p in pts)
            pts.append(lattice.reshape(-1, 3))
            idx = base + np.arange((n + 1) ** 2).reshape(n + 1, n + 1)
            q = np.stack([idx[:-1, :-1], idx[1:, :-1], idx[1:, 1:], idx[:-1, 1:]], -1)
            quads.append(q.reshape(-1, 4))
    pts = np.concatenate(pts).round().astype(np.int64)
    quads = np.concatenate(quads)
    uniq, inv = np.unique(pts, axis=0, return_inverse=True)
    quads = inv.reshape(-1)[quads]
    sphere = uniq / np.linalg.norm(uniq, axis=1, keepdims=True) * radius
    return meshio.Mesh(sphere, [("quad", quads.astype(np.int32))])


# ------------------------------------------------------------------ families
@dataclass(frozen=True)
class MeshCase:
    """One mesh of the test matrix with its exact, independently known properties."""

    name: str
    build: Callable[[], Mesh]
    area: float            # exact domain area
    euler: int             # Euler characteristic V - E + F
    kind: str              # "periodic", "bounded", "channel", "sphere", "planar-hole"
    family: str

    @property
    def is_sphere(self) -> bool:
        return self.kind == "sphere"

    @property
    def bounded(self) -> bool:
        return self.kind in ("bounded", "channel", "planar-hole")

    def mesh(self) -> Mesh:
        return _cached(self.name)


def _cases() -> dict[str, MeshCase]:
    cases = []
    add = cases.append
    for nx, ny, lx, ly in ((4, 3, 2.0, 1.5), (8, 6, 2.0, 1.5), (16, 12, 2.0, 1.5)):
        add(MeshCase(f"cartesian-periodic-{nx}x{ny}",
                     functools.partial(cartesian, nx, ny, lx, ly, periodic=True),
                     lx * ly, 0, "periodic", "cartesian"))
    for nx, ny, lx, ly in ((3, 2, 3.0, 1.0), (6, 4, 3.0, 1.0), (12, 8, 3.0, 1.0)):
        add(MeshCase(f"cartesian-bounded-{nx}x{ny}",
                     functools.partial(cartesian, nx, ny, lx, ly, periodic=False),
                     lx * ly, 1, "bounded", "cartesian"))
    for nx, ny, lx, ly in ((4, 2, 1.0, 0.7), (8, 4, 1.0, 0.7), (16, 8, 1.0, 0.7)):
        add(MeshCase(f"cartesian-channel-{nx}x{ny}",
                     functools.partial(cartesian, nx, ny, lx, ly, periodic=(True, False)),
                     lx * ly, 0, "channel", "cartesian"))
    for nside in (1, 2, 4, 8):
        add(MeshCase(f"healpix-{nside}", functools.partial(healpix, nside),
                     4 * math.pi, 2, "sphere", "healpix"))
    add(MeshCase("healpix-4-R2.5", functools.partial(healpix, 4, radius=2.5),
                 4 * math.pi * 2.5**2, 2, "sphere", "healpix"))
    for level in range(4):
        add(MeshCase(f"icosahedral-{level}", functools.partial(icosahedral, level),
                     4 * math.pi, 2, "sphere", "icosahedral"))
    add(MeshCase("icosahedral-2-R6371", functools.partial(icosahedral, 2, radius=6371.0),
                 4 * math.pi * 6371.0**2, 2, "sphere", "icosahedral"))
    for level in range(4):
        add(MeshCase(f"dual-{level}", functools.partial(icosahedral, level, dual=True),
                     4 * math.pi, 2, "sphere", "dual"))
    add(MeshCase("dual-2-R0.3", functools.partial(icosahedral, 2, dual=True, radius=0.3),
                 4 * math.pi * 0.09, 2, "sphere", "dual"))
    for n in (4, 8, 12):
        add(MeshCase(f"meshio-hole-{n}", lambda n=n: from_meshio(square_with_hole_meshio(n)),
                     0.75, 0, "planar-hole", "meshio"))
    for n, r in ((1, 1.0), (2, 1.0), (4, 1.0), (3, 7.0)):
        add(MeshCase(f"meshio-cubed-{n}-R{r:g}",
                     lambda n=n, r=r: from_meshio(cubed_sphere_meshio(n, r)),
                     4 * math.pi * r**2, 2, "sphere", "meshio"))
    return {c.name: c for c in cases}


MESH_CASES = _cases()


@functools.lru_cache(maxsize=None)
def _cached(name: str) -> Mesh:
    return MESH_CASES[name].build()


def _subset(pred) -> list[str]:
    return [n for n, c in MESH_CASES.items() if pred(c)]


@pytest.fixture(params=list(MESH_CASES))
def mesh_case(request) -> MeshCase:
    """Every mesh case (all families, >= 3 resolutions each)."""
    return MESH_CASES[request.param]


@pytest.fixture(params=_subset(lambda c: c.is_sphere))
def sphere_case(request) -> MeshCase:
    return MESH_CASES[request.param]


@pytest.fixture(params=_subset(lambda c: not c.is_sphere))
def planar_case(request) -> MeshCase:
    return MESH_CASES[request.param]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def torch_gen() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


# ------------------------------------------------------ spherical harmonics
def real_harmonics(x: torch.Tensor, lmax: int = 4) -> tuple[torch.Tensor, list[int]]:
    """All real solid harmonics ``r^l Y_l^m`` (unnormalised) of degree 1..lmax at ``x``.

    ``Π_l^m(z, r²) · Re/Im (x + i y)^m`` with ``Π`` from the recurrence of
    ``d^m P_l / dz^m`` made homogeneous; harmonic polynomials of degree l.
    Returns ``(n, n_lm)`` and the degree of each column.
    """
    X, Y, Z = x.unbind(1)
    r2 = (x * x).sum(1)
    cols, degrees = [], []
    c, s = torch.ones_like(X), torch.zeros_like(X)
    for m in range(lmax + 1):
        pis = {m: torch.full_like(X, float(math.prod(range(1, 2 * m, 2))))}
        pis[m + 1] = (2 * m + 1) * Z * pis[m]
        for ll in range(m + 2, lmax + 1):
            pis[ll] = ((2 * ll - 1) * Z * pis[ll - 1] - (ll + m - 1) * r2 * pis[ll - 2]) / (ll - m)
        for ll in range(max(m, 1), lmax + 1):
            cols.append(pis[ll] * c)
            degrees.append(ll)
            if m > 0:
                cols.append(pis[ll] * s)
                degrees.append(ll)
        c, s = X * c - Y * s, X * s + Y * c
    return torch.stack(cols, 1), degrees


# ------------------------------------------------------------ training data (tests/train)
def small_kinematic():
    """``kinematic`` on a 16² plane coarse-grained to 8²: seconds to generate."""
    from meshclosure.data.scenarios import get_scenario

    return get_scenario("kinematic", mesh="cartesian:16", factor=2, spinup_time=0.5)


@pytest.fixture(scope="session")
def kinematic_traj(tmp_path_factory):
    """A trajectory dataset: 17 main samples (windows of up to 10 steps in train) + 3 OOD."""
    from meshclosure.data import generate

    out = tmp_path_factory.mktemp("train_data") / "kinematic_traj.nc"
    generate(small_kinematic(), out, n_samples=17, ood_samples=3, trajectory=True,
             progress=False)
    return out
