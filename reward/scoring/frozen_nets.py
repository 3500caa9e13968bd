"""Small pretrained nets a reward model reads frozen (the SyncNet, the text-match net): one
directory each, ``NAME.json`` (the net's config, how it was trained, its metrics) and
``NAME.safetensors``, copied into every reward model saved with it so that a registered model
is self-contained."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from torch import nn

from model.config import from_dict, to_dict


def save_net(net: nn.Module, out: str | Path, name: str, **meta) -> Path:
    """Write ``net`` (whose ``cfg`` is a config dataclass) and ``meta`` into ``out``."""
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in net.state_dict().items()}, str(out / f"{name}.safetensors"))
    (out / f"{name}.json").write_text(json.dumps({"net": to_dict(net.cfg), **meta}, indent=1, default=str))
    return out


def load_net(path: str | Path, name: str, net_class: type, config_class: type, made_by: str) -> nn.Module:
    """The net ``save_net`` wrote to ``path``, frozen, in eval mode; ``made_by`` (the command
    that makes one) goes into the error when there is none."""
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / f"{name}.json").is_file():
        raise FileNotFoundError(f"{path} is not a pretrained {name.replace('_', ' ')} (no {name}.json); "
                                f"make one with `{made_by}`")
    net = net_class(from_dict(config_class, json.loads((path / f"{name}.json").read_text())["net"]))
    net.load_state_dict(load_file(str(path / f"{name}.safetensors")))
    return net.eval().requires_grad_(False)


def copy_net(path: str | Path, model_dir: str | Path, name: str) -> str:
    """Copy a net's directory into a saved reward model's directory; its path relative to it."""
    target = Path(model_dir) / name
    if Path(path).resolve() != target.resolve():
        shutil.copytree(path, target, dirs_exist_ok=True)
    return target.name
