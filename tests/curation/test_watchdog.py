"""The stall watchdog: silence for stall_s is reported once per stall_s, naming the stage
that holds the thread; beats (frames, outputs) keep it quiet."""

from __future__ import annotations

import threading
import time

import pytest

from curation.stage import Stage, run_one
from curation.watchdog import PROGRESS, Progress, Stall, Watchdog

pytestmark = pytest.mark.timeout(20)


def test_silence_is_reported_with_the_stage_that_holds_the_thread():
    progress, stalls = Progress(), []
    with Watchdog(0.3, stalls.append, progress), progress.inside("sync"):
        time.sleep(0.8)
    assert 1 <= len(stalls) <= 2  # once per 0.3 s of silence, not once per poll
    assert stalls[0].stage == "sync" and stalls[0].idle_s >= 0.3


def test_beats_keep_the_watchdog_quiet():
    progress, stalls = Progress(), []
    with Watchdog(0.3, stalls.append, progress):
        for _ in range(8):
            time.sleep(0.1)
            progress.beat()
    assert stalls == []


def test_the_longest_running_stage_is_blamed_first():
    progress = Progress()
    entered = threading.Event()
    release = threading.Event()

    def decode():
        with progress.inside("shots"):
            entered.set()
            release.wait(5)

    worker = threading.Thread(target=decode)
    worker.start()
    entered.wait(5)
    time.sleep(0.01)
    with progress.inside("audio"):
        assert progress.running() == ("shots", "audio")
    release.set()
    worker.join()
    assert progress.running() == () and Stall((), 1.0).stage == "between stages"


class Sleepy(Stage):
    name = "sleepy"

    def process(self, item):
        time.sleep(0.5)
        return [item]


def test_a_stage_running_is_named_and_its_output_is_a_beat():
    stalls = []
    with Watchdog(0.2, stalls.append):  # the process-wide progress the stages report to
        run_one(Sleepy(), {"key": "k"})
    assert stalls and {s.stage for s in stalls} == {"sleepy"}
    assert PROGRESS.idle_s() < 0.5  # the output beat
