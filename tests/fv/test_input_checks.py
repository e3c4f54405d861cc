"""fv operators refuse inputs that would give silently wrong numbers (issue 9, item 7).

Each test checks the exception type and that the message names the argument,
the value received, the rule and the fix.
"""
import pytest
import torch

from meshclosure.errors import ArgumentError, MeshclosureError
from meshclosure.fv import divergence, gradient
from meshclosure.fv.advection import linear_flux, quadratic_flux, upwind_flux
from meshclosure.fv.diffusion import (boundary_diffusive_flux, check_coefficient, diffusive_flux,
                                      face_normal_derivative, laplacian)
from meshclosure.fv.operators import ArgumentTypeError
from meshclosure.mesh import cartesian, healpix


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool])
def test_divergence_refuses_integer_and_bool_fluxes(dtype):
    mesh = cartesian(4, 4)
    flux = torch.ones(mesh.n_faces, dtype=dtype)
    with pytest.raises(ArgumentTypeError) as info:
        divergence(mesh, flux)
    err = info.value
    assert isinstance(err, TypeError) and isinstance(err, MeshclosureError)
    msg = str(err)
    name = str(dtype).replace("torch.", "")
    assert msg.startswith(f"face_flux=Tensor(shape=(32,), dtype={name})")
    assert "floating-point" in msg and "face_flux.double()" in msg
    walls = cartesian(4, 4, periodic=False)
    with pytest.raises(ArgumentTypeError, match=r"^boundary_flux=Tensor\(shape=\(16,\), "
                                                r"dtype=int64\): must be a floating"):
        divergence(walls, torch.zeros(walls.n_faces, dtype=torch.float64),
                   torch.ones(walls.n_boundary_faces, dtype=torch.int64))


def test_divergence_of_float_and_complex_fluxes_still_works():
    mesh = cartesian(4, 4)
    flux = torch.randn(mesh.n_faces, dtype=torch.float64,
                       generator=torch.Generator().manual_seed(0))
    real = divergence(mesh, flux)
    cplx = divergence(mesh, flux.to(torch.complex128) * (1 + 2j))
    assert torch.allclose(cplx, real * (1 + 2j), atol=1e-14)


@pytest.mark.parametrize("op", ["diffusive_flux", "face_normal_derivative", "laplacian",
                                "upwind", "linear", "quadratic", "gradient",
                                "gradient_green_gauss", "gradient_bool"])
def test_operators_refuse_integer_fields(op):
    mesh = cartesian(4, 4)
    q = torch.arange(mesh.n_cells)                      # int64: would be truncated
    U = torch.ones(mesh.n_faces, dtype=torch.float64)
    call = {"diffusive_flux": lambda: diffusive_flux(mesh, q, 0.1),
            "face_normal_derivative": lambda: face_normal_derivative(mesh, q),
            "laplacian": lambda: laplacian(mesh, q),
            "upwind": lambda: upwind_flux(mesh, q, U),
            "linear": lambda: linear_flux(mesh, q, U),
            "quadratic": lambda: quadratic_flux(mesh, q, U),
            "gradient": lambda: gradient(mesh, q),
            "gradient_green_gauss": lambda: gradient(mesh, q, method="green_gauss"),
            "gradient_bool": lambda: gradient(mesh, q > 3)}[op]
    with pytest.raises(TypeError) as info:
        call()
    msg = str(info.value)
    dtype = "bool" if op.endswith("bool") else "int64"
    assert msg.startswith(f"q=Tensor(shape=(16,), dtype={dtype})") and "q.double()" in msg
    # the same values as floats go through: a constant field has zero gradient
    if op.startswith("gradient"):
        method = "green_gauss" if op.endswith("green_gauss") else "least_squares"
        g = gradient(mesh, torch.full((mesh.n_cells,), 3.0, dtype=torch.float64), method=method)
        assert float(g.abs().max()) < 1e-12
    with pytest.raises(TypeError, match=r"^U=Tensor\(shape=\(32,\), dtype=int64\)"):
        upwind_flux(mesh, q.double(), torch.ones(mesh.n_faces, dtype=torch.int64))


@pytest.mark.parametrize("bad, at", [(-0.5, None), (float("nan"), None), (float("inf"), None),
                                     ("negative", 5), ("nan", 9), ("scalar-tensor", None)])
def test_diffusive_flux_refuses_negative_or_nan_kappa(bad, at):
    mesh = healpix(1)
    q = torch.rand(mesh.n_cells, dtype=torch.float64)
    if isinstance(bad, str):
        if bad == "scalar-tensor":
            bad = torch.tensor(-1.0, dtype=torch.float64)
        else:
            kappa = torch.full((mesh.n_faces,), 0.2, dtype=torch.float64)
            kappa[at] = -0.3 if bad == "negative" else float("nan")
            bad = kappa
    with pytest.raises(ArgumentError) as info:
        diffusive_flux(mesh, q, bad)
    msg = str(info.value)
    assert msg.startswith("kappa=")
    assert "diffusivity" in msg and ">= 0" in msg
    if at is not None:
        assert msg.startswith("kappa=Tensor(shape=(24,), dtype=float64)")
        assert f"face {at} has {'-0.3' if at == 5 else 'nan'}" in msg
        assert "kappa.clamp(min=0)" in msg
    elif isinstance(bad, torch.Tensor):
        assert "got -1" in msg


def test_boundary_and_per_face_kappa_rules():
    walls = cartesian(4, 3, periodic=False)
    q = torch.rand(walls.n_cells, dtype=torch.float64)
    kb = torch.ones(walls.n_boundary_faces, dtype=torch.float64)
    kb[0] = -1.0
    with pytest.raises(ArgumentError, match="boundary face 0 has -1"):
        boundary_diffusive_flux(walls, q, 0.0, kb)
    # a valid per-face kappa gives the per-face multiple of the unit flux
    k = torch.linspace(0.0, 1.0, walls.n_faces, dtype=torch.float64)
    assert torch.allclose(diffusive_flux(walls, q, k), k * diffusive_flux(walls, q, 1.0))
    assert check_coefficient(0, 3) == 0.0
    with pytest.raises(TypeError, match=r"^kappa='0.1': must be a number or a tensor"):
        check_coefficient("0.1", 3)
    with pytest.raises(ArgumentTypeError, match=r"^kappa=Tensor\(shape=\(3,\), dtype=int64\)"):
        check_coefficient(torch.ones(3, dtype=torch.int64), 3)
