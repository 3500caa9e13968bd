"""Starting or joining Ray the same way everywhere."""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def cluster_address(address: str | None = None) -> str | None:
    """The cluster to join: ``address``, else ``RAY_ADDRESS`` (set inside Ray Jobs); None
    means a local instance of this machine."""
    return address or os.environ.get("RAY_ADDRESS")


def init_ray(address: str | None = None, *, num_cpus: int | None = None, quiet: bool = True):
    """Join the cluster at ``address`` (or ``RAY_ADDRESS``); else start a local instance.

    A local instance binds to 127.0.0.1 only: nothing is exposed beyond this machine.
    """
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    if ray.is_initialized():
        return ray
    address = cluster_address(address)
    if address:
        log.info("joining Ray cluster at %s", address)
        ray.init(address=address, log_to_driver=not quiet)
    else:
        log.info("starting a local Ray instance")
        ray.init(num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
                 log_to_driver=not quiet, configure_logging=True, logging_level=logging.WARNING)
    return ray
