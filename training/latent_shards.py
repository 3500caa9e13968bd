"""Latent shards, the contract between the latent DAG and training. This module owns the
format: member list, writer, and the metadata that says what made the latents. Readers
index a shard with ``index_latent_shard``, the one tar index of curation.shards (shared with
clip shards), which also tells a damaged shard (cut short) from a whole one.

One sample per clip: ``video.pth`` (C, T, H, W), ``audio.pth`` (C, T), ``text.pth`` (L, D)
and ``json`` (the clip's metadata plus ``video_shape``/``audio_shape`` and its ``bucket``).
Beside each ``NAME.tar`` lies ``NAME.format.json``, a ``LatentFormat``: encoder names and
weight digests, latent channels and strides, latent rates and text width, i.e. what a
model trained on these latents must expect and what must decode its samples.

A shard is written under a temporary name (``NAME.tar.tmp``, which no reader or resume
globs) and renamed, after its format file: a ``.tar`` that exists is complete and described.

``manifest.jsonl`` beside the shards lists every sample (``manifest_rows`` of each shard:
key, shard, bucket, shapes, duration); ``write_manifest`` and ``read_manifest`` are the only
code that writes or parses it. Its sha256 is the latents' identity in lineage and in
training runs' tags.

A reader's ``directory`` (training's ``data.shards``) may name several directories separated
by commas (``shard_dirs``): a partitioned pipeline encodes each footage batch to a directory
of its own and trains on all of them as one data set, each keeping its own manifest.
"""

from __future__ import annotations

import io
import json
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

# One tar index (and damage check) for clip and latent shards alike.
from curation.shards import Spans
from curation.shards import index_shard as index_latent_shard
from model.config import from_dict, to_dict
from model.presets import LatentGeometry

LATENT_MEMBERS = ("video.pth", "audio.pth", "text.pth", "json")
MANIFEST = "manifest.jsonl"


@dataclass
class LatentFormat:
    """What made a directory of latent shards, and the geometry a model must expect."""

    video_encoder: str = ""  # registry name: "ltx2", "wan", "tandem:debug" (training.encoders)
    video_weights: str = ""  # sha256 of the weights file/folder, or "random-seed0" for random debug weights
    audio_encoder: str = ""
    audio_weights: str = ""
    vocoder_weights: str = ""  # the vocoder paired with the audio VAE: what must decode samples
    text_encoder: str = ""
    text_weights: str = ""
    video_channels: int = 0
    audio_channels: int = 0
    video_stride: tuple = (4, 8, 8)  # pixel frames, pixels (h, w) per video latent
    audio_stride: int = 0  # waveform samples per audio latent
    fps: float = 0.0  # pixel frames per second the clips were sampled at
    latent_fps: float = 0.0  # video latents per second (after the first, causal one)
    sample_rate: int = 0  # waveform rate before the audio encoder
    audio_latent_rate: float = 0.0  # audio latents per second
    audio_causal_stride: int = 0  # 0: equal spans; s: causal over s sub-frames (model.sequence)
    text_width: int = 0  # text embedding width

    def geometry(self) -> LatentGeometry:
        """What a DualDiT trained on these latents must match (``model.presets.get_preset``)."""
        return LatentGeometry(video_channels=self.video_channels, video_temporal_stride=self.video_stride[0],
                              video_spatial_stride=self.video_stride[1], audio_channels=self.audio_channels,
                              audio_latent_rate=self.audio_latent_rate, audio_causal_stride=self.audio_causal_stride,
                              text_width=self.text_width, fps=self.fps)

    def encoders(self) -> dict[str, str]:
        """Who made the latents: names and weight digests, comparable with another format's."""
        return {k: getattr(self, k) for k in ("video_encoder", "video_weights", "audio_encoder", "audio_weights",
                                              "vocoder_weights")}


def format_path(shard: str | Path) -> Path:
    shard = Path(shard)
    return shard.with_name(shard.name.removesuffix(".tar") + ".format.json")


def write_latent_shard(path: str | Path, samples: list[dict], fmt: LatentFormat | None = None) -> Path:
    """Write ``samples`` ({key, video, audio, text, meta}) as one latent shard (atomically),
    with ``fmt`` beside it."""
    import webdataset as wds

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt is not None:
        format_path(path).write_text(json.dumps(to_dict(fmt), indent=2))
    tmp = path.with_name(path.name + ".tmp")  # not *.tar: readers and resume never see it
    try:
        with wds.TarWriter(str(tmp), mtime=0) as sink:  # no clock in the bytes: same latents, same shard
            for s in samples:
                meta = dict(s.get("meta", {}), video_shape=list(s["video"].shape), audio_shape=list(s["audio"].shape))
                sink.write({"__key__": s["key"], "video.pth": s["video"], "audio.pth": s["audio"],
                            "text.pth": s["text"], "json": meta})
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    return path


def shard_dirs(shards: str | Path) -> list[Path]:
    """The directories ``shards`` names: one, or several separated by commas."""
    return [Path(part.strip()) for part in str(shards).split(",") if part.strip()]


def absolute_shards(shards: str | Path) -> str:
    """``shards`` with each directory absolute (as a run records ``data.shards``)."""
    return ",".join(str(d.absolute()) for d in shard_dirs(shards))


def shard_files(shards: str | Path) -> list[Path]:
    """The ``*.tar`` of each directory ``shards`` names, directory by directory, by name."""
    return [path for directory in shard_dirs(shards) for path in sorted(directory.glob("*.tar"))]


def latent_shard_paths(directory: str | Path) -> list[Path]:
    shards = shard_files(directory)
    if not shards:
        raise FileNotFoundError(f"no latent shards (*.tar) under {directory}")
    return shards


def _read(f, span: tuple[int, int]) -> bytes:
    f.seek(span[0])
    return f.read(span[1])


def read_latent_json(path: str | Path, index: dict[str, Spans]) -> dict[str, dict]:
    """key -> the sample's ``json`` (no tensor is read); samples without one map to {}."""
    with open(path, "rb") as f:
        return {key: json.loads(_read(f, spans["json"])) if "json" in spans else {} for key, spans in index.items()}


def read_latent_sample(path: str | Path, key: str, spans: Spans) -> dict[str, Any]:
    """One sample: ``__key__``, the ``*.pth`` tensors and the ``json``."""
    out: dict[str, Any] = {"__key__": key}
    with open(path, "rb") as f:
        for ext, span in spans.items():
            if ext.endswith("pth"):
                out[ext] = torch.load(io.BytesIO(_read(f, span)))
            elif ext == "json":
                out[ext] = json.loads(_read(f, span))
    return out


def manifest_rows(path: str | Path) -> list[dict[str, Any]]:
    """One row per latent sample of a shard: key, shard, bucket, shapes, duration."""
    path = Path(path)
    metas = read_latent_json(path, index_latent_shard(path))
    return [{"key": key, "shard": path.name, "bucket": meta.get("bucket"), "video_shape": meta["video_shape"],
             "audio_shape": meta["audio_shape"], "duration": meta.get("latent_span_s")}
            for key, meta in metas.items()]


def manifest_path(directory: str | Path) -> Path:
    return Path(directory) / MANIFEST


def write_manifest(directory: str | Path, rows: list[dict[str, Any]]) -> Path:
    """``directory/manifest.jsonl``: ``rows`` (``manifest_rows`` of its shards), atomically."""
    return write_jsonl(manifest_path(directory), rows)


def read_manifest(directory: str | Path) -> list[dict[str, Any]] | None:
    """The rows of ``directory/manifest.jsonl``; None when there is none."""
    path = manifest_path(directory)
    return read_jsonl(path) if path.is_file() else None


def write_jsonl(path: str | Path, rows: list[dict]) -> Path:
    """One JSON object a line (keys sorted: same rows, same bytes), written under a temporary
    name and renamed, so a reader never sees half a file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    os.replace(tmp, path)
    return path


def read_jsonl(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def read_latent_format(directory: str | Path) -> LatentFormat | None:
    """The one LatentFormat of every shard under ``directory`` (or the directories it names);
    None when no shard has a format file (shards written before formats were recorded).
    Raises when shards disagree."""
    found: dict[str, list[str]] = defaultdict(list)
    for shard in shard_files(directory):
        if format_path(shard).is_file():
            found[format_path(shard).read_text()].append(shard.name)
    if not found:
        return None
    if len(found) > 1:
        groups = "; ".join(f"{', '.join(names[:3])}: {json.loads(text)}" for text, names in found.items())
        raise ValueError(f"latent shards under {directory} were made by different encoders ({groups}): "
                         "encode them again with one config, or keep them in separate directories")
    return from_dict(LatentFormat, json.loads(next(iter(found))))
