"""Analytic FLOP count of a DualDiT step, for throughput and MFU reporting.

One multiply-add = 2 FLOPs. For one sample with Nv video tokens, Na audio tokens and L
text tokens, per block (d = branch width, F = MLP width, fusion only where enabled):

  branch (N tokens, width d):  2 N (4 d^2 + 2 d F)        self-attn q,k,v,o + MLP
                             + 2 (2 N d^2 + 2 L d^2)       text attn: q,o on N; k,v on L
                             + 4 N^2 d + 4 N L d           attention scores and weighted sum
  fusion:                      2 (2 Nv dv^2 + 2 Na da dv)  audio->video: q,o on video; k,v on audio
                             + 2 (2 Na da^2 + 2 Nv dv da)  video->audio
                             + 4 Nv Na dv + 4 Na Nv da     scores and sums, both directions

Embeddings, norms and the output head are < 1% at scale and ignored. Training (forward +
backward) = 3x forward. MFU = achieved FLOP/s / peak FLOP/s of the device.
"""

from __future__ import annotations

from model.dit import DualDiTConfig


def _branch(n: int, d: int, f: int, text: int, attention: bool) -> float:
    linear = 2 * n * (4 * d * d + 2 * d * f) + 2 * (2 * n * d * d + 2 * text * d * d)
    return linear + attention * (4 * n * n * d + 4 * n * text * d)


def forward_flops(cfg: DualDiTConfig, video_tokens: int, audio_tokens: int, text_tokens: int,
                  attention: bool = True) -> float:
    """Forward FLOPs of one sample (``attention=False``: the matmul terms only)."""
    dv, da = cfg.video.dim, cfg.audio.dim
    fv, fa = int(dv * cfg.mlp_ratio), int(da * cfg.mlp_ratio)
    nv, na, text = video_tokens, audio_tokens, text_tokens + 1  # + the learned null token
    per_block = _branch(nv, dv, fv, text, attention) + _branch(na, da, fa, text, attention)
    fusion = (2 * (2 * nv * dv * dv + 2 * na * da * dv) + 2 * (2 * na * da * da + 2 * nv * dv * da)
              + attention * (4 * nv * na * dv + 4 * na * nv * da))
    fused_blocks = sum(cfg.fuses(i) for i in range(cfg.depth))
    return cfg.depth * per_block + fused_blocks * fusion


def train_flops(cfg: DualDiTConfig, video_tokens: int, audio_tokens: int, text_tokens: int) -> float:
    """Forward + backward FLOPs of one sample (3x forward)."""
    return 3 * forward_flops(cfg, video_tokens, audio_tokens, text_tokens)


def train_flops_per_token(cfg: DualDiTConfig, video_tokens: int, audio_tokens: int,
                          text_tokens: int) -> float:
    return train_flops(cfg, video_tokens, audio_tokens, text_tokens) / (video_tokens + audio_tokens)
