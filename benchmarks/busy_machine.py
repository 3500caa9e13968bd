"""Other work on a busy machine, for the benchmarks and tests that must hold there.

    with busy_loops(2) as pids:   # two processes spinning at normal priority meanwhile
        ...
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def busy_loops(n: int, max_s: float | None = None) -> Iterator[list[int]]:
    """``n`` processes spinning at normal priority for the length of the block (their pids).
    Each also ends with the process that started it, or after ``max_s``, should the cleanup
    below never run."""
    deadline = f"time.time() + {max_s}" if max_s else "float('inf')"
    spin = f"import os, time\nparent, end = os.getppid(), {deadline}\nwhile os.getppid() == parent and time.time() < end: pass"
    spinners = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(n)]
    try:
        yield [p.pid for p in spinners]
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
