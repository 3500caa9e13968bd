"""Stable Audio Open's waveform VAE (diffusers ``AutoencoderOobleck``): stereo 44.1 kHz in,
one latent per ``hop_length`` (2048) samples out, decoded straight back to a waveform (no
vocoder). ``StableAudioPipeline`` applies no latent scaling, so neither does this wrapper.
"""

from __future__ import annotations

import math

import torch

from model.encoders.base import AudioAutoencoder, pad_to_multiple


class OobleckAudio(AudioAutoencoder):
    name = "oobleck"

    def __init__(self, vae):
        super().__init__()
        self.vae = vae
        self.sample_rate = self.output_sample_rate = vae.config.sampling_rate
        self.channels = vae.config.audio_channels
        self.latent_channels = vae.config.decoder_input_channels
        self.samples_per_latent = vae.hop_length

    def num_latents(self, samples: int) -> int:
        return math.ceil(samples / self.samples_per_latent)

    def encode(self, waveform: torch.Tensor) -> torch.Tensor:
        padded = pad_to_multiple(waveform, self.samples_per_latent)  # the last latent's span ends in silence
        z = self.vae.encode(padded.to(self.vae.dtype)).latent_dist.mode().float()
        return self.check_latents(waveform, z)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latents.to(self.vae.dtype)).sample.float()
