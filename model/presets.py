"""Named DualDiT sizes, fitted to the latents they train on.

``get_preset(name, latents)`` returns a fresh, editable config: the transformer's size comes
from the name, its input and output geometry (latent channels, patch size, strides and
rates, text width) from ``latents``, a :class:`LatentGeometry` describing the encoders that
made the training data (``training.latent_shards.LatentFormat.geometry()``). Without one, a
preset gets the geometry it was sized for (its ``DEFAULT_LATENTS`` entry).

=======  =====  ==============  ==============  ==================  ============================
preset   depth  video dim/heads audio dim/heads sized for            parameters (tested)
=======  =====  ==============  ==============  ==================  ============================
debug    4      128 / 4         96 / 3          tandem:debug VAEs    2.4M: trains on a CPU in seconds
small    12     1024 / 16       512 / 8         Wan 2.1 + Oobleck    0.33B
1b       17     1536 / 12       768 / 6         LTX-2 video + audio  1.02B
14b      40     4096 / 32       1536 / 12       LTX-2 video + audio  14.2B (Seedance-class, asymmetric)
=======  =====  ==============  ==============  ==================  ============================

Patch size: a video token covers ``TOKEN_PIXELS`` (16) pixels a side where the VAE allows it,
i.e. a 2x2 patch on 8x VAEs (tandem, Wan 2.1) and 1x1 on 16x/32x ones (Wan 2.2, LTX-2, whose
own transformer also uses 1x1); one latent per audio token. Larger presets use a 4096-wide
text encoder (UMT5-XXL); audio is narrower than video because it carries ~100x fewer
tokens per second.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from model.dit import BranchConfig, DualDiTConfig

TOKEN_PIXELS = 16


@dataclass
class LatentGeometry:
    """What a DualDiT's input and output layers must match."""

    video_channels: int = 8
    video_temporal_stride: int = 4
    video_spatial_stride: int = 8
    audio_channels: int = 8
    audio_latent_rate: float = 25.0
    audio_causal_stride: int = 0  # see model.sequence.audio_latent_times
    text_width: int = 64
    fps: float = 24.0  # pixel frame rate of the clips, for RoPE seconds when forward() is not told


# What each preset is sized for: the published encoders' real geometry.
ENCODER_LATENTS = {
    "tandem:debug": LatentGeometry(8, 4, 8, 8, 25.0, 0, 64, 24.0),
    "wan2.1+oobleck": LatentGeometry(16, 4, 8, 64, 44100 / 2048, 0, 4096, 16.0),
    "ltx2": LatentGeometry(128, 8, 32, 128, 25.0, 4, 4096, 24.0),
}
DEFAULT_LATENTS = {"debug": "tandem:debug", "small": "wan2.1+oobleck", "1b": "ltx2", "14b": "ltx2"}

def _branches(video: tuple[int, int], audio: tuple[int, int]) -> dict:
    return {"video": BranchConfig(*video, patch=(1, 2, 2)), "audio": BranchConfig(*audio, patch=(1,))}


PRESETS: dict[str, DualDiTConfig] = {  # (dim, heads) per branch; geometry comes from the latents
    "debug": DualDiTConfig(depth=4, **_branches((128, 4), (96, 3))),
    "small": DualDiTConfig(depth=12, **_branches((1024, 16), (512, 8))),
    "1b": DualDiTConfig(depth=17, **_branches((1536, 12), (768, 6))),
    "14b": DualDiTConfig(depth=40, **_branches((4096, 32), (1536, 12)), mlp_ratio=3.5),
}


def fit_to_latents(cfg: DualDiTConfig, latents: LatentGeometry) -> DualDiTConfig:
    """``cfg`` with its input/output geometry set from ``latents`` (in place; returned)."""
    p = max(1, TOKEN_PIXELS // latents.video_spatial_stride)
    cfg.video.latent_channels, cfg.video.patch = latents.video_channels, (1, p, p)
    cfg.audio.latent_channels, cfg.audio.patch = latents.audio_channels, (1,)
    cfg.text_dim = latents.text_width
    cfg.video_temporal_stride, cfg.fps = latents.video_temporal_stride, latents.fps
    cfg.audio_latent_rate, cfg.audio_causal_stride = latents.audio_latent_rate, latents.audio_causal_stride
    return cfg


def get_preset(name: str, latents: LatentGeometry | None = None) -> DualDiTConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown DualDiT preset {name!r}; choose one of {sorted(PRESETS)}")
    return fit_to_latents(copy.deepcopy(PRESETS[name]), latents or ENCODER_LATENTS[DEFAULT_LATENTS[name]])


def preset_name(cfg: DualDiTConfig) -> str:
    """The preset ``cfg`` was built from, at whatever latent geometry, or ""."""
    for name, preset in PRESETS.items():
        sized = copy.deepcopy(preset)
        for branch in ("video", "audio"):  # what fit_to_latents sets
            ours, theirs = getattr(sized, branch), getattr(cfg, branch)
            ours.latent_channels, ours.patch = theirs.latent_channels, theirs.patch
        for key in ("text_dim", "video_temporal_stride", "fps", "audio_latent_rate", "audio_causal_stride"):
            setattr(sized, key, getattr(cfg, key))
        if sized == cfg:
            return name
    return ""
