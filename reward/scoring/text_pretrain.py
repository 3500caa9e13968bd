"""Teach the text-match net (``reward.scoring.backbones.text_net``, a CLIPScore on latents) what a
prompt looks like, from captioned clips: the curated latent shards, which already hold each
clip's latents and its caption's embedding from the encoders that made the rollouts.

    tandem reward text-pretrain --latents LATENT_SHARD_DIRS... --out runs/text_net \
        [steps=2500 batch=32 lr=3e-3 net.hidden=128 ...]

A batch is clips of one latent shape (one bucket) and their captions; the loss is SigLIP's
pairwise sigmoid one (``reward.scoring.backbones.text_net.contrastive_loss``), captions of the same
text counting as matches. Samples without a caption or that cannot be read are skipped and
counted, never fatal; a shard that cannot be indexed counts once, as ``unreadable_shard``.

Held-out clips (``holdout_fraction``, by key) measure what it learned: how often a clip scores
higher with its own caption than with another held-out clip's (``heldout/own_caption_wins``;
0.5 is chance; captions of the same text are not compared). ``out`` gets
``text_net.safetensors`` and ``text_net.json``; a reward model points at it with
``model.latent.text_net=OUT``.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.nn.utils.rnn import pad_sequence

from model.config import to_dict
from reward.scoring.backbones.text_net import LatentTextNet, TextNetConfig, contrastive_loss
from reward.scoring.frozen_nets import load_net, save_net
from training.trainer import warmup_cosine

log = logging.getLogger(__name__)
NAME = "text_net"  # text_net.json + text_net.safetensors (reward.scoring.frozen_nets)


@dataclass
class TextPretrainConfig:
    net: TextNetConfig = field(default_factory=TextNetConfig)
    steps: int = 2500
    batch: int = 32
    lr: float = 3e-3
    weight_decay: float = 0.01
    holdout_fraction: float = 0.1
    max_clips: int = 0  # 0: every captioned clip
    seed: int = 0


@dataclass
class Captioned:
    keys: list[str]
    video: list[torch.Tensor]  # (C, T, h, w) each
    text: list[torch.Tensor]  # (L, D) each, the caption's tokens
    skipped: Counter


def read_captioned(directories, max_clips: int = 0) -> Captioned:
    """Every captioned sample of the latent shards under ``directories``, in shard order."""
    from training.latent_shards import index_latent_shard, latent_shard_paths, read_latent_sample

    found = Captioned([], [], [], Counter())
    for directory in directories:
        for shard in latent_shard_paths(directory):
            try:
                index = index_latent_shard(shard)
            except Exception as exc:  # a truncated or foreign tar: its samples are lost, not the run
                log.warning("text pretraining: cannot index %s (%s)", shard, exc)
                found.skipped["unreadable_shard"] += 1
                continue
            for key, spans in index.items():
                if max_clips and len(found.keys) >= max_clips:
                    return found
                try:
                    sample = read_latent_sample(shard, key, spans)
                    video, text = sample["video.pth"], sample.get("text.pth")
                except Exception:
                    found.skipped["unreadable"] += 1
                    continue
                if text is None or text.ndim != 2 or len(text) == 0:
                    found.skipped["no_caption"] += 1
                    continue
                found.keys.append(f"{shard.name}/{key}")
                found.video.append(video.float())
                found.text.append(text.float())
    return found


def _is_heldout(key: str, fraction: float) -> bool:
    return zlib.crc32(key.encode()) % 10_000 < fraction * 10_000


def _batch(data: Captioned, idx: list[int]):
    text = pad_sequence([data.text[i] for i in idx], batch_first=True)
    mask = pad_sequence([torch.ones(len(data.text[i]), dtype=torch.bool) for i in idx], batch_first=True)
    return torch.stack([data.video[i] for i in idx]), text, mask


def _same_caption(text: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, B): which captions of a padded batch are the same (same tokens, same embedding)."""
    lengths = mask.sum(1)
    same = (text[:, None] - text[None]).abs().amax((-1, -2)) < 1e-6
    return same & (lengths[:, None] == lengths[None])


def own_caption_wins(net: LatentTextNet, data: Captioned, by_shape: dict[tuple, list[int]]) -> float:
    """How often a clip scores higher with its own caption than with another's of its shape."""
    wins = total = 0.0
    with torch.no_grad():
        for idx in by_shape.values():
            if len(idx) < 2:
                continue
            video, text, mask = _batch(data, idx)
            s = net.similarity(net.embed_video(video), net.embed_text(text, mask))
            differ = ~_same_caption(text, mask)  # a clip is not compared with its caption's twin
            wins += ((s.diag()[:, None] > s) & differ).sum().item()
            total += differ.sum().item()
    return wins / total if total else float("nan")


def pretrain_text(cfg: TextPretrainConfig, latent_dirs, out: str | Path) -> dict:
    """Pretrain the text-match net on the captioned latent shards and save it; its metrics."""
    data = read_captioned(latent_dirs, cfg.max_clips)
    if not data.keys:
        raise ValueError(f"no captioned clip in {[str(d) for d in latent_dirs]} ({dict(data.skipped)})")
    channels, width = data.video[0].shape[0], data.text[0].shape[1]
    if (channels, width) != (cfg.net.video_channels, cfg.net.text_dim):
        raise ValueError(f"the latents have {channels} video channels and {width}-wide captions; set "
                         f"net.video_channels={channels} net.text_dim={width}")
    split: dict[str, dict[tuple, list[int]]] = {"train": defaultdict(list), "heldout": defaultdict(list)}
    for i, key in enumerate(data.keys):
        split["heldout" if _is_heldout(key, cfg.holdout_fraction) else "train"][tuple(data.video[i].shape)].append(i)
    train = [idx for idx in split["train"].values() if len(idx) >= 2]
    if not train:
        raise ValueError("fewer than two training clips of any one latent shape; add captioned clips "
                         "or lower holdout_fraction")
    torch.manual_seed(cfg.seed)
    net = LatentTextNet(cfg.net)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(0, cfg.steps, 0.0))
    sizes, t0 = torch.tensor([len(idx) for idx in train], dtype=torch.float), time.monotonic()
    for step in range(1, cfg.steps + 1):
        bucket = train[int(torch.multinomial(sizes, 1))]  # a bucket in proportion to its clips
        pick = torch.randperm(len(bucket))[: cfg.batch].tolist()
        video, text, mask = _batch(data, [bucket[i] for i in pick])
        loss = contrastive_loss(net, video, text, mask, same=_same_caption(text, mask))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        schedule.step()
        if step % 250 == 0 or step == cfg.steps:
            log.info("text pretraining: step %d/%d, contrastive loss %.3f (%.0f s)", step, cfg.steps, loss.item(),
                     time.monotonic() - t0)
    net.eval()
    metrics = {"clips": len(data.keys), **{f"skipped/{k}": v for k, v in data.skipped.items()}}
    for name, by_shape in split.items():
        metrics[f"{name}/clips"] = sum(len(idx) for idx in by_shape.values())
        metrics[f"{name}/own_caption_wins"] = own_caption_wins(net, data, by_shape)
    save_net(net, out, NAME, pretrain=to_dict(cfg), metrics=metrics, latents=[str(d) for d in latent_dirs])
    log.info("text net saved to %s: %s", out, metrics)
    return metrics


def load_text_net(path: str | Path) -> LatentTextNet:
    """A pretrained text-match net (a directory ``pretrain_text`` wrote), frozen, in eval mode."""
    return load_net(path, NAME, LatentTextNet, TextNetConfig,
                    "tandem reward text-pretrain --latents CAPTIONED_LATENT_SHARDS --out DIR")
