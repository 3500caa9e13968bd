"""Weights as safetensors, with the model's config stored in the file's metadata.

``save(model, path)`` writes ``model.state_dict()`` plus ``model.cfg`` (a dataclass) as
JSON metadata; ``load(ModelClass, ConfigClass, path)`` rebuilds the model from that config
and loads the weights strictly, so a checkpoint cannot silently load into the wrong shape.
``load_weights`` loads into an existing module (e.g. a production VAE from a local path).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from model.config import from_dict


def save(model: nn.Module, path: str | Path) -> Path:
    return save_state(model.state_dict(), getattr(model, "cfg", None), path, type(model).__name__)


def save_state(state: dict[str, torch.Tensor], cfg, path: str | Path, class_name: str) -> Path:
    """Write a state dict with ``cfg`` (a dataclass) as metadata: for weights that do not sit
    in one module, e.g. an EMA gathered from ZeRO-3 partitions."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    metadata = {"class": class_name}
    if dataclasses.is_dataclass(cfg):
        metadata["config"] = json.dumps(dataclasses.asdict(cfg))
    save_file(state, str(path), metadata=metadata)
    return path


def read_config(config_cls: type, path: str | Path):
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if "config" not in meta:
        raise ValueError(f"{path} has no stored config; build the model yourself and use load_weights")
    return from_dict(config_cls, json.loads(meta["config"]))


def load_weights(model: nn.Module, path: str | Path, strict: bool = True) -> nn.Module:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    model.load_state_dict(load_file(str(path)), strict=strict)
    return model


def load(model_cls: type, config_cls: type, path: str | Path, device: str | torch.device = "cpu"):
    model = model_cls(read_config(config_cls, path))
    return load_weights(model, path).to(device)

