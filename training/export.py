"""A training checkpoint as the single-device model's weights.

DeepSpeed's own ``zero_to_fp32`` consolidates the ZeRO partitions; activation checkpointing
wraps each block (``blocks.N._checkpoint_wrapped_module.*``), so the names are unwrapped
here to those ``model.dit.DualDiT`` has. ``export_latest`` writes a run's final weights as one
loadable safetensors file with the run's recipe beside it: what training and alignment register.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from training.resume import checkpoint_dir, unwrapped


def consolidated_state_dict(checkpoint_dir: str | Path, tag: str | None = None) -> dict[str, torch.Tensor]:
    """fp32 weights of checkpoint ``tag`` (default: ``latest``) under ``checkpoint_dir``, named
    as in the single-device model; load with ``model.load_state_dict(state, strict=False)``
    (rotary tables are buffers the model rebuilds itself)."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    state = get_fp32_state_dict_from_zero_checkpoint(str(checkpoint_dir), tag=tag)
    return {unwrapped(k): v for k, v in state.items()}


def export_latest(storage: str | Path, out_dir: str | Path, model_cfg) -> Path:
    """``out_dir/model.safetensors``: the latest checkpoint under ``storage/checkpoints``, its EMA
    when the run kept one, else its consolidated weights (``model.checkpoint.load(DualDiT,
    DualDiTConfig, path)`` loads either), with the run's ``recipe.yaml`` and ``source.json``
    (which checkpoint, which step) beside it. Returns the safetensors path."""
    from model.checkpoint import save_state

    checkpoints, out_dir = checkpoint_dir(storage), Path(out_dir)
    tag = (checkpoints / "latest").read_text().strip()
    out = out_dir / "model.safetensors"
    out_dir.mkdir(parents=True, exist_ok=True)
    ema = checkpoints / tag / "ema.safetensors"
    if ema.is_file():
        shutil.copyfile(ema, out)
    else:
        state = {k: v for k, v in consolidated_state_dict(checkpoints, tag).items() if "rope" not in k}
        save_state(state, model_cfg, out, "DualDiT")
    shutil.copyfile(Path(storage) / "recipe.yaml", out_dir / "recipe.yaml")
    (out_dir / "source.json").write_text(json.dumps({"checkpoint": str(checkpoints / tag), "step": tag}))
    return out
