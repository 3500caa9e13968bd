"""An independent judge panel: simulated annotators who watch and listen to *decoded* clips.

The prompt names a colour and a pitch ("a kite in red light with a low hum"). A judge looks at
the decoded frames and listens to the decoded waveform, and prefers the clip whose picture is
closer to the named colour (mean RGB of every pixel of every frame) and whose sound is closer
to the named pitch (the waveform's spectral centroid, in octaves). Nothing here reads latents,
rollout json or anything the generator or the reward model wrote about a clip: only the mp4
and the prompt's words.

Judges differ (``make_panel``): each weighs picture against sound differently for ``overall``,
perceives with its own noise (Thurstonian: a Gaussian on each perceived misfit, per
judgement), and calls a tie below its own margin. So two judges disagree on close pairs, and
no panel is an oracle: the best achievable accuracy against them is below 100 %.

These judges live in benchmarks/ and tests/ only: ``tests/test_import_boundaries.py`` keeps
``model/``, ``training/`` and ``reward/`` from importing them, and no pretrained component is
fitted to their rules or labels (the reward model learns them from their rankings alone).

Vocabulary: ``COLOURS`` and ``PITCHES`` name every value the judges understand; the prompt
sets (``benchmarks.judged_prompts``) keep some of them, and some of their combinations, out of
training.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# The colour a word names, as mean RGB in [0, 1] of a frame lit that colour.
COLOURS = {
    "red": (0.80, 0.20, 0.20), "green": (0.20, 0.70, 0.25), "blue": (0.20, 0.30, 0.85),
    "yellow": (0.85, 0.80, 0.20), "purple": (0.60, 0.25, 0.75), "teal": (0.15, 0.60, 0.60),
}
# The spectral centroid (Hz) a word names: where the sound's energy sits.
PITCHES = {"low": 500.0, "middle": 1500.0, "high": 4000.0, "shrill": 6000.0}
AXES = ("colour", "sound", "overall")
# What a judge just notices. The debug decoders render a narrow range of colours (a latent
# channel shifted by 3 sigma moves a clip's mean colour by at most 0.05 from mid-grey), so the
# panel watches them as one watches a dim screen: 0.01 of RGB is a visible step.
COLOUR_JND = 0.01  # RGB distance
SOUND_JND = 0.15  # octaves of spectral centroid


def prompt_targets(prompt: str) -> tuple[str, str]:
    """(colour word, pitch word) the prompt names; ValueError when it names none of either."""
    words = re.findall(r"[a-z]+", prompt.lower())
    colour = next((w for w in words if w in COLOURS), None)
    pitch = next((w for w in words if w in PITCHES), None)
    if colour is None or pitch is None:
        raise ValueError(f"the judges cannot read a colour ({', '.join(COLOURS)}) and a pitch "
                         f"({', '.join(PITCHES)}) from the prompt {prompt!r}")
    return colour, pitch


@dataclass(frozen=True)
class Percept:
    """What a judge takes from a decoded clip: its mean colour and its sound's centroid."""

    rgb: tuple[float, float, float]
    centroid_hz: float

    @classmethod
    def of(cls, video: np.ndarray, audio: np.ndarray, sample_rate: int) -> Percept:
        """``video`` (3, T, H, W) in [-1, 1], ``audio`` (channels, samples) in [-1, 1]."""
        rgb = ((np.asarray(video, np.float64) + 1) / 2).clip(0, 1).reshape(3, -1).mean(1)
        mono = np.asarray(audio, np.float64).mean(0)
        power = np.abs(np.fft.rfft(mono * np.hanning(len(mono)))) ** 2 if len(mono) > 1 else np.zeros(1)
        freqs = np.fft.rfftfreq(max(len(mono), 1), 1 / max(sample_rate, 1))
        centroid = float((freqs * power).sum() / power.sum()) if power.sum() > 0 else 1.0
        return cls(tuple(float(x) for x in rgb), max(centroid, 1.0))

    @classmethod
    def of_mp4(cls, path: str | Path) -> Percept:
        from reward.scoring.clip_store import (
            decode_media,  # decoding only: the pixels and samples as a viewer gets them
        )

        video, audio, _, rate = decode_media(path)
        return cls.of(video.numpy(), audio.numpy(), rate)

    def misfit(self, prompt: str) -> dict[str, float]:
        """Per axis, how far the clip is from what the prompt asks, in just-noticeable steps
        (0 = exactly it). ``overall`` is left to each judge's weighting."""
        colour, pitch = prompt_targets(prompt)
        return {"colour": float(np.linalg.norm(np.subtract(self.rgb, COLOURS[colour]))) / COLOUR_JND,
                "sound": abs(math.log2(self.centroid_hz / PITCHES[pitch])) / SOUND_JND}


@dataclass(frozen=True)
class Judge:
    name: str
    picture_weight: float  # share of the picture in ``overall`` (the rest: the sound)
    noise: float  # std of the perceived misfit, in just-noticeable steps, per judgement
    tie_margin: float  # perceived differences below this (same units) are called a tie

    def judge(self, a: dict[str, float], b: dict[str, float], axis: str, rng: np.random.Generator) -> str:
        """'a', 'b' or 'tie': which of two clips (their misfits) fits the prompt better."""
        if axis == "overall":
            fa = self.picture_weight * a["colour"] + (1 - self.picture_weight) * a["sound"]
            fb = self.picture_weight * b["colour"] + (1 - self.picture_weight) * b["sound"]
        else:
            fa, fb = a[axis], b[axis]
        diff = (fb + rng.normal(0, self.noise)) - (fa + rng.normal(0, self.noise))  # > 0: a fits better
        return "tie" if abs(diff) < self.tie_margin else ("a" if diff > 0 else "b")


def make_panel(size: int = 5, seed: int = 0) -> list[Judge]:
    """``size`` judges with their own weighting, noise and tie margin (drawn from ``seed``)."""
    rng = np.random.default_rng(seed)
    return [Judge(f"judge{k}@panel.test", float(rng.uniform(0.3, 0.7)), float(rng.uniform(0.5, 1.0)),
                  float(rng.uniform(0.5, 1.0))) for k in range(size)]


# ------------------------------------------------------------------------------ win rate


@dataclass
class WinRate:
    rate: float  # share of judgements won by the first clip, ties counting half
    low: float  # bootstrap 95 % interval (clip pairs resampled with their judgements)
    high: float
    pairs: int
    judgements: int
    ties: float  # share of judgements called a tie

    def __str__(self) -> str:
        return (f"{100 * self.rate:.1f} % [{100 * self.low:.1f}, {100 * self.high:.1f}] "
                f"({self.pairs} pairs, {self.judgements} judgements, {100 * self.ties:.0f} % ties)")


def win_rate(first: list[Percept], second: list[Percept], prompts: list[str], panel: list[Judge],
             axis: str = "overall", seed: int = 0, resamples: int = 2000) -> WinRate:
    """How often the panel prefers ``first[i]`` to ``second[i]`` (the same prompt, e.g. the
    aligned and the base model's sample from the same noise). Every judge judges every pair,
    in an order drawn per judgement (the judges have no side bias, the shown order still varies)."""
    rng = np.random.default_rng(seed)
    scores = np.zeros((len(prompts), len(panel)))
    ties = 0
    for i, (x, y, prompt) in enumerate(zip(first, second, prompts, strict=True)):
        mx, my = x.misfit(prompt), y.misfit(prompt)
        for j, judge in enumerate(panel):
            swapped = bool(rng.integers(2))
            outcome = judge.judge(my, mx, axis, rng) if swapped else judge.judge(mx, my, axis, rng)
            won = "b" if swapped else "a"
            scores[i, j] = 0.5 if outcome == "tie" else float(outcome == won)
            ties += outcome == "tie"
    per_pair = scores.mean(1)
    boot = per_pair[rng.integers(len(per_pair), size=(resamples, len(per_pair)))].mean(1)
    low, high = np.quantile(boot, [0.025, 0.975])
    return WinRate(float(per_pair.mean()), float(low), float(high), len(prompts), scores.size,
                   ties / max(scores.size, 1))


# ------------------------------------------------------------------ Label Studio exports


def percepts_of_rollouts(*rollout_dirs) -> dict[str, Percept]:
    """sample id -> Percept of its decoded mp4 (what a judge sees and hears)."""
    from reward.rollouts.rollout_dir import read_rollouts

    return {r.sample_id: Percept.of_mp4(r.mp4) for r in read_rollouts(*rollout_dirs)}


def judge_tasks(tasks: list[dict], percepts: dict[str, Percept], panel: list[Judge], seed: int = 0,
                judges_per_task: int = 3, project: int = 1) -> list[dict]:
    """The panel annotates ``tasks`` (``tandem annotate tasks``' tasks.json, pairwise mode with
    Choices): a Label Studio JSON export of them, ``judges_per_task`` judges per task (drawn
    from the panel), one annotation each, every axis of the task's schema answered."""
    from reward.annotation.labelstudio_tasks import CHOICES

    rng = np.random.default_rng(seed)
    choice_of = {outcome: value for value, outcome in CHOICES.items()}
    exported, annotation_id = [], 0
    for task_id, task in enumerate(tasks, 1):
        meta = task["data"]["tandem"]
        if meta["schema"]["mode"] != "pairwise" or meta["schema"]["pairwise_tag_axis"]:
            raise ValueError("the panel answers pairwise tasks with Choices only (no Pairwise tag, no rank mode)")
        a, b = (percepts[i].misfit(task["data"]["prompt"]) for i in meta["items"])
        annotations = []
        for j in rng.choice(len(panel), size=min(judges_per_task, len(panel)), replace=False):
            annotation_id += 1
            result = [{"from_name": axis, "to_name": "clip_a", "type": "choices", "origin": "manual",
                       "value": {"choices": [choice_of[panel[j].judge(a, b, axis, rng)]]}}
                      for axis in meta["schema"]["axes"]]
            annotations.append({"id": annotation_id, "completed_by": {"email": panel[j].name}, "result": result,
                                "was_cancelled": False, "created_at": "2026-12-07T00:00:00Z", "project": project})
        exported.append({"id": task_id, "project": project, "data": task["data"], "annotations": annotations})
    return exported
