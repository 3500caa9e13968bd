"""End-to-end joint generation: prompt -> video + audio latents -> frames + waveform -> mp4."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from model.audio_vae import AudioVAE
from model.dit import DualDiT
from model.media import AVClip
from model.references import Reference
from model.sampling import Guidance, KnownLatents, sample_ode
from model.sequence import SequenceConfig
from model.text_encoder import TextEncoder
from model.video_vae import VideoVAE
from model.vocoder import Vocoder


@dataclass
class GenerationConfig:
    sequence: SequenceConfig = field(default_factory=SequenceConfig)
    steps: int = 30
    shift: float = 3.0
    video_guidance: float = 5.0
    audio_guidance: float = 4.0
    seed: int = 0


@dataclass
class GeneratedClip(AVClip):
    """Decoded clips and the latents they were decoded from."""

    video_latents: torch.Tensor
    audio_latents: torch.Tensor


class JointGenerator:
    """Holds the five models; ``generate`` runs the ODE sampler and decodes both tracks."""

    def __init__(self, dit: DualDiT, video_vae: VideoVAE, audio_vae: AudioVAE,
                 text_encoder: TextEncoder, vocoder: Vocoder):
        self.dit, self.video_vae, self.audio_vae = dit, video_vae, audio_vae
        self.text_encoder, self.vocoder = text_encoder, vocoder

    @torch.no_grad()
    def generate(self, prompts: list[str], cfg: GenerationConfig = GenerationConfig(),
                 references: list[Reference] | None = None,
                 known: KnownLatents | None = None) -> GeneratedClip:
        seq = cfg.sequence
        device = next(self.dit.parameters()).device
        cond = self.text_encoder.encode(prompts, references, fps=seq.fps)
        g = torch.Generator().manual_seed(cfg.seed)
        b = len(prompts)
        video_shape = (b, self.dit.cfg.video.latent_channels, *seq.video_latent_shape)
        audio_shape = (b, self.dit.cfg.audio.latent_channels, seq.audio_latents)
        noise_v = torch.randn(video_shape, generator=g).to(device)
        noise_a = torch.randn(audio_shape, generator=g).to(device)
        guidance = Guidance(cfg.video_guidance, cfg.audio_guidance)
        lat_v, lat_a = sample_ode(self.dit, noise_v, noise_a, cond, cfg.steps, cfg.shift, guidance, known)
        return self.decode(lat_v, lat_a, seq)

    def decode(self, video_latents: torch.Tensor, audio_latents: torch.Tensor,
               seq: SequenceConfig) -> GeneratedClip:
        return decode_latents(self.video_vae, self.audio_vae, self.vocoder, video_latents, audio_latents, seq)


@torch.no_grad()
def decode_latents(video_vae: VideoVAE, audio_vae: AudioVAE, vocoder: Vocoder, video_latents: torch.Tensor,
                   audio_latents: torch.Tensor, seq: SequenceConfig) -> GeneratedClip:
    """Latents -> frames (video VAE) and waveform (audio VAE -> mel -> vocoder), ``seq`` long."""
    video = video_vae.decode(video_latents)
    log_mel = audio_vae.mel_to_log_mel(audio_vae.decode(audio_latents))
    audio = vocoder(log_mel[..., : seq.mel_frames])
    audio = torch.nn.functional.pad(audio, (0, max(0, seq.audio_samples - audio.shape[-1])))
    return GeneratedClip(video, audio[..., : seq.audio_samples], seq.fps, seq.sample_rate, video_latents,
                         audio_latents)
