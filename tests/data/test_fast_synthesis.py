"""Fast random-field synthesis of the truth scenarios (issue 14, item 0) and their device keyword.

:class:`~meshclosure.data.random_flows.ModeSynthesis` must give the dense mode sums
to rounding; the scenarios synthesise blocks of OU samples aligned to absolute
sample indices, so a resumed run equals an uninterrupted one bit for bit.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from meshclosure.data import get_scenario
from meshclosure.data.random_flows import ModeSynthesis, OrnsteinUhlenbeck, mode_basis
from meshclosure.data.scenarios.base import BLOCK, _Augmented
from meshclosure.data.targets import subgrid_targets
from meshclosure.errors import ArgumentError
from meshclosure.fv.diffusion import diffusive_flux
from meshclosure.fv.operators import divergence, transport_from_streamfunction
from meshclosure.mesh import cartesian
from meshclosure.mesh.spec import parse_mesh_spec

TOL = 1e-13      # relative to the field's largest value: a reordered sum


def _check_against_dense(mesh, band, points=None, method=None):
    syn = ModeSynthesis(mesh, band, points, method=method)
    B = mode_basis(mesh, band, points)[0]
    a = torch.as_tensor(np.random.default_rng(3).standard_normal((5, syn.n_modes)))
    ref = a @ B.T
    out = syn(a)
    assert out.shape == ref.shape
    assert float((out - ref).abs().max()) <= TOL * float(ref.abs().max())
    one = syn(a[2])                                  # one amplitude vector: the same row
    assert float((one - ref[2]).abs().max()) <= TOL * float(ref.abs().max())
    if method is not None:
        assert syn.method == method
    return syn


@pytest.mark.parametrize("where", ["vertices", "cells"])
@pytest.mark.parametrize("band", [(1, 2), (3, 6)])
def test_fft_synthesis_equals_dense_on_a_non_square_plane(where, band):
    # nx != ny and lx != ly: catches swapped axes, the sin sign and the m = 0 half-line
    mesh = cartesian(12, 10, 1.3, 0.7)
    pts = None if where == "vertices" else mesh.cell_center      # cells: offset grid
    _check_against_dense(mesh, band, pts, method="fft")


def test_fft_synthesis_handles_aliased_modes():
    # a band beyond the grid's Nyquist number: several modes share an FFT bin
    mesh = cartesian(6, 4, 1.0, 0.5)
    _check_against_dense(mesh, (1, 5), method="fft")


@pytest.mark.parametrize("spec, n_flips", [("healpix:4", 8), ("icosahedral:2", 4)])
def test_symmetric_synthesis_equals_dense_on_spheres(spec, n_flips):
    mesh = parse_mesh_spec(spec)
    for band in [(1, 3), (4, 9)]:
        syn = _check_against_dense(mesh, band, method="symmetric")
        # the group the reflections generate; one point per orbit (points on a mirror
        # have smaller orbits, many on so small a mesh)
        assert syn._sym_chars.shape[0] == n_flips
        assert syn._sym_n_reps < mesh.n_vertices / 2
    _check_against_dense(mesh, (2, 5), mesh.cell_center)        # any method, same values
    auto = ModeSynthesis(mesh, (1, 2))
    assert auto.method == "dense"                                # few modes: dense is fastest


def test_dense_fallback_for_scattered_points():
    mesh = cartesian(8, 8)
    pts = torch.as_tensor(np.random.default_rng(0).uniform(0, 1, (50, 2)))
    _check_against_dense(mesh, (1, 3), pts, method="dense")
    assert ModeSynthesis(mesh, (1, 6), pts).method == "dense"    # not a grid: dense


def test_synthesis_rejects_wrong_amplitude_shape_and_method():
    syn = ModeSynthesis(cartesian(8, 8), (1, 2))
    with pytest.raises(ValueError, match="amplitudes must have shape"):
        syn(torch.zeros(syn.n_modes + 1))
    with pytest.raises(ArgumentError, match="method='fft': does not apply"):
        ModeSynthesis(parse_mesh_spec("healpix:2"), (1, 2), method="fft")
    with pytest.raises(ArgumentError, match="method='sht'"):
        ModeSynthesis(cartesian(8, 8), (1, 2), method="sht")


def test_ou_block_equals_single_samples():
    sigma, tau = np.linspace(0.5, 2.0, 7), np.linspace(0.1, 1.0, 7)
    ou = OrnsteinUhlenbeck(sigma, tau, 0.01, seed=[5, 1], window=4)
    block = ou.samples(10, 30)
    fresh = OrnsteinUhlenbeck(sigma, tau, 0.01, seed=[5, 1], window=4)
    assert block.shape == (20, 7)
    for n in (29, 10, 17):                  # any order, replaying where the window ends
        assert np.array_equal(block[n - 10], fresh.sample(n))
    with pytest.raises(ValueError, match="start <= stop"):
        ou.samples(5, 2)


@pytest.mark.parametrize("name, mesh", [("kinematic", "cartesian:16"),
                                        ("kinematic", "healpix:4"),
                                        ("barotropic", "cartesian:16")])
def test_resumed_run_equals_uninterrupted_bit_for_bit(name, mesh):
    """A run resumed from a saved ``(t, state)`` in a fresh process equals the run that
    went on, bit for bit: nothing depends on which blocks were synthesised before. The
    resume point (step 30) lies inside block 0, the end (step 70) past its boundary."""
    def scenario():
        return get_scenario(name, mesh, factor=2, seed=4)

    sc = scenario()
    t_mid, mid = sc.advance(0.0, sc.initial_state(), 30)
    t_end, went_on = sc.advance(t_mid, mid, BLOCK + 6 - 30)
    t_res, resumed = scenario().advance(t_mid, mid, BLOCK + 6 - 30)
    assert t_res == t_end
    for v in went_on:
        assert torch.equal(went_on[v], resumed[v]), v
    # the random fields are pure functions of t: in any order, in a fresh or a used scenario
    times = [t_end, 3.5 * sc.dt, (BLOCK - 0.5) * sc.dt, t_mid]
    fresh = scenario()
    for t in times:
        a = sc.forcing(t) if name == "barotropic" else sc.transport(t)
        b = fresh.forcing(t) if name == "barotropic" else fresh.transport(t)
        assert torch.equal(a, b)


@pytest.mark.parametrize("mesh", ["cartesian:16x8", "healpix:4", "icosahedral:2"])
def test_kinematic_flow_equals_the_dense_mode_sum(mesh):
    sc = get_scenario("kinematic", mesh, factor=2, seed=1)
    p, fine = sc.params, sc.fine
    Bl = mode_basis(fine, p["large_band"])[0]
    Bs = mode_basis(fine, p["small_band"])[0]
    nl = Bl.shape[1]
    for t in (0.0, 2.5 * sc.dt, (BLOCK - 0.5) * sc.dt, 70 * sc.dt):  # on, between, across blocks
        a = torch.as_tensor(sc.ou(t))
        g = sc.modulation(sc.N(fine.vertex_pos, t), p["N0"])
        ref = Bl @ a[:nl] + g * (Bs @ a[nl:])
        psi = sc.psi_vertex(t)
        assert float((psi - ref).abs().max()) <= TOL * float(ref.abs().max())
        U = sc.transport(t)
        U_ref = transport_from_streamfunction(fine, ref)
        assert float((U - U_ref).abs().max()) <= TOL * float(U_ref.abs().max())
        large = sc.psi_vertex(t, ("large",))
        assert float((large - Bl @ a[:nl]).abs().max()) <= TOL * float(ref.abs().max())


@pytest.mark.parametrize("mesh", ["cartesian:16", "healpix:4"])
def test_barotropic_forcing_equals_the_dense_mode_sum(mesh):
    sc = get_scenario("barotropic", mesh, factor=2, seed=2)
    B = mode_basis(sc.fine, sc.params["forcing_band"], sc.fine.cell_center)[0]
    for t in (0.0, 0.5 * sc.dt, (2 * BLOCK + 0.5) * sc.dt):
        ref = B @ torch.as_tensor(sc.ou(t))
        F = sc.forcing(t)
        assert float((F - ref).abs().max()) <= TOL * float(ref.abs().max())
    F = sc.forcing(0.0)
    before = F.clone()
    F.add_(1.0)                                       # a fresh tensor: the cache is untouched
    assert torch.equal(sc.forcing(0.0), before)


@pytest.mark.parametrize("spec", ["cartesian:8", "healpix:4", "icosahedral:2"])
def test_assembled_diffusion_equals_the_divergence_of_the_flux(spec):
    mesh = parse_mesh_spec(spec)
    q = torch.as_tensor(np.random.default_rng(1).standard_normal(mesh.n_cells))
    aug = _Augmented(None, mesh, {})
    ref = -divergence(mesh, diffusive_flux(mesh, q, 0.03))
    out = aug._diffusion(q, 0.03)
    assert float((out - ref).abs().max()) <= TOL * float(ref.abs().max())
    # conservative: the area-weighted sum vanishes to rounding
    assert abs(float((mesh.cell_volume * out).sum())) <= 1e-13 * float(ref.abs().max())


def test_device_keyword_cpu_is_the_default_run_and_not_config():
    a = get_scenario("kinematic", "cartesian:16", factor=2, seed=3)
    b = get_scenario("kinematic", "cartesian:16", factor=2, seed=3, device="cpu")
    assert a.config == b.config and "device" not in b.config
    assert b.device == torch.device("cpu") and b.fine.device == torch.device("cpu")
    ta, sa = a.advance(0.0, a.initial_state(), 5)
    tb, sb = b.advance(0.0, b.initial_state(), 5)
    assert ta == tb and torch.equal(sa["q"], sb["q"])
    assert b.ood().device == torch.device("cpu")
    with pytest.raises(ArgumentError, match="device='gpu'"):
        get_scenario("kinematic", "cartesian:16", factor=2, device="gpu")


def test_subgrid_sample_to_moves_every_tensor():
    sc = get_scenario("barotropic", "cartesian:16", factor=2, seed=0)
    state = sc.initial_state()
    s = subgrid_targets(sc, sc.coarsening, 0.0, state, sc.transport(0.0, state))
    assert s.to("cpu") is s
    moved = s.to("meta")                         # a device without data: shapes only
    assert moved.transport.device.type == "meta" and moved.flux["zeta"].device.type == "meta"
    assert all(v.device.type == "meta" for v in moved.inputs.values())
    assert s.flux["zeta"].device.type == "cpu"   # the original is untouched
    assert math.isfinite(float(s.flux["zeta"].abs().max()))
