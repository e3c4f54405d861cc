"""Closure models that conserve by construction (DESIGN.md §7).

Every model maps cell inputs on a :class:`~meshclosure.mesh.Mesh` (or its
graph) to integrated face fluxes ``(n_faces, n_vars)`` through an
antisymmetric head, so ``Σ_i V_i div(Φ)_i = 0`` to rounding for any weights.
Every model also takes a batch on one shared mesh, ``x (B, n_cells, F)`` ->
``(B, n_faces, n_vars)``; heteroscedastic models return a
:class:`FluxPrediction` ``(mean, log_var)``.
Build models by name with :func:`build_model`; check your own models with
:mod:`meshclosure.testing`.
"""
from .heads import (HEADS, FaceGeometry, FluxModel, FluxPrediction, PairwiseHead, PotentialHead,
                    VectorHead, face_geometry)
from .registry import (ALL_FAMILIES, UnknownModelError, UnsupportedMeshError, build_model,
                       check_family, list_models, model_families, register)
from .mlp import GlobalMLP, mlp  # noqa: I001  (registers "mlp_global")
from .mgn import MeshGraphNet  # registers "mgn"
from .cnn import CartesianCNN  # registers "cnn"
from .fno import FNO  # registers "fno"
from .chebyshev import ChebConv, ChebNetClosure  # registers "chebnet"
from ..sht import HealpixSHT  # re-exported: the transform lives in meshclosure.sht
from .spectral import (SFNOClosure, SpectralClosure, SphericalHarmonicFilter,  # "spectral",
                       healpix_pixels)                                           # "sfno"
from .equivariant import EquivariantConv, EquivariantGNN, input_irreps  # registers "e3nn"
from .transformer import (GraphTransformer, MeshTooLargeError,  # registers "transformer"
                          random_walk_encoding)
from .recurrent import STAGE_TIMES, STAGES, RecurrentClosure, RecurrentHook  # "gru"
from .nodewise import NodewiseTendency  # references: "nodewise", "nodewise_mean_free"
from .checkpoint import CheckpointError, LoadedModel, load_model, save_model

__all__ = [
    "build_model", "list_models", "register", "model_families", "check_family",
    "UnsupportedMeshError", "UnknownModelError", "ALL_FAMILIES",
    "PairwiseHead", "PotentialHead", "VectorHead", "HEADS", "FluxModel", "FluxPrediction",
    "FaceGeometry",
    "face_geometry", "mlp", "GlobalMLP", "MeshGraphNet", "CartesianCNN", "FNO",
    "ChebConv", "ChebNetClosure", "SphericalHarmonicFilter", "SpectralClosure", "SFNOClosure",
    "HealpixSHT", "healpix_pixels", "EquivariantConv", "EquivariantGNN", "input_irreps",
    "GraphTransformer", "MeshTooLargeError", "random_walk_encoding", "RecurrentClosure",
    "RecurrentHook", "STAGES", "STAGE_TIMES", "NodewiseTendency", "save_model", "load_model",
    "LoadedModel", "CheckpointError",
]
