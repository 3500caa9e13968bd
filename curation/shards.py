"""Clip shards, the contract between curation and training: WebDataset tars plus the
manifest and the rejects table. This module owns the format: member list, writer, reader.

One sample per kept clip, members per docs/design.md: ``mp4`` (clip with audio), ``flac``
(its audio, lossless), ``json`` (every measurement) and ``txt`` (the training caption).
Each work unit (a source, or a batch of small sources) writes its own shards,
``clips-<unit id>-NNNN.tar``, bounded by count and size, from the worker that made its
clips: built on the worker's local disk under a ``.partial`` name, then published whole to
the output store (``curation.storage`` writes under a temporary name and renames), so
neither a reader nor a resumed run ever sees half a tar under a shard's name. Members get a
fixed mtime and samples are written in key order, so the same clips always produce
byte-identical shards.

Readers (the latent DAG, the training loader, for clip and latent shards alike) go through
``index_shard``: where each member's bytes lie, from the tar headers alone, so a reader can
pick the ``json`` of every clip without touching the media, then ``read_members`` what it
needs. The same index tells a damaged shard (cut short by an interrupted copy) from a whole
one: ``damaged_shards`` is what commands check before Ray starts.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from curation.ffmpeg import stable_message
from curation.stage import Item
from curation.storage import Store

SHARD_DIR = "shards"
SHARD_PATTERN = "clips-{unit}-%04d.tar"  # one unit's shards
CLIP_MEMBERS = ("mp4", "flac", "json")  # a clip sample without all three cannot be trained on
Spans = dict[str, tuple[int, int]]  # member extension -> (data offset, size) in the tar
# Working state that never goes into the shard's json (nor does any "_"-prefixed field).
PRIVATE_FIELDS = ("analysis", "files", "handoff", "reject")


@dataclass
class ShardConfig:
    max_count: int = 1000  # samples per shard
    max_size_mb: float = 1024.0  # bytes per shard (a shard closes once past it)


def shard_json(item: Item, pipeline: dict[str, Any]) -> dict[str, Any]:
    doc = {k: v for k, v in item.items() if k not in PRIVATE_FIELDS and not k.startswith("_")}
    doc["pipeline"] = pipeline
    return doc


def caption_text(item: Item) -> str:
    return (item.get("caption") or {}).get("text") or ""


def clip_members(item: Item) -> dict[str, bytes]:
    """The media members of a kept clip, read from the files its stages wrote."""
    files = item["files"]
    return {ext: Path(files[ext]).read_bytes() for ext in ("mp4", "flac") if files.get(ext)}


def write_unit_shards(items: list[Item], store: Store, unit_id: str, config: ShardConfig,
                      pipeline: dict[str, Any], scratch: str | Path,
                      media: Callable[[Item], dict[str, bytes]] = clip_members) -> list[dict[str, Any]]:
    """Write one unit's kept ``items`` (in key order) as ``shards/clips-<unit_id>-NNNN.tar``
    in ``store``; return one manifest row per clip. ``media`` gives a clip's mp4/flac bytes.
    A shard closes once it holds ``max_count`` samples or ``max_size_mb``."""
    pattern = SHARD_PATTERN.format(unit=unit_id)
    rows: list[dict[str, Any]] = []
    tar, local, count, size, number = None, None, 0, 0, 0

    def publish() -> None:
        tar.close()
        store.upload(local, f"{SHARD_DIR}/{pattern % number}")

    try:
        for item in sorted(items, key=lambda it: it["key"]):
            if tar is None:  # built as .partial: only a closed tar ever bears a shard's name
                local = Path(scratch) / f"{pattern % number}.partial"
                tar, count, size = tarfile.open(local, "w", format=tarfile.PAX_FORMAT), 0, 0  # noqa: SIM115
            members = {**media(item), "json": json.dumps(shard_json(item, pipeline), sort_keys=True).encode(),
                       "txt": caption_text(item).encode()}
            for ext in sorted(members):
                info = tarfile.TarInfo(f"{item['key']}.{ext}")
                info.size, info.mode, info.mtime, info.uname, info.gname = len(members[ext]), 0o444, 0, "bigdata", "bigdata"
                tar.addfile(info, io.BytesIO(members[ext]))
                size += len(members[ext])
            count += 1
            rows.append(manifest_row(item, pattern % number))
            if count >= config.max_count or size >= config.max_size_mb * 1e6:
                publish()
                tar, number = None, number + 1
        if tar is not None:
            publish()
    except BaseException:  # the unit fails and is retried whole: drop the half-built shard
        if tar is not None:
            tar.fileobj.close()  # not tar.close(): that would end the archive as if complete
            local.unlink(missing_ok=True)
        raise
    return rows


def manifest_row(item: Item, shard: str) -> dict[str, Any]:
    audio, motion, sync = item.get("audio") or {}, item.get("motion") or {}, item.get("sync") or {}
    return {
        "key": item["key"],
        "shard": shard,
        "duration_s": round(item["end_s"] - item["start_s"], 6),
        "source_id": item["source"]["id"],
        "source_path": item["source"]["path"],
        "start_s": item["start_s"],
        "end_s": item["end_s"],
        "fps": item.get("fps"),
        "width": item.get("width"),
        "height": item.get("height"),
        "audio_channels": audio.get("channels"),
        "loudness_lufs": audio.get("loudness_lufs"),
        "speech_ratio": audio.get("speech_ratio"),
        "tempo_bpm": audio.get("tempo_bpm"),
        "motion_score": motion.get("score"),
        "sync_offset_ms": sync.get("offset_ms"),
        "sync_confidence": sync.get("confidence"),
        "sync_action": sync.get("action"),
        "sync_method": sync.get("method"),
        "sync_reason": sync.get("reason"),
        "caption_backend": (item.get("caption") or {}).get("backend"),
    }


def reject_row(item: Item) -> dict[str, Any]:
    source = item.get("source") or {}
    rej = item["reject"]
    return {
        "id": item.get("key") or source.get("id") or source.get("path"),
        "source_id": source.get("id"),
        "source_path": source.get("path"),
        "stage": rej["stage"],
        "reason": rej["reason"],
        "message": stable_message(rej.get("message") or "")[:2000],  # no addresses, scratch paths, times
        # By how much the sync stage found the audio off, where it rejected for that (av_desync).
        "sync_offset_ms": (item.get("sync") or {}).get("offset_ms") if rej["stage"] == "sync" else None,
    }


def write_table(rows: list[dict[str, Any]], path_stem: str | Path, store: Store | None = None) -> list[str]:
    """Write ``rows`` as ``<stem>.parquet`` (for tools) and ``<stem>.csv`` (for people), in
    ``store`` (``path_stem`` relative to it) or on the local disk; returns their paths."""
    if store is None:
        store, path_stem = Store(Path(path_stem).parent), Path(path_stem).name
    table = pa.Table.from_pylist(rows) if rows else pa.table({"id": pa.array([], pa.string())})
    written = []
    for suffix, write in ((".parquet", pq.write_table), (".csv", pa_csv.write_csv)):
        buffer = pa.BufferOutputStream()
        write(table, buffer)
        store.write_bytes(f"{path_stem}{suffix}", buffer.getvalue().to_pybytes())
        written.append(store.path(f"{path_stem}{suffix}"))
    return written


class DamagedShard(tarfile.ReadError):
    """A shard whose tar does not read to its end: cut short (an interrupted copy or write)
    or not a tar at all. Its message names the shard and says what is wrong, in one line."""


def index_shard(path: str | Path) -> dict[str, Spans]:
    """key -> member extension -> (data offset, size), for every sample of one shard (clip or
    latent shards: both are plain tars), complete or not (see ``missing_members``); member data
    is seeked over, never read. Raises DamagedShard unless the tar is whole: every member's
    data lies in the file and the end-of-archive block follows the last one, so a copy cut
    anywhere, between two members included (which tarfile alone takes for the end), is caught.
    An OSError (a disk or network fault, not damage) propagates as it is."""
    index: dict[str, Spans] = defaultdict(dict)
    try:
        with tarfile.open(path, "r:") as tar:  # writers never compress shards
            for m in tar.getmembers():
                if m.isfile():
                    key, _, ext = m.name.partition(".")
                    index[key][ext] = (m.offset_data, m.size)
            end = tar.offset  # where the end-of-archive block must be
    except (tarfile.TarError, EOFError) as exc:
        raise DamagedShard(f"{path}: damaged, cut short or not a tar ({exc})") from None
    with open(path, "rb") as f:
        f.seek(end)
        if f.read(tarfile.BLOCKSIZE) != tarfile.NUL * tarfile.BLOCKSIZE:
            raise DamagedShard(f"{path}: cut short after {end} bytes (no end-of-archive block): an interrupted "
                               "copy or write")
    return dict(sorted(index.items()))


index_clip_shard = index_shard  # the name the clip-shard readers know


def damaged_shards(paths) -> dict[str, str]:
    """Shard path -> why it is damaged (DamagedShard's one line), for those of ``paths`` whose
    tar does not index: what every command that reads shards checks before Ray starts."""
    damaged = {}
    for path in paths:
        try:
            index_shard(path)
        except DamagedShard as exc:
            damaged[str(path)] = str(exc)
    return damaged


def read_members(path: str | Path, spans: Spans, exts=None) -> dict[str, bytes]:
    """The bytes of a sample's members (all of them, or those in ``exts``)."""
    out = {}
    with open(path, "rb") as f:
        for ext, (offset, size) in spans.items():
            if exts is None or ext in exts:
                f.seek(offset)
                out[ext] = f.read(size)
    return out


def read_clip_shard(path: str | Path) -> list[dict]:
    """Every sample of one clip shard (member extension -> bytes, plus ``__key__``), in key
    order, complete or not: see ``missing_members``."""
    return [dict(read_members(path, spans), __key__=key) for key, spans in index_shard(path).items()]


def missing_members(members) -> list[str]:
    """Which of CLIP_MEMBERS a sample (its member extensions) lacks."""
    return [ext for ext in CLIP_MEMBERS if ext not in members]
