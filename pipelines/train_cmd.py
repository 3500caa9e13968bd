"""``tandem train``: argparse registration and handler.

``add_parsers(subparsers)`` adds the command; its ``handler`` default is the function to
call with the parsed args (returns an exit code).
"""

from __future__ import annotations

import sys
from pathlib import Path

from pipelines.config_loader import add_recipe_arguments, load_recipe


def load_train_recipe(name_or_path: str, overrides: list[str] = ()):
    """A training recipe (``pipelines/recipes/train_*.yaml``, or a YAML path) with ``overrides``."""
    from training.trainer import TrainConfig

    return load_recipe(TrainConfig, "train", name_or_path, overrides)


def add_parsers(subparsers) -> None:
    train = subparsers.add_parser("train", help="train the dual-branch model (DeepSpeed ZeRO on Ray Train)")
    add_recipe_arguments(train, "train", "engine.zero_stage=3")
    train.set_defaults(handler=train_handler)


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
        cfg = load_train_recipe(args.config, args.overrides)
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
