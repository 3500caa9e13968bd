"""DeepSpeed engine from a config dataclass.

The model stays single-device code; ZeRO sharding, offload, precision, accumulation and
clipping are decided here, so one recipe field flips a 2-CPU debug run into a 64-GPU run.
``zero_stage`` is the one knob for sharding: the stage's tuned settings (bucket sizes,
prefetch, persistence threshold) come from ``training/deepspeed/zero<stage>.json``, which
ships inside the package, and the recipe's fields are laid over them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

TEMPLATES = Path(__file__).parent / "deepspeed"  # zero2.json, zero3.json


def extensions_dir() -> Path:
    """One JIT cache for DeepSpeed's CPU shared-memory op per environment, so only the first run
    pays ~60 s. Per environment because torch rebuilds an op whose include paths changed: two
    checkouts' venvs sharing one folder would rebuild it in turn, each run paying the build."""
    import hashlib
    import sys

    return Path.home() / ".cache/tandem/torch_extensions" / hashlib.sha256(sys.prefix.encode()).hexdigest()[:12]


os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(extensions_dir()))


def prepare_cpu_ops(stale_after_s: float = 600.0) -> str:
    """Build DeepSpeed's CPU shared-memory comm op now (``scripts/run.sh`` calls this at
    setup), so no training run or test pays the first build under its own time limit.

    torch's JIT build holds a lock file while it compiles and waits forever for one it finds:
    a build killed mid-way (Ctrl-C, a killed worker, a reboot) would hang every later run. A
    lock older than ``stale_after_s`` is such a leftover and is removed."""
    import time

    import deepspeed
    from deepspeed.accelerator import get_accelerator

    builder = get_accelerator().create_op_builder("ShareMemCommBuilder")
    if builder is None or not deepspeed.ops.__compatible_ops__.get(builder.NAME, False):
        return "not needed here"
    lock = Path(os.environ["TORCH_EXTENSIONS_DIR"]) / builder.NAME / "lock"
    if lock.exists() and time.time() - lock.stat().st_mtime > stale_after_s:
        lock.unlink(missing_ok=True)
    builder.load(verbose=False)
    return f"{builder.NAME} ready"


@dataclass
class EngineConfig:
    zero_stage: int = 2
    offload_optimizer: bool = False  # ZeRO-Offload of optimizer state to CPU memory
    offload_params: bool = False  # ZeRO-3 only
    precision: str = "fp32"  # fp32 | bf16
    micro_batch_per_rank: int = 2
    grad_accum_steps: int = 1
    grad_clip: float = 1.0
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple = (0.9, 0.999)
    activation_checkpointing: bool = False

    def __post_init__(self):
        if self.zero_stage not in (0, 1, 2, 3):
            raise ValueError(f"zero_stage must be 0..3, got {self.zero_stage}")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be fp32 or bf16, got {self.precision!r}")
        if self.offload_params and self.zero_stage != 3:
            raise ValueError("offload_params needs zero_stage 3")


def deepspeed_config(cfg: EngineConfig, world_size: int) -> dict:
    """The DeepSpeed JSON for ``cfg`` on ``world_size`` ranks: the stage's template, then the
    recipe's fields over it."""
    template = TEMPLATES / f"zero{cfg.zero_stage}.json"
    base: dict = json.loads(template.read_text()) if template.is_file() else {}
    zero: dict = dict(base.get("zero_optimization", {}), stage=cfg.zero_stage)
    if cfg.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": torch.cuda.is_available()}
    if cfg.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": torch.cuda.is_available()}
    base.update({
        "train_micro_batch_size_per_gpu": cfg.micro_batch_per_rank,
        "gradient_accumulation_steps": cfg.grad_accum_steps,
        "train_batch_size": cfg.micro_batch_per_rank * cfg.grad_accum_steps * world_size,
        "gradient_clipping": cfg.grad_clip,
        "zero_optimization": zero,
        "bf16": {"enabled": cfg.precision == "bf16"},
        "optimizer": {"type": "AdamW", "params": {
            "lr": cfg.lr, "weight_decay": cfg.weight_decay, "betas": list(cfg.betas),
            # torch's AdamW: DeepSpeed's fused CPU Adam would JIT-compile for ~70 s.
            "torch_adam": True}},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    })
    return base


def apply_activation_checkpointing(model: torch.nn.Module) -> int:
    """Wrap each DiT block so its activations are recomputed in backward; returns the count."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

    blocks = model.blocks
    for i, block in enumerate(blocks):
        blocks[i] = checkpoint_wrapper(block)
    return len(blocks)


def init_distributed() -> None:
    """Join (or start) the process group; DeepSpeed wraps one that Ray Train or torchrun
    already started, which its config parsing (zero.Init) needs for the world size."""
    import deepspeed

    deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")


def build_model(model_cls, model_cfg, cfg: EngineConfig) -> torch.nn.Module:
    """``model_cls(model_cfg)``, built so that no rank ever holds the whole model under ZeRO-3.

    ZeRO-3: each parameter is partitioned the moment its layer is constructed
    (``deepspeed.zero.Init``, which broadcasts rank 0's values first, so every rank agrees);
    the model's own initialisation then runs one module at a time on rank 0 with that
    module's parameters gathered (``model.init_module``), and is scattered back. Peak memory
    per rank: its partition plus one module. Other stages build the whole model, as they
    keep it whole on every rank anyway. ``model_cls`` takes ``init_weights=False`` and has
    ``init_module(module)`` (``model.dit.DualDiT``)."""
    if cfg.zero_stage != 3:
        return model_cls(model_cfg)
    import deepspeed

    init_distributed()
    if not torch.cuda.is_available() or cfg.offload_params:
        _return_freed_blocks_to_the_os()
    with deepspeed.zero.Init(config_dict_or_path=deepspeed_config(cfg, torch.distributed.get_world_size())):
        model = model_cls(model_cfg, init_weights=False)
    is_rank0 = torch.distributed.get_rank() == 0
    for module in model.modules():
        params = list(module.parameters(recurse=False))
        if params:
            with deepspeed.zero.GatheredParameters(params, modifier_rank=0):
                if is_rank0:
                    model.init_module(module)
    return model


def _return_freed_blocks_to_the_os() -> None:
    """Host-resident partitions: every layer is allocated whole, then freed once partitioned.
    glibc raises its mmap threshold to the largest block freed, so those layer-sized blocks
    would then come from, and stay in, its heap: the resident set would grow by about the
    whole model anyway. A fixed 1 MiB threshold hands each freed block back at once."""
    import ctypes
    import ctypes.util

    libc = ctypes.util.find_library("c")
    if libc and hasattr(ctypes.CDLL(libc), "mallopt"):
        ctypes.CDLL(libc).mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD


def build_engine(model: torch.nn.Module, cfg: EngineConfig, lr_lambda=None):
    """``deepspeed.initialize`` for ``model``; returns the engine (optimizer and schedule inside)."""
    import deepspeed

    init_distributed()
    if cfg.activation_checkpointing:
        apply_activation_checkpointing(model)
    ds_config = deepspeed_config(cfg, torch.distributed.get_world_size())
    # Our own LambdaLR (warmup + cosine): DeepSpeed steps it at each optimizer step and
    # keeps its state in the checkpoint.
    schedule = (lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)) if lr_lambda else None
    engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=model.parameters(),
                                           config=ds_config, lr_scheduler=schedule)
    return engine
