"""Periodic Cartesian CNN and FNO closures: staggered face map, conservation, shift equivariance."""
from __future__ import annotations

import pytest
import torch

import meshclosure.nn.cnn  # noqa: F401  (registers "cnn")
import meshclosure.nn.fno  # noqa: F401  (registers "fno")
from meshclosure.graph import to_graph
from meshclosure.mesh import cartesian, healpix
from meshclosure.mesh.cartesian import cells_to_grid, grid_to_cells
from meshclosure.nn import UnsupportedMeshError, build_model
from meshclosure.nn.cnn import face_map, faces_to_staggered, staggered_to_faces
from meshclosure.testing import (assert_antisymmetric, assert_conservative, flip_faces,
                                 permute_faces)

torch.set_num_threads(1)

MESHES = {"16x12": lambda: cartesian(16, 12), "8x8-rect": lambda: cartesian(8, 8, 2.0, 1.0)}
IN, N_VARS = 3, 2
CONFIG = {"cnn": dict(hidden=8, n_layers=3), "fno": dict(width=8, modes=4, n_layers=2,
                                                         proj_hidden=16)}
#: Shift-equivariance tolerance (relative): the CNN only reorders identical sums; the FNO's
#: FFT rounds differently after a shift.
SHIFT_TOL = {"cnn": 1e-12, "fno": 1e-10}


def _x(mesh, seed=1):
    return torch.randn(mesh.n_cells, IN, dtype=torch.float64,
                       generator=torch.Generator().manual_seed(seed))


def _model(name, mesh, seed=0):
    torch.manual_seed(seed)
    return build_model(name, mesh, in_features=IN, n_vars=N_VARS, **CONFIG[name]).double()


# ------------------------------------------------------------------ face map
@pytest.mark.parametrize("mesh_name", list(MESHES))
def test_face_map_constant_east_channel(mesh_name):
    mesh = MESHES[mesh_name]()
    fm = face_map(mesh)
    nx, ny, lx, ly = (mesh.info[k] for k in ("nx", "ny", "lx", "ly"))
    field = torch.zeros(1, 2, ny, nx, dtype=torch.float64)
    field[0, 0] = 1.0                                           # E = 1, N = 0
    phi = staggered_to_faces(fm, field)[:, 0]
    is_x = mesh.face_normal[:, 0].abs() > 0.5
    assert torch.equal(phi[is_x], mesh.face_area[is_x] * mesh.face_normal[is_x, 0])
    assert torch.equal(phi[~is_x], torch.zeros_like(phi[~is_x]))
    assert int(is_x.sum()) == nx * ny and torch.allclose(mesh.face_area[is_x],
                                                           torch.tensor(ly / ny).double())
    # the seam: faces whose owner is east of the neighbour have normal -x and sign -1
    b = mesh.face_cells[1]
    seam = is_x & (fm.sign < 0)
    assert int(seam.sum()) > 0 and torch.equal(b[seam] % nx, torch.full_like(b[seam], nx - 1))


@pytest.mark.parametrize("mesh_name", list(MESHES))
def test_face_map_locations_and_inverse(mesh_name):
    mesh = MESHES[mesh_name]()
    fm = face_map(mesh)
    nx, ny, lx, ly = (mesh.info[k] for k in ("nx", "ny", "lx", "ly"))
    dx, dy = lx / nx, ly / ny
    c, rest = fm.index // (nx * ny), fm.index % (nx * ny)
    j, i = (rest // nx).double(), (rest % nx).double()
    centre = torch.stack([torch.where(c == 0, ((i + 1) * dx) % lx, (i + 0.5) * dx),
                          torch.where(c == 0, (j + 0.5) * dy, ((j + 1) * dy) % ly)], 1)
    diff = (mesh.face_center - centre).abs()
    diff = torch.minimum(diff, torch.tensor([lx, ly]) - diff)   # periodic distance
    assert float(diff.max()) < 1e-12
    s = torch.randn(N_VARS, 2, ny, nx, dtype=torch.float64)
    assert torch.allclose(faces_to_staggered(fm, staggered_to_faces(fm, s)), s, atol=1e-14)
    # flipped orientation: same locations, negated signs; permuted faces: permuted map
    flipped = face_map(flip_faces(mesh))
    assert torch.equal(flipped.index, fm.index) and torch.equal(flipped.sign, -fm.sign)
    perm = torch.randperm(mesh.n_faces, generator=torch.Generator().manual_seed(3))
    permuted = face_map(permute_faces(mesh, perm))
    assert torch.equal(permuted.index, fm.index[perm]) and torch.equal(permuted.sign,
                                                                       fm.sign[perm])


# -------------------------------------------------------------------- models
@pytest.mark.parametrize("mesh_name", list(MESHES))
@pytest.mark.parametrize("name", ["cnn", "fno"])
def test_antisymmetric_conservative(name, mesh_name):
    mesh = MESHES[mesh_name]()
    model, x = _model(name, mesh), _x(mesh)
    assert_antisymmetric(model, mesh, x)
    assert_conservative(model, mesh, x, tol=1e-12)
    phi = model(mesh, x).detach()
    assert phi.shape == (mesh.n_faces, N_VARS) and float(phi.abs().max()) > 1e-6
    # one value per face: the output is exactly the face map of the staggered field
    assert torch.equal(phi, staggered_to_faces(face_map(mesh), model.staggered(mesh, x)))
    # a graph from to_graph gives the same fluxes
    assert torch.equal(model(to_graph(mesh, x)).detach(), phi)


@pytest.mark.parametrize("mesh_name", list(MESHES))
@pytest.mark.parametrize("name", ["cnn", "fno"])
def test_periodic_shift_equivariance(name, mesh_name):
    mesh = MESHES[mesh_name]()
    model, x = _model(name, mesh), _x(mesh)
    fm = face_map(mesh)
    out = faces_to_staggered(fm, model(mesh, x).detach())
    scale = max(1.0, float(out.abs().max()))
    for shift in [(1, 0), (0, 3), (5, 2), (-2, -7)]:
        x_shift = grid_to_cells(mesh, torch.roll(cells_to_grid(mesh, x), shift, (-2, -1)))
        got = faces_to_staggered(fm, model(mesh, x_shift).detach())
        expected = torch.roll(out, shift, (-2, -1))
        assert float((got - expected).abs().max()) <= SHIFT_TOL[name] * scale, shift
        assert float((got - out).abs().max()) > 1e-6            # the shift does change it


@pytest.mark.parametrize("name", ["cnn", "fno"])
def test_forward_backward(name):
    mesh = cartesian(16, 12)
    model = _model(name, mesh)
    x = _x(mesh).requires_grad_(True)
    loss = (model(mesh, x) ** 2).sum()
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    assert bool(torch.isfinite(x.grad).all()) and float(x.grad.abs().max()) > 0


# -------------------------------------------------------------------- refusal
@pytest.mark.parametrize("name", ["cnn", "fno"])
def test_refuses_other_meshes(name):
    with pytest.raises(UnsupportedMeshError, match=r"supports mesh families \('cartesian',\).*"
                                                   r"'healpix'.*Use 'mgn'"):
        build_model(name, healpix(2))
    with pytest.raises(ValueError, match=r"doubly periodic.*periodic='False,False'.*"
                                         r"periodic=True"):
        build_model(name, cartesian(8, 8, periodic=False))
