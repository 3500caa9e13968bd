"""A CLIPScore on latents: how much of a clip shows what its prompt says, read from its latents.

CLIPScore (Hessel et al. 2021, "CLIPScore: a reference-free evaluation metric for image
captioning", eq. 1) rates a caption by the similarity of its CLIP embedding with the image's.
A clip that follows its prompt only in part (something else mixed in, in places or at times)
should score in between, so here every latent location at every latent time is matched with
the prompt on its own, and the score is the share that match:

    e_v(x, t) = a temporal conv over the latents at location x, at time t    (unit norm)
    e_p       = an MLP of the prompt embedding's mean over its tokens        (unit norm)
    p(x, t)   = sigmoid(scale * <e_v(x, t), e_p> + bias)
    s         = mean over x, t of p(x, t)

The temporal conv (9 latents wide by default) follows each location through time, as a
drifting texture shows more of itself over a clip than in one latent.

It learns from captioned clips (``reward.scoring.text_pretrain``: the curated latent shards, caption
embeddings included) with SigLIP's pairwise sigmoid loss (Zhai et al. 2023, "Sigmoid loss for
language image pre-training", eq. 1), every location and time of a clip against every caption
of the batch. A sigmoid per pair, unlike CLIP's softmax over the batch, makes p(x, t) an
absolute "this shows the prompt" whatever else the batch holds, so their mean is a share.
Captions that are the same text are matches, not negatives. Preference judgements alone do not teach
which prompt looks like what: on a few hundred clips the reward transformer stays at chance
on prompt alignment. A reward model uses the net frozen (``LatentBackboneConfig.text_net``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class TextNetConfig:
    video_channels: int = 8  # latent channels of the video VAE that made the latents
    text_dim: int = 64  # width of the caption / prompt embedding
    dim: int = 32  # embedding width
    hidden: int = 128
    kernel: int = 9  # temporal conv width, in latents
    init_scale: float = 10.0  # the logits' scale and bias, learned (SigLIP's initialisation)
    init_bias: float = -10.0

    def __post_init__(self):
        if self.kernel % 2 == 0:
            raise ValueError(f"text net: kernel must be odd (centred), got {self.kernel}")


class LatentTextNet(nn.Module):
    def __init__(self, cfg: TextNetConfig):
        super().__init__()
        self.cfg = cfg
        pad = cfg.kernel // 2
        self.video = nn.Sequential(nn.Conv1d(cfg.video_channels, cfg.hidden, cfg.kernel, padding=pad), nn.GELU(),
                                   nn.Conv1d(cfg.hidden, cfg.hidden, 1), nn.GELU(), nn.Conv1d(cfg.hidden, cfg.dim, 1))
        self.text = nn.Sequential(nn.Linear(cfg.text_dim, cfg.hidden), nn.GELU(), nn.Linear(cfg.hidden, cfg.dim))
        self.scale = nn.Parameter(torch.tensor(float(cfg.init_scale)))
        self.bias = nn.Parameter(torch.tensor(float(cfg.init_bias)))

    def embed_video(self, video: torch.Tensor) -> torch.Tensor:
        """Latents (B, C, T, h, w) -> unit embeddings (B, h * w * T, D), one per location and time."""
        b, c, t, h, w = video.shape
        per_location = video.float().permute(0, 3, 4, 1, 2).reshape(b * h * w, c, t)
        e = self.video(per_location)  # (B*h*w, D, T)
        return F.normalize(e.permute(0, 2, 1).reshape(b, h * w * t, -1), dim=-1)

    def embed_text(self, text_emb: torch.Tensor, text_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Prompt embeddings (B, L, Dt), mask (B, L) -> unit embeddings (B, D)."""
        text_emb = text_emb.float()
        if text_mask is None:
            text_mask = torch.ones(text_emb.shape[:2], dtype=torch.bool, device=text_emb.device)
        m = text_mask.to(text_emb)[..., None]
        return F.normalize(self.text((text_emb * m).sum(1) / m.sum(1).clamp(min=1)), dim=-1)

    def match_logits(self, cosine: torch.Tensor) -> torch.Tensor:
        """The log-odds that a location/time shows a caption, from their embeddings' cosine."""
        return self.scale * cosine + self.bias

    def location_logits(self, e_video: torch.Tensor, e_text: torch.Tensor) -> torch.Tensor:
        """(B, N, D) x (B', D) -> (B, N, B') the log-odds that location/time n of clip b shows caption b'."""
        return self.match_logits(torch.einsum("bnd,cd->bnc", e_video, e_text))

    def similarity(self, e_video: torch.Tensor, e_text: torch.Tensor) -> torch.Tensor:
        """(B, N, D) x (B', D) -> (B, B') the share of each clip's locations/times that show each caption."""
        return self.location_logits(e_video, e_text).sigmoid().mean(1)

    def features(self, video: torch.Tensor, text_emb: torch.Tensor, text_mask: torch.Tensor | None) -> torch.Tensor:
        """(B, 1) what a reward head reads: the share of each clip that shows its own prompt,
        times 10 (a head weight moves about lr per Adam step, ~0.1 in a run: it must span the range)."""
        e_video, e_text = self.embed_video(video), self.embed_text(text_emb, text_mask)
        own = self.match_logits(torch.einsum("bnd,bd->bn", e_video, e_text))  # each clip with its own prompt
        return 10 * own.sigmoid().mean(1, keepdim=True)


def contrastive_loss(net: LatentTextNet, video: torch.Tensor, text_emb: torch.Tensor,
                     text_mask: torch.Tensor | None = None, same: torch.Tensor | None = None) -> torch.Tensor:
    """SigLIP's pairwise sigmoid loss (Zhai et al. 2023, eq. 1) over every location x caption
    of the batch: each location should match its clip's caption and no other. ``same`` (B, B):
    captions that are the same text, which are matches too (the default: only the diagonal)."""
    logits = net.location_logits(net.embed_video(video), net.embed_text(text_emb, text_mask))  # (B, N, B)
    b = logits.shape[0]
    same = torch.eye(b, dtype=torch.bool, device=logits.device) if same is None else same
    sign = 2 * same.to(logits)[:, None, :] - 1
    return -F.logsigmoid(sign * logits).sum(-1).mean()
