"""Log-mel front end and its approximate inverse, in plain torch (no torchaudio).

Mono and stereo: a (B, channels, samples) waveform becomes (B, channels * n_mels, frames)
with the channels' mel bands stacked, so the audio VAE sees one 1D signal per clip.
Frames: ``samples // hop`` (the centred STFT's extra last frame is dropped), so 1 s at
16 kHz with hop 160 is exactly 100 frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import librosa
import torch
from torch import nn


@dataclass
class MelConfig:
    sample_rate: int = 16000
    channels: int = 1  # 1 = mono, 2 = stereo
    n_fft: int = 1024
    hop: int = 160
    win: int = 640
    n_mels: int = 64
    f_min: float = 0.0
    f_max: float | None = None  # None: Nyquist
    log_floor: float = 1e-5


class MelSpectrogram(nn.Module):
    """waveform (B, ch, N) -> log-magnitude mel (B, ch * n_mels, N // hop)."""

    def __init__(self, cfg: MelConfig):
        super().__init__()
        self.cfg = cfg
        fb = librosa.filters.mel(sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels,
                                 fmin=cfg.f_min, fmax=cfg.f_max)  # Slaney-normalised
        self.register_buffer("filterbank", torch.from_numpy(fb).float(), persistent=False)
        self.register_buffer("window", torch.hann_window(cfg.win), persistent=False)

    def stft(self, wav: torch.Tensor) -> torch.Tensor:
        """(B', N) -> complex (B', n_fft // 2 + 1, N // hop + 1)."""
        c = self.cfg
        return torch.stft(wav.float(), c.n_fft, c.hop, c.win, self.window, center=True,
                          return_complex=True)

    def istft(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        c = self.cfg
        return torch.istft(spec, c.n_fft, c.hop, c.win, self.window, center=True, length=length)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        b, ch, n = wav.shape
        if ch != self.cfg.channels:
            raise ValueError(f"expected {self.cfg.channels}-channel audio, got {ch} channels")
        mag = self.stft(wav.reshape(b * ch, n)).abs()[..., : n // self.cfg.hop]
        mel = torch.matmul(self.filterbank, mag)
        return torch.log(mel.clamp_min(self.cfg.log_floor)).reshape(b, ch * self.cfg.n_mels, -1)

    def magnitude_from_mel(self, log_mel: torch.Tensor) -> torch.Tensor:
        """(B, ch * n_mels, T) -> linear magnitude (B * ch, n_fft // 2 + 1, T).

        Least-squares inverse of the filterbank, clamped non-negative: a blurry but
        usable spectral envelope for Griffin-Lim.
        """
        b, _, t = log_mel.shape
        mel = log_mel.float().exp().reshape(b * self.cfg.channels, self.cfg.n_mels, t)
        return torch.matmul(torch.linalg.pinv(self.filterbank), mel).clamp_min(0.0)


def griffin_lim(mel: MelSpectrogram, magnitude: torch.Tensor, n_iter: int = 32,
                momentum: float = 0.99, generator: torch.Generator | None = None) -> torch.Tensor:
    """Phase recovery (Griffin & Lim 1984) with the "fast" momentum of Perraudin et al. 2013.

    magnitude (B', F, T) for T = samples // hop frames -> waveform (B', T * hop).
    """
    length = magnitude.shape[-1] * mel.cfg.hop
    spec = torch.cat([magnitude, magnitude[..., -1:]], dim=-1)  # the dropped last frame
    phase = torch.rand(spec.shape, generator=generator) * 2 * torch.pi
    angles = torch.polar(torch.ones_like(spec), phase.to(spec.device))
    previous = torch.zeros_like(angles)
    for _ in range(n_iter):
        rebuilt = mel.stft(mel.istft(spec * angles, length))
        angles = rebuilt - (momentum / (1 + momentum)) * previous
        angles = angles / (angles.abs() + 1e-16)
        previous = rebuilt
    return mel.istft(spec * angles, length)
