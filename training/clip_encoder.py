"""Clip -> latents: decode a clip shard sample at its bucket's shape and encode it.

Shared by the latent DAG (pipelines/latents.py, offline, actor pool) and the loader's
clip-shard source (training/loader.py, on the fly for small experiments), so both produce
the same latent sample: ``video`` (C, T, H, W), ``audio`` (C, T), ``text`` (L, D), ``meta``.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from training.buckets import Bucket, BucketConfig, assign_bucket
from training.latent_shards import LatentFormat


@dataclass
class EncoderConfig:
    video_vae: str = "debug"  # model.video_vae preset; weights from video_vae_weights when given
    video_vae_weights: str = ""
    audio_vae: str = "debug"
    audio_vae_weights: str = ""
    text_encoder: str = ""  # HF path of a T5-family encoder; "" = tiny random (debug) one
    text_dim: int = 64


class SkipClip(Exception):
    """A clip that cannot be trained on (recorded with its reason, never fatal)."""

    def __init__(self, reason: str, message: str = ""):
        super().__init__(f"{reason}: {message}" if message else reason)
        self.reason = reason


def clip_bucket(meta: dict, buckets: BucketConfig) -> Bucket:
    """The bucket of a clip from its shard metadata, or SkipClip(too_short)."""
    duration = meta.get("duration_s") or (meta["end_s"] - meta["start_s"])
    bucket = assign_bucket(buckets, duration, meta["width"], meta["height"])
    if bucket is None:
        raise SkipClip("too_short", f"{duration:.2f} s is shorter than every bucket ({buckets.durations})")
    return bucket


def _fit(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Centre-crop (T, 3, h, w) to the target aspect, then resize to height x width."""
    h, w = frames.shape[-2:]
    if w * height > h * width:  # too wide
        crop = round(h * width / height)
        frames = frames[..., (w - crop) // 2:(w - crop) // 2 + crop]
    else:
        crop = round(w * height / width)
        frames = frames[..., (h - crop) // 2:(h - crop) // 2 + crop, :]
    return F.interpolate(frames, size=(height, width), mode="bilinear", antialias=True, align_corners=False)


def decode_clip(mp4: bytes, flac: bytes, bucket: Bucket, sample_rate: int, channels: int):
    """The first ``bucket.sequence.clip_seconds`` of a clip: video (3, T, H, W) in [-1, 1]
    sampled at ``bucket.fps`` by timestamp, and audio (channels, N) of exactly the same span."""
    import av

    seq = bucket.sequence
    targets = np.arange(seq.num_frames) / seq.fps
    frames, times = [], []
    with av.open(io.BytesIO(mp4)) as container:
        for frame in container.decode(video=0):
            t = float(frame.time or 0.0)
            if frames and t > targets[-1] + 0.5 / seq.fps:
                break
            frames.append(frame.to_ndarray(format="rgb24"))
            times.append(t)
    if not frames:
        raise SkipClip("no_video_frames")
    times = np.asarray(times) - times[0]
    # For each target instant, the last decoded frame shown at or before it.
    picks = np.clip(np.searchsorted(times, targets + 1e-6, side="right") - 1, 0, len(frames) - 1)
    video = torch.from_numpy(np.stack([frames[i] for i in picks])).permute(0, 3, 1, 2).float()
    video = _fit(video, seq.height, seq.width).permute(1, 0, 2, 3) / 127.5 - 1  # (3, T, H, W)

    with av.open(io.BytesIO(flac)) as container:
        resampler = av.AudioResampler(format="fltp", layout="stereo" if channels == 2 else "mono", rate=sample_rate)
        chunks = [r.to_ndarray() for f in container.decode(audio=0) for r in resampler.resample(f)]
        chunks += [r.to_ndarray() for r in resampler.resample(None)]
    audio = torch.from_numpy(np.concatenate(chunks, axis=1)).float()[:, : seq.audio_samples]
    if audio.shape[1] < seq.audio_samples:  # a few samples short after resampling: pad silence
        audio = F.pad(audio, (0, seq.audio_samples - audio.shape[1]))
    return video.clamp(-1, 1), audio


def load_vaes(cfg: EncoderConfig, device: torch.device | str = "cpu"):
    """The (video VAE, audio VAE) pair ``cfg`` names, in eval mode; the same weights every
    call, so decoders at training time match the encoders that made the latents."""
    from model.audio_vae import AUDIO_VAE_PRESETS, AudioVAE
    from model.checkpoint import load_weights
    from model.video_vae import VIDEO_VAE_PRESETS, VideoVAE

    with torch.random.fork_rng(devices=[]):  # random debug VAEs: the same weights in every process
        torch.manual_seed(0)
        video_vae = VideoVAE(VIDEO_VAE_PRESETS[cfg.video_vae])
        audio_vae = AudioVAE(AUDIO_VAE_PRESETS[cfg.audio_vae])
    for module, weights in ((video_vae, cfg.video_vae_weights), (audio_vae, cfg.audio_vae_weights)):
        if weights:
            load_weights(module, weights)
        module.to(device).eval()
    return video_vae, audio_vae


def text_encoder(cfg: EncoderConfig):
    """The text encoder ``cfg`` names (latents and ``tandem generate`` share it)."""
    from model.text_encoder import ByteTokenizer, TextEncoder, TextEncoderConfig

    if cfg.text_encoder:
        return TextEncoder.from_config(TextEncoderConfig(name_or_path=cfg.text_encoder))
    from transformers import T5Config, T5EncoderModel

    d = cfg.text_dim
    with torch.random.fork_rng(devices=[]):  # random debug encoder: the same weights in every process
        torch.manual_seed(0)
        model = T5EncoderModel(T5Config(vocab_size=ByteTokenizer.vocab_size, d_model=d, d_kv=16,
                                        d_ff=2 * d, num_layers=1, num_heads=4))
    return TextEncoder(model.eval(), ByteTokenizer(), max_length=64)


class ClipEncoder:
    """The video VAE, audio VAE and text encoder, ready to turn clip samples into latents."""

    def __init__(self, cfg: EncoderConfig, device: str | torch.device | None = None):
        self.cfg = cfg
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.video_vae, self.audio_vae = load_vaes(cfg, self.device)
        self.text = self._text_encoder()

    def _text_encoder(self):
        return text_encoder(self.cfg)

    @torch.no_grad()
    def encode(self, sample: dict, buckets: BucketConfig) -> dict:
        """One clip shard sample (``mp4``, ``flac``, ``json``, ``txt`` bytes) -> a latent sample
        in its bucket; raises SkipClip for clips that cannot be used."""
        meta = json.loads(sample["json"])
        bucket = clip_bucket(meta, buckets)
        mel = self.audio_vae.cfg.mel
        video, audio = decode_clip(sample["mp4"], sample["flac"], bucket, mel.sample_rate, mel.channels)
        z_video = self.video_vae.encode(video[None].to(self.device)).mode()[0].cpu()
        z_audio = self.audio_vae.encode(audio[None].to(self.device)).mode()[0].cpu()
        caption = sample.get("txt", b"").decode() or meta.get("caption", {}).get("text", "")
        cond = self.text.encode([caption])
        text = cond.text_emb[0][cond.text_mask[0]].cpu()
        meta.update(bucket=bucket.name, bucket_duration_s=bucket.duration_s, latent_fps=bucket.fps,
                    latent_span_s=bucket.sequence.clip_seconds, caption_used=caption,
                    latents={"video_vae": self.cfg.video_vae, "audio_vae": self.cfg.audio_vae,
                             "text_encoder": self.cfg.text_encoder or "tiny-random"})
        return {"key": sample["__key__"], "video": z_video, "audio": z_audio, "text": text, "meta": meta}

    def latent_format(self, buckets: BucketConfig) -> LatentFormat:
        """What these encoders make of clips in ``buckets``: recorded beside every latent shard."""
        v, a, c = self.video_vae.cfg, self.audio_vae.cfg, self.cfg
        return LatentFormat(
            video_encoder=f"tandem:{c.video_vae}", video_weights=weights_digest(c.video_vae_weights),
            audio_encoder=f"tandem:{c.audio_vae}", audio_weights=weights_digest(c.audio_vae_weights),
            text_encoder=c.text_encoder or f"tiny-random-t5:{c.text_dim}",
            text_weights=weights_digest(c.text_encoder) if c.text_encoder else RANDOM_WEIGHTS,
            video_channels=v.latent_channels, audio_channels=a.latent_channels,
            video_stride=(v.temporal_stride, v.spatial_stride, v.spatial_stride),
            audio_stride=a.stride * a.mel.hop, fps=buckets.fps, latent_fps=buckets.fps / v.temporal_stride,
            sample_rate=a.mel.sample_rate, audio_latent_rate=a.latent_rate, text_width=self.text.dim)


RANDOM_WEIGHTS = "random-seed0"  # the debug encoders' weights: seeded, the same in every process


def weights_digest(path: str) -> str:
    """sha256 (16 hex digits) of a weights file, or of a folder's files in name order;
    RANDOM_WEIGHTS when no path is given."""
    if not path:
        return RANDOM_WEIGHTS
    root = Path(path)
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.relative_to(root).as_posix().encode() if root.is_dir() else b"")
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]
