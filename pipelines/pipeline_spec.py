"""``pipeline.yaml``: the stages of one pipeline, each with its recipe and overrides.

    footage: footage/            # raw footage (or s3://bucket/raw/); each sub-folder is a batch (a partition)
    out: runs/pipeline           # every stage's outputs, and the Dagster store (.dagster)
    stages:
      curate:   {overrides: [skip=[transcribe]]}
      latents:  {recipe: debug}
      train:    {recipe: debug_cpu, overrides: [steps=4]}
      generate: {prompts: prompts.txt, overrides: [rollout.steps=2]}
      tasks:    {overrides: [axes=[overall]]}
      rankings: {exports: [exports/]}       # annotators' Label Studio exports, imported when present
      reward:   {recipe: latent_cpu}
      align:    {recipe: debug_cpu, overrides: [steps=2, rewards.learned.source=$reward]}

A stage left out is not part of the graph, nor anything below it. A stage, key or recipe
tandem does not know is a ``ConfigError`` naming it (``tandem pipeline`` exits 2), and so is an
override the stage's config rejects: the whole file is checked before anything runs. Each
stage's resolved config gives its config digest (``pipelines.config_loader.output_hash``): the part
of its data version that is not its inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from curation.storage import is_uri
from model.config import ConfigError

# The asset each stage materialises, in graph order; its upstream is the stage before it
# (reward also reads the rollouts; align the checkpoint and the reward model).
STAGES = ("curate", "latents", "train", "generate", "tasks", "rankings", "reward", "align")
TOP_KEYS = {"footage", "out", "stages"}
STAGE_KEYS = {"recipe", "overrides", "prompts", "exports"}
# align: a reward source written ``$reward`` is the reward model this pipeline trains; until the
# reward asset names its version, the config holds this stand-in (a models:/ URI, as checked).
THIS_REWARD = "$reward"
THIS_REWARD_URI = "models:/tandem-reward@this-pipeline"
RECIPE_KIND = {"latents": "latents", "train": "train", "reward": "reward", "align": "align"}


@dataclass
class StageSpec:
    name: str
    recipe: str | None = None
    overrides: list[str] = field(default_factory=list)
    prompts: str | None = None  # generate: the prompts file
    exports: list[str] = field(default_factory=list)  # rankings: export files or folders of them


@dataclass
class PipelineSpec:
    path: Path
    footage: Path | str  # a folder, or an fsspec URI (a bucket prefix): pipelines/pipeline_batches.py
    out: Path
    stages: dict[str, StageSpec]
    address: str | None = None  # a Ray cluster's, for every stage (default: local Ray)
    submit: str | None = None  # a Ray dashboard's: curate, latents, train, align run there as Ray Jobs

    @property
    def store(self) -> Path:
        """The Dagster instance's folder (DAGSTER_HOME of ``tandem pipeline ui``)."""
        return self.out / ".dagster"

    def config(self, stage: str):
        """The stage's resolved config (recipe, then overrides)."""
        return stage_config(self.stages[stage])


def stage_config(spec: StageSpec):
    from pipelines.config_loader import load_config

    name = spec.name
    if name == "curate":
        from curation.pipeline import CurationConfig

        return load_config(CurationConfig, spec.recipe, spec.overrides)
    if name == "generate":
        from pipelines.generate_cmd import GenerateConfig

        return load_config(GenerateConfig, spec.recipe, spec.overrides)
    if name in ("tasks", "rankings"):
        from reward.annotation.labelstudio_tasks import AnnotationConfig

        cfg = load_config(AnnotationConfig, spec.recipe, spec.overrides)
        cfg.pairs = str(cfg.pairs)  # `pairs=4` parses as a number
        cfg.check()
        return cfg
    from pipelines.config_loader import resolve_recipe

    recipe = resolve_recipe(spec.recipe, RECIPE_KIND[name]) if spec.recipe else None
    if name == "latents":
        from pipelines.latents_cmd import LatentsConfig

        return load_config(LatentsConfig, recipe, spec.overrides)
    if recipe is None:
        raise ConfigError(f"stages.{name}: give a recipe (e.g. {'latent_cpu' if name == 'reward' else 'debug_cpu'})")
    if name == "train":
        from training.trainer import TrainConfig

        return load_config(TrainConfig, recipe, spec.overrides)
    if name == "reward":
        from reward.scoring.train import RewardTrainConfig

        return load_config(RewardTrainConfig, recipe, spec.overrides)
    from reward.grpo.align import AlignConfig

    return load_config(AlignConfig, recipe, [o.replace(f"={THIS_REWARD}", f"={THIS_REWARD_URI}") for o in spec.overrides])


def load_spec(path: str | Path) -> PipelineSpec:
    """Read and check ``path``; a ConfigError names what is wrong and where."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path} does not exist")
    doc = yaml.safe_load(path.read_text()) or {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected a mapping with {', '.join(sorted(TOP_KEYS))}")
    if unknown := sorted(set(doc) - TOP_KEYS):
        raise ConfigError(f"{path}: unknown key {unknown[0]!r} (known: {', '.join(sorted(TOP_KEYS))})")
    if not doc.get("footage") or not doc.get("stages"):
        raise ConfigError(f"{path}: give footage (a folder of raw footage) and stages")
    base = path.parent
    stages: dict[str, StageSpec] = {}
    for name, body in (doc["stages"] or {}).items():
        if name not in STAGES:
            raise ConfigError(f"{path}: unknown stage {name!r} (stages: {', '.join(STAGES)})")
        body = body or {}
        if unknown := sorted(set(body) - STAGE_KEYS):
            raise ConfigError(f"{path}: stages.{name}: unknown key {unknown[0]!r} (known: {', '.join(sorted(STAGE_KEYS))})")
        spec = StageSpec(name, body.get("recipe"), [str(o) for o in body.get("overrides") or []],
                         str(base / body["prompts"]) if body.get("prompts") else None,
                         [str(base / e) for e in body.get("exports") or []])
        try:
            stage_config(spec)
        except (ConfigError, ValueError) as exc:
            raise ConfigError(f"{path}: stages.{name}: {exc}") from None
        stages[name] = spec
    missing = [s for s in STAGES[: STAGES.index(max(stages, key=STAGES.index)) + 1] if s not in stages]
    if missing:
        raise ConfigError(f"{path}: stage {missing[0]!r} is missing: every stage above the last one is needed")
    if "generate" in stages and not stages["generate"].prompts:
        raise ConfigError(f"{path}: stages.generate: give prompts (a prompts file)")
    footage = str(doc["footage"]) if is_uri(str(doc["footage"])) else (base / doc["footage"]).absolute()
    return PipelineSpec(path, footage, (base / doc.get("out", "runs/pipeline")).absolute(), stages)
