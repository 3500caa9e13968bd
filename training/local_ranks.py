"""Run a function on two local processes that form a gloo world, the one
``deepspeed.init_distributed`` joins: how a CPU-only machine exercises data parallelism and ZeRO
(the tests of training/ and reward/, benchmarks/zero3_build_memory.py). Also the ports every
locally started server takes (``free_port``) and a local world's environment (``join_local_world``);
torch is imported only by what runs a world, so the port picker costs nothing to import."""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path

# Below the kernel's ephemeral range nothing is handed out by bind(0) or connect(), so a port
# chosen there stays free until its server binds it unless some process names it outright.
# Above Ray's default worker ports (`ray start`: 10002-19999) and the usual fixed ones.
_NAMED_PORTS_FROM = 20000


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def free_port() -> int:
    """A TCP port nothing on this machine listens on right now, for a server that another
    process starts (a gloo world's store, a Ray head, Label Studio).

    It is drawn below the ephemeral range where there is one: a port from bind(0) is released
    before that server binds it, seconds later, and meanwhile any process's bind(0) may take
    it (once a TCPStore client's ping got a wrong answer on such a port, most likely from a
    Ray worker's gRPC server). Drawn with the OS's randomness, so a seeded ``random`` in two
    processes cannot draw the same ports."""
    chooser, low = random.SystemRandom(), _ephemeral_low()
    if low - _NAMED_PORTS_FROM >= 1000:
        for _ in range(64):
            port = chooser.randrange(_NAMED_PORTS_FROM, low)
            with socket.socket() as sock:
                try:
                    sock.bind(("", port))
                except OSError:
                    continue
                return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def join_local_world(rank: int = 0, world_size: int = 1, port: int | None = None) -> None:
    """The environment ``torch.distributed``'s env:// init reads, for ``rank`` of a world of
    ``world_size`` processes on this machine (a new free port unless given)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port or free_port()), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world_size))


def _rank_entry(rank: int, port: int, fn, args: tuple, results) -> None:
    import torch

    join_local_world(rank, 2, port)
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
