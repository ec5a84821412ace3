"""Data-parallel pieces the single-machine library leaves to the distributed layer."""

from __future__ import annotations

import torch
from torch import nn


def wrap_ddp(device: torch.device):
    """A function that wraps the student in DistributedDataParallel on ``device``."""
    from torch.nn.parallel import DistributedDataParallel

    def wrap(model: nn.Module) -> nn.Module:
        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    return wrap


def average_gradients(params: list[torch.Tensor]) -> None:
    """Average gradients over data-parallel workers (DDP does it for the student, not for these).

    A parameter unused on this worker this step (e.g. a decoder the block path skipped) counts
    as a zero gradient, so every worker takes part in every all-reduce.
    """
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return
    world = dist.get_world_size()
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad)
        p.grad.div_(world)


def any_rank(flag: bool) -> bool:
    """Whether ``flag`` is set on any data-parallel worker (one one-element all-reduce).

    Every worker must take the same decision about a non-finite loss: one that stopped or
    skipped alone would leave the others waiting in the next gradient all-reduce.
    """
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return flag
    backend = dist.get_backend()
    device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)
