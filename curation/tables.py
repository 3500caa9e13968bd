"""The end of a curation run, on the driver: the units' small records merged into the
manifest, the rejects table, the stats and the report. No clip bytes are read here.

The output holds exactly the planned units: shards and records of units that are no
longer among the inputs (an earlier run on other inputs into the same ``--out``) and
shards left half-published by a killed worker are removed, so the manifest, the rejects
table and ``shards/`` always describe the same clips.
"""

from __future__ import annotations

import logging
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from curation.shards import SHARD_DIR, write_table
from curation.storage import Store
from curation.units import UNITS, load_record

log = logging.getLogger(__name__)


def merge_units(store: Store, units: list[dict], n_files: int, wall_s: float):
    """(manifest rows, reject rows, stats) of the finished ``units``, tables written."""
    records = [load_record(store, u["id"]) for u in units]
    manifest = sorted((row for r in records for row in r["manifest"]), key=lambda row: row["key"])
    rejects = sorted((row for r in records for row in r["rejects"]), key=lambda row: row["id"] or "")
    _remove_stale(store, units, {shard for r in records for shard in r["shards"]})
    write_table(manifest, "manifest", store)
    write_table(rejects, "rejects", store)
    return manifest, rejects, _stats(records, manifest, rejects, n_files, wall_s)


def _remove_stale(store: Store, units: list[dict], shards: set[str]) -> None:
    planned = {u["id"] for u in units}
    for name in store.list(UNITS):
        if name.removesuffix(".json") not in planned:
            store.delete(f"{UNITS}/{name}")
    stale = [name for name in store.list(SHARD_DIR) if name not in shards]
    if stale:
        log.info("removing %d shards that belong to no planned unit: %s", len(stale), ", ".join(stale[:5]))
    for name in stale:
        store.delete(f"{SHARD_DIR}/{name}")


def _stats(records: list[dict], manifest: list[dict], rejects: list[dict], n_files: int, wall_s: float) -> dict:
    per_stage: dict[str, dict[str, float]] = defaultdict(lambda: {"items": 0, "seconds": 0.0, "footage_s": 0.0})
    for record in records:
        for stage, t in record["timing"].items():
            for k, v in t.items():
                per_stage[stage][k] += v
    source_seconds = {k: v for r in records for k, v in r["source_seconds"].items()}
    reasons: dict[str, int] = defaultdict(int)
    for row in rejects:
        reasons[row["reason"]] += 1
    source_level = [r for r in rejects if r["id"] == r["source_id"] or r["id"] == r["source_path"]]
    return {
        "inputs": n_files,
        "sources_unique": n_files - reasons.get("duplicate", 0),
        "units": len(records),
        "clips_kept": len(manifest),
        "clips_rejected": len(rejects) - len(source_level),
        "sources_rejected": len(source_level),
        "hours_in": sum(source_seconds.values()) / 3600,
        "hours_out": sum(r["duration_s"] for r in manifest) / 3600,
        "wall_s": wall_s,
        "worker_peak_rss_mb": max((r.get("peak_rss_mb", 0.0) for r in records), default=0.0),
        "reject_reasons": dict(sorted(reasons.items())),
        "per_stage": {k: dict(v) for k, v in per_stage.items()},
        "shards": sorted({r["shard"] for r in manifest}),
    }


def report(store: Store, manifest: list[dict], rejects: list[dict], stats: dict[str, Any]) -> str:
    """Write ``report.html`` and its plots into the store; return its path or URI."""
    from curation.report import write_report  # matplotlib: the driver's business, not the workers'

    local = store.local_dir()
    if local:
        return str(write_report(local, manifest, rejects, stats))
    with tempfile.TemporaryDirectory() as tmp:
        write_report(tmp, manifest, rejects, stats)
        for path in Path(tmp).rglob("*"):
            if path.is_file():
                store.upload(path, str(path.relative_to(tmp)))
    return store.path("report.html")
