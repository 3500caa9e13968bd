"""One dual-branch transformer block: a video half, an audio half, and optional A<->V fusion.

``DualDiT.blocks`` is an ``nn.ModuleList`` of :class:`DualBlock`; each takes and returns
plain tensors plus two :class:`BranchContext` records, so activation checkpointing or
FSDP wrapping can be applied per block from ``training/`` without touching this code.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from model.layers import MLP, Attention, gate, modulate

Rope = tuple[torch.Tensor, torch.Tensor]


@dataclass
class BranchContext:
    """Everything a block needs about one branch besides its hidden states."""

    mod: torch.Tensor  # (B, 2, 6, D): rows [generated tokens, reference tokens]
    rope: Rope  # self-attention tables for all tokens of the branch
    self_mask: torch.Tensor | None  # (B, 1, 1, N) key mask when references are dropped
    text: torch.Tensor  # (B, 1 + L, D): learned null token, then the projected prompt
    text_mask: torch.Tensor  # bool, broadcastable to (B, 1, N, 1 + L)
    n_gen: int  # tokens being generated; reference tokens follow them
    fusion_rope_q: Rope | None = None  # temporal RoPE, this branch as fusion queries
    fusion_rope_k: Rope | None = None  # temporal RoPE, the other branch as keys (this head dim)
    fusion_keep: torch.Tensor | None = None  # (B, 1, 1); 0 hides the other modality (CFG dropout)


class BranchBlock(nn.Module):
    """Self-attention, text cross-attention and MLP for one modality, AdaLN-modulated."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, qk_norm: bool):
        super().__init__()
        self.norm_self = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.self_attn = Attention(dim, heads, qk_norm=qk_norm)
        self.norm_text = nn.LayerNorm(dim, eps=1e-6)
        self.text_attn = Attention(dim, heads, qk_norm=qk_norm)
        self.norm_mlp = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = MLP(dim, int(dim * mlp_ratio))
        # Added to the shared timestep projection (Wan-style). Zero, like the projection
        # itself (DualDiT.reset_parameters): gates start closed, blocks start as identity
        # (adaLN-Zero, Peebles & Xie 2023), which overfits a batch several times faster.
        self.modulation = nn.Parameter(torch.zeros(6, dim))

    def _mod(self, ctx: BranchContext) -> tuple[torch.Tensor, ...]:
        return (ctx.mod + self.modulation.to(ctx.mod.dtype)).unbind(dim=2)

    def attend(self, x: torch.Tensor, ctx: BranchContext) -> torch.Tensor:
        shift, scale, g, *_ = self._mod(ctx)
        h = modulate(self.norm_self(x), shift, scale, ctx.n_gen)
        h = self.self_attn(h, rope_q=ctx.rope, rope_k=ctx.rope, mask=ctx.self_mask)
        x = x + gate(h, g, ctx.n_gen)
        return x + self.text_attn(self.norm_text(x), context=ctx.text, mask=ctx.text_mask)

    def feed_forward(self, x: torch.Tensor, ctx: BranchContext) -> torch.Tensor:
        *_, shift, scale, g = self._mod(ctx)
        h = self.mlp(modulate(self.norm_mlp(x), shift, scale, ctx.n_gen))
        return x + gate(h, g, ctx.n_gen)


class CrossModalFusion(nn.Module):
    """Bidirectional A<->V cross-attention between the generated tokens of both branches.

    Both directions read the *pre-fusion* states, so neither branch sees the other's
    already-fused update (no ordering bias). Queries and keys carry temporal RoPE on the
    shared seconds axis, so a video token at time t prefers audio tokens near t. The
    per-channel output gates start at zero: a freshly initialised (or unimodal
    pretrained) model is unchanged by adding fusion.
    """

    def __init__(self, video_dim: int, video_heads: int, audio_dim: int, audio_heads: int,
                 qk_norm: bool = True):
        super().__init__()
        self.norm_video = nn.LayerNorm(video_dim, eps=1e-6)
        self.norm_audio = nn.LayerNorm(audio_dim, eps=1e-6)
        self.audio_to_video = Attention(video_dim, video_heads, kv_dim=audio_dim, qk_norm=qk_norm)
        self.video_to_audio = Attention(audio_dim, audio_heads, kv_dim=video_dim, qk_norm=qk_norm)
        self.gate_video = nn.Parameter(torch.zeros(video_dim))
        self.gate_audio = nn.Parameter(torch.zeros(audio_dim))

    def forward(self, v: torch.Tensor, a: torch.Tensor, vctx: BranchContext, actx: BranchContext):
        hv = self.norm_video(v[:, : vctx.n_gen])
        ha = self.norm_audio(a[:, : actx.n_gen])
        dv = self.audio_to_video(hv, ha, rope_q=vctx.fusion_rope_q, rope_k=vctx.fusion_rope_k)
        da = self.video_to_audio(ha, hv, rope_q=actx.fusion_rope_q, rope_k=actx.fusion_rope_k)
        dv, da = dv * self.gate_video, da * self.gate_audio
        if vctx.fusion_keep is not None:
            dv = dv * vctx.fusion_keep
        if actx.fusion_keep is not None:
            da = da * actx.fusion_keep
        return _add_to_prefix(v, dv), _add_to_prefix(a, da)


def _add_to_prefix(x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    n = delta.shape[1]
    if n == x.shape[1]:
        return x + delta
    return torch.cat([x[:, :n] + delta, x[:, n:]], dim=1)


class DualBlock(nn.Module):
    """Video half and audio half of one layer, with fusion between attention and MLP."""

    def __init__(self, video_dim: int, video_heads: int, audio_dim: int, audio_heads: int,
                 mlp_ratio: float, qk_norm: bool, fuse: bool):
        super().__init__()
        self.video = BranchBlock(video_dim, video_heads, mlp_ratio, qk_norm)
        self.audio = BranchBlock(audio_dim, audio_heads, mlp_ratio, qk_norm)
        self.fusion = (
            CrossModalFusion(video_dim, video_heads, audio_dim, audio_heads, qk_norm) if fuse else None
        )

    def forward(self, v: torch.Tensor, a: torch.Tensor, vctx: BranchContext, actx: BranchContext):
        v = self.video.attend(v, vctx)
        a = self.audio.attend(a, actx)
        if self.fusion is not None:
            v, a = self.fusion(v, a, vctx, actx)
        return self.video.feed_forward(v, vctx), self.audio.feed_forward(a, actx)
