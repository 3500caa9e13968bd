"""Vocoders: log-mel (B, ch * n_mels, T) -> waveform (B, ch, T * hop).

- :class:`GriffinLimVocoder`: no weights, always available; audible but phasey. The
  baseline for tests and for checking an audio VAE before a neural vocoder exists.
- :class:`HiFiGANVocoder`: the HiFi-GAN generator (Kong et al. 2020: transposed-conv
  upsampling by ``hop`` with multi-receptive-field residual blocks). Trainable here with
  :func:`vocoder_loss` (mel L1 + multi-resolution STFT, the generator's non-adversarial
  terms; the GAN discriminators belong to a training recipe), or loaded from local
  safetensors with :func:`model.checkpoint.load`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from model.mel import MelConfig, MelSpectrogram, griffin_lim


class Vocoder(nn.Module):
    """Interface: ``forward(log_mel) -> waveform``; ``mel_config`` says what it expects."""

    mel_config: MelConfig

    def forward(self, log_mel: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class GriffinLimVocoder(Vocoder):
    def __init__(self, mel_config: MelConfig, n_iter: int = 32, seed: int = 0):
        super().__init__()
        self.mel_config, self.n_iter, self.seed = mel_config, n_iter, seed
        self.mel = MelSpectrogram(mel_config)

    @torch.no_grad()
    def forward(self, log_mel: torch.Tensor) -> torch.Tensor:
        b = log_mel.shape[0]
        magnitude = self.mel.magnitude_from_mel(log_mel)
        wav = griffin_lim(self.mel, magnitude, self.n_iter, generator=torch.Generator().manual_seed(self.seed))
        return wav.reshape(b, self.mel_config.channels, -1)


@dataclass
class HiFiGANConfig:
    mel: MelConfig = field(default_factory=MelConfig)
    upsample_rates: tuple[int, ...] = (5, 4, 4, 2)  # product = mel hop
    upsample_channels: int = 512
    resblock_kernels: tuple[int, ...] = (3, 7, 11)
    resblock_dilations: tuple[int, ...] = (1, 3, 5)


HIFIGAN_PRESETS = {
    "debug": HiFiGANConfig(upsample_channels=32, resblock_kernels=(3, 7)),
    "v1": HiFiGANConfig(),
}


class MRFBlock(nn.Module):
    """One kernel size of HiFi-GAN's multi-receptive-field fusion: dilated residual convs."""

    def __init__(self, c: int, kernel: int, dilations: tuple[int, ...]):
        super().__init__()
        self.dilated = nn.ModuleList(nn.Conv1d(c, c, kernel, dilation=d, padding=d * (kernel - 1) // 2)
                                     for d in dilations)
        self.plain = nn.ModuleList(nn.Conv1d(c, c, kernel, padding=(kernel - 1) // 2) for _ in dilations)

    def forward(self, x):
        for dilated, plain in zip(self.dilated, self.plain, strict=True):
            x = x + plain(F.leaky_relu(dilated(F.leaky_relu(x, 0.1)), 0.1))
        return x


class HiFiGANVocoder(Vocoder):
    def __init__(self, cfg: HiFiGANConfig):
        super().__init__()
        if math.prod(cfg.upsample_rates) != cfg.mel.hop:
            raise ValueError(f"upsample_rates {cfg.upsample_rates} must multiply to the hop {cfg.mel.hop}")
        self.cfg, self.mel_config = cfg, cfg.mel
        c = cfg.upsample_channels
        self.conv_pre = nn.Conv1d(cfg.mel.n_mels, c, 7, padding=3)
        self.ups, self.mrfs = nn.ModuleList(), nn.ModuleList()
        for r in cfg.upsample_rates:
            self.ups.append(nn.ConvTranspose1d(c, c // 2, 2 * r, stride=r, padding=r // 2 + r % 2,
                                               output_padding=r % 2))
            c //= 2
            self.mrfs.append(nn.ModuleList(MRFBlock(c, k, cfg.resblock_dilations)
                                           for k in cfg.resblock_kernels))
        self.conv_post = nn.Conv1d(c, 1, 7, padding=3)

    def forward(self, log_mel: torch.Tensor) -> torch.Tensor:
        b, _, t = log_mel.shape
        x = self.conv_pre(log_mel.reshape(b * self.cfg.mel.channels, self.cfg.mel.n_mels, t))
        for up, mrf in zip(self.ups, self.mrfs, strict=True):
            x = up(F.leaky_relu(x, 0.1))
            x = sum(block(x) for block in mrf) / len(mrf)
        wav = torch.tanh(self.conv_post(F.leaky_relu(x)))
        return wav.reshape(b, self.cfg.mel.channels, -1)


def multi_resolution_stft_loss(pred: torch.Tensor, target: torch.Tensor,
                               resolutions=((512, 128), (1024, 256), (2048, 512))) -> torch.Tensor:
    """Spectral convergence + log-magnitude L1 over several STFT sizes (Yamamoto et al. 2020)."""
    pred, target = pred.flatten(0, -2).float(), target.flatten(0, -2).float()
    total = pred.new_zeros(())
    for n_fft, hop in resolutions:
        window = torch.hann_window(n_fft, device=pred.device)
        p, t = (torch.stft(x, n_fft, hop, window=window, return_complex=True).abs().clamp_min(1e-7)
                for x in (pred, target))
        total = total + (t - p).norm() / t.norm() + (t.log() - p.log()).abs().mean()
    return total / len(resolutions)


def vocoder_loss(vocoder: HiFiGANVocoder, wav: torch.Tensor, mel: MelSpectrogram) -> torch.Tensor:
    """Generator loss on real audio (B, ch, N): 45 * mel L1 (HiFi-GAN's weight) + MR-STFT."""
    n = (wav.shape[-1] // vocoder.cfg.mel.hop) * vocoder.cfg.mel.hop
    wav = wav[..., :n]
    log_mel = mel(wav)
    pred = vocoder(log_mel)
    return 45.0 * F.l1_loss(mel(pred), log_mel) + multi_resolution_stft_loss(pred, wav)
