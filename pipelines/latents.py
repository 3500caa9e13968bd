"""Latent DAG: clip shards -> latent shards (WebDataset), on Ray Data with an actor pool.

One latent shard per clip shard, written to a temp name and renamed, so a re-run skips
every shard already done (resumable like the curation DAG). Each sample keeps the clip's
key and carries ``video.pth`` (C, T, H, W), ``audio.pth`` (C, T), ``text.pth`` (L, D) and
``json`` (the clip's metadata plus the latent shapes and the encoders used), the format
training/loader.py reads. Actors take a GPU when the cluster has one.
"""

from __future__ import annotations

import io
import itertools
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch


@dataclass
class LatentsConfig:
    video_vae: str = "debug"  # preset name; weights from video_vae_weights when given
    video_vae_weights: str = ""
    audio_vae: str = "debug"
    audio_vae_weights: str = ""
    text_encoder: str = ""  # HF path of a T5-family encoder; "" = tiny random (debug) one
    text_dim: int = 64
    size: tuple = (64, 64)  # H, W the clip is resized to before encoding
    max_frames: int = 9  # 1 + k * temporal stride
    actors: int = 1
    cpus_per_actor: float = 0.5  # fractional: 2-CPU machines deadlock otherwise
    extra: dict = field(default_factory=dict)


def _decode_clip(mp4: bytes, flac: bytes, cfg: LatentsConfig, sample_rate: int, channels: int):
    import av
    import torch.nn.functional as F

    with av.open(io.BytesIO(mp4)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in itertools.islice(container.decode(video=0), cfg.max_frames)]
    video = torch.from_numpy(np.stack(frames)).permute(3, 0, 1, 2).float() / 127.5 - 1  # (3, T, H, W)
    video = F.interpolate(video, size=tuple(cfg.size), mode="bilinear", align_corners=False)
    with av.open(io.BytesIO(flac)) as container:
        resampler = av.AudioResampler(format="fltp", layout="stereo" if channels == 2 else "mono", rate=sample_rate)
        chunks = [r.to_ndarray() for f in container.decode(audio=0) for r in resampler.resample(f)]
    audio = torch.from_numpy(np.concatenate(chunks, axis=1)).float()  # (ch, N)
    return video, audio


class ClipShardEncoder:
    """Ray Data actor: encodes whole clip shards into latent shards."""

    def __init__(self, cfg: dict, out_dir: str):
        from model.audio_vae import AUDIO_VAE_PRESETS, AudioVAE
        from model.checkpoint import load_weights
        from model.video_vae import VIDEO_VAE_PRESETS, VideoVAE
        from pipelines.config import from_dict

        self.cfg = from_dict(LatentsConfig, cfg)
        self.out_dir = Path(out_dir)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        torch.manual_seed(0)  # random debug encoders must agree across actors and re-runs
        self.video_vae = VideoVAE(VIDEO_VAE_PRESETS[self.cfg.video_vae])
        self.audio_vae = AudioVAE(AUDIO_VAE_PRESETS[self.cfg.audio_vae])
        for module, weights in ((self.video_vae, self.cfg.video_vae_weights), (self.audio_vae, self.cfg.audio_vae_weights)):
            if weights:
                load_weights(module, weights)
            module.to(self.device).eval()
        self.text = self._text_encoder()

    def _text_encoder(self):
        from model.text_encoder import ByteTokenizer, TextEncoder, TextEncoderConfig

        if self.cfg.text_encoder:
            return TextEncoder.from_config(TextEncoderConfig(name_or_path=self.cfg.text_encoder))
        from transformers import T5Config, T5EncoderModel

        d = self.cfg.text_dim
        model = T5EncoderModel(T5Config(vocab_size=ByteTokenizer.vocab_size, d_model=d, d_kv=16, d_ff=2 * d,
                                        num_layers=1, num_heads=4))
        return TextEncoder(model.eval(), ByteTokenizer(), max_length=64)

    @torch.no_grad()
    def encode(self, sample: dict) -> dict:
        meta = json.loads(sample["json"])
        mel = self.audio_vae.cfg.mel
        video, audio = _decode_clip(sample["mp4"], sample["flac"], self.cfg, mel.sample_rate, mel.channels)
        stride = self.video_vae.cfg.temporal_stride
        video = video[:, : 1 + (video.shape[1] - 1) // stride * stride]
        z_video = self.video_vae.encode(video[None].to(self.device)).mode()[0].cpu()
        z_audio = self.audio_vae.encode(audio[None].to(self.device)).mode()[0].cpu()
        caption = sample.get("txt", b"").decode() or meta.get("caption", {}).get("text", "")
        cond = self.text.encode([caption])
        text = cond.text_emb[0][cond.text_mask[0]].cpu()
        meta.update(video_shape=list(z_video.shape), audio_shape=list(z_audio.shape), caption_used=caption,
                    latents={"video_vae": self.cfg.video_vae, "audio_vae": self.cfg.audio_vae,
                             "text_encoder": self.cfg.text_encoder or "tiny-random"})
        return {"key": sample["__key__"], "video": z_video, "audio": z_audio, "text": text, "meta": meta}

    def __call__(self, batch: dict) -> dict:
        from training.loader import write_latent_shard

        for shard in batch["shard"]:
            out = self.out_dir / Path(shard).name
            tmp = out.with_suffix(".tar.tmp")
            write_latent_shard(tmp, [self.encode(s) for s in _read_clip_shard(shard)])
            tmp.rename(out)  # atomic: a crash leaves no half shard behind
        return batch


def _read_clip_shard(path: str) -> list[dict]:
    samples: dict[str, dict] = {}
    with tarfile.open(path) as tar:
        for m in tar.getmembers():
            if m.isfile():
                key, _, ext = m.name.partition(".")
                samples.setdefault(key, {"__key__": key})[ext] = tar.extractfile(m).read()
    return [samples[k] for k in sorted(samples) if {"mp4", "flac", "json"} <= samples[k].keys()]


def pending_shards(clip_dir: str | Path, out_dir: str | Path) -> list[str]:
    """Clip shards whose latent shard does not exist yet."""
    out_dir = Path(out_dir)
    return [str(p) for p in sorted(Path(clip_dir).glob("*.tar")) if not (out_dir / p.name).exists()]


def run_latents(clip_dir: str | Path, out_dir: str | Path, cfg: LatentsConfig | None = None,
                address: str | None = None) -> Path:
    """Encode every pending clip shard under ``clip_dir`` into ``out_dir``; returns ``out_dir``."""
    from pipelines.config import to_dict
    from pipelines.ray_local import init_ray

    cfg = cfg or LatentsConfig()
    out_dir = Path(out_dir).absolute()
    out_dir.mkdir(parents=True, exist_ok=True)
    todo = pending_shards(clip_dir, out_dir)
    if todo:
        init_ray(address)
        import ray
        import ray.data

        gpus = 1 if ray.cluster_resources().get("GPU", 0) else 0
        ds = ray.data.from_items([{"shard": s} for s in todo])
        ds.map_batches(ClipShardEncoder, fn_constructor_args=(to_dict(cfg), str(out_dir)), batch_size=1,
                       compute=ray.data.ActorPoolStrategy(size=cfg.actors), num_gpus=gpus,
                       num_cpus=cfg.cpus_per_actor).materialize()
    manifest = Path(clip_dir) / "manifest.jsonl"
    if manifest.exists():  # the run links back to the clip data it was made from
        (out_dir / "manifest.jsonl").write_bytes(manifest.read_bytes())
    return out_dir
