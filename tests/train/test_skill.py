"""Offline skill measures (meshclosure.train.skill): known solutions and invariants."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from meshclosure.errors import ArgumentError
from meshclosure.mesh import cartesian, healpix, icosahedral
from meshclosure.train.constraints import test_functions
from meshclosure.train.skill import (band_projection, large_band_r2, paired_difference,
                                     pooled_r2)

MESHES = {"cartesian": lambda: cartesian(16, 16), "healpix": lambda: healpix(4),
          "icosahedral": lambda: icosahedral(2)}


@pytest.fixture(scope="module", params=sorted(MESHES))
def mesh(request):
    return MESHES[request.param]()


def _grid(m, f):
    """A cell field of cartesian(n, n) as an (ny, nx) array (x runs fastest)."""
    n = m.info["nx"]
    return f.reshape(n, n)


def test_band_projection_is_the_fourier_low_pass_on_a_periodic_plane():
    m = cartesian(16, 16)                         # k_c = 8: the band is |k| <= 2
    g = torch.Generator().manual_seed(0)
    f = torch.randn(3, m.n_cells, generator=g, dtype=torch.float64)
    k = np.fft.fftfreq(16, 1.0 / 16)
    keep = (k[None, :] ** 2 + k[:, None] ** 2) <= 2 ** 2 + 1e-9
    for s in range(3):
        F = np.fft.fft2(_grid(m, f[s]).numpy())
        low = np.real(np.fft.ifft2(np.where(keep, F, 0.0))).reshape(-1)
        np.testing.assert_allclose(band_projection(m, f[s]).numpy(), low, atol=1e-12)


def test_band_functions_are_reproduced_exactly(mesh):
    phi = test_functions(mesh)
    g = torch.Generator().manual_seed(1)
    coef = torch.randn(2, phi.shape[0], generator=g, dtype=torch.float64)
    field = coef @ phi                                    # inside the band by construction
    torch.testing.assert_close(band_projection(mesh, field), field, atol=1e-10, rtol=0)


def test_perfect_prediction_scores_one(mesh):
    g = torch.Generator().manual_seed(2)
    s = torch.randn(4, mesh.n_cells, generator=g, dtype=torch.float64)
    assert large_band_r2(mesh, s, s) == pytest.approx(1.0, abs=1e-14)
    flux = torch.randn(4, mesh.n_faces, generator=g, dtype=torch.float64)
    assert pooled_r2(flux, flux) == 1.0


def test_band_r2_is_computed_only_from_the_band():
    """Target a + b (a inside the band, b outside), prediction c inside: the score is
    1 − ‖c − a‖²_V / ‖a − m‖²_V, whatever b and whatever is added outside to c."""
    m = cartesian(16, 16)
    x, y = m.cell_center[:, 0].double(), m.cell_center[:, 1].double()
    tau = 2 * math.pi
    a = torch.stack([torch.sin(tau * x) + 0.5 * torch.cos(tau * 2 * y),
                     torch.cos(tau * (x + y))])           # |k| = 1, 2, sqrt 2: in the band
    b = 3.0 * torch.sin(tau * 6 * x) * torch.cos(tau * 5 * y)   # far outside
    c = torch.stack([0.8 * torch.sin(tau * x), torch.cos(tau * (x + y)) + 0.1])
    V = m.cell_volume.double()
    mean = float((a * V).sum()) / (float(V.sum()) * 2)
    want = 1 - float((((c - a) ** 2) * V).sum()) / float((((a - mean) ** 2) * V).sum())
    assert large_band_r2(m, c, a + b) == pytest.approx(want, abs=1e-12)
    assert large_band_r2(m, c - b, a) == pytest.approx(want, abs=1e-12)
    # the pooled R² of the same fields does see b
    assert pooled_r2(c, a + b) < want - 0.5


def test_band_r2_of_no_prediction_is_zero_for_a_zero_mean_tendency(mesh):
    phi = test_functions(mesh)
    g = torch.Generator().manual_seed(3)
    s = torch.randn(3, phi.shape[0] - 1, generator=g, dtype=torch.float64) @ phi[1:]
    s = s - (s * mesh.cell_volume).sum(1, keepdim=True) / mesh.cell_volume.sum()
    assert large_band_r2(mesh, torch.zeros_like(s), s) == pytest.approx(0.0, abs=1e-10)


def test_pooled_r2_known_values():
    y = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert pooled_r2(y + 1.0, y) == pytest.approx(1 - 4 / 5)           # SSE 4, SST 5
    assert pooled_r2(torch.full_like(y, 2.5), y) == pytest.approx(0.0)   # the mean
    with pytest.raises(ArgumentError, match="pred"):
        pooled_r2(torch.zeros(3), y)
    with pytest.raises(ArgumentError, match="must be finite"):
        pooled_r2(torch.tensor([0.0, float("nan"), 0.0, 0.0]), y)


def test_paired_difference_known_numbers():
    d = paired_difference([0.30, 0.50, 0.40], [0.10, 0.20, 0.30])     # diffs .2 .3 .1
    assert d.mean == pytest.approx(0.2)
    assert d.se == pytest.approx(0.1 / math.sqrt(3))                 # std 0.1, n 3
    assert d.n == 3 and d.significant                                # 0.2 > 2 × 0.0577
    e = paired_difference([0.3, 0.1, 0.5], [0.1, 0.3, 0.2])           # diffs .2 −.2 .3
    assert e.mean == pytest.approx(0.1)
    assert e.se == pytest.approx(math.sqrt(0.14 / 2) / math.sqrt(3))    # Σ dev² = .14
    assert not e.significant
    assert paired_difference([1.0, 1.0], [0.0, 0.0]) == (1.0, 0.0, 2)


def test_paired_difference_refuses_unpaired_short_or_undefined_input():
    with pytest.raises(ArgumentError, match="must pair"):
        paired_difference([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ArgumentError, match="at least 2"):
        paired_difference([1.0], [2.0])
    with pytest.raises(ArgumentError, match="finite"):
        paired_difference([1.0, float("nan")], [2.0, 3.0])


def test_band_r2_refuses_bad_shapes():
    m = cartesian(8, 8)
    with pytest.raises(ArgumentError, match="pred_tendency"):
        large_band_r2(m, torch.zeros(2, 64), torch.zeros(3, 64))
    with pytest.raises(ArgumentError, match="field"):
        band_projection(m, torch.zeros(2, 63))
