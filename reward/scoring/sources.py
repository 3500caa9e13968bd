"""Reward sources: one interface for everything alignment can optimise or watch.

A source scores a batch of clips (decoded media and/or latents, plus prompts) and returns a
score per clip for each of its heads, higher is better. Trained reward models
(``models:/tandem-reward@ALIAS``) and metric heads that need no training implement it the
same way, so DanceGRPO combines them by coefficient and tracks held-out ones without knowing
which is which.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch


@dataclass
class Clips:
    """A batch of B clips as reward sources see them."""

    prompts: list[str]
    video: torch.Tensor | None = None  # (B, 3, T, H, W) in [-1, 1]
    audio: torch.Tensor | None = None  # (B, channels, samples) in [-1, 1]
    fps: float = 0.0
    sample_rate: int = 0
    video_latents: torch.Tensor | None = None  # (B, C, T, h, w)
    audio_latents: torch.Tensor | None = None  # (B, C, T)
    text_emb: torch.Tensor | None = None  # (B, L, D)
    text_mask: torch.Tensor | None = None  # (B, L) bool
    meta: list[dict] = field(default_factory=list)  # per clip, e.g. the rollout json

    def __len__(self) -> int:
        return len(self.prompts)


class RewardSource(Protocol):
    name: str
    heads: tuple[str, ...]
    uses: str  # "media" (decoded clips) or "latents"

    def score(self, clips: Clips) -> dict[str, torch.Tensor]:
        """head -> (B,) float scores, higher is better."""


def _per_clip_mean(x: torch.Tensor) -> torch.Tensor:
    return x.float().flatten(1).mean(1)


@dataclass
class Brightness:
    """Mean luma of the decoded video in [0, 1] (Rec. 601 weights); with ``target`` set,
    minus the distance to it."""

    target: float | None = None
    name: str = "brightness"
    heads: tuple[str, ...] = ("brightness",)
    uses: str = "media"

    def score(self, clips: Clips) -> dict[str, torch.Tensor]:
        rgb = (clips.video.float() + 1) / 2
        luma = _per_clip_mean(0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2])
        return {self.heads[0]: luma if self.target is None else -(luma - self.target).abs()}


@dataclass
class Loudness:
    """RMS level of the decoded audio in dBFS (floor -100); with ``target_db`` set, minus the
    distance to it in dB."""

    target_db: float | None = None
    name: str = "loudness"
    heads: tuple[str, ...] = ("loudness",)
    uses: str = "media"

    def score(self, clips: Clips) -> dict[str, torch.Tensor]:
        rms = _per_clip_mean(clips.audio.float().pow(2)).sqrt()
        db = 20 * torch.log10(rms.clamp_min(1e-5))
        return {self.heads[0]: db if self.target_db is None else -(db - self.target_db).abs()}
