"""Collectives that also run without a process group (one process: the identity), on any
backend: NCCL only reduces CUDA tensors, so CPU tensors travel through the current device
and come back where they were. Used by steps whose small statistics every rank must agree on
(DanceGRPO's group advantages and step metrics, the reward trainer's gradients)."""

from __future__ import annotations

import torch
import torch.distributed as dist

ReduceOp = dist.ReduceOp


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def _on_backend(x: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return x.to(torch.device("cuda", torch.cuda.current_device()))
    return x


def all_reduce(x: torch.Tensor, op=ReduceOp.SUM) -> torch.Tensor:
    """``x`` reduced over the ranks (a new tensor on ``x``'s device, or ``x`` itself alone)."""
    if not dist.is_initialized():
        return x
    y = _on_backend(x)
    dist.all_reduce(y, op=op)
    return y.to(x.device)


def all_gather_cat(x: torch.Tensor) -> torch.Tensor:
    """Every rank's ``x`` (same shape on each), concatenated in rank order along dim 0."""
    if not dist.is_initialized():
        return x
    y = _on_backend(x.contiguous())
    parts = [torch.empty_like(y) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, y)
    return torch.cat(parts).to(x.device)
