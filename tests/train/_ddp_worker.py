"""One training process, for the DDP tests (``tests/train/test_distributed.py``).

Run by ``torchrun --standalone --nproc_per_node=N`` (or called in one process,
as the reference)::

    python tests/train/_ddp_worker.py DATA RESULTS CONFIGS_JSON [--write] [--primitives]

``CONFIGS_JSON`` is a JSON list of :class:`~meshclosure.train.TrainConfig`
dicts, trained one after the other with :class:`meshclosure.train.Trainer`;
for config ``i`` each rank saves ``RESULTS/run<i>_rank<r>.pt`` with the
weights before (``"initial"``) and after training (``"model"``), the
evaluation weights (``"eval"``: EMA at the best epoch), the per-epoch
training losses, the number of updates and the world size. With
``--write`` config ``i`` of rank ``r`` gets its own output folder
``RESULTS/out<i>_rank<r>``, so the test sees which ranks wrote
``model.pt`` and ``metrics.csv``. With ``--primitives`` the process first
checks :class:`~meshclosure.train.distributed.Distributed` itself on a
linear model and saves ``RESULTS/primitives_rank<r>.pt``. With
``--record-reads`` every stored sample the trainer reads during ``fit`` is
recorded as ``(dataset, run, time index)`` (``dataset``: ``train``, ``val``,
``online_train`` or ``online_val``) in ``"reads"``, to show that each rank
reads only its shard.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Dict, List

import torch


def primitives(results: Path) -> None:
    """Distributed's collectives and wrapper on a linear model ``y = x w``: the weighted
    gradients of uneven slices, averaged by DDP, equal the full batch's gradient."""
    from meshclosure.train.distributed import Distributed

    d = Distributed(torch.device("cpu"))
    out: Dict[str, Any] = {"rank": d.rank, "world": d.world, "active": d.active}
    out["all_true_same"] = d.all_true(True)
    out["all_true_one_false"] = d.all_true(d.rank != 0)
    out["average"] = d.average({"loss": float(d.rank + 1)}, weight=float(d.rank + 1))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(7, 3, generator=gen, dtype=torch.float64)
    y = torch.randn(7, 2, generator=gen, dtype=torch.float64)
    torch.manual_seed(d.rank)                      # different initial weights per rank:
    model = torch.nn.Linear(3, 2, dtype=torch.float64)   # DDP broadcasts rank 0's
    net = d.wrap(model)
    out["initial"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    grads = []
    for batch in ([0, 1, 2, 3, 4, 5, 6], [2, 5, 6], [4]):     # even, uneven, one sample
        local, share = d.split(batch)
        model.zero_grad()
        loss = ((net(x[local]) - y[local]) ** 2).mean()
        (loss * share).backward()
        grads.append({"batch": batch, "local": local, "share": share,
                      "grad": [p.grad.detach().clone() for p in model.parameters()]})
    out["grads"] = grads
    torch.save(out, results / f"primitives_rank{d.rank}.pt")


def _record_reads(trainer, reads: List[tuple]):
    """Patch the readers of ``trainer``'s datasets to append ``(dataset, run, time)`` to
    ``reads`` for every stored sample read (each reader its own patch)."""
    for name in ("train", "val", "online_train", "online_val"):
        ds = getattr(trainer.data, name, None)
        reader = getattr(ds, "_reader", ds)
        if reader is None or not hasattr(reader, "read"):
            continue

        def read(run, time_index, _orig=reader.read, _name=name):
            reads.append((_name, int(run), int(time_index)))
            return _orig(run, time_index)

        reader.read = read


def run(data: Any, results: Path, configs: List[Dict[str, Any]], write: bool = False,
        record_reads: bool = False) -> None:
    """Train each config and save this rank's results (module docstring)."""
    from meshclosure.train.config import TrainConfig
    from meshclosure.train.outputs import prepare_out
    from meshclosure.train.trainer import Trainer

    rank = int(os.environ.get("RANK", "0"))
    results = Path(results)
    for i, config in enumerate(configs):
        cfg = TrainConfig.from_dict(config)
        out = None
        if write:
            out = results / f"out{i}_rank{rank}"
            prepare_out(out, resume=False, overwrite=False)
        trainer = Trainer(data, cfg, out, progress=False)
        initial = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
        reads: List[tuple] = []
        if record_reads:
            _record_reads(trainer, reads)
        res = trainer.fit(resume=False)
        state = {"initial": initial,
                 "model": {k: v.detach().clone() for k, v in trainer.model.state_dict().items()},
                 "eval": {k: v.detach().clone() for k, v in res.model.state_dict().items()},
                 "train_loss": [float(r["train_loss"]) for r in res.metrics],
                 "updates": trainer.updates, "world": trainer.dist.world, "reads": reads}
        torch.save(state, results / f"run{i}_rank{rank}.pt")


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    flags = {a for a in argv if a.startswith("--")}
    data, results, configs = [a for a in argv if not a.startswith("--")]
    torch.set_num_threads(1)
    if "--primitives" in flags:
        primitives(Path(results))
    run(data, Path(results), json.loads(configs), write="--write" in flags,
        record_reads="--record-reads" in flags)
    from meshclosure.train.distributed import shutdown

    shutdown()


if __name__ == "__main__":
    main()
