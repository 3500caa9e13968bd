"""The latent DAG: clip shards -> latent shards, on Ray Data with an actor pool.

    tandem latents CLIP_SHARDS_DIR --out DIR [--config RECIPE|YAML] [key=value ...] [--address ADDR]
    tandem latents curated/ --out latents_ltx2/ --config latents_1b_ltx2 encoder.video_path=/models/ltx2/vae ...

``--config`` takes a recipe name from pipelines/recipes/ (``latents_<preset>_<encoders>.yaml``,
one per model preset: the encoders and buckets that preset is sized for) or a YAML path.
Each actor holds a ``training.clip_encoder.ClipEncoder`` (video and audio autoencoders from
the registry in training/encoders.py, text encoder; a GPU when the cluster has one) and
turns one clip shard into one latent shard of the same name (``pipelines/latents_encode.py``):
every clip is decoded at its duration/aspect bucket, clips of one bucket are encoded together
in batches (the VAEs' own tiling keeps 720p x 10 s clips in memory), into the format
training/loader.py reads. A clip that cannot be used becomes a reject row, never a crash.

Resume: a shard's rejects are written next to it (``<name>.rejects.jsonl``), then the latent
shard is written under a temp name and renamed, so a finished shard is exactly one whose
``.tar`` exists; a re-run skips those (a leftover ``NAME.tar.tmp`` of an interrupted write is
not one). ``.latents_claim.json`` names the content of the clip shard each latent shard was
made from (``pipelines/fingerprints.py``): a clip shard that changed since, or is gone, has
its latent shard removed (and encoded again). Before Ray starts, each pending clip shard's
tar index is read: one cut short is named on a line, gets an ``unreadable_shard`` reject and
is left for the next run (exit 1), the others are encoded. The driver then aggregates every
shard into ``manifest.jsonl`` (``training.latent_shards.write_manifest``), ``rejects.jsonl`` and
``stats.json`` and logs the run to MLflow.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model.config import run_only
from pipelines.config_loader import (
    ConfigError,
    add_recipe_arguments,
    load_recipe,
    output_hash,
    save_config,
    to_dict,
)
from pipelines.fingerprints import content_ids
from pipelines.latents_encode import encode_shard, reject_row, rejects_path, set_aside_damaged
from pipelines.worker_faults import guard_shard
from training.buckets import BucketConfig
from training.clip_encoder import ClipEncoder, EncoderConfig
from training.encoders import EncoderConfigError, check, describe
from training.latent_shards import (
    MANIFEST,
    format_path,
    manifest_rows,
    read_jsonl,
    write_jsonl,
    write_manifest,
)

log = logging.getLogger(__name__)
EXPERIMENT = "tandem-latents"  # MLflow experiment
CLAIM = ".latents_claim.json"  # what the finished shards in an output directory were made from
STALL_MARKS = ".work/stalls"  # one file per stalled try of a shard (pipelines/worker_faults.py)
# Curation writes <out>/shards/clips-*.tar and the manifest beside shards/ (parquet for tools).
MANIFEST_NAMES = ("manifest.parquet", "manifest.csv", "manifest.jsonl")


@dataclass
class LatentsConfig:
    """``encoder`` and ``buckets`` change the latents (the resume identity); the ``run_only``
    fields do not, so a half-finished job resumes on a bigger cluster."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    buckets: BucketConfig = field(default_factory=BucketConfig)
    actors: int = run_only(1)  # encoder actors (one GPU each where the cluster has GPUs); output unchanged
    cpus_per_actor: float = run_only(0.5)  # fractional: 2-CPU machines deadlock otherwise; output unchanged
    stall_s: float = run_only(900.0)  # a shard with no clip taken up for this long stalled: its actor restarts


@dataclass
class LatentsResult:
    out_dir: Path
    manifest: list[dict[str, Any]]
    rejects: list[dict[str, Any]]
    stats: dict[str, Any]
    shards_encoded: int  # by this run; the others were finished earlier
    shards_failed: list[str]  # clip shards that could not be read (retried by the next run)
    clips_this_run: int = 0  # clips in the shards this run encoded
    mlflow_run_id: str | None = None
    tracking_uri: str | None = None


def clip_shards(clip_dir: str | Path) -> list[Path]:
    """The clip shards of ``clip_dir``: its ``*.tar``, or those of its ``shards/`` folder when
    it is a ``tandem curate --out`` directory."""
    clip_dir = Path(clip_dir)
    found = sorted(clip_dir.glob("*.tar"))
    if not found and (clip_dir / "shards").is_dir():
        found = sorted((clip_dir / "shards").glob("*.tar"))
    return found


def source_manifest(clip_dir: str | Path) -> Path | None:
    """The curation manifest of these clip shards: in ``clip_dir`` or, for curation's
    ``<out>/shards``, in ``<out>``."""
    clip_dir = Path(clip_dir)
    folders = [clip_dir, clip_dir.parent] if clip_dir.name == "shards" else [clip_dir]
    return next((d / n for d in folders for n in MANIFEST_NAMES if (d / n).is_file()), None)


def _sha256(path: Path | None) -> str | None:
    if path is None:
        return None
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def pending_shards(clip_dir: str | Path, out_dir: str | Path) -> list[str]:
    """Clip shards whose latent shard does not exist yet."""
    out_dir = Path(out_dir)
    return [str(p) for p in clip_shards(clip_dir) if not (out_dir / p.name).exists()]


class ClipShardEncoder:
    """Ray Data actor: encodes whole clip shards into latent shards."""

    def __init__(self, cfg: dict, out_dir: str):
        from pipelines.config_loader import from_dict

        self.cfg = from_dict(LatentsConfig, cfg)
        self.out_dir = Path(out_dir)
        self.encoder = ClipEncoder(self.cfg.encoder)

    def __call__(self, batch: dict) -> dict:
        rows = [self.encode(Path(s)) for s in batch["shard"]]
        return {k: [r[k] for r in rows] for k in ("shard", "encoded", "skipped", "seconds", "failed")}

    def encode(self, shard: Path) -> dict:
        def stalled(why: str) -> dict:
            write_jsonl(rejects_path(self.out_dir, shard.name), [reject_row(None, shard.name, "worker_stalled", why)])
            return {"shard": shard.name, "encoded": 0, "skipped": 1, "seconds": 0.0, "failed": True}

        return guard_shard(self.out_dir / STALL_MARKS, shard.name, self.cfg.stall_s, stalled=stalled,
                           encode=lambda: encode_shard(self.encoder, self.cfg.buckets, shard, self.out_dir))


def _claim_output(out_dir: Path, cfg: LatentsConfig, shards: list[Path], manifest_sha: str | None) -> None:
    """Resume only onto latents made by the same encoders and buckets (else ConfigError).
    A latent shard whose clip shard is gone, or holds other bytes than those it was made
    from, is removed (one log line says so), and ``pending_shards`` encodes it again."""
    marker = out_dir / CLAIM
    held = json.loads(marker.read_text()) if marker.exists() else {}
    made = sorted(out_dir.glob("*.tar"))
    if claimed_by_other_config(out_dir, cfg):
        raise ConfigError(f"{out_dir} holds latents made with a different encoder/bucket config "
                          "(see its config.yaml): use another --out, or delete it to start over")
    ids, remembered = content_ids([{"path": str(p), "size": p.stat().st_size} for p in shards],
                                  held.get("content_ids"), what="clip shards")
    now = {p.name: ids[str(p)] for p in shards}
    made_from = held.get("clip_shards")
    if made_from is None and manifest_sha and held.get("source_manifest_sha256") == manifest_sha:
        made_from = now  # a claim from before clip shards had content ids: the same manifest
    stale = [p for p in made if (made_from or {}).get(p.name) is None or made_from[p.name] != now.get(p.name)]
    if stale:
        log.info("%s: %d latent shard(s) were made from clip shards that changed or are gone since: "
                 "removed (those of changed clip shards are encoded again)", out_dir, len(stale))
    for path in stale:
        for old in (path, format_path(path), rejects_path(out_dir, path.name)):
            old.unlink(missing_ok=True)
    # Written before any encoding: every latent shard on disk was made from the clip shard
    # content named here.
    marker.write_text(json.dumps({"config_hash": output_hash(cfg), "source_manifest_sha256": manifest_sha,
                                  "clip_shards": now, "content_ids": remembered}))


def claimed_by_other_config(out_dir: Path, cfg: LatentsConfig) -> bool:
    """Whether ``out_dir`` holds latent shards made with another encoder/bucket config."""
    marker = out_dir / CLAIM
    return marker.exists() and any(out_dir.glob("*.tar")) \
        and json.loads(marker.read_text())["config_hash"] != output_hash(cfg)


def _preflight(cfg: LatentsConfig) -> None:
    """Fail in seconds, on the driver, for what would otherwise crash every actor."""
    try:
        check(cfg.encoder)
        fmt = describe(cfg.encoder, cfg.buckets.fps)  # configs only: no weights are loaded
    except (EncoderConfigError, OSError) as exc:
        raise ConfigError(str(exc)) from exc
    stride = fmt.video_stride[1]
    bad = [f"{h}x{w}" for h, w in cfg.buckets.resolutions if h % stride or w % stride]
    if bad:
        raise ConfigError(f"buckets.resolutions {', '.join(bad)}: the {fmt.video_encoder} video VAE needs multiples "
                          f"of {stride} pixels (x2 where the DiT patches 2x2, see model/presets.py)")
    if cfg.actors < 1 or cfg.cpus_per_actor <= 0:
        raise ConfigError("actors must be >= 1 and cpus_per_actor > 0")


def _encode_pending(todo: list[str], out_dir: Path, cfg: LatentsConfig, address: str | None) -> None:
    from pipelines.ray_local import init_ray

    init_ray(address)
    import ray
    import ray.data

    gpus = 1 if ray.cluster_resources().get("GPU", 0) else 0
    shutil.rmtree(out_dir / STALL_MARKS, ignore_errors=True)  # each run gives a stalled shard its tries
    ds = ray.data.from_items([{"shard": s} for s in todo], override_num_blocks=len(todo))
    ds = ds.map_batches(ClipShardEncoder, fn_constructor_args=(to_dict(cfg), str(out_dir)), batch_size=1,
                        compute=ray.data.ActorPoolStrategy(size=min(cfg.actors, len(todo))), num_gpus=gpus,
                        num_cpus=cfg.cpus_per_actor)
    for done, row in enumerate(ds.iter_rows(), 1):
        if row["failed"]:
            log.warning("shard %d/%d %s: not encoded, left for the next run (see its rejects)",
                        done, len(todo), row["shard"])
        else:
            log.info("shard %d/%d %s: %d encoded, %d skipped in %.1f s", done, len(todo), row["shard"],
                     row["encoded"], row["skipped"], row["seconds"])


def run_latents_job(clip_dir: str | Path, out_dir: str | Path, cfg: LatentsConfig | None = None,
                    address: str | None = None, *, track: bool = True, run_name: str | None = None) -> LatentsResult:
    """Encode every pending clip shard of ``clip_dir`` into ``out_dir``, then write the
    manifest, rejects and stats of all of them; ``track``: all in one MLflow run."""
    from pipelines.ray_local import init_ray
    from pipelines.tracking import describe_run, open_tracker

    cfg = cfg or LatentsConfig()
    started = time.time()
    shards = clip_shards(clip_dir)
    if not shards:
        raise ConfigError(f"no clip shards (*.tar) in {clip_dir} or {Path(clip_dir) / 'shards'}")
    _preflight(cfg)
    out = Path(out_dir).absolute()
    out.mkdir(parents=True, exist_ok=True)
    manifest_sha = _sha256(source_manifest(clip_dir))
    _claim_output(out, cfg, shards, manifest_sha)
    save_config(cfg, out / "config.yaml")
    pending = pending_shards(clip_dir, out)
    todo = set_aside_damaged(pending, out)  # before Ray starts: each damaged shard named on a line
    log.info("%d clip shards: %d to encode, %d already done, %d damaged", len(shards), len(todo),
             len(shards) - len(pending), len(pending) - len(todo))
    if todo:
        init_ray(address)  # an address nothing answers on is a setting to change: no run for it
    with open_tracker(EXPERIMENT, run_name or describe_run("latents", str(clip_dir)), enabled=track,
                      start_time=started, system_metrics=True) as tracker:  # the command, start to end
        tracker.log_params(to_dict(cfg))
        if todo:
            _encode_pending(todo, out, cfg, address)
        result = _gather(shards, out, manifest_sha, started, [Path(s).name for s in todo])
        if track:
            _track(tracker, result, cfg)
            _record_lineage(tracker, clip_dir, result, cfg)
    return result


def _gather(shards: list[Path], out: Path, manifest_sha: str | None, started: float, todo: list[str]) -> LatentsResult:
    """Every clip shard's latents and rejects (``todo``: the shards this run encoded) into
    ``manifest.jsonl``, ``rejects.jsonl`` and ``stats.json``."""
    manifest, rejects, failed = [], [], []
    for shard in shards:
        if (out / shard.name).exists():
            manifest += manifest_rows(out / shard.name)
        else:
            failed.append(shard.name)
        if rejects_path(out, shard.name).exists():
            rejects += read_jsonl(rejects_path(out, shard.name))
    write_manifest(out, manifest)
    write_jsonl(out / "rejects.jsonl", rejects)
    stats = {
        "source_manifest_sha256": manifest_sha,
        "clips_in": len(manifest) + len(rejects),
        "encoded": len(manifest),
        "skipped": dict(sorted(Counter(r["reason"] for r in rejects).items())),
        "buckets": dict(sorted(Counter(r["bucket"] for r in manifest).items())),
        "seconds": round(time.time() - started, 3),
    }
    (out / "stats.json").write_text(json.dumps(stats, indent=2))
    result = LatentsResult(out, manifest, rejects, stats, sum((out / name).exists() for name in todo), failed)
    result.clips_this_run = sum(1 for r in manifest + rejects if r["shard"] in set(todo))
    return result


def _track(tracker, result: LatentsResult, cfg: LatentsConfig) -> None:
    out, stats, clips_this_run = result.out_dir, result.stats, result.clips_this_run
    metrics = {"clips_in": stats["clips_in"], "encoded": stats["encoded"], "seconds": stats["seconds"],
               "skipped": sum(stats["skipped"].values()), "shards_encoded": result.shards_encoded,
               "shards_failed": len(result.shards_failed), "clips_this_run": clips_this_run}
    if clips_this_run and stats["seconds"] > 0:
        metrics["clips_per_s"] = clips_this_run / stats["seconds"]
    metrics |= {f"skipped.{k}": v for k, v in stats["skipped"].items()}
    metrics |= {f"bucket.{k}": v for k, v in stats["buckets"].items()}
    tracker.log_metrics(metrics)
    tracker.set_tags({"source_manifest_sha256": stats["source_manifest_sha256"] or "none",
                      "latents.config_hash": output_hash(cfg)})
    for name in ("config.yaml", "stats.json", "rejects.jsonl", MANIFEST):
        tracker.log_artifact(out / name)
    result.mlflow_run_id, result.tracking_uri = tracker.run_id, tracker.tracking_uri


def _record_lineage(tracker, clip_dir: str | Path, result: LatentsResult, cfg: LatentsConfig) -> None:
    """Clip shards in (the curation manifest's sha256), latent shards out (their manifest's)."""
    from pipelines.lineage import Data, latents_digest, record

    inputs = [Data("clip-shards", str(Path(clip_dir).absolute()), result.stats["source_manifest_sha256"])] \
        if result.stats["source_manifest_sha256"] else []
    record(tracker, "latents", output_hash(cfg), inputs,
           [Data("latent-shards", str(result.out_dir), latents_digest(result.out_dir))])


def summary(result: LatentsResult) -> str:
    s = result.stats
    lines = [
        f"latents: {s['clips_in']} clips in, {s['encoded']} encoded in {s['seconds']:.1f}s "
        f"({result.shards_encoded} shards encoded by this run)",
        "skipped: " + (", ".join(f"{r}={n}" for r, n in s["skipped"].items()) or "none"),
        "buckets: " + (", ".join(f"{b}={n}" for b, n in s["buckets"].items()) or "none"),
        f"  shards:   {result.out_dir} (*.tar)",
        f"  manifest: {result.out_dir / MANIFEST}",
        f"  rejects:  {result.out_dir / 'rejects.jsonl'}",
        f"  stats:    {result.out_dir / 'stats.json'}",
    ]
    if result.shards_failed:
        lines.append(f"  FAILED:   {len(result.shards_failed)} unreadable clip shard(s), re-run to retry: "
                     + ", ".join(result.shards_failed))
    if result.mlflow_run_id:
        lines.append(f"  MLflow:   run {result.mlflow_run_id} in {result.tracking_uri}")
    return "\n".join(lines)


def add_parsers(subparsers) -> None:
    latents = subparsers.add_parser("latents", help="encode clip shards into latent shards (VAEs + text encoder)")
    latents.add_argument("clip_dir", metavar="CLIP_SHARDS_DIR",
                         help="clip shards (*.tar): a `tandem curate --out` directory or its shards/")
    latents.add_argument("--out", required=True, help="output directory for latent shards, manifest, stats")
    add_recipe_arguments(latents, "latents", "buckets.fps=12 encoder.video_path=/models/ltx2/vae actors=4",
                         required=False)
    latents.set_defaults(handler=main)


def main(args) -> int:
    """``tandem latents`` (arguments parsed by ``add_parsers``)."""
    try:
        cfg = load_recipe(LatentsConfig, "latents", args.config, args.overrides)
        result = run_latents_job(args.clip_dir, args.out, cfg, address=args.address, run_name=args.run_name)
    except ValueError as exc:  # ConfigError and the bucket config's own checks
        print(f"tandem latents: {exc}", flush=True)
        return 2
    print(summary(result), flush=True)
    return 1 if result.shards_failed else 0
