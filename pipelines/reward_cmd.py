"""``tandem reward train`` and ``tandem reward score``: the reward model on Ray Train, in MLflow.

    tandem reward train --rankings RANKINGS_DIR --rollouts ROLLOUTS_DIR [...] --config latent_cpu \\
        [--heldout-rankings DIR] [--alias candidate] [--address ADDR] [key=value ...]
    tandem reward score MODEL CLIP... [--json]

``train`` checks the recipe, rankings and rollouts (a problem exits 2 before Ray starts), runs
``reward.scoring.train.train_reward`` on Ray Train workers (DeepSpeed inside them for
``engine=deepspeed``), logs the recipe, data counts, per-step losses and every head's held-out
accuracy (without ties, with ties, tie threshold) to the MLflow experiment ``tandem-reward``,
and registers the saved model as a new version of ``tandem-reward`` with ``--alias``.

``score``: MODEL is ``models:/tandem-reward@ALIAS`` (or ``/VERSION``), a saved model directory,
or ``metric:NAME[,NAME]`` (metric heads, ``reward.scoring.metric_heads``); CLIP is a rollouts
directory, a sample json / mp4, or a folder of mp4s. The same in Python:
``score_clips(MODEL, [CLIP...])``; ``open_reward_source(MODEL)`` gives the ``RewardSource``
alignment combines.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

from pipelines.config_loader import (
    ConfigError,
    add_recipe_arguments,
    load_recipe,
    save_config,
    to_dict,
)

log = logging.getLogger(__name__)
REGISTRY_NAME = "tandem-reward"
METRIC_PREFIX = "metric:"


def load_reward_recipe(name_or_path: str, overrides: list[str] = ()):
    from reward.scoring.train import RewardTrainConfig

    return load_recipe(RewardTrainConfig, "reward", name_or_path, overrides)


def add_parsers(subparsers) -> None:
    reward = subparsers.add_parser("reward", help="train the reward model on rankings; score clips with it")
    sub = reward.add_subparsers(dest="reward_command", metavar="SUBCOMMAND")
    train = sub.add_parser("train", help="train a reward model (Ray Train; MLflow; registry name tandem-reward)")
    train.add_argument("--rankings", required=True, help="rankings directory (rankings.parquet)")
    train.add_argument("--rollouts", required=True, nargs="+", help="rollouts directories the rankings compare")
    train.add_argument("--heldout-rankings", help="rankings to measure held-out accuracy on (default: a hashed "
                                                  "fraction of the rollout groups, holdout_fraction)")
    train.add_argument("--alias", help="registry alias to point at the new version (e.g. candidate, prod)")
    add_recipe_arguments(train, "reward", "steps=200 loss.ties=drop")
    train.set_defaults(handler=train_handler)
    score = sub.add_parser("score", help="print per-head scores of clips")
    score.add_argument("model", help="models:/tandem-reward@ALIAS, a saved model directory, or metric:NAME[,NAME]")
    score.add_argument("clips", nargs="+", metavar="CLIP", help="rollouts directories, sample json/mp4 files, mp4 folders")
    score.add_argument("--json", action="store_true", help="one JSON object per clip instead of a table")
    score.add_argument("--batch-size", type=int, default=16)
    score.set_defaults(handler=score_handler)
    sync = sub.add_parser("sync-pretrain", help="pretrain the latent SyncNet an av_sync head reads, on in-sync footage")
    sync.add_argument("--footage", required=True, nargs="+", help="in-sync mp4s with sound, or folders of them")
    sync.add_argument("--out", required=True, help="directory for sync_net.json + sync_net.safetensors")
    sync.add_argument("overrides", nargs="*", help="key=value overrides of reward.scoring.sync_pretrain.SyncPretrainConfig")
    sync.set_defaults(handler=sync_pretrain_handler)
    text = sub.add_parser("text-pretrain", help="pretrain the text-match net a prompt_alignment head reads, on "
                                               "captioned latent shards")
    text.add_argument("--latents", required=True, nargs="+", help="latent shard directories (the curated, captioned clips)")
    text.add_argument("--out", required=True, help="directory for text_net.json + text_net.safetensors")
    text.add_argument("overrides", nargs="*", help="key=value overrides of reward.scoring.text_pretrain.TextPretrainConfig")
    text.set_defaults(handler=text_pretrain_handler)
    reward.set_defaults(handler=lambda args: (reward.print_help(), 2)[1])


# ---------------------------------------------------------------------------------- train


def check_inputs(cfg, rankings: str, rollouts: list[str], heldout: str | None) -> dict:
    """Everything that can be wrong before Ray starts; returns the data counts."""
    from reward.annotation.rankings import read_rankings
    from reward.scoring.clip_store import find_clips
    from reward.scoring.pairs import prepare_pairs
    from reward.scoring.train_checkpoints import check_resumable
    from training.resume import checkpoint_dir

    if cfg.model.backbone == "latent":  # a missing net's error names the command that makes one
        from reward.scoring.sync_pretrain import load_sync_net
        from reward.scoring.text_pretrain import load_text_net

        if cfg.model.latent.sync_net:
            load_sync_net(cfg.model.latent.sync_net)
        if cfg.model.latent.text_net:
            load_text_net(cfg.model.latent.text_net)
    if cfg.model.backbone == "omni" and not (Path(cfg.model.omni.model_path) / "config.json").is_file():
        raise ConfigError(f"model.omni.model_path={cfg.model.omni.model_path!r} is not a local model directory "
                          "(config.json, weights, tokenizer, preprocessor_config.json)")
    check_resumable(cfg, checkpoint_dir(cfg.storage))  # another config's checkpoints: a ConfigError naming the keys
    clips = find_clips(rollouts)
    pairs = prepare_pairs(read_rankings(rankings), [c.id for c in clips], [str(c.meta.get("group_id", c.id)) for c in clips],
                          tuple(cfg.model.heads), heldout_rows=read_rankings(heldout) if heldout else None,
                          holdout_fraction=cfg.holdout_fraction, seed=cfg.seed)
    if len(pairs.train) == 0 or len(pairs.heldout) == 0:
        raise ConfigError(f"{len(pairs.train)} training and {len(pairs.heldout)} held-out judgements usable of "
                          f"{pairs.rows_in} (not used: {dict(pairs.dropped) or 'none'}); check that --rollouts "
                          f"holds the ranked samples, that model.heads ({', '.join(cfg.model.heads)}) name the "
                          "rankings' axes, and holdout_fraction / --heldout-rankings")
    if cfg.clips_per_step < 2:  # every rank draws its step's clips from all judgements: 2 make one
        raise ConfigError(f"clips_per_step={cfg.clips_per_step} gives each of workers.num_workers="
                          f"{cfg.workers.num_workers} ranks no judgement a step (one compares 2 clips): set "
                          f"clips_per_step to at least 2 (the {len(clips)} clips hold {len(pairs.train)} training "
                          "judgements)")
    return {"clips": len(clips), "train": len(pairs.train), "heldout": len(pairs.heldout), **pairs.dropped}


def _train(cfg, tracker, rank: int, config: dict) -> dict:
    from reward.scoring.train import train_reward

    result = train_reward(cfg, config["rankings"], config["rollouts"], heldout_rankings=config["heldout"],
                          tracker=tracker)
    return {k: v for k, v in result.metrics.items() if k.startswith("heldout/")}


def run_reward_training(cfg, rankings: str, rollouts: list[str], *, heldout: str | None = None,
                        address: str | None = None, run_name: str | None = None, alias: str | None = None) -> dict:
    """Train on Ray Train, then register the model. Returns {"metrics", "model_dir", "model_uri",
    "version", "run_id", "tracking_uri"}; raises RuntimeError when training failed."""
    from pipelines.ray_train import fit_on_ray, ray_for
    from pipelines.registry import register
    from pipelines.tracking import describe_run, open_tracker
    from reward.scoring.reward_model import read_meta

    started = time.time()
    storage = Path(cfg.storage).absolute()
    cfg.storage, cfg.tracking_dir = str(storage), str(Path(cfg.tracking_dir).absolute())
    rollouts = [str(Path(r).absolute()) for r in rollouts]
    ray_for(cfg, address)  # a Ray to reach, or too small for the workers: a setting, no run for it
    name = run_name or describe_run("reward train", cfg.model.backbone)
    tracker = open_tracker(cfg.experiment, name, store_dir=cfg.tracking_dir, start_time=started)
    status = "FAILED"
    try:
        tracker.log_params(to_dict(cfg))
        tracker.log_artifact(save_config(cfg, storage / "recipe.yaml"))
        tracker.set_tags({"rankings": str(Path(rankings).absolute()), "rollouts": ", ".join(rollouts),
                          "backbone": cfg.model.backbone, "heads": ",".join(cfg.model.heads)})
        # A worker that dies is restarted (up to workers.max_failures times) and every rank
        # resumes from the run's last checkpoint under storage (reward.scoring.train_checkpoints).
        result = fit_on_ray(_train, {"run_id": tracker.run_id,
                                          "tracking_uri": tracker.tracking_uri,
                                          "rankings": str(Path(rankings).absolute()), "rollouts": rollouts,
                                          "heldout": str(Path(heldout).absolute()) if heldout else None},
                            cfg, name=name)
        if result.error:
            raise RuntimeError(f"reward training failed: {result.error}")
        model_dir = storage / "model"
        meta = read_meta(model_dir)
        if meta.get("run_id") != tracker.run_id:
            raise RuntimeError(f"{model_dir} was not written by this run (run {meta.get('run_id')}, expected "
                               f"{tracker.run_id})")
        metrics = {k: v for k, v in meta["metrics"].items() if k.startswith("heldout/")}
        (storage / "metrics.json").write_text(json.dumps(metrics, indent=1))
        tracker.log_artifact(storage / "metrics.json")
        tags = {"backbone": cfg.model.backbone, "heads": ",".join(cfg.model.heads),
                **{k: f"{v:.4f}" for k, v in metrics.items() if "accuracy" in k}}
        version = register(model_dir, REGISTRY_NAME, alias=alias, run_id=tracker.run_id,
                           tracking_uri=tracker.tracking_uri, tags=tags)
        tracker.set_tags({"registered": f"{REGISTRY_NAME}/{version.version}"})
        _record_lineage(tracker, cfg, rankings, heldout, rollouts, version, model_dir)
        status = "FINISHED"
        uri = f"models:/{REGISTRY_NAME}@{alias}" if alias else version.uri
        return {"metrics": metrics, "model_dir": str(model_dir), "model_uri": uri, "version": version.version,
                "run_id": tracker.run_id, "tracking_uri": tracker.tracking_uri}
    finally:
        tracker.close(status)


def _record_lineage(tracker, cfg, rankings: str, heldout: str | None, rollouts: list[str], version,
                    model_dir: Path) -> None:
    """Rankings (and held-out rankings) and rollouts in, the registered reward model out."""
    from pipelines.config_loader import output_hash
    from pipelines.lineage import Data, file_sha256, record, rollouts_digest, weights_digest
    from reward.annotation.rankings import FILE

    def ranked(name: str, where: str) -> Data:
        path = Path(where).absolute()
        return Data(name, str(path), file_sha256(path / FILE if path.is_dir() else path)[:16])

    inputs = [ranked("rankings", rankings), *([ranked("heldout-rankings", heldout)] if heldout else [])]
    inputs += [Data("rollouts", r, rollouts_digest(r)) for r in rollouts]
    record(tracker, "reward train", output_hash(cfg), inputs,
           [Data("reward-model", version.uri, weights_digest(model_dir))])


def _split_overrides(paths: list[str], overrides: list[str]) -> tuple[list[str], list[str]]:
    """``--rollouts A B steps=10``: an nargs="+" option also takes the overrides that follow
    it. Returns (the paths, every override)."""
    taken = [p for p in paths if "=" in p and not Path(p).exists()]
    return [p for p in paths if p not in taken], [*taken, *overrides]


def train_handler(args) -> int:
    from reward.annotation.rankings import RankingsError
    from reward.rollouts.rollout_dir import RolloutsError
    from reward.scoring.clip_store import ClipsError

    args.rollouts, args.overrides = _split_overrides(args.rollouts, args.overrides)
    try:
        cfg = load_reward_recipe(args.config, args.overrides)
        counts = check_inputs(cfg, args.rankings, args.rollouts, args.heldout_rankings)
    except (ConfigError, ValueError, RankingsError, RolloutsError, ClipsError, FileNotFoundError, SystemExit) as exc:
        print(f"tandem reward train: {exc}", file=sys.stderr)
        return 2
    print(f"tandem reward train: {counts['train']} training and {counts['heldout']} held-out judgements over "
          f"{counts['clips']} clips; heads {', '.join(cfg.model.heads)}; backbone {cfg.model.backbone}", file=sys.stderr)
    try:
        out = run_reward_training(cfg, args.rankings, args.rollouts, heldout=args.heldout_rankings,
                                  address=args.address, run_name=args.run_name, alias=args.alias)
    except ValueError as exc:  # the local Ray instance cannot hold the recipe's workers
        print(f"tandem reward train: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        print(f"tandem reward train: {exc}", file=sys.stderr)
        return 1
    print(_heldout_table(out["metrics"], cfg.model.heads))
    print(f"model: {out['model_dir']}\nregistered: {out['model_uri']} (version {out['version']})\n"
          f"MLflow: run {out['run_id']} in experiment {cfg.experiment!r} at {out['tracking_uri']}")
    return 0


def _heldout_table(metrics: dict, heads) -> str:
    lines = [f"{'head':<18}{'acc w/o ties':>14}{'acc w/ ties':>13}{'tie eps':>10}{'pairs':>8}"]
    for h in heads:
        get = lambda k, h=h: metrics.get(f"heldout/{h}/{k}", float("nan"))  # noqa: E731
        lines.append(f"{h:<18}{get('accuracy_without_ties'):>14.3f}{get('accuracy_with_ties'):>13.3f}"
                     f"{get('tie_epsilon'):>10.3f}{get('judgements'):>8.0f}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- score


def open_reward_source(spec: str, *, tracking_uri: str | None = None, device: str = "cpu"):
    """The reward source(s) ``spec`` names: ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``
    (resolved through the registry), a saved model directory, or ``metric:NAME[,NAME]``.
    Returns a list of ``reward.scoring.sources.RewardSource``."""
    from pipelines.registry import is_model_uri, resolve
    from reward.scoring.metric_heads import metric_source
    from reward.scoring.reward_model import load_reward_source

    if spec.startswith(METRIC_PREFIX):
        return [metric_source(n.strip()) for n in spec[len(METRIC_PREFIX):].split(",") if n.strip()]
    path = resolve(spec, tracking_uri=tracking_uri) if is_model_uri(spec) else Path(spec)
    return [load_reward_source(path, device)]


def score_clips(model: str, clips: list[str], *, tracking_uri: str | None = None, batch_size: int = 16,
                device: str = "cpu") -> list[dict]:
    """Per clip: {"clip": sample id, "path": ..., head: score, ...} for every head of ``model``."""
    from reward.scoring.clip_store import find_clips, score_clip_files

    files = find_clips(clips)
    rows = [{"clip": f.id, "path": str(f.mp4 or f.latents)} for f in files]
    for source in open_reward_source(model, tracking_uri=tracking_uri, device=device):
        for row, scores in zip(rows, score_clip_files(source, files, batch_size), strict=True):
            row.update(scores)
    return rows


def score_handler(args) -> int:
    from pipelines.registry import RegistryError
    from reward.scoring.clip_store import ClipsError

    try:
        rows = score_clips(args.model, args.clips, batch_size=args.batch_size)
    except (RegistryError, ClipsError, FileNotFoundError, ValueError) as exc:
        print(f"tandem reward score: {exc}", file=sys.stderr)
        return 2
    heads = [k for k in rows[0] if k not in ("clip", "path")] if rows else []
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    width = max([len(r["clip"]) for r in rows] + [4])
    print(f"{'clip':<{width}}" + "".join(f"{h:>16}" for h in heads))
    for r in rows:
        print(f"{r['clip']:<{width}}" + "".join(f"{r[h]:>16.4f}" for h in heads))
    return 0


# ---------------------------------------------------------------------------------- sync-pretrain


def sync_pretrain_handler(args) -> int:
    from reward.scoring.sync_pretrain import SyncPretrainConfig, pretrain_sync

    return _pretrain("sync-pretrain", SyncPretrainConfig, pretrain_sync, args.footage, args, "sync_net")


def text_pretrain_handler(args) -> int:
    from reward.scoring.text_pretrain import TextPretrainConfig, pretrain_text

    return _pretrain("text-pretrain", TextPretrainConfig, pretrain_text, args.latents, args, "text_net")


def _pretrain(command: str, config_class, pretrain, inputs: list[str], args, field_name: str) -> int:
    """Run a frozen net's pretraining: exit 2 with the reason on bad config or input."""
    from pipelines.config_loader import load_config

    inputs, overrides = _split_overrides(inputs, args.overrides)
    try:
        cfg = load_config(config_class, None, overrides)
        metrics = pretrain(cfg, inputs, args.out)
    except (ConfigError, ValueError, FileNotFoundError) as exc:
        print(f"tandem reward {command}: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(metrics, indent=1))
    print(f"{field_name.replace('_', ' ')}: {args.out} (use it with model.latent.{field_name}={args.out})")
    return 0
