"""Duration / aspect buckets: which fixed (seconds, H, W) shape a clip is trained at.

Clips come in every length and aspect; a batch needs one shape. A clip goes to the longest
bucket duration it covers (shorter clips are skipped with a reason) and to the resolution
whose aspect ratio is nearest its own (in log space, so 2:1 and 1:2 are equally far from
1:1). The clip is then centre-cropped to that aspect and resized, and trimmed to the
bucket's duration, so a 3.1 s 1.7:1 clip and a 2.4 s 16:9 clip share the (2 s, 16:9) bucket.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from model.sequence import SequenceConfig


@dataclass
class BucketConfig:
    fps: float = 8.0  # frames sampled per second of footage before the video VAE
    durations: list = field(default_factory=lambda: [0.5, 1.0, 2.0])  # seconds
    resolutions: list = field(default_factory=lambda: [[64, 64], [64, 112], [112, 64]])  # [H, W] pixels

    def __post_init__(self):
        if not self.durations or not self.resolutions:
            raise ValueError("buckets need at least one duration and one resolution")
        for h, w in self.resolutions:
            SequenceConfig(duration_s=min(self.durations), fps=self.fps, height=h, width=w)  # validates


@dataclass(frozen=True)
class Bucket:
    duration_s: float
    height: int
    width: int
    fps: float
    temporal_stride: int = 4  # the video VAE's: a clip is 1 + stride * k frames

    @property
    def sequence(self) -> SequenceConfig:
        return SequenceConfig(duration_s=self.duration_s, fps=self.fps, height=self.height, width=self.width,
                              video_temporal_stride=self.temporal_stride)

    @property
    def name(self) -> str:
        return f"{self.duration_s:g}s_{self.height}x{self.width}"


def assign_bucket(cfg: BucketConfig, duration_s: float, width: int, height: int,
                  temporal_stride: int = 4) -> Bucket | None:
    """The bucket a ``duration_s`` long ``width`` x ``height`` clip trains in, for a video VAE
    of ``temporal_stride``; None when it is shorter than every bucket duration."""
    # The bucket's frames span clip_seconds; allow half a frame of rounding in the clip's length.
    fitting = [d for d in cfg.durations
               if SequenceConfig(duration_s=d, fps=cfg.fps, height=16, width=16,
                                 video_temporal_stride=temporal_stride).clip_seconds
               <= duration_s + 0.5 / cfg.fps]
    if not fitting or width <= 0 or height <= 0:
        return None
    aspect = math.log(width / height)
    h, w = min(cfg.resolutions, key=lambda hw: abs(math.log(hw[1] / hw[0]) - aspect))
    return Bucket(duration_s=max(fitting), height=h, width=w, fps=cfg.fps, temporal_stride=temporal_stride)
