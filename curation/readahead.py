"""Consume an iterable in a background thread, a bounded number of items ahead of its reader.

The stages overlap work this way: ffmpeg's decoded frames are read while the shot stage
analyses the previous ones, and a source's next clip is decoded while the current one is
encoded and measured (ffmpeg runs in its own process; numpy, OpenCV and the models
release the GIL).

The handoff's one rule: the producer's last word (the end marker, carrying its exception
if it raised) is delivered however long the reader takes to come back for it; only a
reader that has gone away releases the producer. A marker dropped on a full queue leaves
the reader waiting for ever (it did: curation hung whenever the stages after the fan-out
took over a second per clip).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


class _End:
    """The producer is done; ``failure`` is what it raised, if anything."""

    def __init__(self, failure: BaseException | None = None):
        self.failure = failure


def read_ahead(items: Iterable[T], depth: int) -> Iterator[T]:
    """Yield ``items``, produced by a thread at most ``depth`` items ahead. An exception of
    the producer is re-raised here; closing this generator stops the producer once its
    current item is done (unblock it first if it waits on something else)."""
    ahead: queue.Queue = queue.Queue(maxsize=depth)
    reader_gone = threading.Event()
    source = iter(items)

    def deliver(thing) -> bool:
        """Put ``thing`` on the queue, waiting as long as the reader is there."""
        while not reader_gone.is_set():
            try:
                ahead.put(thing, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        end = _End()
        try:
            for item in source:
                if not deliver(item):
                    return
        except BaseException as exc:  # handed to the reader, which re-raises it
            end = _End(exc)
        deliver(end)

    thread = threading.Thread(target=produce, name="read-ahead", daemon=True)
    thread.start()
    try:
        while not isinstance(item := ahead.get(), _End):
            yield item
        thread.join()
        if item.failure is not None:
            raise item.failure
    finally:
        reader_gone.set()
        while thread.is_alive():  # a producer waiting on a full queue
            try:
                ahead.get(timeout=0.1)
            except queue.Empty:
                continue
        if hasattr(source, "close"):
            source.close()
