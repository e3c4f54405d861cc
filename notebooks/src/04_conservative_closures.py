# %% [markdown]
# # 04 — Closures that conserve by construction
#
# A learned subgrid closure in meshclosure does not predict a tendency per cell.
# It predicts one **integrated flux per face** `Φ_f`, positive from the face's owner
# cell `a` to its neighbour `b`, and the solver adds it through the same
# divergence as the resolved flux:
#
#     dq_i/dt = … − (1/V_i) (Σ_{f: a_f = i} Φ_f − Σ_{f: b_f = i} Φ_f).
#
# Whatever leaves cell `a` through face `f` enters cell `b`, so the total
# `Σ_i V_i q_i` cannot change, whatever the network predicts. The only thing a
# model must get right is that the flux of a face does not depend on which of its
# two cells we call the owner: seen from `b`, the flux must be exactly `−Φ_f`.
# A network that looks at the pair `(a, b)` in order does not give that for free;
# the three **antisymmetric heads** below do, for any weights.
#
# In this notebook we
# 1. build the three heads and check their antisymmetry and conservation;
# 2. show what goes wrong without them;
# 3. build models by name from the registry and run the public checks of
#    `meshclosure.testing` (antisymmetry, conservation, permutation, rotation,
#    translation), including a model that is *meant* to fail the rotation test;
# 4. put a closure into the solver and watch the total stay constant;
# 5. write and test a closure of our own.
#
# References: Pfaff et al. 2021 (MeshGraphNet), arXiv:2010.03409; Defferrard et al.
# 2016 and Perraudin et al. 2019 (Chebyshev filters, DeepSphere),
# arXiv:1606.09375, doi:10.1016/j.ascom.2019.03.004.

# %%
import matplotlib.pyplot as plt
import torch

from meshclosure.fv import divergence
from meshclosure.mesh import cartesian, healpix, icosahedral
from meshclosure.nn import (PairwiseHead, PotentialHead, VectorHead, build_model, face_geometry,
                            list_models)
from meshclosure.solver import TracerModel, integrate
from meshclosure.solver.flows import cosine_bell, solid_body_transport
from meshclosure.testing import (assert_antisymmetric, assert_conservative, assert_equivariant,
                                 random_rotation, rotate_mesh)

torch.set_num_threads(1)
torch.manual_seed(0)
mesh = icosahedral(3)          # 1280 triangles on the unit sphere
print(mesh)

# %% [markdown]
# ## 1. Three antisymmetric heads
#
# Every head maps **node latents** `z (n_cells, F)` (what a backbone network
# computes per cell) to face fluxes. Internally it evaluates both senses of every
# face, the *directed* form `(2 n_faces, n_vars)`: row `f` is the face seen from its
# owner, row `f + n_faces` seen from its neighbour.
#
# | head | formula | why it is antisymmetric |
# |---|---|---|
# | pairwise | `Φ_f = ½ (g(z_a, z_b, e_ab) − g(z_b, z_a, e_ba)) A_f` | swapping `a`, `b` swaps the two terms |
# | potential | `Φ_f = (h(z_a) − h(z_b)) A_f / d_f` | a difference of a cell potential |
# | vector | `Φ_f = ½ (w_a + w_b) · n_f A_f` | the normal `n_f` flips with the sense |
#
# `A_f` is the face length, `d_f` the distance between the cell centres and `n_f`
# the unit normal from `a` to `b`. The potential head is a learned down-gradient
# (diffusive) flux; the vector head is a learned eddy flux vector `w = \overline{u'q'}`.

# %%
F = 8
z = torch.randn(mesh.n_cells, F, dtype=torch.float64)
heads = {"pairwise": PairwiseHead(F, n_vars=1).double(),
         "potential": PotentialHead(F, n_vars=1).double(),
         "vector": VectorHead(F, n_vars=1).double()}
n = mesh.n_faces
V = mesh.cell_volume
for name, head in heads.items():
    head.requires_grad_(False)
    directed = head.directed(z, mesh)
    exact = torch.equal(directed[n:], -directed[:n])
    flux = head(z, mesh)[:, 0]
    total_tendency = float((V * divergence(mesh, flux)).sum())
    print(f"{name:9s}  Φ_ba == −Φ_ab bit for bit: {exact}   Σ V div(Φ) = {total_tendency:+.2e}"
          f"   (scale Σ|V div Φ| = {float((V * divergence(mesh, flux)).abs().sum()):.2e})")

# %% [markdown]
# ## 2. Without a head: a network that reads the pair in order
#
# Take the most obvious design, an MLP on `[z_a, z_b, e_ab]` that predicts the flux
# of the directed edge `a → b`. Nothing forces its prediction for `b → a` to be the
# negative, so if the solver uses "the flux leaving each cell" (one prediction per
# directed edge), what leaves `a` is not what enters `b`: the total drifts at every
# step. We compute the tendency that way and measure the drift of `Σ V q`.

# %%
geo = face_geometry(mesh)
src, dst = geo.edge_index
torch.set_grad_enabled(False)    # no training in this notebook
naive = torch.nn.Sequential(torch.nn.Linear(2 * F + geo.edge_attr.shape[1], 32), torch.nn.Tanh(),
                            torch.nn.Linear(32, 1)).double()
out_of_cell = naive(torch.cat([z[src], z[dst], geo.edge_attr], 1))[:, 0] * torch.cat(
    [geo.face_area, geo.face_area])
tendency = -torch.zeros(mesh.n_cells, dtype=torch.float64).index_add(0, src, out_of_cell) / V
print(f"naive directed-edge MLP: Σ V dq/dt = {float((V * tendency).sum()):+.3e}  (should be 0)")

# the same MLP made antisymmetric by the pairwise construction conserves again
g = naive(torch.cat([z[src], z[dst], geo.edge_attr], 1))[:, 0]
anti = 0.5 * (g[:n] - g[n:]) * geo.face_area
print(f"antisymmetrized:         Σ V dq/dt = {float((V * -divergence(mesh, anti)).sum()):+.3e}")

# %% [markdown]
# ## 3. Models by name, and the public checks
#
# `list_models(family)` says which closures run on a mesh family, and
# `build_model(name, mesh, **config)` builds one; a model asked to run on a family
# it does not support says which families it supports and what to use instead.
# `meshclosure.testing` holds the checks every model in the library passes, so you
# can run them on your own models:
#
# - `assert_antisymmetric(model, mesh, x)`: `Φ_ba = −Φ_ab` exactly, and the fluxes
#   do not depend on which cell of a face is called the owner (the mesh is rebuilt
#   with every face flipped);
# - `assert_conservative(model, mesh, x)`: `Σ V div(Φ) = 0` to rounding;
# - `assert_equivariant(model, mesh, x, transform=...)`: `"permutation"`
#   (renumber cells and faces), `"rotation"` (rotate the whole sphere and the vector
#   inputs), `"translation"` (shift a periodic plane).

# %%
for family in ("cartesian", "healpix", "icosahedral"):
    print(f"{family:12s}", list_models(family))

# %%
x = torch.randn(mesh.n_cells, 2, dtype=torch.float64)
for name in ("mgn", "chebnet", "mlp_global"):
    model = build_model(name, mesh, in_features=2, n_vars=1, hidden=16).double()
    assert_antisymmetric(model, mesh, x)
    assert_conservative(model, mesh, x)
    assert_equivariant(model, mesh, x, transform="permutation")
    print(f"{name:10s} antisymmetric, conservative, permutation-equivariant")

try:
    build_model("cnn", mesh, in_features=2)
except ValueError as err:
    print("\nasking for a CNN on a sphere:\n ", err)

# %% [markdown]
# ### Rotations: a test that can fail
#
# A closure on the sphere should not know where the pole is: rotate the whole mesh
# (and any vector inputs) and the face fluxes must not change. The Chebyshev filters
# (`"chebnet"`) see only cell distances and face lengths, so they pass. `"mlp_global"`
# reads the global coordinates of each cell, and MeshGraphNet (`"mgn"`) expresses
# edge geometry in the local east/north frame, which depends on the pole: both
# FAIL, as they should. That failure is what makes the passing result worth
# something.

# %%
def rotation_check(name, **config):
    model = build_model(name, mesh, in_features=2, n_vars=1, hidden=16, **config).double()
    try:
        assert_equivariant(model, mesh, x, transform="rotation")
        return "passes"
    except AssertionError as err:
        return "FAILS  (" + str(err).splitlines()[0][:70] + "…)"


for name in ("chebnet", "mgn", "mlp_global"):
    print(f"{name:10s} rotation test: {rotation_check(name)}")

# %% [markdown]
# The rotation-equivariant e3nn model (`"e3nn"`) takes scalars and tangent
# vectors (in global 3-D components, e.g. `∇q` or the velocity) and passes the
# rotation test with its vector inputs rotated too. Forget to rotate the vectors
# and it fails, as it should: the vectors carry direction.

# %%
grad_like = torch.randn(mesh.n_cells, 3, dtype=torch.float64)
r_hat = mesh.cell_center / mesh.cell_center.norm(dim=1, keepdim=True)
grad_like -= (grad_like * r_hat).sum(1, keepdim=True) * r_hat     # tangent vectors
xv = torch.cat([x, grad_like], 1)
model = build_model("e3nn", mesh, n_scalars=2, n_vectors=1, n_vars=1).double()
assert_equivariant(model, mesh, xv, transform="rotation", vectors=[(2, 3, 4)])
print("e3nn: rotation test passes with the vector input rotated")
try:
    assert_equivariant(model, mesh, xv, transform="rotation")
except AssertionError:
    print("e3nn: and FAILS when the vector input is left unrotated")
else:
    raise AssertionError("rotating the mesh but not the vectors should change the fluxes")

# %% [markdown]
# On a periodic plane the analogue of a rotation is a shift: the CNN and
# MeshGraphNet must give the same fluxes when the grid is translated.

# %%
plane = cartesian(16, 16, 1.0, 1.0)
xp = torch.randn(plane.n_cells, 2, dtype=torch.float64)
for name in ("cnn", "mgn"):
    model = build_model(name, plane, in_features=2, n_vars=1, hidden=8).double()
    assert_equivariant(model, plane, xp, transform="translation")
    print(f"{name}: translation-invariant on the periodic plane")

# %% [markdown]
# ## 4. A closure inside the solver
#
# The solver's closure hook takes a callable `(t, state, mesh) -> {variable: Φ}`.
# We plug in an **untrained** MeshGraphNet with random weights (its fluxes are
# meaningless) and carry a cosine bell around the sphere. The closure changes
# the tracer field, yet `Σ V q` stays put to rounding.

# %%
model = build_model("mgn", mesh, in_features=1, n_vars=1, hidden=16).double()
U = solid_body_transport(mesh, 0.0, u0=2 * torch.pi)   # one revolution per unit time
scale = float(U.abs().mean())


def closure(t, state, m):
    with torch.no_grad():
        return {"q": 0.05 * scale * model(m, state["q"][:, None])[:, 0]}


q0 = cosine_bell(mesh.cell_center, 1.0, h0=1.0)
tracer = TracerModel(mesh, U, scheme="linear", closure=closure)
dt = tracer.cfl_dt(0.5)
with torch.no_grad():
    plain = integrate(TracerModel(mesh, U, scheme="linear"), {"q": q0}, dt, 200, progress=False)
    hybrid = integrate(tracer, {"q": q0}, dt, 200, snapshot_every=20, progress=False)
total0 = float((V * q0).sum())
drift = [abs(float((V * q).sum()) / total0 - 1) for q in hybrid.snapshots["q"]]
print(f"relative drift of Σ V q with the closure, every 20 steps: {max(drift):.1e} at most")
print(f"closure changed the field by up to {float((hybrid.state['q'] - plain.state['q']).abs().max()):.3f}"
      f" (bell height 1)")

plt.figure(figsize=(6, 3.4))
plt.semilogy(range(0, 20 * len(drift), 20), [max(d, 1e-17) for d in drift], "o-",
             label="relative drift (exact 0 drawn at 10⁻¹⁷)")
plt.axhline(torch.finfo(torch.float64).eps, color="0.5", linestyle="--",
            label="float64 machine epsilon")
plt.xlabel("time step")
plt.ylabel("|Σ V q / Σ V q₀ − 1|")
plt.title("conservation with an untrained closure")
plt.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 5. Your own closure
#
# Write a `FluxModel` whose `directed_fluxes` ends in one of the heads, and the
# same checks apply. Here a small local model: each cell's latent is an MLP of its
# inputs and the mean of its neighbours' inputs, and the flux is a learned
# potential difference (a nonlinear, state-dependent diffusion).

# %%
from meshclosure.nn import FluxModel  # noqa: E402
from meshclosure.nn.mlp import mlp  # noqa: E402


class NeighbourMeanClosure(FluxModel):
    def __init__(self, in_features, n_vars=1, hidden=16):
        super().__init__()
        self.encode = mlp(2 * in_features, hidden, hidden, 1)
        self.head = PotentialHead(hidden, n_vars)

    def directed_fluxes(self, mesh, x=None):
        geo = face_geometry(mesh)
        src, dst = geo.edge_index
        count = torch.zeros(x.shape[0], 1, dtype=x.dtype).index_add(0, dst, torch.ones_like(x[src, :1]))
        mean = torch.zeros_like(x).index_add(0, dst, x[src]) / count
        return self.head.directed(self.encode(torch.cat([x, mean], 1)), mesh)


mine = NeighbourMeanClosure(2).double()
for m in (mesh, healpix(4), cartesian(12, 10, 1.0, 1.0, periodic=False)):
    xm = torch.randn(m.n_cells, 2, dtype=torch.float64)
    assert_antisymmetric(mine, m, xm)
    assert_conservative(mine, m, xm)
    assert_equivariant(mine, m, xm, transform="permutation")
    if m.is_sphere:
        assert_equivariant(mine, m, xm, transform="rotation")
    print(f"own closure passes every check on {m.family} ({m.n_cells} cells)")

# %% [markdown]
# ## What to take away
#
# - Conservation is a property of the *head*, not of training: the flux of a face is
#   the same number seen from both sides, so the divergence telescopes.
# - The symmetry tests are cheap; run them on every model on every mesh family it
#   claims to support, and keep one model that must fail each test, so you know the
#   test can fail.
# - Next: notebook 03 makes the training pairs (coarse state, subgrid flux) these
#   models learn from.
