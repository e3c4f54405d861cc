"""Value checks shared by the model tests of ``tests/nn`` (beyond shapes).

:func:`check_values` builds a model twice from one seed and once from another and
checks, on one input, what holds for every registered flux model whatever its
weights: the output is a deterministic function of the seed (bit-identical
rebuilds, another seed differs); a batch of samples equals the samples one by one;
a heteroscedastic ``log_var`` varies over faces (it depends on the input, it is not
a constant); and the gradient of a Gaussian negative log-likelihood (or of the MSE)
reaches every parameter except the output bias of the antisymmetric head's last
layer, which cancels exactly in ``½ (g_ab − g_ba)`` (and the memory weights of a
recurrent model run without memory).
"""
from __future__ import annotations

import re
from typing import Callable, Iterable, Optional

import torch


def _split(out):
    return (out[0], out[1]) if isinstance(out, tuple) else (out, None)


def cancelling_bias(model: torch.nn.Module) -> set:
    """Names of the last-layer biases of the antisymmetric head (``head.g`` / ``head.h``)."""
    last = {}
    for name, _ in model.named_parameters():
        m = re.fullmatch(r"head\.([gh])\.(\d+)\.bias", name)
        if m:
            last[m.group(1)] = max(last.get(m.group(1), -1), int(m.group(2)))
    return {f"head.{k}.{i}.bias" for k, i in last.items()}


def check_values(build: Callable[[int], torch.nn.Module], mesh, x: torch.Tensor,
                 call: Optional[Callable] = None, unused: Iterable[str] = (),
                 batch: bool = True) -> None:
    """Assert the checks of the module docstring.

    Parameters
    ----------
    build : callable ``seed -> model`` (float64)
    mesh : Mesh
    x : Tensor, shape (n_cells, F)
    call : callable ``(model, mesh, x) -> output``, optional
        Default ``model(mesh, x)``.
    unused : names of parameters that do not reach the output on this input
        besides the head's cancelling bias (e.g. a GRU's ``weight_hh`` at zero memory).
    batch : whether to check ``x (B, n_cells, F)`` against the samples one by one.
    """
    call = call or (lambda model, mesh, x: model(mesh, x))
    a, b, other = build(0), build(0), build(1)
    with torch.no_grad():
        ma, la = _split(call(a, mesh, x))
        mb, lb = _split(call(b, mesh, x))
        mo, _ = _split(call(other, mesh, x))
    assert torch.equal(ma, mb) and (la is None or torch.equal(la, lb)), "not seeded"
    assert not torch.equal(ma, mo), "another seed gave the same model"
    assert float(ma.abs().max()) > 1e-8
    if la is not None:
        assert torch.isfinite(la).all() and float(la.std()) > 1e-6, "log_var is constant"
    if batch:
        xs = torch.stack([x, x.flip(0), 2.0 * x])
        with torch.no_grad():
            mean_b, lv_b = _split(call(a, mesh, xs))
            for i in range(3):
                m1, l1 = _split(call(a, mesh, xs[i]))
                torch.testing.assert_close(mean_b[i], m1, rtol=1e-12, atol=1e-12)
                if l1 is not None:
                    torch.testing.assert_close(lv_b[i], l1, rtol=1e-12, atol=1e-12)
    mean, log_var = _split(call(a, mesh, x))
    y = torch.randn(mean.shape, dtype=mean.dtype, generator=torch.Generator().manual_seed(3))
    if log_var is None:
        loss = ((mean - y) ** 2).mean()
    else:
        loss = (0.5 * (log_var + (y - mean) ** 2 * torch.exp(-log_var))).mean()
    loss.backward()
    cancels = cancelling_bias(a)
    skip = cancels | set(unused)
    params = dict(a.named_parameters())
    for name in cancels:
        assert float(params[name].grad.abs().max()) < 1e-12, f"{name} should cancel"
    zero = [k for k, p in params.items() if k not in skip and (
        p.grad is None or not torch.isfinite(p.grad).all() or float(p.grad.abs().sum()) == 0)]
    assert not zero, f"no (finite) gradient reaches {zero}"
