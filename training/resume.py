"""Saving and resuming a DeepSpeed-engine trainer (training and alignment share it).

A checkpoint is DeepSpeed's own ``<dir>/stepNNNNNNNN`` (so ``zero_to_fp32`` converts it) with
the trainer's state in its client state: the step and whatever else the trainer passes
(loader position, monitor baselines). With an EMA, each rank's slice of it lies beside the
checkpoint (``ema_rankNNNNN.pt``: DeepSpeed writes the client state from one rank only) and
its whole weights are exported as ``<tag>/ema.safetensors`` (loadable with
``model.checkpoint.load``) by rank 0 alone, one tensor at a time. ``<dir>/model.json`` is the
model config the checkpoints hold (so a resume can be checked before it is tried), and
``<dir>/latest`` names the newest; DeepSpeed writes it last, so a checkpoint it names is whole.

A run is continued only under the config it was started with (``refuse_changed_config``, for
training, alignment and reward training alike): any field but ``storage`` and the ``run_only``
ones (where it runs and how it is recorded) counts, ``steps`` too, since the LR schedule ends at
``steps``. Otherwise a resumed run would go on under settings its params and recipe do not show.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from model.config import ConfigError, flatten, run_only_keys, to_dict

_ABSENT = "(absent)"
# Activation checkpointing wraps each block: ``blocks.N._checkpoint_wrapped_module.*``.
WRAPPER_INFIX = "._checkpoint_wrapped_module"


def unwrapped(name: str) -> str:
    """A parameter's name in the single-device model (``model.dit.DualDiT``)."""
    return name.replace(WRAPPER_INFIX, "")


class ResumeMismatch(ConfigError):
    """A storage that holds a run of another config; the message names the keys that differ."""


def config_changes(recorded: dict[str, Any], cfg, now: dict[str, Any] | None = None) -> list[str]:
    """``"key old -> new"`` for each field of ``cfg`` that differs from ``recorded`` (the run's
    config as it saved it, nested), leaving out ``storage`` and the ``run_only`` fields. ``now``:
    values to compare instead of ``cfg``'s (paths the run made absolute)."""
    exempt = run_only_keys(cfg) | {"storage"}
    was = flatten(json.loads(json.dumps(recorded, default=str)))
    current = flatten(json.loads(json.dumps(to_dict(cfg), default=str))) | (now or {})
    keys = [k for k in sorted(set(was) | set(current))
            if not any(k == e or k.startswith(e + ".") for e in exempt)
            and was.get(k, _ABSENT) != current.get(k, _ABSENT)]
    return [f"{k} {was.get(k, _ABSENT)} -> {current.get(k, _ABSENT)}" for k in keys]


def refuse_changed_config(recorded: dict[str, Any], cfg, where: str, fix: str,
                          now: dict[str, Any] | None = None) -> None:
    """Raise ResumeMismatch naming every key in which ``cfg`` differs from the ``recorded`` config
    of the run held ``where``; ``fix`` says how to start a new run instead."""
    changes = config_changes(recorded, cfg, now)
    if changes:
        raise ResumeMismatch(f"{where} holds a run of another config (differs in: {', '.join(changes)}): resuming "
                             f"would continue it under settings its record does not show; set them back to resume "
                             f"it, or {fix}")


def checkpoint_dir(storage: str | Path) -> Path:
    """Where a run (training, alignment, reward training) keeps its checkpoints."""
    return Path(storage) / "checkpoints"


def ema_path(directory: str | Path, tag: str, rank: int) -> Path:
    return Path(directory) / tag / f"ema_rank{rank:05d}.pt"


def save_checkpoint(engine, directory: str | Path, step: int, client_state: dict, ema=None,
                    model_cfg=None, rank: int = 0) -> str:
    """Save checkpoint ``stepNNNNNNNN`` (every rank calls it); returns the tag."""
    from model.config import to_dict

    tag = f"step{step:08d}"
    if ema is not None:
        ema.save(ema_path(directory, tag, rank))
        metadata = {"class": "DualDiT"} | ({"config": json.dumps(to_dict(model_cfg))} if model_cfg is not None else {})
        ema.export(engine.module, Path(directory) / tag / "ema.safetensors", metadata, rename=unwrapped)
    engine.save_checkpoint(str(directory), tag=tag, client_state={**client_state, "step": step})
    if rank == 0 and model_cfg is not None:
        (Path(directory) / "model.json").write_text(json.dumps(to_dict(model_cfg), indent=1))
    return tag


def load_latest(engine, directory: str | Path, ema=None, rank: int = 0) -> dict | None:
    """Load ``<directory>/latest`` into the engine (and this rank's EMA slice); its client
    state, or None when there is no checkpoint yet."""
    latest = Path(directory) / "latest"
    if not latest.exists():
        return None
    _, client = engine.load_checkpoint(str(directory))
    if ema is not None:
        slice_file = ema_path(directory, latest.read_text().strip(), rank)
        if slice_file.exists():
            ema.load(slice_file)
        elif client.get("ema") is not None:  # checkpoints written before the per-rank files
            ema.load_state_dict(client["ema"])
    return client


class Resumable:
    """``checkpoint_dir`` / ``resume()`` / ``save()`` for a trainer that holds ``cfg.storage``,
    ``engine``, ``ema``, ``model_cfg``, ``rank`` and ``step``; it says what else its
    checkpoints carry (``client_state`` / ``load_client_state``)."""

    @property
    def checkpoint_dir(self) -> Path:
        return checkpoint_dir(self.cfg.storage)

    def client_state(self) -> dict:
        return {}

    def load_client_state(self, client: dict) -> None:
        pass

    def resume(self) -> bool:
        """Load the latest checkpoint under storage, if any; True when resumed."""
        client = load_latest(self.engine, self.checkpoint_dir, self.ema, self.rank)
        if client is None:
            return False
        self.step = client["step"]
        self.load_client_state(client)
        return True

    def save(self) -> None:
        save_checkpoint(self.engine, self.checkpoint_dir, self.step, self.client_state(), self.ema, self.model_cfg,
                        self.rank)
