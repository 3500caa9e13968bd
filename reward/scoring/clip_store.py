"""Clips on disk -> ``reward.scoring.sources.Clips`` batches: what training, scoring and metric
heads read.

A clip is a rollout sample (``samples/<id>.mp4`` + ``.json`` + ``.latents.safetensors``, see
``reward.rollouts.rollout_dir``) or any mp4. ``find_clips`` accepts rollout directories, folders of
mp4s, sample json / mp4 paths; ``ClipStore`` loads what a source ``uses`` (latents, or decoded
media) once per clip and batches clips of equal shape (a batch is one tensor per modality; prompts
of different lengths are padded with a mask).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from reward.rollouts.rollout_dir import read_rollouts, sample_paths
from reward.scoring.sources import Clips


@dataclass
class ClipFile:
    id: str
    mp4: Path | None
    latents: Path | None
    meta: dict = field(default_factory=dict)

    @property
    def prompt(self) -> str:
        return str(self.meta.get("prompt", ""))

    @property
    def fps(self) -> float:
        """Frame rate the clip (and its latents) were made at, as the rollout json says."""
        seq = self.meta.get("sequence") or {}
        return float(seq.get("fps") or self.meta.get("fps") or 0.0)


class ClipsError(ValueError):
    """A clip path that cannot be scored; the message says which and why."""


def find_clips(paths) -> list[ClipFile]:
    """Every clip under ``paths``: rollout directories (their complete samples), other folders
    (their mp4s, recursively), sample ``.json`` / ``.mp4`` files."""
    found: list[ClipFile] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir() and (path / "samples").is_dir():
            found += [ClipFile(r.sample_id, r.mp4, r.latents_path if r.latents_path.is_file() else None, r.meta)
                      for r in read_rollouts(path)]
        elif path.is_dir():
            mp4s = sorted(path.rglob("*.mp4"))
            if not mp4s:
                raise ClipsError(f"{path} holds no rollouts (samples/) and no mp4 files")
            found += [_single(p) for p in mp4s]
        elif path.is_file():
            found.append(_single(path))
        else:
            raise ClipsError(f"{path} does not exist")
    return found


def _single(path: Path) -> ClipFile:
    stem = path.name.removesuffix(".json").removesuffix(".mp4").removesuffix(".latents.safetensors")
    paths = sample_paths(path.parent.parent, stem) if path.parent.name == "samples" else {
        "mp4": path.with_name(stem + ".mp4"), "json": path.with_name(stem + ".json"),
        "latents": path.with_name(stem + ".latents.safetensors")}
    meta = json.loads(paths["json"].read_text()) if paths["json"].is_file() else {}
    mp4 = paths["mp4"] if paths["mp4"].is_file() else None
    latents = paths["latents"] if paths["latents"].is_file() else None
    if mp4 is None and latents is None:
        raise ClipsError(f"{path}: neither {paths['mp4'].name} nor {paths['latents'].name} exists")
    return ClipFile(meta.get("sample_id", stem), mp4, latents, meta)


def decode_media(mp4: str | Path) -> tuple[torch.Tensor, torch.Tensor, float, int]:
    """(video (3, T, H, W) in [-1, 1], audio (channels, samples) in [-1, 1], fps, sample rate)
    of an mp4; a clip without sound gets one silent channel."""
    import av

    from model.media import decode_audio

    with av.open(str(mp4)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0)
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    if not frames:
        raise ClipsError(f"{mp4} has no video frames")
    video = torch.from_numpy(np.stack(frames)).permute(3, 0, 1, 2).float() / 127.5 - 1
    with av.open(str(mp4)) as container:
        if not container.streams.audio:
            return video, torch.zeros(1, 0), fps, 0
        stream = container.streams.audio[0]
        rate = stream.rate
        audio, _ = decode_audio(container, rate, stream.channels)
    audio = audio if audio is not None else np.zeros((1, 0), np.float32)
    return video, torch.from_numpy(audio), fps, rate


class ClipStore:
    """Loads each clip's inputs (latents or media, as ``uses`` says) and batches them. With
    ``cache`` (latents: small) each clip is read once; decoded media is re-read per use."""

    def __init__(self, clips: list[ClipFile], uses: str, cache: bool = True):
        if uses not in ("latents", "media"):
            raise ValueError(f"uses must be 'latents' or 'media', got {uses!r}")
        self.clips, self.uses, self.cache = clips, uses, cache
        self._cache: dict[int, dict] = {}

    def __len__(self) -> int:
        return len(self.clips)

    def inputs(self, i: int) -> dict:
        if i in self._cache:
            return self._cache[i]
        x = self._load(self.clips[i])
        if self.cache:
            self._cache[i] = x
        return x

    def _load(self, clip: ClipFile) -> dict:
        if self.uses == "latents":
            if clip.latents is None:
                raise ClipsError(f"clip {clip.id} has no latents ({clip.id}.latents.safetensors): a latent reward "
                                 "model scores rollouts of `tandem generate`, which stores them")
            from safetensors.torch import load_file

            lat = load_file(str(clip.latents))
            return {"video_latents": lat["video"], "audio_latents": lat["audio"], "text_emb": lat.get("text_emb"),
                    "fps": clip.fps, "sample_rate": 0}
        if clip.mp4 is None:
            raise ClipsError(f"clip {clip.id} has no mp4 to decode")
        video, audio, fps, rate = decode_media(clip.mp4)
        return {"video": video, "audio": audio, "fps": fps, "sample_rate": rate}

    def _shape_key(self, x: dict) -> tuple:
        if self.uses == "latents":
            return ("latents", tuple(x["video_latents"].shape), tuple(x["audio_latents"].shape), x["fps"])
        return ("media", tuple(x["video"].shape), tuple(x["audio"].shape), x["fps"], x["sample_rate"])

    def batches(self, indices, batch_size: int = 0) -> list[tuple[list[int], Clips]]:
        """Clips of ``indices`` as batches of equal shape: [(positions in ``indices``, Clips)].
        ``batch_size`` 0: one batch per shape."""
        loaded = [self.inputs(int(i)) for i in indices]
        groups: dict[tuple, list[int]] = defaultdict(list)
        for pos, x in enumerate(loaded):
            groups[self._shape_key(x)].append(pos)
        out = []
        for positions in groups.values():
            step = batch_size or len(positions)
            for s in range(0, len(positions), step):
                chunk = positions[s:s + step]
                out.append((chunk, self.collate([int(indices[p]) for p in chunk], [loaded[p] for p in chunk])))
        return out

    def collate(self, indices: list[int], rows: list[dict] | None = None) -> Clips:
        rows = rows or [self.inputs(i) for i in indices]
        clips = Clips(prompts=[self.clips[i].prompt for i in indices], fps=rows[0]["fps"],
                      sample_rate=rows[0]["sample_rate"], meta=[self.clips[i].meta for i in indices])
        if self.uses == "media":
            clips.video = torch.stack([r["video"] for r in rows])
            clips.audio = torch.stack([r["audio"] for r in rows])
            return clips
        clips.video_latents = torch.stack([r["video_latents"] for r in rows])
        clips.audio_latents = torch.stack([r["audio_latents"] for r in rows])
        texts = [r["text_emb"] for r in rows]
        if all(t is not None for t in texts):
            length = max(t.shape[0] for t in texts)
            clips.text_emb = torch.zeros(len(rows), length, texts[0].shape[1])
            clips.text_mask = torch.zeros(len(rows), length, dtype=torch.bool)
            for b, t in enumerate(texts):
                clips.text_emb[b, : t.shape[0]], clips.text_mask[b, : t.shape[0]] = t, True
        return clips


def score_clip_files(source, clips: list[ClipFile], batch_size: int = 16) -> list[dict[str, float]]:
    """Per clip (in order): head -> score, from any ``reward.scoring.sources.RewardSource``."""
    store = ClipStore(clips, source.uses, cache=False)
    out: list[dict[str, float]] = [{} for _ in clips]
    for start in range(0, len(clips), batch_size):
        indices = list(range(start, min(start + batch_size, len(clips))))
        for positions, batch in store.batches(indices):
            for head, values in source.score(batch).items():
                for p, v in zip(positions, values.tolist(), strict=True):
                    out[indices[p]][head] = float(v)
    return out
