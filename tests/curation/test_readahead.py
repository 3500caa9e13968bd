"""read_ahead's handoff: every item, the end and the producer's exception reach the reader
however slow either side is, and a reader that leaves stops the producer. Each test is
bounded: a lost end marker fails it instead of hanging the suite."""

from __future__ import annotations

import threading
import time

import pytest

from curation.readahead import read_ahead

pytestmark = pytest.mark.timeout(20)


def slow(items, seconds):
    for item in items:
        time.sleep(seconds)
        yield item


def test_a_reader_slower_than_the_queue_still_gets_the_end():
    # The reproduction from the issue: 1.5 s per item at depth 2 dropped the end marker.
    got = []
    for x in read_ahead(iter(range(4)), 2):
        time.sleep(1.5)
        got.append(x)
    assert got == [0, 1, 2, 3]


def test_a_slow_producer_is_waited_for():
    assert list(read_ahead(slow(range(5), 0.05), 2)) == [0, 1, 2, 3, 4]


def test_the_producers_exception_reaches_a_slow_reader_after_its_items():
    def failing():
        yield from range(3)
        raise ValueError("corrupt frame")

    got = []
    with pytest.raises(ValueError, match="corrupt frame"):
        for x in read_ahead(failing(), 1):
            time.sleep(1.2)
            got.append(x)
    assert got == [0, 1, 2]


def test_a_reader_that_leaves_early_stops_the_producer():
    produced, closed = [], threading.Event()

    def endless():
        try:
            i = 0
            while True:
                produced.append(i)
                yield i
                i += 1
        finally:
            closed.set()

    ahead = read_ahead(endless(), 2)
    assert [next(ahead), next(ahead)] == [0, 1]
    ahead.close()
    assert closed.wait(5), "the producer's source was never closed"
    count = len(produced)
    time.sleep(0.3)
    assert len(produced) == count, "the producer went on after its reader left"
    assert not [t for t in threading.enumerate() if t.name == "read-ahead" and t.is_alive()]
