"""meshclosure.testing: the checks pass on correct models and FAIL, with a location, on
wrong ones."""
from __future__ import annotations

import math

import pytest
import torch

from meshclosure.fv import divergence
from meshclosure.testing import (assert_antisymmetric, assert_commutes, assert_conservative,
                                 assert_equivariant, axis_rotation, flip_faces, permute_faces,
                                 random_rotation, rotate_mesh, small_meshes, translate_mesh)

MESHES = small_meshes()


def _two_point(mesh, x):
    """Reference conservative, invariant flux: (x_a − x_b) A / d; batches along dim 0."""
    a, b = mesh.face_cells
    return (x[..., a, :] - x[..., b, :]) * (mesh.face_area / mesh.cell_distance)[:, None]


@pytest.mark.parametrize("name", list(MESHES))
def test_reference_flux_passes_every_check(name):
    mesh = MESHES[name]
    x = torch.randn(mesh.n_cells, 2, dtype=torch.float64)
    assert_antisymmetric(_two_point, mesh, x, tol=0.0)
    assert_conservative(_two_point, mesh, x)
    assert_equivariant(_two_point, mesh, x, transform="permutation", tol=0.0)
    assert_equivariant(_two_point, mesh, x,
                       transform="rotation" if mesh.is_sphere else "translation")


def test_antisymmetry_violation_is_located():
    mesh = MESHES["healpix-2"]
    x = torch.randn(mesh.n_cells, 1, dtype=torch.float64)

    def biased(m, x):          # antisymmetric part plus a constant: orientation-blind offset
        out = _two_point(m, x).clone()
        out[7] += 0.5
        return out
    with pytest.raises(AssertionError, match=r"antisymmetry \(flipped faces\): max deviation "
                                             r"1 at face 7, column 0"):
        assert_antisymmetric(biased, mesh, x)


def test_directed_form_checked_exactly():
    mesh = MESHES["cartesian-8x8"]

    class Almost(torch.nn.Module):
        def forward(self, m, x):
            return self.directed_fluxes(m, x)[: m.n_faces]

        def directed_fluxes(self, m, x):
            phi = _two_point(m, x)
            return torch.cat([phi, -phi * (1 + 1e-15)])      # off by rounding-level noise
    x = torch.randn(mesh.n_cells, 1, dtype=torch.float64)
    with pytest.raises(AssertionError, match=r"directed form, exact"):
        assert_antisymmetric(Almost(), mesh, x)


def test_log_variance_must_be_symmetric():
    mesh = MESHES["dual-1"]
    x = torch.randn(mesh.n_cells, 1, dtype=torch.float64)

    def hetero(m, x):           # log-variance that flips sign with the face: wrong
        phi = _two_point(m, x)
        return phi, phi
    with pytest.raises(AssertionError, match="log-variance symmetry"):
        assert_antisymmetric(hetero, mesh, x)


def test_conservation_of_fluxes_and_tendencies():
    mesh = MESHES["coarsened"]
    phi = torch.randn(mesh.n_faces, 3, dtype=torch.float64)
    assert_conservative(phi, mesh)
    assert_conservative(-divergence(mesh, phi), mesh, kind="tendency")   # flux form: conserves
    with pytest.raises(AssertionError, match=r"\|Σ V T\| / Σ V\|T\| = 1 in column 0"):
        assert_conservative(torch.rand(mesh.n_cells, dtype=torch.float64), mesh)
    bad = phi.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(AssertionError, match="column 1"):
        assert_conservative(bad, mesh)
    with pytest.raises(ValueError, match="n_faces=102"):
        assert_conservative(torch.ones(5), mesh)


def test_permutation_failure_caught():
    mesh = MESHES["icosahedral-2"]

    def index_dependent(m, x):  # depends on how faces are numbered
        return torch.arange(m.n_faces, dtype=torch.float64)[:, None] * _two_point(m, x)
    x = torch.randn(mesh.n_cells, 1, dtype=torch.float64)
    with pytest.raises(AssertionError, match="permutation equivariance"):
        assert_equivariant(index_dependent, mesh, x, transform="permutation")
    # cell outputs are permuted with the cells
    assert_equivariant(lambda m, x: x * m.cell_volume[:, None], mesh, x, transform="permutation",
                       tol=0.0)


def test_transformed_meshes_are_valid_and_consistent():
    mesh = MESHES["dual-1"]
    flipped = flip_faces(mesh)
    assert flipped.validate() == []
    assert torch.equal(flip_faces(flipped).face_cells, mesh.face_cells)
    gen = torch.Generator().manual_seed(0)
    perm = torch.randperm(mesh.n_faces, generator=gen)
    assert permute_faces(mesh, perm).validate() == []
    R = random_rotation(5)
    rot = rotate_mesh(mesh, R)
    assert rot.validate() == []
    assert torch.allclose(rot.cell_center, mesh.cell_center @ R.T, atol=1e-15)
    plane = MESHES["cartesian-channel-6x4"]
    moved = translate_mesh(plane, [0.4, 0.3])
    assert moved.validate() == []
    assert torch.allclose(moved.cell_center[:, 0], (plane.cell_center[:, 0] + 0.4) % 1.5)


def test_bad_arguments():
    sphere, plane = MESHES["healpix-2"], MESHES["cartesian-8x8"]
    x = torch.zeros(sphere.n_cells, 1, dtype=torch.float64)
    with pytest.raises(ValueError, match="needs a sphere mesh"):
        assert_equivariant(_two_point, plane, torch.zeros(plane.n_cells, 1), transform="rotation")
    with pytest.raises(ValueError, match="needs a planar mesh"):
        assert_equivariant(_two_point, sphere, x, transform="translation")
    with pytest.raises(ValueError, match="transform='mirror'"):
        assert_equivariant(_two_point, sphere, x, transform="mirror")
    with pytest.raises(ValueError, match="permutation of range"):
        permute_faces(sphere, torch.zeros(sphere.n_faces, dtype=torch.long))


def test_mesh_symmetry_and_assert_commutes():
    """The HEALPix quarter turn is a symmetry; a 0.3 rad turn is not; a flux that
    reads a coordinate does not commute with the quarter turn."""
    import math

    from meshclosure.mesh import healpix
    from meshclosure.testing import assert_commutes, axis_rotation, mesh_symmetry

    mesh = healpix(2)
    quarter = axis_rotation([0, 0, 1], math.pi / 2)
    sigma, tau, sign = mesh_symmetry(mesh, quarter)
    # four quarter turns are the identity
    s4 = torch.arange(mesh.n_cells)
    for _ in range(4):
        s4 = sigma[s4]
    assert torch.equal(s4, torch.arange(mesh.n_cells))
    with pytest.raises(AssertionError, match="not a symmetry"):
        mesh_symmetry(mesh, axis_rotation([0, 0, 1], 0.3))
    x = torch.randn(mesh.n_cells, 1, dtype=torch.float64)
    a, b = mesh.face_cells

    def diffusive(m, x):                        # isotropic: commutes
        return (x[a] - x[b]) * (m.face_area / m.cell_distance)[:, None]

    def eastward(m, x):                         # reads the x coordinate: does not
        return diffusive(m, x) * (1 + m.face_center[:, :1])

    assert_commutes(diffusive, mesh, x, quarter)
    with pytest.raises(AssertionError, match="symmetry"):
        assert_commutes(eastward, mesh, x, quarter)


# ------------------------------------------------------------------ batches
B = 3


@pytest.mark.parametrize("name", ["healpix-2", "cartesian-channel-6x4"])
def test_batched_reference_flux_passes_every_check(name):
    mesh = MESHES[name]
    x = torch.randn(B, mesh.n_cells, 2, dtype=torch.float64)
    assert _two_point(mesh, x).shape == (B, mesh.n_faces, 2)
    assert_antisymmetric(_two_point, mesh, x, tol=0.0)
    assert_conservative(_two_point, mesh, x)
    assert_conservative(_two_point(mesh, x), mesh)            # a batched tensor, by its shape
    assert_equivariant(_two_point, mesh, x, transform="permutation", tol=0.0)
    assert_equivariant(_two_point, mesh, x,
                       transform="rotation" if mesh.is_sphere else "translation")


def test_batched_failures_name_the_sample():
    mesh = MESHES["healpix-2"]
    x = torch.randn(B, mesh.n_cells, 1, dtype=torch.float64)

    def biased(m, x):                    # only sample 2 breaks antisymmetry, at face 7
        out = _two_point(m, x).clone()
        out[2, 7] += 0.5
        return out
    with pytest.raises(AssertionError, match=r"sample 2: antisymmetry \(flipped faces\): max "
                                             r"deviation 1 at face 7, column 0"):
        assert_antisymmetric(biased, mesh, x)

    class Directed(torch.nn.Module):     # directed form off in sample 1 only
        def forward(self, m, x):
            return self.directed_fluxes(m, x)[:, : m.n_faces]

        def directed_fluxes(self, m, x):
            phi = _two_point(m, x)
            back = -phi.clone()
            back[1, 4] *= 1 + 1e-15
            return torch.cat([phi, back], 1)
    with pytest.raises(AssertionError, match=r"sample 1: antisymmetry \(directed form, exact\)"):
        assert_antisymmetric(Directed(), mesh, x, check_flip=False)

    def log_var_flips(m, x):             # log-variance antisymmetric in every sample: wrong
        phi = _two_point(m, x)
        return phi, phi
    with pytest.raises(AssertionError, match=r"sample 0: log-variance symmetry"):
        assert_antisymmetric(log_var_flips, mesh, x)

    tendency = torch.rand(B, mesh.n_cells, dtype=torch.float64)
    tendency[0] -= (mesh.cell_volume * tendency[0]).sum() / mesh.cell_volume.sum()
    with pytest.raises(AssertionError, match=r"sample 1: conservation"):
        assert_conservative(tendency, mesh)                    # sample 0 conserves, 1 does not

    def index_dependent(m, x):           # depends on how faces are numbered
        return torch.arange(m.n_faces, dtype=torch.float64)[:, None] * _two_point(m, x)
    with pytest.raises(AssertionError, match=r"sample 0: permutation equivariance"):
        assert_equivariant(index_dependent, mesh, x, transform="permutation")


def test_batched_assert_commutes():
    mesh = MESHES["healpix-2"]
    x = torch.randn(B, mesh.n_cells, 2, dtype=torch.float64)
    quarter = axis_rotation([0, 0, 1], math.pi / 2)
    assert_commutes(_two_point, mesh, x, quarter)

    def with_z(m, x):                    # reads a coordinate: does not commute
        return _two_point(m, x + m.cell_center[:, :1].to(x.dtype))
    with pytest.raises(AssertionError, match=r"sample 0: symmetry"):
        assert_commutes(with_z, mesh, x, quarter)
