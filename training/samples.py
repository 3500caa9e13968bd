"""Periodic generated samples during training: the current batch's captions -> mp4 with audio.

Sampling runs on every rank because under ZeRO-3 each forward gathers parameters
collectively; only the writing rank decodes (video VAE, audio VAE + vocoder) and writes
files. The VAEs are the ones named in ``decoder``, i.e. those that made the latents.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from training.clip_encoder import EncoderConfig, load_vaes


@dataclass
class SampleConfig:
    every: int = 0  # steps between samples; 0 = never
    count: int = 1  # clips per sampling, captions taken from the current batch
    steps: int = 8  # Euler steps of the ODE sampler
    shift: float = 3.0
    video_guidance: float = 3.0
    audio_guidance: float = 3.0
    decoder: EncoderConfig = field(default_factory=EncoderConfig)  # the VAEs that made the latents
    vocoder_weights: str = ""  # HiFi-GAN safetensors; "" = Griffin-Lim (no weights)


def batch_sequence(video: torch.Tensor, fps: float, spatial_stride: int = 8, temporal_stride: int = 4):
    """The SequenceConfig whose latents have ``video``'s (B, C, T, H, W) shape at ``fps``."""
    from model.sequence import SequenceConfig

    t, h, w = video.shape[2:]
    return SequenceConfig(duration_s=temporal_stride * (t - 1) / fps, fps=fps, height=h * spatial_stride,
                          width=w * spatial_stride)


def load_decoders(decoder: EncoderConfig, vocoder_weights: str = "", device: torch.device | str = "cpu"):
    """(video VAE, audio VAE, vocoder) that turn latents made by ``decoder``'s encoders back
    into frames and a waveform: the one place training samples and ``tandem generate`` get
    their decoders. ``vocoder_weights`` "" = Griffin-Lim (no weights)."""
    from model.vocoder import GriffinLimVocoder, HiFiGANVocoder

    video_vae, audio_vae = load_vaes(decoder, device)
    if vocoder_weights:
        from model.checkpoint import load
        from model.vocoder import HiFiGANConfig

        vocoder = load(HiFiGANVocoder, HiFiGANConfig, vocoder_weights, device)
    else:
        vocoder = GriffinLimVocoder(audio_vae.cfg.mel).to(device)
    return video_vae, audio_vae, vocoder.eval()


class Sampler:
    def __init__(self, cfg: SampleConfig, seed: int = 0):
        self.cfg, self.seed = cfg, seed
        self._decoders = None

    def _decode_models(self):
        if self._decoders is None:
            self._decoders = load_decoders(self.cfg.decoder, self.cfg.vocoder_weights)
        return self._decoders

    def due(self, step: int) -> bool:
        return self.cfg.every > 0 and step % self.cfg.every == 0

    @torch.no_grad()
    def sample(self, model, batch: dict, fps: float, step: int, out_dir: Path | None) -> list[Path]:
        """Generate for the first ``count`` captions of ``batch`` (call on every rank); the
        rank given an ``out_dir`` writes ``step{N}_{key}.mp4`` + ``.txt`` and returns them."""
        from model.conditioning import Conditioning
        from model.generate import decode_latents
        from model.sampling import Guidance, sample_ode

        n = min(self.cfg.count, batch["video"].shape[0])
        param = next(model.parameters())
        device, dtype = param.device, (torch.bfloat16 if param.dtype == torch.bfloat16 else torch.float32)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        noise_v = torch.randn(batch["video"][:n].shape, generator=g).to(device, dtype)
        noise_a = torch.randn(batch["audio"][:n].shape, generator=g).to(device, dtype)
        cond = Conditioning(batch["text_emb"][:n].to(device, dtype), batch["text_mask"][:n].to(device), fps=fps)
        guidance = Guidance(self.cfg.video_guidance, self.cfg.audio_guidance)
        lat_v, lat_a = sample_ode(model, noise_v, noise_a, cond, self.cfg.steps, self.cfg.shift, guidance)
        if out_dir is None:
            return []
        video_vae, audio_vae, vocoder = self._decode_models()
        clip = decode_latents(video_vae, audio_vae, vocoder, lat_v.float().cpu(), lat_a.float().cpu(),
                              batch_sequence(lat_v, fps))
        paths = []
        keys = batch.get("keys") or [str(i) for i in range(n)]
        for i, meta in enumerate(batch["meta"][:n]):
            stem = out_dir / f"step{step:08d}_{keys[i]}"
            paths.append(clip.save_mp4(stem.with_suffix(".mp4"), i))
            caption = meta.get("caption_used") or meta.get("caption", {}).get("text", "")
            stem.with_suffix(".txt").write_text(caption + "\n")
            paths.append(stem.with_suffix(".txt"))
        return paths
