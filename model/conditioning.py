"""What the DiT is conditioned on besides the noisy latents, as one record.

Produced by :meth:`model.text_encoder.TextEncoder.encode` (plus references), consumed by
the flow-matching loss and the samplers, and expanded into ``DualDiT.forward`` keywords.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from model.references import Reference


@dataclass
class Conditioning:
    text_emb: torch.Tensor  # (B, L, text_dim)
    text_mask: torch.Tensor  # (B, L) bool
    text_spans: torch.Tensor | None = None  # (B, L, 2) seconds; +-inf = global
    text_ref_slots: torch.Tensor | None = None  # (B, L) long
    references: list[Reference] | None = None
    fps: float | None = None
    keep_audio_for_video: torch.Tensor | None = None  # (B,) bool
    keep_video_for_audio: torch.Tensor | None = None  # (B,) bool

    @property
    def batch_size(self) -> int:
        return self.text_emb.shape[0]

    def kwargs(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def replace(self, **changes) -> Conditioning:
        return dataclasses.replace(self, **changes)

    def drop(self, text: torch.Tensor | None = None, references: torch.Tensor | None = None,
             audio_for_video: torch.Tensor | None = None,
             video_for_audio: torch.Tensor | None = None) -> Conditioning:
        """Hide conditions per sample; each argument is (B,) bool, True = drop."""
        out = self
        if text is not None:
            out = out.replace(text_mask=self.text_mask & ~text.to(self.text_mask.device)[:, None])
        if references is not None and self.references:
            out = out.replace(references=[
                dataclasses.replace(r, keep=_and_not(r.keep, references)) for r in self.references
            ])
        if audio_for_video is not None:
            out = out.replace(keep_audio_for_video=_and_not(self.keep_audio_for_video, audio_for_video))
        if video_for_audio is not None:
            out = out.replace(keep_video_for_audio=_and_not(self.keep_video_for_audio, video_for_audio))
        return out

    def unconditional(self) -> Conditioning:
        """The same batch with prompt and references hidden: the CFG negative branch."""
        everyone = torch.ones(self.batch_size, dtype=torch.bool, device=self.text_mask.device)
        return self.drop(text=everyone, references=everyone)

    def repeat(self, n: int) -> Conditioning:
        """Each sample repeated ``n`` times consecutively (a GRPO group per prompt)."""
        def rep(x):
            return None if x is None else x.repeat_interleave(n, dim=0)
        refs = None if self.references is None else [
            dataclasses.replace(r, latents=rep(r.latents), keep=rep(r.keep)) for r in self.references
        ]
        return Conditioning(rep(self.text_emb), rep(self.text_mask), rep(self.text_spans),
                            rep(self.text_ref_slots), refs, self.fps,
                            rep(self.keep_audio_for_video), rep(self.keep_video_for_audio))


def _and_not(keep: torch.Tensor | None, drop: torch.Tensor) -> torch.Tensor:
    drop = drop.bool()
    return ~drop if keep is None else keep.to(drop.device) & ~drop
