"""Streaming loader over latent shards, or clip shards encoded on the fly, with an exactly
resumable position.

Two sources yield the same samples, so ``collate`` and the Trainer never know which one ran:

- ``latents``: shards the latent DAG wrote; a sample holds ``video.pth`` (C, T, H, W),
  ``audio.pth`` (C, T), ``text.pth`` (L, D) and ``json`` (metadata incl. the shapes).
- ``clips``: curated clip shards (``mp4``, ``flac``, ``json``, ``txt``), each sample decoded
  and encoded when it is read (training.clip_encoder), for small experiments that skip
  the latent pass.

Each epoch is planned up front from the shard index alone (only ``json`` members are read,
no media is decoded): a seeded permutation of all samples, grouped into buckets, cut into
batches, and dealt round-robin to ranks. A bucket is one duration/aspect shape: a latent
sample's ``bucket`` name when the latent DAG wrote one, else (older shards) its exact latent
shapes; for a clip, the training.buckets Bucket its duration and aspect fall into. Batches
never mix buckets. The state is (epoch, next batch), so a resume neither repeats nor skips
a sample, on any world size that matches the checkpoint.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import logging
import random
from collections import Counter, defaultdict
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from curation.shards import CLIP_MEMBERS, DamagedShard, index_shard, missing_members, read_members
from training.buckets import BucketConfig
from training.clip_encoder import ClipEncoder, EncoderConfig, SkipClip, clip_bucket
from training.latent_shards import (
    latent_shard_paths,
    read_latent_format,
    read_latent_json,
    read_latent_sample,
    shard_files,
)

log = logging.getLogger(__name__)

SOURCES = ("latents", "clips")
# What decoding a clip whose bytes are not the media its shard claims raises: the encoder's
# SkipClip, PyAV's errors (ValueError subclasses), numpy on an empty audio stream (ValueError),
# a missing stream (IndexError). Anything else is a bug or an infrastructure fault and propagates.
BAD_MEDIA_ERRORS = (SkipClip, ValueError, IndexError)


@dataclass
class LoaderConfig:
    # directory of *.tar shards: latent shards or clip shards, as ``source`` says; or several,
    # separated by commas, read as one data set (a partitioned pipeline's footage batches)
    shards: str = ""
    batch_size: int = 2  # per rank
    seed: int = 0
    drop_last: bool = True
    source: str = "latents"  # "latents" (latent DAG output) | "clips" (clip shards, encoded when read)
    buckets: BucketConfig = field(default_factory=BucketConfig)  # clips source: duration/aspect buckets
    encoder: EncoderConfig = field(default_factory=EncoderConfig)  # clips source: VAEs + text encoder
    # A shard cut short (an interrupted copy) stops the run before Ray starts, naming it; true
    # trains on the others instead, and the run records which were left out (log, MLflow tag).
    skip_damaged: bool = False

    def __post_init__(self):
        if self.source not in SOURCES:
            raise ValueError(f"data.source must be one of {', '.join(SOURCES)}, not {self.source!r}")


@dataclass(frozen=True)
class _Entry:
    shard: str
    key: str
    members: tuple  # ((ext, (offset, size)), ...): where each member's bytes lie in the shard
    bucket: Hashable  # samples batch together iff their buckets are equal

    @property
    def where(self) -> str:
        return f"{Path(self.shard).name}:{self.key}"


@dataclass
class DataIndex:
    """What a loader plans from: the usable samples, and what was left out."""

    entries: list[_Entry]
    skipped: dict[str, int] = field(default_factory=dict)  # clips source: clips left out, by reason
    damaged: dict[str, str] = field(default_factory=dict)  # shard -> why (left out with skip_damaged)

    @property
    def buckets(self) -> list[Hashable]:
        return [e.bucket for e in self.entries]


def _indexed(shards: list[Path], skip_damaged: bool, damaged: dict[str, str]):
    """(shard, its index) for each of ``shards``. A damaged shard raises DamagedShard, or with
    ``skip_damaged`` is left out and recorded in ``damaged``."""
    for shard in shards:
        try:
            index = index_shard(shard)
        except DamagedShard as exc:
            if not skip_damaged:
                raise
            damaged[str(shard)] = str(exc)
            continue
        yield shard, index


def index_shards(directory: str | Path, skip_damaged: bool = False) -> DataIndex:
    """Every latent sample's byte ranges and bucket, in shard/key order."""
    read_latent_format(directory)  # raises when shards of different encoders are mixed
    found, first_shape = DataIndex([]), {}
    for shard, index in _indexed(latent_shard_paths(directory), skip_damaged, found.damaged):
        for key, meta in read_latent_json(shard, index).items():
            if "video_shape" not in meta or "audio_shape" not in meta:
                raise ValueError(f"{shard.name}:{key} is not a latent sample (no video_shape/audio_shape in "
                                 f"its json; members {sorted(index[key])}): for clip shards set "
                                 "data.source=clips, or encode them with the latent DAG first")
            shape = (tuple(meta["video_shape"]), tuple(meta["audio_shape"]))
            bucket = meta.get("bucket") or shape
            seen = first_shape.setdefault(bucket, (shape, f"{shard.name}:{key}"))
            if seen[0] != shape:  # a batch of this bucket could not be stacked
                raise ValueError(f"latent bucket {bucket!r} holds shapes {seen[0]} ({seen[1]}) and {shape} "
                                 f"({shard.name}:{key}): shards encoded with different VAEs or bucket "
                                 f"settings are mixed under {directory}; encode them again with one config")
            found.entries.append(_Entry(str(shard), key, tuple(sorted(index[key].items())), bucket))
    return found


def index_clip_shards(directory: str | Path, buckets: BucketConfig, temporal_stride: int = 4,
                      skip_damaged: bool = False) -> DataIndex:
    """Every usable clip's byte ranges and Bucket (for a video VAE of ``temporal_stride``), in
    shard/key order, from the ``json`` members only; and how many clips were left out, by reason."""
    found, skipped = DataIndex([]), Counter()
    shards = shard_files(directory)
    if not shards:
        raise FileNotFoundError(f"no clip shards (*.tar) under {directory}")
    for shard, index in _indexed(shards, skip_damaged, found.damaged):
        for key, spans in index.items():
            if missing_members(spans):
                skipped["incomplete_sample"] += 1
                continue
            try:
                bucket = clip_bucket(json.loads(read_members(shard, spans, ("json",))["json"]), buckets,
                                     temporal_stride)
            except SkipClip as exc:
                skipped[exc.reason] += 1
                continue
            except (ValueError, KeyError, TypeError):  # unparsable json, or no start/end/size in it
                skipped["bad_metadata"] += 1
                continue
            found.entries.append(_Entry(str(shard), key, tuple(sorted(spans.items())), bucket))
    found.skipped = dict(sorted(skipped.items()))
    return found


def index_data(cfg: LoaderConfig, skip_damaged: bool | None = None) -> DataIndex:
    """The samples a loader of ``cfg`` plans from (read from the shards' indexes and ``json``
    members, no media or tensor). ``skip_damaged`` None: as ``cfg.skip_damaged`` says."""
    skip = cfg.skip_damaged if skip_damaged is None else skip_damaged
    if cfg.source == "clips":
        from training.encoders import load_video

        stride = load_video(cfg.encoder, meta=True).temporal_stride  # config only, no weights
        return index_clip_shards(cfg.shards, cfg.buckets, stride, skip)
    return index_shards(cfg.shards, skip)


def deal_batches(buckets: list[Hashable], batch_size: int, world_size: int, *, seed: int, epoch: int,
                 drop_last: bool = True) -> list[list[int]]:
    """One epoch's batches of sample indices in the order they are dealt, batch i to rank
    i % world_size: a permutation seeded by (seed, epoch) of the samples (``buckets[i]`` is
    sample i's), grouped by bucket and cut into batches of ``batch_size`` (with each bucket's
    short remainder unless ``drop_last``); whole rounds only, so every rank takes as many
    steps. Pure: the loader plans with it, and preflights count with it."""
    order = list(range(len(buckets)))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    open_batches: dict[Hashable, list[int]] = defaultdict(list)
    batches = []
    for i in order:
        batch = open_batches[buckets[i]]
        batch.append(i)
        if len(batch) == batch_size:
            batches.append(list(batch))
            batch.clear()
    if not drop_last:
        batches += [b for b in open_batches.values() if b]
    return batches[:len(batches) - len(batches) % world_size]


def _fingerprint(entries: list[_Entry]) -> str:
    """Which samples, in which buckets, a plan is made of: a resume over other data would
    silently repeat or skip samples even where the count matches."""
    digest = hashlib.sha256()
    for e in entries:
        digest.update(f"{e.where}\0{e.bucket!r}\n".encode())
    return digest.hexdigest()[:16]


def collate(samples: list[dict]) -> dict:
    """Stack same-bucket latents; pad text to the longest caption with a mask."""
    longest = max(s["text.pth"].shape[0] for s in samples)
    text = torch.zeros(len(samples), longest, samples[0]["text.pth"].shape[1])
    mask = torch.zeros(len(samples), longest, dtype=torch.bool)
    for i, s in enumerate(samples):
        n = s["text.pth"].shape[0]
        text[i, :n], mask[i, :n] = s["text.pth"], True
    return {"video": torch.stack([s["video.pth"] for s in samples]),
            "audio": torch.stack([s["audio.pth"] for s in samples]),
            "text_emb": text, "text_mask": mask, "meta": [s["json"] for s in samples],
            "keys": [s.get("__key__") for s in samples]}


class LatentLoader:
    """Iterates batches for one rank; ``state_dict``/``load_state_dict`` give the exact position.

    ``skipped`` counts, by reason, the clips (clips source) left out of every plan. A planned
    clip whose media turns out undecodable is replaced by the next decodable clip of its
    bucket in index order (its ``json`` gets ``substitute_for``) and recorded in
    ``unreadable``: the batch keeps its shape, the plan and hence resume stay exact, and
    every rank and every re-run makes the same substitution. A bucket with no decodable
    clip at all raises, since that is a broken encoder config or shard, not one bad clip.
    ``damaged`` names the shards left out as cut short (``data.skip_damaged``; else they raise).
    """

    def __init__(self, cfg: LoaderConfig, rank: int = 0, world_size: int = 1):
        self.cfg, self.rank, self.world_size = cfg, rank, world_size
        self.unreadable: dict[str, str] = {}  # "shard:key" -> why the clip could not be decoded
        self._encoder: ClipEncoder | None = None
        data = index_data(cfg)
        self.entries, self.skipped = data.entries, data.skipped
        self.damaged = data.damaged  # shard -> why it was left out (data.skip_damaged)
        for why in self.damaged.values():
            log.warning("%s; left out (data.skip_damaged=true)", why)
        if cfg.source == "clips":
            self._report_clip_index()
        self._buckets = data.buckets
        self._fingerprint = _fingerprint(self.entries)
        self._bucket_members: dict[Hashable, list[int]] = defaultdict(list)
        for i, entry in enumerate(self.entries):
            self._bucket_members[entry.bucket].append(i)
        self.epoch, self.position = 0, 0
        self._plan = self._plan_epoch(0)
        if not self._plan:
            raise ValueError(f"{len(self.entries)} samples in {len(self._bucket_members)} buckets give no full batch "
                             f"of {cfg.batch_size} for each of {world_size} ranks: lower data.batch_size, "
                             "set data.drop_last=false, or add data")

    def _report_clip_index(self) -> None:
        reasons = ", ".join(f"{r}={n}" for r, n in self.skipped.items()) or "none"
        buckets = Counter(e.bucket.name for e in self.entries)
        log.info("clip shards %s: %d clips planned in buckets %s; skipped %d (%s)", self.cfg.shards,
                 len(self.entries), dict(sorted(buckets.items())), sum(self.skipped.values()), reasons)
        if not self.entries:
            raise ValueError(f"every clip under {self.cfg.shards} was skipped ({reasons}); with "
                             f"data.buckets.durations={self.cfg.buckets.durations} at {self.cfg.buckets.fps} fps, "
                             "clips must last at least the shortest bucket")

    def _plan_epoch(self, epoch: int) -> list[list[int]]:
        batches = deal_batches(self._buckets, self.cfg.batch_size, self.world_size, seed=self.cfg.seed, epoch=epoch,
                               drop_last=self.cfg.drop_last)
        return batches[self.rank::self.world_size]

    @property
    def encoder(self) -> ClipEncoder:
        """The clips source's encoder, built on first use (the latents source never needs one)."""
        if self._encoder is None:
            self._encoder = ClipEncoder(self.cfg.encoder)  # seeds its random debug models itself
        return self._encoder

    def _encode_clip(self, entry: _Entry) -> dict:
        sample = read_members(entry.shard, dict(entry.members), (*CLIP_MEMBERS, "txt"))
        out = self.encoder.encode(dict(sample, __key__=entry.key), self.cfg.buckets)
        meta = dict(out["meta"], video_shape=list(out["video"].shape), audio_shape=list(out["audio"].shape))
        return {"__key__": entry.key, "video.pth": out["video"], "audio.pth": out["audio"],
                "text.pth": out["text"], "json": meta}

    def _read_clip(self, i: int) -> dict:
        """Clip ``i`` encoded or, when its media cannot be decoded, the next decodable clip of its bucket."""
        members = self._bucket_members[self.entries[i].bucket]  # ascending indices
        start = bisect.bisect_left(members, i)
        for k in range(len(members)):
            j = members[(start + k) % len(members)]
            entry = self.entries[j]
            if entry.where in self.unreadable:
                continue
            try:
                sample = self._encode_clip(entry)
            except BAD_MEDIA_ERRORS as exc:
                self.unreadable[entry.where] = f"{type(exc).__name__}: {exc}"
                log.warning("clip %s (in %s) cannot be decoded (%s); the next clip of bucket %s takes its place",
                            entry.key, entry.shard, self.unreadable[entry.where], entry.bucket.name)
                continue
            if j != i:
                sample["json"]["substitute_for"] = self.entries[i].key
            return sample
        examples = "; ".join(f"{self.entries[j].where}: {self.unreadable[self.entries[j].where]}" for j in members[:3])
        raise RuntimeError(f"none of the {len(members)} clips of bucket {self.entries[i].bucket.name} can be "
                           f"decoded ({examples}): check data.encoder and the clip shards")

    def _read(self, i: int) -> dict:
        if self.cfg.source == "clips":
            return self._read_clip(i)
        entry = self.entries[i]
        return read_latent_sample(entry.shard, entry.key, dict(entry.members))

    def __len__(self) -> int:
        return len(self._plan)

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        if self.position >= len(self._plan):
            self.epoch, self.position = self.epoch + 1, 0
            self._plan = self._plan_epoch(self.epoch)
            if not self._plan:
                raise StopIteration
        batch = self._plan[self.position]
        self.position += 1
        return collate([self._read(i) for i in batch])

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "seed": self.cfg.seed,
                "world_size": self.world_size, "num_samples": len(self.entries), "source": self.cfg.source,
                "fingerprint": self._fingerprint}

    def load_state_dict(self, state: dict) -> None:
        if (state["world_size"], state["num_samples"]) != (self.world_size, len(self.entries)):
            raise ValueError(f"loader state is for {state['world_size']} ranks over "
                             f"{state['num_samples']} samples, not {self.world_size} over {len(self.entries)}")
        if state.get("source", "latents") != self.cfg.source:
            raise ValueError(f"loader state is for the {state['source']!r} source, not {self.cfg.source!r}")
        if state.get("fingerprint", self._fingerprint) != self._fingerprint:  # older states have none
            raise ValueError(f"loader state was saved over other samples or buckets than {self.cfg.shards} "
                             "now holds (same count, different keys or bucket settings): resume on the same data")
        self.epoch, self.position = state["epoch"], state["position"]
        self._plan = self._plan_epoch(self.epoch)

