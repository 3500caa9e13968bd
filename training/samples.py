"""Periodic generated samples during training: the current batch's captions -> mp4 with audio.

Sampling runs on every rank because under ZeRO-3 each forward gathers parameters
collectively; only the writing rank decodes and writes files. ``decoder`` names the
encoders that made the latents (training/encoders.py: video and audio autoencoders, the
audio's vocoder); ``tandem train`` refuses to start when it does not match the latents'
format, and decoding goes through ``training.encoders.load_decoder``, the one decode path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from training.encoders import EncoderConfig, load_decoder


@dataclass
class SampleConfig:
    every: int = 0  # steps between samples; 0 = never
    count: int = 1  # clips per sampling, captions taken from the current batch
    steps: int = 8  # Euler steps of the ODE sampler
    shift: float = 3.0
    video_guidance: float = 3.0
    audio_guidance: float = 3.0
    decoder: EncoderConfig = field(default_factory=EncoderConfig)  # the encoders that made the latents


class Sampler:
    def __init__(self, cfg: SampleConfig, seed: int = 0):
        self.cfg, self.seed = cfg, seed
        self._decoder = None

    def decoder(self, device: torch.device | str = "cpu"):
        """The decoders, loaded once, on the training device (a GPU decodes a 720p sample in
        seconds, a CPU in minutes)."""
        if self._decoder is None:
            self._decoder = load_decoder(self.cfg.decoder, device)
        return self._decoder

    def due(self, step: int) -> bool:
        return self.cfg.every > 0 and step % self.cfg.every == 0

    @torch.no_grad()
    def sample(self, model, batch: dict, fps: float, step: int, out_dir: Path | None) -> list[Path]:
        """Generate for the first ``count`` captions of ``batch`` (call on every rank); the
        rank given an ``out_dir`` writes ``step{N}_{key}.mp4`` + ``.txt`` and returns them."""
        from model.conditioning import Conditioning
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
        clip = self.decoder(device).decode(lat_v.float(), lat_a.float(), fps)
        paths = []
        keys = batch.get("keys") or [str(i) for i in range(n)]
        for i, meta in enumerate(batch["meta"][:n]):
            stem = out_dir / f"step{step:08d}_{keys[i]}"
            paths.append(clip.save_mp4(stem.with_suffix(".mp4"), i))
            caption = meta.get("caption_used") or meta.get("caption", {}).get("text", "")
            stem.with_suffix(".txt").write_text(caption + "\n")
            paths.append(stem.with_suffix(".txt"))
        return paths
