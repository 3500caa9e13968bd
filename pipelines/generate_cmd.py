"""``tandem generate``: rollouts from a checkpoint, on a Ray Data actor pool.

    tandem generate CHECKPOINT --prompts FILE --out DIR [--group-size K] [key=value ...] [--address ADDR]

CHECKPOINT is a training run's DeepSpeed checkpoint (its storage, ``checkpoints/`` or a
``stepN`` tag; consolidated on load), ``ema.safetensors``, a consolidated safetensors file, or
a registered model ``models:/NAME@ALIAS``. FILE has one prompt per line (``#`` comments and
blank lines skipped; multi-shot time markers like ``[0-2s] ...`` are part of the text), or is
JSONL with ``prompt``, an optional ``id`` and optional ``references`` (``{"image1": "dog.png",
"audio1": "bark.wav"}`` for the prompt's @-tags, paths relative to FILE) per line; other fields
are kept in each json.

Each actor (a GPU each where the cluster has them) loads the checkpoint, the text encoder and
the decoders once (``reward.rollouts.rollout_generator``) and writes whole prompt groups: K samples
per prompt, each ``samples/<id>.mp4`` with audio, ``.latents.safetensors`` and ``.json`` (written
last). Re-running resumes: finished samples are skipped. Another checkpoint or other settings on the
same ``--out`` are refused. One MLflow run per invocation (experiment ``tandem-generate``).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from model.config import run_only
from pipelines.config_loader import ConfigError, load_config, output_hash, save_config, to_dict
from reward.rollouts.prompt_files import read_prompts
from reward.rollouts.rollout_generator import Prompt, RolloutConfig, RolloutGenerator

log = logging.getLogger(__name__)
EXPERIMENT = "tandem-generate"
CLAIM = ".generate_claim.json"


@dataclass
class GenerateConfig:
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    actors: int = run_only(1)  # generator actors (one GPU each where the cluster has GPUs)
    cpus_per_actor: float = run_only(0.5)  # fractional: a 2-CPU machine deadlocks otherwise
    track: bool = run_only(True)  # log an MLflow run


def resolve_source(checkpoint: str, out: Path) -> tuple[str, dict]:
    """(local path, identity for the json) of CHECKPOINT; registry models are downloaded once."""
    from pipelines.registry import is_model_uri, lookup, resolve
    from training.checkpoint_loader import identify

    identity: dict = {"source": checkpoint}
    local = checkpoint
    if is_model_uri(checkpoint):
        mv = lookup(checkpoint)
        local = str(resolve(checkpoint, dst=out / ".checkpoint" / f"{mv.name}-v{mv.version}"))
        identity |= {"model": mv.name, "version": mv.version, "run_id": mv.run_id}
    ref = identify(local)
    return local, identity | {"path": str(ref.path), "kind": ref.kind, "digest": ref.digest, "tag": ref.tag}


class GroupWriter:
    """Ray Data actor: one RolloutGenerator, whole prompt groups per call."""

    def __init__(self, checkpoint: str, cfg: dict, identity: dict, out_dir: str, cpus: float):
        import torch

        from pipelines.config_loader import from_dict

        # as many threads as CPUs reserved: more only spin against the other actors
        torch.set_num_threads(max(1, int(cpus)))
        self.generator = RolloutGenerator(checkpoint, from_dict(RolloutConfig, cfg), identity, out_dir)

    def __call__(self, batch: dict) -> dict:
        rows = [self.generator.write_group(Prompt(pid, text, json.loads(extra), json.loads(refs)))
                for pid, text, extra, refs in zip(batch["prompt_id"], batch["text"], batch["extra"],
                                                  batch["references"], strict=True)]
        return {k: [r[k] for r in rows] for k in ("prompt_id", "written", "seconds")}


def _claim(out: Path, identity: dict, cfg: GenerateConfig) -> None:
    claim = {"checkpoint_digest": identity["digest"], "config_hash": output_hash(cfg.rollout)}
    marker = out / CLAIM
    if marker.exists():
        held = json.loads(marker.read_text())
        if held != claim:
            what = "another checkpoint" if held["checkpoint_digest"] != claim["checkpoint_digest"] else "other settings"
            raise ConfigError(f"{out} holds rollouts of {what} (see its generate.yaml): use another --out")
    marker.write_text(json.dumps(claim))


def _pending(out: Path, prompts: list[Prompt], cfg: RolloutConfig, tag: str) -> list[Prompt]:
    from reward.rollouts.rollout_dir import is_done
    from reward.rollouts.rollout_generator import sample_id

    return [p for p in prompts if not all(is_done(out, sample_id(tag, p.prompt_id, k)) for k in range(cfg.group_size))]


def run_generate(checkpoint: str, prompts_file: str | Path, out_dir: str | Path, cfg: GenerateConfig | None = None,
                 address: str | None = None, run_name: str | None = None) -> dict:
    """Generate every missing sample, in one MLflow run (``run_name``); returns the run's stats
    (also written as stats.json)."""
    from pipelines.ray_local import init_ray
    from pipelines.tracking import describe_run, open_tracker

    cfg = cfg or GenerateConfig()
    if cfg.rollout.group_size < 1 or cfg.rollout.batch_size < 1 or cfg.rollout.steps < 1:
        raise ConfigError("rollout.group_size, rollout.batch_size and rollout.steps must be >= 1")
    if cfg.actors < 1 or cfg.cpus_per_actor <= 0:
        raise ConfigError("actors must be >= 1 and cpus_per_actor > 0")
    prompts = read_prompts(prompts_file)
    out = Path(out_dir).absolute()
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    local, identity = resolve_source(checkpoint, out)
    _claim(out, identity, cfg)
    save_config(cfg, out / "generate.yaml")
    todo = _pending(out, prompts, cfg.rollout, identity["tag"])
    log.info("%d prompts x %d samples from %s: %d prompts to generate", len(prompts), cfg.rollout.group_size,
             identity["path"], len(todo))
    if todo:
        init_ray(address)  # an address nothing answers on is a setting to change: no run for it
    with open_tracker(EXPERIMENT, run_name or describe_run("generate", checkpoint), enabled=cfg.track,
                      start_time=started) as tracker:  # the whole command, from its start
        tracker.log_params(to_dict(cfg))
        written = _generate(local, identity, todo, out, cfg, address) if todo else 0
        seconds = time.time() - started
        stats = {"checkpoint": identity, "prompts": len(prompts), "group_size": cfg.rollout.group_size,
                 "samples": len(list((out / "samples").glob("*.json"))), "written": written,
                 "seconds": round(seconds, 3), "clips_per_s": round(written / seconds, 4) if written else 0.0}
        (out / "stats.json").write_text(json.dumps(stats, indent=1))
        _track(tracker, out, stats)
        _record_lineage(tracker, identity, prompts_file, out, cfg)
    return stats


def _record_lineage(tracker, identity: dict, prompts_file: str | Path, out: Path, cfg: GenerateConfig) -> None:
    """The checkpoint (its digest; the run that made it: its model version's, or that of the
    storage it lies in) and the prompts in, the rollouts out."""
    from pipelines.lineage import Data, file_sha256, record, rollouts_digest
    from pipelines.registry import lineage

    if not getattr(tracker, "run_id", None):  # untracked
        return
    producer = identity.get("run_id") or lineage(identity["path"], tracking_uri=tracker.tracking_uri).get("init.run_id")
    where = f"models:/{identity['model']}/{identity['version']}" if identity.get("model") else identity["path"]
    checkpoint = Data("checkpoint", where, identity["digest"], producer)
    prompts = Data("prompts", str(Path(prompts_file).absolute()), file_sha256(prompts_file)[:16])
    record(tracker, "generate", output_hash(cfg.rollout), [checkpoint, prompts],
           [Data("rollouts", str(out), rollouts_digest(out))])


def _generate(local: str, identity: dict, todo: list[Prompt], out: Path, cfg: GenerateConfig,
              address: str | None) -> int:
    from pipelines.ray_local import init_ray

    init_ray(address)
    import ray
    import ray.data

    gpus = 1 if ray.cluster_resources().get("GPU", 0) else 0
    ds = ray.data.from_items([{"prompt_id": p.prompt_id, "text": p.text, "extra": json.dumps(p.extra),
                              "references": json.dumps(p.references)} for p in todo],
                             override_num_blocks=len(todo))
    ds = ds.map_batches(GroupWriter, fn_constructor_args=(local, to_dict(cfg.rollout), identity, str(out), cfg.cpus_per_actor),
                        batch_size=1, compute=ray.data.ActorPoolStrategy(size=min(cfg.actors, len(todo))),
                        num_gpus=gpus, num_cpus=cfg.cpus_per_actor)
    written = 0
    for done, row in enumerate(ds.iter_rows(), 1):
        written += row["written"]
        log.info("prompt %d/%d %s: %d samples in %.1f s", done, len(todo), row["prompt_id"], row["written"],
                 row["seconds"])
    return written


def _track(tracker, out: Path, stats: dict) -> None:
    tracker.log_metrics({k: stats[k] for k in ("prompts", "samples", "written", "seconds", "clips_per_s")})
    tracker.set_tags({f"checkpoint.{k}": v for k, v in stats["checkpoint"].items()})
    for name in ("generate.yaml", "stats.json"):
        tracker.log_artifact(out / name)


def add_parsers(sub) -> None:
    p = sub.add_parser("generate", help="rollouts from a checkpoint: K audio-video samples per prompt")
    p.add_argument("checkpoint", metavar="CHECKPOINT",
                   help="a run's DeepSpeed checkpoint dir, ema.safetensors, a consolidated safetensors, "
                        "or models:/NAME@ALIAS")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides (e.g. rollout.steps=50 rollout.sequence.duration_s=4 actors=2)")
    p.add_argument("--prompts", required=True, help="one prompt per line, or JSONL with prompt (and id)")
    p.add_argument("--out", required=True, help="rollouts directory (re-running resumes)")
    p.add_argument("--group-size", type=int, help="samples per prompt (rollout.group_size, default 4)")
    p.add_argument("--config", help="YAML config (see pipelines/generate_cmd.py GenerateConfig)")
    p.add_argument("--address", help="Ray cluster address (default: start local Ray)")
    p.add_argument("--run-name", help="MLflow run name (default: the command, checkpoint and overrides)")
    p.set_defaults(handler=main)


def main(args) -> int:
    from reward.rollouts.rollout_dir import RolloutsError
    from training.checkpoint_loader import CheckpointError

    overrides = list(args.overrides) + ([f"rollout.group_size={args.group_size}"] if args.group_size else [])
    try:
        cfg = load_config(GenerateConfig, args.config, overrides)
        stats = run_generate(args.checkpoint, args.prompts, args.out, cfg, address=args.address,
                             run_name=args.run_name)
    except (ConfigError, CheckpointError, RolloutsError, ValueError) as exc:
        print(f"tandem generate: {exc}", flush=True)
        return 2
    out = Path(args.out)
    print(f"generate: {stats['written']} new samples ({stats['samples']} in all, {stats['prompts']} prompts x "
          f"{stats['group_size']}) from {stats['checkpoint']['path']} [{stats['checkpoint']['digest']}] "
          f"in {stats['seconds']:.1f} s ({stats['clips_per_s']:.3f} clips/s)\n"
          f"  samples: {out / 'samples'} (mp4 + json + latents)\n  stats:   {out / 'stats.json'}", flush=True)
    return 0
