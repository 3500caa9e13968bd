"""What alignment reads: reward sources from the recipe, the prompt sets, the starting weights.

Reward sources (recipe section ``rewards``, keyed by a name you choose)::

    rewards:
      brightness: {source: brightness, coefficient: 1.0}                  # optimised metric head
      loudness:   {source: loudness, options: {target_db: -20}, coefficient: 0.5}
      exposure:   {source: brightness, options: {target: 0.5}, optimise: false}   # held out
      level:      {source: loudness, options: {target_db: -20}, optimise: false, hacking_threshold: 3}
      quality:    {source: "models:/tandem-reward@prod", heads: [visual_quality, av_sync]}

``source`` is a metric head of ``reward/scoring/sources.py`` by its name (its dataclass fields are
``options``), or a trained reward model ``models:/tandem-reward@ALIAS``, which ``tandem align``
resolves through the MLflow registry before Ray starts and loads with ``load_reward_model``.
A source's heads are named ``<key>`` when it has one head and ``<key>.<head>`` otherwise;
every head is logged as ``reward.<id>.mean`` / ``.std``, held-out ones are never optimised; a
held-out head's ``hacking_threshold`` is in its own units (dB for loudness, luma for brightness).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from model.config import ConfigError, from_dict
from reward.grpo.grpo_step import Head
from reward.rollouts.prompt_files import read_prompts
from reward.scoring.sources import Clips, RewardSource

MODEL_SCHEME = "models:/"

# Training prompts of the built-in set: short scenes where picture and sound go together.
BUILTIN_PROMPTS = [
    "a red ball bouncing on a wooden floor",
    "waves breaking on a beach at sunset",
    "a dog barking in a snowy park",
    "rain falling on a window at night",
    "a drummer playing a fast rhythm on stage",
    "a kettle whistling on a gas stove",
    "a train passing a level crossing with its bell ringing",
    "a woman laughing in a busy cafe",
    "birds singing in a forest at dawn",
    "a campfire crackling under the stars",
    "a car driving through a tunnel",
    "a glass shattering on a tiled kitchen floor",
]
# Held-out evaluation prompts: never trained on, fixed noise, logged every eval.every steps.
BUILTIN_EVAL_PROMPTS = [
    "a cat purring on a sunny windowsill",
    "fireworks exploding over a city river",
    "a child splashing in a swimming pool",
    "an old clock ticking in a quiet library",
]


@dataclass
class RewardSourceConfig:
    source: str = ""  # a metric head's name (brightness, loudness, ...) or models:/tandem-reward@ALIAS
    heads: list[str] = field(default_factory=list)  # which of the source's heads; [] = all
    coefficient: float = 1.0  # weight of this source's heads in the combined advantage
    optimise: bool = True  # False: held out, tracked to expose reward hacking
    hacking_threshold: float = 0.0  # held out: a fall (in this source's units) that raises hacking_alert;
    #                                 0 = hacking.threshold
    options: dict = field(default_factory=dict)  # metric head fields, e.g. {target_db: -20}
    # True: a clip's score for its own prompt minus its mean score for every training prompt
    # (``contrastive_scores``). What the source gives a clip whatever the prompt (a trained head's
    # clip-only terms, a colour that is good on average) then cancels, and only how much better
    # the clip fits its own prompt than the others is rewarded: a policy that cannot yet tell
    # prompts apart gains nothing by moving every clip one way. For prompt-adherence heads only: a
    # preference shared by every prompt (quality) is cancelled too. Off by default: against the
    # judge panel (benchmarks/align_winrate.py, docs/align.md) it did not make GRPO win.
    contrast: bool = False


def parse_rewards(raw: dict) -> dict[str, RewardSourceConfig]:
    """The recipe's ``rewards`` mapping (dicts from YAML) as configs; checks what it can
    without loading anything."""
    out = {}
    for key, value in (raw or {}).items():
        cfg = value if isinstance(value, RewardSourceConfig) else from_dict(RewardSourceConfig, value,
                                                                            where=f"rewards.{key}.")
        if not cfg.source:
            raise ConfigError(f"rewards.{key}.source is empty: name a metric head ({', '.join(metric_heads())}) "
                              f"or a reward model models:/tandem-reward@ALIAS")
        if not cfg.source.startswith(MODEL_SCHEME) and cfg.source not in metric_heads():
            raise ConfigError(f"rewards.{key}.source {cfg.source!r} is not a metric head ({', '.join(metric_heads())}) "
                              f"nor a models:/ URI")
        out[key] = cfg
    if out and not any(c.optimise for c in out.values()):
        raise ConfigError("rewards: every source is held out (optimise: false); at least one must be optimised")
    return out


def metric_heads() -> dict[str, Callable[..., RewardSource]]:
    """name -> factory of every metric head (``reward.scoring.metric_heads.METRIC_HEADS``)."""
    from reward.scoring.metric_heads import METRIC_HEADS

    return dict(METRIC_HEADS)


def load_reward_model(path: str | Path, device: str | torch.device = "cpu") -> RewardSource:
    """A trained reward model (the files ``models:/tandem-reward@ALIAS`` resolved to) as a
    RewardSource."""
    from reward.scoring.reward_model import load_reward_source

    return load_reward_source(path, device)


def build_sources(rewards: dict[str, RewardSourceConfig], model_paths: dict[str, str],
                  device: str | torch.device = "cpu") -> list[tuple[str, RewardSource, list[Head]]]:
    """(key, source, its heads) per recipe entry; ``model_paths``: key -> local files of a
    resolved ``models:/`` source."""
    out = []
    for key, cfg in rewards.items():
        if cfg.source.startswith(MODEL_SCHEME):
            if key not in model_paths:
                raise ConfigError(f"rewards.{key}: {cfg.source} was not resolved (run through `tandem align`)")
            source = load_reward_model(model_paths[key], device)
        else:
            try:
                source = metric_heads()[cfg.source](**cfg.options)
            except TypeError as exc:
                raise ConfigError(f"rewards.{key}.options: {exc}") from exc
        names = list(cfg.heads or source.heads)
        unknown = sorted(set(names) - set(source.heads))
        if unknown:
            raise ConfigError(f"rewards.{key}.heads {unknown} not in {cfg.source}'s heads {list(source.heads)}")
        heads = [Head(key if len(source.heads) == 1 else f"{key}.{h}", cfg.coefficient, cfg.optimise)
                 for h in names]
        out.append((key, source, list(zip(names, heads, strict=True))))
    return out


def contrastive_scores(source: RewardSource, clips: Clips, prompts: list[str], text_emb: torch.Tensor | None = None,
                       text_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """head -> (B,): each clip's score for its own prompt minus its mean score over ``prompts``
    (the contrast set, e.g. the training prompts; ``text_emb``/``text_mask`` their encodings, for
    sources that read them). A score that does not depend on the prompt gives 0."""
    own = source.score(clips)
    n, k = len(clips), len(prompts)

    def each(x):  # clip i, once per contrast prompt
        return None if x is None else x.repeat_interleave(k, 0)

    def tiled(x):  # the contrast prompts, once per clip
        return None if x is None else x.repeat(n, *([1] * (x.dim() - 1)))

    paired = Clips([q for _ in range(n) for q in prompts], each(clips.video), each(clips.audio), clips.fps,
                   clips.sample_rate, each(clips.video_latents), each(clips.audio_latents), tiled(text_emb),
                   tiled(text_mask), [m for m in clips.meta for _ in range(k)])
    others = source.score(paired)
    return {h: own[h] - others[h].reshape(n, k).to(own[h]).mean(1) for h in own}


# ------------------------------------------------------------------------------- prompts


@torch.no_grad()
def encode_prompts(encoder, prompts: list[str], fps: float, device, dtype=torch.float32, chunk: int = 64):
    """One Conditioning for every prompt (encoded ``chunk`` at a time, padded to the longest),
    on ``device`` with the text features in ``dtype``."""
    from model.conditioning import Conditioning

    parts = [encoder.encode(prompts[i:i + chunk], fps=fps) for i in range(0, len(prompts), chunk)]
    length = max(p.text_emb.shape[1] for p in parts)

    def padded(name, value):  # padding tokens: masked, global in time (-inf, inf), no reference slot
        rows = []
        for part in parts:
            x = getattr(part, name)
            fill = torch.as_tensor(value, dtype=x.dtype, device=x.device)
            rows.append(torch.cat([x, fill.expand(x.shape[0], length - x.shape[1], *x.shape[2:])], 1))
        return torch.cat(rows).to(device)

    return Conditioning(padded("text_emb", 0.0).to(dtype), padded("text_mask", False),
                        padded("text_spans", [-math.inf, math.inf]), padded("text_ref_slots", 0), fps=fps)



def prompt_texts(path: str, builtin: list[str]) -> list[str]:
    """The prompts of the prompt file ``path`` (``reward.rollouts.prompt_files``), or ``builtin`` when
    there is none. Alignment conditions on text alone: a prompt with reference clips is refused."""
    if not path:
        return list(builtin)
    prompts = read_prompts(path)
    if with_references := [p.prompt_id for p in prompts if p.references]:
        raise ConfigError(f"prompt file {path}: alignment takes text prompts only; prompts {with_references} "
                          "have reference clips")
    return [p.text for p in prompts]


def describe_config(cfg) -> str:
    """A preset's name when ``cfg`` equals one, else the config as JSON."""
    from model.presets import preset_name

    name = preset_name(cfg)
    return f"preset {name!r}" if name else json.dumps(dataclasses.asdict(cfg))
