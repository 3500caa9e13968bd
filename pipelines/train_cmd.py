"""``tandem train`` and ``tandem submit ...``: argparse registration and handlers.

``add_parsers(subparsers)`` adds both commands; each parser's ``handler`` default is the
function to call with the parsed args (returns an exit code).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

RECIPES = Path(__file__).parent / "recipes"
log = logging.getLogger(__name__)


def resolve_recipe(name_or_path: str, kind: str = "train") -> Path:
    """A YAML path, or a recipe name: ``debug_cpu`` -> pipelines/recipes/train_debug_cpu.yaml
    (``kind`` "latents": ``1b_ltx2`` -> latents_1b_ltx2.yaml; the full stem works too)."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    name = name_or_path.removeprefix(f"{kind}_")
    candidate = RECIPES / f"{kind}_{name}.yaml"
    if not candidate.exists():
        known = sorted(p.stem.removeprefix(f"{kind}_") for p in RECIPES.glob(f"{kind}_*.yaml"))
        raise SystemExit(f"unknown recipe {name_or_path!r}; known: {', '.join(known)}")
    return candidate


def load_recipe(name_or_path: str, overrides: list[str] = ()):
    from pipelines.config_loader import load_config
    from training.trainer import TrainConfig

    return load_config(TrainConfig, resolve_recipe(name_or_path), list(overrides))


def add_parsers(subparsers) -> None:
    train = subparsers.add_parser("train", help="train the dual-branch model (DeepSpeed ZeRO on Ray Train)")
    train.add_argument("--config", required=True, help="recipe name (debug_cpu, 1b_8gpu, 14b_64gpu) or YAML path")
    train.add_argument("--address", help="Ray cluster address (default: local Ray)")
    train.add_argument("--run-name", help="MLflow / Ray run name")
    train.add_argument("overrides", nargs="*", help="key=value recipe overrides (engine.zero_stage=3)")
    train.set_defaults(handler=train_handler)

    from pipelines.submit import add_submit_parser

    add_submit_parser(subparsers)


def latest_checkpoint(storage: str | Path) -> str | None:
    from training.resume import checkpoint_dir

    latest = checkpoint_dir(storage) / "latest"
    return latest.read_text().strip() if latest.exists() else None


def train_handler(args) -> int:
    from pipelines.config_loader import ConfigError
    from pipelines.preflight import preflight
    from pipelines.ray_train import TRAINED_MODEL, register_trained, run_training
    from pipelines.tracking import default_tracking_uri

    try:
        cfg = load_recipe(args.config, args.overrides)
        data = preflight(cfg)  # data, latents vs decoder vs preset, resumed storage: before Ray starts
    except (ConfigError, ValueError) as exc:
        print(f"tandem train: {exc}", file=sys.stderr)
        return 2
    if data.damaged:  # data.skip_damaged=true; the run's MLflow tags name them too
        print(f"tandem train: leaving out {len(data.damaged)} damaged shard(s) (data.skip_damaged=true):\n"
              + "\n".join(f"  {why}" for why in data.damaged.values()), file=sys.stderr)
    try:
        result = run_training(cfg, address=args.address, run_name=args.run_name)
    except ValueError as exc:  # the local Ray instance cannot hold the recipe's workers
        print(f"tandem train: {exc}", file=sys.stderr)
        return 2
    if result.error:
        print(f"training failed: {result.error}", file=sys.stderr)
        return 1
    version = register_trained(cfg)
    print(f"trained to {latest_checkpoint(cfg.storage)}; checkpoints in {cfg.storage}/checkpoints\n"
          f"registered {version.uri} (models:/{TRAINED_MODEL}@{cfg.register_alias}): {cfg.storage}/final\n"
          f"recipe: {cfg.storage}/recipe.yaml\n"
          f"MLflow: experiment {cfg.experiment!r} in {default_tracking_uri(cfg.tracking_dir)}")
    return 0


def _restart_on_new_data(latents: Path, storage: Path, cfg=None) -> None:
    """The demo's checkpoints belong to the latents they were trained on and to its recipe
    (``cfg``): when the latents changed (other footage) or the recipe did (tandem changed
    since), it trains afresh instead of resuming on stale data or under a config its run does
    not show (which ``tandem train`` refuses)."""
    import hashlib
    import shutil

    from pipelines.config_loader import ConfigError
    from pipelines.ray_train import check_resume

    digest = hashlib.sha256((latents / "manifest.jsonl").read_bytes()).hexdigest()
    marker = storage / "trained_on.sha256"
    if marker.exists() and marker.read_text().strip() != digest:
        log.info("the latents changed since %s was trained: training it again", storage)
        shutil.rmtree(storage)
    elif cfg is not None:
        try:
            check_resume(cfg, {"data.shards": str(Path(cfg.data.shards).absolute())})
        except ConfigError as exc:
            log.info("training it again: %s", exc)
            shutil.rmtree(storage)
    storage.mkdir(parents=True, exist_ok=True)
    marker.write_text(digest)


def run_training_demo(clip_shards_dir: str | Path, out_dir: str | Path) -> dict:
    """README main job, after curation: latents from the clip shards, then a few debug_cpu
    steps ending with one generated sample. Returns {"latents", "checkpoints", "checkpoint"
    (latest tag), "samples" (mp4 paths), "error", "mlflow" (tracking URI), "experiment",
    "registered" (the tandem-dit version's URI)}."""
    from pipelines.latents_cmd import run_latents_job
    from pipelines.ray_train import register_trained, run_training
    from pipelines.tracking import default_tracking_uri
    from training.resume import checkpoint_dir

    out_dir = Path(out_dir)
    latents = run_latents_job(clip_shards_dir, out_dir / "latents", run_name="demo latents").out_dir
    # Sample footage gives clips of many shapes (one per latent bucket): batches of one.
    cfg = load_recipe("debug_cpu", [f"data.shards={latents}", f"storage={out_dir / 'train'}", "steps=6",
                                    "sample.every=6", "data.batch_size=1", "engine.micro_batch_per_rank=1"])
    _restart_on_new_data(latents, out_dir / "train", cfg)
    result = run_training(cfg, run_name="demo train")
    registered = None if result.error else register_trained(cfg).uri  # and models:/tandem-dit@candidate
    return {"latents": str(latents), "checkpoints": str(checkpoint_dir(cfg.storage)),
            "samples": sorted(str(p) for p in (Path(cfg.storage) / "samples").glob("*.mp4")),
            "checkpoint": latest_checkpoint(cfg.storage), "error": str(result.error) if result.error else None,
            "mlflow": default_tracking_uri(cfg.tracking_dir), "experiment": cfg.experiment, "registered": registered}
