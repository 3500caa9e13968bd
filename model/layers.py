"""Transformer building blocks shared by both DiT branches: norms, RoPE, attention, MLP,
timestep embedding and AdaLN modulation. Everything here is single-device and shape-generic.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in float32: bf16 sums of squares lose too much precision at width 5120.
        x32 = x.float()
        out = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (out * self.weight.float()).to(x.dtype)


# ----------------------------------------------------------------------------------- RoPE


def rope_tables(
    positions: torch.Tensor, axis_dims: tuple[int, ...], theta: float = 10000.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables, shape (N, sum(axis_dims) // 2), for multi-axis rotary embeddings.

    ``positions`` is (N, len(axis_dims)): one coordinate per axis (time in RoPE units,
    height, width, ...). Each axis gets ``axis_dims[i]`` channels of the head (even), with
    the usual geometric frequency ladder. Positions may be fractional (time in seconds).
    """
    assert positions.shape[-1] == len(axis_dims), (positions.shape, axis_dims)
    angles = []
    for axis, dim in enumerate(axis_dims):
        assert dim % 2 == 0, f"RoPE axis dims must be even, got {axis_dims}"
        freqs = theta ** (-torch.arange(0, dim, 2, dtype=torch.float64, device=positions.device) / dim)
        angles.append(positions[:, axis, None].double() * freqs)
    angle = torch.cat(angles, dim=-1)
    return angle.cos().float(), angle.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs (i, i + d/2) of ``x`` (B, H, N, d) by the angles in the tables."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half].float(), x[..., half:].float()
    out = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return out.to(x.dtype)


def head_axis_dims(head_dim: int) -> tuple[int, int, int]:
    """Split a head into (time, height, width) RoPE channels; time gets the remainder.

    Same split as Wan: 2 * (d // 6) channels per spatial axis, so each is even.
    """
    spatial = 2 * (head_dim // 6)
    return head_dim - 2 * spatial, spatial, spatial


# ------------------------------------------------------------------------------ attention


class Attention(nn.Module):
    """Multi-head attention with QK-norm and optional RoPE, computed by PyTorch SDPA.

    Self-attention when ``context`` is None; cross-attention otherwise (keys/values from
    ``context``, whose width ``kv_dim`` may differ, e.g. audio attending to video).
    """

    def __init__(self, dim: int, heads: int, kv_dim: int | None = None, qk_norm: bool = True):
        super().__init__()
        assert dim % heads == 0, f"dim {dim} not divisible by heads {heads}"
        kv_dim = kv_dim or dim
        self.heads, self.head_dim = heads, dim // heads
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(kv_dim, dim)
        self.to_v = nn.Linear(kv_dim, dim)
        self.to_out = nn.Linear(dim, dim)
        self.norm_q = RMSNorm(self.head_dim) if qk_norm else nn.Identity()
        self.norm_k = RMSNorm(self.head_dim) if qk_norm else nn.Identity()

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.heads, self.head_dim).transpose(1, 2)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        rope_q: tuple[torch.Tensor, torch.Tensor] | None = None,
        rope_k: tuple[torch.Tensor, torch.Tensor] | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``mask``: bool, True = may attend, broadcastable to (B, heads, Nq, Nk)."""
        context = x if context is None else context
        q = self.norm_q(self._heads(self.to_q(x)))
        k = self.norm_k(self._heads(self.to_k(context)))
        v = self._heads(self.to_v(context))
        if rope_q is not None:
            q = apply_rope(q, *rope_q)
        if rope_k is not None:
            k = apply_rope(k, *rope_k)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        b, _, n, _ = out.shape
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


# ------------------------------------------------------------------- timestep / AdaLN


def timestep_features(t: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of t in [0, 1] (scaled by 1000 so that steps are well separated)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)
    args = 1000.0 * t.float()[:, None] * freqs[None]
    return torch.cat([args.cos(), args.sin()], dim=-1)


class TimestepEmbedder(nn.Module):
    """t -> (B, dim) embedding and its shared projection to ``n_mod`` modulation vectors.

    As in Wan, blocks share this projection and each adds a small learned table, which
    costs 6*dim parameters per block instead of DiT's 6*dim^2.
    """

    def __init__(self, dim: int, n_mod: int = 6, freq_dim: int = 256):
        super().__init__()
        self.freq_dim, self.n_mod = freq_dim, n_mod
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.to_mod = nn.Sequential(nn.SiLU(), nn.Linear(dim, n_mod * dim))

    def forward(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (embedding (B, dim), modulation (B, n_mod, dim))."""
        dtype = self.mlp[0].weight.dtype
        emb = self.mlp(timestep_features(t, self.freq_dim).to(dtype))
        return emb, self.to_mod(emb).unflatten(-1, (self.n_mod, -1))


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, n_first: int) -> torch.Tensor:
    """AdaLN: ``x * (1 + scale) + shift`` with two rows of parameters per sample.

    ``shift``/``scale`` are (B, 2, D): row 0 for the first ``n_first`` tokens (the ones
    being denoised, at the branch timestep), row 1 for the rest (clean reference tokens,
    at t=0). Splitting by segment avoids materialising a (B, N, D) modulation tensor.
    """
    if n_first == x.shape[1]:
        return x * (1 + scale[:, :1]) + shift[:, :1]
    head, tail = x[:, :n_first], x[:, n_first:]
    return torch.cat(
        [head * (1 + scale[:, :1]) + shift[:, :1], tail * (1 + scale[:, 1:]) + shift[:, 1:]], dim=1
    )


def gate(x: torch.Tensor, g: torch.Tensor, n_first: int) -> torch.Tensor:
    """Per-segment gating with the same two-row convention as :func:`modulate`."""
    if n_first == x.shape[1]:
        return x * g[:, :1]
    return torch.cat([x[:, :n_first] * g[:, :1], x[:, n_first:] * g[:, 1:]], dim=1)
