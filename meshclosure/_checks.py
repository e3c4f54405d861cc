"""Input checks shared across the package: tensors with the right rows and a
floating-point dtype, and short descriptions of values for error messages.

Examples
--------
>>> import torch
>>> check_rows("q", torch.zeros(4), 4, "n_cells")
>>> check_float("q", torch.zeros(4, dtype=torch.int64))
Traceback (most recent call last):
...
meshclosure.errors.ArgumentTypeError: q=Tensor(shape=(4,), dtype=int64): must be a real floating-point tensor; convert it with q.double() (or .float()).
"""
from __future__ import annotations

from typing import Any

from torch import Tensor

from .errors import ArgumentTypeError

__all__ = ["describe", "Shown", "check_rows", "check_float"]


class Shown:
    """A value shown in an error message by a short description instead of its ``repr``."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def describe(x: Any) -> Any:
    """A short stand-in for ``x`` in error messages: a tensor as its shape, dtype and device.

    Examples
    --------
    >>> import torch
    >>> describe(torch.zeros(3, dtype=torch.int64))
    Tensor(shape=(3,), dtype=int64)
    >>> describe(2.5)
    2.5
    """
    if isinstance(x, Tensor):
        dev = "" if x.device.type == "cpu" else f", device={x.device}"
        return Shown(f"Tensor(shape={tuple(x.shape)}, dtype={str(x.dtype).replace('torch.', '')}"
                     f"{dev})")
    return x


def check_rows(name: str, x: Tensor, n: int, what: str) -> None:
    """Raise a clear error unless ``x`` is a tensor with ``n`` rows along dim 0.

    Examples
    --------
    >>> import torch
    >>> check_rows("q", torch.zeros(3), 4, "n_cells")
    Traceback (most recent call last):
    ...
    ValueError: q must have n_cells = 4 rows (dim 0); got shape (3,). Put the cells dimension first.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(x).__name__}. "
                        "Wrap it with torch.as_tensor(...).")
    if x.dim() == 0 or x.shape[0] != n:
        raise ValueError(f"{name} must have {what} = {n} rows (dim 0); got shape "
                         f"{tuple(x.shape)}. Put the {what.split('_')[1]} dimension first.")


def check_float(name: str, x: Tensor, fix: str = "", complex_ok: bool = False) -> None:
    """Raise :class:`~meshclosure.errors.ArgumentTypeError` unless ``x`` has a floating-point dtype.

    Integer or bool values would be silently truncated (or give inf/NaN after a
    division by the cell volumes), so they are refused, never cast.
    """
    if x.is_floating_point() or (complex_ok and x.is_complex()):
        return
    kind = "a floating-point (or complex)" if complex_ok else "a real floating-point"
    raise ArgumentTypeError(name, describe(x), f"must be {kind} tensor",
                            fix or f"convert it with {name}.double() (or .float())")
