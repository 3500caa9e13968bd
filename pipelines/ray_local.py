"""Starting or joining Ray the same way everywhere."""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)
# Ray runs its workers at nice 15 so that its own daemons stay responsive. On a machine
# busy with anything at normal priority that starves the workers, which are this command's
# whole work: beside two busy loops on 2 cores, curating 60 s of real footage took 412 s at
# nice 15 and 120 s without it (benchmarks/curation_throughput.py --minutes 1 --busy 2:
# benchmarks/results/curation_throughput_busy.txt). A local instance is this command's
# own: its workers run at the priority the command was started with.
LOCAL_SYSTEM_CONFIG = {"worker_niceness": 0}


def cluster_address(address: str | None = None) -> str | None:
    """The cluster to join: ``address``, else ``RAY_ADDRESS`` (set inside Ray Jobs); None
    means a local instance of this machine."""
    return address or os.environ.get("RAY_ADDRESS")


def check_reachable(address: str, timeout_s: float = 10.0) -> None:
    """Raise ConnectionError in seconds when nothing answers on a ``host:port`` (GCS) address:
    ray.init would retry it for many minutes. ``ray://`` (Ray Client bounds its own wait)
    and ``auto`` are left to Ray."""
    host, _, port = address.rpartition(":")
    if "://" in address or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ConnectionError(f"nothing answers on {address} ({exc.strerror or exc})") from None


def init_ray(address: str | None = None, *, num_cpus: int | None = None, quiet: bool = True):
    """Join the cluster at ``address`` (or ``RAY_ADDRESS``); else start a local instance.

    A local instance binds to 127.0.0.1 only: nothing is exposed beyond this machine, and
    its workers are not deprioritised (``LOCAL_SYSTEM_CONFIG``); a cluster keeps its own settings.
    """
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from curation.jit_cache import ensure_warm

    # Workers of every command import librosa (the audio and sync stages, the mel front end
    # of the audio VAE): they inherit a JIT cache that is compiled and checked, never one
    # they would compile side by side (curation/jit_cache.py).
    ensure_warm()
    import ray

    if ray.is_initialized():
        return ray
    address = cluster_address(address)
    if address:
        log.info("joining Ray cluster at %s", address)
        check_reachable(address)
        ray.init(address=address, log_to_driver=not quiet)
    else:
        log.info("starting a local Ray instance")
        ray.init(num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
                 log_to_driver=not quiet, configure_logging=True, logging_level=logging.WARNING,
                 _system_config=LOCAL_SYSTEM_CONFIG)
    return ray
