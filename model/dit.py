"""DualDiT: the dual-branch (video + audio) diffusion transformer.

Video latents (B, C, T, H, W) are cut into (pt, ph, pw) patches with 3D RoPE over
(time in seconds, height, width); audio latents (B, C, T) into pt-long patches with 1D
RoPE in seconds on the same axis. Each layer (:class:`model.blocks.DualBlock`) runs a
video and an audio transformer half, each with self-attention, text cross-attention and
an MLP modulated by its own timestep, joined by gated A<->V cross-attention.
The network predicts flow-matching velocities for both modalities.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from model.blocks import BranchContext, DualBlock
from model.layers import TimestepEmbedder, head_axis_dims, rope_tables
from model.prompts import NUM_REFERENCE_SLOTS, text_time_mask
from model.references import Reference, ReferenceEmbedding, split_by_branch
from model.sequence import audio_latent_times, video_latent_times


@dataclass
class BranchConfig:
    dim: int = 128
    heads: int = 4
    latent_channels: int = 8
    patch: tuple[int, ...] = (1, 2, 2)  # video: (t, h, w); audio: (t,)

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads


@dataclass
class DualDiTConfig:
    depth: int = 4
    video: BranchConfig = field(default_factory=BranchConfig)
    audio: BranchConfig = field(default_factory=lambda: BranchConfig(96, 3, 8, (1,)))
    mlp_ratio: float = 4.0
    text_dim: int = 64
    qk_norm: bool = True
    fusion_blocks: tuple[int, ...] | None = None  # None: fuse in every block; (): never
    rope_theta: float = 10000.0
    rope_time_scale: float = 25.0  # RoPE positions per second (one per audio latent at 25/s)
    fps: float = 24.0  # default frame rate when forward() is not told
    audio_latent_rate: float = 25.0
    audio_causal_stride: int = 0  # 0: audio latents cover equal spans; s: causal over s sub-frames
    video_temporal_stride: int = 4
    reference_time_offset_s: float = 100.0

    def fuses(self, block: int) -> bool:
        return self.fusion_blocks is None or block in self.fusion_blocks

    def __post_init__(self):
        bad = [i for i in (self.fusion_blocks or ()) if not 0 <= i < self.depth]
        if bad:
            raise ValueError(f"fusion_blocks {bad} outside 0..{self.depth - 1}")
        for name, b in (("video", self.video), ("audio", self.audio)):
            if b.dim % b.heads or b.head_dim % 2:
                raise ValueError(f"{name}: dim {b.dim} must split into {b.heads} even-sized heads")
        if len(self.video.patch) != 3 or len(self.audio.patch) != 1:
            raise ValueError("video.patch must be (t, h, w) and audio.patch (t,)")


def patchify(x: torch.Tensor, patch: tuple[int, ...]) -> tuple[torch.Tensor, list[int]]:
    """(B, C, *S) -> tokens (B, prod(S / patch), prod(patch) * C) and the token grid."""
    b, c, *sizes = x.shape
    if any(s % p for s, p in zip(sizes, patch, strict=True)):
        raise ValueError(f"latent size {sizes} is not divisible by patch {patch}")
    grid = [s // p for s, p in zip(sizes, patch, strict=True)]
    n = len(grid)
    x = x.reshape([b, c] + [v for g, p in zip(grid, patch, strict=True) for v in (g, p)])
    x = x.permute([0] + [2 + 2 * i for i in range(n)] + [3 + 2 * i for i in range(n)] + [1])
    return x.reshape(b, math.prod(grid), -1), grid


def unpatchify(tokens: torch.Tensor, grid: list[int], patch: tuple[int, ...], c: int) -> torch.Tensor:
    b, n = tokens.shape[0], len(grid)
    x = tokens.reshape([b, *grid, *patch, c])
    x = x.permute([0, 2 * n + 1] + [v for i in range(n) for v in (1 + i, 1 + n + i)])
    return x.reshape([b, c] + [g * p for g, p in zip(grid, patch, strict=True)])


class BranchIO(nn.Module):
    """Everything per modality outside the blocks: embeddings in, velocity head out."""

    def __init__(self, cfg: BranchConfig, text_dim: int):
        super().__init__()
        d, patch_dim = cfg.dim, cfg.latent_channels * math.prod(cfg.patch)
        self.patch_embed = nn.Linear(patch_dim, d)
        self.time = TimestepEmbedder(d)
        self.text_proj = nn.Sequential(nn.Linear(text_dim, d), nn.GELU(approximate="tanh"), nn.Linear(d, d))
        # Always-visible key: a sample whose prompt is dropped (CFG) or whose tokens fall
        # outside every shot still has something to attend to instead of an empty softmax.
        self.null_text = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.references = ReferenceEmbedding(d)
        self.norm_out = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.out_modulation = nn.Parameter(torch.randn(2, d) / d**0.5)
        self.proj_out = nn.Linear(d, patch_dim)

    def head(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        shift, scale = (self.out_modulation.to(emb.dtype) + emb[:, None]).unbind(1)
        return self.proj_out(self.norm_out(x) * (1 + scale[:, None]) + shift[:, None])


class DualDiT(nn.Module):
    def __init__(self, cfg: DualDiTConfig, init_weights: bool = True):
        """``init_weights=False`` leaves each layer's constructor initialisation, for builders
        that partition the parameters as they are created and then apply ``init_module`` one
        gathered module at a time (training.engine under ZeRO-3)."""
        super().__init__()
        self.cfg = cfg
        v, a = cfg.video, cfg.audio
        self.video_io = BranchIO(v, cfg.text_dim)
        self.audio_io = BranchIO(a, cfg.text_dim)
        self.slot_embed = nn.Embedding(NUM_REFERENCE_SLOTS + 1, cfg.text_dim, padding_idx=0)
        self.blocks = nn.ModuleList(
            DualBlock(v.dim, v.heads, a.dim, a.heads, cfg.mlp_ratio, cfg.qk_norm, cfg.fuses(i))
            for i in range(cfg.depth)
        )
        if init_weights:
            self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.modules():
            self.init_module(m)

    def init_module(self, m: nn.Module) -> None:
        """The initial weights of one submodule (its own parameters only)."""
        if not isinstance(m, nn.Linear) or m.weight.device.type == "meta":
            return
        nn.init.xavier_uniform_(m.weight)
        nn.init.zeros_(m.bias)
        if any(m is io.proj_out or m is io.time.to_mod[1] for io in (self.video_io, self.audio_io)):
            nn.init.zeros_(m.weight)  # zero velocity, closed gates

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ------------------------------------------------------------------------ tokens

    def _video_tokens(self, latents: torch.Tensor, fps: float, time_offset: float = 0.0):
        pt = self.cfg.video.patch[0]
        tokens, grid = patchify(latents, self.cfg.video.patch)
        gt, gh, gw = grid
        frame_times = video_latent_times(latents.shape[2], fps, self.cfg.video_temporal_stride,
                                         device=latents.device)
        t = frame_times.view(gt, pt).mean(-1) - time_offset
        return self.video_io.patch_embed(tokens), grid, t.repeat_interleave(gh * gw)

    def _audio_tokens(self, latents: torch.Tensor, time_offset: float = 0.0):
        (pt,) = self.cfg.audio.patch
        tokens, grid = patchify(latents, self.cfg.audio.patch)
        times = audio_latent_times(latents.shape[2], self.cfg.audio_latent_rate, self.cfg.audio_causal_stride,
                                   device=latents.device)
        return self.audio_io.patch_embed(tokens), grid, times.view(-1, pt).mean(-1) - time_offset

    def _video_coords(self, grid, times):
        gt, gh, gw = grid
        hw = torch.stack(torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij"), -1)
        hw = hw.view(1, -1, 2).expand(gt, -1, -1).reshape(-1, 2).to(times)
        return torch.cat([times[:, None] * self.cfg.rope_time_scale, hw], dim=1)

    def token_times(self, video_latents: torch.Tensor, audio_latents: torch.Tensor,
                    fps: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Time in seconds of every generated video token and audio token."""
        return (self._video_tokens(video_latents, fps or self.cfg.fps)[2],
                self._audio_tokens(audio_latents)[2])

    def fusion_ropes(self, video_times: torch.Tensor, audio_times: torch.Tensor):
        """Temporal RoPE tables for fusion: ((video q, audio k), (audio q, video k)), each
        pair at the querying branch's head dim. Fusion uses time only: where a pixel is
        does not decide which sound it goes with."""
        cfg = self.cfg
        tv, ta = video_times[:, None] * cfg.rope_time_scale, audio_times[:, None] * cfg.rope_time_scale
        hv, ha = (cfg.video.head_dim,), (cfg.audio.head_dim,)
        return ((rope_tables(tv, hv, cfg.rope_theta), rope_tables(ta, hv, cfg.rope_theta)),
                (rope_tables(ta, ha, cfg.rope_theta), rope_tables(tv, ha, cfg.rope_theta)))

    # ----------------------------------------------------------------------- context

    def _branch(self, io: BranchIO, gen_tokens, gen_coords, gen_times,
                refs: list[Reference], ref_fn, t, text_emb, key_mask, text_spans, axis_dims):
        b = gen_tokens.shape[0]
        tokens, coords, times, keep = [gen_tokens], [gen_coords], [gen_times], []
        offset = self.cfg.reference_time_offset_s
        for ref in refs:
            ref_tokens, ref_coords = ref_fn(ref.latents, offset)
            tokens.append(io.references(ref_tokens, ref))
            coords.append(ref_coords)
            times.append(torch.full((ref_tokens.shape[1],), math.nan, device=gen_times.device))
            k = ref.keep if ref.keep is not None else torch.ones(b, dtype=torch.bool)
            keep.append(k.to(gen_tokens.device)[:, None].expand(-1, ref_tokens.shape[1]))
        n_gen = gen_tokens.shape[1]
        x = torch.cat(tokens, dim=1)
        self_mask = None
        if keep and not all(bool(k.all()) for k in keep):
            full = torch.cat([torch.ones(b, n_gen, dtype=torch.bool, device=x.device), *keep], 1)
            self_mask = full[:, None, None, :]
        emb, mod = io.time(t)
        # Row 0 modulates generated tokens; row 1 the clean reference tokens, as at t = 0.
        mod = torch.stack([mod, io.time(torch.zeros_like(t))[1]], 1) if refs else mod[:, None]
        text = torch.cat([io.null_text.expand(b, -1, -1).to(x.dtype), io.text_proj(text_emb)], 1)
        null_col = torch.ones(b, 1, dtype=torch.bool, device=x.device)
        if text_spans is not None and bool(torch.isfinite(text_spans).any()):
            mask = text_time_mask(torch.cat(times), text_spans, key_mask)
            mask = torch.cat([null_col[:, None, None].expand(-1, 1, x.shape[1], 1), mask], dim=-1)
        else:
            mask = torch.cat([null_col, key_mask], 1)[:, None, None, :]
        rope = rope_tables(torch.cat(coords), axis_dims, self.cfg.rope_theta)
        ctx = BranchContext(mod=mod, rope=rope, self_mask=self_mask, text=text, text_mask=mask, n_gen=n_gen)
        return x, ctx, emb

    def forward(
        self,
        video_latents: torch.Tensor,
        audio_latents: torch.Tensor,
        t_video: torch.Tensor,
        t_audio: torch.Tensor,
        text_emb: torch.Tensor,
        text_mask: torch.Tensor,
        text_spans: torch.Tensor | None = None,
        text_ref_slots: torch.Tensor | None = None,
        references: list[Reference] | None = None,
        fps: float | None = None,
        keep_audio_for_video: torch.Tensor | None = None,
        keep_video_for_audio: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Velocities (same shapes as the latents) for both modalities.

        t_video / t_audio: (B,) in [0, 1] (1 = pure noise), may differ per modality.
        text_emb (B, L, text_dim), text_mask (B, L) bool; text_spans (B, L, 2) seconds
        each text token conditions (multi-shot; +-inf = global); text_ref_slots (B, L)
        reference slot of each text token (0 = none). keep_audio_for_video /
        keep_video_for_audio (B,) bool: False hides the other modality from that branch
        for that sample (cross-modal condition dropout).
        """
        cfg, fps = self.cfg, fps or self.cfg.fps
        video_refs, audio_refs = split_by_branch(references)
        if text_ref_slots is not None:
            text_emb = text_emb + self.slot_embed(text_ref_slots).to(text_emb.dtype)
        key_mask = text_mask.bool()
        scale = cfg.rope_time_scale

        v_tok, v_grid, v_times = self._video_tokens(video_latents, fps)
        a_tok, a_grid, a_times = self._audio_tokens(audio_latents)

        def video_ref(latents, offset):
            tok, grid, times = self._video_tokens(latents, fps, offset)
            return tok, self._video_coords(grid, times)

        def audio_ref(latents, offset):
            tok, _, times = self._audio_tokens(latents, offset)
            return tok, times[:, None] * scale

        hv, ha = cfg.video.head_dim, cfg.audio.head_dim
        x_v, vctx, emb_v = self._branch(
            self.video_io, v_tok, self._video_coords(v_grid, v_times), v_times,
            video_refs, video_ref, t_video, text_emb, key_mask, text_spans, head_axis_dims(hv))
        x_a, actx, emb_a = self._branch(
            self.audio_io, a_tok, a_times[:, None] * scale, a_times,
            audio_refs, audio_ref, t_audio, text_emb, key_mask, text_spans, (ha,))

        (vctx.fusion_rope_q, vctx.fusion_rope_k), (actx.fusion_rope_q, actx.fusion_rope_k) = (
            self.fusion_ropes(v_times, a_times))
        if keep_audio_for_video is not None:
            vctx.fusion_keep = keep_audio_for_video.to(x_v.device, x_v.dtype)[:, None, None]
        if keep_video_for_audio is not None:
            actx.fusion_keep = keep_video_for_audio.to(x_a.device, x_a.dtype)[:, None, None]

        for block in self.blocks:
            x_v, x_a = block(x_v, x_a, vctx, actx)

        out_v = self.video_io.head(x_v[:, : vctx.n_gen], emb_v)
        out_a = self.audio_io.head(x_a[:, : actx.n_gen], emb_a)
        return (
            unpatchify(out_v, v_grid, cfg.video.patch, cfg.video.latent_channels),
            unpatchify(out_a, a_grid, cfg.audio.patch, cfg.audio.latent_channels),
        )
