"""One numba JIT cache per environment, compiled by one process before any worker reads it.

Why (issue 28). librosa compiles its ``@guvectorize(cache=True)`` kernels when its
modules are imported (every declared signature, float32 then float64) and caches
each one as TWO entries written by separate saves: the kernel
(``utils._localmax-1035.py311.<n>.nbc``) and the gufunc wrapper that calls it
(``guf-utils._localmax-1035.py311.<n>.nbc``). The wrapper's object code calls the
kernel by its mangled name, and that name carries an ABI tag ``v<uid>`` drawn from a
per-process counter (numba's ``FunctionIdentity._unique_ids``) that only advances on a
cache miss. Two processes that compile at once, one of which already found some
signatures cached, number the same kernel differently (``..._localmaxB3v55...`` in
one, ``B3v61`` in the other); each save replaces one file atomically, so the cache
ends up with process A's kernel beside process B's wrapper. Every later process loads
that pair, the wrapper's call resolves to no function, and the first call of the
gufunc segfaults (numba issue 10128). Ray makes the interleaving likely: its workers
start seconds apart, so the later ones find the earlier ones' first entries. Measured
here on a cold cache (one try each): 4 processes started 3 s apart, 3 died with
SIGSEGV, 9 of 26 wrapper/kernel pairs mismatched; 3 started 2 s apart, all 3 died, 8
mismatched; 3 started at once, 1 died, 2 mismatched. A fresh process then died each time.

The fix: the cache lives in a directory the project owns (``cache_dir``; numba's
``NUMBA_CACHE_DIR``), and it is filled by ONE child process under an exclusive file
lock, then checked by a second, fresh child that must load everything (writing
nothing) and get the same result. Only then is a manifest of the files written
(atomically); a worker whose cache matches its manifest goes straight on, and never
writes. Files that no checked build wrote (a killed build, a process outside the
lock) are checked the same way before they are trusted; a cache that crashes the
check is wiped and rebuilt, with a one-line warning.

What it does not cover: a kernel that no exercise compiles (a plain ``@jit`` function
first called in a worker with a new signature) is still compiled by that worker. The
stages' paths compile nothing beyond the exercise (measured: after it, the audio and
sync stages' librosa calls add no cache file), and the next run re-checks a cache that
changed.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

log = logging.getLogger(__name__)

ENV_VAR = "NUMBA_CACHE_DIR"  # numba reads it; local Ray workers inherit it from the driver
BUILDING = "TANDEM_JIT_CACHE_BUILDING"  # set in the build's children: they must not take the lock again
EXERCISE = "curation.audio:jit_exercise"  # module:function that compiles every kernel the stages use
MANIFEST = "manifest.json"
LOCK = ".lock"
CHILD_TIMEOUT_S = 1800  # a cold compile: 11 s on a quiet machine, 55-80 s on a loaded 2-core one

_ready: set[str] = set()  # cache dirs this process has seen checked


class JitCacheError(RuntimeError):
    """The JIT cache could not be built or checked; the message says what to do."""


def cache_dir() -> Path:
    """``NUMBA_CACHE_DIR`` when set (the driver sets it for its workers), else one folder
    per environment under the user's cache directory."""
    explicit = os.environ.get(ENV_VAR)
    if explicit:
        return Path(explicit)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "tandem" / "numba" / _environment_tag()


def _environment_tag() -> str:
    # numba keys entries by source file and CPU already; the tag keeps each venv's (and
    # each CPU model's, on a shared home) manifest and lock apart.
    parts = [sys.prefix, sys.version, platform.machine(), _cpu_model()]
    for package in ("numba", "llvmlite", "librosa"):
        try:
            parts.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{package} -")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:12]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def use_project_cache() -> Path:
    """Point numba's cache at ``cache_dir()`` in this process and in every process it
    starts from now on. Call it before librosa is imported: numba binds a function's
    cache folder when the function is decorated."""
    path = cache_dir()
    os.environ[ENV_VAR] = str(path)
    numba = sys.modules.get("numba")
    if numba is not None:  # numba read the variable at import; its config takes the new value too
        numba.config.CACHE_DIR = str(path)
    return path


def ensure_warm() -> Path:
    """The project's JIT cache, compiled and checked: build it (once per environment,
    in one process, under a file lock) unless its manifest says it was. Cheap when it
    was: one ``stat`` per cache file, once per process."""
    path = use_project_cache()
    if str(path) in _ready or os.environ.get(BUILDING):
        return path
    if not _matches_manifest(path):
        with _exclusive_lock(path):
            if not _matches_manifest(path):  # else another process built it while this one waited
                _build(path)
    _ready.add(str(path))
    return path


def _build(path: Path) -> None:
    log.info("checking librosa's numba kernels in %s, compiling what is missing (once per environment: "
             "up to a minute)", path)
    if _cache_files(path):
        failure = _check(path)
        if failure is None:
            return
        log.warning("the numba JIT cache at %s is corrupt (%s): wiping and rebuilding it", path, failure)
        _wipe(path)
    started = time.monotonic()
    failure = _check(path)
    if failure is not None:
        raise JitCacheError(f"building the numba JIT cache at {path} failed: {failure}")
    log.info("compiled the numba JIT cache at %s in %.1f s", path, time.monotonic() - started)


def _check(path: Path) -> str | None:
    """Run the exercise in a child (it compiles what is missing), then in a fresh child
    that must load it all and agree; on success write the manifest. The failure, in
    words, or None."""
    first = _run_exercise(path)
    if isinstance(first, str):
        return first
    files = _cache_files(path)
    second = _run_exercise(path)
    if isinstance(second, str):
        return f"a fresh process loading it {second}"
    if _cache_files(path) != files:
        return "a fresh process compiled again what the first had cached"
    if second != first:
        return f"a fresh process computed {second['result']} where the first computed {first['result']}"
    _write_atomically(path / MANIFEST, json.dumps({"files": files, "exercise": EXERCISE,
                                                   "result": first["result"]}, indent=1))
    return None


def _run_exercise(path: Path) -> dict | str:
    """The exercise's result ({"result": ...}) from a child process, or what went wrong."""
    module, function = EXERCISE.split(":")
    code = f"import json; from {module} import {function} as f; print('\\n' + json.dumps({{'result': f()}}))"
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, ENV_VAR: str(path), BUILDING: "1",
           "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    try:
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                              timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return f"took over {CHILD_TIMEOUT_S} s"
    if done.returncode < 0:
        return f"died with {signal.Signals(-done.returncode).name}"
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        return f"exited {done.returncode} ({last})"
    return json.loads(done.stdout.strip().splitlines()[-1])


def _cache_files(path: Path) -> dict[str, list[int]]:
    """{relative name: [size, mtime_ns]} of numba's files (not its temporary ones)."""
    files = {}
    if path.is_dir():
        for file in path.rglob("*"):
            if file.is_file() and file.suffix in (".nbi", ".nbc"):
                stat = file.stat()
                files[str(file.relative_to(path))] = [stat.st_size, stat.st_mtime_ns]
    return files


def _matches_manifest(path: Path) -> bool:
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return manifest.get("exercise") == EXERCISE and manifest.get("files") == _cache_files(path)


def _wipe(path: Path) -> None:
    for child in path.iterdir():
        if child.name != LOCK:
            shutil.rmtree(child) if child.is_dir() else child.unlink()


def _write_atomically(target: Path, text: str) -> None:
    temporary = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    temporary.write_text(text)
    os.replace(temporary, target)


@contextmanager
def _exclusive_lock(path: Path):
    try:
        path.mkdir(parents=True, exist_ok=True)
        handle = open(path / LOCK, "a")  # noqa: SIM115 (closed by the with below)
    except OSError as exc:
        raise JitCacheError(f"cannot write the numba JIT cache at {path} ({exc}); "
                            f"set {ENV_VAR} to a writable folder") from exc
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes, or the process dies
        yield


if __name__ == "__main__":  # scripts/run.sh setup; by hand: python -m curation.jit_cache [--rebuild]
    try:
        if "--rebuild" in sys.argv:
            with _exclusive_lock(use_project_cache()):
                _wipe(cache_dir())
        print(f"[tandem] numba JIT cache {ensure_warm()}")
    except JitCacheError as exc:
        print(f"[tandem] {exc}")
        sys.exit(1)
