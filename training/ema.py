"""Exponential moving average of the weights, kept where the weights live.

Under ZeRO <= 2 every rank holds whole parameters, so each rank keeps a whole fp32 copy.
Under ZeRO-3 a rank holds only its partition (``param.ds_tensor``), so the average is kept
per partition too: memory stays 1/world of the model, and the whole tensors are gathered
only when exporting (``full_state_dict``, a collective every rank must call).
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def _local(param: torch.nn.Parameter) -> torch.Tensor:
    return param.ds_tensor if hasattr(param, "ds_tensor") else param


class EMA:
    def __init__(self, module: torch.nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.shadow = {n: _local(p).detach().float().clone() for n, p in module.named_parameters()}

    @torch.no_grad()
    def update(self, module: torch.nn.Module) -> None:
        for n, p in module.named_parameters():
            self.shadow[n].lerp_(_local(p).detach().float(), 1.0 - self.decay)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        self.decay, self.shadow = state["decay"], state["shadow"]

    @torch.no_grad()
    def full_state_dict(self, module: torch.nn.Module) -> dict[str, torch.Tensor]:
        """Whole averaged tensors (plus the module's buffers), on every rank."""
        out = {}
        for n, p in module.named_parameters():
            shard = self.shadow[n]
            if hasattr(p, "ds_tensor"):  # ZeRO-3: partitions are equal-sized, the last padded
                parts = [torch.empty_like(shard) for _ in range(dist.get_world_size())]
                dist.all_gather(parts, shard.to(p.ds_tensor.device))
                shard = torch.cat([t.flatten() for t in parts])[: p.ds_numel].view(p.ds_shape)
            out[n] = shard.cpu()
        persistent = set(module.state_dict())
        out.update({n: b.detach().cpu() for n, b in module.named_buffers() if n in persistent})
        return out
