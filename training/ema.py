"""Exponential moving average of the fp32 master weights, kept where those weights live.

DeepSpeed keeps the optimizer's fp32 master copy partitioned: under ZeRO-3 each rank owns an
equal slice of every parameter (``safe_get_local_fp32_param``), under ZeRO-1/2 a fragment of
the flattened parameters (``param._hp_mapping``). The average follows exactly that slice, so
with bf16 training it averages the fp32 weights the optimizer updates, not their bf16 copies,
and its memory is 1/world of the model. Without ZeRO partitioning it averages the parameter
itself. Each rank saves its own slice (``save``/``load``, one file per rank beside the
DeepSpeed checkpoint); ``export`` writes the whole average as one safetensors file while
holding one parameter at a time, and only on rank 0.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import torch
import torch.distributed as dist


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def master_slice(param: torch.nn.Parameter) -> tuple[str, int, torch.Tensor]:
    """(layout, offset into the flattened parameter, this rank's fp32 master values)."""
    if hasattr(param, "ds_id"):  # ZeRO-3: equal (padded) partitions, one per rank
        from deepspeed.utils import safe_get_local_fp32_param

        local = safe_get_local_fp32_param(param) if hasattr(param, "_z3_optimizer") else None
        local = param.ds_tensor if local is None else local
        return "zero3", _rank() * param.ds_tensor.ds_numel, local.flatten()
    if hasattr(param, "_hp_mapping"):  # ZeRO-1/2: a fragment, possibly none, on this rank
        mapping = param._hp_mapping
        if mapping is None:
            return "fragment", 0, param.new_empty(0, dtype=torch.float32)
        return "fragment", mapping.lp_fragment_address.start, mapping.get_hp_fragment().flatten()
    return "whole", 0, param.detach().flatten()


class EMA:
    def __init__(self, module: torch.nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.shadow, self.layout = {}, {}
        for name, param in module.named_parameters():
            kind, start, values = master_slice(param)
            self.shadow[name], self.layout[name] = values.detach().float().clone(), (kind, start)

    @torch.no_grad()
    def update(self, module: torch.nn.Module) -> None:
        for name, param in module.named_parameters():
            self.shadow[name].lerp_(master_slice(param)[2].float(), 1.0 - self.decay)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "shadow": self.shadow, "layout": self.layout}

    def load_state_dict(self, state: dict) -> None:
        self.decay, self.shadow = state["decay"], state["shadow"]
        self.layout = state.get("layout", self.layout)

    def save(self, path: str | Path) -> None:
        """This rank's slice (every rank writes its own file)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(self.state_dict(), path)

    def load(self, path: str | Path) -> None:
        self.load_state_dict(torch.load(path, map_location="cpu"))

    @torch.no_grad()
    def _full(self, name: str, param: torch.nn.Parameter) -> torch.Tensor | None:
        """The whole averaged tensor on rank 0 (None elsewhere); a collective when partitioned."""
        kind, start = self.layout[name]
        local = self.shadow[name]
        shape = tuple(param.ds_shape) if hasattr(param, "ds_shape") else tuple(param.shape)
        numel = int(torch.Size(shape).numel())
        if kind == "whole":
            return local.view(shape).cpu() if _rank() == 0 else None
        device = param.ds_tensor.device if kind == "zero3" else param.device
        if kind == "zero3":
            parts = [torch.empty_like(local, device=device) for _ in range(dist.get_world_size())] if _rank() == 0 else None
            dist.gather(local.to(device), parts, dst=0)
            return torch.cat(parts)[:numel].view(shape).cpu() if _rank() == 0 else None
        full = torch.zeros(numel, device=device)  # fragments are disjoint: summing assembles them
        full[start:start + local.numel()] = local.to(device)
        dist.reduce(full, dst=0)
        return full.view(shape).cpu() if _rank() == 0 else None

    @torch.no_grad()
    def export(self, module: torch.nn.Module, path: str | Path, metadata: dict[str, str],
               rename=lambda name: name) -> Path | None:
        """Write the whole average (plus the module's persistent buffers) as safetensors at
        ``path`` on rank 0, streaming one tensor at a time; every rank must call it."""
        params = dict(module.named_parameters())
        persistent = set(module.state_dict())
        buffers = {n: b for n, b in module.named_buffers() if n in persistent}
        shapes = {n: tuple(p.ds_shape) if hasattr(p, "ds_shape") else tuple(p.shape) for n, p in params.items()}
        shapes.update({n: tuple(b.shape) for n, b in buffers.items()})
        dtypes = {n: torch.float32 for n in params} | {n: b.dtype for n, b in buffers.items()}
        if _rank() != 0:
            for name, param in params.items():
                self._full(name, param)
            return None

        def tensors():
            for name, param in params.items():
                yield rename(name), self._full(name, param)
            for name, buffer in buffers.items():
                yield rename(name), buffer.detach().cpu()

        return write_safetensors(path, {rename(n): (shapes[n], dtypes[n]) for n in shapes}, metadata, tensors())


_SAFETENSORS_DTYPES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16", torch.int64: "I64",
                       torch.int32: "I32", torch.bool: "BOOL"}


def write_safetensors(path: str | Path, entries: dict[str, tuple[tuple, torch.dtype]], metadata: dict[str, str],
                      tensors) -> Path:
    """A safetensors file written tensor by tensor: the header (names, shapes, dtypes and
    offsets of ``entries``) goes first, then each (name, tensor) of ``tensors`` in the same
    order, so no tensor waits in memory for the others. Written under a temporary name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header, offset = {"__metadata__": metadata}, 0
    for name, (shape, dtype) in entries.items():
        size = int(torch.Size(shape).numel()) * torch.empty(0, dtype=dtype).element_size()
        header[name] = {"dtype": _SAFETENSORS_DTYPES[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    tmp, expected = path.with_name(path.name + ".tmp"), iter(entries.items())
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        for name, tensor in tensors:
            want, (shape, dtype) = next(expected)
            if (name, tuple(tensor.shape), tensor.dtype) != (want, tuple(shape), dtype):
                raise ValueError(f"{name} {tuple(tensor.shape)} {tensor.dtype}: the header promised {want} {shape} {dtype}")
            data = tensor.contiguous().reshape(-1)
            f.write(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    if next(expected, None) is not None:
        raise ValueError("fewer tensors were written than the header promised")
    tmp.replace(path)
    return path
