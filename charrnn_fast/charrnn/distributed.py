"""Multi-process data-parallel training (torchrun / torch.distributed, DDP).

Each rank takes a disjoint, equal share of the batch rows, so the DDP-averaged
gradient equals the single-process gradient of the whole batch. Rank 0 alone
writes checkpoints and logs; the carried hidden states are gathered to it so a
checkpoint holds the full batch's state and resumes on any number of ranks.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from charrnn_fast.charrnn.devices import resolve_device
from charrnn_fast.charrnn.errors import UserError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> tuple[DistInfo, torch.device]:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1).

    `device` is "auto", "cpu", "cuda" or "cuda:N"; under torchrun with CUDA each
    rank uses GPU LOCAL_RANK. Returns (DistInfo, device for this rank).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device)
    if world > 1:
        if dev.type == "cuda":
            dev = torch.device("cuda", local)
            torch.cuda.set_device(dev)
        if not dist.is_initialized():
            backend = "nccl" if dev.type == "cuda" else "gloo"
            dist.init_process_group(backend, timeout=datetime.timedelta(minutes=10))
    elif dev.type == "cuda" and dev.index is not None:
        torch.cuda.set_device(dev)
    return DistInfo(rank, world, local), dev


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def row_share(batch_size: int, info: DistInfo) -> range:
    """This rank's rows of a batch of `batch_size` row streams."""
    if batch_size % info.world_size:
        raise UserError(
            f"batch_size {batch_size} is not divisible by the number of processes {info.world_size}"
        )
    per = batch_size // info.world_size
    return range(info.rank * per, (info.rank + 1) * per)


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum of `t` over ranks (in place; identity in a single process)."""
    if info.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_mean(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= info.world_size
    return t


def all_reduce_max(value: float, info: DistInfo, device: torch.device) -> float:
    """The largest `value` over ranks (the value itself in a single process)."""
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def gather_rows(state: tuple[torch.Tensor, ...], info: DistInfo) -> tuple[torch.Tensor, ...]:
    """Concatenate every rank's rows (dim 1 of each [L, b, H] tensor) in rank order."""
    if not info.enabled:
        return state
    out = []
    for s in state:
        parts = [torch.empty_like(s) for _ in range(info.world_size)]
        dist.all_gather(parts, s.contiguous())
        out.append(torch.cat(parts, dim=1))
    return tuple(out)


def broadcast_flag(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """True on every rank when any rank says True (e.g. Ctrl-C seen by one rank)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()
