"""Faults of curation's Ray workers that the driver must be able to name.

- **A worker that dies while its stage sets up** (a library that segfaults as it loads, a
  corrupt JIT cache) leaves a marker under ``.work/setups/`` naming the stage, host and pid,
  and a fault log (Python's ``faulthandler``: the signal and the stack it died on). Ray
  retries such a death like any other, but after ``SETUP_DEATHS`` of them for one stage
  the next worker stops the run (``SetupCrashed``, never retried, never data), and the
  driver says which stage, which signal and where, instead of a bare WorkerCrashedError.
- **A stalled unit** (``curation/units.py``) leaves a note under ``.work/stalls/``; the
  driver's ``StallReporter`` prints each as it appears, while the rest of the run goes on.
- **A stalled latents shard** (``pipelines/latents_cmd.py``): ``guard_shard`` runs its encode
  under the same watchdog; a stall leaves a mark and ends the actor (Ray Data restarts it
  and retries the shard); a shard with ``MAX_SHARD_STALLS`` marks is not tried again in
  this run.
"""

from __future__ import annotations

import contextlib
import faulthandler
import json
import logging
import os
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from curation.storage import Store
from curation.units import STALLS, describe_stall
from curation.watchdog import Stall, Watchdog

SETUPS = ".work/setups"
SETUP_DEATHS = 3  # deaths in one stage's setup() (on one host) that stop the run
MAX_SHARD_STALLS = 2  # stalls of one latents shard after which a run leaves it for the next
log = logging.getLogger(__name__)


class SetupCrashed(RuntimeError):
    """Workers keep dying while one stage sets up: retrying cannot help."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fault_dir() -> Path:
    # Not the worker's scratch folder: a dead worker's scratch is swept by the next one.
    folder = Path(os.environ.get("TANDEM_SCRATCH") or tempfile.gettempdir()) / "tandem-setup-faults"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextlib.contextmanager
def setup_guard(store: Store, stage: str):
    """Around a stage's ``setup()`` in a Ray worker: refuse to try again after
    ``SETUP_DEATHS`` deaths, and leave a marker and a fault log should this one die too."""
    deaths = dead_setups(store, stage, this_host_only=True)
    if len(deaths) >= SETUP_DEATHS:
        raise SetupCrashed(describe_setup_deaths(deaths))
    host, pid = socket.gethostname(), os.getpid()
    name = f"{SETUPS}/{stage}.{host}.{pid}.json"
    fault_log = _fault_dir() / f"{stage}.{pid}.log"
    with open(fault_log, "w") as fault_file:
        store.write_text(name, json.dumps({"stage": stage, "host": host, "pid": pid, "fault_log": str(fault_log)}))
        faulthandler.enable(file=fault_file, all_threads=False)
        try:
            yield
        finally:  # not reached when the worker dies: the marker and its fault log stay
            with contextlib.suppress(Exception):
                faulthandler.enable(file=sys.stderr)
            store.delete(name)
            fault_log.unlink(missing_ok=True)


def dead_setups(store: Store, stage: str | None = None, this_host_only: bool = False) -> list[dict]:
    """The setup markers of workers that died (for ``stage``, or any)."""
    host, deaths = socket.gethostname(), []
    for name in store.list(SETUPS):
        with contextlib.suppress(OSError, ValueError):
            marker = json.loads(store.read_text(f"{SETUPS}/{name}"))
            if stage and marker["stage"] != stage:
                continue
            if marker["host"] == host and _alive(marker["pid"]):
                continue  # setting up right now
            if this_host_only and marker["host"] != host:
                continue
            deaths.append(marker)
    return deaths


def describe_setup_deaths(deaths: list[dict]) -> str:
    """One paragraph: which stage's setup killed how many workers, with what signal, where."""
    stages = sorted({d["stage"] for d in deaths})
    signal, frames = _read_fault_log(deaths)
    where = f" in {frames}" if frames else ""
    cause = ("a corrupt numba JIT cache (docs/install.md, 'JIT cache': rebuild it with `python -m curation.jit_cache --rebuild`)"
             if "numba" in frames or "librosa" in frames else
             "a library crashing as it loads (a corrupt cache, a build for another CPU, a broken model file)")
    return (f"{len(deaths)} workers died while stage {'/'.join(stages)} was setting up "
            f"({signal or 'killed without a fault log'}{where}). Likely cause: {cause}. "
            "No input is blamed and finished units are kept: fix the cause and run the same command again.")


def _read_fault_log(deaths: list[dict]) -> tuple[str, str]:
    """(the signal, the innermost frames) from the first readable fault log."""
    for death in deaths:
        with contextlib.suppress(OSError, KeyError):
            lines = Path(death["fault_log"]).read_text(errors="replace").splitlines()
            signal = next((ln.removeprefix("Fatal Python error: ").strip() for ln in lines
                           if ln.startswith("Fatal Python error")), "")
            files = [ln.strip() for ln in lines if ln.strip().startswith("File ")]
            return signal, "; ".join(files[:3])
    return "", ""


def clear(store: Store) -> None:
    """A new run starts counting afresh."""
    for folder in (SETUPS, STALLS):
        for name in store.list(folder):
            store.delete(f"{folder}/{name}")


class StallReporter:
    """Polls ``.work/stalls/`` on the driver and logs each new stall once."""

    def __init__(self, store: Store, poll_s: float = 2.0):
        self.store, self.poll_s, self.seen = store, poll_s, set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stall-reporter", daemon=True)

    def __enter__(self) -> StallReporter:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.report()  # the last ones

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            self.report()

    def report(self) -> None:
        with contextlib.suppress(OSError):
            for name in sorted(set(self.store.list(STALLS)) - self.seen):
                self.seen.add(name)
                with contextlib.suppress(OSError, ValueError):
                    log.warning("%s", describe_stall(json.loads(self.store.read_text(f"{STALLS}/{name}"))))


def end_this_worker() -> None:
    """A stalled worker's way out: end the processes it started (ffmpeg), then itself; Ray
    sees a dead worker and runs its task again."""
    with contextlib.suppress(Exception):
        import psutil

        for child in psutil.Process().children(recursive=True):
            child.kill()
    logging.shutdown()
    os._exit(70)


def guard_shard(marks: Path, shard: str, stall_s: float, encode: Callable[[], dict],
                stalled: Callable[[str], dict], stop: Callable[[], None] = end_this_worker) -> dict:
    """``encode()`` one shard under the stall watchdog. A stall writes a mark in ``marks``
    and ``stop``s the worker; once the shard has ``MAX_SHARD_STALLS`` marks, ``stalled(why)``
    answers for it instead of another try."""
    marks.mkdir(parents=True, exist_ok=True)
    earlier = [json.loads(p.read_text()) for p in marks.glob(f"{shard}.*.json")]
    if len(earlier) >= MAX_SHARD_STALLS:
        return stalled(f"no progress for {earlier[-1]['idle_s']:.0f} s in {len(earlier)} tries "
                       f"(stalled in {earlier[-1]['stage']}); left for the next run")

    def on_stall(stall: Stall) -> None:
        note = {"shard": shard, "stage": stall.stage, "idle_s": round(stall.idle_s, 1), "pid": os.getpid(),
                "time": time.time()}
        (marks / f"{shard}.{uuid.uuid4().hex[:12]}.json").write_text(json.dumps(note))
        log.error("latents shard %s made no progress for %.0f s: its actor is stopped and the shard retried",
                  shard, stall.idle_s)
        stop()

    with Watchdog(stall_s, on_stall):
        return encode()
