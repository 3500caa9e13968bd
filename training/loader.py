"""Streaming loader over latent shards (WebDataset tars) with an exactly resumable position.

Each epoch is planned up front from the shard index alone: a seeded permutation of all
samples, grouped into same-shape buckets (duration / aspect give the latent shape), cut
into batches, and dealt round-robin to ranks. The state is (epoch, next batch), so a resume
neither repeats nor skips a sample, on any world size that matches the checkpoint.

A latent sample holds ``video.pth`` (C, T, H, W), ``audio.pth`` (C, T), ``text.pth``
(L, D) and ``json`` (metadata incl. the shapes), the keys the latent DAG writes.
"""

from __future__ import annotations

import io
import json
import random
import tarfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass
class LoaderConfig:
    shards: str = ""  # directory of *.tar latent shards
    batch_size: int = 2  # per rank
    seed: int = 0
    drop_last: bool = True


@dataclass(frozen=True)
class _Entry:
    shard: str
    offsets: tuple  # ((ext, offset, size), ...)
    bucket: tuple


def index_shards(directory: str | Path) -> list[_Entry]:
    """Every sample's byte ranges and shape bucket, in shard/key order."""
    entries = []
    for shard in sorted(Path(directory).glob("*.tar")):
        members: dict[str, dict] = defaultdict(dict)
        with tarfile.open(shard) as tar:
            for m in tar.getmembers():
                key, _, ext = m.name.partition(".")
                members[key][ext] = (m.offset_data, m.size)
            metas = {k: json.loads(tar.extractfile(k + ".json").read()) for k in members}
        for key in sorted(members):
            meta = metas[key]
            bucket = (tuple(meta["video_shape"]), tuple(meta["audio_shape"]))
            entries.append(_Entry(str(shard), tuple((e, *v) for e, v in sorted(members[key].items())), bucket))
    if not entries:
        raise FileNotFoundError(f"no latent shards (*.tar) under {directory}")
    return entries


def _read(entry: _Entry) -> dict:
    out = {}
    with open(entry.shard, "rb") as f:
        for ext, offset, size in entry.offsets:
            f.seek(offset)
            blob = f.read(size)
            out[ext] = torch.load(io.BytesIO(blob)) if ext.endswith("pth") else json.loads(blob)
    return out


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
            "text_emb": text, "text_mask": mask, "meta": [s["json"] for s in samples]}


class LatentLoader:
    """Iterates batches for one rank; ``state_dict``/``load_state_dict`` give the exact position."""

    def __init__(self, cfg: LoaderConfig, rank: int = 0, world_size: int = 1):
        self.cfg, self.rank, self.world_size = cfg, rank, world_size
        self.entries = index_shards(cfg.shards)
        self.epoch, self.position = 0, 0
        self._plan = self._plan_epoch(0)
        if not self._plan:
            buckets = len({e.bucket for e in self.entries})
            raise ValueError(f"{len(self.entries)} samples in {buckets} shape buckets give no full batch of "
                             f"{cfg.batch_size} for each of {world_size} ranks: lower data.batch_size, "
                             "set data.drop_last=false, or add data")

    def _plan_epoch(self, epoch: int) -> list[list[int]]:
        order = list(range(len(self.entries)))
        random.Random(self.cfg.seed * 1_000_003 + epoch).shuffle(order)
        buckets: dict[tuple, list[int]] = defaultdict(list)
        batches = []
        for i in order:
            bucket = buckets[self.entries[i].bucket]
            bucket.append(i)
            if len(bucket) == self.cfg.batch_size:
                batches.append(list(bucket))
                bucket.clear()
        if not self.cfg.drop_last:
            batches += [b for b in buckets.values() if b]
        usable = len(batches) - len(batches) % self.world_size  # every rank takes as many steps
        return batches[self.rank:usable:self.world_size]

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
        return collate([_read(self.entries[i]) for i in batch])

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "seed": self.cfg.seed,
                "world_size": self.world_size, "num_samples": len(self.entries)}

    def load_state_dict(self, state: dict) -> None:
        if (state["world_size"], state["num_samples"]) != (self.world_size, len(self.entries)):
            raise ValueError(f"loader state is for {state['world_size']} ranks over "
                             f"{state['num_samples']} samples, not {self.world_size} over {len(self.entries)}")
        self.epoch, self.position = state["epoch"], state["position"]
        self._plan = self._plan_epoch(self.epoch)


def write_latent_shard(path: str | Path, samples: list[dict]) -> Path:
    """Write ``samples`` ({key, video, audio, text, meta}) as one latent WebDataset shard."""
    import webdataset as wds

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with wds.TarWriter(str(path)) as sink:
        for s in samples:
            meta = dict(s.get("meta", {}), video_shape=list(s["video"].shape), audio_shape=list(s["audio"].shape))
            sink.write({"__key__": s["key"], "video.pth": s["video"], "audio.pth": s["audio"],
                        "text.pth": s["text"], "json": meta})
    return path
