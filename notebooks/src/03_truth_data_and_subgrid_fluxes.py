# %% [markdown]
# # 03 — Truth data and subgrid fluxes
#
# A learned closure is trained on pairs (resolved coarse state, true subgrid flux).
# meshclosure makes them by running a scenario at high resolution and
# coarse-graining each snapshot with the mesh's own nesting (a parent map).
#
# In this notebook we
# 1. run the `kinematic` scenario on the three sphere/plane families and show the
#    fine field, its coarse version and the subgrid flux;
# 2. check the identity `s^sgs = −div_coarse(Φ^sgs)` that makes conservative
#    closures trainable, and the refinement property;
# 3. average the `convection` slice onto a column, where the subgrid flux is the
#    eddy buoyancy flux `w'b'`;
# 4. write a dataset with `generate`, read it back and get PyG graphs from
#    `SubgridDataset`.
#
# Sizes are tiny so the notebook runs in seconds; `meshclosure generate --help`
# lists realistic configurations.

# %%
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from meshclosure.data import (SubgridDataset, check_identity, generate, get_scenario,
                              read_dataset, subgrid_targets)
from meshclosure.fv import divergence
from meshclosure.mesh import Coarsening
from meshclosure.plot import face_flux_density, plot, subplot

torch.set_num_threads(1)   # small meshes: one thread is fastest
out = Path(tempfile.mkdtemp(prefix="meshclosure_nb03_"))

# %% [markdown]
# ## 1. Subgrid targets
#
# For a conserved tracer `q` carried by the face transport `U` with the resolved
# flux operator `Φ^res(q, U)` (same scheme and coefficients on every mesh), the
# coarsening gives
#
#     Q = restrict(q)                 U_c = restrict_flux(U)
#     Φ^sgs = restrict_flux(Φ^res_fine(q, U)) − Φ^res_coarse(Q, U_c)
#     s^sgs = restrict(T_fine) − T_coarse,          T = −div(Φ^res)
#
# except that `U_c` is the transport the coarse model is given,
# `scenario.coarse_transport(...)`. The `kinematic` scenario gives it the large-scale
# streamfunction at the coarse vertices: a streamfunction's transport through a coarse
# face is the difference of its point values at the two end vertices, so
# `restrict_flux(U)` would hand the coarse model the unresolved eddies at full
# amplitude. Their net transport through each coarse face is subgrid, so `|Φ^sgs|` is
# about as large as the restricted flux itself.
#
# `Φ^sgs` lives on the coarse faces (positive owner → neighbour). To draw it as a cell
# field we show the mean subgrid flux density `|Φ^sgs_f| / A_f` over each cell's faces
# (`meshclosure.plot.face_flux_density`).

# %%
cases = {"Cartesian 32² → 8²": ("cartesian:32", 4),
         "HEALPix nside 8 → 2": ("healpix:8", 4),
         "icosahedral level 3 → 2": ("icosahedral:3", 2)}
snapshots = {}
for title, (spec, factor) in cases.items():
    sc = get_scenario("kinematic", spec, factor=factor, seed=0, spinup_time=0.5)
    t, state = sc.spin_up(sc.initial_state())
    U = sc.transport(t, state)
    sample = subgrid_targets(sc, sc.coarsening, t, state, U)
    snapshots[title] = (sc, state, sample)
    print(f"{title:26s} fine {sc.fine.n_cells:5d} cells, coarse {sc.coarse.n_cells:4d} cells, "
          f"identity defect {check_identity(sample, sc.coarse):.1e}")

# %% [markdown]
# The scenarios are nondimensional (unit square or unit sphere, the scenario's own time
# unit). Fine `q` and coarse `Q` share one colour scale; `s^sgs` has a diverging scale
# centred on zero.

# %%
UNITS = "nondimensional"
for title, (sc, state, sample) in snapshots.items():
    fig = plt.figure(figsize=(17, 3.5) if sc.fine.is_sphere else (17, 3.9))
    q_lim = {"vmin": float(min(state["q"].min(), sample.state["q"].min())),
             "vmax": float(max(state["q"].max(), sample.state["q"].max()))}
    panels = [(sc.fine, state["q"], f"fine q ({sc.fine.n_cells} cells)", "q", q_lim),
              (sc.coarse, sample.state["q"], f"coarse Q ({sc.coarse.n_cells} cells)", "Q", q_lim),
              (sc.coarse, face_flux_density(sc.coarse, sample.flux["q"]),
               "subgrid flux density |Φ^sgs| / A", "|Φ^sgs| / A", {}),
              (sc.coarse, sample.tendency["q"], "subgrid tendency s^sgs", "s^sgs",
               {"diverging": True})]
    for k, (mesh, field, name, label, scale) in enumerate(panels):
        plot(mesh, field, ax=subplot(fig, mesh, 1, 4, k + 1), title=name, label=label,
             units=UNITS, **scale)
    fig.suptitle(title)
    fig.tight_layout()
    plt.show()

# %% [markdown]
# ## 2. The identity, conservation and the coarse flow
#
# Fine faces inside a coarse cell cancel in `restrict(div_fine Φ)`, so
# `s^sgs = −div_coarse(Φ^sgs)` holds to rounding. `s^sgs` above was computed from the
# restricted fine tendency, not from `Φ^sgs`: the check is real. Its integral vanishes
# (a flux only moves `q` around), and the coarse transport `U_c` is exactly
# non-divergent like the fine one.

# %%
for title, (sc, state, sample) in snapshots.items():
    V = sc.coarse.cell_volume
    s = sample.tendency["q"]
    div_uc = float(divergence(sc.coarse, sample.transport).abs().max())
    print(f"{title:26s} max|s + div Φ| / max|s| = {check_identity(sample, sc.coarse):.1e}, "
          f"Σ V s^sgs = {float((V * s).sum()):+.1e}, max|div U_c| = {div_uc:.1e}")

# %% [markdown]
# **Refinement.** With a factor-1 "coarsening" (every cell its own parent) the coarse
# model is the fine one and the subgrid flux vanishes. From factor 2 on the coarse
# model of the `kinematic` scenario knows only the large-scale flow, and the eddies'
# net transport makes `Φ^sgs` about as large as the restricted resolved flux.

# %%
sc = get_scenario("kinematic", "cartesian:32", factor=4, seed=0, spinup_time=0.5)
t, state = sc.spin_up(sc.initial_state())
U = sc.transport(t, state)
for factor in (1, 2, 4, 8):
    c = Coarsening.native(sc.fine, factor)
    s = subgrid_targets(sc, c, t, state, U, inputs=False)
    resolved = c.restrict_flux(sc.resolved_fluxes(sc.fine, t, state, U)["q"])
    print(f"factor {factor}: |Φ^sgs| / |restrict_flux(Φ^res)| = "
          f"{float(s.flux['q'].norm() / resolved.norm()):.2e}")

# %% [markdown]
# ## 3. The convection column
#
# The `convection` scenario heats an x–z slice of Boussinesq fluid from below. Averaging
# each level horizontally is the same coarsening machinery (the parent of a cell is its
# level). The mean vertical transport through a level is zero, so the whole resolved
# vertical buoyancy flux of the slice, the eddy flux `w'b'`, is subgrid for the column.

# %%
sc = get_scenario("convection", "cartesian:32x16", factor=2, seed=0, spinup_time=15.0)
t, state = sc.spin_up(sc.initial_state())
sample = subgrid_targets(sc, sc.coarsening, t, state, sc.transport(t, state))
col = sc.coarse
z_cell = col.cell_center[:, 1]
z_face = col.face_center[:, 1]
print(f"identity defect {check_identity(sample, col):.1e}; "
      f"coarse transport max |U_c| = {float(sample.transport.abs().max()):.1e}")

fig = plt.figure(figsize=(15, 3.8))
plot(sc.fine, state["b"], ax=fig.add_subplot(1, 3, 1), title="slice: buoyancy b",
     label="b", units=UNITS, xlabel="x", ylabel="z")
ax = fig.add_subplot(1, 3, 2)
ax.plot(sample.state["b"], z_cell, "o-")
ax.set(xlabel=f"column mean b̄ [{UNITS}]", ylabel="z", title="coarse (column) state")
ax = fig.add_subplot(1, 3, 3)
ax.plot(sample.flux["b"] / col.face_area, z_face, "o-")
ax.axvline(0.0, color="0.5", linewidth=0.5)
ax.set(xlabel=f"Φ^sgs / A ≈ w'b' [{UNITS}]", ylabel="z", title="subgrid buoyancy flux")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 4. Datasets on disk and graphs for training
#
# `generate(scenario, out, ...)` (or `meshclosure generate` on the command line) spins up,
# keeps a sample every `every` fine steps, and writes one netCDF file atomically: the coarse
# state, inputs (gradients, `N`, the coarse transport), `Φ^sgs` and `s^sgs`, the coarse mesh
# (exactly, and as UGRID for uxarray), the full scenario config, seed, package versions and
# the train/val/test split (contiguous blocks in time) plus an out-of-distribution split
# from `scenario.ood()`. An interrupted run resumes from `out.partial/`.

# %%
sc = get_scenario("kinematic", "healpix:8", factor=4, seed=0, spinup_time=0.2)
path = generate(sc, out / "kinematic_hp8.nc", n_samples=10, every=4, ood_samples=2,
                progress=False)
ds = read_dataset(path)
print(ds.sizes)
print("splits:", ds["split"].values.tolist())
print("variables:", [v for v in ds.data_vars if v.startswith(("state_", "sgs_", "input_"))])

# %% [markdown]
# `SubgridDataset` yields `torch_geometric` graphs of the coarse mesh with inputs `x`
# (normalised with statistics from the training split only) and targets `y = Φ^sgs`
# per face. The same scale on `y` and `y_tendency` keeps `y_tendency = −div(y)`.

# %%
train = SubgridDataset(path, "train")
test = SubgridDataset(path, "test", stats=train.stats)
g = train[0]
print(train)
print(g)
print("inputs:", g.feature_names)
defect = (-divergence(train.mesh.float(), g.y[:, 0]) - g.y_tendency[:, 0]).abs().max()
print(f"normalised identity defect (float32): {float(defect):.1e}")
