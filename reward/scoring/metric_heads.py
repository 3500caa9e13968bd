"""Metric heads: reward sources that need no training, so alignment can start before any human
ranking exists, and can watch a property it does not optimise (reward hacking shows up there).

Each is a ``reward.scoring.sources.RewardSource`` on decoded clips (``uses = "media"``), higher is
better, measured the way curation measures the same property:

- ``LoudnessClipping`` (heads ``loudness``, ``clipping``): integrated loudness by ITU-R
  BS.1770 (``curation.audio.integrated_loudness``) scored as minus its distance to
  ``target_lufs``; and minus the percentage of samples at the ceiling (|x| >= ``ceiling``).
- ``Motion`` (head ``motion``): curation's motion energy (``curation.shots``: mean grey-level
  change between blurred ~160 px frames above a noise floor, 0..1), averaged over the clip.
- ``AVSync`` (head ``av_sync``): curation's sync scorer (``curation.sync.estimate_sync``: lips
  against speech on a face, visible events against audio onsets elsewhere) scored as minus
  the absolute offset in ms. A clip whose offset cannot be told scores as if it were off by
  ``unmeasured_ms``, so a policy is never rewarded for making sync unmeasurable (hiding the
  face, silencing the track).
- ``Brightness`` and ``Loudness`` from ``reward.scoring.sources``.

``METRIC_HEADS`` maps a name to a factory (the names alignment recipes and
``tandem reward score metric:NAME`` use); ``metric_source("motion")`` builds one,
``register_metric`` adds one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from reward.scoring.sources import Brightness, Clips, Loudness, RewardSource

SILENCE_LUFS = -70.0  # BS.1770's absolute gate: quieter than this is silence


@dataclass
class LoudnessClipping:
    target_lufs: float = -16.0  # streaming platforms' usual target
    ceiling: float = 0.99  # a decoded sample at or above this magnitude counts as clipped
    name: str = "loudness_clipping"
    heads: tuple[str, ...] = ("loudness", "clipping")
    uses: str = "media"

    def score(self, clips: Clips) -> dict[str, torch.Tensor]:
        from curation.audio import integrated_loudness

        audio = clips.audio.float().cpu().numpy()  # (B, channels, samples)
        lufs = [integrated_loudness(a.T, clips.sample_rate) if a.shape[-1] else None for a in audio]
        lufs = torch.tensor([SILENCE_LUFS if v is None else max(v, SILENCE_LUFS) for v in lufs])
        clipped = torch.from_numpy((np.abs(audio) >= self.ceiling).reshape(len(audio), -1).mean(1) * 100).float()
        return {self.heads[0]: -(lufs - self.target_lufs).abs(), self.heads[1]: -clipped}


@dataclass
class Motion:
    analysis_width: int = 160
    name: str = "motion"
    heads: tuple[str, ...] = ("motion",)
    uses: str = "media"

    def score(self, clips: Clips) -> dict[str, torch.Tensor]:
        import cv2

        from curation.media_io import analysis_size
        from curation.shots import _motion_energy  # curation's definition, so both agree

        scores = []
        for clip in uint8_frames(clips.video):
            h, w = clip.shape[1:3]
            size = analysis_size(w, h, self.analysis_width)
            grey = [cv2.GaussianBlur(cv2.resize(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), size,
                                                interpolation=cv2.INTER_AREA), (5, 5), 0) for f in clip]
            energy = [_motion_energy(b, a) for a, b in zip(grey, grey[1:], strict=False)]
            scores.append(float(np.mean(energy)) if energy else 0.0)
        return {self.heads[0]: torch.tensor(scores)}


def uint8_frames(video: torch.Tensor) -> np.ndarray:
    """(B, 3, T, H, W) in [-1, 1] -> (B, T, H, W, 3) uint8 RGB, as curation reads frames."""
    frames = ((video.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return frames.permute(0, 2, 3, 4, 1).cpu().numpy()


@dataclass
class AVSync:
    unmeasured_ms: float = 500.0  # the score of a clip whose offset cannot be told: -unmeasured_ms
    # None: the sync stage's calibrated default (curation.sync.SyncConfig), under which few
    # real clips are measured today (benchmarks/results/sync_accuracy.txt); lower it to score
    # uncertain estimates too.
    min_confidence: float | None = None
    name: str = "av_sync"
    heads: tuple[str, ...] = ("av_sync",)
    uses: str = "media"

    def score(self, clips: Clips) -> dict[str, torch.Tensor]:
        from curation.sync import SyncConfig, estimate_sync

        config = SyncConfig() if self.min_confidence is None else SyncConfig(min_confidence=self.min_confidence)
        audio = clips.audio.float().cpu().numpy()
        offsets = [estimate_sync(frames, clips.fps, track, clips.sample_rate, config).offset_ms
                   for frames, track in zip(uint8_frames(clips.video), audio, strict=True)]
        return {self.heads[0]: torch.tensor([-abs(o) if o is not None else -self.unmeasured_ms for o in offsets],
                                            dtype=torch.float32)}


METRIC_HEADS: dict[str, Callable[..., RewardSource]] = {
    "loudness_clipping": LoudnessClipping,
    "motion": Motion,
    "av_sync": AVSync,
    "brightness": Brightness,
    "loudness": Loudness,
}


def register_metric(name: str, factory: Callable[..., RewardSource]) -> None:
    """Make ``metric_source(name)`` (and ``metric:NAME`` wherever a reward source is named) build
    ``factory(**options)``."""
    METRIC_HEADS[name] = factory


def metric_source(name: str, **options) -> RewardSource:
    if name not in METRIC_HEADS:
        raise ValueError(f"unknown metric head {name!r}; known: {', '.join(sorted(METRIC_HEADS))}")
    return METRIC_HEADS[name](**options)
