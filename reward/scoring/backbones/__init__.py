"""Reward-model backbones: a batch of clips in, one feature vector per head out.

Every backbone is an ``nn.Module`` with

- ``uses``: ``"latents"`` (scores tandem's latents + the prompt's text embedding, no decoding)
  or ``"media"`` (decoded frames and waveform + the prompt text);
- ``cache_inputs`` (optional): whether training may keep every clip's inputs in memory
  (default: latents yes, decoded media no);
- ``feature_dim``: width of the per-head features;
- ``forward(clips: reward.scoring.sources.Clips) -> (B, H, feature_dim)``: one feature vector per
  head, read at the head's own query token (VideoAlign's "heads on special tokens");
- ``trainable_state()`` / ``load_trainable_state(state)``: the weights a saved reward model
  stores (everything for ``latent`` and ``media``; LoRA, reward-token embeddings for ``omni``, whose frozen
  base loads from its local path).

``build_backbone(cfg, heads)`` picks one by ``cfg.backbone``.
"""

from __future__ import annotations

BACKBONES = ("latent", "media", "omni")


def build_backbone(cfg, heads: tuple[str, ...]):
    """The backbone ``cfg.backbone`` names (``cfg``: a
    ``reward.scoring.reward_model.RewardModelConfig``)."""
    if cfg.backbone == "latent":
        from reward.scoring.backbones.latent import LatentBackbone

        return LatentBackbone(cfg.latent, heads)
    if cfg.backbone == "media":
        from reward.scoring.backbones.media_stats import MediaBackbone

        return MediaBackbone(cfg.media, heads)
    if cfg.backbone == "omni":
        from reward.scoring.backbones.omni import OmniBackbone

        return OmniBackbone(cfg.omni, heads)
    raise ValueError(f"unknown reward backbone {cfg.backbone!r}; choose one of {', '.join(BACKBONES)}")
