"""The ``media`` backbone: a small model trained from scratch on what a viewer gets, the decoded
frames and waveform, and on the prompt's words.

    picture  frames (up to ``frames``, evenly spread) at ``size`` x ``size``; per frame the
             spatial mean of each colour channel, averaged over the frames (optionally also
             strided conv layers' means, spreads, and the mean change between frames)
    sound    mel spectrogram of the mono mix -> the long-term average spectrum's shape (each
             band's log power relative to the bands' mean) and level, and how much each band
             moves over time
    prompt   its words, hashed into ``vocab`` buckets -> a bag of learned embeddings

The clip's features pass a BatchNorm (decoded debug clips differ by hundredths of full scale).
Each head's feature is then the clip's features times what the prompt's words make of them for
that head (a learned direction per head, plus the words' embeddings projected per head), next
to the features' squares: a head's score is bilinear in clip and prompt plus a quadratic in the
clip, so it can prefer a colour or a spectrum *near* what the prompt names. Only clips of the
same prompt are ever compared, so what depends on the prompt alone cannot matter; what is left
to learn is how each word weighs the clip's features. Words start at zero: a word the rankings
never used (a new subject) adds nothing, rather than noise. Nothing is pretrained: every
weight learns from the rankings, so the model knows a word only from judgements of prompts
that use it, and a colour never named in training stays unknown.

These are generic low-level descriptors (colour moments, the long-term average spectrum), not
a judge's rule: which colour or spectrum a word asks for, and how much each matters, is
learned. Richer variants (``channels``, ``spread``, ``clip_mlp``) fit the training rankings as
well and generalise worse on a few hundred judgements.

It decodes nothing itself (``reward.scoring.clip_store.decode_media`` does, once per clip:
``cache_inputs``), and trains on a CPU in a minute for a few hundred debug clips.
"""

from __future__ import annotations

import itertools
import math
import re
import zlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from reward.scoring.sources import Clips


@dataclass
class MediaBackboneConfig:
    dim: int = 16  # width of the prompt's word embeddings (and of the clip MLP's output, with clip_mlp)
    frames: int = 64  # frames read per clip, evenly spread
    size: int = 32  # frames are area-averaged to size x size
    # Strided 3x3 conv layers' widths; () = the pixels' own statistics only. On a few hundred
    # judgements, conv features (and clip_mlp) memorise the training clips (benchmarks/reward_accuracy.py).
    channels: tuple = ()
    n_mels: int = 8
    n_fft: int = 512
    vocab: int = 4096  # hash buckets for the prompt's words
    spread: bool = False  # also each feature's spread (over space; for sound, over time) and the motion
    # An MLP on the clip's features; False: the normalised features themselves and their squares (a
    # head then prefers a feature near what the prompt names, not only more of it)
    clip_mlp: bool = False
    dropout: float = 0.0  # in the clip MLP
    # > 0: each normalised feature passes bound * tanh(x / bound), so a clip far outside what the
    # rankings showed (where an aligned policy drifts) cannot score without limit. 0: off.
    bound: float = 0.0


def mel_filterbank(n_mels: int, n_fft: int, sample_rate: int) -> torch.Tensor:
    """(n_mels, n_fft // 2 + 1) triangular filters evenly spaced on the HTK mel scale
    (O'Shaughnessy, "Speech Communication", 1987: mel = 2595 log10(1 + f / 700))."""
    to_mel = lambda hz: 2595 * math.log10(1 + hz / 700)  # noqa: E731
    mels = torch.linspace(0, to_mel(sample_rate / 2), n_mels + 2)
    edges = 700 * (10 ** (mels / 2595) - 1)
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    low, centre, high = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs - low) / (centre - low).clamp_min(1e-6)
    falling = (high - freqs) / (high - centre).clamp_min(1e-6)
    return torch.clamp(torch.minimum(rising, falling), min=0)


def word_buckets(prompt: str, vocab: int) -> list[int]:
    """The prompt's lower-case words as bucket ids (crc32: the same in every process)."""
    return [zlib.crc32(w.encode()) % vocab for w in re.findall(r"[a-z]+", prompt.lower())] or [0]


class MediaBackbone(nn.Module):
    uses = "media"
    cache_inputs = True  # decoded debug clips are small: decode each once per training run

    def __init__(self, cfg: MediaBackboneConfig, heads: tuple[str, ...]):
        super().__init__()
        self.cfg, self.n_heads = cfg, len(heads)
        widths = (3, *cfg.channels)
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, stride=2, padding=1) for a, b in itertools.pairwise(widths))
        picture = (2 * sum(widths) + 3) if cfg.spread else sum(widths)  # per channel of each level
        sound = (2 if cfg.spread else 1) * cfg.n_mels + 1
        self.clip_norm = nn.BatchNorm1d(picture + sound)
        d = cfg.dim
        width = d if cfg.clip_mlp else picture + sound
        self.clip_proj = (nn.Sequential(nn.Linear(picture + sound, d), nn.GELU(), nn.Dropout(cfg.dropout),
                                        nn.Linear(d, d)) if cfg.clip_mlp else nn.Identity())
        self.words = nn.EmbeddingBag(cfg.vocab, d, mode="mean")
        nn.init.zeros_(self.words.weight)
        self.word_heads = nn.Linear(d, self.n_heads * width, bias=False)
        self.queries = nn.Parameter(torch.randn(self.n_heads, width) / math.sqrt(width))
        self.feature_dim = width if cfg.clip_mlp else 2 * width
        self._mel: dict[int, torch.Tensor] = {}

    def _picture(self, video: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) in [-1, 1] -> (B, picture features)."""
        b, _, t = video.shape[:3]
        pick = torch.linspace(0, t - 1, min(self.cfg.frames, t)).round().long().to(video.device)
        frames = video[:, :, pick].transpose(1, 2).flatten(0, 1).float()  # (B*T', 3, H, W)
        frames = F.adaptive_avg_pool2d(frames, self.cfg.size)
        levels = [frames]
        for conv in self.convs:
            levels.append(F.gelu(conv(levels[-1])))
        stats = torch.cat([torch.cat([x.mean((2, 3)), x.std((2, 3))], 1) if self.cfg.spread else x.mean((2, 3))
                           for x in levels], 1)
        stats = stats.view(b, len(pick), -1).mean(1)
        if not self.cfg.spread:
            return stats
        per_frame = frames.view(b, len(pick), 3, -1).mean(-1)
        motion = per_frame.diff(dim=1).abs().mean(1) if len(pick) > 1 else torch.zeros_like(per_frame[:, 0])
        return torch.cat([stats, motion], 1)

    def _sound(self, audio: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """(B, channels, N) in [-1, 1] -> the long-term average spectrum in mel bands as its shape
        (each band's log power relative to the bands' mean: timbre, whatever the level) and its
        level, and with ``spread`` how much each band's log level moves over time."""
        cfg = self.cfg
        mono = audio.float().mean(1)
        if mono.shape[1] < cfg.n_fft:
            mono = F.pad(mono, (0, cfg.n_fft - mono.shape[1]))
        if sample_rate not in self._mel:
            self._mel[sample_rate] = mel_filterbank(cfg.n_mels, cfg.n_fft, sample_rate)
        spec = torch.stft(mono, cfg.n_fft, cfg.n_fft // 2, window=torch.hann_window(cfg.n_fft, device=mono.device),
                          return_complex=True).abs().pow(2)  # (B, F, frames)
        bands = self._mel[sample_rate].to(spec) @ spec  # (B, n_mels, frames)
        average = torch.log10(bands.mean(-1) + 1e-8)
        level = average.mean(1, keepdim=True)
        features = [average - level, level]
        if cfg.spread:
            per_frame = torch.log10(bands + 1e-8)
            features.append(per_frame.std(-1) if per_frame.shape[-1] > 1 else torch.zeros_like(average))
        return torch.cat(features, 1)

    def _prompt(self, prompts: list[str], device: torch.device) -> torch.Tensor:
        ids = [word_buckets(p, self.cfg.vocab) for p in prompts]
        offsets = torch.tensor([0, *torch.tensor([len(i) for i in ids]).cumsum(0)[:-1].tolist()], device=device)
        return self.words(torch.tensor([w for i in ids for w in i], device=device), offsets)

    def forward(self, clips: Clips) -> torch.Tensor:
        if clips.video is None or clips.audio is None:
            raise ValueError("the media reward backbone needs decoded video and audio (Clips.video, Clips.audio)")
        dtype = self.words.weight.dtype
        clip = torch.cat([self._picture(clips.video.to(dtype)), self._sound(clips.audio, clips.sample_rate)], 1)
        clip = clip.to(dtype)
        if self.training and len(clip) == 1:  # a lone clip has no batch statistics: use the running ones
            norm = self.clip_norm
            clip = F.batch_norm(clip, norm.running_mean, norm.running_var, norm.weight, norm.bias, False, 0.0, norm.eps)
        else:
            clip = self.clip_norm(clip)
        if self.cfg.bound > 0:
            clip = self.cfg.bound * torch.tanh(clip / self.cfg.bound)
        clip = self.clip_proj(clip)
        text = self._prompt(clips.prompts, clip.device).to(dtype)
        weighs = self.word_heads(text).view(len(clip), self.n_heads, -1) + self.queries.to(dtype)
        features = clip[:, None] * weighs
        if self.cfg.clip_mlp:
            return features
        return torch.cat([features, (clip**2)[:, None].expand(-1, self.n_heads, -1)], -1)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return self.state_dict()

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        self.load_state_dict(state)
