"""A worker that dies while a stage sets up is named, not retried for ever: each death
leaves a marker and a fault log; after SETUP_DEATHS the next worker refuses, naming the
stage, the signal and where it died. (On local Ray end to end: test_stalls.py.)"""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from curation.storage import Store
from pipelines.worker_faults import SETUP_DEATHS, SETUPS, SetupCrashed, dead_setups, setup_guard

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
