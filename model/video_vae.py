"""Causal 3D-convolutional video VAE: 8x spatial, 4x temporal (1 + 4k frames -> 1 + k).

Causality: every convolution pads time on the left only (repeating the first frame) and
norms are per position (RMS over channels), so latent frame k depends on frames <= 4k
only; latent 0 is frame 0 alone, which also makes an image a 1-frame video.

Long clips are encoded/decoded in temporal tiles by *streaming*: each causal conv keeps
the last few input frames of the previous tile as its left context, which gives exactly
the result of processing the clip in one piece, in bounded memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from model.vae_common import DiagonalGaussian, VAELoss, vae_loss


@dataclass
class VideoVAEConfig:
    in_channels: int = 3
    latent_channels: int = 16
    base_channels: int = 128
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)  # one downsample between levels: 8x
    temporal_down: tuple[bool, ...] = (False, True, True)  # which downsamples halve time
    num_res_blocks: int = 2
    kl_weight: float = 1e-6
    tile_frames: int = 16  # pixel frames per streamed tile (after frame 0); multiple of 4

    @property
    def temporal_stride(self) -> int:
        return 2 ** sum(self.temporal_down)

    @property
    def spatial_stride(self) -> int:
        return 2 ** (len(self.channel_mult) - 1)


VIDEO_VAE_PRESETS = {
    "debug": VideoVAEConfig(latent_channels=8, base_channels=16, channel_mult=(1, 2, 2, 4),
                            num_res_blocks=1, tile_frames=8),
    "base": VideoVAEConfig(),
}


class CausalConv3d(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: tuple[int, int, int] = (1, 1, 1)):
        super().__init__()
        self.kt, self.st = kernel, stride[0]
        self.conv = nn.Conv3d(cin, cout, kernel, stride, padding=(0, kernel // 2, kernel // 2))
        self.streaming, self.cache = False, None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.streaming and self.cache is not None:
            x = torch.cat([self.cache, x], dim=2)
        elif self.kt > 1:
            x = torch.cat([x[:, :, :1].expand(-1, -1, self.kt - 1, -1, -1), x], dim=2)
        if self.streaming:  # keep the frames the next tile's first outputs still need
            used = ((x.shape[2] - self.kt) // self.st + 1) * self.st
            self.cache = x[:, :, used:].detach()
        return self.conv(x)


class ChannelNorm(nn.Module):
    """RMS norm over channels at each (t, h, w): unlike GroupNorm it never looks ahead."""

    def __init__(self, c: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(1, keepdim=True) + 1e-6) * self.weight


class ResBlock3d(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.body = nn.Sequential(ChannelNorm(cin), nn.SiLU(), CausalConv3d(cin, cout),
                                  ChannelNorm(cout), nn.SiLU(), CausalConv3d(cout, cout))
        self.skip = nn.Conv3d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x):
        return self.skip(x) + self.body(x)


class Upsample(nn.Module):
    """2x space (nearest + conv) and optionally 2x time: 1 + k frames -> 1 + 2k."""

    def __init__(self, c: int, temporal: bool):
        super().__init__()
        self.temporal = temporal
        self.conv = CausalConv3d(c, c * (2 if temporal else 1))
        self.streaming, self.first = False, True

    def forward(self, x):
        b, c, t, h, w = x.shape
        x = self.conv(F.interpolate(x, size=(t, 2 * h, 2 * w), mode="nearest"))
        if not self.temporal:
            return x
        x = x.view(b, 2, c, t, 2 * h, 2 * w).permute(0, 2, 3, 1, 4, 5).reshape(b, c, 2 * t, 2 * h, 2 * w)
        if self.first:  # latent frame 0 stands for one frame, not two
            x = x[:, :, 1:]
            self.first = not self.streaming
        return x


def _levels(cfg: VideoVAEConfig) -> list[int]:
    return [cfg.base_channels * m for m in cfg.channel_mult]


class VideoEncoder(nn.Module):
    def __init__(self, cfg: VideoVAEConfig):
        super().__init__()
        chans = _levels(cfg)
        layers: list[nn.Module] = [CausalConv3d(cfg.in_channels, chans[0])]
        c = chans[0]
        for i, level in enumerate(chans):
            for _ in range(cfg.num_res_blocks):
                layers.append(ResBlock3d(c, level))
                c = level
            if i < len(chans) - 1:
                layers.append(CausalConv3d(c, c, stride=(2 if cfg.temporal_down[i] else 1, 2, 2)))
        layers += [ResBlock3d(c, c), ChannelNorm(c), nn.SiLU(), CausalConv3d(c, 2 * cfg.latent_channels)]
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class VideoDecoder(nn.Module):
    def __init__(self, cfg: VideoVAEConfig):
        super().__init__()
        chans = _levels(cfg)[::-1]
        c = chans[0]
        layers: list[nn.Module] = [CausalConv3d(cfg.latent_channels, c), ResBlock3d(c, c)]
        ups = cfg.temporal_down[::-1]
        for i, level in enumerate(chans):
            for _ in range(cfg.num_res_blocks + 1):
                layers.append(ResBlock3d(c, level))
                c = level
            if i < len(chans) - 1:
                layers.append(Upsample(c, ups[i]))
        layers += [ChannelNorm(c), nn.SiLU(), CausalConv3d(c, cfg.in_channels)]
        self.net = nn.Sequential(*layers)

    def forward(self, z):
        return self.net(z)


class VideoVAE(nn.Module):
    """``encode`` pixels in [-1, 1] (B, 3, 1 + 4k, H, W) -> posterior over (B, C, 1 + k, H/8, W/8);
    ``decode`` latents -> pixels. Both stream over time when the clip is longer than a tile."""

    def __init__(self, cfg: VideoVAEConfig):
        super().__init__()
        if cfg.tile_frames % cfg.temporal_stride:
            raise ValueError(f"tile_frames {cfg.tile_frames} must be a multiple of {cfg.temporal_stride}")
        self.cfg = cfg
        self.encoder = VideoEncoder(cfg)
        self.decoder = VideoDecoder(cfg)

    def _stream(self, on: bool) -> None:
        for m in self.modules():
            if isinstance(m, CausalConv3d | Upsample):
                m.streaming, m.cache, m.first = on, None, True

    def _tiled(self, net: nn.Module, x: torch.Tensor, first: int, tile: int) -> torch.Tensor:
        if x.shape[2] <= first + tile:
            return net(x)
        self._stream(True)
        try:
            chunks = [x[:, :, :first]] + list(x[:, :, first:].split(tile, dim=2))
            return torch.cat([net(c) for c in chunks], dim=2)
        finally:
            self._stream(False)

    def encode(self, x: torch.Tensor, tiled: bool = True) -> DiagonalGaussian:
        s = self.cfg.temporal_stride
        if (x.shape[2] - 1) % s:
            raise ValueError(f"video needs 1 + {s}k frames, got {x.shape[2]}")
        tile = self.cfg.tile_frames if tiled else x.shape[2]
        return DiagonalGaussian(self._tiled(self.encoder, x, 1, tile))

    def decode(self, z: torch.Tensor, tiled: bool = True) -> torch.Tensor:
        tile = self.cfg.tile_frames // self.cfg.temporal_stride if tiled else z.shape[2]
        return self._tiled(self.decoder, z, 1, tile)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None):
        posterior = self.encode(x, tiled=False)
        return self.decode(posterior.sample(generator), tiled=False), posterior

    def loss(self, x: torch.Tensor, generator: torch.Generator | None = None) -> VAELoss:
        recon, posterior = self(x, generator)
        return vae_loss(recon, x, posterior, self.cfg.kl_weight)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def flops_per_pixel(self, frames: int = 9, size: int = 64) -> float:
        """Forward FLOPs (encode + decode) per input pixel, counted on a small clip; conv
        cost is linear in pixels, so this scales to any resolution (for MFU)."""
        p = next(self.parameters())
        x = torch.zeros(1, self.cfg.in_channels, frames, size, size, device=p.device, dtype=p.dtype)
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            self.decode(self.encode(x, tiled=False).mode(), tiled=False)
        return counter.get_total_flops() / (frames * size * size)
