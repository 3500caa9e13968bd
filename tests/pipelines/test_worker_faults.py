"""A worker that dies while a stage sets up is named, not retried for ever: each death
leaves a marker and a fault log; after SETUP_DEATHS the next worker refuses, naming the
stage, the signal and where it died. (On local Ray end to end: test_stalls.py.)"""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from curation.storage import Store
from pipelines.worker_faults import (
    MAX_SHARD_STALLS,
    SETUP_DEATHS,
    SETUPS,
    SetupCrashed,
    dead_setups,
    guard_shard,
    setup_guard,
)

DIE_IN_SETUP = """
import os, signal, sys
from curation.storage import Store
from pipelines.worker_faults import setup_guard

def load_kernels():  # stands in for a JIT cache that segfaults as it loads
    os.kill(os.getpid(), signal.SIGSEGV)

with setup_guard(Store(sys.argv[1]), "audio"):
    load_kernels()
"""


@pytest.mark.timeout(120)
def test_deaths_in_setup_are_counted_and_then_refused_with_the_signal(tmp_path, monkeypatch):
    monkeypatch.setenv("TANDEM_SCRATCH", str(tmp_path / "scratch"))  # where the fault logs go
    store = Store(tmp_path / "out")
    for _ in range(SETUP_DEATHS):
        died = subprocess.run([sys.executable, "-c", DIE_IN_SETUP, store.uri], capture_output=True)
        assert died.returncode == -signal.SIGSEGV
    assert len(dead_setups(store, "audio")) == SETUP_DEATHS
    with pytest.raises(SetupCrashed) as refused, setup_guard(store, "audio"):
        pytest.fail("a fourth worker set the stage up")
    said = str(refused.value)
    assert f"{SETUP_DEATHS} workers died while stage audio was setting up" in said
    assert "Segmentation fault" in said and "load_kernels" in said


def test_a_setup_that_finishes_or_raises_leaves_nothing_behind(tmp_path):
    store = Store(tmp_path / "out")
    with setup_guard(store, "audio"):
        pass
    with pytest.raises(ValueError), setup_guard(store, "sync"):
        raise ValueError("weights not found")  # an ordinary error: Ray's retry decides, no death
    assert dead_setups(store) == [] and store.list(SETUPS) == []


@pytest.mark.timeout(30)
def test_a_latents_shard_that_stalls_is_marked_then_left_for_the_next_run(tmp_path):
    import time

    stops, answers = [], []

    def wedged():
        time.sleep(0.6)
        return {"shard": "a.tar", "failed": False}

    for _ in range(MAX_SHARD_STALLS):  # each try: a mark, and the actor told to stop
        guard_shard(tmp_path, "a.tar", 0.2, wedged, stalled=answers.append, stop=lambda: stops.append(1))
    assert len(list(tmp_path.glob("a.tar.*.json"))) >= MAX_SHARD_STALLS and stops
    row = guard_shard(tmp_path, "a.tar", 0.2, wedged, stalled=lambda why: {"failed": True, "why": why})
    assert row["failed"] and "left for the next run" in row["why"]
    assert guard_shard(tmp_path, "b.tar", 0.2, lambda: {"failed": False}, stalled=answers.append) == {"failed": False}
