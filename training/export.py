"""A training checkpoint as the single-device model's weights.

DeepSpeed's own ``zero_to_fp32`` consolidates the ZeRO partitions; activation checkpointing
wraps each block (``blocks.N._checkpoint_wrapped_module.*``), so the names are unwrapped
here to those ``model.dit.DualDiT`` has.
"""

from __future__ import annotations

from pathlib import Path

import torch

WRAPPER_INFIX = "._checkpoint_wrapped_module"


def unwrapped(name: str) -> str:
    return name.replace(WRAPPER_INFIX, "")


def consolidated_state_dict(checkpoint_dir: str | Path, tag: str | None = None) -> dict[str, torch.Tensor]:
    """fp32 weights of checkpoint ``tag`` (default: ``latest``) under ``checkpoint_dir``, named
    as in the single-device model; load with ``model.load_state_dict(state, strict=False)``
    (rotary tables are buffers the model rebuilds itself)."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    state = get_fp32_state_dict_from_zero_checkpoint(str(checkpoint_dir), tag=tag)
    return {unwrapped(k): v for k, v in state.items()}
