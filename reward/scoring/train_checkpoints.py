"""Saving and resuming reward-model training: a killed run continues where it stopped.

A checkpoint is ``<storage>/checkpoints/stepNNNNNNNN/``, and ``<storage>/checkpoints/latest``
names the newest. ``latest`` is written last and atomically, so any checkpoint it names is
complete. A step's judgements are drawn from (seed, step, rank) (``PreferenceTrainer._batch``).
A checkpoint therefore holds the weights, the optimizer and schedule state, and each rank's
RNG state (for dropout), and a resumed run takes exactly the steps the uninterrupted one would:

- ``engine=torch``: rank 0 writes ``state.pt`` (the scorer with the tie parameter, the
  optimizer, the schedule). Every rank holds the same weights, because gradients are averaged.
- ``engine=deepspeed``: DeepSpeed's own checkpoint (``training.resume``), which holds the
  engine's optimizer and schedule.

Every rank writes ``rng_rankNNNNN.pt``. ``checkpoints/config.json`` is the training config the
checkpoints belong to, without run-only fields and storage. Resuming under another config is
an error naming the keys that differ (``training.resume.refuse_changed_config``, the rule
``tandem train`` and ``tandem align`` follow too), never a silent continuation of a different run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from model.config import output_dict
from training.resume import ResumeMismatch, refuse_changed_config

CheckpointMismatch = ResumeMismatch  # checkpoints under storage that belong to another training config


def identity(cfg) -> dict:
    """What a checkpoint belongs to, as its json reads back (tuples become lists)."""
    out = output_dict(cfg)
    out.pop("storage", None)
    return json.loads(json.dumps(out, sort_keys=True))


def _barrier(distributed: bool) -> None:
    if distributed:
        torch.distributed.barrier()


def save(trainer, directory: Path) -> str:
    """Write checkpoint ``stepNNNNNNNN`` of ``trainer`` (a ``PreferenceTrainer``; every rank
    calls it). Returns the tag."""
    tag = f"step{trainer.step:08d}"
    folder = directory / tag
    folder.mkdir(parents=True, exist_ok=True)
    if trainer.rank == 0:
        (directory / "config.json").write_text(json.dumps(identity(trainer.cfg), indent=1, sort_keys=True))
    torch.save({"torch": torch.get_rng_state()}, folder / f"rng_rank{trainer.rank:05d}.pt")
    if trainer.engine is not None:
        from training.resume import save_checkpoint

        save_checkpoint(trainer.engine, directory, trainer.step, {}, rank=trainer.rank)  # writes latest itself
        return tag
    if trainer.rank == 0:
        state = {"module": trainer.module.state_dict(), "optimizer": trainer.optimizer.state_dict(),
                 "schedule": trainer.schedule.state_dict(), "step": trainer.step}
        torch.save(state, folder / "state.pt.tmp")
        os.replace(folder / "state.pt.tmp", folder / "state.pt")
    _barrier(trainer.distributed)  # every rank's files are down before latest names them
    if trainer.rank == 0:
        (directory / "latest.tmp").write_text(tag)
        os.replace(directory / "latest.tmp", directory / "latest")
    _barrier(trainer.distributed)
    return tag


def check_resumable(cfg, directory: Path) -> None:
    """Raise CheckpointMismatch when ``directory`` holds checkpoints of another config."""
    if not (directory / "latest").exists():
        return
    refuse_changed_config(json.loads((directory / "config.json").read_text()), cfg, str(directory),
                          f"use a new storage= or delete {directory} to start over")


def resume(trainer, directory: Path) -> bool:
    """Load the checkpoint ``latest`` names into ``trainer``; False when there is none."""
    latest = directory / "latest"
    if not latest.exists():
        return False
    check_resumable(trainer.cfg, directory)
    tag = latest.read_text().strip()
    if trainer.engine is not None:
        from training.resume import load_latest

        step = load_latest(trainer.engine, directory, rank=trainer.rank)["step"]
    else:
        state = torch.load(directory / tag / "state.pt", map_location="cpu", weights_only=False)
        trainer.module.load_state_dict(state["module"])
        trainer.optimizer.load_state_dict(state["optimizer"])
        trainer.schedule.load_state_dict(state["schedule"])
        step = state["step"]
    rng = directory / tag / f"rng_rank{trainer.rank:05d}.pt"
    if rng.exists():  # a run resumed on more ranks than it saved: the new ranks keep their seed
        torch.set_rng_state(torch.load(rng, weights_only=False)["torch"])
    trainer.step = step
    return True
