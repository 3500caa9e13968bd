"""A work unit's progress, and the watchdog that notices when it has none.

Progress is a frame decoded (``curation.media_io``) or an output of any stage
(``curation.stage``): both call ``beat()``. The stages also say which of them a thread is
inside, so a stall can be blamed on the stage that holds it.

A unit that makes no progress for ``stall_s`` seconds is a fault of the machine, not of
its data: a decoder waiting on a pipe nobody reads, a model wedged in a lock, a handoff
that lost its end marker. Python cannot interrupt a thread stuck in C, so the executor
decides what a stall does (``curation/units.py``): a Ray worker records it and ends its
own process, so Ray retries the unit and the source is quarantined as ``worker_stalled``
after its retries; the in-process runner can only name the unit and the stage.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class Stall:
    stages: tuple[str, ...]  # the stages running when progress stopped, longest-running first
    idle_s: float

    @property
    def stage(self) -> str:
        return self.stages[0] if self.stages else "between stages"


class Progress:
    """When this process last made progress, and which stage each thread is running."""

    def __init__(self) -> None:
        self._last = time.monotonic()
        self._inside: dict[int, tuple[str, float]] = {}

    def beat(self) -> None:
        self._last = time.monotonic()

    def idle_s(self) -> float:
        return time.monotonic() - self._last

    @contextmanager
    def inside(self, stage: str) -> Iterator[None]:
        thread = threading.get_ident()
        outer = self._inside.get(thread)
        self._inside[thread] = (stage, time.monotonic())
        try:
            yield
        finally:
            if outer is None:
                self._inside.pop(thread, None)
            else:
                self._inside[thread] = outer

    def running(self) -> tuple[str, ...]:
        return tuple(name for name, _ in sorted(self._inside.copy().values(), key=lambda entry: entry[1]))


PROGRESS = Progress()


def beat() -> None:
    """Something moved: a frame decoded, an output made."""
    PROGRESS.beat()


class Watchdog:
    """While entered, calls ``on_stall(Stall)`` each time ``stall_s`` seconds pass with no
    beat (from a thread of its own, so a stuck unit cannot hold it up)."""

    def __init__(self, stall_s: float, on_stall: Callable[[Stall], None], progress: Progress = PROGRESS):
        self.stall_s, self.on_stall, self.progress = stall_s, on_stall, progress
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Watchdog:
        self.progress.beat()
        if self.stall_s and self.stall_s > 0:
            self._thread = threading.Thread(target=self._watch, name="stall-watchdog", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _watch(self) -> None:
        poll = min(1.0, self.stall_s / 10)
        while not self._stop.wait(poll):
            idle = self.progress.idle_s()
            if idle >= self.stall_s:
                self.on_stall(Stall(self.progress.running(), idle))
                self.progress.beat()  # the next report comes after another stall_s of nothing
