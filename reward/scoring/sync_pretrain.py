"""Teach a SyncNet on latents (``reward.scoring.backbones.sync_net``) what an A/V offset looks like,
from footage that is in sync, by shifting its sound by known amounts (SyncNet's own recipe: Chung &
Zisserman 2016, sec. 3, false pairs from shifted audio; here the shift is the target).

    tandem reward sync-pretrain --footage CURATED_MP4S... --out runs/sync_net \
        [window_s=2.0 fps=16 height=32 width=32 max_offset_s=0.6 steps=2000 ...]

Each footage file gives ``windows_per_clip`` examples: a video window of ``window_s`` and an
audio window of the same length starting ``-offset`` later, ``offset`` drawn uniformly in
+-``max_offset_s`` (positive: the sound lags). Both windows are cut from the decoded streams
on their own timestamps and encoded with the encoders named in ``encoders`` (the ones that made
the rollouts' latents), so no padding or edge tells the net the shift. Files too short for a
window and its shifts, or without sound, are skipped and counted, never fatal.

Held-out files (``holdout_fraction``) measure what it learned: the median |error| of the
expected offset, in ms. ``out`` gets ``sync_net.safetensors`` and ``sync_net.json`` (config,
metrics, the footage it saw); a reward model points at it with ``model.latent.sync_net=OUT``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from model.config import to_dict
from reward.scoring.backbones.sync_net import LatentSyncNet, SyncNetConfig, offset_loss
from reward.scoring.frozen_nets import load_net, save_net
from training.encoders import EncoderConfig
from training.trainer import warmup_cosine

log = logging.getLogger(__name__)
NAME = "sync_net"  # sync_net.json + sync_net.safetensors (reward.scoring.frozen_nets)


@dataclass
class SyncPretrainConfig:
    encoders: EncoderConfig = field(default_factory=EncoderConfig)
    net: SyncNetConfig = field(default_factory=SyncNetConfig)
    window_s: float = 2.0  # the clip length the reward model will score
    fps: float = 16.0
    height: int = 32
    width: int = 32
    max_offset_s: float = 0.6  # shifts drawn in +-this; net.max_offset_s should exceed it
    windows_per_clip: int = 4
    steps: int = 2000
    batch: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.01
    holdout_fraction: float = 0.2
    encode_batch: int = 16
    seed: int = 0


def footage_files(paths) -> list[Path]:
    """The mp4 files among ``paths`` (directories are searched recursively), sorted."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(p.rglob("*.mp4"))
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"footage {p} does not exist")
    return sorted(set(files))


def decode_streams(path: Path, sample_rate: int, channels: int):
    """(frames (T, H, W, 3) uint8, frame times (T,), audio (channels, N) float, audio start time),
    times in seconds on the file's own clock; audio resampled to ``sample_rate``."""
    import av

    from model.media import decode_audio

    with av.open(str(path)) as container:
        frames, times = [], []
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            times.append(float(frame.time or 0.0))
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return np.stack(frames) if frames else None, np.asarray(times), None, 0.0
        audio, start = decode_audio(container, sample_rate, channels)
    return np.stack(frames) if frames else None, np.asarray(times), audio, start


def cut_windows(frames, times, audio, audio_start, seq, rng, cfg: SyncPretrainConfig):
    """Up to ``windows_per_clip`` (video (3, T, H, W), audio (ch, N), offset_s) from one file."""
    from model.media import frame_at
    from training.clip_encoder import fit_frames

    n = seq.audio_samples
    span = max(seq.num_frames / cfg.fps, n / seq.sample_rate)
    first = max(times[0], audio_start) + cfg.max_offset_s
    last = min(times[-1] + 1 / cfg.fps, audio_start + (audio.shape[1] - 1) / seq.sample_rate) - cfg.max_offset_s - span
    windows = []
    starts = times[(times >= first) & (times <= last)]  # on a frame, so the picture is not late
    if not len(starts):
        return []
    for _ in range(cfg.windows_per_clip):
        start, offset = float(rng.choice(starts)), rng.uniform(-cfg.max_offset_s, cfg.max_offset_s)
        targets = start + np.arange(seq.num_frames) / cfg.fps
        video = torch.from_numpy(frames[frame_at(times, targets)]).permute(0, 3, 1, 2).float()
        video = fit_frames(video, cfg.height, cfg.width).permute(1, 0, 2, 3) / 127.5 - 1
        # the sound ``offset`` late: what is heard at window time u happened at start + u - offset
        a0 = int(round((start - offset - audio_start) * seq.sample_rate))
        windows.append((video.clamp(-1, 1), torch.from_numpy(audio[:, a0:a0 + n]), offset))
    return windows


def make_examples(files: list[Path], cfg: SyncPretrainConfig, encoder, seed: int):
    """Encoded windows of ``files``: video latents, audio latents, offsets, file index; and the
    count of files skipped per reason."""
    from model.sequence import SequenceConfig

    seq = SequenceConfig(duration_s=cfg.window_s, fps=cfg.fps, height=cfg.height, width=cfg.width,
                         sample_rate=encoder.audio_vae.sample_rate)
    rng = np.random.default_rng(seed)
    videos, audios, offsets, owners, skipped = [], [], [], [], {}
    pending: list[tuple] = []

    def flush():
        with torch.no_grad():
            videos.append(encoder.video_vae.encode(torch.stack([p[0] for p in pending]).to(encoder.device)).cpu())
            audios.append(encoder.audio_vae.encode(torch.stack([p[1] for p in pending]).to(encoder.device)).cpu())
        offsets.extend(p[2] for p in pending)
        owners.extend(p[3] for p in pending)
        pending.clear()

    t0 = time.monotonic()
    for i, path in enumerate(files):
        try:
            frames, times, audio, audio_start = decode_streams(path, seq.sample_rate, encoder.audio_vae.channels)
        except Exception as err:  # noqa: BLE001 - a broken file is data: counted, not fatal
            log.warning("sync pretraining: cannot decode %s (%s)", path, err)
            skipped["undecodable"] = skipped.get("undecodable", 0) + 1
            continue
        reason = ("no_video" if frames is None else "no_audio" if audio is None else None)
        windows = [] if reason else cut_windows(frames, times, audio, audio_start, seq, rng, cfg)
        if not windows:
            skipped[reason or "too_short"] = skipped.get(reason or "too_short", 0) + 1
            continue
        for video, wav, offset in windows:
            pending.append((video, wav, offset, i))
            if len(pending) == cfg.encode_batch:
                flush()
        if (i + 1) % 50 == 0:
            log.info("sync pretraining: encoded windows of %d/%d files (%.0f s)", i + 1, len(files), time.monotonic() - t0)
    if pending:
        flush()
    if not offsets:
        raise ValueError(f"no usable footage among {len(files)} files (skipped: {skipped}); each needs sound and "
                         f"at least {cfg.window_s + 2 * cfg.max_offset_s:.1f} s")
    return torch.cat(videos), torch.cat(audios), torch.tensor(offsets).float(), torch.tensor(owners), skipped


def offset_errors(net: LatentSyncNet, video, audio, offsets, fps: float) -> torch.Tensor:
    """|expected offset - true offset| (s) per example."""
    with torch.no_grad():
        p = net(video, audio, fps).exp()
    return ((p * net.lag_seconds()).sum(-1) - offsets).abs()


def pretrain_sync(cfg: SyncPretrainConfig, footage, out: str | Path) -> dict:
    """Pretrain the sync net on ``footage`` and save it to ``out``; returns its metrics."""
    from training.clip_encoder import ClipEncoder

    if cfg.net.max_offset_s <= cfg.max_offset_s:
        raise ValueError(f"net.max_offset_s ({cfg.net.max_offset_s}) must exceed max_offset_s ({cfg.max_offset_s}), "
                         "or the largest shifts fall off the net's range")
    torch.manual_seed(cfg.seed)
    files = footage_files(footage)
    encoder = ClipEncoder(cfg.encoders, device="cpu")
    video, audio, offsets, owners, skipped = make_examples(files, cfg, encoder, cfg.seed)
    if (video.shape[1], audio.shape[1]) != (cfg.net.video_channels, cfg.net.audio_channels):
        raise ValueError(f"the encoders make {video.shape[1]} video / {audio.shape[1]} audio latent channels; set "
                         f"net.video_channels={video.shape[1]} net.audio_channels={audio.shape[1]}")
    held = torch.from_numpy(np.random.default_rng(cfg.seed).random(len(files)) < cfg.holdout_fraction)[owners]
    train_idx = (~held).nonzero()[:, 0]
    if len(train_idx) == 0:
        raise ValueError("every footage file was held out; lower holdout_fraction or add footage")
    net = LatentSyncNet(cfg.net)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(0, cfg.steps, 0.0))
    lags, t0 = net.lag_seconds(), time.monotonic()
    for step in range(1, cfg.steps + 1):
        batch = train_idx[torch.randint(len(train_idx), (min(cfg.batch, len(train_idx)),))]
        loss = offset_loss(net(video[batch], audio[batch], cfg.fps), lags, offsets[batch])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        schedule.step()
        if step % 250 == 0 or step == cfg.steps:
            log.info("sync pretraining: step %d/%d, expected error %.0f ms (%.0f s)", step, cfg.steps,
                     1000 * loss.item(), time.monotonic() - t0)
    net.eval()
    metrics = {"examples": len(offsets), "files": len(files), **{f"skipped/{k}": v for k, v in skipped.items()}}
    for name, idx in (("train", train_idx), ("heldout", held.nonzero()[:, 0])):
        if len(idx):
            err = offset_errors(net, video[idx], audio[idx], offsets[idx], cfg.fps)
            metrics[f"{name}/median_error_ms"] = 1000 * float(err.median())
            metrics[f"{name}/within_40ms"] = float((err <= 0.04).float().mean())
    save_net(net, out, NAME, pretrain=to_dict(cfg), fps=cfg.fps, metrics=metrics)
    log.info("sync net saved to %s: %s", out, metrics)
    return metrics


def load_sync_net(path: str | Path) -> LatentSyncNet:
    """A pretrained sync net (a directory ``pretrain_sync`` wrote), frozen, in eval mode."""
    return load_net(path, NAME, LatentSyncNet, SyncNetConfig,
                    "tandem reward sync-pretrain --footage IN_SYNC_MP4S --out DIR")
