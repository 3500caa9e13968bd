"""tandem's own debug/base VAEs (model.video_vae, model.audio_vae) behind the common interface.

Their latents are already roughly unit-scale (KL-regularised, never normalised after the
fact), so there is no latent normalisation to apply. Audio decodes through a vocoder:
HiFi-GAN weights when given, Griffin-Lim (no weights) otherwise.
"""

from __future__ import annotations

import math

import torch

from model.audio_vae import AudioVAE
from model.encoders.base import AudioAutoencoder, VideoAutoencoder
from model.video_vae import VideoVAE
from model.vocoder import Vocoder


def _dtype(module: torch.nn.Module) -> torch.dtype:
    return next(module.parameters(), torch.empty(())).dtype  # Griffin-Lim has no parameters: float32


class TandemVideo(VideoAutoencoder):
    def __init__(self, vae: VideoVAE, preset: str, tiling: bool = True):
        super().__init__()
        self.vae, self.tiling = vae, tiling
        self.name = f"tandem:{preset}"
        self.latent_channels = vae.cfg.latent_channels
        self.temporal_stride, self.spatial_stride = vae.cfg.temporal_stride, vae.cfg.spatial_stride

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        self.check_frames(pixels)
        z = self.vae.encode(pixels.to(_dtype(self.vae)), tiled=self.tiling).mode().float()
        return self.check_latents(pixels, z)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latents.to(_dtype(self.vae)), tiled=self.tiling).float().clamp(-1, 1)


class TandemAudio(AudioAutoencoder):
    def __init__(self, vae: AudioVAE, vocoder: Vocoder, preset: str):
        super().__init__()
        self.vae, self.vocoder = vae, vocoder
        mel = vae.cfg.mel
        self.name = f"tandem:{preset}"
        self.sample_rate, self.channels, self.hop = mel.sample_rate, mel.channels, mel.hop
        self.latent_channels = vae.cfg.latent_channels
        self.samples_per_latent = mel.hop * vae.cfg.stride
        self.output_sample_rate = vocoder.mel_config.sample_rate

    def num_latents(self, samples: int) -> int:
        return math.ceil((samples // self.hop) / self.vae.cfg.stride)  # mel drops the centred STFT's last frame

    def encode(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.check_latents(waveform, self.vae.encode(waveform.to(_dtype(self.vae))).mode().float())

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        log_mel = self.vae.mel_to_log_mel(self.vae.decode(latents.to(_dtype(self.vae)))).float()
        return self.vocoder(log_mel.to(_dtype(self.vocoder))).float()
