"""Wan 2.x's video VAE (diffusers ``AutoencoderKLWan``): causal, 4x temporal, 8x (2.1) or 16x
(2.2, patch size 2) spatial, as its config's ``scale_factor_temporal`` / ``scale_factor_spatial``
say. Latents are normalised per channel with the config's ``latents_mean`` / ``latents_std``,
``(z - mean) / std``, as ``WanPipeline`` / ``WanImageToVideoPipeline`` do. The VAE streams
time in 4-frame chunks itself; ``tiling`` adds its spatial tiles for large frames.
"""

from __future__ import annotations

import torch

from model.encoders.base import VideoAutoencoder, denormalise, normalise


class WanVideo(VideoAutoencoder):
    name = "wan"

    def __init__(self, vae, tiling: bool = True):
        super().__init__()
        cfg = vae.config
        if len(cfg.latents_mean) != cfg.z_dim or len(cfg.latents_std) != cfg.z_dim:
            raise ValueError(f"Wan VAE config: latents_mean/latents_std need z_dim={cfg.z_dim} entries")
        self.vae = vae
        self.latent_channels = cfg.z_dim
        self.temporal_stride, self.spatial_stride = cfg.scale_factor_temporal, cfg.scale_factor_spatial
        self.register_buffer("latents_mean", torch.tensor(cfg.latents_mean, dtype=torch.float32), persistent=False)
        self.register_buffer("latents_std", torch.tensor(cfg.latents_std, dtype=torch.float32), persistent=False)
        if tiling:
            vae.enable_tiling()

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        self.check_frames(pixels)
        z = self.vae.encode(pixels.to(self.vae.dtype)).latent_dist.mode().float()
        return normalise(self.check_latents(pixels, z), self.latents_mean, self.latents_std)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        z = denormalise(latents.float(), self.latents_mean, self.latents_std).to(self.vae.dtype)
        return self.vae.decode(z).sample.float().clamp(-1, 1)
