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
from meshclosure.plot import plot
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
# `plot(mesh, field)` picks the right view: an image for Cartesian grids, a
# Mollweide map for HEALPix, projected polygons for everything else.

# %%
for name, mesh in meshes.items():
    fig = plot(mesh, demo_field(mesh), title=name)
    plt.close(fig)
fig = plot(meshes["icosahedral dual level 3"], demo_field(meshes["icosahedral dual level 3"]),
           title="icosahedral dual, level 3")
fig

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
fig = plot(c.coarse, c.restrict(q), title="HEALPix nside 16 → 4")
plt.close(fig)

dual = meshes["icosahedral dual level 3"]
agg = Coarsening(dual, agglomerate(dual, 40))
fig = plot(agg.coarse, agg.restrict(demo_field(dual)), title="dual level 3 agglomerated to 40 cells")
fig

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
