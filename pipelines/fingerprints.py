"""Content ids of input files, so a re-run tells unchanged content from new by its bytes,
not by its timestamps, without hashing every byte again each time.

A file's content id is the start of its sha256 (``curation.probe.content_id``). Each id
is remembered with the *stat key* of the file it was computed from: size, mtime, ctime
and inode, in nanoseconds. A later run that finds the same stat key reuses the id (the
fast path); any other stat key means hashing the file again, and a file only touched
(new mtime, same bytes) gets its old id back from the hash.

Why an equal stat key proves equal bytes: every write to a file sets its ctime to the
time of the write, and no program can set ctime (``touch -d`` and ``os.utime`` set mtime
and atime, and set ctime to *now*); a replaced file (a new file renamed over the old
one) has another inode. So a file written after it was hashed has another ctime, unless
the write fell in the same clock tick as the change before the hash (the "racy" case git
knows). That is ruled out by remembering an id only when the file was last changed at
least ``SETTLED_S`` before the hash began, and did not change while it was hashed; a
younger file is hashed again next time. The exceptions are a wall clock set back, or a
network filesystem whose server clock runs ahead of this machine's by more than
``SETTLED_S``.

Objects behind fsspec URIs have no ctime: an ETag or MD5 the store keeps is their
content id (it changes with the bytes), and without one the bytes are hashed as they are
streamed, every run.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor, as_completed

from curation.probe import content_id, stream_id
from curation.storage import is_uri

log = logging.getLogger(__name__)
SETTLED_S = 2.0  # a file changed more recently than this before its hash is not remembered
PROGRESS_EVERY_S = 10.0  # at most one progress line this often while hashing
HASH_THREADS = 4  # hashlib releases the GIL: a few reads in flight keep a disk or NFS busy


def stat_key(path: str) -> list[int]:
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def content_ids(files: list[dict], remembered: dict[str, dict] | None = None,
                what: str = "input files") -> tuple[dict[str, str], dict[str, dict]]:
    """(path -> content id, what to remember for the next run) of ``files`` ({path, size,
    and for a URI checksum}). ``remembered``: what the last run returned. A file that
    cannot be read gets an ``unreadable-`` id (whoever reads it next says why)."""
    remembered = remembered or {}
    ids: dict[str, str] = {}
    keep: dict[str, dict] = {}
    todo: list[dict] = []
    for f in files:
        path = f["path"]
        if is_uri(path):
            if f.get("checksum"):
                ids[path] = "etag-" + str(f["checksum"]).strip('"')
            else:
                todo.append(f)
            continue
        try:
            key = stat_key(path)
        except OSError:
            key = None
        entry = remembered.get(path)
        if key is not None and entry and entry.get("stat") == key:
            ids[path], keep[path] = entry["id"], entry
        else:
            todo.append(f)
    if todo:
        ids_now, keep_now = _hash_all(todo, len(files), what)
        ids |= ids_now
        keep |= keep_now
    return ids, keep


def _hash_all(todo: list[dict], n_files: int, what: str) -> tuple[dict[str, str], dict[str, dict]]:
    total = sum(f.get("size") or 0 for f in todo)
    log.info("hashing %d of %d %s (%.2f GB) to tell changed content from unchanged", len(todo), n_files, what,
             total / 1e9)
    ids, keep = {}, {}
    started = last = time.monotonic()
    done_bytes = 0
    with ThreadPoolExecutor(HASH_THREADS) as pool:
        jobs = {pool.submit(_hash_one, f["path"]): f for f in todo}
        for count, job in enumerate(as_completed(jobs), 1):
            path = jobs[job]["path"]
            ids[path], entry = job.result()
            if entry:
                keep[path] = entry
            done_bytes += jobs[job].get("size") or 0
            if time.monotonic() - last >= PROGRESS_EVERY_S and count < len(todo):
                last = time.monotonic()
                log.info("hashed %d/%d %s (%.2f of %.2f GB, %.0f MB/s)", count, len(todo), what, done_bytes / 1e9,
                         total / 1e9, done_bytes / 1e6 / max(last - started, 1e-3))
    return ids, keep


def _hash_one(path: str) -> tuple[str, dict | None]:
    """(content id, the entry to remember or None). A missing or forbidden file is the
    input's problem (an ``unreadable-`` id); any other OSError is the machine's and raises."""
    try:
        if is_uri(path):
            import fsspec

            fs, remote = fsspec.core.url_to_fs(path)
            with fs.open(remote, "rb") as f:
                return stream_id(f), None
        before, began_ns = stat_key(path), time.time_ns()
        digest = content_id(path)
        after = stat_key(path)
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        return "unreadable-" + hashlib.sha256(path.encode()).hexdigest()[:16], None
    settled = before == after and after[2] < began_ns - SETTLED_S * 1e9
    return digest, ({"stat": after, "id": digest} if settled else None)
