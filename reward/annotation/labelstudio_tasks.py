"""Annotation tasks for Label Studio: the labeling config (XML) and the tasks of rollouts.

Two modes (``AnnotationConfig.mode``):

- ``pairwise``: two clips of the same prompt side by side, both playable with sound; per axis
  the annotator answers "A better" / "B better" / "Tie" (a ``Choices`` tag per axis). One axis
  may instead use Label Studio's ``Pairwise`` tag (``pairwise_tag_axis``: click the better clip,
  no tie).
- ``rank``: all clips of a prompt in a ``List``, ordered with a ``Ranker`` per axis. Without
  ``rank_tiers`` that is a total order; with tiers (e.g. ``[great, good, poor]``) the annotator
  drops clips into ordered buckets and clips in one bucket are tied.

Clips are grouped by prompt (``prompt_id`` of the rollout json, else the prompt text), across
checkpoints, so pairs compare what several checkpoints made of one prompt. Every task carries,
under ``data.tandem``, its id, its items and the config's digest, which is how
``reward.annotation.labelstudio_exports`` checks an export before importing it.
"""

from __future__ import annotations

import hashlib
import html
import json
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from urllib.parse import quote

from model.config import ConfigError, run_only

AXIS_TITLES = {"visual_quality": "Visual quality", "motion": "Motion", "audio_quality": "Audio quality",
               "av_sync": "Audio-video sync", "prompt_alignment": "Prompt alignment", "overall": "Overall"}
PAIRWISE_AXES = ["visual_quality", "motion", "audio_quality", "av_sync", "prompt_alignment"]
CHOICES = {"A better": "a", "B better": "b", "Tie": "tie"}  # Choice value -> rankings outcome
PAIRWISE_SELECTED = {"left": "a", "right": "b"}  # Pairwise tag value -> outcome
MODES = ("pairwise", "rank")
LOCAL_FILES = "/data/local-files/?d="  # Label Studio's local-files route
# The Pairwise tag selects by a click on the clip's panel; a click on the player itself also
# plays or pauses it, so each panel has a caption to click, and the choice is shaded, not a hairline.
PAIRWISE_TAG_INSTRUCTION = "click the better clip's caption (Choose A / Choose B); click it again to undo"
PAIRWISE_SELECTION_STYLE = "background-color: #d6e4ff; outline: 4px solid #2f54eb; outline-offset: 2px"


@dataclass
class AnnotationConfig:
    mode: str = "pairwise"  # pairwise | rank
    axes: list[str] = field(default_factory=list)  # [] = the five pairwise axes, or [overall] to rank
    pairwise_tag_axis: str = ""  # pairwise mode: this axis uses the Pairwise tag (no tie)
    rank_tiers: list[str] = field(default_factory=list)  # rank mode: ordered buckets, best first; same bucket = tie
    pairs: str = "all"  # pairwise mode: "all" pairs of a prompt's clips, or N per prompt, every clip shown
    seed: int = 0  # pair selection and left/right order
    media_root: str = run_only("")  # folder media URLs are relative to ("" = above the rollouts' common folder)
    media_url: str = run_only("")  # URL prefix of media_root ("" = Label Studio's local-files route)

    def resolved_axes(self) -> list[str]:
        return list(self.axes) or (list(PAIRWISE_AXES) if self.mode == "pairwise" else ["overall"])

    def check(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"mode={self.mode!r}: use one of {', '.join(MODES)}")
        axes = self.resolved_axes()
        bad = [a for a in axes if not a.isidentifier()]
        if bad or len(set(axes)) != len(axes):
            raise ConfigError(f"axes {axes}: names must be distinct identifiers (e.g. visual_quality)")
        if self.pairwise_tag_axis and (self.mode != "pairwise" or self.pairwise_tag_axis not in axes):
            raise ConfigError(f"pairwise_tag_axis={self.pairwise_tag_axis!r} must be one of the pairwise axes {axes}")
        if self.rank_tiers and (self.mode != "rank" or len(set(self.rank_tiers)) < 2
                                or not all(t.isidentifier() for t in self.rank_tiers)):
            raise ConfigError(f"rank_tiers={self.rank_tiers}: rank mode only, two or more distinct identifiers")
        if self.pairs != "all" and not (str(self.pairs).isdigit() and int(self.pairs) > 0):
            raise ConfigError(f"pairs={self.pairs!r}: 'all' or a positive number per prompt")

    def schema(self) -> dict:
        """What the labeling config and an export's results depend on."""
        return {"mode": self.mode, "axes": self.resolved_axes(), "pairwise_tag_axis": self.pairwise_tag_axis,
                "rank_tiers": list(self.rank_tiers)}

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.schema(), sort_keys=True).encode()).hexdigest()[:12]


def _title(axis: str) -> str:
    return AXIS_TITLES.get(axis, axis.replace("_", " ").capitalize())


def label_config(cfg: AnnotationConfig) -> str:
    """The Label Studio labeling config (XML) of ``cfg``."""
    cfg.check()
    axes = cfg.resolved_axes()
    out = ["<View>", '  <Header value="$prompt"/>']
    if cfg.mode == "pairwise":
        out += ['  <View style="display: grid; grid-template-columns: 1fr 1fr; column-gap: 1em">',
                '    <View><Header value="A" size="4"/><HyperText name="clip_a" value="$video_a" inline="true"/></View>',
                '    <View><Header value="B" size="4"/><HyperText name="clip_b" value="$video_b" inline="true"/></View>',
                "  </View>"]
        for axis in axes:
            title = html.escape(_title(axis))
            if axis == cfg.pairwise_tag_axis:
                # the Pairwise tag cannot be required (Label Studio has no such option for it):
                # an unanswered axis is counted by the import
                # (reward/annotation/labelstudio_exports.py)
                out.append(f'  <Header value="{title}: {PAIRWISE_TAG_INSTRUCTION}" size="5"/>')
                out.append(f'  <Pairwise name="{axis}" toName="clip_a,clip_b" selectionStyle="{PAIRWISE_SELECTION_STYLE}"/>')
                continue
            out.append(f'  <Header value="{title}" size="5"/>')
            out.append(f'  <Choices name="{axis}" toName="clip_a" choice="single-radio" showInline="true" required="true" '
                       f'requiredMessage="{title}: choose A better, B better or Tie before submitting">')
            out += [f'    <Choice value="{value}"/>' for value in CHOICES]
            out.append("  </Choices>")
    else:
        for axis in axes:
            how = ("drag each clip into a tier (the first is best; clips in one tier are tied)" if cfg.rank_tiers
                   else "drag the clips into order, best first (an order left as shown counts as no answer)")
            out.append(f'  <Header value="{html.escape(_title(axis))}: {how}" size="5"/>')
            out.append(f'  <List name="{axis}_clips" value="$items" title="Clips"/>')
            tiers = "".join(f'<Bucket name="{t}" title="{html.escape(t)}"/>' for t in cfg.rank_tiers)
            out.append(f'  <Ranker name="{axis}" toName="{axis}_clips">{tiers}</Ranker>' if tiers
                       else f'  <Ranker name="{axis}" toName="{axis}_clips"/>')
    out.append("</View>")
    return "\n".join(out) + "\n"


def select_pairs(clips: list[str], budget: str | int, rng: random.Random) -> list[tuple[str, str]]:
    """All pairs of ``clips``, or ``budget`` of them chosen so every clip appears and
    appearances stay as even as possible; left/right order is shuffled against position bias."""
    every = list(combinations(clips, 2))
    if budget == "all" or int(budget) >= len(every):
        chosen = every
    else:
        n = int(budget)
        if 2 * n < len(clips):
            raise ConfigError(f"pairs={n} cannot show all {len(clips)} clips of a prompt: use at least "
                              f"{(len(clips) + 1) // 2}, or 'all'")
        rng.shuffle(every)
        seen, chosen = Counter(), []
        for _ in range(n):  # greedy: the pair whose clips have appeared least
            best = min(every, key=lambda p: (min(seen[p[0]], seen[p[1]]), seen[p[0]] + seen[p[1]]))
            every.remove(best)
            chosen.append(best)
            seen.update(best)
    return [(b, a) if rng.random() < 0.5 else (a, b) for a, b in chosen]


def media_url(path: Path, cfg: AnnotationConfig, root: Path) -> str:
    try:
        relative = path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        raise ConfigError(f"clip {path} is not under media_root={root}: set media_root to a folder "
                          "holding every rollouts directory") from None
    if cfg.media_url:
        return cfg.media_url.rstrip("/") + "/" + quote(relative)
    return LOCAL_FILES + quote(relative)


def video_html(url: str, caption: str = "") -> str:
    # Native controls: play, seek and the volume/mute control (the audio track is the point).
    player = f'<video src="{html.escape(url)}" controls preload="metadata" style="width: 100%; max-height: 60vh"></video>'
    if not caption:
        return player
    return (player + '<div class="tandem-choose" style="padding: 0.6em; text-align: center; font-weight: bold; '
            f'cursor: pointer; border: 1px dashed #8c8c8c">{html.escape(caption)}</div>')


def prompt_key(meta: dict) -> str:
    return str(meta.get("prompt_id") or hashlib.sha256(meta["prompt"].encode()).hexdigest()[:12])


def common_root(rollouts) -> Path:
    """The deepest folder holding every clip."""
    parents = [r.mp4.resolve().parent for r in rollouts]
    root = parents[0]
    while not all(p == root or root in p.parents for p in parents):
        root = root.parent
    return root


def default_media_root(rollouts) -> Path:
    """The folder above every clip's common folder: Label Studio serves local files from a
    document root and wants each storage strictly below it."""
    return common_root(rollouts).parent


def make_tasks(rollouts, cfg: AnnotationConfig) -> list[dict]:
    """Label Studio tasks (``{"data": ...}``) for ``rollouts``
    (``reward.rollouts.rollout_dir.Rollout``)."""
    cfg.check()
    if not rollouts:
        raise ConfigError("no rollouts to annotate")
    root = Path(cfg.media_root) if cfg.media_root else default_media_root(rollouts)
    by_prompt: dict[str, list] = defaultdict(list)
    for r in rollouts:
        by_prompt[prompt_key(r.meta)].append(r)
    rng = random.Random(cfg.seed)
    digest, tasks, lonely = cfg.digest(), [], []
    caption_a, caption_b = ("Choose A", "Choose B") if cfg.pairwise_tag_axis else ("", "")
    for key in sorted(by_prompt):
        group = sorted(by_prompt[key], key=lambda r: r.sample_id)
        if len(group) < 2:
            lonely.append(key)
            continue
        meta = {"config": digest, "mode": cfg.mode, "prompt_id": key, "schema": cfg.schema()}
        if cfg.mode == "pairwise":
            clips = {r.sample_id: r for r in group}
            for a, b in select_pairs(list(clips), cfg.pairs, rng):
                tasks.append({"data": {
                    "prompt": group[0].prompt,
                    "video_a": video_html(media_url(clips[a].mp4, cfg, root), caption_a),
                    "video_b": video_html(media_url(clips[b].mp4, cfg, root), caption_b),
                    "tandem": dict(meta, task=f"{a}~{b}", items=[a, b])}})
        else:
            shuffled = group[:]
            rng.shuffle(shuffled)  # the list's start order must not hint at a checkpoint
            items = [{"id": r.sample_id, "title": f"Clip {i + 1}", "body": "",
                      "html": video_html(media_url(r.mp4, cfg, root))} for i, r in enumerate(shuffled)]
            tasks.append({"data": {"prompt": group[0].prompt, "items": items,
                                   "tandem": dict(meta, task=f"rank~{key}", items=[r.sample_id for r in shuffled])}})
    if not tasks:
        raise ConfigError(f"no prompt has two or more clips ({len(lonely)} prompts with one): generate "
                          "with --group-size 2 or more, or annotate several checkpoints' rollouts together")
    return tasks


TASKS_FILE, CONFIG_FILE, XML_FILE = "tasks.json", "annotation.json", "label_config.xml"


def write_tasks(out_dir: str | Path, cfg: AnnotationConfig, tasks: list[dict]) -> dict[str, Path]:
    """``label_config.xml``, ``tasks.json`` and ``annotation.json`` (the config) under ``out_dir``."""
    from model.config import to_dict

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"xml": out / XML_FILE, "tasks": out / TASKS_FILE, "config": out / CONFIG_FILE}
    paths["xml"].write_text(label_config(cfg))
    paths["tasks"].write_text(json.dumps(tasks, indent=1))
    paths["config"].write_text(json.dumps(dict(to_dict(cfg), digest=cfg.digest()), indent=1))
    return paths


def read_tasks(directory: str | Path) -> tuple[AnnotationConfig, list[dict]]:
    from model.config import from_dict

    directory = Path(directory)
    if not (directory / TASKS_FILE).is_file():
        raise ConfigError(f"{directory} has no {TASKS_FILE}: make it with `tandem annotate tasks`")
    stored = json.loads((directory / CONFIG_FILE).read_text())
    stored.pop("digest", None)
    return from_dict(AnnotationConfig, stored), json.loads((directory / TASKS_FILE).read_text())
