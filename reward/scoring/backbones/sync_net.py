"""A SyncNet on latents: how far the sound of a clip lags its picture, read from its latents.

SyncNet (Chung & Zisserman 2016, "Out of time: automated lip sync in the wild", sec. 4) embeds
short windows of video and audio into one space and takes a clip's A/V offset as the shift at
which the two streams are closest. This is that, on tandem's latents, so a reward model can
judge sync without decoding a frame:

    e_v(f) = max over latent locations of a temporal conv of [z_v, dz_v] at each location,
             which gives one embedding per *frame* (4 per causal latent: frames 4k-3..4k), so
             an event can sit on any frame and not only at a latent's centre
    e_a(t) = a temporal conv of [z_a, dz_a]              (both L2-normalised, width ``dim``)
    s(l)   = mean over t of <e_v(t), e_a(t + l)>,  l in -L..L audio latents
    p(l)   = softmax(scale * s(l))                  the distribution of the clip's offset

The frame embeddings are interpolated to the audio latents' centre times
(``model.sequence.audio_latent_times``), so ``l`` is in audio latents and ``lag_seconds`` says
what that is in seconds; positive ``l``: the sound comes late. Summing over every t, not
picking one event, is what makes this hold for speech and music (many events) as well as for a
single clap. On the simulation's clips (``reward.annotation.simulate``), per-frame video embeddings
cut the median error on unseen scenes from 44 ms (one per latent) to 31 ms.

It learns from clips of known offset (``reward.scoring.sync_pretrain``: in-sync footage with its
sound shifted), with ``offset_loss`` = E_p |l - true offset| (the expected error in seconds), rather
than from preference judgements, which say too little about timing to learn it from a few hundred
clips. A reward model uses it frozen (``LatentBackboneConfig.sync_net``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from model.sequence import audio_latent_times


@dataclass
class SyncNetConfig:
    video_channels: int = 8  # latent channels of the VAEs that made the latents
    audio_channels: int = 8
    dim: int = 8  # embedding width
    hidden: int = 32
    kernel: int = 7  # temporal conv width, in latents
    max_offset_s: float = 0.8  # offsets it can report: -max..max
    audio_latent_rate: float = 25.0
    video_temporal_stride: int = 4
    init_scale: float = 10.0  # softmax temperature of the similarities, learned
    normalize: bool = False  # each latent channel to zero mean, unit variance over the clip's time

    def __post_init__(self):
        if self.kernel % 2 == 0:
            raise ValueError(f"sync net: kernel must be odd (centred), got {self.kernel}")


def _embedder(channels: int, cfg: SyncNetConfig, outputs: int | None = None) -> nn.Sequential:
    pad = cfg.kernel // 2
    return nn.Sequential(nn.Conv1d(2 * channels, cfg.hidden, cfg.kernel, padding=pad), nn.GELU(),
                         nn.Conv1d(cfg.hidden, outputs or cfg.dim, cfg.kernel, padding=pad))


def _with_change(x: torch.Tensor, normalize: bool) -> torch.Tensor:
    """(N, C, T) -> (N, 2C, T): each latent and its change since the previous one (an onset)."""
    if normalize:  # what a scene's look or pitch shifts and scales, an event does not
        x = (x - x.mean(2, keepdim=True)) / (x.std(2, keepdim=True) + 1e-3)
    return torch.cat([x, torch.diff(x, dim=2, prepend=x[:, :, :1])], 1)


class LatentSyncNet(nn.Module):
    def __init__(self, cfg: SyncNetConfig):
        super().__init__()
        self.cfg = cfg
        self.video = _embedder(cfg.video_channels, cfg, outputs=cfg.dim * cfg.video_temporal_stride)
        self.audio = _embedder(cfg.audio_channels, cfg)
        self.scale = nn.Parameter(torch.tensor(float(cfg.init_scale)))
        self.max_lag = max(1, round(cfg.max_offset_s * cfg.audio_latent_rate))

    def lag_seconds(self, device=None) -> torch.Tensor:
        """(2L + 1,) the offsets ``forward``'s distribution is over, in seconds."""
        return torch.arange(-self.max_lag, self.max_lag + 1, device=device) / self.cfg.audio_latent_rate

    def embed(self, video: torch.Tensor, audio: torch.Tensor, fps: float):
        """Latents (B, Cv, Tv, h, w) and (B, Ca, Ta) -> unit embeddings (B, D, Ta) each, the
        video's interpolated to the audio latents' times."""
        b, c, t, h, w = video.shape
        stride = self.cfg.video_temporal_stride
        per_location = video.permute(0, 3, 4, 1, 2).reshape(b * h * w, c, t)
        e_video = self.video(_with_change(per_location, self.cfg.normalize)).view(b, h * w, -1, stride, t).amax(1)
        # one embedding per frame a latent summarises (frames 4k-3..4k), so that an event can sit
        # on any frame, not only at a latent's centre
        e_video = e_video.permute(0, 1, 3, 2).reshape(b, -1, t * stride)
        t_video = (torch.arange(t * stride, device=video.device) - stride + 1).float() / fps
        t = t * stride
        e_audio = self.audio(_with_change(audio, self.cfg.normalize))
        t_audio = audio_latent_times(audio.shape[2], self.cfg.audio_latent_rate, device=video.device)
        # linear interpolation of e_video at t_audio (held constant beyond the first/last latent)
        right = torch.searchsorted(t_video, t_audio).clamp(1, t - 1) if t > 1 else torch.zeros_like(t_audio).long()
        left = (right - 1).clamp(min=0)
        span = (t_video[right] - t_video[left]).clamp(min=1e-6)
        frac = ((t_audio - t_video[left]) / span).clamp(0, 1)
        e_video = e_video[..., left] * (1 - frac) + e_video[..., right] * frac
        return F.normalize(e_video, dim=1), F.normalize(e_audio, dim=1)

    def forward(self, video: torch.Tensor, audio: torch.Tensor, fps: float) -> torch.Tensor:
        """(B, 2L + 1) log-probabilities of the clip's offset over ``lag_seconds()``."""
        e_video, e_audio = self.embed(video.float(), audio.float(), fps)
        n = e_audio.shape[2]
        sims = []
        for lag in range(-self.max_lag, self.max_lag + 1):  # the sound ``lag`` latents late
            if abs(lag) >= n:
                sims.append(torch.zeros(e_audio.shape[0], device=e_audio.device))
            elif lag >= 0:
                sims.append((e_video[..., : n - lag] * e_audio[..., lag:]).sum(1).mean(-1))
            else:
                sims.append((e_video[..., -lag:] * e_audio[..., : n + lag]).sum(1).mean(-1))
        return (self.scale * torch.stack(sims, -1)).log_softmax(-1)

    def features(self, video: torch.Tensor, audio: torch.Tensor, fps: float) -> torch.Tensor:
        """(B, 1) what a reward head reads: minus the expected |offset|, in units of 10 ms (in
        sync scores highest). Not seconds: the reward trainer's Adam moves a head weight by
        about lr per step (~0.1 in a run), which must span the range of ``features``."""
        p = self(video, audio, fps).exp()
        return -(p * self.lag_seconds(p.device).abs()).sum(-1, keepdim=True) * 100


def offset_loss(log_p: torch.Tensor, lags: torch.Tensor, offset_s: torch.Tensor) -> torch.Tensor:
    """E_p |lag - offset| in seconds, averaged over the batch: the expected error, which
    rewards a sharp distribution at the right offset and, unlike a classification loss over
    latent bins, is not wrong by a bin for an offset between two of them."""
    return (log_p.exp() * (lags[None] - offset_s[:, None]).abs()).sum(-1).mean()
