"""Rollouts: samples generated from a checkpoint, the contract between ``tandem generate`` and
annotation, reward training and alignment.

A rollouts directory holds, per sample, under ``samples/``:

- ``<sample_id>.mp4``: the joint sample, video with its audio track;
- ``<sample_id>.latents.safetensors``: ``video`` (C, T, H, W), ``audio`` (C, T) latents and the
  prompt's ``text_emb`` (L, D), for heads that score latents without decoding;
- ``<sample_id>.json``: at least ``sample_id``, ``group_id`` (samples of one group share the
  prompt), ``prompt``, ``seed``; ``tandem generate`` adds the sampler and its settings, the
  guidance, the sequence (duration, fps, size, sample rate) and the checkpoint's identity.

The json is written last, atomically: a sample whose json exists is complete (resume skips it).
Sample ids are unique across rollout directories, so rollouts of several checkpoints can be
annotated and ranked together.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

REQUIRED = ("sample_id", "group_id", "prompt", "seed")


class RolloutsError(ValueError):
    """A rollouts directory that breaks the contract; the message names the sample."""


def sample_paths(directory: str | Path, sample_id: str) -> dict[str, Path]:
    base = Path(directory) / "samples"
    return {"mp4": base / f"{sample_id}.mp4", "json": base / f"{sample_id}.json",
            "latents": base / f"{sample_id}.latents.safetensors"}


def is_done(directory: str | Path, sample_id: str) -> bool:
    return sample_paths(directory, sample_id)["json"].is_file()


def finish_sample(directory: str | Path, meta: dict, latents: dict[str, torch.Tensor] | None = None) -> Path:
    """Record a sample whose mp4 is already at ``sample_paths(...)["mp4"]``: its latents, then
    its json (atomically, last)."""
    from safetensors.torch import save_file

    missing = [k for k in REQUIRED if k not in meta]
    if missing:
        raise RolloutsError(f"sample metadata lacks {', '.join(missing)}")
    paths = sample_paths(directory, meta["sample_id"])
    if not paths["mp4"].is_file():
        raise RolloutsError(f"sample {meta['sample_id']}: write {paths['mp4']} before finishing it")
    if latents is not None:
        save_file({k: v.detach().contiguous().cpu() for k, v in latents.items()}, str(paths["latents"]))
    tmp = paths["json"].with_name(paths["json"].name + ".tmp")
    tmp.write_text(json.dumps(meta, indent=1, sort_keys=True))
    os.replace(tmp, paths["json"])
    return paths["json"]


@dataclass
class Rollout:
    sample_id: str
    group_id: str
    prompt: str
    seed: int
    meta: dict
    mp4: Path
    latents_path: Path

    def latents(self) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        if not self.latents_path.is_file():
            raise RolloutsError(f"sample {self.sample_id} has no latents ({self.latents_path})")
        return load_file(str(self.latents_path))


def read_rollouts(*directories: str | Path) -> list[Rollout]:
    """Every complete sample of the given rollout directories, by sample id."""
    found: dict[str, Rollout] = {}
    for directory in directories:
        jsons = sorted((Path(directory) / "samples").glob("*.json"))
        if not jsons:
            raise RolloutsError(f"no rollouts under {directory}: make them with `tandem generate`")
        for path in jsons:
            meta = json.loads(path.read_text())
            missing = [k for k in REQUIRED if k not in meta]
            if missing:
                raise RolloutsError(f"{path} lacks {', '.join(missing)}")
            sid = meta["sample_id"]
            if sid in found:
                raise RolloutsError(f"sample id {sid} appears twice ({found[sid].mp4.parent} and {path.parent})")
            paths = sample_paths(directory, sid)
            found[sid] = Rollout(sid, meta["group_id"], meta["prompt"], int(meta["seed"]), meta,
                                 paths["mp4"], paths["latents"])
    return [found[k] for k in sorted(found)]
