"""The two interfaces every autoencoder behind tandem's latents implements.

A wrapper owns one published (or in-house) model and speaks in *normalised* latents: the
model's own latent normalisation (per-channel mean/std, scaling factor) is applied on
``encode`` and inverted on ``decode``, exactly as the model's reference pipeline does, so the
DiT always trains on roughly unit-variance latents whatever made them.

Time: video latents are causal (latent 0 is frame 0 alone, latent k >= 1 summarises frames
``s(k-1)+1 .. sk``). Audio latents either cover equal spans (``causal_stride == 0``: latent
j spans ``[j, j + 1) / latent_rate`` seconds) or are causal the same way over sub-frames
(``causal_stride == s``: latent 0 is one sub-frame, later ones ``s`` each, with
``s * latent_rate`` sub-frames per second). ``model.sequence`` turns both into seconds.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def per_channel(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A (C,) statistic shaped to broadcast over ``like``'s channel dim (dim 1)."""
    return values.to(like.device, like.dtype).view(1, -1, *([1] * (like.ndim - 2)))


def normalise(z: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """``(z - mean) * scale / std`` per channel: what the DiT trains on."""
    return (z - per_channel(mean, z)) * scale / per_channel(std, z)


def denormalise(z: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Inverse of :func:`normalise`: what the model's decoder expects."""
    return z * per_channel(std, z) / scale + per_channel(mean, z)


def pad_to_multiple(waveform: torch.Tensor, multiple: int) -> torch.Tensor:
    """Right-pad the last dim with silence to a multiple of ``multiple``."""
    return F.pad(waveform, (0, -waveform.shape[-1] % multiple))


class VideoAutoencoder(nn.Module):
    """pixels (B, 3, 1 + s*k, H, W) in [-1, 1] <-> latents (B, C, 1 + k, H/p, W/p)."""

    name: str  # registry name, e.g. "ltx2"
    latent_channels: int
    temporal_stride: int  # s: pixel frames per latent frame after the first
    spatial_stride: int  # p: pixels per latent along height and width

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def latent_frames(self, frames: int) -> int:
        return 1 + (frames - 1) // self.temporal_stride

    def check_frames(self, pixels: torch.Tensor) -> None:
        if (pixels.shape[2] - 1) % self.temporal_stride:
            raise ValueError(f"{self.name} video VAE needs 1 + {self.temporal_stride}k frames, "
                             f"got {pixels.shape[2]}")

    def check_latents(self, pixels: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """The geometry the registry records must be what the model really does."""
        t, h, w = pixels.shape[2:]
        want = (self.latent_channels, self.latent_frames(t), h // self.spatial_stride, w // self.spatial_stride)
        if tuple(latents.shape[1:]) != want:
            raise RuntimeError(f"{self.name} video VAE made latents {tuple(latents.shape[1:])} from {tuple(pixels.shape[1:])}, "
                               f"expected {want} from its config (strides {self.temporal_stride}/{self.spatial_stride})")
        return latents


class AudioAutoencoder(nn.Module):
    """waveform (B, channels, N) at ``sample_rate`` <-> latents (B, C, T); ``decode`` returns
    waveform at ``output_sample_rate`` (a vocoder may upsample)."""

    name: str
    sample_rate: int
    channels: int  # 1 mono, 2 stereo
    latent_channels: int
    samples_per_latent: int  # input samples per latent (hop x downsampling)
    causal_stride: int = 0  # 0: equal spans; s: causal over s sub-frames per latent
    output_sample_rate: int

    @property
    def latent_rate(self) -> float:
        return self.sample_rate / self.samples_per_latent

    def encode(self, waveform: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def num_latents(self, samples: int) -> int:
        """How many latents ``encode`` makes of ``samples`` input samples."""
        raise NotImplementedError

    def check_latents(self, waveform: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        want = (self.latent_channels, self.num_latents(waveform.shape[-1]))
        if tuple(latents.shape[1:]) != want:
            raise RuntimeError(f"{self.name} audio VAE made latents {tuple(latents.shape[1:])} from "
                               f"{waveform.shape[-1]} samples, expected {want} from its config")
        return latents
