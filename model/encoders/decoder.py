"""Latents -> a playable clip: the video and audio autoencoders that made the latents, decoding
together so both tracks last exactly as long as the frames."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from model.encoders.base import AudioAutoencoder, VideoAutoencoder
from model.media import AVClip


class AVDecoder:
    """``decode(video_latents, audio_latents, fps)`` with the pair of autoencoders that made them."""

    def __init__(self, video: VideoAutoencoder, audio: AudioAutoencoder):
        self.video, self.audio = video.eval(), audio.eval()

    @property
    def device(self) -> torch.device:
        return next(self.video.parameters()).device

    @torch.no_grad()
    def decode(self, video_latents: torch.Tensor, audio_latents: torch.Tensor, fps: float) -> AVClip:
        """Latents (B, C, t, h, w) and (B, C', T) at pixel rate ``fps`` -> frames in [-1, 1] and
        a waveform trimmed or padded with silence to the frames' duration."""
        video = self.video.decode(video_latents.to(self.device)).cpu()
        audio = self.audio.decode(audio_latents.to(next(self.audio.parameters()).device)).cpu()
        rate = self.audio.output_sample_rate
        samples = round(video.shape[2] / fps * rate)
        audio = F.pad(audio, (0, max(0, samples - audio.shape[-1])))[..., :samples]
        return AVClip(video, audio.clamp(-1, 1), fps, rate)
