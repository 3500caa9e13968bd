"""The contract every curation stage follows (NeMo-Curator style).

A stage is one small class: a config dataclass, declared resources, ``setup()`` for
expensive one-time work (loading a model), and ``process(item) -> list[item]``.
Stages never import ray: ``pipelines/ray_adapter.py`` maps them onto Ray Data
operators, and unit tests simply call them in a plain loop (``run_stages``).

An *item* is a JSON-serialisable dict that grows into the clip's shard ``json``
document (field names in docs/design.md), plus ``files`` (paths of media the
stage produced, e.g. ``{"mp4": ..., "flac": ...}``), ``reject``, and ``handoff``:
temporary media one stage hands a later one (the shot stage's decoded frames and audio
for the clip stage, which passes the frames on to the sync stage); whatever is left of
it is deleted as the item leaves ``pipeline``.

Data versus faults:

- A bad sample is data, not an exception: a stage that cannot use an item returns it
  marked with ``reject(item, stage, reason, message)``. Rejected items flow through the
  remaining stages untouched and end in the rejects table. An unexpected exception
  inside ``process`` is the input's problem too (a decoder choking on a corrupt frame):
  ``run_one`` records it as reason ``stage_error`` (and a stage that returns nothing as
  ``no_output``).
- A fault of the machine is never data: ``OSError`` (disk full, a lost mount, a network
  error on the output), ``MemoryError`` and ``InfrastructureError`` (a model that cannot
  load on this node) propagate, so the task fails and Ray retries it elsewhere; nothing
  is recorded about the input. A stage that catches an ``OSError`` about its *input*
  (a file that is not there) rejects the item itself, as the probe stage does.
- Misconfiguration raises ``ValueError`` from ``__init__``/``preflight`` before any work.

Streaming and batches: a stage that fans one item out into many (the shot stage: a
source into clips) sets ``fans_out`` and may yield its outputs lazily from ``stream``,
so the next stages start on the first clip while the source is still being decoded.
A model stage declares ``Resources(actor=True, batch_size=N)`` and overrides
``process_batch``: its actor then receives up to N items at once (a unit's clips),
which is where a GPU model earns its keep. The default ``process_batch`` loops.
"""

from __future__ import annotations

import logging
import shutil
import time
import traceback
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from curation.readahead import read_ahead
from curation.watchdog import PROGRESS

Item = dict[str, Any]
log = logging.getLogger(__name__)


class InfrastructureError(RuntimeError):
    """A fault of the worker or the cluster (weights missing on this node, a GPU that
    fails): the task fails and is retried; the input is not blamed."""


def is_infrastructure(exc: BaseException) -> bool:
    """Whether ``exc`` is a fault of the machine rather than of the input."""
    if isinstance(exc, MemoryError | InfrastructureError):
        return True
    # PyAV's decode errors subclass OSError (av.OSError, av.EOFError...) but describe the media.
    return isinstance(exc, OSError) and not type(exc).__module__.startswith("av.")


@dataclass(frozen=True)
class Resources:
    """What one worker of the stage needs. ``actor=True`` => a long-lived actor pool
    (model stages: setup() loads weights once); otherwise stateless tasks.
    ``batch_size``: items an actor receives per call (``process_batch``)."""

    cpus: float = 1.0
    gpus: float = 0.0
    actor: bool = False
    batch_size: int = 1


class Stage:
    name: ClassVar[str] = "stage"
    resources: ClassVar[Resources] = Resources()
    fans_out: ClassVar[bool] = False  # one input item may become many (see ``stream``)

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

    def stream(self, item: Item) -> Iterable[Item]:
        """``process`` as an iterable; fan-out stages yield each output once it is final."""
        return self.process(item)

    def process_batch(self, items: list[Item]) -> list[list[Item]]:
        """The outputs of each of ``items`` (none rejected). Model stages override this to
        run their model on the whole batch at once."""
        return [self.process(item) for item in items]


def remove_handoff(item: Item) -> None:
    """Delete what is left of the media an item was handed (``item["handoff"]["paths"]``)."""
    for path in ((item.get("handoff") or {}).get("paths") or []):
        target = Path(path)
        if target.is_dir():
            shutil.rmtree(target, ignore_errors=True)
        else:
            target.unlink(missing_ok=True)


def reject(item: Item, stage: str, reason: str, message: str = "") -> Item:
    """Mark ``item`` as dropped by ``stage`` with a machine-readable ``reason`` code."""
    item = dict(item)
    item["reject"] = {"stage": stage, "reason": reason, "message": message}
    return item


def is_rejected(item: Item) -> bool:
    return bool(item.get("reject"))


def _error_reject(stage: Stage, item: Item, exc: Exception, produced: int = 0) -> Item:
    """The reject for an exception ``stage`` raised on ``item``; re-raises infrastructure faults."""
    if is_infrastructure(exc):
        raise exc
    log.warning("stage %s failed on %s: %s", stage.name, item.get("key") or item.get("source", {}).get("path"), exc)
    after = f"after {produced} outputs: " if produced else ""  # the outputs so far stand
    return reject({k: v for k, v in item.items() if k != "reject"}, stage.name, "stage_error",
                  f"{after}{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}")


def stream_one(stage: Stage, item: Item) -> Iterator[Item]:
    """Apply ``stage`` to one item lazily: pass rejects through, turn a crash caused by the
    input into a reject, let infrastructure faults propagate."""
    if is_rejected(item):
        yield item
        return
    produced, outputs = 0, None
    while True:
        started = time.perf_counter()
        try:
            with PROGRESS.inside(stage.name):
                outputs = outputs or iter(stage.stream(item))
                out = next(outputs)
        except StopIteration:
            break
        except Exception as exc:  # a bad sample must never crash the batch
            yield _error_reject(stage, item, exc, produced)
            return
        produced += 1
        PROGRESS.beat()
        # The time spent making this output (for a fan-out stage: since the previous one).
        # Earlier stages' times ride on the first output only, so they are counted once.
        timing = out.get("_timing", {}) if produced == 1 else {
            k: v for k, v in out.get("_timing", {}).items() if k not in item.get("_timing", {})}
        yield {**out, "_timing": {**timing, stage.name: time.perf_counter() - started}}
    # Every input stays accounted for: a stage that yields nothing turns it into a reject.
    if not produced:
        yield reject(item, stage.name, "no_output", f"{stage.name} produced no items")


def run_one(stage: Stage, item: Item) -> list[Item]:
    return list(stream_one(stage, item))


def run_batch(stage: Stage, items: list[Item]) -> list[Item]:
    """Apply ``stage`` to a batch: rejects pass through, the rest go to ``process_batch``
    together. If the batch fails because of its input, each item is retried alone so
    only the bad one becomes a ``stage_error`` reject."""
    todo = [it for it in items if not is_rejected(it)]
    outputs: dict[int, list[Item]] = {}
    if todo:
        try:
            with PROGRESS.inside(stage.name):
                results = stage.process_batch(todo)
            PROGRESS.beat()
            outputs = {id(it): res or [reject(it, stage.name, "no_output", f"{stage.name} produced no items")]
                       for it, res in zip(todo, results, strict=True)}
        except Exception as exc:
            if is_infrastructure(exc):
                raise
            outputs = {id(it): run_one(stage, it) for it in todo}
    return [out for it in items for out in (outputs.get(id(it)) or [it])]


def run_stages(stages: list[Stage], items: list[Item], setup: bool = True) -> list[Item]:
    """The plain-loop runner (tests, one process): every item through every stage, depth
    first, so a fan-out stage's outputs move on while it is still producing."""
    if setup:
        for stage in stages:
            stage.setup()
    return [out for item in items for out in pipeline(stages, item)]


def pipeline(stages: list[Stage], item: Item) -> Iterator[Item]:
    """Stream one item through ``stages``. Each stage after the first fan-out stage runs in
    a thread of its own, a clip or two behind the one before: a source's next clips are
    decoded and analysed, the current one encoded, and the one before it measured, all at
    once (ffmpeg runs in its own process; numpy, OpenCV and the models release the GIL),
    rather than encode and measurement taking turns. Items keep their order."""
    split = next((i + 1 for i, s in enumerate(stages) if s.fans_out), len(stages))
    head, tail = stages[:split], stages[split:]
    produced = _chain(head, item)
    if tail:
        produced = read_ahead(produced, _DEPTH)
        for stage in tail:
            produced = read_ahead(_each(stage, produced), _DEPTH)
    try:
        for it in produced:
            yield from _finish([it])
    finally:
        produced.close()


_DEPTH = 2  # items a thread may run ahead of the next stage's


def _each(stage: Stage, items: Iterator[Item]) -> Iterator[Item]:
    """``stage`` applied to each of ``items``, in order. Closing this closes ``items``
    (a read-ahead thread's generator: its thread is released too)."""
    try:
        for it in items:
            yield from stream_one(stage, it)
    finally:
        if hasattr(items, "close"):
            items.close()


def _finish(outputs: Iterable[Item]) -> list[Item]:
    """An item leaves the pipeline: media handed to it that no stage consumed (a clip
    rejected before the clip stage) is deleted now, not when the whole unit is done."""
    done = list(outputs)
    for item in done:
        remove_handoff(item)
    return [{k: v for k, v in item.items() if k != "handoff"} for item in done]


def _chain(stages: list[Stage], item: Item) -> Iterator[Item]:
    if not stages:
        yield item
        return
    for out in stream_one(stages[0], item):
        yield from _chain(stages[1:], out)
