"""One closure plumbing for every model: misuse refused with a clear message, conservation kept.

Each misuse test checks the exception type and that the message names the
argument, the value received and the fix (issue 9, item 7).
"""
import pytest
import torch

from meshclosure.errors import ArgumentError, MeshclosureError
from meshclosure.mesh import cartesian, healpix, icosahedral
from meshclosure.solver import BarotropicModel, BoussinesqModel, ClosureError, TracerModel
from meshclosure.solver.flows import constant_transport, solid_body_transport

MESHES = {
    "cartesian": lambda: cartesian(6, 5, 1.0, 1.0),
    "cartesian_walls": lambda: cartesian(6, 5, 1.0, 1.0, periodic=False),
    "healpix": lambda: healpix(2),
    "icosahedral": lambda: icosahedral(1),
    "icosahedral_dual": lambda: icosahedral(1, dual=True),
}


def _tracer(mesh, **kw):
    U = (solid_body_transport(mesh, 0.3, u0=1.0) if mesh.is_sphere
         else constant_transport(mesh, (1.0, 0.4)))
    return TracerModel(mesh, U, **kw)


def _q(mesh, seed=0):
    return torch.rand(mesh.n_cells, dtype=torch.float64,
                      generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------- refused closures
def test_closure_returning_another_variable_is_refused():
    mesh = cartesian(4, 4)
    model = _tracer(mesh, closure=lambda t, s, m: {"b": torch.zeros(m.n_faces,
                                                                     dtype=torch.float64)})
    with pytest.raises(ClosureError) as info:
        model.rhs(0.0, {"q": _q(mesh)})
    msg = str(info.value)
    assert isinstance(info.value, (ValueError, TypeError, MeshclosureError))
    assert msg.startswith("closure=")                               # the argument
    assert "returned keys ['b']" in msg                             # the value
    assert "only for the model's variables ['q']" in msg            # the rule
    assert "rename 'b' to one of ['q']" in msg and "var=" in msg    # the fix


def test_closure_returning_unknown_variable_refused_in_barotropic_and_boussinesq():
    mesh = cartesian(8, 6, 1.0, 1.0, periodic=(True, False))
    zeta = _q(mesh) - 0.5
    bad = lambda t, s, m: {"theta": torch.zeros(m.n_faces, dtype=torch.float64)}  # noqa: E731
    for model, state in ((BarotropicModel(mesh, closure=bad), {"zeta": zeta, "q": zeta}),
                         (BoussinesqModel(mesh, closure=bad), {"zeta": zeta, "b": zeta})):
        with pytest.raises(ClosureError) as info:
            model.rhs(0.0, state)
        msg = str(info.value)
        assert "returned keys ['theta']" in msg
        assert f"variables {['zeta'] + [k for k in state if k != 'zeta']}" in msg
        assert "rename 'theta'" in msg


def test_closure_returning_bare_tensor_is_refused():
    mesh = cartesian(4, 4)
    model = _tracer(mesh, closure=lambda t, s, m: torch.zeros(m.n_faces, dtype=torch.float64))
    with pytest.raises(ClosureError) as info:
        model.rhs(0.0, {"q": _q(mesh)})
    msg = str(info.value)
    assert "closure=<returned Tensor(shape=(32,), dtype=float64)>" in msg
    assert "must return a dict" in msg and "return a dict mapping 'q' to the flux" in msg


@pytest.mark.parametrize("kind", ["shape", "int", "bool", "complex", "device", "list"])
def test_closure_flux_of_wrong_shape_dtype_device_is_refused(kind):
    mesh = cartesian(4, 4)
    n = mesh.n_faces
    flux = {"shape": torch.zeros(n - 1, dtype=torch.float64),
            "int": torch.zeros(n, dtype=torch.int64),
            "bool": torch.zeros(n, dtype=torch.bool),
            "complex": torch.zeros(n, dtype=torch.complex128),
            "device": torch.empty(n, dtype=torch.float64, device="meta"),
            "list": [0.0] * n}[kind]
    model = _tracer(mesh, closure=lambda t, s, m: {"q": flux})
    with pytest.raises(ClosureError) as info:
        model.rhs(0.0, {"q": _q(mesh)})
    msg = str(info.value)
    assert msg.startswith("closure=<returned {'q': ")
    expected = {"shape": ("shape=(31,)", "(n_faces, ...) = (32,)", "mesh.n_faces = 32"),
                "int": ("dtype=int64", "real floating-point", "flux.to(state['q'].dtype)"),
                "bool": ("dtype=bool", "real floating-point", "flux.to(state['q'].dtype)"),
                "complex": ("dtype=complex128", "real floating-point", ".to(state['q'].dtype)"),
                "device": ("device=meta", "state's device cpu", ".to(state['q'].device)"),
                "list": ("[0.0", "torch tensors", "torch.as_tensor(flux)")}[kind]
    for part in expected:
        assert part in msg, (part, msg)


def test_float32_closure_in_float64_model_is_promoted_and_empty_dict_allowed():
    mesh = cartesian(4, 4)
    phi = torch.randn(mesh.n_faces, generator=torch.Generator().manual_seed(1))
    q = _q(mesh)
    ref = _tracer(mesh, closure=lambda t, s, m: {"q": phi.double()}).rhs(0.0, {"q": q})["q"]
    out = _tracer(mesh, closure=lambda t, s, m: {"q": phi}).rhs(0.0, {"q": q})["q"]
    assert out.dtype == torch.float64 and torch.equal(out, ref)
    none = _tracer(mesh, closure=lambda t, s, m: {}).rhs(0.0, {"q": q})["q"]
    assert torch.equal(none, _tracer(mesh).rhs(0.0, {"q": q})["q"])
    assert not torch.allclose(none, out)


def test_integer_state_refused_by_models():
    mesh = cartesian(4, 4)
    with pytest.raises(TypeError) as info:
        _tracer(mesh).rhs(0.0, {"q": torch.ones(16, dtype=torch.int64)})
    msg = str(info.value)
    assert "state['q']=Tensor(shape=(16,), dtype=int64)" in msg and ".double()" in msg
    with pytest.raises(TypeError, match=r"state\['q'\]=Tensor\(shape=\(16,\), dtype=bool\)"):
        BarotropicModel(mesh).rhs(0.0, {"zeta": _q(mesh), "q": torch.ones(16, dtype=torch.bool)})


# ------------------------------------------------------------------------ coefficients
@pytest.mark.parametrize("value, shown, detail", [
    (-0.1, "kappa=-0.1", "finite number >= 0"),
    (float("nan"), "kappa=nan", "finite number >= 0"),
    ("per-face-negative", "kappa=Tensor(shape=(32,), dtype=float64)", "face 7 has -0.01"),
    ("per-face-nan", "kappa=Tensor(shape=(32,), dtype=float64)", "face 3 has nan"),
])
def test_negative_or_nan_diffusivity_refused_by_tracer(value, shown, detail):
    mesh = cartesian(4, 4)
    if isinstance(value, str):
        kappa = torch.full((mesh.n_faces,), 0.1, dtype=torch.float64)
        kappa[7 if "negative" in value else 3] = -0.01 if "negative" in value else float("nan")
        value = kappa
    with pytest.raises(ArgumentError) as info:
        _tracer(mesh, kappa=value)
    msg = str(info.value)
    assert msg.startswith(shown) and detail in msg and "diffusivity" in msg
    assert ("switch the term off" in msg) or ("kappa.clamp(min=0)" in msg)   # the fix


def test_negative_viscosity_and_noise_refused_by_barotropic():
    mesh = healpix(1)
    nu = torch.full((mesh.n_faces,), 1e-3, dtype=torch.float64)
    nu[2] = -1e-3
    with pytest.raises(ArgumentError) as info:
        BarotropicModel(mesh, nu=nu)
    msg = str(info.value)
    assert msg.startswith("nu=Tensor(shape=(24,)") and "face 2 has -0.001" in msg
    assert "viscosity" in msg and "nu.clamp(min=0)" in msg
    with pytest.raises(ArgumentError, match=r"^kappa=-1\.0: must be a finite number >= 0"):
        BarotropicModel(mesh, kappa=-1.0)
    with pytest.raises(ArgumentError, match=r"^flux_noise=-0\.5: .*standard deviation"):
        TracerModel(mesh, torch.zeros(mesh.n_faces, dtype=torch.float64), flux_noise=-0.5)


def test_per_face_viscosity_accepted_and_equal_to_scalar():
    mesh = healpix(1)
    zeta = _q(mesh) - 0.5
    a = BarotropicModel(mesh, omega=1.0, nu=0.01).rhs(0.0, {"zeta": zeta})["zeta"]
    nu = torch.full((mesh.n_faces,), 0.01, dtype=torch.float64)
    b = BarotropicModel(mesh, omega=1.0, nu=nu).rhs(0.0, {"zeta": zeta})["zeta"]
    assert torch.allclose(a, b, rtol=0, atol=1e-15 * float(a.abs().max()))


# ----------------------------------------------------------- conservation, every family
@pytest.mark.parametrize("family", sorted(MESHES))
def test_conservation_with_closure_and_noise_every_family(family):
    """Σ V dq/dt = (sources − boundary outflow) to rounding through the one plumbing,
    whatever the closure and the noise return."""
    mesh = MESHES[family]()
    gen = torch.Generator().manual_seed(4)
    phi = torch.randn(mesh.n_faces, dtype=torch.float64, generator=gen)
    q = _q(mesh, 1)

    def closure(t, state, m):
        return {k: phi * (1 + v[m.face_cells[0]]) for k, v in state.items()}

    V = mesh.cell_volume
    sigma = torch.rand(mesh.n_faces, dtype=torch.float64, generator=gen)
    tracer = _tracer(mesh, kappa=0.01, closure=closure, flux_noise=sigma,
                     generator=torch.Generator().manual_seed(5))
    dq = tracer.rhs(0.0, {"q": q})["q"]
    scale = float((V * (phi.abs().max() + q.abs()) / V.min()).sum())
    assert abs(float((V * dq).sum())) <= 1e-14 * scale
    zeta = q - float((V * q).sum() / V.sum())
    model = BarotropicModel(mesh, nu=1e-3, kappa=1e-3, closure=closure, flux_noise=0.1,
                            generator=torch.Generator().manual_seed(6))
    out = model.rhs(0.0, {"zeta": zeta, "q": q})
    for name in ("zeta", "q"):
        assert abs(float((V * out[name]).sum())) <= 1e-14 * scale, name
    if mesh.n_boundary_faces and not mesh.is_sphere:
        bous = BoussinesqModel(mesh, nu=1e-3, kappa=1e-3, closure=closure, flux_noise=0.1)
        out = bous.rhs(0.0, {"zeta": zeta, "b": q})
        assert abs(float((V * out["b"]).sum())) <= 1e-14 * scale
