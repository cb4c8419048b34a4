"""Data-parallel training with PyTorch's own engine: ``torchrun --nproc_per_node=K`` (or ``train.nproc: K``).

Every rank runs the same stage; :func:`setup` joins the process group torchrun describes in the environment
(NCCL on CUDA, one GPU per rank = ``LOCAL_RANK``; gloo on CPU). The trainer then:

- wraps the model's loss in :class:`~torch.nn.parallel.DistributedDataParallel` (gradients averaged over ranks);
- splits every **global** batch of ``train.batch_size`` windows, in the one (seed, epoch) order of a single
  process, over the ranks (:func:`modalrec.data.batching.sharded_train_batches`: rank r takes windows r, r+K, ...
  of the batch; disjoint, together the whole batch) and scales each rank's mean loss by its share of the batch's
  targets times K, so the averaged gradient is the gradient of the global batch's mean loss: the same step as one
  process (up to float summation order, for losses that are per-target means);
- ranks evaluation by shards of batches gathered before the metrics (every rank gets the same metrics, so early
  stopping agrees);
- writes checkpoints, dvclive and history from rank 0 only; a resumed run reads ``last.pt`` on rank 0 and
  broadcasts it, each rank restoring its own RNG state.

Per-rank vs global: the full softmax, the sampled softmax's normalisation and any per-target mean are global through
the scaling above; the sampled softmax's negatives are drawn per rank; ODMT's in-batch softmax is **per rank** (its
candidates are the rank's shard, so K ranks see K smaller in-batch softmaxes, as ODMT's released DDP code does);
KDSR's CDL is a mean over the rank's item pairs (its teacher answers are per item pair, so its expectation is the
global one) and is scaled like the recommendation loss. Dropout masks come from per-rank RNG streams
(seed + rank), so runs with dropout match a single process in distribution, not bit for bit.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


def world() -> tuple[int, int]:
    """``(rank, world size)``; ``(0, 1)`` outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    return world()[0] == 0


def launch(nproc: int, fn: Any, *args: Any) -> Any:
    """``torchrun --standalone --nproc_per_node=nproc`` from inside Python (``train.nproc``): torch's elastic
    launcher starts ``nproc`` processes running ``fn(*args)`` with the rendezvous environment set; returns rank 0's
    result. A failing rank fails the whole launch."""
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    cfg = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=int(nproc), run_id=f"modalrec-{os.getpid()}",
                       rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, start_method="spawn")
    return elastic_launch(cfg, fn)(*args)[0]


def under_launcher() -> bool:
    """True inside a torchrun / :func:`launch` process group of more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: str | torch.device) -> torch.device:
    """Join the process group torchrun set up in the environment (``WORLD_SIZE`` > 1), once; return this rank's
    device (``cuda:<LOCAL_RANK>`` on GPUs). Outside torchrun: the device unchanged."""
    device = torch.device(device)
    if not under_launcher():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class LossForward(nn.Module):
    """``forward(batch) = model.loss(batch)``: what DDP wraps, since the trainer calls ``loss``, not ``forward``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: Any) -> Any:
        return self.model.loss(batch)


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """The DDP module that computes ``model.loss``. ``find_unused_parameters``: some models leave parameters out of
    some steps' graphs (a branch, a frozen part), which plain DDP would wait for forever."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [device.index] if device.type == "cuda" else None
    return DDP(LossForward(model), device_ids=ids, find_unused_parameters=True)


def all_sum(x: float) -> float:
    dev = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor([float(x)], dtype=torch.float64, device=dev)
    dist.all_reduce(t)
    return float(t.item())


def broadcast(obj: Any, src: int = 0) -> Any:
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather(obj: Any, dst: int = 0) -> list[Any] | None:
    """Every rank's ``obj`` on rank ``dst`` (in rank order); None on the other ranks."""
    out: list[Any] | None = [None] * world()[1] if world()[0] == dst else None
    dist.gather_object(obj, out, dst=dst)
    return out


def all_gather(obj: Any) -> list[Any]:
    out: list[Any] = [None] * world()[1]
    dist.all_gather_object(out, obj)
    return out
