"""Consume an iterable in a background thread, a bounded number of items ahead of its reader.

The stages overlap work this way: ffmpeg's decoded frames are read while the shot stage
analyses the previous ones, and a source's next clip is decoded while the current one is
encoded and measured (ffmpeg runs in its own process; numpy, OpenCV and the models
release the GIL).
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
_DONE = object()


def read_ahead(items: Iterable[T], depth: int) -> Iterator[T]:
    """Yield ``items``, produced by a thread at most ``depth`` items ahead. An exception of
    the producer is re-raised here; closing this generator stops the producer once its
    current item is done (unblock it first if it waits on something else)."""
    ahead: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    failure: list[BaseException] = []
    source = iter(items)

    def produce() -> None:
        try:
            for item in source:
                while not stop.is_set():
                    try:
                        ahead.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
        except BaseException as exc:  # handed to the reader, which re-raises it
            failure.append(exc)
        finally:
            with contextlib.suppress(queue.Full):
                ahead.put(_DONE, timeout=1.0)

    thread = threading.Thread(target=produce, name="read-ahead", daemon=True)
    thread.start()
    try:
        while (item := ahead.get()) is not _DONE:
            yield item
        thread.join()
        if failure:
            raise failure[0]
    finally:
        stop.set()
        while thread.is_alive():  # a producer waiting on a full queue
            with contextlib.suppress(queue.Empty):
                ahead.get(timeout=0.1)
        if hasattr(source, "close"):
            source.close()
