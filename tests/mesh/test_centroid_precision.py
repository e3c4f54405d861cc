"""Centroids keep their digits on small cells (issue 15 item 4).

The sphere centroid ``∫ r̂ dA = ½ Σ_e θ_e (a × b)/sin θ_e`` cancels from O(h) terms
down to O(h²); computed relative to the cell's vertex mean (``_build._sphere_centroid``)
it agrees with a 40-digit computation to a few ulp of the coordinates (plus ε h³/A on
slivers of diameter h and area A). The floor is the output itself: a unit-sphere centroid
is stored with ulp ≈ 1.1e-16, i.e. 1e-14 of a cell of diameter 0.01; so the
1e-14-relative bound is checked on well-shaped cells wider than 0.05, the ulp bound on all.
"""
from __future__ import annotations

import mpmath as mp
import numpy as np
import pytest

from meshclosure.mesh import cubed_sphere, icosahedral, irregular_sphere
from meshclosure.mesh._build import PolygonGeometry, _norm2_minus_1, _theta_minus_sin


def _reference(mesh, cells) -> np.ndarray:
    """Centroids of ``cells`` in 40-digit arithmetic, corners normalised in mpmath."""
    v = mesh.vertex_pos.numpy()
    cv = mesh.cell_vertices.numpy()
    out = np.zeros((len(cells), 3))
    with mp.workdps(40):
        for j, i in enumerate(cells):
            corners = []
            for k in cv[i][cv[i] >= 0]:
                x = [mp.mpf(float(t)) for t in v[k]]
                n = mp.sqrt(sum(t * t for t in x))
                corners.append([t / n for t in x])
            D = [mp.mpf(0)] * 3
            for a, b in zip(corners, corners[1:] + corners[:1]):
                c = [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2],
                     a[0] * b[1] - a[1] * b[0]]
                s = mp.sqrt(sum(t * t for t in c))
                theta = mp.atan2(s, sum(x * y for x, y in zip(a, b)))
                D = [d + theta * t / s for d, t in zip(D, c)]
            n = mp.sqrt(sum(t * t for t in D))
            out[j] = [float(mesh.radius * t / n) for t in D]
    return out


def _diameters(mesh, cells) -> np.ndarray:
    v = mesh.vertex_pos.numpy()
    cv = mesh.cell_vertices.numpy()
    p = v[np.where(cv[cells] >= 0, cv[cells], cv[cells][:, :1])]
    return np.linalg.norm(p[:, :, None] - p[:, None, :], axis=-1).max((1, 2))


def _old_centroids(mesh) -> np.ndarray:
    """The former plain sum ``½ Σ θ_e unit(a × b)`` (kept here to show what was lost)."""
    u = mesh.vertex_pos.numpy() / mesh.radius
    cv = mesh.cell_vertices.numpy()
    mask = cv >= 0
    n_per = mask.sum(1)
    k = np.arange(cv.shape[1])[None, :]
    nxt = np.take_along_axis(cv, np.where(k + 1 < n_per[:, None], k + 1, 0), 1)
    a, b = u[np.where(mask, cv, 0)], u[np.where(mask, nxt, 0)]
    ab = np.cross(a, b)
    s = np.linalg.norm(ab, axis=-1)
    theta = np.arctan2(s, (a * b).sum(-1))
    s = np.where(mask, s, 1.0)
    d = np.where(mask[..., None], theta[..., None] * ab / s[..., None], 0.0).sum(1)
    return mesh.radius * d / np.linalg.norm(d, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def sliver_mesh():
    return irregular_sphere(1500, seed=3)


def test_small_cells_match_extended_precision(sliver_mesh):
    mesh = sliver_mesh
    q = mesh.quality()
    assert q["min_angle"] < 1.0 and q["area_ratio"] > 1e3      # the mesh the issue is about
    vol = mesh.cell_volume.numpy()
    rng = np.random.default_rng(0)
    cells = np.unique(np.r_[np.argsort(vol)[:120], rng.choice(mesh.n_cells, 120, replace=False)])
    ref = _reference(mesh, cells)
    diam = _diameters(mesh, cells)
    err = np.linalg.norm(mesh.cell_center.numpy()[cells] - ref, axis=1)
    ulp = np.linalg.norm(np.spacing(np.abs(ref)), axis=1)
    # a few ulp of the coordinates, plus ε h³/A on slivers (h = diameter, A = area ≪ h²),
    # where the flux-form sum itself is that ill-conditioned
    eps = np.finfo(np.float64).eps
    sliver = diam**3 / vol[cells]
    assert (err <= 4 * (ulp + eps * sliver)).all(), (err / (ulp + eps * sliver)).max()
    assert np.median(err / ulp) < 2
    wide = (diam > 0.05) & (diam**2 / vol[cells] < 10)
    assert wide.sum() > 20 and (err[wide] <= 1e-14 * diam[wide]).all(), (err / diam)[wide].max()
    # the plain sum lost up to 1e-8 of the small cells' size; now bounded by the ulp floor
    old = np.linalg.norm(_old_centroids(mesh)[cells] - ref, axis=1)
    assert (old / diam).max() > 100 * (err / diam).max()
    assert vol.min() > 0 and abs(vol.sum() / (4 * np.pi) - 1) < 1e-13


@pytest.mark.parametrize("mesh", [icosahedral(3), icosahedral(3, dual=True), cubed_sphere(8)],
                         ids=["ico", "ico_dual", "cubed"])
def test_family_centroids_at_rounding_level(mesh):
    cells = np.arange(0, mesh.n_cells, max(1, mesh.n_cells // 150))
    ref = _reference(mesh, cells)
    err = np.linalg.norm(mesh.cell_center.numpy()[cells] - ref, axis=1)
    assert err.max() < 1e-15 * mesh.radius
    # the change from the former formula is at the former rounding level
    assert np.abs(_old_centroids(mesh) - mesh.cell_center.numpy()).max() < 1e-13


def test_rotated_copy_keeps_centre_distances(sliver_mesh):
    """A rotated copy of the mesh gives the same centre-to-centre distances (the check
    that the old centroids limited to 1e-8 relative)."""
    from meshclosure.mesh import from_polygons

    mesh = sliver_mesh
    rng = np.random.default_rng(1)
    rot, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    rot *= np.sign(np.linalg.det(rot))
    turned = from_polygons(mesh.vertex_pos.numpy() @ rot.T, mesh.cell_vertices.numpy(),
                           radius=mesh.radius)
    d0, d1 = mesh.cell_distance.numpy(), turned.cell_distance.numpy()
    assert np.abs(d1 / d0 - 1).max() < 1e-11
    assert np.abs(turned.cell_center.numpy() - mesh.cell_center.numpy() @ rot.T).max() < 1e-14


def test_compensated_helpers():
    x = np.array([1e-3, 0.3, 1.0, 2.0])
    with mp.workdps(40):
        want = [float(mp.mpf(float(t)) - mp.sin(mp.mpf(float(t)))) for t in x]
    assert np.allclose(_theta_minus_sin(x), want, rtol=1e-15, atol=0)
    u = np.array([[0.6, 0.8, 1e-17], [1 / 3, 2 / 3, 2 / 3]])
    with mp.workdps(40):
        want = [float(sum(mp.mpf(float(t)) ** 2 for t in row) - 1) for row in u]
    assert np.allclose(_norm2_minus_1(u), want, rtol=1e-12, atol=1e-30)
    with pytest.raises(TypeError):
        PolygonGeometry(1.0, None).polygon_area_centroid(np.eye(3), None)
