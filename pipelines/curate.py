"""The curation DAG: raw footage -> clip shards, on Ray Data.

    tandem curate RAW... --out shards/ [--config curate.yaml] [key=value ...] [--address ADDR]

probe -> shots (one source fans out into clips) -> motion -> prefilter -> clip -> audio
-> sync -> transcribe -> caption -> filter, each a stage from ``curation/`` mapped onto Ray Data
by ``pipelines/ray_adapter.py``; the driver writes the shards, the manifest, the
rejects table and the report, and logs the run to MLflow.

Resume, exactly once: the driver commits each source's results (all its clips, kept
or rejected) to ``<out>/.work/done/<source_id>.json`` atomically once the last of them
arrives. A re-run skips committed sources and re-processes the rest from scratch, and
the shards are always assembled from the committed results in key order, so a run
that was killed and resumed ends with exactly the shards of an uninterrupted run.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from curation.audio import AudioConfig, AudioStage
from curation.caption import CaptionConfig, CaptionStage
from curation.clip import ClipConfig, ClipStage
from curation.filters import FilterConfig, FilterStage
from curation.motion import MotionConfig, MotionStage
from curation.probe import ProbeConfig, ProbeStage
from curation.report import write_report
from curation.shards import ShardConfig, reject_row, write_shards, write_table
from curation.shots import ShotConfig, ShotStage
from curation.stage import Item, Stage, is_rejected
from curation.sync import SyncConfig, SyncStage
from curation.transcribe import TranscribeConfig, TranscribeStage
from model.config import run_only
from pipelines.config import ConfigError, output_hash, save_config, to_dict
from pipelines.discover import discover

log = logging.getLogger(__name__)
PIPELINE_VERSION = "0.1.0"


@dataclass
class RayConfig:
    actor_pool_size: int = run_only(1)  # actors per model stage (transcribe, caption); output unchanged


@dataclass
class CurationConfig:
    """Every field changes the shards (and so the resume identity, ``pipeline.config_hash``)
    except those declared ``run_only``: a half-finished job resumes with more actors, under
    another experiment name, or untracked, but not with other thresholds or models."""

    probe: ProbeConfig = field(default_factory=ProbeConfig)
    shots: ShotConfig = field(default_factory=ShotConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    motion: MotionConfig = field(default_factory=MotionConfig)
    sync: SyncConfig = field(default_factory=SyncConfig)
    transcribe: TranscribeConfig = field(default_factory=TranscribeConfig)
    caption: CaptionConfig = field(default_factory=CaptionConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)
    shards: ShardConfig = field(default_factory=ShardConfig)
    ray: RayConfig = run_only(default_factory=RayConfig)  # output unchanged
    # Stages left out of the DAG, e.g. [transcribe] where no Whisper weights are at hand.
    # probe, shots and clip cannot be skipped: every later stage needs their output.
    skip: list = field(default_factory=list)
    experiment: str = run_only("tandem-curation")  # MLflow experiment; output unchanged
    track: bool = run_only(True)  # log the run to MLflow; output unchanged


REQUIRED_STAGES = ("probe", "shots", "clip")


class PrefilterStage(FilterStage):
    """The filter's thresholds on what is known before clipping (duration, motion)."""

    name = "prefilter"


def build_stages(cfg: CurationConfig, work_dir: Path) -> list[Stage]:
    stages = [
        ProbeStage(cfg.probe),
        ShotStage(cfg.shots),
        # Motion reads the shot stage's arrays, so static and black clips are dropped
        # here, before the clip stage spends an encode on them.
        MotionStage(cfg.motion),
        PrefilterStage(cfg.filter),
        ClipStage(replace(cfg.clip, work_dir=str(work_dir / "clips"))),
        AudioStage(cfg.audio),
        SyncStage(cfg.sync),
        TranscribeStage(cfg.transcribe),
        CaptionStage(cfg.caption),
        FilterStage(cfg.filter),
    ]
    names = [s.name for s in stages]
    unknown = sorted(set(cfg.skip) - set(names))
    if unknown or set(cfg.skip) & set(REQUIRED_STAGES):
        raise ConfigError(f"skip={cfg.skip}: only these stages can be skipped: "
                          f"{[n for n in names if n not in REQUIRED_STAGES]}")
    stages = [s for s in stages if s.name not in cfg.skip]
    for stage in stages:
        stage.preflight()
    return stages


@dataclass
class CurationResult:
    out_dir: Path
    manifest: list[dict[str, Any]]
    rejects: list[dict[str, Any]]
    stats: dict[str, Any]
    report: Path | None = None
    mlflow_run_id: str | None = None
    tracking_uri: str | None = None


class _Journal:
    """Per-source completion records under ``<work>/done``: the unit of resume."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path(self, source_id: str) -> Path:
        return self.root / f"{source_id}.json"

    def done(self, source_id: str) -> bool:
        return self.path(source_id).is_file()

    def commit(self, source_id: str, items: list[Item]) -> None:
        tmp = self.path(source_id).with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"items": sorted(items, key=_order)}))
        os.replace(tmp, self.path(source_id))

    def load(self, source_id: str) -> list[Item]:
        return json.loads(self.path(source_id).read_text())["items"]


def _claim_output(work: Path, cfg: CurationConfig) -> None:
    """Resume only under the config that produced the committed work: results made
    with other thresholds or models would silently mix into the shards."""
    marker = work / "config_hash"
    work.mkdir(parents=True, exist_ok=True)
    committed = any((work / "done").glob("*.json"))
    if committed and marker.exists() and marker.read_text().strip() != output_hash(cfg):
        raise ConfigError(f"{work.parent} holds a run with a different config (see its config.yaml): "
                          "use another --out, or delete it to start over")
    marker.write_text(output_hash(cfg))


def _order(item: Item) -> str:
    return item.get("key") or item["source"]["id"]


def _process(todo: list[Item], stages: list[Stage], journal: _Journal, cfg: CurationConfig) -> None:
    """Stream ``todo`` sources through the stages; commit each source once complete."""
    import ray
    import ray.data

    from pipelines.ray_adapter import apply_stage

    gpus = ray.cluster_resources().get("GPU", 0.0)
    ds = ray.data.from_items([{"item": json.dumps(s)} for s in todo], override_num_blocks=len(todo))
    for stage in stages:
        ds = apply_stage(ds, stage, group_by="shots", actor_pool_size=cfg.ray.actor_pool_size,
                         cluster_gpus=gpus)
    pending: dict[str, list[Item]] = defaultdict(list)
    for row in ds.iter_rows():
        item = json.loads(row["item"])
        source_id = item["source"]["id"]
        pending[source_id].append(item)
        if len(pending[source_id]) >= (item.get("_group") or {}).get("size", 1):
            journal.commit(source_id, pending.pop(source_id))
            log.info("source done: %s (%s)", source_id, Path(item["source"]["path"]).name)
    if pending:  # cannot happen unless a stage breaks the one-in-one-out contract
        raise RuntimeError(f"incomplete sources after the DAG finished: {sorted(pending)}")


def run_curation(inputs: list[str], out_dir: str | Path, cfg: CurationConfig | None = None,
                 address: str | None = None) -> CurationResult:
    cfg = cfg or CurationConfig()
    started = time.time()
    out = Path(out_dir).resolve()
    work = out / ".work"
    stages = build_stages(cfg, work)  # a misconfigured stage fails here, before any work
    _claim_output(work, cfg)
    save_config(cfg, out / "config.yaml")
    found = discover(inputs, work / "inputs")
    journal = _Journal(work / "done")
    todo = [s for s in found.sources if not journal.done(s["source"]["id"])]
    log.info("%d inputs: %d unique sources (%d already done), %d duplicates",
             len(found.sources) + len(found.duplicates), len(found.sources),
             len(found.sources) - len(todo), len(found.duplicates))
    if todo:
        from pipelines.ray_local import init_ray

        init_ray(address)
        _process(todo, stages, journal, cfg)

    items = [it for s in found.sources for it in journal.load(s["source"]["id"])]
    kept = [it for it in items if not is_rejected(it)]
    rejected = sorted([it for it in items if is_rejected(it)] + found.duplicates, key=_order)
    pipeline = {"version": PIPELINE_VERSION, "config_hash": output_hash(cfg)}
    manifest = write_shards(kept, out / "shards", cfg.shards, pipeline)
    rejects = [reject_row(it) for it in rejected]
    write_table(manifest, out / "manifest")
    write_table(rejects, out / "rejects")
    stats = _stats(found, items, manifest, rejects, time.time() - started)
    stats["sources_processed"] = len(todo)  # the rest were committed by an earlier run
    (out / "stats.json").write_text(json.dumps(stats, indent=2))
    result = CurationResult(out, manifest, rejects, stats)
    result.report = write_report(out, manifest, rejects, stats)
    if cfg.track:
        _track(result, cfg)
    return result


def _stats(found, items: list[Item], manifest, rejects, wall_s: float) -> dict[str, Any]:
    source_seconds = {it["source"]["id"]: (it.get("probe") or {}).get("duration_s") or 0.0 for it in items}
    per_stage: dict[str, dict[str, float]] = defaultdict(lambda: {"items": 0, "seconds": 0.0, "footage_s": 0.0})
    for it in items:
        duration = (it.get("end_s") or 0.0) - (it.get("start_s") or 0.0)
        for stage, seconds in (it.get("_timing") or {}).items():
            per_stage[stage]["items"] += 1
            per_stage[stage]["seconds"] += seconds
            per_stage[stage]["footage_s"] += duration
    reasons: dict[str, int] = defaultdict(int)
    for row in rejects:
        reasons[row["reason"]] += 1
    return {
        "inputs": len(found.sources) + len(found.duplicates),
        "sources_unique": len(found.sources),
        "clips_kept": len(manifest),
        "clips_rejected": sum(1 for r in rejects if r["id"] != r["source_id"]),
        "sources_rejected": sum(1 for r in rejects if r["id"] == r["source_id"]),
        "hours_in": sum(source_seconds.values()) / 3600,
        "hours_out": sum(r["duration_s"] for r in manifest) / 3600,
        "wall_s": wall_s,
        "reject_reasons": dict(sorted(reasons.items())),
        "per_stage": {k: dict(v) for k, v in per_stage.items()},
        "shards": sorted({r["shard"] for r in manifest}),
    }


def _track(result: CurationResult, cfg: CurationConfig) -> None:
    from pipelines.tracking import open_tracker

    out, stats = result.out_dir, result.stats
    with open_tracker(cfg.experiment, run_name=out.name, store_dir=out.parent) as tracker:
        tracker.log_params(to_dict(cfg))
        metrics = {k: float(v) for k, v in stats.items() if isinstance(v, int | float)}
        for stage, s in stats["per_stage"].items():
            if s["seconds"] > 0:
                metrics[f"stage.{stage}.items_per_s"] = s["items"] / s["seconds"]
                metrics[f"stage.{stage}.footage_s_per_s"] = s["footage_s"] / s["seconds"]
        for reason, count in stats["reject_reasons"].items():
            metrics[f"rejected.{reason}"] = float(count)
        tracker.log_metrics(metrics)
        tracker.set_tags({"pipeline.version": PIPELINE_VERSION, "pipeline.config_hash": output_hash(cfg)})
        for name in ("config.yaml", "stats.json", "manifest.parquet", "manifest.csv", "rejects.parquet",
                     "rejects.csv", "report.html", "report"):
            if (out / name).exists():
                tracker.log_artifact(out / name, "report" if name == "report" else None)
    result.mlflow_run_id, result.tracking_uri = tracker.run_id, tracker.tracking_uri


def summary(result: CurationResult) -> str:
    s = result.stats
    lines = [
        f"curated {s['inputs']} inputs ({s['sources_unique']} unique) in {s['wall_s']:.1f}s: "
        f"{s['clips_kept']} clips kept ({s['hours_out'] * 3600:.1f}s of {s['hours_in'] * 3600:.1f}s footage)",
        "rejected: " + (", ".join(f"{r}={n}" for r, n in s["reject_reasons"].items()) or "none"),
        f"  shards:   {result.out_dir / 'shards'} ({len(s['shards'])} files)",
        f"  manifest: {result.out_dir / 'manifest.parquet'}",
        f"  rejects:  {result.out_dir / 'rejects.csv'}",
    ]
    if result.report:
        lines.append(f"  report:   {result.report}")
    if result.mlflow_run_id:
        lines.append(f"  MLflow:   run {result.mlflow_run_id} in {result.tracking_uri}")
    return "\n".join(lines)


def split_args(positionals: list[str]) -> tuple[list[str], list[str]]:
    """``tandem curate a.mp4 dir/ shots.min_clip_s=2``: inputs and ``key=value`` overrides."""
    inputs, overrides = [], []
    for arg in positionals:
        key = arg.partition("=")[0]
        is_override = "=" in arg and key.replace(".", "").replace("_", "").isalnum() and not Path(arg).exists()
        (overrides if is_override else inputs).append(arg)
    return inputs, overrides


def main(args) -> int:
    """``tandem curate`` (arguments parsed by pipelines/cli.py)."""
    from pipelines.config import load_config
    from pipelines.discover import InputError

    inputs, overrides = split_args(args.inputs)
    if not inputs or not args.out:
        print("tandem curate: give at least one INPUT and --out DIR", flush=True)
        return 2
    try:
        cfg = load_config(CurationConfig, args.config, overrides)
        result = run_curation(inputs, args.out, cfg, address=args.address)
    except (ValueError, InputError) as exc:  # ConfigError and stage config checks
        print(f"tandem curate: {exc}", flush=True)
        return 2
    print(summary(result), flush=True)
    return 0
