"""Multi-process training on torch's own engine: ``torchrun`` + DistributedDataParallel.

``torchrun --nproc_per_node=N -m meshclosure train ...`` starts N processes
with ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` set;
:class:`Distributed` reads them, joins the process group (gloo on CPU, nccl
on GPU) and wraps the model in
:class:`~torch.nn.parallel.DistributedDataParallel`, which averages the
gradients over the ranks in the backward pass. The trainer gives every rank
the same global batches (one seeded permutation) and each rank its slice
(:meth:`Distributed.shard`); each rank's loss is weighted by its share of
the batch, so the averaged gradient is that of one process on the whole
batch. Outside ``torchrun`` (``WORLD_SIZE`` unset or 1) everything here is a
no-op.

Examples
--------
>>> d = Distributed(__import__("torch").device("cpu"))
>>> d.active, d.rank, d.world, d.shard([4, 5, 6])
(False, 0, 1, [4, 5, 6])
"""
from __future__ import annotations

import os
from typing import List, Sequence

import torch

__all__ = ["Distributed"]


class Distributed:
    """Rank and world size of this process; joins the process group under ``torchrun``."""

    def __init__(self, device: torch.device) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.device = device
        self.active = self.world > 1
        if self.active and not torch.distributed.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            torch.distributed.init_process_group(backend=backend)

    @property
    def main(self) -> bool:
        """Whether this process writes files (rank 0)."""
        return self.rank == 0

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """``model`` in DistributedDataParallel when several processes train, else itself."""
        if not self.active:
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def shard(self, idx: Sequence[int]) -> List[int]:
        """This rank's slice of a global batch (every ``world``-th sample from ``rank``)."""
        return list(idx)[self.rank::self.world] if self.active else list(idx)

    def all_true(self, flag: bool) -> bool:
        """Whether ``flag`` holds on every rank (one all-reduce; so that every rank skips the
        same non-finite updates and none waits for the others in a collective)."""
        if not self.active:
            return bool(flag)
        t = torch.tensor([0.0 if flag else 1.0],
                         device=self.device if self.device.type == "cuda" else "cpu")
        torch.distributed.all_reduce(t)
        return float(t) == 0.0

    def barrier(self) -> None:
        if self.active:
            torch.distributed.barrier()
