"""Fault injection for tests that run curation on Ray: Python imports this module at start-up
in every process that has this folder on PYTHONPATH, so the test's Ray workers get it.
Nothing happens unless one of these is set:

- ``TANDEM_TEST_HANG=STAGE:NAME``: STAGE waits for ever on the source file named NAME, as a
  wedged decoder or model would.
- ``TANDEM_TEST_SETUP_CRASH=STAGE``: STAGE's ``setup()`` (one that keeps the base class's) kills its process with SIGSEGV, as
  a corrupt JIT cache did.
"""

import os

if os.environ.get("TANDEM_TEST_HANG"):
    import threading
    from pathlib import Path

    from curation import stage as _stage

    _HANG_STAGE, _, _HANG_SOURCE = os.environ["TANDEM_TEST_HANG"].partition(":")
    _stream_one = _stage.stream_one

    def _hanging_stream_one(stage, item):
        source = (item.get("source") or {}).get("input") or (item.get("source") or {}).get("path") or ""
        if stage.name == _HANG_STAGE and Path(source).name == _HANG_SOURCE and not _stage.is_rejected(item):
            with _stage.PROGRESS.inside(stage.name):
                threading.Event().wait()
        yield from _stream_one(stage, item)

    _stage.stream_one = _hanging_stream_one

if os.environ.get("TANDEM_TEST_SETUP_CRASH"):
    import signal

    from curation import stage as _stage

    _base_setup = _stage.Stage.setup

    def _crashing_setup(self):
        if self.name == os.environ["TANDEM_TEST_SETUP_CRASH"]:
            os.kill(os.getpid(), signal.SIGSEGV)
        _base_setup(self)

    _stage.Stage.setup = _crashing_setup  # stages that keep the base setup(): motion, clip, probe
