"""The contract every curation stage follows (NeMo-Curator style).

A stage is one small class: a config dataclass, declared resources, ``setup()`` for
expensive one-time work (loading a model), and ``process(item) -> list[item]``.
Stages never import ray: ``pipelines/ray_adapter.py`` maps them onto Ray Data
operators, and unit tests simply call them in a plain loop (``run_stages``).

An *item* is a JSON-serialisable dict that grows into the clip's shard ``json``
document (field names in ../shared/DESIGN.md), plus ``files`` (paths of media the
stage produced, e.g. ``{"mp4": ..., "flac": ...}``) and ``reject``.

A bad sample is data, not an exception: a stage that cannot use an item returns it
marked with ``reject(item, stage, reason, message)``. Rejected items flow through the
remaining stages untouched and end in the rejects table. An unexpected exception
inside ``process`` is caught by ``run_one`` and recorded the same way with reason
``stage_error`` (and a stage that returns nothing yields reason ``no_output``); only misconfiguration (raised from ``__init__``/``setup``) stops a run.
"""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass
from typing import Any, ClassVar

Item = dict[str, Any]
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Resources:
    """What one worker of the stage needs. ``actor=True`` => a long-lived actor pool
    (model stages: setup() loads weights once); otherwise stateless tasks."""

    cpus: float = 1.0
    gpus: float = 0.0
    actor: bool = False


class Stage:
    name: ClassVar[str] = "stage"
    resources: ClassVar[Resources] = Resources()

    def __init__(self, config: Any = None):
        self.config = config

    def setup(self) -> None:
        """Load models / open resources once per worker. Default: nothing."""

    def preflight(self) -> None:
        """Cheap checks run once on the driver before any work (e.g. that a model can be
        found), so misconfiguration fails in seconds with a clear message instead of
        inside a worker. Raise ValueError with what to fix. Default: nothing."""

    def process(self, item: Item) -> list[Item]:
        raise NotImplementedError


def reject(item: Item, stage: str, reason: str, message: str = "") -> Item:
    """Mark ``item`` as dropped by ``stage`` with a machine-readable ``reason`` code."""
    item = dict(item)
    item["reject"] = {"stage": stage, "reason": reason, "message": message}
    return item


def is_rejected(item: Item) -> bool:
    return bool(item.get("reject"))


def run_one(stage: Stage, item: Item) -> list[Item]:
    """Apply ``stage`` to one item: pass rejects through, turn crashes into rejects."""
    if is_rejected(item):
        return [item]
    try:
        outputs = list(stage.process(item))
    except Exception as exc:  # a bad sample must never crash the batch
        log.warning("stage %s failed on %s: %s", stage.name, item.get("key") or item.get("source", {}).get("path"), exc)
        return [reject(item, stage.name, "stage_error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}")]
    # Every input stays accounted for: a stage that yields nothing turns it into a reject.
    return outputs or [reject(item, stage.name, "no_output", f"{stage.name} produced no items")]


def run_stages(stages: list[Stage], items: list[Item]) -> list[Item]:
    """The plain-loop runner (tests, debugging): every stage over every item, in order."""
    for stage in stages:
        stage.setup()
        items = [out for item in items for out in run_one(stage, item)]
    return items
