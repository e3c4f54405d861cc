"""Invariant checks for closure models, public so users test their own models the same way.

- :func:`assert_antisymmetric`: ``Φ_ba = −Φ_ab`` (flux through a face reverses
  with its orientation);
- :func:`assert_conservative`: ``Σ_i V_i div(Φ)_i = 0`` (nothing created or
  destroyed by the interior fluxes);
- :func:`assert_equivariant`: renumbering cells and faces permutes the outputs
  the same way; rotating the sphere (with the vector inputs) or translating a
  plane leaves the face fluxes unchanged;
- :func:`assert_commutes`: for an exact symmetry of the mesh (a rotation that
  maps cells onto cells, e.g. 90° about the pole on HEALPix, the icosahedral
  group), moving the inputs with the symmetry moves the face fluxes with it.

A *model* here is any callable ``model(mesh, x)`` returning face fluxes
``(n_faces, ...)`` or ``(mean, log_var)`` (e.g. a
:class:`meshclosure.nn.FluxPrediction`); every :mod:`meshclosure.nn` model
qualifies. A batch of samples on the one mesh, ``x (B, n_cells, F)`` with
outputs ``(B, n_faces, ...)``, is checked sample by sample. Failures raise
``AssertionError`` with the largest deviation and where it occurs (and in
which sample). Helpers :func:`flip_faces`, :func:`permute_faces`,
:func:`rotate_mesh`, :func:`translate_mesh` build the transformed meshes.

Examples
--------
>>> import torch
>>> from meshclosure.mesh import healpix
>>> from meshclosure.nn import build_model
>>> mesh = healpix(2)
>>> x = torch.randn(mesh.n_cells, 1, dtype=torch.float64)
>>> model = build_model("mgn", mesh, hidden=8, n_blocks=1).double()
>>> assert_antisymmetric(model, mesh, x)
>>> assert_conservative(model, mesh, x)
>>> assert_equivariant(model, mesh, x, transform="permutation")

A batch is checked per sample:

>>> xb = torch.randn(3, mesh.n_cells, 1, dtype=torch.float64)
>>> assert_antisymmetric(model, mesh, xb)
>>> assert_conservative(model, mesh, xb)
>>> assert_equivariant(model, mesh, xb, transform="permutation")

A flux that ignores orientation is caught:

>>> assert_antisymmetric(lambda m, x: m.face_area[:, None] * 0 + 1.0, mesh, x)
Traceback (most recent call last):
...
AssertionError: antisymmetry (flipped faces): max deviation 2 at face 0, column 0 ...
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from .mesh import Mesh

__all__ = ["assert_antisymmetric", "assert_conservative", "assert_equivariant", "assert_commutes",
           "mesh_symmetry", "axis_rotation", "flip_faces", "permute_faces", "rotate_mesh",
           "translate_mesh", "random_rotation", "small_meshes", "budget_residual"]

#: Default relative tolerance of "zero up to rounding", per dtype.
TOLERANCE = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 1e-2,
             torch.bfloat16: 1e-2}


def _mean(out: Any) -> Tensor:
    """The mean of a ``(mean, log_var)`` output (a FluxPrediction or any pair), else ``out``."""
    return out[0] if isinstance(out, (tuple, list)) else out


def _batched(x: Any) -> bool:
    """Cell inputs ``(B, n_cells, F)`` (a batch on one mesh) rather than ``(n_cells, F)``."""
    return isinstance(x, Tensor) and x.dim() == 3


def _tol(t: Tensor, tol: float | None) -> float:
    return TOLERANCE.get(t.dtype, 1e-12) if tol is None else tol


def _compare(what: str, got: Tensor, expected: Tensor, tol: float, rows: str = "face",
             batched: bool = False) -> None:
    """AssertionError unless ``|got − expected| <= tol · max(1, max|expected|)`` everywhere;
    with ``batched`` the first dim is the sample (the scale is taken per sample)."""
    if batched:
        for b in range(got.shape[0]):
            try:
                _compare(what, got[b], expected[b], tol, rows)
            except AssertionError as err:
                raise AssertionError(f"sample {b}: {err}") from None
        if got.shape[0] != expected.shape[0]:
            raise AssertionError(f"{what}: {got.shape[0]} samples != expected "
                                 f"{expected.shape[0]}")
        return
    got, expected = got.detach(), expected.detach()
    if got.shape != expected.shape:
        raise AssertionError(f"{what}: shape {tuple(got.shape)} != expected "
                             f"{tuple(expected.shape)}")
    if got.numel() == 0:
        return
    dev = (got - expected).abs()
    scale = max(1.0, float(expected.abs().max()))
    worst = float(dev.max())
    if not worst <= tol * scale:              # also catches NaN
        flat = int(torch.nan_to_num(dev, nan=math.inf).reshape(-1).argmax())
        idx = list(torch.unravel_index(torch.tensor(flat), dev.shape))
        where = f"{rows} {int(idx[0])}" + (f", column {int(idx[1])}" if len(idx) > 1 else "")
        raise AssertionError(
            f"{what}: max deviation {worst:.3g} at {where} (got {float(got[tuple(idx)]):.6g}, "
            f"expected {float(expected[tuple(idx)]):.6g}); tolerance {tol:.1e} x {scale:.3g}")


# --------------------------------------------------------------- transforms
def flip_faces(mesh: Mesh) -> Mesh:
    """The same mesh with every face's orientation reversed: owner and
    neighbour swapped, normal negated, ``face_vertices`` swapped (they stay
    counter-clockwise around the new owner)."""
    return dataclasses.replace(mesh, face_cells=mesh.face_cells.flip(0),
                               face_normal=-mesh.face_normal,
                               face_vertices=mesh.face_vertices.flip(0))


def permute_faces(mesh: Mesh, perm: Tensor) -> Mesh:
    """Renumber faces: new face ``f`` is old face ``perm[f]`` (cells unchanged).

    Parameters
    ----------
    perm : LongTensor, shape (n_faces,)
    """
    perm = torch.as_tensor(perm, dtype=torch.long, device=mesh.device)
    if perm.shape != (mesh.n_faces,) or not torch.equal(
            torch.sort(perm).values, torch.arange(mesh.n_faces, device=mesh.device)):
        raise ValueError(f"perm must be a permutation of range(n_faces={mesh.n_faces}); got "
                         f"shape {tuple(perm.shape)}. Pass e.g. torch.randperm(mesh.n_faces).")
    return dataclasses.replace(
        mesh, face_cells=mesh.face_cells[:, perm], face_normal=mesh.face_normal[perm],
        face_area=mesh.face_area[perm], face_center=mesh.face_center[perm],
        cell_distance=mesh.cell_distance[perm], face_vertices=mesh.face_vertices[:, perm])


def random_rotation(seed: int = 0, dtype: torch.dtype = torch.float64) -> Tensor:
    """A random proper rotation ``(3, 3)`` (QR of a Gaussian matrix, det +1)."""
    gen = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=gen, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))[None, :]
    if torch.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q.to(dtype)


def axis_rotation(axis: Sequence[float], angle: float) -> Tensor:
    """Rotation by ``angle`` (radians) about ``axis`` (Rodrigues), ``(3, 3)`` float64."""
    k = torch.as_tensor(axis, dtype=torch.float64)
    k = k / k.norm()
    kx = torch.tensor([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]],
                      dtype=torch.float64)
    return torch.eye(3, dtype=torch.float64) + math.sin(angle) * kx \
        + (1 - math.cos(angle)) * kx @ kx


def mesh_symmetry(mesh: Mesh, rotation: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The renumbering a mesh symmetry induces: cells ``i -> sigma[i]``, faces
    ``f -> tau[f]`` with orientation ``sign[f]`` (+1 if the image face has the
    same owner -> neighbour sense, −1 otherwise).

    Raises ``AssertionError`` if ``rotation`` does not map the cell centres onto
    cell centres (to 1e-12 of the radius), i.e. is not a symmetry of the mesh.

    >>> from meshclosure.mesh import healpix
    >>> sigma, tau, sign = mesh_symmetry(healpix(1), axis_rotation([0, 0, 1], math.pi / 2))
    >>> sorted(sigma.tolist()) == list(range(12)), bool((sign.abs() == 1).all())
    (True, True)
    """
    import numpy as np
    from scipy.spatial import cKDTree

    c = mesh.cell_center.double().cpu().numpy()
    R = torch.as_tensor(rotation, dtype=torch.float64).cpu().numpy()
    dist, sigma = cKDTree(c).query(c @ R.T)
    scale = mesh.radius if mesh.is_sphere else 1.0
    if not dist.max() < 1e-12 * scale or len(set(sigma.tolist())) != mesh.n_cells:
        raise AssertionError(f"the rotation is not a symmetry of {mesh!r}: cell centres land "
                             f"up to {dist.max():.3g} away from other cell centres.")
    fc = mesh.face_cells.cpu().numpy()
    index = {(int(a), int(b)): f for f, (a, b) in enumerate(fc.T)}
    tau, sign = np.empty(mesh.n_faces, dtype=np.int64), np.empty(mesh.n_faces)
    for f, (a, b) in enumerate(fc.T):
        a2, b2 = int(sigma[a]), int(sigma[b])
        same = (a2, b2) in index
        tau[f], sign[f] = (index[(a2, b2)], 1.0) if same else (index[(b2, a2)], -1.0)
    if len(set(tau.tolist())) != mesh.n_faces:
        raise AssertionError(f"the rotation maps cells onto cells but not faces onto faces "
                             f"of {mesh!r}.")
    return torch.as_tensor(sigma), torch.as_tensor(tau), torch.as_tensor(sign)


def assert_commutes(model: Callable, mesh: Mesh, x: Tensor, rotation: Tensor,
                    tol: float = 1e-10) -> None:
    """Check ``model(mesh, x∘σ⁻¹)[τ(f)] == sign_f · model(mesh, x)[f]`` for a mesh symmetry.

    The mesh stays where it is; the scalar inputs are moved by the cell
    renumbering the symmetry induces (:func:`mesh_symmetry`), and the face
    fluxes must move the same way. Every isotropic filter (graph Laplacian,
    spherical harmonics) passes; a model that reads coordinates or
    directions does not.

    Parameters
    ----------
    model : callable ``model(mesh, x)`` -> face outputs ``(n_faces, ...)``
    mesh : Mesh
    x : Tensor, shape (n_cells, n_features) or (B, n_cells, n_features)
        Scalar cell inputs (vectors would have to be rotated too); a batch is
        checked per sample.
    rotation : Tensor, shape (3, 3)
        A symmetry of the mesh, e.g. ``axis_rotation([0, 0, 1], math.pi / 2)`` on HEALPix.
    tol : float
        Tolerance relative to ``max(1, max |output|)``.
    """
    sigma, tau, sign = mesh_symmetry(mesh, rotation)
    batched = _batched(x)
    x_new = torch.empty_like(x)
    x_new[..., sigma.to(x.device), :] = x
    out, got = _mean(model(mesh, x)).detach(), _mean(model(mesh, x_new)).detach()
    d = int(batched)                                       # the face dim
    expected = torch.empty_like(out)
    sign = sign.to(out).reshape((-1,) + (1,) * (out.dim() - 1 - d))
    expected.index_copy_(d, tau.to(out.device), sign * out)
    _compare("symmetry (commuting with the mesh's rotation)", got, expected, tol,
             batched=batched)


def rotate_mesh(mesh: Mesh, rotation: Tensor) -> Mesh:
    """Rotate every position and direction of a sphere mesh: ``p -> R p``."""
    if mesh.dim != 3:
        raise ValueError(f"rotate_mesh needs a mesh embedded in 3-D (a sphere); got dim="
                         f"{mesh.dim} ({mesh!r}). Use transform='translation' on the plane.")
    R = rotation.to(mesh.dtype).to(mesh.device)
    rot = {name: getattr(mesh, name) @ R.T for name in (
        "cell_center", "face_center", "face_normal", "vertex_pos", "boundary_face_normal",
        "boundary_face_center")}
    return dataclasses.replace(mesh, **rot)


def translate_mesh(mesh: Mesh, shift: Sequence[float]) -> Mesh:
    """Translate a planar mesh by ``shift``; on a periodic axis positions wrap mod the period."""
    if mesh.is_sphere:
        raise ValueError("translate_mesh needs a planar mesh; use transform='rotation' on the "
                         f"sphere. Got {mesh!r}.")
    s = torch.as_tensor(shift, dtype=mesh.dtype, device=mesh.device)

    def move(p: Tensor) -> Tensor:
        p = p + s
        if mesh.period is not None:
            for axis, length in enumerate(mesh.period):
                if length:
                    p[:, axis] = torch.remainder(p[:, axis], length)
        return p
    return dataclasses.replace(
        mesh, cell_center=move(mesh.cell_center), face_center=move(mesh.face_center),
        vertex_pos=move(mesh.vertex_pos), boundary_face_center=move(mesh.boundary_face_center))


# --------------------------------------------------------------- assertions
def assert_antisymmetric(model: Callable, mesh: Mesh, x: Any = None, tol: float | None = None,
                         check_flip: bool = True) -> None:
    """Check ``Φ_ba = −Φ_ab``.

    Two checks:

    1. *Directed form, exactly* (when ``model`` has ``directed_fluxes(mesh, x)``
       returning ``(2 n_faces, ...)`` in the order of ``edge_index``): the
       second half must be bit-for-bit the negated first half; a log-variance,
       if returned, bit-for-bit equal on both senses.
    2. *Flipped mesh* (``check_flip``): evaluating on :func:`flip_faces` ``(mesh)``
       must negate the face fluxes (to ``tol`` relative: message passing sums
       in another order).

    Parameters
    ----------
    model : callable
        ``model(mesh, x)`` -> ``(n_faces, ...)`` or ``(mean, log_var)``.
    mesh : Mesh
    x : Tensor, optional
        Cell inputs ``(n_cells, F)``, or a batch ``(B, n_cells, F)`` whose
        outputs ``(B, n_faces, ...)`` are checked per sample.
    tol : float, optional
        Relative tolerance of check 2 (default 1e-12 float64, 1e-5 float32).
    """
    batched = _batched(x)
    directed = getattr(model, "directed_fluxes", None)
    if directed is not None:
        out = directed(mesh, x)
        mean, log_var = (out if isinstance(out, (tuple, list)) else (out, None))
        n, d = mesh.n_faces, int(batched)                   # d: the directed-edge dim
        _compare("antisymmetry (directed form, exact)", mean.narrow(d, n, n),
                 -mean.narrow(d, 0, n), 0.0, batched=batched)
        if log_var is not None:
            _compare("log-variance symmetry (directed form, exact)", log_var.narrow(d, n, n),
                     log_var.narrow(d, 0, n), 0.0, batched=batched)
    if check_flip:
        out, out_flip = model(mesh, x), model(flip_faces(mesh), x)
        mean = _mean(out)
        _compare("antisymmetry (flipped faces)", _mean(out_flip), -mean, _tol(mean, tol),
                 batched=batched)
        if isinstance(out, (tuple, list)):
            _compare("log-variance symmetry (flipped faces)", out_flip[1], out[1],
                     _tol(mean, tol), batched=batched)


def assert_conservative(fluxes: Tensor | Callable, mesh: Mesh, x: Any = None,
                        tol: float | None = None, kind: str = "auto") -> None:
    """Check that the output conserves the transported quantity.

    - face fluxes ``Φ (n_faces, ...)``: ``Σ_i V_i div(Φ)_i = 0`` relative to
      ``Σ_f |Φ_f|`` (always true for interior face fluxes unless the output has
      NaN/Inf or the divergence is broken: it checks the pipeline);
    - cell tendencies ``T (n_cells, ...)`` (a model predicting ``dq/dt``
      directly): ``Σ_i V_i T_i = 0`` relative to ``Σ_i V_i |T_i|``; this fails
      for a generic cell-wise model, which is why closures go through face fluxes.

    A batch, ``(B, n_faces, ...)`` or ``(B, n_cells, ...)`` (the output for
    ``x (B, n_cells, F)``, or a tensor whose second dim, not its first, has
    ``n_faces`` or ``n_cells`` rows), is checked sample by sample.

    Parameters
    ----------
    fluxes : Tensor or callable
        The output, or a model called as ``fluxes(mesh, x)``.
    mesh : Mesh
    x : Tensor, optional
        Cell inputs ``(n_cells, F)`` or ``(B, n_cells, F)``.
    tol : float, optional
        Relative tolerance (default 1e-12 float64, 1e-5 float32).
    kind : {"auto", "flux", "tendency"}
        How to read the output; ``"auto"`` decides by its number of rows.

    Examples
    --------
    >>> import torch
    >>> from meshclosure.mesh import cartesian
    >>> mesh = cartesian(8, 8)
    >>> assert_conservative(torch.randn(mesh.n_faces, 2, dtype=torch.float64), mesh)
    >>> assert_conservative(torch.rand(mesh.n_cells, dtype=torch.float64), mesh)
    Traceback (most recent call last):
    ...
    AssertionError: conservation: |Σ V T| / Σ V|T| = 1 in column 0 ...
    >>> assert_conservative(torch.rand(2, mesh.n_cells, dtype=torch.float64), mesh)
    Traceback (most recent call last):
    ...
    AssertionError: sample 0: conservation: |Σ V T| / Σ V|T| = 1 in column 0 ...
    """
    from .fv import divergence

    out = _mean(fluxes(mesh, x) if callable(fluxes) else fluxes).detach()
    rows = (mesh.n_faces, mesh.n_cells)
    if _batched(x) or (out.dim() >= 2 and out.shape[0] not in rows and out.shape[1] in rows):
        for b in range(out.shape[0]):
            try:
                assert_conservative(out[b], mesh, tol=tol, kind=kind)
            except AssertionError as err:
                raise AssertionError(f"sample {b}: {err}") from None
        return
    if kind == "auto":
        kind = ("flux" if out.shape[:1] == (mesh.n_faces,) else
                "tendency" if out.shape[:1] == (mesh.n_cells,) else "?")
    if kind not in ("flux", "tendency"):
        raise ValueError(f"output has shape {tuple(out.shape)}: expected n_faces="
                         f"{mesh.n_faces} rows (fluxes) or n_cells={mesh.n_cells} rows "
                         f"(tendencies); or pass kind='flux'|'tendency'.")
    volume = mesh.cell_volume.to(out.dtype).reshape((-1,) + (1,) * (out.dim() - 1))
    if kind == "flux":
        total, scale, label = (volume * divergence(mesh, out)).sum(0), out.abs().sum(0), \
            "|Σ V div Φ| / Σ|Φ|"
    else:
        total, scale, label = (volume * out).sum(0), (volume * out.abs()).sum(0), \
            "|Σ V T| / Σ V|T|"
    rel = (total.abs() / scale.clamp_min(torch.finfo(out.dtype).tiny)).reshape(-1)
    t = _tol(out, tol)
    if not bool((rel <= t).all()):
        k = int(torch.nan_to_num(rel, nan=math.inf).argmax())
        raise AssertionError(f"conservation: {label} = {float(rel[k]):.3g} in column {k} "
                             f"(sum = {float(total.reshape(-1)[k]):.3g}); tolerance {t:.1e}")


def assert_equivariant(model: Callable, mesh: Mesh, x: Tensor | None = None,
                       transform: str = "permutation", vectors: Sequence[Sequence[int]] = (),
                       tol: float | None = None, seed: int = 0) -> None:
    """Check a model against a symmetry of the mesh.

    Parameters
    ----------
    model : callable
        ``model(mesh, x)`` -> face outputs ``(n_faces, ...)`` (or cell outputs
        ``(n_cells, ...)`` for ``"permutation"``), or ``(mean, log_var)``.
    mesh : Mesh
    x : Tensor, shape (n_cells, n_features) or (B, n_cells, n_features), optional
        Cell inputs; a batch (outputs ``(B, n_faces, ...)``) is checked per sample.
    transform : {"permutation", "rotation", "translation"}
        - ``"permutation"``: random renumbering of cells
          (:meth:`Mesh.permute_cells`) and faces (:func:`permute_faces`); the
          inputs are renumbered too and the outputs must be renumbered the same way.
        - ``"rotation"`` (sphere): random rotation of the whole mesh
          (:func:`rotate_mesh`) and of the vector input columns ``vectors``;
          the face outputs must be unchanged.
        - ``"translation"`` (plane): random shift of all positions (wrapped on
          periodic axes, :func:`translate_mesh`); outputs unchanged.
    vectors : sequence of column-index triples
        Columns of ``x`` holding 3-D vectors to rotate, e.g. ``[(1, 2, 3)]``.
    tol : float, optional
        Relative tolerance (default 1e-12 float64 for permutations; 1e-10 for
        rotations and translations; 1e-5 float32).
    seed : int
        Seed of the random transform.

    Examples
    --------
    A flux that reads global coordinates is not rotation invariant:

    >>> import torch
    >>> from meshclosure.mesh import icosahedral
    >>> mesh = icosahedral(1)
    >>> def northward(m, x):
    ...     return m.face_normal[:, 2:] * m.face_area[:, None]
    >>> assert_equivariant(northward, mesh, transform="rotation")
    Traceback (most recent call last):
    ...
    AssertionError: rotation invariance: max deviation ...
    """
    gen = torch.Generator().manual_seed(seed)
    batched = _batched(x)
    d = int(batched)                                       # the face (or cell) dim
    out = _mean(model(mesh, x))
    if tol is None:
        tol = TOLERANCE.get(out.dtype, 1e-12)
        if transform != "permutation" and out.dtype == torch.float64:
            tol = 1e-10
    if transform == "permutation":
        pc = torch.randperm(mesh.n_cells, generator=gen).to(mesh.device)
        pf = torch.randperm(mesh.n_faces, generator=gen).to(mesh.device)
        new = permute_faces(mesh.permute_cells(pc), pf)
        got = _mean(model(new, None if x is None else x[..., pc, :]))
        if out.shape[d] == mesh.n_faces:
            _compare("permutation equivariance", got, out.index_select(d, pf), tol,
                     "face (renumbered)", batched)
        elif out.shape[d] == mesh.n_cells:
            _compare("permutation equivariance", got, out.index_select(d, pc), tol,
                     "cell (renumbered)", batched)
        else:
            raise ValueError(f"model output has {out.shape[d]} rows; expected n_faces="
                             f"{mesh.n_faces} or n_cells={mesh.n_cells}.")
    elif transform == "rotation":
        if not mesh.is_sphere:
            raise ValueError(f"transform='rotation' needs a sphere mesh; got {mesh!r}. Use "
                             "'translation' or 'permutation' on the plane.")
        R = random_rotation(seed, mesh.dtype).to(mesh.device)
        x_new = x
        if vectors:
            x_new = x.clone()
            for cols in vectors:
                cols = list(cols)
                x_new[..., cols] = x[..., cols] @ R.T.to(x.dtype)
        _compare("rotation invariance", _mean(model(rotate_mesh(mesh, R), x_new)), out, tol,
                 batched=batched)
    elif transform == "translation":
        if mesh.is_sphere:
            raise ValueError(f"transform='translation' needs a planar mesh; got {mesh!r}. Use "
                             "'rotation' on the sphere.")
        extent = (mesh.period if mesh.period is not None
                  else (mesh.vertex_pos.max(0).values - mesh.vertex_pos.min(0).values).tolist())
        shift = torch.rand(mesh.dim, generator=gen, dtype=torch.float64) * torch.tensor(
            [float(e) for e in extent], dtype=torch.float64)
        _compare("translation invariance", _mean(model(translate_mesh(mesh, shift), x)), out,
                 tol, batched=batched)
    else:
        raise ValueError(f"transform={transform!r} is not one of 'permutation', 'rotation', "
                         "'translation'.")


_SMALL: dict[str, Mesh] = {}


def small_meshes() -> dict[str, Mesh]:
    """Small float64 meshes of every family, for running the checks across families.

    ``cartesian-8x8`` (periodic), ``cartesian-channel-6x4`` (walls in y),
    ``healpix-2``, ``icosahedral-2``, ``dual-1`` (hexagons/pentagons),
    ``coarsened`` (``icosahedral(2)`` agglomerated to 40 cells), ``cubed-3``
    (equiangular cubed sphere, 54 quads). Built once and cached.

    >>> sorted({m.family for m in small_meshes().values()})
    ['cartesian', 'coarsened', 'cubed', 'healpix', 'icosahedral']
    """
    if not _SMALL:
        from .mesh import Coarsening, agglomerate, cartesian, cubed_sphere, healpix, icosahedral

        ico = icosahedral(2)
        _SMALL.update({
            "cartesian-8x8": cartesian(8, 8),
            "cartesian-channel-6x4": cartesian(6, 4, 1.5, 1.0, periodic=(True, False)),
            "healpix-2": healpix(2),
            "icosahedral-2": ico,
            "dual-1": icosahedral(1, dual=True),
            "coarsened": Coarsening(ico, agglomerate(ico, 40)).coarse,
            "cubed-3": cubed_sphere(3),
        })
    return dict(_SMALL)


def budget_residual(model: Any, state: dict, dt: float, n_steps: int,
                    total: Callable[[dict], Tensor], sources: Callable[[float, dict], Tensor],
                    outflow: Callable[[float], Any] | None = None, t0: float = 0.0,
                    stepper: str = "ssprk3") -> tuple[float, dict]:
    """The budget of a conserved total over a run, stage by stage (DESIGN.md §10).

    Per step the total ``T = total(state)`` must change by exactly
    ``dt Σ_s b_s (sources(t_s, y_s) − outflow(t_s))`` with the stepper's stage
    weights ``b_s`` (:data:`meshclosure.solver.STAGES`); whatever flux-form
    closure the model runs, the residual is rounding. Returns the residual
    accumulated over ``n_steps`` steps and the final state.

    Examples
    --------
    >>> import torch
    >>> from meshclosure.mesh import cartesian
    >>> from meshclosure.solver import TracerModel
    >>> mesh = cartesian(4, 4)
    >>> U = 0.2 * mesh.face_normal[:, 0] * mesh.face_area
    >>> V = mesh.cell_volume.double()
    >>> model = TracerModel(mesh, U.double(), source=torch.ones(16, dtype=torch.float64))
    >>> r, _ = budget_residual(model, {"q": torch.rand(16, dtype=torch.float64)}, 0.1, 50,
    ...                        lambda s: (V * s["q"]).sum(), lambda t, s: V.sum())
    >>> abs(r) < 1e-12
    True
    """
    from .solver.steppers import STAGES, get_stepper

    weights = STAGES[stepper].b
    step = get_stepper(stepper)
    residual, t = 0.0, float(t0)
    state = dict(state)
    for n in range(n_steps):
        stages: list = []

        def rhs(ts, s, stages=stages):
            stages.append((ts, s))
            return model.rhs(ts, s)

        new = step(rhs, t, state, dt)
        expected = sum(w * (sources(ts, s) - (outflow(ts) if outflow is not None else 0.0))
                       for w, (ts, s) in zip(weights, stages))
        residual += float(total(new) - total(state) - dt * expected)
        state, t = new, float(t0) + (n + 1) * dt
    return residual, state
