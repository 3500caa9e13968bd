"""Run a function on two local processes that form a gloo world, the one
``deepspeed.init_distributed`` joins: how a CPU-only machine exercises data parallelism and ZeRO
(the tests of training/ and reward/, benchmarks/zero3_build_memory.py)."""

from __future__ import annotations

import os
import socket

import torch


def free_port() -> int:
    """A TCP port nothing on 127.0.0.1 listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rank_entry(rank: int, port: int, fn, args: tuple, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE="2")
    torch.set_num_threads(1)
    out = fn(*args)
    if rank == 0:
        results.put(out)
    import torch.distributed as dist

    if dist.is_initialized():  # leave together: a rank exiting under live gloo threads aborts
        dist.barrier()
        dist.destroy_process_group()


def on_two_ranks(fn, *args):
    """Run ``fn(*args)`` in two spawned processes that form a gloo world; returns rank 0's
    result. ``fn`` must be a module-level function."""
    import torch.multiprocessing as mp

    results = mp.get_context("spawn").SimpleQueue()
    mp.start_processes(_rank_entry, args=(free_port(), fn, args, results), nprocs=2, start_method="spawn")
    return results.get()
