"""One clip shard -> one latent shard, in a plain loop or inside the latent DAG's Ray actor
(``pipelines/latents_cmd.py``), and the reject rows of the clips that could not be used.

Every clip of the shard is decoded at its duration/aspect bucket and encoded with the
others of its bucket (``training.clip_encoder.ClipEncoder.encode_many``). A clip that cannot
be used (too short for every bucket, broken media, a missing member) becomes a reject row
(key, shard, reason, message), never a crash. The rejects are written first
(``<name>.rejects.jsonl``), the latent shard last: a shard whose ``.tar`` exists is finished,
rejects included. A clip shard that cannot be read, or that is cut short, gets one
``unreadable_shard`` row and no latent shard, so the next run tries it again.
"""

from __future__ import annotations

import logging
import tarfile
import time
from pathlib import Path
from typing import Any

from curation.ffmpeg import stable_message
from curation.shards import damaged_shards, missing_members, read_clip_shard
from curation.watchdog import beat
from training.buckets import BucketConfig
from training.clip_encoder import ClipEncoder, SkipClip
from training.latent_shards import write_jsonl, write_latent_shard

log = logging.getLogger(__name__)


def rejects_path(out_dir: Path, shard_name: str) -> Path:
    return out_dir / f"{Path(shard_name).stem}.rejects.jsonl"


def reject_row(key: str | None, shard: str, reason: str, message: str) -> dict[str, Any]:
    return {"key": key, "shard": shard, "reason": reason, "message": stable_message(message)[:2000]}


def _mark_unreadable(out_dir: Path, shard_name: str, message: str) -> None:
    """An unreadable clip shard's one reject row; no latent shard, so the next run tries it again."""
    write_jsonl(rejects_path(out_dir, shard_name), [reject_row(None, shard_name, "unreadable_shard", message)])


def set_aside_damaged(todo: list[str], out_dir: Path) -> list[str]:
    """``todo`` less the clip shards that are cut short, each named on a line before Ray
    starts and recorded as an ``unreadable_shard`` reject (the run then exits 1)."""
    damaged = damaged_shards(todo)
    for shard, why in damaged.items():
        log.warning("%s; not encoded (copy it again, or run `tandem curate` again), the others are", why)
        _mark_unreadable(out_dir, Path(shard).name, why)
    return [s for s in todo if s not in damaged]


def encode_shard(encoder: ClipEncoder, buckets: BucketConfig, shard: str | Path, out_dir: Path) -> dict:
    """One clip shard -> ``out_dir/<same name>`` (+ its rejects and format); returns a
    progress row. Runs in a plain loop as well as in the Ray actor."""
    started = time.perf_counter()
    shard = Path(shard)
    rejects = []
    try:
        samples = read_clip_shard(shard)
    except (OSError, EOFError, tarfile.TarError) as exc:
        # Not marked done: the next run retries it (a network filesystem may recover).
        _mark_unreadable(out_dir, shard.name, f"{type(exc).__name__}: {exc}")
        return {"shard": shard.name, "encoded": 0, "skipped": 1, "seconds": 0.0, "failed": True}
    complete = []
    for clip in samples:
        if missing := missing_members(clip):
            rejects.append(reject_row(clip["__key__"], shard.name, "incomplete_sample",
                                   "missing member(s): " + ", ".join(sorted(missing))))
        else:
            complete.append(clip)
    # A GPU too small for a bucket raises (misconfiguration); broken media or odd metadata
    # is that clip's problem, not the shard's.
    # The encoder taking up its next clip is progress, for the stall watchdog (guard_shard).
    latents, failures = encoder.encode_many((beat() or clip for clip in complete), buckets)
    for key, exc in failures:
        reason = exc.reason if isinstance(exc, SkipClip) else "encode_failed"
        rejects.append(reject_row(key, shard.name, reason, str(exc) if isinstance(exc, SkipClip)
                               else f"{type(exc).__name__}: {exc}"))
    # Rejects first, the shard last: a shard whose .tar exists is finished, rejects included.
    write_jsonl(rejects_path(out_dir, shard.name), sorted(rejects, key=lambda r: r["key"] or ""))
    write_latent_shard(out_dir / shard.name, latents, encoder.latent_format(buckets))
    return {"shard": shard.name, "encoded": len(latents), "skipped": len(rejects),
            "seconds": time.perf_counter() - started, "failed": False}
