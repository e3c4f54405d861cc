# %% [markdown]
# # 01 — Meshes and graphs
#
# meshclosure learns subgrid closures on the meshes Earth-system models use.
# Everything starts from one geometric object, the `Mesh`: cells (control
# volumes, graph nodes), faces (interfaces between two cells, graph edges) and
# vertices, with exact finite-volume geometry.
#
# In this notebook we
# 1. build each mesh family and check its geometry,
# 2. plot a field on each,
# 3. check the sign conventions with a streamfunction flow,
# 4. coarsen a mesh and restrict fields and fluxes,
# 5. turn a field into a `torch_geometric` graph,
# 6. export to ParaView (VTU), healpy maps and UGRID netCDF.

# %%
import math
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from meshclosure.mesh import (Coarsening, agglomerate, cartesian, from_meshio, healpix,
                              icosahedral)
from meshclosure.fv import divergence, transport_from_streamfunction
from meshclosure.plot import plot, subplot
from meshclosure.demo import annulus_meshio, demo_field

out = Path(tempfile.mkdtemp(prefix="meshclosure_nb01_"))

# %% [markdown]
# ## 1. The mesh families
#
# * `cartesian(nx, ny, lx, ly)`: a doubly periodic grid (or bounded, or a channel);
# * `healpix(nside)`: the HEALPix sphere, NESTED pixel order, exactly equal areas;
# * `icosahedral(level)`: triangles of the subdivided icosahedron (ICON-like), and
#   `icosahedral(level, dual=True)`: its hexagon/pentagon dual (MPAS-like);
# * `from_meshio(path_or_mesh)`: any triangle/quad/polygon mesh, e.g. your own.
#
# `validate()` checks the finite-volume contract and raises a `MeshError`
# naming the offending cells if anything is wrong.

# %%
meshes = {
    "cartesian 32x16": cartesian(32, 16, 2.0, 1.0),
    "healpix nside 8": healpix(8),
    "icosahedral level 3": icosahedral(3),
    "icosahedral dual level 3": icosahedral(3, dual=True),
    "annulus (meshio)": from_meshio(annulus_meshio()),
}
for name, mesh in meshes.items():
    mesh.validate()
    area_error = abs(float(mesh.cell_volume.sum()) / mesh.domain_area() - 1)
    print(f"{name:26s} cells={mesh.n_cells:5d} faces={mesh.n_faces:5d} "
          f"area error={area_error:.1e} Euler characteristic={mesh.euler_characteristic()}")

# %% [markdown]
# On the sphere the areas are exact spherical polygons (they sum to 4πR² to
# rounding) and the Euler characteristic V − E + F is 2; a periodic plane is a
# torus (0) and the annulus has one hole (0).
#
# ## 2. Plots
#
# `plot(mesh, field, label=..., units=...)` picks the right view: an image for
# Cartesian grids, polygons for other planar meshes, and on the sphere one map style
# for every family (Mollweide, with a labelled graticule: meridians every 60°,
# parallels every 30°). The colorbar reads `label [units]`. It returns a matplotlib
# figure, which the notebook shows when a cell ends in it:

# %%
dual = meshes["icosahedral dual level 3"]
plot(dual, demo_field(dual), label="test pattern", units="nondimensional",
     title="icosahedral dual, level 3")

# %% [markdown]
# To put several meshes in one figure, make each panel with `subplot(fig, mesh, ...)`
# (it gives sphere meshes a Mollweide panel) and pass it as `ax=`. `plot(..., path=...)`
# or `save_figure(fig, path)` writes `.png`, `.pdf` or `.svg` as the suffix says, and
# refuses to replace an existing file unless you pass `overwrite=True`.

# %%
fig = plt.figure(figsize=(16, 8.5))
for k, (name, mesh) in enumerate(meshes.items()):
    plot(mesh, demo_field(mesh), ax=subplot(fig, mesh, 2, 3, k + 1), title=name,
         label="test pattern", units="nondimensional")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 3. Sign conventions, checked with a streamfunction
#
# `face_cells[0]` is the owner *a*, `face_cells[1]` the neighbour *b*; normals
# and positive fluxes point from *a* to *b*. The face vertices run
# counter-clockwise around the owner, so `U_f = ψ(v0) − ψ(v1)` is the exact
# integrated transport of `u = k × ∇ψ`. Around every cell these telescope:
# the divergence is zero to rounding for *any* ψ.

# %%
for name, mesh in meshes.items():
    if mesh.n_boundary_faces:
        continue  # walls: see the solver notebook for boundary transports
    psi = torch.randn(mesh.n_vertices, dtype=torch.float64)
    U = transport_from_streamfunction(mesh, psi)
    print(f"{name:26s} max |div U| = {float(divergence(mesh, U).abs().max()):.1e}")

# %% [markdown]
# ## 4. Coarsening
#
# A nested hierarchy is a parent map. `Coarsening.native(fine, factor)` uses the
# family's own nesting (HEALPix `nside → nside/factor`, icosahedral
# `level → level − log2(factor)`, Cartesian blocks); `agglomerate` clusters any
# mesh. `restrict` is the volume-weighted mean and `restrict_flux` the signed
# sum of the fine fluxes through each coarse face, so the coarse divergence of
# restricted fluxes equals the restricted fine divergence exactly.

# %%
fine = healpix(16)
c = Coarsening.native(fine, 4)
q = demo_field(fine)
phi = torch.randn(fine.n_faces, dtype=torch.float64)
lhs = divergence(c.coarse, c.restrict_flux(phi))
rhs = c.restrict(divergence(fine, phi))
print(c.coarse, "\nmax |div_c(R Φ) − R(div_f Φ)| =", float((lhs - rhs).abs().max()))
print("Σ V q fine:", float((fine.cell_volume * q).sum()),
      " coarse:", float((c.coarse.cell_volume * c.restrict(q)).sum()))

# %% [markdown]
# The restriction keeps the pattern and its integral; with one colour scale for both,
# the coarse map shows what a coarse model can resolve. `agglomerate` clusters any mesh
# into compact patches (here the dual mesh into 40 cells).

# %%
agg = Coarsening(dual, agglomerate(dual, 40))
panels = [(fine, q, f"HEALPix nside 16 ({fine.n_cells} cells)"),
          (c.coarse, c.restrict(q), f"restricted to nside 4 ({c.coarse.n_cells} cells)"),
          (dual, demo_field(dual), f"icosahedral dual level 3 ({dual.n_cells} cells)"),
          (agg.coarse, agg.restrict(demo_field(dual)),
           f"agglomerated to {agg.coarse.n_cells} cells")]
fig = plt.figure(figsize=(15, 8.5))
for k, (mesh, field, title) in enumerate(panels):
    plot(mesh, field, ax=subplot(fig, mesh, 2, 2, k + 1), title=title, label="test pattern",
         units="nondimensional", vmin=-1.1, vmax=1.1)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 5. Graphs
#
# `mesh.to_graph(fields)` returns a `torch_geometric.data.Data`: node features
# `x`, both senses of every face as directed edges (edge `f` and `f + n_faces`),
# and edge geometry in the local frame of the source cell (displacement,
# normal, face length, centre distance), so a message-passing network sees
# nothing that depends on global coordinates.

# %%
mesh = meshes["icosahedral level 3"]
graph = mesh.to_graph({"q": demo_field(mesh), "lat": torch.asin(mesh.cell_center[:, 2])})
print(graph)
f = 7
print("directed edges f and f + n_faces:", graph.edge_index[:, f].tolist(),
      graph.edge_index[:, f + mesh.n_faces].tolist())

# %% [markdown]
# ## 6. Export
#
# VTU for ParaView, healpy maps for HEALPix, and UGRID-style netCDF (our cells
# are UGRID *faces*, our faces UGRID *edges*) that opens in uxarray.

# %%
from meshclosure.io import to_healpix_map, write_ugrid, write_vtu

write_vtu(mesh, {"q": demo_field(mesh)}, out / "icosahedral_L3.vtu")
write_ugrid(meshes["healpix nside 8"], {"q": demo_field(meshes["healpix nside 8"])},
            out / "healpix_8.nc")
hmap = to_healpix_map(meshes["healpix nside 8"], demo_field(meshes["healpix nside 8"]))
print(sorted(p.name for p in out.iterdir()), hmap.shape)
