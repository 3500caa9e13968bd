"""Latent sequence lengths of both modalities, and the shared time axis they live on.

Video: the causal VAE maps 1 + 4k frames to 1 + k latent frames (8x smaller spatially).
Audio: ``sample_rate / hop`` mel frames per second, downsampled ``audio_stride``x by the
audio VAE, i.e. 16000 / 160 / 4 = 25 latents per second by default. The audio track of a
clip lasts exactly as long as its frames (``num_frames / fps`` seconds).

Both token types are placed in *seconds* at the centre of the interval they summarise,
so an event at time t has the same temporal position in both branches:

- video latent 0 covers frame 0 only -> centre 0.5 / fps;
  video latent k >= 1 covers frames 4k-3 .. 4k -> centre (4k - 1) / fps;
- audio latent j covers [j, j + 1) / rate -> centre (j + 0.5) / rate.

Worked examples (asserted in tests/model/test_sequence.py):

=======================  ======  =========  ============  =======  ===  ==========
clip                     frames  latents    video tokens  samples  mel  audio lat.
=======================  ======  =========  ============  =======  ===  ==========
5 s, 24 fps, 480x832     121     31x60x104  48360         80667    504  126
2 s, 25 fps, 256x256     49      13x32x32   3328          31360    196  49
0.64 s, 25 fps, 32x32    17      5x4x4      20            10880    68   17
=======================  ======  =========  ============  =======  ===  ==========

(121 frames at 24 fps last 5.0417 s; 2 s at 25 fps rounds to 48 frame steps, 1.96 s.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class SequenceConfig:
    duration_s: float = 5.0
    fps: float = 24.0
    height: int = 480
    width: int = 832
    sample_rate: int = 16000
    mel_hop: int = 160
    audio_stride: int = 4  # mel frames per audio latent
    video_temporal_stride: int = 4
    video_spatial_stride: int = 8
    video_patch: tuple[int, int, int] = (1, 2, 2)

    def __post_init__(self):
        pixel_multiple = self.video_spatial_stride * self.video_patch[1]
        if self.height % pixel_multiple or self.width % pixel_multiple:
            raise ValueError(
                f"height/width ({self.height}x{self.width}) must be multiples of "
                f"{pixel_multiple} (VAE stride x patch size)"
            )
        if (self.video_latent_frames % self.video_patch[0]) != 0:
            raise ValueError(
                f"{self.video_latent_frames} latent frames not divisible by temporal patch "
                f"{self.video_patch[0]}; change duration_s or video_patch"
            )

    @property
    def num_frames(self) -> int:
        """1 + 4k frames closest to ``duration_s`` (the causal VAE's native lengths)."""
        s = self.video_temporal_stride
        return 1 + s * max(round(self.duration_s * self.fps / s), 0)

    @property
    def clip_seconds(self) -> float:
        return self.num_frames / self.fps

    @property
    def video_latent_frames(self) -> int:
        return 1 + (self.num_frames - 1) // self.video_temporal_stride

    @property
    def video_latent_shape(self) -> tuple[int, int, int]:
        s = self.video_spatial_stride
        return self.video_latent_frames, self.height // s, self.width // s

    @property
    def video_tokens(self) -> int:
        t, h, w = self.video_latent_shape
        pt, ph, pw = self.video_patch
        return (t // pt) * (h // ph) * (w // pw)

    @property
    def audio_samples(self) -> int:
        return round(self.num_frames * self.sample_rate / self.fps)

    @property
    def mel_frames(self) -> int:
        return self.audio_samples // self.mel_hop

    @property
    def audio_latents(self) -> int:
        return math.ceil(self.mel_frames / self.audio_stride)

    @property
    def audio_latent_rate(self) -> float:
        return self.sample_rate / self.mel_hop / self.audio_stride

    @property
    def audio_tokens(self) -> int:
        return self.audio_latents


def video_latent_times(n_latent_frames: int, fps: float, temporal_stride: int = 4,
                       device=None) -> torch.Tensor:
    """Centre time (s) of the pixel frames each causal-VAE latent frame summarises."""
    k = torch.arange(n_latent_frames, dtype=torch.float64, device=device)
    first = torch.clamp(temporal_stride * k - temporal_stride + 1, min=0)
    last_plus_one = temporal_stride * k + 1
    return ((first + last_plus_one) / 2 / fps).float()


def audio_latent_times(n_latents: int, latent_rate: float, causal_stride: int = 0, device=None) -> torch.Tensor:
    """Centre time (s) of each audio latent. ``causal_stride`` 0: latent j covers
    ``[j, j + 1) / latent_rate``; s > 0: a causal encoder over s sub-frames per latent (e.g.
    LTX-2's audio VAE over mel frames), placed like causal video latents: latent 0 is one
    sub-frame, latent k covers sub-frames ``sk - s + 1 .. sk``."""
    if causal_stride:
        return video_latent_times(n_latents, latent_rate * causal_stride, causal_stride, device=device)
    j = torch.arange(n_latents, dtype=torch.float64, device=device)
    return ((j + 0.5) / latent_rate).float()
