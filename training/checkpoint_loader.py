"""Any trained checkpoint -> the single-device ``model.dit.DualDiT``, with its identity.

Accepted sources (``load_checkpoint``):

- a training run's DeepSpeed checkpoint: the run's ``storage`` folder, its ``checkpoints/``
  (the tag named by ``latest``), or one tag folder ``checkpoints/stepNNNNNNNN``; the ZeRO
  partitions are consolidated on load (``training.export``);
- ``ema.safetensors`` (the EMA weights a run writes beside each tag), or any consolidated
  safetensors written by ``model.checkpoint.save``/``save_state`` (the model config is in its
  metadata);
- a folder holding exactly one such safetensors file (what ``models:/NAME@ALIAS`` resolves to;
  a registered run's ``recipe.yaml`` beside it counts as its run's).

The model config (``checkpoint_config``) comes from the file's metadata or, for DeepSpeed
checkpoints, from the ``ema.safetensors`` beside the tag or the run's ``recipe.yaml`` (its
``preset``); a given ``preset`` overrides them. The identity
is the path plus a sha256 of the checkpoint's files (``identify``, read in blocks, so even a
large checkpoint is never held in memory for it).
When the checkpoint belongs to a training run, ``run_dir`` is that run's storage, whose recipe
names the latent shards (and so the encoders) the model was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from model.dit import DualDiT, DualDiTConfig


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message says what was found and what to pass."""


@dataclass
class CheckpointRef:
    """Where a checkpoint is and what it is, found without loading it."""

    kind: str  # deepspeed | safetensors
    path: Path  # a DeepSpeed tag folder or a safetensors file
    run_dir: Path | None  # the training run's storage, when the checkpoint sits in one
    digest: str = ""  # sha256 of its files (16 hex digits), filled by ``identify``

    @property
    def tag(self) -> str:
        """Short identity for sample ids: 8 hex digits of the digest."""
        return self.digest[:8]


def locate(source: str | Path) -> CheckpointRef:
    """What ``source`` is (see the module docstring); raises CheckpointError otherwise."""
    path = Path(source).absolute()
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.is_dir() and (found := _deepspeed_tag(path)):
        folder, tag = found
        if not (folder / tag).is_dir():
            raise CheckpointError(f"{folder}/latest names {tag!r}, which is not there")
        return CheckpointRef("deepspeed", folder / tag, folder.parent if folder.name == "checkpoints" else None)
    if path.is_dir():
        files = sorted(path.rglob("*.safetensors"))
        if len(files) != 1:
            raise CheckpointError(f"{path}: not a DeepSpeed checkpoint (no `latest`, no *model_states.pt) and "
                                  f"{len(files)} safetensors files in it; pass one file or a run's checkpoints/")
        path = files[0]
    if path.suffix != ".safetensors":
        raise CheckpointError(f"{path}: expected a .safetensors file or a DeepSpeed checkpoint folder")
    if path.parent.parent.name == "checkpoints":  # <storage>/checkpoints/stepN/ema.safetensors
        run_dir = path.parents[2]
    else:  # a registered model's folder carries its run's recipe (training.export.export_latest)
        run_dir = path.parent if (path.parent / "recipe.yaml").is_file() else None
    return CheckpointRef("safetensors", path, run_dir)


def identify(source: str | Path) -> CheckpointRef:
    """``locate`` plus the digest of the checkpoint's files (read in blocks, never loaded)."""
    from training.clip_encoder import weights_digest

    ref = locate(source)
    ref.digest = weights_digest(str(ref.path))
    return ref


def run_recipe(run_dir: Path | None):
    """The ``TrainConfig`` a training run saved as ``recipe.yaml``, or None (no recipe, or that of
    another command, e.g. an alignment run's)."""
    if run_dir is None or not (run_dir / "recipe.yaml").is_file():
        return None
    import dataclasses

    import yaml

    from model.config import from_dict
    from training.trainer import TrainConfig

    recipe = yaml.safe_load((run_dir / "recipe.yaml").read_text()) or {}
    if set(recipe) - {f.name for f in dataclasses.fields(TrainConfig)}:  # another command's (alignment's)
        return None
    return from_dict(TrainConfig, recipe)


def _deepspeed_tag(path: Path) -> tuple[Path, str] | None:
    """(checkpoints folder, tag) when ``path`` is a run folder, its checkpoints/ or a tag."""
    for folder in (path / "checkpoints", path):
        latest = folder / "latest"
        if latest.is_file():
            return folder, latest.read_text().strip()
    if any(path.glob("*model_states.pt")):
        return path.parent, path.name
    return None


def _recipe_preset(run_dir: Path | None) -> str | None:
    """The ``preset`` a run's ``recipe.yaml`` names (training and alignment recipes alike)."""
    if run_dir is None or not (run_dir / "recipe.yaml").is_file():
        return None
    import yaml

    return (yaml.safe_load((run_dir / "recipe.yaml").read_text()) or {}).get("preset")


def checkpoint_config(source: str | Path | CheckpointRef, *, preset: str | None = None) -> DualDiTConfig:
    """The model config ``source`` was made with, without loading its weights: ``preset`` when
    given, else the safetensors metadata (for a DeepSpeed tag, that of the ``ema.safetensors``
    beside it), else the run's ``recipe.yaml``."""
    from model.checkpoint import read_config
    from model.presets import get_preset

    ref = source if isinstance(source, CheckpointRef) else locate(source)
    if preset:
        return get_preset(preset)
    stored = ref.path if ref.kind == "safetensors" else ref.path / "ema.safetensors"
    if stored.is_file():
        try:
            return read_config(DualDiTConfig, stored)
        except ValueError:  # no config in the metadata
            pass
    if name := _recipe_preset(ref.run_dir):
        return get_preset(name)
    raise CheckpointError(f"{ref.path}: no model config stored with it and no recipe.yaml in its run; "
                          "pass the preset it was trained with (model.preset=debug|small|1b|14b)")


def _state(ref: CheckpointRef) -> dict[str, torch.Tensor]:
    if ref.kind == "deepspeed":
        from training.export import consolidated_state_dict

        return consolidated_state_dict(ref.path.parent, ref.path.name)
    from safetensors.torch import load_file

    return load_file(str(ref.path))


def load_checkpoint(source: str | Path | CheckpointRef, *, preset: str | None = None,
                    device: str | torch.device = "cpu") -> tuple[DualDiT, CheckpointRef]:
    """The single-device model of ``source`` in eval mode, and where it came from."""
    ref = source if isinstance(source, CheckpointRef) else locate(source)
    model = DualDiT(checkpoint_config(ref, preset=preset))
    load_weights_into(model, ref)
    return model.to(device).eval(), ref


def load_weights_into(model: DualDiT, source: str | Path | CheckpointRef) -> CheckpointRef:
    """Load ``source``'s weights into an existing model (e.g. one every rank built alike),
    strictly but for the rotary tables the model rebuilds itself."""
    ref = source if isinstance(source, CheckpointRef) else locate(source)
    state, what = _state(ref), ref.path
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shapes differ: another preset
        raise CheckpointError(f"{what} does not fit this model config ({str(exc).splitlines()[1].strip()} ...); "
                              "is model.preset right?") from None
    missing = [k for k in missing if "rope" not in k and "freq" not in k]
    if missing or unexpected:
        raise CheckpointError(f"{what} does not fit this model config: {len(missing)} missing "
                              f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}); "
                              "is model.preset right?")
    return ref
