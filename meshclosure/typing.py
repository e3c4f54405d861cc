"""Type aliases shared across meshclosure (one definition each).

Examples
--------
>>> import torch
>>> state: State = {"q": torch.zeros(4)}
>>> sorted(state)
['q']
"""
from __future__ import annotations

from typing import Dict

from torch import Tensor

__all__ = ["State"]

State = Dict[str, Tensor]
"""A model state: variable name -> cell values ``(n_cells, ...)``."""
