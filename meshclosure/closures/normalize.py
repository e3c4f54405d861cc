"""The :class:`Normalizer`: training-split statistics as a module that travels with the model.

Inputs are standardised feature by feature, ``x̂ = (x − mean) / scale``; the two
components of a gradient share one scale (their joint RMS), so a rotation of the
local frame stays a rotation. Targets are only scaled, one ``flux_scale`` per
variable (the RMS of ``Φ^sgs``): a model's normalised face flux ``ŷ`` is the
physical flux ``ŷ · flux_scale`` ([v]·length²/time), and its log-variance
``log σ̂²`` is ``log σ̂² + 2 log flux_scale``. The statistics come from the
TRAINING split only (:class:`meshclosure.data.dataset.NormalizationStats`).

Examples
--------
>>> import torch
>>> norm = Normalizer(["state_q"], [1.0], [2.0], ["q"], [10.0])
>>> norm.normalize_inputs(torch.tensor([[3.0]]))
tensor([[1.]])
>>> norm.denormalize_flux(torch.tensor([[0.5]]))
tensor([[5.]])
>>> Normalizer(["state_q"], [0.0], [0.0], ["q"], [1.0])
Traceback (most recent call last):
...
meshclosure.errors.ArgumentError: input_scale=[0.0]: must be finite and > 0 (one per input); ...
"""
from __future__ import annotations

import json
import math
from typing import Any, Dict, Mapping, Sequence

import torch
from torch import Tensor

from ..errors import ArgumentError

__all__ = ["Normalizer"]


class Normalizer(torch.nn.Module):
    """Input standardisation and flux scaling (buffers: saved in ``state_dict``, moved by ``.to``).

    Parameters
    ----------
    input_names : sequence of str
        Feature names in column order (must equal the pipeline's ``names``).
    input_mean, input_scale : sequence of float
        Per feature; scales finite and > 0.
    variables : sequence of str
    flux_scale : sequence of float
        Per variable; finite and > 0.
    transport_scale : float
    """

    def __init__(self, input_names: Sequence[str], input_mean: Sequence[float],
                 input_scale: Sequence[float], variables: Sequence[str],
                 flux_scale: Sequence[float], transport_scale: float = 1.0) -> None:
        super().__init__()
        self.input_names, self.variables = tuple(input_names), tuple(variables)
        for name, values, n in (("input_mean", input_mean, len(self.input_names)),
                                ("input_scale", input_scale, len(self.input_names)),
                                ("flux_scale", flux_scale, len(self.variables))):
            values = [float(v) for v in values]
            positive = name != "input_mean"
            if len(values) != n or not all(math.isfinite(v) and (v > 0 or not positive)
                                           for v in values):
                rule = "must be finite" + (" and > 0" if positive else "")
                raise ArgumentError(name, values, f"{rule} (one per "
                                    f"{'input' if 'input' in name else 'variable'})",
                                    "build it with Normalizer.from_stats(dataset statistics)")
        self.register_buffer("input_mean", torch.tensor([float(v) for v in input_mean],
                                                        dtype=torch.float64))
        self.register_buffer("input_scale", torch.tensor([float(v) for v in input_scale],
                                                         dtype=torch.float64))
        self.register_buffer("flux_scale", torch.tensor([float(v) for v in flux_scale],
                                                        dtype=torch.float64))
        self.transport_scale = float(transport_scale)

    @classmethod
    def from_stats(cls, stats: Any) -> "Normalizer":
        """From :class:`~meshclosure.data.dataset.NormalizationStats` (or its dict)."""
        d = stats if isinstance(stats, Mapping) else stats.to_dict()
        return cls(d["input_names"], d["input_mean"], d["input_scale"], d["variables"],
                   d["flux_scale"], d.get("transport_scale", 1.0))

    @classmethod
    def from_dataset(cls, ds: Any) -> "Normalizer":
        """The training-split statistics stored in a dataset (``attrs["normalization"]``)."""
        return cls.from_stats(json.loads(ds.attrs["normalization"]))

    def config(self) -> Dict[str, Any]:
        """JSON-able description (``Normalizer(**config)`` rebuilds it)."""
        return {"input_names": list(self.input_names),
                "input_mean": self.input_mean.tolist(), "input_scale": self.input_scale.tolist(),
                "variables": list(self.variables), "flux_scale": self.flux_scale.tolist(),
                "transport_scale": self.transport_scale}

    def normalize_inputs(self, x: Tensor) -> Tensor:
        """``(x − mean) / scale`` over the last dim ``(..., F)``."""
        return (x - self.input_mean.to(x)) / self.input_scale.to(x)

    def denormalize_flux(self, y: Tensor) -> Tensor:
        """Normalised face fluxes ``(..., n_vars)`` -> physical units."""
        return y * self.flux_scale.to(y)

    def normalize_flux(self, y: Tensor) -> Tensor:
        """Physical face fluxes ``(..., n_vars)`` -> the model's scale."""
        return y / self.flux_scale.to(y)

    def denormalize_log_var(self, log_var: Tensor) -> Tensor:
        """``log σ²`` of a normalised flux -> of the physical flux (adds ``2 log flux_scale``)."""
        return log_var + 2.0 * torch.log(self.flux_scale.to(log_var))

    def extra_repr(self) -> str:
        return f"inputs={self.input_names}, variables={self.variables}"
