"""Trainer: flow-matching steps on a DeepSpeed engine, warmup + cosine, EMA, checkpoints.

A checkpoint (every ``checkpoint_every`` steps, under ``storage/checkpoints``) is DeepSpeed's
own (so ``zero_to_fp32`` converts it) plus, in its client state, the loader position and the
trainer step. Noise and timesteps come from a generator seeded by (seed, step, rank), so a
resumed run draws exactly what the uninterrupted run would have drawn.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from training.engine import EngineConfig, build_engine
from training.loader import LatentLoader, LoaderConfig


@dataclass
class WorkersConfig:
    """Ray Train scaling: the same recipe fields run 2 CPU workers or 64 GPUs."""
    num_workers: int = 2
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    max_failures: int = 2  # a lost worker restarts the run from its last checkpoint


@dataclass
class TrainConfig:
    preset: str = "debug"
    steps: int = 20
    warmup_steps: int = 2
    min_lr_ratio: float = 0.1
    seed: int = 0
    checkpoint_every: int = 5
    storage: str = "runs/train"
    ema_decay: float = 0.0  # 0 disables; EMA is kept for ZeRO stage <= 2 only
    log_every: int = 1
    engine: EngineConfig = field(default_factory=EngineConfig)
    data: LoaderConfig = field(default_factory=LoaderConfig)
    workers: WorkersConfig = field(default_factory=WorkersConfig)
    experiment: str = "tandem-train"
    tracking_dir: str = "runs"  # MLflow store (unless MLFLOW_TRACKING_URI is set)



def warmup_cosine(warmup: int, total: int, min_ratio: float):
    """LR multiplier: linear warmup, then cosine decay to ``min_ratio`` at ``total``."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return factor


class Trainer:
    def __init__(self, cfg: TrainConfig, model: torch.nn.Module | None = None, tracker=None):
        import torch.distributed as dist

        from model.flow_matching import FlowMatchingConfig
        from model.presets import get_preset

        self.cfg = cfg
        torch.manual_seed(cfg.seed)  # every rank builds identical initial weights
        if model is None:
            from model.dit import DualDiT
            model = DualDiT(get_preset(cfg.preset))
        self.engine = build_engine(model, cfg.engine,
                                   warmup_cosine(cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio))
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.loader = LatentLoader(cfg.data, self.rank, self.world_size)
        # Deterministic objective: no condition dropout noise beyond the seeded generator.
        self.fm = FlowMatchingConfig()
        self.tracker = tracker
        self.step = 0
        self.ema = None
        if cfg.ema_decay > 0 and cfg.engine.zero_stage < 3:
            self.ema = {n: p.detach().clone().float() for n, p in self.engine.module.named_parameters()}

    @property
    def checkpoint_dir(self) -> Path:
        return Path(self.cfg.storage) / "checkpoints"

    def resume(self) -> bool:
        """Load the latest checkpoint under storage, if any; True when resumed."""
        if not (self.checkpoint_dir / "latest").exists():
            return False
        _, client = self.engine.load_checkpoint(str(self.checkpoint_dir))
        self.step = client["step"]
        self.loader.load_state_dict(client["loader"])
        if self.ema is not None and client.get("ema") is not None:
            self.ema = client["ema"]
        return True

    def save(self) -> None:
        self.engine.save_checkpoint(str(self.checkpoint_dir), tag=f"step{self.step:08d}", client_state={
            "step": self.step, "loader": self.loader.state_dict(), "ema": self.ema})

    def train_step(self) -> dict:
        """One optimizer step (``grad_accum_steps`` micro-batches); returns rank-local metrics."""
        from model.conditioning import Conditioning
        from model.flow_matching import flow_matching_loss

        dtype = torch.bfloat16 if self.cfg.engine.precision == "bf16" else torch.float32
        device = self.engine.device
        start, samples, totals = time.perf_counter(), 0, {"loss": 0.0, "loss_video": 0.0, "loss_audio": 0.0}
        for micro in range(self.cfg.engine.grad_accum_steps):
            batch = next(self.loader)
            gen = torch.Generator().manual_seed(hash((self.cfg.seed, self.step, micro, self.rank)) & 0x7FFFFFFF)
            video, audio = batch["video"].to(device, dtype), batch["audio"].to(device, dtype)
            cond = Conditioning(batch["text_emb"].to(device, dtype), batch["text_mask"].to(device))
            out = flow_matching_loss(self.engine, video, audio, cond, self.fm, generator=gen)
            self.engine.backward(out.total)
            self.engine.step()
            samples += video.shape[0]
            for k, v in (("loss", out.total), ("loss_video", out.video), ("loss_audio", out.audio)):
                totals[k] += v.item() / self.cfg.engine.grad_accum_steps
        self.step += 1
        self._update_ema()
        elapsed = time.perf_counter() - start
        return dict(totals, lr=self.engine.get_lr()[0], grad_norm=float(self.engine.get_global_grad_norm() or 0.0),
                    samples_per_s=samples * self.world_size / elapsed)

    def _update_ema(self) -> None:
        if self.ema is None:
            return
        with torch.no_grad():
            for n, p in self.engine.module.named_parameters():
                self.ema[n].lerp_(p.detach().float(), 1 - self.cfg.ema_decay)

    def fit(self, until: int | None = None) -> list[dict]:
        """Train from wherever ``resume`` left off to ``until`` (default ``cfg.steps``, which
        also sets the LR schedule's length); returns the metrics."""
        history = []
        while self.step < min(until or self.cfg.steps, self.cfg.steps):
            metrics = self.train_step()
            history.append(metrics)
            if self.tracker is not None and self.step % self.cfg.log_every == 0:
                self.tracker.log_metrics(metrics, step=self.step)
            if self.step % self.cfg.checkpoint_every == 0 or self.step in (until, self.cfg.steps):
                self.save()
        return history
