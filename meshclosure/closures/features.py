"""One feature pipeline: a model's inputs from a coarse state, for the dataset writer and online.

The inputs a closure was trained on must be the inputs it sees inside the
coarse model, computed by the same code from the same coarse state.
:class:`FeaturePipeline` is that code: a torch module (differentiable, on the
state's device and dtype) that the dataset writer uses to fill the
``input_*`` variables and that :class:`~meshclosure.closures.ModelClosure`
calls at every solver stage.

Features, in this order (the names are the dataset's variable names)::

    state_<v>                       the coarse state Q_v                      [v]
    input_grad_<v>_1, _2            ∇Q_v in the local tangent frame           [v]/length
                                    (x, y on the plane; east, north on the sphere;
                                    least squares, meshclosure.fv.gradient, of the
                                    pipeline's operator version)
    input_<name>                    scenario inputs (N, f, N2, ...):
                                    scenario.resolved_inputs(mesh, t, state, U)

Examples
--------
>>> import torch
>>> from meshclosure.mesh import cartesian
>>> mesh = cartesian(8, 8, 1.0, 1.0, periodic=False)
>>> pipe = FeaturePipeline(["q"])
>>> pipe.names
('state_q', 'input_grad_q_1', 'input_grad_q_2')
>>> x = mesh.cell_center.double()[:, 0]
>>> pipe(mesh, {"q": 3.0 * x})[:, 1].sub(3.0).abs().max() < 1e-12   # exact for linear fields
tensor(True)
>>> pipe.operators, FeaturePipeline.from_config({"variables": ["q"]}).operators
('fv2', 'fv1')
>>> pipe(mesh, {"b": x})
Traceback (most recent call last):
...
meshclosure.errors.ArgumentError: state={'b': ...}: has no variable 'q' (keys ['b']); ...
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Optional, Sequence

import torch
from torch import Tensor

from ..errors import ArgumentError
from ..fv.gradients import gradient
from ..fv.versions import check_operators
from ..graph import local_frame
from ..mesh import Mesh

__all__ = ["FeaturePipeline"]

ExtraFn = Callable[[Mesh, float, Mapping[str, Tensor], Optional[Tensor]], Mapping[str, Tensor]]


class FeaturePipeline(torch.nn.Module):
    """Cell inputs ``(n_cells, F)`` (or ``(B, n_cells, F)``) from a coarse state.

    Parameters
    ----------
    variables : sequence of str
        Prognostic variables, in order (``state_<v>`` and their gradients).
    gradients : bool
        Include ``input_grad_<v>_1/_2`` (default True).
    extra : sequence of str
        Names of scenario inputs, in order (``input_<name>``).
    extra_fn : callable ``(mesh, t, state, transport) -> {name: (n_cells,)}``, optional
        Computes the scenario inputs (e.g. ``scenario.resolved_inputs``).
        Required when ``extra`` is not empty, unless ``scenario_config`` is given.
    scenario_config : dict, optional
        A scenario's complete config (``scenario.config``); the pipeline rebuilds
        the scenario from it to compute ``extra`` when no ``extra_fn`` is given
        (this is how a saved pipeline comes back, see :meth:`from_config`).
    operators : str, optional
        Operator version of the gradients (:mod:`meshclosure.fv.versions`;
        default the current one). Recorded in :meth:`config`; a config without
        it predates versions and comes back as ``"fv1"`` (:meth:`from_config`).

    Shapes
    ------
    state values ``(n_cells,)`` -> ``(n_cells, F)``; ``(B, n_cells)`` -> ``(B, n_cells, F)``.
    """

    def __init__(self, variables: Sequence[str], gradients: bool = True,
                 extra: Sequence[str] = (), extra_fn: Optional[ExtraFn] = None,
                 scenario_config: Optional[Mapping[str, Any]] = None,
                 operators: Optional[str] = None) -> None:
        super().__init__()
        self.operators = check_operators(operators)
        variables = tuple(variables)
        if not variables or not all(isinstance(v, str) and v for v in variables):
            raise ArgumentError("variables", variables, "must be a non-empty sequence of "
                                "variable names", "pass e.g. ['q'] or scenario.variables")
        self.variables, self.gradients, self.extra = variables, bool(gradients), tuple(extra)
        self.scenario_config = dict(scenario_config) if scenario_config else None
        if self.scenario_config is not None and "operators" not in self.scenario_config:
            self.scenario_config["operators"] = self.operators    # a config from before versions
        self._extra_fn = extra_fn
        if self.extra and extra_fn is None and self.scenario_config is None:
            raise ArgumentError("extra_fn", None, f"is needed to compute the inputs "
                                f"{list(self.extra)}", "pass extra_fn=scenario.resolved_inputs "
                                "or scenario_config=scenario.config")

    # ------------------------------------------------------------------ building
    @classmethod
    def from_scenario(cls, scenario, gradients: bool = True) -> "FeaturePipeline":
        """The pipeline of a scenario: its variables, their gradients (of the scenario's
        operator version), and its inputs."""
        mesh = scenario.coarse
        probe = {v: torch.zeros(mesh.n_cells, dtype=torch.float64) for v in scenario.variables}
        U = torch.zeros(mesh.n_faces, dtype=torch.float64)
        extra = tuple(scenario.resolved_inputs(mesh, 0.0, probe, U))
        return cls(scenario.variables, gradients, extra, scenario.resolved_inputs,
                   scenario.config, getattr(scenario, "operators", None))

    def config(self) -> Dict[str, Any]:
        """JSON-able description; :meth:`from_config` rebuilds the pipeline from it."""
        return {"variables": list(self.variables), "gradients": self.gradients,
                "extra": list(self.extra), "scenario_config": self.scenario_config,
                "operators": self.operators}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "FeaturePipeline":
        """The pipeline of a :meth:`config`. A config without ``"operators"`` was saved
        before operator versions existed: its gradients are ``"fv1"``'s."""
        return cls(config["variables"], config.get("gradients", True),
                   config.get("extra", ()), None, config.get("scenario_config"),
                   config.get("operators", "fv1"))

    @property
    def names(self) -> tuple:
        """Feature names, in column order (the dataset's variable names)."""
        out = [f"state_{v}" for v in self.variables]
        if self.gradients:
            out += [f"input_grad_{v}_{k}" for v in self.variables for k in (1, 2)]
        return tuple(out + [f"input_{e}" for e in self.extra])

    @property
    def n_features(self) -> int:
        return len(self.names)

    def _extras(self) -> ExtraFn:
        if self._extra_fn is None:
            from ..data.scenarios import Scenario     # the data layer sits above this one

            self._extra_fn = Scenario.from_config(self.scenario_config).resolved_inputs
        return self._extra_fn

    # ------------------------------------------------------------------ computing
    def forward(self, mesh: Mesh, state: Mapping[str, Tensor], t: float = 0.0,
                transport: Optional[Tensor] = None) -> Tensor:
        """The features of ``state`` on ``mesh`` at time ``t`` (with ``transport``)."""
        if not isinstance(state, Mapping) or any(v not in state for v in self.variables):
            keys = sorted(state) if isinstance(state, Mapping) else type(state).__name__
            missing = [v for v in self.variables if not isinstance(state, Mapping)
                       or v not in state]
            raise ArgumentError("state", state, f"has no variable {missing[0]!r} (keys {keys})",
                                f"pass a dict with {list(self.variables)}")
        first = state[self.variables[0]]
        batched = first.dim() == 2
        if first.shape[-1] != mesh.n_cells or first.dim() not in (1, 2):
            raise ArgumentError(f"state[{self.variables[0]!r}]", tuple(first.shape),
                                f"must have shape (n_cells,) or (B, n_cells) with n_cells = "
                                f"{mesh.n_cells}", "pass the coarse state on this mesh")
        # batch as trailing dims: (n_cells, B)
        cols = {v: (state[v].transpose(0, 1) if batched else state[v]) for v in self.variables}
        out = [cols[v] for v in self.variables]
        if self.gradients:
            geo = mesh.to(device=first.device, dtype=first.dtype)
            e1, e2 = local_frame(geo, geo.cell_center)
            for v in self.variables:
                g = gradient(geo, cols[v], operators=self.operators)   # (n_cells, d, ...)
                if geo.dim == 1:
                    out += [g[:, 0], torch.zeros_like(g[:, 0])]
                    continue
                shape = (mesh.n_cells, g.shape[1]) + (1,) * (g.dim() - 2)
                out += [(g * e1.reshape(shape)).sum(1), (g * e2.reshape(shape)).sum(1)]
        if self.extra:
            out += self._extra_columns(mesh, state, t, transport, batched, first)
        x = torch.stack(out, -1)                               # (n_cells, [B,] F)
        return x.transpose(0, 1) if batched else x

    def _extra_columns(self, mesh, state, t, transport, batched, like) -> list:
        fn = self._extras()
        samples = range(like.shape[0]) if batched else [None]
        cols: Dict[str, list] = {e: [] for e in self.extra}
        for b in samples:
            s = {k: (v[b] if b is not None else v) for k, v in state.items()}
            U = transport if transport is None or b is None or transport.dim() == 1 \
                else transport[b]
            got = fn(mesh, t, s, U)
            for e in self.extra:
                if e not in got:
                    raise ArgumentError("extra", e, f"is not among the scenario inputs "
                                        f"{sorted(got)}", "rebuild the pipeline with "
                                        "FeaturePipeline.from_scenario(scenario)")
                cols[e].append(got[e].to(device=like.device, dtype=like.dtype))
        return [torch.stack(c, -1) if batched else c[0] for c in cols.values()]

    def extra_repr(self) -> str:
        return f"names={self.names}, operators={self.operators!r}"
