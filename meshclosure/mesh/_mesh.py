"""The `Mesh`: finite-volume geometry shared by every part of meshclosure.

Vocabulary (DESIGN.md §2): a *cell* is a control volume and a graph node, a
*face* is the interface between two cells and one undirected graph edge, a
*vertex* is a mesh point. ``face_cells[0]`` is the owner ``a``, ``face_cells[1]``
the neighbour ``b``; ``face_normal`` points from ``a`` to ``b``; a face flux is
positive from ``a`` to ``b``.

``face_vertices[:, f] = (v0, v1)`` is ordered so that ``v0 -> v1`` runs
counter-clockwise around the owner (seen from outside the sphere, or from
``+z`` in the plane). Then the transport of a streamfunction ``psi`` given at
vertices, ``U_f = psi(v0) - psi(v1)``, is the exact discrete form of
``u = k x grad(psi)`` (``u = -dpsi/dy``, ``v = dpsi/dx``) and has zero
divergence in every cell (see :func:`meshclosure.fv.transport_from_streamfunction`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..errors import MeshclosureError
from .graph import to_graph

__all__ = ["Mesh", "MeshError"]


class MeshError(MeshclosureError, ValueError):
    """A mesh breaks a rule of the finite-volume contract.

    Attributes
    ----------
    cells, faces : list of int
        The offending cells and faces (may be empty).
    """

    def __init__(self, message: str, cells: Any = (), faces: Any = ()) -> None:
        super().__init__(message)
        self.cells = [int(c) for c in cells]
        self.faces = [int(f) for f in faces]


_FLOAT_FIELDS = (
    "cell_center", "cell_volume", "face_normal", "face_area", "face_center",
    "cell_distance", "vertex_pos", "boundary_face_normal", "boundary_face_area",
    "boundary_face_center",
)
_INDEX_FIELDS = (
    "face_cells", "face_vertices", "cell_vertices", "boundary_face_cell",
    "boundary_face_vertices", "boundary_face_tag",
)


@dataclass(frozen=True, eq=False)
class Mesh:
    """Finite-volume geometry of a 2-D surface mesh (plane, sphere) or a 1-D column.

    Build meshes with the adapters (:func:`~meshclosure.mesh.cartesian`,
    :func:`~meshclosure.mesh.healpix`, :func:`~meshclosure.mesh.icosahedral`,
    :func:`~meshclosure.mesh.from_meshio`) rather than by hand.

    Attributes
    ----------
    cell_center : Tensor, shape (n_cells, d)
        Cell centroids; on the sphere on the sphere of radius ``radius``.
    cell_volume : Tensor, shape (n_cells,)
        Cell areas (2-D) or lengths (1-D column), in length units squared.
    face_cells : LongTensor, shape (2, n_faces)
        Owner (row 0) and neighbour (row 1) of each interior face.
    face_normal : Tensor, shape (n_faces, d)
        Unit normal from owner to neighbour, tangent to the sphere.
    face_area : Tensor, shape (n_faces,)
        Face length (great-circle arc on the sphere).
    face_center : Tensor, shape (n_faces, d)
        Face midpoint.
    cell_distance : Tensor, shape (n_faces,)
        Owner-to-neighbour centre distance (geodesic on the sphere).
    vertex_pos : Tensor, shape (n_vertices, d)
    face_vertices : LongTensor, shape (2, n_faces)
        ``(v0, v1)`` counter-clockwise around the owner.
    cell_vertices : LongTensor, shape (n_cells, max_vertices_per_cell)
        Polygon of each cell, counter-clockwise, padded with -1.
    boundary_face_cell : LongTensor, shape (n_boundary_faces,)
    boundary_face_vertices : LongTensor, shape (2, n_boundary_faces)
    boundary_face_normal : Tensor, shape (n_boundary_faces, d)
        Outward unit normal.
    boundary_face_area, boundary_face_center : Tensor
    boundary_face_tag : LongTensor, shape (n_boundary_faces,)
        Index into ``boundary_tag_names``.
    boundary_tag_names : tuple of str
    radius : float or None
        Sphere radius; ``None`` for planar meshes and columns.
    period : tuple of float or None
        Periodic lengths ``(lx, ly)`` of a doubly periodic plane.
    info : dict
        Family and parameters, e.g. ``{"family": "healpix", "nside": 8}``.
    """

    cell_center: Tensor
    cell_volume: Tensor
    face_cells: Tensor
    face_normal: Tensor
    face_area: Tensor
    face_center: Tensor
    cell_distance: Tensor
    vertex_pos: Tensor
    face_vertices: Tensor
    cell_vertices: Tensor
    boundary_face_cell: Tensor
    boundary_face_vertices: Tensor
    boundary_face_normal: Tensor
    boundary_face_area: Tensor
    boundary_face_center: Tensor
    boundary_face_tag: Tensor
    boundary_tag_names: tuple = ()
    radius: float | None = None
    period: tuple | None = None
    info: dict = field(default_factory=dict)

    # ------------------------------------------------------------------ sizes
    @property
    def n_cells(self) -> int:
        return int(self.cell_volume.shape[0])

    @property
    def n_faces(self) -> int:
        return int(self.face_cells.shape[1])

    @property
    def n_vertices(self) -> int:
        return int(self.vertex_pos.shape[0])

    @property
    def n_boundary_faces(self) -> int:
        return int(self.boundary_face_cell.shape[0])

    @property
    def dim(self) -> int:
        """Dimension ``d`` of the coordinates (1 column, 2 plane, 3 sphere)."""
        return int(self.cell_center.shape[1])

    @property
    def is_sphere(self) -> bool:
        return self.radius is not None

    @property
    def family(self) -> str:
        return str(self.info.get("family", "unknown"))

    @property
    def dtype(self) -> torch.dtype:
        return self.cell_volume.dtype

    @property
    def device(self) -> torch.device:
        return self.cell_volume.device

    def domain_area(self) -> float:
        """Exact area of the domain: ``info["domain_area"]`` when the adapter
        knows it (Cartesian ``lx·ly``), 4πR² on the sphere, else the area
        enclosed by the boundary faces (shoelace over them)."""
        import math

        if "domain_area" in self.info:
            return float(self.info["domain_area"])
        if self.is_sphere and self.n_boundary_faces == 0:
            return 4.0 * math.pi * self.radius**2
        if self.is_sphere:
            return _gauss_bonnet_area(self)
        if self.period is not None and all(self.period):
            return float(self.period[0] * self.period[1])
        if self.period is not None:   # one periodic axis: no boundary loop to integrate
            return float(self.cell_volume.double().sum())
        if self.dim == 1:
            x = self.vertex_pos[:, 0]
            return float(x.max() - x.min())
        v = self.vertex_pos.double()
        p, q = v[self.boundary_face_vertices[0]], v[self.boundary_face_vertices[1]]
        return float(0.5 * (p[:, 0] * q[:, 1] - q[:, 0] * p[:, 1]).sum())

    def signature(self) -> dict:
        """A small, JSON-able description used to match data and models to a mesh."""
        sig = {k: v for k, v in self.info.items() if isinstance(v, (int, float, str, bool))}
        sig.update(n_cells=self.n_cells, n_faces=self.n_faces,
                   total_volume=round(float(self.cell_volume.double().sum()), 9))
        return sig

    # ------------------------------------------------------------- transforms
    def to(self, device: Any = None, dtype: torch.dtype | None = None) -> "Mesh":
        """Copy to ``device`` with floating-point geometry in ``dtype`` (``self`` when
        nothing would change, so per-mesh operator caches stay valid)."""
        same_device = device is None or torch.device(device) == self.device
        if same_device and (dtype is None or dtype == self.dtype):
            return self
        changes = {}
        for name in _FLOAT_FIELDS:
            changes[name] = getattr(self, name).to(device=device, dtype=dtype)
        for name in _INDEX_FIELDS:
            changes[name] = getattr(self, name).to(device=device)
        return dataclasses.replace(self, **changes)

    def double(self) -> "Mesh":
        return self.to(dtype=torch.float64)

    def float(self) -> "Mesh":
        return self.to(dtype=torch.float32)

    def permute_cells(self, perm: Tensor) -> "Mesh":
        """Renumber cells: new cell ``i`` is old cell ``perm[i]``.

        Face order and vertices are unchanged; owner/neighbour indices are
        renumbered. Used to test permutation equivariance and to reorder for
        memory locality.

        Parameters
        ----------
        perm : LongTensor, shape (n_cells,)
            A permutation of ``range(n_cells)``.
        """
        perm = torch.as_tensor(perm, dtype=torch.long, device=self.device)
        if perm.shape != (self.n_cells,) or not torch.equal(
                torch.sort(perm).values, torch.arange(self.n_cells, device=self.device)):
            raise ValueError(
                f"perm must be a permutation of range(n_cells={self.n_cells}); got shape "
                f"{tuple(perm.shape)}. Pass e.g. torch.randperm(mesh.n_cells).")
        inverse = torch.empty_like(perm)
        inverse[perm] = torch.arange(self.n_cells, device=self.device)
        return dataclasses.replace(
            self,
            cell_center=self.cell_center[perm],
            cell_volume=self.cell_volume[perm],
            cell_vertices=self.cell_vertices[perm],
            face_cells=inverse[self.face_cells],
            boundary_face_cell=inverse[self.boundary_face_cell],
            # the family's own cell order (grids, NESTED maps, nesting) no longer holds
            info={"family": "permuted", "permuted_family": self.family,
                  **({"domain_area": self.info["domain_area"]}
                     if "domain_area" in self.info else {})},
        )

    # ------------------------------------------------------------ validation
    def validate(self, raise_on_error: bool = True, tol: float | None = None,
                 warn: bool = True) -> list[str]:
        """Check the finite-volume contract (DESIGN.md §3), and warn of poor quality.

        Checks: nothing NaN/Inf; every face joins two distinct, existing cells;
        cells are closed and consistently oriented (the transport of a random
        vertex streamfunction has zero divergence in every cell); volumes and
        face areas are positive; normals are unit, tangent on the sphere and
        point owner -> neighbour; the volumes sum to the domain area; a closed
        sphere has Euler characteristic 2.

        A mesh that passes may still be hard for some schemes. When its
        smallest interior angle is below 10° (slivers) or its cell areas vary
        by more than 10³ (see :meth:`quality`), a
        :class:`~meshclosure.mesh.MeshQualityWarning` names the numbers, the
        risk and the schemes to use: with the old face-neighbour stencils
        (``operators="fv1"``) the unlimited linear scheme can grow a mode on
        sliver cells at any time step (random data grew ×3.7·10³ per revolution
        on a Delaunay mesh with 0.5° angles); the default operators (``"fv2"``,
        vertex-neighbour stencils) and the ``"quadratic"``, ``"limited"`` and
        ``"upwind"`` schemes stay stable there (fv2 fits the vertex neighbours
        on every mesh outside the built-in structured families, warned of or
        not: :func:`meshclosure.fv.gradients.gradient_stencil`). The built-in
        families (cartesian, healpix, icosahedral, cubed) never warn;
        :func:`irregular_sphere` meshes are made to.

        Parameters
        ----------
        raise_on_error : bool
            Raise a :class:`MeshError` on the first failed check (default);
            otherwise return the list of problems (empty when valid).
        tol : float, optional
            Relative tolerance; default 1e-10 in float64, 1e-4 in float32.
        warn : bool
            Warn of poor quality on a valid mesh (default); ``False`` checks only.

        Returns
        -------
        list of str
            Problems found (empty when valid).

        Warns
        -----
        MeshQualityWarning
            On a valid 2-D mesh with slivers or widely varying cell areas.

        Examples
        --------
        >>> import warnings
        >>> from meshclosure.mesh import icosahedral, irregular_sphere
        >>> icosahedral(2).validate()
        []
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     irregular_sphere(500, seed=0).validate()
        []
        >>> print(str(caught[0].message)[:43])
        mesh has slivers: smallest interior angle 0
        """
        from ._validate import validate_mesh

        return validate_mesh(self, raise_on_error=raise_on_error, tol=tol, warn=warn)

    def quality(self) -> dict:
        """Shape measures of the mesh, for choosing a scheme (see :meth:`validate`).

        Angles are interior polygon angles: on the plane between the straight
        edges, on the sphere between the great-circle edges (their tangents at
        the vertex). Centre-to-centre vectors and face normals are compared in
        the tangent plane at the face centre on the sphere.

        Returns
        -------
        dict
            ``min_angle``, ``max_angle`` : float, degrees
                Smallest / largest interior angle over all cells (``None`` on a
                1-D column); ``min_angle_cell`` the cell with the smallest.
            ``area_ratio`` : float
                ``max V_i / min V_i``.
            ``face_length_ratio`` : float
                Longest / shortest face (interior and boundary).
            ``distance_ratio`` : float
                Longest / shortest centre-to-centre distance.
            ``max_non_orthogonality``, ``mean_non_orthogonality`` : float, degrees
                Angle between the owner-to-neighbour centre vector and the face
                normal (0 on orthogonal meshes such as Cartesian grids).
            ``max_skewness`` : float
                Distance from the face centre to the point where the
                centre-to-centre line crosses the face, over the face length
                (0 when the line crosses at the midpoint, 0.5 at an end).

        Examples
        --------
        >>> from meshclosure.mesh import cartesian
        >>> q = cartesian(4, 4, 4.0, 2.0).quality()
        >>> q["min_angle"], q["max_angle"], q["area_ratio"], q["face_length_ratio"]
        (90.0, 90.0, 1.0, 2.0)
        >>> q["max_non_orthogonality"], q["max_skewness"]
        (0.0, 0.0)
        """
        from ._validate import mesh_quality

        return mesh_quality(self)

    def euler_characteristic(self) -> int:
        """For 2-D meshes, ``V - E + F`` with V the vertices that end a face, E all faces
        (interior and boundary) and F the cells. 2 for a closed sphere, 0 for a
        periodic plane (torus) or an annulus."""
        used = torch.cat([self.face_vertices.reshape(-1),
                          self.boundary_face_vertices.reshape(-1)]).unique()
        return int(used.numel() - self.n_faces - self.n_boundary_faces + self.n_cells)

    # ------------------------------------------------------------------ graph
    def to_graph(self, fields: Any = None):
        """This mesh and cell fields as a ``torch_geometric.data.Data``.

        See :func:`meshclosure.graph.to_graph`.
        """
        return to_graph(self, fields)

    def __repr__(self) -> str:
        fam = ", ".join(f"{k}={v}" for k, v in self.info.items())
        return (f"Mesh({fam}; n_cells={self.n_cells}, n_faces={self.n_faces}, "
                f"n_boundary_faces={self.n_boundary_faces}, dim={self.dim}, "
                f"dtype={self.dtype})")


def _gauss_bonnet_area(mesh: Mesh) -> float:
    """Area of an open region of the sphere from its boundary alone (Gauss–Bonnet):
    ``A = R² (2π χ − Σ turning angles)`` where the boundary is made of great-circle
    arcs traversed with the region on the left, and χ is the Euler characteristic."""
    import math

    v = mesh.vertex_pos.double() / mesh.radius
    p, q = mesh.boundary_face_vertices
    # tangent of arc p->q at its start and at its end
    def tangent(at, to):
        t = v[to] - (v[to] * v[at]).sum(1, keepdim=True) * v[at]
        return t / t.norm(dim=1, keepdim=True)
    t_out = tangent(p, q)                      # leaving p
    t_in = -tangent(q, p)                      # arriving at q
    # next boundary face of the loop: the one starting where this one ends
    order = torch.argsort(p)
    nxt = order[torch.searchsorted(p[order], q)]
    a, b = t_in, t_out[nxt]
    turn = torch.atan2((torch.linalg.cross(a, b) * v[q]).sum(1), (a * b).sum(1))
    chi = mesh.euler_characteristic()
    return float(mesh.radius**2 * (2 * math.pi * chi - turn.sum()))
