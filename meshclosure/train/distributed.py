"""Multi-process training on torch's own engine: ``torchrun`` + DistributedDataParallel.

``torchrun --nproc_per_node=N -m meshclosure train ...`` starts N processes
with ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT`` set; :class:`Distributed` reads them, joins the process
group (gloo on CPU, nccl on GPU, one GPU per local rank) and wraps the model
in :class:`~torch.nn.parallel.DistributedDataParallel`, which averages the
gradients over the ranks in the backward pass. The trainer gives every rank
the same global batches (one seeded permutation) and each rank its slice
(:meth:`Distributed.shard`); rank ``r`` of ``R`` weights its mean loss
``L_r`` over its ``n_r`` samples by its share ``n_r R / n`` of the global
batch of ``n``, so the averaged gradient

    (1/R) Σ_r (n_r R / n) ∇L_r = Σ_r (n_r / n) ∇L_r = ∇L

is one process's gradient on the whole batch (to rounding). Outside
``torchrun`` (``WORLD_SIZE`` unset or 1) everything here is a no-op.

Online training calls the model many times (every stage of every unrolled
step, optionally recomputed by checkpointing) before one backward pass;
plain DDP handles that: each parameter's gradient hook fires once, after
autograd has summed the contributions of all calls. Two cases need more,
both handled by :meth:`Distributed.wrap`:

* parameters that do not reach the loss (the log-variance head of a
  heteroscedastic model, whose closure runs the mean): DDP's
  ``find_unused_parameters=True``. ``static_graph=True`` does not help here:
  it learns the unused set in the first *forward* call, and an online
  iteration makes many;
* models called through another method than ``forward`` (a recurrent
  model's ``step(mesh, x, h)``, which :class:`~meshclosure.closures.ModelClosure`
  uses to carry the memory): the wrapper routes every public method of the
  model through DDP's ``forward``, so the gradient hooks see those calls too
  and the closure still recognises the model as recurrent.

Examples
--------
>>> import torch
>>> d = Distributed(torch.device("cpu"))
>>> d.active, d.rank, d.world, d.shard([4, 5, 6])
(False, 0, 1, [4, 5, 6])
>>> d.average({"loss": 2.0}, weight=1.0)
{'loss': 2.0}
>>> d.split([])
Traceback (most recent call last):
...
meshclosure.errors.ArgumentError: idx=[]: must hold at least one sample; pass a non-empty global batch.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from ..errors import ArgumentError

__all__ = ["Distributed", "shutdown"]


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, str(default))
    try:
        return int(raw)
    except ValueError:
        raise ArgumentError(name, raw, "must be an integer (set by torchrun)",
                            "launch with `torchrun --nproc_per_node=N ...`, or unset it") from None


class Distributed:
    """Rank and world size of this process; joins the process group under ``torchrun``.

    Parameters
    ----------
    device : torch.device
        The training device. Under ``torchrun`` a CUDA device without an index
        becomes ``cuda:LOCAL_RANK`` (and the current device), so each process
        trains on its own GPU.

    Attributes
    ----------
    rank, world : int
        ``RANK`` and ``WORLD_SIZE`` (0 and 1 outside ``torchrun``).
    active : bool
        Whether several processes train together.
    device : torch.device
    """

    def __init__(self, device: torch.device) -> None:
        self.world = _env_int("WORLD_SIZE", 1)
        self.rank = _env_int("RANK", 0)
        if self.world < 1 or not 0 <= self.rank < self.world:
            raise ArgumentError("RANK", self.rank, f"must lie in [0, WORLD_SIZE={self.world})",
                                "launch with `torchrun --nproc_per_node=N ...`")
        self.device = torch.device(device)
        self.active = self.world > 1
        if not self.active:
            return
        if self.device.type == "cuda":
            if self.device.index is None:
                self.device = torch.device("cuda", _env_int("LOCAL_RANK", 0))
            torch.cuda.set_device(self.device)
        if not torch.distributed.is_initialized():
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            torch.distributed.init_process_group(backend=backend)

    @property
    def main(self) -> bool:
        """Whether this process writes files (rank 0)."""
        return self.rank == 0

    def wrap(self, model: torch.nn.Module,
             find_unused_parameters: Optional[bool] = None) -> torch.nn.Module:
        """``model`` in DistributedDataParallel when several processes train, else itself.

        Parameters
        ----------
        model : torch.nn.Module
            Already on :attr:`device`; its parameters are broadcast from rank 0.
        find_unused_parameters : bool, optional
            DDP's search for parameters that did not reach the loss (an extra walk
            over the autograd graph per call). Default: on for heteroscedastic
            models (their log-variance head is unused by online training in mean
            mode), off otherwise; pass True for a model with other unused parameters.

        Returns
        -------
        torch.nn.Module
            ``model`` itself, or a DDP module whose ``forward`` and public methods
            (``step``, ``init_state``, ...) call the model's through DDP.
        """
        if not self.active:
            return model
        if find_unused_parameters is None:
            find_unused_parameters = any(bool(getattr(m, "heteroscedastic", False))
                                         for m in model.modules())
        ids = [self.device.index] if self.device.type == "cuda" else None
        return _DDP(_Dispatch(model), device_ids=ids,
                    find_unused_parameters=bool(find_unused_parameters))

    def shard(self, idx: Sequence[int]) -> List[int]:
        """This rank's slice of a global batch: every ``world``-th sample from ``rank``.

        Parameters
        ----------
        idx : sequence of int, shape (n,)
            The global batch, the same on every rank.

        Returns
        -------
        list of int
            ``idx[rank::world]`` (empty on ranks ``>= n``): the slices of all ranks
            partition ``idx``.
        """
        return list(idx)[self.rank::self.world] if self.active else list(idx)

    def split(self, idx: Sequence[int]) -> Tuple[List[int], float]:
        """This rank's samples of a global batch and the weight of its mean loss.

        The weight ``n_r R / n`` makes DDP's average of the ranks' gradients the
        gradient of the mean loss over the whole batch (module docstring). A rank
        whose slice is empty (a last batch smaller than the world) gets the batch's
        first sample with weight 0: it still runs the forward and backward passes DDP
        needs from every rank, and adds nothing. So every batch of one process is
        trained on, unchanged, by any number of processes.

        Parameters
        ----------
        idx : sequence of int, shape (n,)
            The global batch, the same on every rank; ``n >= 1``.

        Returns
        -------
        local : list of int
            This rank's samples (never empty).
        weight : float
            ``len(shard) * world / n``.

        Examples
        --------
        >>> import torch
        >>> Distributed(torch.device("cpu")).split([7, 8, 9])
        ([7, 8, 9], 1.0)
        """
        idx = list(idx)
        if not idx:
            raise ArgumentError("idx", idx, "must hold at least one sample",
                                "pass a non-empty global batch")
        local = self.shard(idx)
        if not local:
            return idx[:1], 0.0
        return local, len(local) * self.world / len(idx)

    def all_true(self, flag: bool) -> bool:
        """Whether ``flag`` holds on every rank (one all-reduce; so that every rank skips the
        same non-finite updates and none waits for the others in a collective)."""
        if not self.active:
            return bool(flag)
        t = torch.tensor([0.0 if flag else 1.0], device=self._comm_device)
        torch.distributed.all_reduce(t)
        return float(t) == 0.0

    def average(self, values: Mapping[str, float], weight: float) -> Dict[str, float]:
        """The ``weight``-weighted mean of ``values`` over the ranks (one all-reduce).

        With ``weight`` the rank's share ``n_r / n`` of the global batch, per-rank
        mean losses become the loss of the whole batch, the number one process
        would log. The same keys on every rank.

        Parameters
        ----------
        values : dict of str -> float
        weight : float
            This rank's weight, > 0 on at least one rank.

        Returns
        -------
        dict of str -> float
            ``Σ_r w_r v_r / Σ_r w_r`` per key, the same on every rank.
        """
        if not self.active:
            return {k: float(v) for k, v in values.items()}
        keys = sorted(values)
        t = torch.tensor([float(weight)] + [float(weight) * float(values[k]) for k in keys],
                         dtype=torch.float64, device=self._comm_device)
        torch.distributed.all_reduce(t)
        return {k: float(t[i + 1] / t[0]) for i, k in enumerate(keys)} | {
            k: float(values[k]) for k in values if k not in keys}

    def barrier(self) -> None:
        """Wait for every rank (a no-op in one process)."""
        if self.active:
            torch.distributed.barrier()

    @property
    def _comm_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" else torch.device("cpu")


def shutdown() -> None:
    """Leave the process group (at the end of a ``torchrun`` process); a no-op outside it."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


# ------------------------------------------------------------------ internals
class _Dispatch(torch.nn.Module):
    """Holds the model; ``forward(*args, _method=name)`` calls ``model.<name>(*args)``, so
    DDP (which only sees ``forward``) wraps every method that uses the parameters."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *args: Any, _method: str = "forward", **kwargs: Any) -> Any:
        if _method == "forward":
            return self.model(*args, **kwargs)
        return getattr(self.model, _method)(*args, **kwargs)


#: The model methods that compute with the parameters, called through DDP's ``forward``.
ROUTED = ("step", "directed_step", "directed_fluxes")


class _DDP(torch.nn.parallel.DistributedDataParallel):
    """DDP around :class:`_Dispatch` that looks like the model to its callers: the model's
    methods in :data:`ROUTED` (``step``) are called through DDP's ``forward``; any other
    public attribute (``init_state``, ``heteroscedastic``, ``memory``) is the model's own."""

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name.startswith("_") or "module" not in self.__dict__.get("_modules", {}):
                raise
        inner = self._modules["module"].model
        value = getattr(inner, name)                 # AttributeError as for the model
        if name in ROUTED and callable(value):
            def through_ddp(*args: Any, **kwargs: Any) -> Any:
                return self(*args, _method=name, **kwargs)

            through_ddp.__name__ = name
            through_ddp.__doc__ = value.__doc__
            return through_ddp
        return value
