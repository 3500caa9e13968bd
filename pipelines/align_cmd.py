"""``tandem align``: DanceGRPO alignment (reward/grpo/align.py) on Ray Train + DeepSpeed, in MLflow.

    tandem align --config debug_cpu                 # any CPU box: fresh debug model, built-in prompts
    tandem align --config 1b_8gpu init=models:/tandem-dit@prod [key=value ...] [--address ADDR]
    tandem submit --address http://HEAD:8265 align -- --config 1b_8gpu

``--config`` takes a recipe name (``pipelines/recipes/align_<name>.yaml``) or a YAML path, then
``key=value`` overrides of ``reward.grpo.align.AlignConfig``. Before Ray starts, a preflight checks
what can be checked and exits 2 with the fix: the recipe's fields, ``grpo.group_size`` >= 2, the
starting checkpoint (it exists, resolves from the registry, and was made with the recipe's
preset), every ``models:/tandem-reward@ALIAS`` source (the alias resolves and a loader
exists), latent channels and text width against the encoder. Registry entries are downloaded
under ``storage`` (which every worker must see). Workers resume from ``storage/checkpoints``
after a failure, continuing the same MLflow run (experiment ``tandem-align``); when the run
finishes, the aligned weights are registered as ``tandem-aligned`` with ``register_alias``.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from model.config import flatten
from pipelines.config_loader import ConfigError, add_recipe_arguments, load_recipe, to_dict
from pipelines.ray_train import check_resume, fit_from_latest, fit_in_run
from pipelines.registry import RegistryError, check_alias, is_model_uri, lineage, register, resolve
from pipelines.tracking import default_tracking_uri, describe_run, run_id_of
from reward.grpo.align import AlignConfig, model_config
from training.resume import checkpoint_dir

log = logging.getLogger(__name__)
ALIGNED_MODEL = "tandem-aligned"
# DualDiTConfig fields the latents set (model.presets.fit_to_latents), not the preset's size
GEOMETRY = ("fps", "text_dim", "video_temporal_stride", "audio_latent_rate", "audio_causal_stride",
            "video.latent_channels", "video.patch", "audio.latent_channels", "audio.patch")


class PreflightError(ValueError):
    """A recipe that cannot run; the message says what to change."""


@dataclass
class Plan:
    """What the preflight resolved: local files for every registry reference."""

    init_path: str = ""
    reward_paths: dict[str, str] = field(default_factory=dict)
    lineage: dict[str, str] = field(default_factory=dict)  # init.* tags: what the run starts from


def load_align_recipe(name_or_path: str, overrides: list[str] = ()) -> AlignConfig:
    return load_recipe(AlignConfig, "align", name_or_path, overrides)


def _check_shapes(cfg: AlignConfig) -> None:
    """The encoders exist and the rollouts' sequence matches what they make."""
    from training.encoders import EncoderConfigError, describe

    try:
        fmt = describe(cfg.encoder, cfg.sequence.fps)
    except EncoderConfigError as exc:
        raise PreflightError(str(exc)) from None
    seq = cfg.sequence
    if (seq.video_temporal_stride, seq.video_spatial_stride) != fmt.video_stride[:2]:
        raise PreflightError(f"sequence strides (temporal {seq.video_temporal_stride}, spatial {seq.video_spatial_stride}) "
                             f"differ from the video encoder {fmt.video_encoder!r}'s {fmt.video_stride[:2]}: set "
                             f"sequence.video_temporal_stride={fmt.video_stride[0]} "
                             f"sequence.video_spatial_stride={fmt.video_stride[1]}")
    if abs(seq.audio_latent_rate - fmt.audio_latent_rate) > 1e-6 or seq.sample_rate != fmt.sample_rate:
        raise PreflightError(f"sequence audio ({seq.sample_rate} Hz, {seq.audio_latent_rate:g} latents/s) differs from "
                             f"the audio encoder {fmt.audio_encoder!r}'s ({fmt.sample_rate} Hz, "
                             f"{fmt.audio_latent_rate:g} latents/s): set sequence.sample_rate={fmt.sample_rate} and "
                             "sequence.mel_hop x sequence.audio_stride to its samples per latent "
                             f"({fmt.audio_stride})")


def _fetch(uri: str, dst: Path, what: str, cfg: AlignConfig) -> Path:
    try:
        return resolve(uri, tracking_uri=default_tracking_uri(cfg.tracking_dir), dst=dst)
    except RegistryError as exc:
        raise PreflightError(f"{what}: {exc}. Register the model first or fix the alias (the MLflow UI's "
                             "Models page lists them; set MLFLOW_TRACKING_URI for a tracking server)") from exc


def preflight(cfg: AlignConfig) -> Plan:
    """Check ``cfg`` before Ray starts, fetch registry references under storage; raises
    PreflightError (or ConfigError) with the fix."""
    from model.presets import get_preset
    from reward.grpo.align_inputs import (
        BUILTIN_PROMPTS,
        build_sources,
        describe_config,
        load_reward_model,
        prompt_texts,
    )
    from training.checkpoint_loader import checkpoint_config

    try:
        get_preset(cfg.preset)
    except ValueError as exc:
        raise PreflightError(str(exc)) from exc
    _check_shapes(cfg)
    check_alias(cfg.register_alias, "register_alias")
    check_resume(cfg)  # a storage holding a run of another config: the keys that differ
    if not cfg.rewards:
        raise PreflightError("the recipe has no rewards: add e.g. rewards.brightness.source=brightness")
    prompt_texts(cfg.prompts_file, BUILTIN_PROMPTS)
    prompt_texts(cfg.eval.prompts_file, BUILTIN_PROMPTS)
    metric = {k: v for k, v in cfg.rewards.items() if not is_model_uri(v.source)}
    build_sources(metric, {})  # metric heads are cheap: their options are checked here
    if not any(not r.optimise for r in cfg.rewards.values()):
        log.warning("no held-out reward source (optimise: false): the reward-hacking monitor is off")

    storage, plan = Path(cfg.storage), Plan()
    for key, source in cfg.rewards.items():
        if is_model_uri(source.source):
            local = _fetch(source.source, storage / "rewards" / key, f"rewards.{key}.source", cfg)
            try:
                load_reward_model(local, "cpu")
            except (OSError, ValueError, KeyError, RuntimeError) as exc:
                raise PreflightError(f"rewards.{key}: {source.source} does not load as a reward model "
                                     f"({exc}); register one with `tandem reward train --alias ...`") from exc
            plan.reward_paths[key] = str(local.absolute())
    if cfg.init:
        init = _fetch(cfg.init, storage / "init", "init", cfg) if is_model_uri(cfg.init) else Path(cfg.init)
        if not init.exists():
            raise PreflightError(f"init {cfg.init} does not exist: give a safetensors checkpoint, a tandem train "
                                 "checkpoints folder, models:/tandem-dit@ALIAS, or init='' for a fresh model")
        try:
            found = checkpoint_config(init)
        except (ConfigError, ValueError) as exc:
            raise PreflightError(f"init {cfg.init}: {exc}") from exc
        if found != model_config(cfg):
            raise PreflightError(_init_mismatch(cfg, found, describe_config(found)))
        plan.init_path = str(init.absolute())
        plan.lineage = lineage(cfg.init, tracking_uri=default_tracking_uri(cfg.tracking_dir))
    return plan


def _init_mismatch(cfg: AlignConfig, found, described: str) -> str:
    """Why the ``init`` checkpoint's model config ``found`` is not the recipe's, and what to set."""
    from model.presets import preset_name

    if preset_name(found) != cfg.preset:  # another size
        return (f"init {cfg.init} was made with {described}, the recipe says preset={cfg.preset}: set preset to "
                f"the checkpoint's, or start from a {cfg.preset} checkpoint")
    have, want = flatten(to_dict(found)), flatten(to_dict(model_config(cfg)))
    diff = [k for k in GEOMETRY if have[k] != want[k]]
    fixes = [f"sequence.fps={found.fps:g}"] if "fps" in diff else []
    if set(diff) - {"fps"}:
        fixes.append("encoder.* to the encoders that made its training latents (its run's recipe.yaml names them "
                     "under sample.decoder)")
    return (f"init {cfg.init} was trained on other latents than the recipe's rollouts ("
            + ", ".join(f"{k}: checkpoint {have[k]} vs recipe {want[k]}" for k in diff) + f"): set {' and '.join(fixes)}")


def _align(cfg: AlignConfig, tracker, rank: int, config: dict) -> dict:
    from reward.grpo.align import Aligner

    aligner = Aligner(cfg, tracker, init_path=config["init_path"], reward_paths=config["reward_paths"])
    history, seconds = fit_from_latest(aligner, tracker, rank, config, lambda: {
        "init": cfg.init or f"fresh {cfg.preset}", "init.resolved": config["init_path"], **config["lineage"],
        "rewards.optimised": ",".join(h.id for h in aligner.heads if h.optimised),
        "rewards.held_out": ",".join(h.id for h in aligner.heads if not h.optimised)})
    return {"step": aligner.step, "reward_mean": (history[-1] if history else {}).get("reward_mean", float("nan")),
            "seconds": seconds}


def progress_line(m: dict) -> str:
    """One line of storage/progress.jsonl for the console."""
    if "reward_mean" not in m:
        line = f"step {m['step']:>4}/{m['steps']}  evaluation"
    else:
        line = (f"step {m['step']:>4}/{m['steps']}  reward_mean {m['reward_mean']:.4g}  ratio "
                f"[{m['ratio_min']:.4f}, {m['ratio_max']:.4f}] clip_frac {m['clip_frac']:.2f}  "
                f"rollout {m['rollout_s']:.1f}s reward {m['reward_s']:.1f}s update {m['update_s']:.1f}s")
    if "eval_reward_mean" in m:
        heads = " ".join(f"{k[12:-5]} {v:.4g}" for k, v in m.items() if k.startswith("eval_reward.") and k.endswith(".mean"))
        line += f"  | eval_reward_mean {m['eval_reward_mean']:.4g} ({heads})"
        line += "  HACKING ALERT" if m.get("hacking_alert") else ""
    return line


def follow_progress(path: Path, stop: threading.Event, out=None) -> None:
    """Print progress lines as rank 0 appends them (workers' own logs stay in Ray's) to
    ``out``, by default the ``sys.stdout`` of when it starts (not of when it was defined)."""
    out = out or sys.stdout
    seen = path.stat().st_size if path.exists() else 0
    while True:
        done = stop.wait(2.0)
        if path.exists() and path.stat().st_size > seen:
            with open(path) as f:
                f.seek(seen)
                chunk = f.read()
            complete = chunk[: chunk.rfind("\n") + 1]
            seen += len(complete.encode())
            for line in complete.splitlines():
                print(progress_line(json.loads(line)), file=out, flush=True)
        if done:
            return


def run_alignment(cfg: AlignConfig, plan: Plan | None = None, *, address: str | None = None,
                  run_name: str | None = None, until: int | None = None):
    """Align ``cfg`` on the current Ray cluster (local by default), printing progress; returns
    Ray's Result. Raises ValueError when a local Ray instance cannot ever hold the workers."""
    started = time.time()
    plan = plan or Plan()
    cfg.storage, cfg.tracking_dir = str(Path(cfg.storage).absolute()), str(Path(cfg.tracking_dir).absolute())
    loop_config = {"init_path": plan.init_path, "reward_paths": plan.reward_paths, "lineage": plan.lineage}
    stop = threading.Event()
    follower = threading.Thread(target=follow_progress, args=(Path(cfg.storage) / "progress.jsonl", stop), daemon=True)
    follower.start()
    try:
        return fit_in_run(_align, loop_config, cfg, address=address, started=started, until=until,
                          run_name=run_name or describe_run("align", cfg.preset))
    finally:
        stop.set()
        follower.join()


def aligned_weights(cfg: AlignConfig) -> Path:
    """``storage/aligned/model.safetensors``: the final checkpoint's EMA when the run kept one,
    else its consolidated weights (``model.checkpoint.load(DualDiT, DualDiTConfig, path)``)."""
    from training.export import export_latest

    return export_latest(cfg.storage, Path(cfg.storage) / "aligned", model_config(cfg))


def register_aligned(cfg: AlignConfig):
    """Register ``aligned_weights`` as a version of tandem-aligned in the run's MLflow store,
    tagged with what the run started from (its ``init.*`` tags, ``pipelines.registry.lineage``);
    a finished run run again points the alias at its version instead of adding one."""
    import mlflow

    run_id = run_id_of(cfg.storage)
    uri = default_tracking_uri(cfg.tracking_dir)
    weights = aligned_weights(cfg)
    started = {k: v for k, v in mlflow.MlflowClient(uri).get_run(run_id).data.tags.items()
               if k.startswith("init")} if run_id else {}
    tags = {"preset": cfg.preset, "step": (checkpoint_dir(cfg.storage) / "latest").read_text().strip(), **started}
    run = f"run {started['init.run_id']}" if started.get("init.run_id") else ""
    origin = started.get("init.model_version") or run or started.get("init") or cfg.init or "a fresh model"
    version = register(weights.parent, ALIGNED_MODEL, alias=cfg.register_alias, run_id=run_id, tracking_uri=uri,
                       tags=tags, once=True, description=f"DanceGRPO-aligned from {origin}")
    _record_lineage(cfg, version, weights, started, uri)
    return version


def _record_lineage(cfg: AlignConfig, version, weights: Path, started: dict[str, str], uri: str) -> None:
    """The init checkpoint (its run: the ``init.run_id`` the preflight found), every reward
    model and the prompts in; the registered aligned model out."""
    from pipelines.config_loader import output_hash
    from pipelines.lineage import Data, file_sha256, model_data, record_run, weights_digest

    inputs = []
    if cfg.init:
        init = Data("checkpoint", cfg.init, weights_digest(started.get("init.resolved") or cfg.init),
                    started.get("init.run_id") or None)
        if is_model_uri(cfg.init) and started.get("init.model_version"):
            init.source = f"models:/{started['init.model_version']}"
        inputs.append(init)
    inputs += [model_data(f"reward-model.{key}", r.source, Path(cfg.storage) / "rewards" / key, tracking_uri=uri)
               for key, r in sorted(cfg.rewards.items()) if is_model_uri(r.source)]
    inputs += [Data(f"prompts.{k}", str(Path(p).absolute()), file_sha256(p)[:16])
               for k, p in (("train", cfg.prompts_file), ("eval", cfg.eval.prompts_file)) if p and Path(p).is_file()]
    record_run(uri, version.run_id, "align", output_hash(cfg), inputs,
               [Data("aligned-model", version.uri, weights_digest(weights))])


def add_parsers(subparsers) -> None:
    align = subparsers.add_parser("align", help="DanceGRPO alignment against reward sources (Ray Train + DeepSpeed)")
    add_recipe_arguments(align, "align", "steps=50 grpo.group_size=8")
    align.set_defaults(handler=align_handler)


def align_handler(args) -> int:
    try:
        cfg = load_align_recipe(args.config, args.overrides)
        plan = preflight(cfg)
    except (ConfigError, PreflightError, ValueError) as exc:
        print(f"tandem align: {exc}", file=sys.stderr)
        return 2
    print(f"tandem align: {cfg.steps} steps of {cfg.preset!r}, storage {cfg.storage}; MLflow experiment "
          f"{cfg.experiment!r} in {default_tracking_uri(cfg.tracking_dir)}", flush=True)
    try:
        result = run_alignment(cfg, plan, address=args.address, run_name=args.run_name)
    except ValueError as exc:  # the local Ray instance cannot hold the recipe's workers
        print(f"tandem align: {exc}", file=sys.stderr)
        return 2
    if result.error:
        print(f"alignment failed: {result.error}", file=sys.stderr)
        return 1
    version = register_aligned(cfg)
    print(f"aligned to {(Path(cfg.storage) / 'checkpoints' / 'latest').read_text().strip()}; "
          f"eval clips in {cfg.storage}/eval\n"
          f"registered {version.uri} (models:/{ALIGNED_MODEL}@{cfg.register_alias}): "
          f"{cfg.storage}/aligned/model.safetensors\n"
          f"MLflow: experiment {cfg.experiment!r} in {default_tracking_uri(cfg.tracking_dir)}")
    return 0
