"""Audio VAE: waveform -> log-mel -> 1D conv VAE -> latents at a fixed rate (25/s default).

The encoder downsamples mel frames 4x (100 -> 25 per second at 16 kHz, hop 160); the
decoder returns a normalised log-mel, which a vocoder (:mod:`model.vocoder`) turns back
into a waveform. Mel frames are replicate-padded to a multiple of 4, so a clip of T mel
frames has ceil(T / 4) latents (the count :class:`model.sequence.SequenceConfig` uses).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from model.mel import MelConfig, MelSpectrogram
from model.vae_common import DiagonalGaussian, VAELoss, vae_loss


@dataclass
class AudioVAEConfig:
    mel: MelConfig = field(default_factory=MelConfig)
    latent_channels: int = 16
    base_channels: int = 128
    channel_mult: tuple[int, ...] = (1, 2, 4)  # one 2x downsample between levels: 4x
    num_res_blocks: int = 2
    kl_weight: float = 1e-4
    # log-mel values lie roughly in [log(1e-5), 3]; centre and scale them to ~unit range
    mel_offset: float = -5.0
    mel_scale: float = 3.0

    @property
    def stride(self) -> int:
        return 2 ** (len(self.channel_mult) - 1)

    @property
    def latent_rate(self) -> float:
        return self.mel.sample_rate / self.mel.hop / self.stride


AUDIO_VAE_PRESETS = {
    "debug": AudioVAEConfig(latent_channels=8, base_channels=32, num_res_blocks=1),
    "debug_stereo": AudioVAEConfig(mel=MelConfig(channels=2), latent_channels=8, base_channels=32,
                                   num_res_blocks=1),
    "base": AudioVAEConfig(),
}


def _norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(32, c), c)


class ResBlock1d(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.body = nn.Sequential(_norm(cin), nn.SiLU(), nn.Conv1d(cin, cout, 3, padding=1),
                                  _norm(cout), nn.SiLU(), nn.Conv1d(cout, cout, 3, padding=1))
        self.skip = nn.Conv1d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x):
        return self.skip(x) + self.body(x)


class Upsample1d(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv1d(c, c, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _stack(cfg: AudioVAEConfig, cin: int, cout: int, decoder: bool) -> nn.Sequential:
    chans = [cfg.base_channels * m for m in cfg.channel_mult]
    if decoder:
        chans = chans[::-1]
    c = chans[0]
    layers: list[nn.Module] = [nn.Conv1d(cin, c, 3, padding=1)]
    for i, level in enumerate(chans):
        for _ in range(cfg.num_res_blocks + int(decoder)):
            layers.append(ResBlock1d(c, level))
            c = level
        if i < len(chans) - 1:
            layers.append(Upsample1d(c) if decoder else nn.Conv1d(c, c, 3, stride=2, padding=1))
    layers += [ResBlock1d(c, c), _norm(c), nn.SiLU(), nn.Conv1d(c, cout, 3, padding=1)]
    return nn.Sequential(*layers)


class AudioVAE(nn.Module):
    def __init__(self, cfg: AudioVAEConfig):
        super().__init__()
        self.cfg = cfg
        self.mel = MelSpectrogram(cfg.mel)
        mel_ch = cfg.mel.channels * cfg.mel.n_mels
        self.encoder = _stack(cfg, mel_ch, 2 * cfg.latent_channels, decoder=False)
        self.decoder = _stack(cfg, cfg.latent_channels, mel_ch, decoder=True)

    def waveform_to_mel(self, wav: torch.Tensor) -> torch.Tensor:
        """(B, ch, N) -> normalised log-mel (B, ch * n_mels, N // hop)."""
        return (self.mel(wav) - self.cfg.mel_offset) / self.cfg.mel_scale

    def mel_to_log_mel(self, mel: torch.Tensor) -> torch.Tensor:
        return mel * self.cfg.mel_scale + self.cfg.mel_offset

    def encode_mel(self, mel: torch.Tensor) -> DiagonalGaussian:
        pad = -mel.shape[-1] % self.cfg.stride
        if pad:
            mel = F.pad(mel, (0, pad), mode="replicate")
        return DiagonalGaussian(self.encoder(mel))

    def encode(self, wav: torch.Tensor) -> DiagonalGaussian:
        """Waveform (B, ch, N) -> posterior over (B, C, ceil((N // hop) / 4))."""
        return self.encode_mel(self.waveform_to_mel(wav))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (B, C, T) -> normalised log-mel (B, ch * n_mels, 4T)."""
        return self.decoder(z)

    def forward(self, mel: torch.Tensor, generator: torch.Generator | None = None):
        posterior = self.encode_mel(mel)
        return self.decode(posterior.sample(generator))[..., : mel.shape[-1]], posterior

    def loss(self, wav: torch.Tensor, generator: torch.Generator | None = None) -> VAELoss:
        mel = self.waveform_to_mel(wav)
        recon, posterior = self(mel, generator)
        return vae_loss(recon, mel, posterior, self.cfg.kl_weight)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def flops_per_latent(self, latents: int = 25) -> float:
        """Forward FLOPs (encode + decode, mel excluded) per latent frame, for MFU."""
        p = next(self.parameters())
        mel = torch.zeros(1, self.cfg.mel.channels * self.cfg.mel.n_mels, latents * self.cfg.stride,
                          device=p.device, dtype=p.dtype)
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            self.decode(self.encode_mel(mel).mode())
        return counter.get_total_flops() / latents
