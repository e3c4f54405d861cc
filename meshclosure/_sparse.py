"""Sparse-operator helpers shared by the finite-volume operators and the solvers.

Every operator that is linear in the field (divergence, reconstruction,
normal derivative, ...) is one CSR matrix per mesh, dtype and device,
built from COO triplets with :func:`csr` and applied with :func:`spmm`.

Examples
--------
>>> import torch
>>> m = csr(torch.tensor([0, 1, 1]), torch.tensor([0, 0, 1]),
...         torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64), (2, 2))
>>> spmm(m, torch.ones(2, 3, dtype=torch.float64))[:, 0].tolist()
[1.0, 5.0]
>>> sparse_ok(torch.ones(2, dtype=torch.int64))
False
>>> spmm(m, torch.ones(3, dtype=torch.float64))
Traceback (most recent call last):
...
RuntimeError: ...
"""
from __future__ import annotations

import warnings

import torch
from torch import Tensor

__all__ = ["sparse_ok", "csr", "spmm"]


def sparse_ok(x: Tensor) -> bool:
    """Whether ``x`` can be multiplied by a CSR matrix (float32/float64 on CPU or CUDA)."""
    return x.device.type in ("cpu", "cuda") and x.dtype in (torch.float32, torch.float64)


def csr(rows: Tensor, cols: Tensor, vals: Tensor, shape: tuple[int, int]) -> Tensor:
    """CSR matrix ``shape`` from COO triplets (duplicates summed, exact zeros dropped).

    Indices are int32 where they fit: the MKL/cuSPARSE kernels then move a
    third fewer bytes per non-zero than with int64.
    """
    keep = vals != 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # "sparse CSR support is in beta"
        coo = torch.sparse_coo_tensor(torch.stack([rows[keep], cols[keep]]), vals[keep],
                                      shape).coalesce()
        out = coo.to_sparse_csr()
        if out.values().numel() < 2**31 - 1 and max(shape) < 2**31 - 1:
            out = torch.sparse_csr_tensor(out.crow_indices().to(torch.int32),
                                          out.col_indices().to(torch.int32), out.values(),
                                          shape)
    return out


def spmm(mat: Tensor, x: Tensor) -> Tensor:
    """``mat @ x`` for a CSR ``mat`` (m, n) and dense ``x`` (n, ...) -> (m, ...), differentiable in ``x``.

    Trailing dimensions (up to 64 columns) go through the matrix-vector kernel
    one column at a time: it is several times faster than the matrix-matrix
    kernel for few columns, and a column of a batched result is then bitwise
    equal to the product with that column alone.
    """
    if x.dim() == 1:
        return mat @ x
    cols = x.reshape(x.shape[0], -1)
    if cols.shape[1] > 64 or cols.shape[1] == 0:
        out = torch.sparse.mm(mat, cols)
    else:
        out = torch.stack([mat @ c for c in cols.t().contiguous()], 1)
    return out.reshape((mat.shape[0],) + tuple(x.shape[1:]))
