"""The ``latent`` backbone: a small transformer over tandem's own latents and the prompt.

Tokens, one sequence per clip:

    [head queries (H)] [prompt (L)] [video patches (T x h/2 x w/2)] [audio latents (Ta)]

Video latents are cut into (1, 2, 2) patches (``model.dit.patchify``), audio latents are one
token each, the prompt's text embedding (the generator's own, stored with every rollout) is
projected to the model width. Video and audio tokens carry 3-axis RoPE over (time in seconds,
height, width) on one shared time axis (``model.sequence``'s token times, as in the DiT), so
an event in the picture and the sound at the same instant line up in attention: that is what
an A/V-sync head needs. Query and prompt tokens sit at position 0. Each head reads its own
query token after the last block (VideoAlign's reward tokens, here learned embeddings), next
to the mean of the video and audio tokens.

It scores latents directly, so alignment can use it without decoding a single frame, and it
trains on a CPU in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from model.dit import patchify
from model.layers import MLP, Attention, RMSNorm, head_axis_dims, rope_tables
from model.sequence import audio_latent_times, video_latent_times
from reward.scoring.sources import Clips


@dataclass
class LatentBackboneConfig:
    dim: int = 64
    depth: int = 2
    heads: int = 2
    mlp_ratio: float = 2.0
    video_channels: int = 8  # latent channels of the video VAE that made the latents
    audio_channels: int = 8
    text_dim: int = 64  # width of the rollouts' text_emb; 0 = the prompt is not used
    video_patch: tuple = (1, 2, 2)
    fps: float = 8.0  # frame rate of the clips the latents encode, when the clips do not say
    video_temporal_stride: int = 4
    audio_latent_rate: float = 25.0
    rope_time_scale: float = 25.0  # RoPE positions per second
    rope_theta: float = 10000.0
    # Each video patch also carries its change since the previous latent frame: motion is what a
    # video reward most often judges, and a difference is what attention finds hard to learn.
    motion_features: bool = True
    dropout: float = 0.1  # on every block's attention and MLP output, while training
    # A pretrained SyncNet on latents (``tandem reward sync-pretrain``'s output directory),
    # frozen: every head also reads its offset estimate, and ``sync_heads`` read only that.
    # Timing to tens of ms is more than a few hundred preference judgements teach the
    # transformer, which on them learns scene-specific guesses that cost held-out accuracy.
    sync_net: str = ""
    sync_heads: tuple = ("av_sync",)
    # A pretrained text-match net (``tandem reward text-pretrain``'s output directory), frozen:
    # every head also reads how much of the clip shows its prompt, and ``text_heads`` read only
    # that. Which prompt looks like what is more than a few hundred judgements teach.
    text_net: str = ""
    text_heads: tuple = ("prompt_alignment",)

    def __post_init__(self):
        if self.dim % self.heads or (self.dim // self.heads) % 2:
            raise ValueError(f"latent backbone: dim {self.dim} must split into {self.heads} even-sized heads")
        if len(self.video_patch) != 3:
            raise ValueError(f"latent backbone: video_patch must be (t, h, w), got {self.video_patch}")


class Block(nn.Module):
    """Pre-norm self-attention + MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float):
        super().__init__()
        self.norm_attn, self.norm_mlp = RMSNorm(dim), RMSNorm(dim)
        self.attn = Attention(dim, heads)
        self.mlp = MLP(dim, int(dim * mlp_ratio))
        self.drop = nn.Dropout(dropout)

    def forward(self, x, rope, mask):
        x = x + self.drop(self.attn(self.norm_attn(x), rope_q=rope, rope_k=rope, mask=mask))
        return x + self.drop(self.mlp(self.norm_mlp(x)))


class LatentBackbone(nn.Module):
    uses = "latents"

    def __init__(self, cfg: LatentBackboneConfig, heads: tuple[str, ...]):
        super().__init__()
        n_heads = len(heads)
        self.cfg, self.n_heads = cfg, n_heads
        self.sync = self.text_match = None
        owned = []  # per frozen net: the heads that read only it
        if cfg.sync_net:
            from reward.scoring.sync_pretrain import load_sync_net

            self.sync = load_sync_net(cfg.sync_net)
            owned.append(cfg.sync_heads)
        if cfg.text_net:
            from reward.scoring.text_pretrain import load_text_net

            self.text_match = load_text_net(cfg.text_net)
            owned.append(cfg.text_heads)
        self.frozen_features = len(owned)  # one feature each, after the transformer's
        self.feature_dim = 2 * cfg.dim + self.frozen_features
        reads = torch.ones(n_heads, self.feature_dim, dtype=torch.bool)
        for i, own in enumerate(owned):
            for h, head in enumerate(heads):
                if head in own:
                    reads[h] = False
                    reads[h, 2 * cfg.dim + i] = True
        self.register_buffer("reads", reads, persistent=False)
        d = cfg.dim
        patch = cfg.video_patch
        self.video_in = nn.Linear(cfg.video_channels * (1 + cfg.motion_features) * patch[0] * patch[1] * patch[2], d)
        self.audio_in = nn.Linear(cfg.audio_channels, d)
        self.text_in = nn.Linear(cfg.text_dim, d) if cfg.text_dim else None
        self.queries = nn.Parameter(torch.randn(n_heads, d) * 0.02)
        self.modality = nn.Parameter(torch.randn(4, d) * 0.02)  # query, text, video, audio
        self.blocks = nn.ModuleList(Block(d, cfg.heads, cfg.mlp_ratio, cfg.dropout) for _ in range(cfg.depth))
        self.norm_out = RMSNorm(d)
        self.axis_dims = head_axis_dims(d // cfg.heads)

    def _media_tokens(self, clips: Clips):
        """Video and audio tokens (B, N, D) and their (time, h, w) RoPE coordinates (N, 3)."""
        cfg = self.cfg
        video, audio = clips.video_latents, clips.audio_latents
        if video is None or audio is None:
            raise ValueError("the latent reward backbone needs video_latents and audio_latents "
                             "(rollouts store them as <id>.latents.safetensors)")
        if video.shape[1] != cfg.video_channels or audio.shape[1] != cfg.audio_channels:
            raise ValueError(f"latents have {video.shape[1]} video / {audio.shape[1]} audio channels; this "
                             f"model was built for {cfg.video_channels} / {cfg.audio_channels}")
        fps, dtype = clips.fps or cfg.fps, self.video_in.weight.dtype  # bf16 under a DeepSpeed engine
        video = video.to(dtype)
        if cfg.motion_features:
            video = torch.cat([video, torch.diff(video, dim=2, prepend=video[:, :, :1]).abs()], 1)
        tokens, (gt, gh, gw) = patchify(video, cfg.video_patch)
        pt = cfg.video_patch[0]
        t_video = video_latent_times(video.shape[2], fps, cfg.video_temporal_stride, device=video.device)
        t_video = t_video.view(gt, pt).mean(-1).repeat_interleave(gh * gw)
        hw = torch.stack(torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij"), -1)
        hw = hw.reshape(1, -1, 2).expand(gt, -1, -1).reshape(-1, 2).to(t_video)
        t_audio = audio_latent_times(audio.shape[2], cfg.audio_latent_rate, device=audio.device)
        coords = torch.cat([torch.cat([t_video[:, None] * cfg.rope_time_scale, hw], 1),
                            nn.functional.pad(t_audio[:, None] * cfg.rope_time_scale, (0, 2))])
        x = torch.cat([self.video_in(tokens) + self.modality[2],
                       self.audio_in(audio.to(dtype).transpose(1, 2)) + self.modality[3]], 1)
        return x, coords

    def forward(self, clips: Clips) -> torch.Tensor:
        media, media_coords = self._media_tokens(clips)
        b, device = media.shape[0], media.device
        parts = [(self.queries + self.modality[0]).expand(b, -1, -1)]
        keep = [torch.ones(b, self.n_heads, dtype=torch.bool, device=device)]
        if self.text_in is not None and clips.text_emb is not None:
            text = clips.text_emb.to(self.text_in.weight.dtype)
            mask = (clips.text_mask if clips.text_mask is not None
                    else torch.ones(text.shape[:2], dtype=torch.bool)).to(device)
            parts.append(self.text_in(text) + self.modality[1])
            keep.append(mask)
        n_front = sum(p.shape[1] for p in parts)
        x = torch.cat([*parts, media], 1)
        keep.append(torch.ones(b, media.shape[1], dtype=torch.bool, device=device))
        coords = torch.cat([torch.zeros(n_front, 3, device=device, dtype=media_coords.dtype), media_coords])
        rope = rope_tables(coords, self.axis_dims, self.cfg.rope_theta)
        mask = torch.cat(keep, 1)[:, None, None, :]
        for block in self.blocks:
            x = block(x, rope, mask)
        x = self.norm_out(x)
        # Each head reads its query token and the mean of the clip's video and audio tokens:
        # attention picks out events (a flash, a click), the mean keeps what is everywhere
        # (drift, a clipped tone), which softmax pooling would let the loudest tokens drown.
        pooled = x[:, n_front:].mean(1, keepdim=True).expand(-1, self.n_heads, -1)
        features = [x[:, : self.n_heads], pooled]
        if self.sync is not None:
            features.append(self.sync.features(clips.video_latents, clips.audio_latents, clips.fps or self.cfg.fps))
        if self.text_match is not None:
            if clips.text_emb is None:
                raise ValueError("the text-match net scores a clip against its prompt: these clips carry no text_emb")
            features.append(self.text_match.features(clips.video_latents, clips.text_emb, clips.text_mask))
        features = [f.to(x.dtype)[:, None].expand(-1, self.n_heads, -1) if f.ndim == 2 else f for f in features]
        return torch.cat(features, -1) * self.reads.to(x.dtype)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return self.state_dict()

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        self.load_state_dict(state)
