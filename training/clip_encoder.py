"""Clip -> latents: decode clip shard samples at their bucket's shape and encode them in batches.

Shared by the latent DAG (pipelines/latents_cmd.py, offline, actor pool) and the loader's
clip-shard source (training/loader.py, on the fly for small experiments), so both produce
the same latent sample: ``video`` (C, T, H, W), ``audio`` (C, T), ``text`` (L, D), ``meta``.
The encoders come from the registry in training/encoders.py (``EncoderConfig``).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from training.buckets import Bucket, BucketConfig, assign_bucket
from training.encoders import (
    EncoderConfig,
    check,
    format_of,
    load_audio,
    load_text,
    load_video,
    weights_digest,
)
from training.latent_shards import LatentFormat

text_encoder = load_text  # the prompt encoder latents and ``tandem generate`` share
__all__ = ["ClipEncoder", "EncoderConfig", "SkipClip", "clip_bucket", "decode_clip", "text_encoder", "weights_digest"]


class SkipClip(Exception):
    """A clip that cannot be trained on (recorded with its reason, never fatal)."""

    def __init__(self, reason: str, message: str = ""):
        super().__init__(f"{reason}: {message}" if message else reason)
        self.reason = reason


def clip_bucket(meta: dict, buckets: BucketConfig, temporal_stride: int = 4) -> Bucket:
    """The bucket of a clip from its shard metadata, or SkipClip(too_short)."""
    duration = meta.get("duration_s") or (meta["end_s"] - meta["start_s"])
    bucket = assign_bucket(buckets, duration, meta["width"], meta["height"], temporal_stride)
    if bucket is None:
        raise SkipClip("too_short", f"{duration:.2f} s is shorter than every bucket ({buckets.durations})")
    return bucket


def fit_frames(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
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
    sampled at ``bucket.fps`` by timestamp, and audio (channels, N) at ``sample_rate`` of
    exactly the same span."""
    import av

    from model.media import decode_audio, frame_at

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
    picks = frame_at(np.asarray(times) - times[0], targets)
    video = torch.from_numpy(np.stack([frames[i] for i in picks])).permute(0, 3, 1, 2).float()
    video = fit_frames(video, seq.height, seq.width).permute(1, 0, 2, 3) / 127.5 - 1  # (3, T, H, W)

    samples = round(seq.clip_seconds * sample_rate)
    with av.open(io.BytesIO(flac)) as container:
        audio, _ = decode_audio(container, sample_rate, channels)
    if audio is None:
        raise ValueError("the clip's flac decodes to no audio samples")
    audio = torch.from_numpy(audio)[:, :samples]
    if audio.shape[1] < samples:  # a few samples short after resampling: pad silence
        audio = F.pad(audio, (0, samples - audio.shape[1]))
    return video.clamp(-1, 1), audio


@dataclass
class DecodedClip:
    """One clip ready for the encoders: its bucket's pixels and waveform, caption, metadata."""
    key: str
    bucket: Bucket
    video: torch.Tensor
    audio: torch.Tensor
    caption: str
    meta: dict


class ClipEncoder:
    """The video and audio autoencoders and the text encoder, ready to turn clip samples into
    latents; clips of one bucket are encoded together (``cfg.batch_size`` at a time)."""

    def __init__(self, cfg: EncoderConfig, device: str | torch.device | None = None):
        check(cfg)  # a misconfiguration says what to set, before any weights load
        self.cfg = cfg
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.video_vae, self.audio_vae = load_video(cfg, self.device), load_audio(cfg, self.device)
        self.text = load_text(cfg, self.device)
        self._formats: dict[float, LatentFormat] = {}

    @property
    def temporal_stride(self) -> int:
        return self.video_vae.temporal_stride

    def decode(self, sample: dict, buckets: BucketConfig) -> DecodedClip:
        """A clip shard sample (``mp4``, ``flac``, ``json``, ``txt`` bytes) decoded at its
        bucket's shape; raises SkipClip for clips that cannot be used."""
        meta = json.loads(sample["json"])
        bucket = clip_bucket(meta, buckets, self.temporal_stride)
        video, audio = decode_clip(sample["mp4"], sample["flac"], bucket, self.audio_vae.sample_rate,
                                   self.audio_vae.channels)
        caption = sample.get("txt", b"").decode() or meta.get("caption", {}).get("text", "")
        return DecodedClip(sample["__key__"], bucket, video, audio, caption, meta)

    @torch.no_grad()
    def encode_batch(self, clips: list[DecodedClip]) -> list[dict]:
        """Clips of one bucket -> latent samples (``key``, ``video``, ``audio``, ``text``, ``meta``)."""
        z_video = self.video_vae.encode(torch.stack([c.video for c in clips]).to(self.device)).cpu()
        z_audio = self.audio_vae.encode(torch.stack([c.audio for c in clips]).to(self.device)).cpu()
        cond = self.text.encode([c.caption for c in clips])
        out = []
        for i, c in enumerate(clips):
            meta = dict(c.meta, bucket=c.bucket.name, bucket_duration_s=c.bucket.duration_s, latent_fps=c.bucket.fps,
                        latent_span_s=c.bucket.sequence.clip_seconds, caption_used=c.caption,
                        latents={"video": self.video_vae.name, "audio": self.audio_vae.name,
                                 "text": self.cfg.text_path or "tiny-random"})
            out.append({"key": c.key, "video": z_video[i].clone(), "audio": z_audio[i].clone(),
                        "text": cond.text_emb[i][cond.text_mask[i]].float().cpu(), "meta": meta})
        return out

    def encode(self, sample: dict, buckets: BucketConfig) -> dict:
        """One clip shard sample -> a latent sample in its bucket; raises SkipClip for clips
        that cannot be used."""
        return self.encode_batch([self.decode(sample, buckets)])[0]

    def encode_many(self, samples, buckets: BucketConfig):
        """Clip shard samples -> (latent samples in input order, [(key, exception)] for the clips
        that could not be decoded or encoded). Decoded clips wait per bucket until
        ``batch_size`` of them can be encoded together; a failing batch is retried clip by
        clip, so one bad clip never takes its neighbours down."""
        done, failed, waiting = {}, [], {}

        def flush(bucket):
            batch = waiting.pop(bucket, [])
            if not batch:
                return
            try:
                done.update(zip([i for i, _ in batch], self.encode_batch([c for _, c in batch]), strict=True))
            except torch.cuda.OutOfMemoryError:
                raise
            except Exception:
                for i, clip in batch:
                    try:
                        done[i] = self.encode_batch([clip])[0]
                    except torch.cuda.OutOfMemoryError:
                        raise
                    except Exception as exc:  # this clip's problem, not the shard's
                        failed.append((clip.key, exc))

        for i, sample in enumerate(samples):
            try:
                clip = self.decode(sample, buckets)
            except torch.cuda.OutOfMemoryError:
                raise
            except Exception as exc:  # SkipClip, broken media, odd metadata
                failed.append((sample.get("__key__"), exc))
                continue
            waiting.setdefault(clip.bucket, []).append((i, clip))
            if len(waiting[clip.bucket]) >= max(1, self.cfg.batch_size):
                flush(clip.bucket)
        for bucket in list(waiting):
            flush(bucket)
        return [done[i] for i in sorted(done)], failed

    def latent_format(self, buckets: BucketConfig) -> LatentFormat:
        """What these encoders make of clips in ``buckets``: recorded beside every latent shard."""
        if buckets.fps not in self._formats:
            self._formats[buckets.fps] = format_of(self.cfg, self.video_vae, self.audio_vae, self.text.dim,
                                                   buckets.fps)
        return self._formats[buckets.fps]
