"""Reference clips (images, videos, audio) fed to the DiT as extra, clean tokens.

A reference is encoded by the same VAE as the target (an image is a 1-frame video), then
patchified by its branch's patch embedding; image/video references join the video branch,
audio references the audio branch. Each reference token gets a learned *role* embedding
(image / video / audio) plus an *index* embedding (1..9), and the prompt tokens of its
``@tag`` get the matching slot embedding, so the prompt can address it by name.

Reference tokens sit before the clip on the time axis (``reference_time_offset_s``
seconds earlier) so that RoPE never makes them look simultaneous with a generated frame;
they take part in their branch's self-attention and see the whole prompt, but not the
A<->V fusion, which links generated tokens only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from model.prompts import REFERENCE_LIMITS, reference_slot

ROLES = ("image", "video", "audio")
VIDEO_BRANCH_ROLES = ("image", "video")


@dataclass
class Reference:
    kind: str  # "image" | "video" | "audio"
    index: int  # 1-based, as in @image1
    latents: torch.Tensor  # image/video: (B, C, T, H, W) VAE latents (image: T=1); audio: (B, C, T)
    keep: torch.Tensor | None = None  # (B,) bool; False hides it for that sample (CFG dropout)

    def __post_init__(self):
        reference_slot(self.kind, self.index)  # validates kind and index
        want = 3 if self.kind == "audio" else 5
        if self.latents.ndim != want:
            raise ValueError(f"{self.kind} reference latents must have {want} dims, "
                             f"got shape {tuple(self.latents.shape)}")

    @property
    def slot(self) -> int:
        return reference_slot(self.kind, self.index)


class ReferenceEmbedding(nn.Module):
    """Role + index embeddings added to a branch's reference tokens."""

    def __init__(self, dim: int):
        super().__init__()
        # Initial values handed to each Embedding's own constructor: a builder that partitions
        # parameters as layers are created (ZeRO-3) would otherwise re-initialise empty shards.
        self.role = nn.Embedding(len(ROLES), dim, _weight=torch.randn(len(ROLES), dim) * 0.02)
        self.index = nn.Embedding(max(REFERENCE_LIMITS.values()), dim,
                                  _weight=torch.randn(max(REFERENCE_LIMITS.values()), dim) * 0.02)

    def forward(self, tokens: torch.Tensor, ref: Reference) -> torch.Tensor:
        role = torch.tensor(ROLES.index(ref.kind), device=tokens.device)
        index = torch.tensor(ref.index - 1, device=tokens.device)
        return tokens + (self.role(role) + self.index(index)).to(tokens.dtype)


def split_by_branch(references) -> tuple[list[Reference], list[Reference]]:
    refs = list(references or ())
    seen = set()
    for ref in refs:
        if (ref.kind, ref.index) in seen:
            raise ValueError(f"reference @{ref.kind}{ref.index} given twice")
        seen.add((ref.kind, ref.index))
    video = [r for r in refs if r.kind in VIDEO_BRANCH_ROLES]
    audio = [r for r in refs if r.kind == "audio"]
    return video, audio
