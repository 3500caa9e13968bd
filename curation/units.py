"""Work units: how a curation run is cut up, processed on workers, and resumed.

A unit is one source, or a batch of small sources (``UnitConfig``). The driver plans the
units from file names, sizes and content ids (``plan_units``; ``pipelines/discover.py``):
a unit's id names the content of its sources, so a re-run finds it done whatever the
files' timestamps say. Everything else that reads a source's bytes happens on a worker,
in ``run_segment``: fetching it (an fsspec URI is copied to the worker's scratch disk,
hashed on the way), hashing it, probing it, and the stages. Files
of equal size always share a unit, so identical content (which has equal size) meets in
one worker, which keeps the first path and records the others as ``duplicate``.

A unit's stages run in *segments*: consecutive CPU stages as one Ray task, a model stage
(``Resources.actor``) on its own actor pool. Between segments a unit travels as one row
(its items, plus its clips' media bytes): only ``--out`` must be reachable from every
node. The last segment writes the unit's shards and its record,
``.work/units/<unit id>.json`` (its manifest and rejects rows, stage timings, sources),
which is also the resume marker: a unit with a record is done.

Faults: each source is processed under an attempt marker in ``.work/attempts/<unit>/``
(holding the worker's host and pid), removed when the source is finished or fails with
an exception. A marker that stays behind means the worker died on that source. Once a
source has ``UnitConfig.max_worker_crashes`` markers it is not tried again: it is
recorded as ``worker_crashed`` and the rest of the unit goes on.

Stalls: a unit that makes no progress (no frame decoded, no stage output) for
``UnitConfig.stall_s`` seconds is a fault of the machine too (``curation/watchdog.py``).
The watchdog writes the stage it stalled in into the source's attempt marker and a note
under ``.work/stalls/`` (the driver prints it), then the executor's ``stop`` ends the
worker, so the unit is retried like any crash; a source whose markers record a stall is
quarantined as ``worker_stalled``, naming the stage.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import resource
import socket
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from curation.probe import content_id
from curation.shards import reject_row, write_unit_shards
from curation.stage import Item, Stage, is_rejected, pipeline, reject, run_batch
from curation.storage import Store, is_uri
from curation.watchdog import Stall, Watchdog
from model.config import run_only

UNITS = ".work/units"
ATTEMPTS = ".work/attempts"
STALLS = ".work/stalls"
log = logging.getLogger(__name__)


@dataclass
class UnitConfig:
    """How sources are grouped into work units (each unit: one task, its own shards)."""

    max_sources: int = 16  # small sources batched into one unit, at most this many...
    max_mb: float = 256.0  # ...and at most this many bytes; a bigger source is a unit alone
    # ...but spread over at least this many units (when there are that many sources), so
    # a run of a few hundred small files still keeps a cluster busy.
    min_units: int = 64
    # A source whose worker died this many times (killed, out of memory, a crashing
    # decoder) is recorded as worker_crashed instead of being tried again.
    max_worker_crashes: int = run_only(2)  # fault policy; output unchanged for healthy sources
    # A unit with no frame decoded and no stage output for this long has stalled (a fault of
    # the machine): its worker is stopped and the unit retried. Generous, so that a slow
    # node's longest step (a model on a long clip, a busy disk) is never taken for a stall.
    stall_s: float = run_only(900.0)


def plan_units(files: list[dict], cfg: UnitConfig) -> list[dict]:
    """Group ``files`` ({path, size, content}, sorted by path) into units. Deterministic:
    the same paths, sizes and contents always give the same units and unit ids."""
    by_size: dict[int, list[dict]] = defaultdict(list)
    for f in files:
        by_size[f["size"]].append(f)
    small = sum(1 for f in files if len(by_size[f["size"]]) == 1 and f["size"] < cfg.max_mb * 1e6)
    per_unit = max(1, min(cfg.max_sources, small // max(1, cfg.min_units)))
    units, batch, placed = [], [], set()

    def flush() -> None:
        if batch:
            units.append(_unit(list(batch)))
            batch.clear()

    for f in files:
        if f["path"] in placed:
            continue
        same = by_size[f["size"]]
        group = same if len(same) > 1 else [f]  # possible duplicates stay together
        placed.update(g["path"] for g in group)
        if len(group) > 1 or f["size"] >= cfg.max_mb * 1e6:
            units.append(_unit(group))
            continue
        if len(batch) >= per_unit or sum(b["size"] for b in batch) + f["size"] > cfg.max_mb * 1e6:
            flush()
        batch.append(f)
    flush()
    return units


def _unit(sources: list[dict]) -> dict:
    # Content, not mtime: a file touched or copied again is still the same unit.
    identity = json.dumps([[s["path"], s["size"], s["content"]] for s in sources])
    return {"id": hashlib.sha256(identity.encode()).hexdigest()[:16], "sources": sources}


class AttemptLog:
    """Attempt markers of one unit's sources (see the module docstring)."""

    def __init__(self, store: Store, unit_id: str, limit: int):
        self.store, self.prefix, self.limit = store, f"{ATTEMPTS}/{unit_id}", limit
        self.crashes: dict[int, int] = defaultdict(int)
        self.stalled_in: dict[int, list[str]] = defaultdict(list)  # the stages a source stalled in
        self.current: tuple[int, str, dict] | None = None  # (source index, marker name, marker)
        for name in store.list(self.prefix):
            index = int(name.split(".", 1)[0])
            self.crashes[index] += 1
            stall = _read_marker(store, f"{self.prefix}/{name}").get("stalled")
            if stall:
                self.stalled_in[index].append(stall["stage"])

    def quarantined(self, index: int) -> bool:
        return self.crashes[index] >= self.limit

    @contextmanager
    def attempt(self, index: int, segment: str):
        name = f"{self.prefix}/{index:05d}.{segment}.{uuid.uuid4().hex[:12]}.json"
        marker = {"host": socket.gethostname(), "pid": os.getpid(), "segment": segment, "started": time.time()}
        self.store.write_text(name, json.dumps(marker))
        self.current = (index, name, marker)
        try:
            yield
        finally:  # not reached when the worker dies: the marker stays and counts as a crash
            self.current = None
            self.store.delete(name)

    def record_stall(self, stall: Stall) -> int | None:
        """Write ``stall`` into the running attempt's marker; the source's index, if any."""
        if self.current is None:
            return None
        index, name, marker = self.current
        marker["stalled"] = {"stage": stall.stage, "idle_s": round(stall.idle_s, 1)}
        self.store.write_text(name, json.dumps(marker))
        return index

    def clear(self) -> None:
        for name in self.store.list(self.prefix):
            self.store.delete(f"{self.prefix}/{name}")
        self.store.delete_folder(self.prefix)


def _read_marker(store: Store, name: str) -> dict:
    try:
        return json.loads(store.read_text(name))
    except (OSError, ValueError):  # a marker written as its worker died: a crash all the same
        return {}


def crashed(item: Item, segment: str, attempts: AttemptLog, index: int) -> Item:
    crashes, stalls = attempts.crashes[index], attempts.stalled_in[index]
    retry = "it is not tried again. Re-run after deleting its attempt markers to retry it."
    if stalls:
        return reject(item, stalls[-1], "worker_stalled",
                      f"the unit made no progress in stage {stalls[-1]} on this source ({len(stalls)} of "
                      f"{crashes} failed attempts stalled, each stopped after units.stall_s); {retry}")
    return reject(item, segment, "worker_crashed",
                  f"the worker died {crashes} times on this source (killed, out of memory or a crashing "
                  f"library); {retry}")


def stall_handler(store: Store, unit: dict, attempts: AttemptLog, stop: Callable[[], None] | None):
    """What a stall does: note it (in the attempt marker, for the quarantine; under
    ``STALLS``, for the driver), then ``stop`` the worker; without ``stop`` (in-process
    runs) only say which unit and stage are stuck."""

    def on_stall(stall: Stall) -> None:
        index = attempts.record_stall(stall)
        source = unit["sources"][index]["path"] if index is not None else None
        note = {"unit": unit["id"], "source": source, "stage": stall.stage, "idle_s": round(stall.idle_s, 1),
                "host": socket.gethostname(), "pid": os.getpid(), "time": time.time()}
        store.write_text(f"{STALLS}/{unit['id']}.{uuid.uuid4().hex[:12]}.json", json.dumps(note))
        log.error("%s", describe_stall(note, stopping=stop is not None))
        if stop is not None:
            stop()

    return on_stall


def describe_stall(note: dict, stopping: bool = True) -> str:
    what = f"unit {note['unit']}" + (f" ({Path(note['source']).name})" if note.get("source") else "")
    then = ("its worker was stopped and the unit goes back to Ray to be retried" if stopping
            else "it cannot be stopped in this process")
    return f"{what} made no progress for {note['idle_s']:.0f} s in stage {note['stage']}: {then}"


@dataclass
class Segment:
    """Consecutive stages that run in one place: a task (``actor=False``) or an actor pool."""

    stages: list[Stage]
    actor: bool
    first: bool
    last: bool

    @property
    def name(self) -> str:
        return "+".join(s.name for s in self.stages)


def segments(stages: list[Stage]) -> list[Segment]:
    groups: list[list[Stage]] = []
    for stage in stages:
        if stage.resources.actor or not groups or groups[-1][-1].resources.actor:
            groups.append([stage])
        else:
            groups[-1].append(stage)
    return [Segment(g, g[0].resources.actor, i == 0, i == len(groups) - 1) for i, g in enumerate(groups)]


def run_segment(segment: Segment, payload: dict, store: Store, scratch: Path, units: UnitConfig,
                finish: dict, stop: Callable[[], None] | None = None) -> dict:
    """Run one segment on one unit. ``payload``: the unit (first segment) or the previous
    segment's output. Returns the next payload, or the unit's summary after the last.
    ``stop``: how to end this worker when the unit stalls (see the module docstring)."""
    attempts = AttemptLog(store, payload["unit"]["id"], units.max_worker_crashes)
    with Watchdog(units.stall_s, stall_handler(store, payload["unit"], attempts, stop)):
        return _run_segment(segment, payload, store, scratch, attempts, finish)


def _run_segment(segment: Segment, payload: dict, store: Store, scratch: Path, attempts: AttemptLog,
                 finish: dict) -> dict:
    unit = payload["unit"]
    started = payload.get("started", time.time())
    if segment.first:
        items = _first_segment(segment, unit, attempts, scratch)
    else:
        items = _unpack(payload, scratch)
        by_source: dict[int, list[Item]] = defaultdict(list)
        for item in items:
            by_source[item["_source_index"]].append(item)
        items = []
        for index, group in sorted(by_source.items()):
            if attempts.quarantined(index):
                items += [it if is_rejected(it) else crashed(it, segment.name, attempts, index) for it in group]
                continue
            with attempts.attempt(index, segment.name):
                items += _apply(segment, group)
    if segment.last:
        summary = finish_unit(unit, items, store, scratch, **finish)
        attempts.clear()
        return {**summary, "seconds": time.time() - started}
    return _pack(unit, items, started)


def _first_segment(segment: Segment, unit: dict, attempts: AttemptLog, scratch: Path) -> list[Item]:
    items, seen = [], {}
    for index, source in enumerate(unit["sources"]):
        item = {"source": {"path": source["path"], "input": source["path"]}, "_source_index": index}
        if attempts.quarantined(index):
            items.append(crashed(item, "probe", attempts, index))
            continue
        with attempts.attempt(index, segment.name):
            local, source_id, error = fetch(source["path"], scratch / "inputs")
            item["source"].update(path=local, id=source_id)
            if error:
                items.append(reject(item, "probe", "unreadable", error))
            elif source_id in seen:
                items.append(reject(item, "discover", "duplicate", f"same content as {seen[source_id]}"))
            else:
                seen[source_id] = source["path"]
                items += [{**out, "_source_index": index} for out in pipeline(segment.stages, item)]
            if local != source["path"]:
                Path(local).unlink(missing_ok=True)  # a fetched copy: the clips are cut
    return items


def _apply(segment: Segment, items: list[Item]) -> list[Item]:
    if segment.actor:  # one model stage: the source's clips in batches of its batch_size
        [stage] = segment.stages
        started = time.perf_counter()
        size = max(1, stage.resources.batch_size)
        out = [o for at in range(0, len(items), size) for o in run_batch(stage, items[at:at + size])]
        seconds = (time.perf_counter() - started) / max(1, len(out))
        for it in out:
            it.setdefault("_timing", {})[stage.name] = seconds
        return out
    return [out for it in items for out in pipeline(segment.stages, it)]


def fetch(path: str, inputs: Path) -> tuple[str, str, str]:
    """(local path, content id, error) of an input; a URI is copied to ``inputs`` and hashed
    on the way. A missing or forbidden input is the input's problem (an error message);
    any other failure (the network, the disk) raises, to be retried."""
    try:
        if not is_uri(path):
            return path, content_id(path), ""
        import fsspec

        fs, remote = fsspec.core.url_to_fs(path)
        inputs.mkdir(parents=True, exist_ok=True)
        local = inputs / f"{hashlib.sha256(path.encode()).hexdigest()[:16]}{Path(remote).suffix}"
        digest = hashlib.sha256()
        with fs.open(remote, "rb") as src, open(local, "wb") as dst:
            while block := src.read(1 << 22):
                digest.update(block)
                dst.write(block)
        return str(local), digest.hexdigest()[:16], ""
    except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        return path, "unreadable-" + hashlib.sha256(path.encode()).hexdigest()[:16], f"cannot read {path}: {exc}"


def _pack(unit: dict, items: list[Item], started: float) -> dict:
    """A unit between segments: its items and its clips' media as bytes, so the next
    segment can run on any node."""
    media = {}
    for item in items:
        if not is_rejected(item):
            media[item["key"]] = {ext: Path(p).read_bytes() for ext, p in item.get("files", {}).items()}
        for path in item.get("files", {}).values():
            Path(path).unlink(missing_ok=True)
    return {"unit": unit, "started": started, "blob": pickle.dumps({"items": items, "media": media})}


def _unpack(payload: dict, scratch: Path) -> list[Item]:
    data = pickle.loads(payload["blob"])
    clips = scratch / "clips"
    clips.mkdir(parents=True, exist_ok=True)
    items = data["items"]
    for item in items:
        if item.get("key") in data["media"]:
            files = {}
            for ext, blob in data["media"][item["key"]].items():
                files[ext] = str(clips / f"{item['key']}.{ext}")
                Path(files[ext]).write_bytes(blob)
            item["files"] = files
    return items


def finish_unit(unit: dict, items: list[Item], store: Store, scratch: Path, *, shards, pipeline_info: dict) -> dict:
    """Write the unit's shards and its record; return a small summary for the driver."""
    for item in items:  # the output names each source as it was given, not a worker's copy
        item["source"] = {k: v for k, v in {**item["source"], "path": item["source"]["input"]}.items() if k != "input"}
    kept = [it for it in items if not is_rejected(it)]
    manifest = write_unit_shards(kept, store, unit["id"], shards, pipeline_info, scratch)
    rejects = [reject_row(it) for it in items if is_rejected(it)]
    record = {"unit": unit["id"], "sources": unit["sources"], "manifest": manifest, "rejects": rejects,
              "shards": sorted({row["shard"] for row in manifest}), "timing": _timing(items),
              # The worker's peak memory so far (its own, or its largest ffmpeg child's), in MB.
              "peak_rss_mb": max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                                 resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024,
              "source_seconds": {it["source"]["id"]: (it.get("probe") or {}).get("duration_s") or 0.0
                                 for it in items if it["source"].get("id")}}
    store.write_text(f"{UNITS}/{unit['id']}.json", json.dumps(record))
    reasons: dict[str, int] = defaultdict(int)
    for row in rejects:
        reasons[row["reason"]] += 1
    return {"unit": unit["id"], "sources": [s["path"] for s in unit["sources"]], "kept": len(manifest),
            "rejected": len(rejects), "reasons": dict(reasons)}


def _timing(items: list[Item]) -> dict[str, dict[str, float]]:
    per_stage: dict[str, dict[str, float]] = defaultdict(lambda: {"items": 0, "seconds": 0.0, "footage_s": 0.0})
    for it in items:
        duration = (it.get("end_s") or 0.0) - (it.get("start_s") or 0.0)
        for stage, seconds in (it.get("_timing") or {}).items():
            per_stage[stage]["items"] += 1
            per_stage[stage]["seconds"] += seconds
            per_stage[stage]["footage_s"] += duration
    return {k: dict(v) for k, v in per_stage.items()}


def load_record(store: Store, unit_id: str) -> dict[str, Any]:
    return json.loads(store.read_text(f"{UNITS}/{unit_id}.json"))
