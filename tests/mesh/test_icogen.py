"""Icosahedral generator (`_icogen`) and file layer (`icosahedral_arrays`)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

import importlib

ico = importlib.import_module("meshclosure.mesh.icosahedral")  # the module, not the function
from meshclosure.mesh._icogen import icosahedral_dual, icosahedral_triangles, pad_polygons

LEVELS = [0, 1, 2, 3, 4, 5]


def solid_angle(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Signed solid angle of unit-vector triangles (Van Oosterom & Strackee 1983,
    doi:10.1109/TBME.1983.325207): tan(Ω/2) = a·(b×c) / (1 + a·b + b·c + c·a)."""
    num = np.einsum("ij,ij->i", a, np.cross(b, c))
    den = 1.0 + np.einsum("ij,ij->i", a, b) + np.einsum("ij,ij->i", b, c) + np.einsum("ij,ij->i", c, a)
    return 2.0 * np.arctan2(num, den)


def corners(v: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return v[t[:, 0]], v[t[:, 1]], v[t[:, 2]]


def dual_fans(level: int):
    """Per polygon side: (generator vertex, p_k, p_{k+1}) of every dual cell."""
    tv, _ = icosahedral_triangles(level)
    dv, (offsets, conn) = icosahedral_dual(level)
    sizes = np.diff(offsets)
    cell = np.repeat(np.arange(len(sizes)), sizes)
    pos = np.arange(len(conn)) - offsets[cell]
    nxt = offsets[cell] + (pos + 1) % sizes[cell]
    return tv[cell], dv[conn], dv[conn[nxt]], cell


@pytest.mark.parametrize("level", LEVELS)
def test_counts(level: int) -> None:
    v, t = icosahedral_triangles(level)
    assert v.shape == (10 * 4**level + 2, 3) and v.dtype == np.float64
    assert t.shape == (20 * 4**level, 3) and t.dtype == np.int64
    edges = np.sort(np.concatenate([t[:, [0, 1]], t[:, [1, 2]], t[:, [2, 0]]]), axis=1)
    uniq, count = np.unique(edges, axis=0, return_counts=True)
    assert len(uniq) == 30 * 4**level
    assert (count == 2).all()  # closed surface: every edge between two triangles
    assert len(v) - len(uniq) + len(t) == 2  # Euler characteristic of the sphere
    dv, (offsets, conn) = icosahedral_dual(level)
    sizes = np.diff(offsets)
    assert dv.shape == (20 * 4**level, 3)
    assert len(sizes) == 10 * 4**level + 2
    assert (sizes == 5).sum() == 12 and (sizes == 6).sum() == len(sizes) - 12
    assert np.array_equal(np.flatnonzero(sizes == 5), np.arange(12))  # the level-0 vertices
    assert np.array_equal(np.sort(conn), np.repeat(np.arange(len(t)), 3))


@pytest.mark.parametrize("level", LEVELS[:-1])
def test_nesting(level: int) -> None:
    v0, t0 = icosahedral_triangles(level)
    v1, t1 = icosahedral_triangles(level + 1)
    v2, t2 = icosahedral_triangles(level + 2)
    # vertex prefix, bit-identical
    assert v1[: len(v0)].tobytes() == v0.tobytes()
    assert v2[: len(v0)].tobytes() == v0.tobytes()
    # the parent's corners are corners of its corner children
    assert np.array_equal(t1[0::4, 0], t0[:, 0])
    assert np.array_equal(t1[1::4, 1], t0[:, 1])
    assert np.array_equal(t1[2::4, 2], t0[:, 2])
    # centroids of the children (one and two levels up) lie inside the parent
    for k, (v, t) in enumerate([(v1, t1), (v2, t2)], start=1):
        x = sum(corners(v, t))
        a, b, c = (p[np.arange(len(t)) // 4**k] for p in corners(v0, t0))
        for p, q in [(a, b), (b, c), (c, a)]:
            assert (np.einsum("ij,ij->i", np.cross(p, q), x) > 0).all()


@pytest.mark.parametrize("level", LEVELS)
def test_orientation_and_norm(level: int) -> None:
    v, t = icosahedral_triangles(level)
    a, b, c = corners(v, t)
    assert (np.einsum("ij,ij->i", np.cross(b - a, c - a), a + b + c) > 0).all()
    assert np.abs(np.linalg.norm(v, axis=1) - 1.0).max() <= 1e-15
    assert np.allclose(v[0], [0.0, 0.0, 1.0], atol=0) and np.allclose(v[11], [0.0, 0.0, -1.0], atol=0)
    dv, _ = icosahedral_dual(level)
    assert np.abs(np.linalg.norm(dv, axis=1) - 1.0).max() <= 1e-15
    g, p, q, _ = dual_fans(level)
    # every side of every dual polygon turns counter-clockwise around its generator
    assert (np.einsum("ij,ij->i", np.cross(p - g, q - g), g) > 0).all()
    # and the polygons are convex: consecutive sides turn left
    _, (offsets, conn) = icosahedral_dual(level)
    sizes = np.diff(offsets)
    cell = np.repeat(np.arange(len(sizes)), sizes)
    pos = np.arange(len(conn)) - offsets[cell]
    r = dv[conn[offsets[cell] + (pos + 2) % sizes[cell]]]
    assert (np.einsum("ij,ij->i", np.cross(q - p, r - q), q) > 0).all()


@pytest.mark.parametrize("level", LEVELS)
def test_dual_vertices_are_circumcentres(level: int) -> None:
    v, t = icosahedral_triangles(level)
    dv, _ = icosahedral_dual(level)
    d = np.stack([np.einsum("ij,ij->i", dv, p) for p in corners(v, t)], axis=1)
    assert np.abs(d - d[:, :1]).max() < 1e-14
    assert (d > 0).all()


@pytest.mark.parametrize("level", LEVELS)
def test_no_duplicate_vertices(level: int) -> None:
    v, _ = icosahedral_triangles(level)
    dv, _ = icosahedral_dual(level)
    for pts in (v, dv):
        assert not cKDTree(pts).query_pairs(r=1e-6)


@pytest.mark.parametrize("level", LEVELS)
def test_areas_sum_to_sphere(level: int) -> None:
    v, t = icosahedral_triangles(level)
    omega = solid_angle(*corners(v, t))
    assert (omega > 0).all()
    assert abs(omega.sum() - 4 * np.pi) < 1e-12
    g, p, q, _ = dual_fans(level)
    omega = solid_angle(g, p, q)
    assert (omega > 0).all()
    assert abs(omega.sum() - 4 * np.pi) < 1e-12


def test_deterministic() -> None:
    v1, t1 = icosahedral_triangles(3)
    v2, t2 = icosahedral_triangles(3)
    assert v1.tobytes() == v2.tobytes() and np.array_equal(t1, t2)


def test_pad_polygons() -> None:
    padded = pad_polygons(np.array([0, 5, 11]), np.arange(11))
    assert np.array_equal(padded, [[0, 1, 2, 3, 4, -1], [5, 6, 7, 8, 9, 10]])
    with pytest.raises(ValueError, match="width=4"):
        pad_polygons(np.array([0, 5]), np.arange(5), width=4)


@pytest.mark.parametrize("dual", [False, True])
@pytest.mark.parametrize("level", [0, 3])
def test_file_round_trip(tmp_path, level: int, dual: bool) -> None:
    vertices, cells = ico.generate_arrays(level, dual)
    path = tmp_path / ico.mesh_filename(level, dual)
    ico.write_vtu(path, vertices, cells)
    v2, c2 = ico.read_vtu(path, level, dual)
    assert v2.tobytes() == vertices.tobytes()
    assert c2.dtype == np.int64 and np.array_equal(c2, cells)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left


@pytest.mark.parametrize("dual", [False, True])
def test_repository_files_match_generator(dual: bool) -> None:
    for level in range(7):
        if not (ico.MESH_DIR / ico.mesh_filename(level, dual)).is_file():
            pytest.skip(f"meshes/{ico.mesh_filename(level, dual)} not generated")
        v, c = ico.icosahedral_arrays(level, dual)
        v0, c0 = ico.generate_arrays(level, dual)
        assert v.tobytes() == v0.tobytes() and np.array_equal(c, c0)


def test_cache(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(ico, "MESH_DIR", tmp_path / "absent")
    monkeypatch.setenv("MESHCLOSURE_CACHE", str(tmp_path / "cache"))
    v, c = ico.icosahedral_arrays(2, dual=True)
    assert (tmp_path / "cache" / "icosahedral_dual_L2.vtu").is_file()
    v2, c2 = ico.icosahedral_arrays(2, dual=True)  # now read from the cache
    assert v2.tobytes() == v.tobytes() and np.array_equal(c2, c)


@pytest.mark.parametrize("dual", [False, True])
def test_truncated_file(tmp_path, dual: bool) -> None:
    from meshclosure.mesh._mesh import MeshError

    path = tmp_path / ico.mesh_filename(3, dual)
    ico.write_vtu(path, *ico.generate_arrays(3, dual))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(MeshError, match="truncated or corrupt") as info:
        ico.read_vtu(path, 3, dual)
    assert str(path) in str(info.value) and "make_icosahedral_meshes.py" in str(info.value)


def test_wrong_level_file(tmp_path) -> None:
    from meshclosure.mesh._mesh import MeshError

    path = tmp_path / ico.mesh_filename(2)
    ico.write_vtu(path, *ico.generate_arrays(1))
    with pytest.raises(MeshError, match="does not hold the level-2 mesh"):
        ico.read_vtu(path, 2)


@pytest.mark.parametrize("level", [-1, 11, 2.5, True, "3"])
def test_bad_level(level) -> None:
    with pytest.raises(ValueError, match=r"Invalid level=.*0 <= level <= 10"):
        ico.icosahedral_arrays(level)
