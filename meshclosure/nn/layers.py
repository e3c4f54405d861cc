"""The multi-layer perceptron every model and head is built from.

It sits below :mod:`meshclosure.nn.heads` (whose heads are MLPs) and
:mod:`meshclosure.nn.mlp` (the per-face MLP baseline built on a head), so
neither needs a late import of the other.
"""
from __future__ import annotations

from torch import nn

__all__ = ["mlp"]


def mlp(in_features: int, hidden: int, out_features: int, n_layers: int = 2,
        layer_norm: bool = False, activation: type[nn.Module] = nn.SiLU) -> nn.Sequential:
    """``n_layers`` hidden layers of width ``hidden`` then a linear output layer.

    ``n_layers=0`` gives a single linear map. ``layer_norm`` appends a
    ``LayerNorm`` to the output (MeshGraphNet's encoders and processor MLPs).

    Examples
    --------
    >>> net = mlp(3, 16, 2, n_layers=1)
    >>> [type(m).__name__ for m in net]
    ['Linear', 'SiLU', 'Linear']
    """
    layers: list[nn.Module] = []
    width = in_features
    for _ in range(n_layers):
        layers += [nn.Linear(width, hidden), activation()]
        width = hidden
    layers.append(nn.Linear(width, out_features))
    if layer_norm:
        layers.append(nn.LayerNorm(out_features))
    return nn.Sequential(*layers)
