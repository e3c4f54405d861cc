"""Spectral filters on HEALPix through the spherical-harmonic transform, and two closures.

Layers act on real spherical-harmonic coefficients ``x_lm[c]`` of
:class:`~meshclosure.sht.HealpixSHT` (analysis ``Sᵀ W``, synthesis ``S``):

- :class:`SphericalHarmonicFilter`, ``mode_mixing="l"`` (default): the
  isotropic filter ``y_lm[c] = Σ_c' h_l[c, c'] x_lm[c']``. By the Funk–Hecke
  theorem it is a convolution with a zonal kernel, so it commutes with every
  rotation of the sphere; on HEALPix it commutes exactly (to rounding) with
  the 90° rotation about the pole, a cyclic shift of every ring
  (Driscoll & Healy 1994, doi:10.1006/aama.1994.1008). The response ``h_l``
  is either free per degree or, with ``n_basis=K``, smooth in ``l``:
  ``h_l = Σ_{k<K} T_k(2 l / lmax − 1) θ_k`` (Chebyshev polynomials; a smooth
  response means a spatially concentrated kernel, as DeepSphere's filters).
- ``mode_mixing="lm"``: weights ``h_lm[c, c']`` per degree AND order. Not
  isotropic: it does not commute with rotations that mix orders (any tilt of
  the pole). It still commutes with rotations about the pole and with
  ``z -> −z`` (these act on each ``(c_lm, s_lm)`` pair alone), so it passes
  the 90°-about-the-pole check; the test suite shows where it fails.

Closures (node latents -> antisymmetric head of :mod:`meshclosure.nn.heads`,
as :class:`~meshclosure.nn.chebyshev.ChebNetClosure`):

- ``"spectral"`` (:class:`SpectralClosure`): pointwise lift, then blocks
  ``h ← h + σ(F_k h)`` with smooth isotropic filters ``F_k`` (``n_basis``
  Chebyshev coefficients in ``l``, ``lmax = 2 nside``): a learned, localized
  spherical convolution.
- ``"sfno"`` (:class:`SFNOClosure`, Bonev et al. 2023, "Spherical Fourier
  neural operators", ICML, arXiv:2306.03838): pointwise lift, then blocks
  ``h ← σ(F_k h + W_k h)`` with FREE per-degree weights truncated at
  ``lmax`` (default ``nside``: global, non-local mixing of the large scales),
  a pointwise linear skip ``W_k`` carrying the small scales, GELU.

Both use only invariant edge features (face length ``A_f`` and centre
distance ``d_f``) in the pairwise head, so they commute with the exact
symmetries of HEALPix (rotations by 90° about the pole, by 180° about an
equatorial axis through a pixel centre), and, with ``mode_mixing="l"``, would
commute with any rotation up to the sampling error of the transform. The
transform samples the pixel centres (see :mod:`meshclosure.sht`); cells are
matched to pixels through their centres, so renumbered cells
(``Mesh.permute_cells``) work; a rotated HEALPix mesh is refused. Cost per
filter ``O(C · lmax² · nside)`` against ``O(C · K · nside²)`` for a Chebyshev
filter (``tools/bench_spherical_filters.py``).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from .._cache import per_mesh
from ..mesh import Mesh
from .chebyshev import invariant_directed, invariant_head
from .heads import FluxModel, MeshOrGraph, _inputs, face_geometry
from .registry import UnsupportedMeshError, register
from ..sht import HealpixSHT, get_sht

__all__ = ["SphericalHarmonicFilter", "SpectralClosure", "SFNOClosure", "healpix_pixels",
           "MODE_MIXING"]

#: ``mode_mixing`` choices of :class:`SphericalHarmonicFilter`.
MODE_MIXING = ("l", "lm")
_FAMILIES = ("healpix",)


def _healpix_family(mesh: Mesh) -> bool:
    return mesh.family == "healpix" or (mesh.family == "permuted"
                                        and mesh.info.get("permuted_family") == "healpix")


def _unsupported(model: str, mesh) -> UnsupportedMeshError:
    return UnsupportedMeshError(
        f"{model} needs a HEALPix mesh (families {_FAMILIES}): its spherical-harmonic transform "
        f"runs on HEALPix rings; got {mesh!r}. Use 'chebnet' (Chebyshev graph filters) on "
        f"other sphere meshes.")


def healpix_pixels(mesh_or_graph: MeshOrGraph, model: str = "model") -> tuple[int, Tensor]:
    """``(nside, ring_pixel)``: the RING pixel ``(n_cells,)`` holding each cell's centre.

    Cached per Mesh. Works for renumbered cells; raises
    :class:`~meshclosure.nn.registry.UnsupportedMeshError` for a mesh that is
    not HEALPix and ``ValueError`` when the centres do not fall one per pixel
    (e.g. a rotated HEALPix mesh).

    Examples
    --------
    >>> from meshclosure.mesh import healpix
    >>> nside, ring = healpix_pixels(healpix(2))
    >>> nside, ring[:4].tolist()          # NESTED pixels 0..3 in RING numbering
    (2, [13, 5, 4, 0])
    """
    if isinstance(mesh_or_graph, Mesh):
        mesh = mesh_or_graph
        cached = per_mesh(mesh, "nn.healpix_pixels", dict)
        if "pixels" in cached:
            return cached["pixels"]
        if not _healpix_family(mesh):
            raise _unsupported(model, mesh)
    pos = face_geometry(mesh_or_graph).pos
    n_cells = pos.shape[0]
    nside = int(round(math.sqrt(n_cells / 12)))
    if 12 * nside**2 != n_cells or nside & (nside - 1):
        raise _unsupported(model, mesh_or_graph)
    import healpy

    p = pos.detach().double().cpu().numpy()
    p = p / np.linalg.norm(p, axis=1, keepdims=True)
    ring = healpy.vec2pix(nside, p[:, 0], p[:, 1], p[:, 2], nest=False)
    # centroids lie within 0.09 pixel of healpy's centres; allow a quarter pixel
    off = np.linalg.norm(p - np.stack(healpy.pix2vec(nside, ring, nest=False), 1), axis=1)
    if len(np.unique(ring)) != n_cells or off.max() > 0.25 * math.sqrt(4 * math.pi / n_cells):
        raise ValueError(f"{model}: the {n_cells} cell centres do not sit one per HEALPix "
                         f"pixel of nside={nside} (largest offset from a pixel centre "
                         f"{off.max():.3g} on the unit sphere): the mesh is not HEALPix in its "
                         f"own frame (rotated?). Spectral models need healpix(nside) unrotated.")
    out = (nside, torch.as_tensor(ring, device=pos.device))
    if isinstance(mesh_or_graph, Mesh):
        per_mesh(mesh_or_graph, "nn.healpix_pixels", dict)["pixels"] = out
    return out


def _chebyshev_basis(lmax: int, n_basis: int) -> Tensor:
    """``(lmax+1, n_basis)``: ``T_k(2 l / lmax − 1)``."""
    t = torch.linspace(-1.0, 1.0, lmax + 1, dtype=torch.float64) if lmax else \
        torch.zeros(1, dtype=torch.float64)
    cols = [torch.ones_like(t), t]
    while len(cols) < n_basis:
        cols.append(2 * t * cols[-1] - cols[-2])
    return torch.stack(cols[:n_basis], 1)


class SphericalHarmonicFilter(nn.Module):
    """Spectral filter ``y_lm = Σ_c' h_l[c, c'] x_lm[c'] (+ b)`` on HEALPix maps.

    Parameters
    ----------
    in_channels, out_channels : int
    lmax : int
        Band limit; the :class:`~meshclosure.sht.HealpixSHT` passed to
        ``forward`` must have this ``lmax``. Degrees above it are removed.
    n_basis : int, optional
        Smooth response ``h_l = Σ_{k<K} T_k(2l/lmax − 1) θ_k`` with ``K = n_basis``
        (``mode_mixing="l"`` only); default: free weights per degree.
    mode_mixing : {"l", "lm"}
        Isotropic ``h_l`` (default) or per degree and order ``h_lm`` (not isotropic).
    bias : bool
        A constant (isotropic) output offset ``b``.

    Shapes: ``x (n_pix, in_channels)`` -> ``(n_pix, out_channels)``;
    ``x (B, n_pix, in_channels)`` -> ``(B, n_pix, out_channels)`` (one transform
    of ``B · in_channels`` maps); :meth:`filter_coefficients` ``(M, L, 2, in)``
    -> ``(M, L, 2, out)``.

    Examples
    --------
    >>> from meshclosure.sht import HealpixSHT
    >>> sht = HealpixSHT(2, lmax=4)
    >>> f = SphericalHarmonicFilter(1, 1, lmax=4, n_basis=1, bias=False).double()
    >>> with torch.no_grad():
    ...     _ = f.weight.fill_(2.0)                          # h_l = 2 for every l
    >>> a = sht.random_coefficients(1)
    >>> bool(torch.allclose(f(sht.synthesis(a), sht, iterations=30), 2 * sht.synthesis(a)))
    True
    >>> SphericalHarmonicFilter(1, 1, lmax=4, n_basis=3, mode_mixing="lm")
    Traceback (most recent call last):
    ...
    ValueError: n_basis=3 needs mode_mixing='l' (a smooth response in l); got 'lm'.
    """

    def __init__(self, in_channels: int, out_channels: int, lmax: int,
                 n_basis: int | None = None, mode_mixing: str = "l", bias: bool = True) -> None:
        super().__init__()
        if mode_mixing not in MODE_MIXING:
            raise ValueError(f"mode_mixing={mode_mixing!r} is not one of {MODE_MIXING}: 'l' is "
                             f"isotropic (commutes with rotations), 'lm' is not.")
        if n_basis is not None and mode_mixing != "l":
            raise ValueError(f"n_basis={n_basis} needs mode_mixing='l' (a smooth response in "
                             f"l); got {mode_mixing!r}.")
        if n_basis is not None and not 1 <= n_basis <= lmax + 1:
            raise ValueError(f"n_basis must be in [1, lmax+1={lmax + 1}]; got {n_basis}.")
        if lmax < 0:
            raise ValueError(f"lmax must be >= 0; got {lmax}.")
        self.in_channels, self.out_channels, self.lmax = in_channels, out_channels, int(lmax)
        self.n_basis, self.mode_mixing = n_basis, mode_mixing
        rows = {"l": (n_basis or lmax + 1,), "lm": (lmax + 1, lmax + 1)}[mode_mixing]
        self.weight = nn.Parameter(torch.empty(*rows, in_channels, out_channels))
        bound = 1.0 / math.sqrt(in_channels * (n_basis or 1))
        nn.init.uniform_(self.weight, -bound, bound)
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        if n_basis is not None:
            self.register_buffer("basis", _chebyshev_basis(lmax, n_basis), persistent=False)
        else:
            self.basis = None

    def response(self) -> Tensor:
        """``h``: ``(lmax+1, in, out)`` (``"l"``) or ``(mmax+1, lmax+1, in, out)`` (``"lm"``)."""
        if self.basis is None:
            return self.weight
        return torch.einsum("lk,kio->lio", self.basis.to(self.weight.dtype), self.weight)

    def filter_coefficients(self, a: Tensor) -> Tensor:
        """Apply ``h`` to coefficients ``a (mmax+1, lmax+1, 2, ..., in)`` (extra dims, e.g. a
        batch, before the channels are kept)."""
        h = self.response().to(a.dtype)
        if self.mode_mixing == "l":
            return torch.einsum("mls...i,lio->mls...o", a, h)
        return torch.einsum("mls...i,mlio->mls...o", a, h[: a.shape[0]])

    def forward(self, x: Tensor, sht: HealpixSHT, pixels: Tensor | None = None,
                iterations: int = 0) -> Tensor:
        if sht.lmax != self.lmax:
            raise ValueError(f"{type(self).__name__}(lmax={self.lmax}) got a transform with "
                             f"lmax={sht.lmax}; build the HealpixSHT with lmax={self.lmax}.")
        if x.dim() not in (2, 3) or x.shape[-1] != self.in_channels:
            raise ValueError(f"{type(self).__name__}: x must have shape (n_pix, in_channels="
                             f"{self.in_channels}) or (B, n_pix, in_channels); got "
                             f"{tuple(x.shape)}.")
        n, c = x.shape[-2:]
        b = x.reshape(-1, n, c).shape[0]
        # samples side by side as channels: one transform for the whole batch
        cols = x.reshape(b, n, c).transpose(0, 1).reshape(n, b * c)
        a = sht.analysis(cols, iterations=iterations, pixels=pixels)
        a = self.filter_coefficients(a.reshape(*a.shape[:3], b, c))
        y = sht.synthesis(a.reshape(*a.shape[:3], b * self.out_channels), pixels=pixels)
        y = y.reshape(n, b, self.out_channels).transpose(0, 1).reshape(*x.shape[:-1],
                                                                         self.out_channels)
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, lmax={self.lmax}, "
                f"n_basis={self.n_basis}, mode_mixing={self.mode_mixing!r}")


class _SphericalClosure(FluxModel):
    """Shared plumbing: lift -> spectral blocks -> node latents -> antisymmetric head."""

    _label = ""

    def __init__(self, mesh: Mesh, in_features: int, n_vars: int, hidden: int, n_layers: int,
                 lmax: int, iterations: int, head: str, heteroscedastic: bool,
                 filter_kwargs: dict) -> None:
        super().__init__()
        nside, _ = healpix_pixels(mesh, type(self).__name__)
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1; got {n_layers}.")
        if not 0 <= lmax <= 3 * nside - 1:
            raise ValueError(f"lmax must be in [0, 3 nside − 1 = {3 * nside - 1}] on HEALPix "
                             f"nside={nside}; got {lmax}. Use lmax=2*nside={2 * nside}.")
        if iterations < 0:
            raise ValueError(f"iterations must be >= 0; got {iterations}.")
        self.in_features, self.n_vars, self.head_kind = in_features, n_vars, head
        self.nside, self.lmax, self.iterations = nside, int(lmax), int(iterations)
        self.length_scale = float(mesh.cell_distance.double().mean())
        self.lift = nn.Linear(in_features, hidden)
        self.filters = nn.ModuleList(SphericalHarmonicFilter(hidden, hidden, lmax, **filter_kwargs)
                                     for _ in range(n_layers))
        self.head = invariant_head(head, hidden, n_vars, heteroscedastic)

    def _block(self, k: int, h: Tensor, sht: HealpixSHT, pixels: Tensor) -> Tensor:
        raise NotImplementedError

    def latents(self, mesh_or_graph: MeshOrGraph, x: Tensor | None = None) -> Tensor:
        """Node latents ``z (..., n_cells, hidden)`` after the spectral blocks."""
        x = _inputs(mesh_or_graph, x, self.in_features)
        nside, pixels = healpix_pixels(mesh_or_graph, type(self).__name__)
        if nside * 3 - 1 < self.lmax:
            raise ValueError(f"{type(self).__name__}(lmax={self.lmax}) cannot run on HEALPix "
                             f"nside={nside}: lmax must be <= 3 nside − 1. Use a finer mesh.")
        sht = get_sht(nside, self.lmax)
        h = self.lift(x)
        for k in range(len(self.filters)):
            h = self._block(k, h, sht, pixels)
        return h

    def directed_fluxes(self, mesh_or_graph: MeshOrGraph, x: Tensor | None = None):
        geo = face_geometry(mesh_or_graph)
        z = self.latents(mesh_or_graph, x)
        return invariant_directed(self.head, self.head_kind, z, geo, self.length_scale)


@register("spectral", families=_FAMILIES, instead="chebnet")
class SpectralClosure(_SphericalClosure):
    """Smooth isotropic spherical-harmonic filters (residual blocks) -> antisymmetric head.

    ``h_0 = P x`` (pointwise linear lift), ``h_{k+1} = h_k + SiLU(F_k h_k)`` with
    :class:`SphericalHarmonicFilter` ``F_k`` (``mode_mixing="l"``, response
    smooth in ``l`` through ``n_basis`` Chebyshev coefficients), then the head.

    Parameters
    ----------
    mesh : Mesh
        ``healpix(nside)`` (cells may be renumbered).
    in_features, n_vars, hidden, n_layers : int
    lmax : int, optional
        Band limit of the filters; default ``2 nside``.
    n_basis : int
        Chebyshev coefficients of each response ``h_l`` (capped at ``lmax + 1``).
    iterations : int
        Jacobi refinements of the analysis (0: plain pixel-area quadrature).
    head : {"potential", "pairwise"}
        As in :class:`~meshclosure.nn.chebyshev.ChebNetClosure` (pairwise edge
        features ``(A_f, d_f) / s``).
    heteroscedastic : bool

    Shapes: ``x (n_cells, in_features)`` -> ``(n_faces, n_vars)``;
    ``x (B, n_cells, in_features)`` -> ``(B, n_faces, n_vars)``.

    Examples
    --------
    >>> from meshclosure.mesh import healpix, icosahedral
    >>> from meshclosure.fv import divergence
    >>> mesh = healpix(2)
    >>> model = SpectralClosure(mesh, in_features=2, hidden=8).double()
    >>> phi = model(mesh, torch.randn(mesh.n_cells, 2, dtype=torch.float64)).detach()
    >>> phi.shape, abs(float((mesh.cell_volume[:, None] * divergence(mesh, phi)).sum())) < 1e-12
    (torch.Size([96, 1]), True)
    >>> SpectralClosure(icosahedral(1))
    Traceback (most recent call last):
    ...
    meshclosure.nn.registry.UnsupportedMeshError: SpectralClosure needs a HEALPix mesh ...
    """

    def __init__(self, mesh: Mesh, in_features: int = 1, n_vars: int = 1, hidden: int = 32,
                 n_layers: int = 3, lmax: int | None = None, n_basis: int = 8,
                 iterations: int = 0, head: str = "potential",
                 heteroscedastic: bool = False) -> None:
        nside, _ = healpix_pixels(mesh, type(self).__name__)
        lmax = 2 * nside if lmax is None else lmax
        super().__init__(mesh, in_features, n_vars, hidden, n_layers, lmax, iterations, head,
                         heteroscedastic, {"n_basis": min(n_basis, max(lmax, 0) + 1)})
        self.activation = nn.SiLU()

    def _block(self, k, h, sht, pixels):
        return h + self.activation(self.filters[k](h, sht, pixels, self.iterations))


@register("sfno", families=_FAMILIES, instead="chebnet")
class SFNOClosure(_SphericalClosure):
    """Spherical Fourier neural operator blocks (Bonev et al. 2023) -> antisymmetric head.

    ``h_0 = P x``, ``h_{k+1} = GELU(F_k h_k + W_k h_k)``: ``F_k`` a
    :class:`SphericalHarmonicFilter` with free weights per degree (``"l"``,
    isotropic) or per degree and order (``"lm"``), truncated at ``lmax``;
    ``W_k`` a pointwise linear skip (keeps the scales above ``lmax``).

    Parameters
    ----------
    mesh : Mesh
        ``healpix(nside)`` (cells may be renumbered).
    in_features, n_vars, hidden, n_layers : int
    lmax : int, optional
        Spectral truncation; default ``nside``.
    mode_mixing : {"l", "lm"}
        ``"l"`` (default) commutes with all rotations; ``"lm"`` only with those
        about the pole.
    iterations, head, heteroscedastic
        As in :class:`SpectralClosure`.

    Shapes: ``x (n_cells, in_features)`` -> ``(n_faces, n_vars)``;
    ``x (B, n_cells, in_features)`` -> ``(B, n_faces, n_vars)``.

    Examples
    --------
    >>> from meshclosure.mesh import healpix
    >>> mesh = healpix(2)
    >>> model = SFNOClosure(mesh, in_features=1, hidden=8, head="pairwise").double()
    >>> model(mesh, torch.randn(mesh.n_cells, 1, dtype=torch.float64)).shape
    torch.Size([96, 1])
    >>> SFNOClosure(mesh, lmax=9)
    Traceback (most recent call last):
    ...
    ValueError: lmax must be in [0, 3 nside − 1 = 5] on HEALPix nside=2; got 9. ...
    """

    def __init__(self, mesh: Mesh, in_features: int = 1, n_vars: int = 1, hidden: int = 32,
                 n_layers: int = 4, lmax: int | None = None, mode_mixing: str = "l",
                 iterations: int = 0, head: str = "potential",
                 heteroscedastic: bool = False) -> None:
        nside, _ = healpix_pixels(mesh, type(self).__name__)
        lmax = nside if lmax is None else lmax
        super().__init__(mesh, in_features, n_vars, hidden, n_layers, lmax, iterations, head,
                         heteroscedastic, {"mode_mixing": mode_mixing})
        self.skips = nn.ModuleList(nn.Linear(hidden, hidden, bias=False)
                                   for _ in range(n_layers))
        self.activation = nn.GELU()

    def _block(self, k, h, sht, pixels):
        return self.activation(self.filters[k](h, sht, pixels, self.iterations)
                               + self.skips[k](h))
