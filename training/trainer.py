"""Trainer: flow-matching steps on a DeepSpeed engine, warmup + cosine, EMA, samples, checkpoints.

The model is the recipe's preset fitted to the latents it trains on (``model_config``: latent
channels, patch size, strides and rates from the shards' LatentFormat), built partitioned
under ZeRO-3 (``training.engine.build_model``). A checkpoint (every ``checkpoint_every``
steps, under ``storage/checkpoints``) is DeepSpeed's own (so ``zero_to_fp32`` converts it)
plus, in its client state, the loader position and the trainer step; each rank's slice of
the EMA lies beside it, and the whole EMA is exported as ``<tag>/ema.safetensors``
(training/resume.py). ``checkpoints/model.json`` is the DualDiTConfig the checkpoints hold.
Noise and timesteps come from a generator seeded
by (seed, step, micro-batch, rank), so a resumed run draws exactly what the uninterrupted
run would have drawn.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from model.config import run_only
from model.flow_matching import FlowMatchingConfig
from training.engine import EngineConfig, build_engine, build_model
from training.loader import LatentLoader, LoaderConfig
from training.resume import Resumable
from training.samples import SampleConfig, Sampler
from training.tracker import NullTracker, Tracker

# bf16 dense peak per device, for MFU when the recipe does not say.
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "H800": 989.0, "A100": 312.0, "L40S": 362.0}


@dataclass
class WorkersConfig:
    """Ray Train scaling: the same recipe fields run 2 CPU workers or 64 GPUs."""
    num_workers: int = 2
    use_gpu: bool = False
    cpus_per_worker: float = run_only(1.0)  # threads per worker; a run resumes with any
    max_failures: int = run_only(2)  # a lost worker restarts the run from its last checkpoint


@dataclass
class TrainConfig:
    preset: str = "debug"
    steps: int = 20
    warmup_steps: int = 2
    min_lr_ratio: float = 0.1
    seed: int = 0
    # run_only: fields a run may resume with changed (where it runs, how it is recorded); any
    # other change on the same storage is refused (pipelines.ray_train.check_resume).
    checkpoint_every: int = run_only(5)  # a resume continues exactly from any checkpoint
    storage: str = "runs/train"
    ema_decay: float = 0.0  # 0 disables
    log_every: int = run_only(1)
    peak_tflops: float = run_only(0.0)  # per-device peak for MFU; 0 = look the GPU up in PEAK_TFLOPS
    flow: FlowMatchingConfig = field(default_factory=FlowMatchingConfig)  # the objective: timesteps, weights, dropout
    engine: EngineConfig = field(default_factory=EngineConfig)
    data: LoaderConfig = field(default_factory=LoaderConfig)
    workers: WorkersConfig = field(default_factory=WorkersConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    experiment: str = run_only("tandem-train")
    tracking_dir: str = run_only("runs")  # MLflow store (unless MLFLOW_TRACKING_URI is set)
    register_alias: str = run_only("candidate")  # the final checkpoint becomes models:/tandem-dit@ALIAS

    def __post_init__(self):
        if self.data.batch_size != self.engine.micro_batch_per_rank:
            raise ValueError(f"data.batch_size ({self.data.batch_size}) must equal engine.micro_batch_per_rank "
                             f"({self.engine.micro_batch_per_rank}): each rank's micro-batch is one loader batch")


def warmup_cosine(warmup: int, total: int, min_ratio: float):
    """LR multiplier: linear warmup, then cosine decay to ``min_ratio`` at ``total``."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return factor


def step_generator(seed: int, step: int, micro: int, rank: int) -> torch.Generator:
    """The generator of one micro-batch's timesteps, condition dropout and noise: a resumed
    run draws exactly what the uninterrupted run would have drawn."""
    return torch.Generator().manual_seed(hash((seed, step, micro, rank)) & 0x7FFFFFFF)


def model_config(cfg: TrainConfig):
    """The DualDiTConfig ``cfg`` trains: the preset's size with the geometry of its latents
    (the shards' LatentFormat, or what ``data.encoder`` makes for the clips source; shards
    written before formats existed get the preset's default geometry)."""
    from model.presets import get_preset
    from training.latent_shards import read_latent_format

    if cfg.data.source == "clips":
        from training.encoders import describe

        fmt = describe(cfg.data.encoder, cfg.data.buckets.fps)
    else:
        fmt = read_latent_format(cfg.data.shards)
    return get_preset(cfg.preset, fmt.geometry() if fmt else None)


def _peak_flops(cfg: TrainConfig) -> float:
    if cfg.peak_tflops:
        return cfg.peak_tflops * 1e12
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        return next((v * 1e12 for k, v in PEAK_TFLOPS.items() if k in name), 0.0)
    return 0.0  # a CPU's peak is not meaningful for MFU


class Trainer(Resumable):
    def __init__(self, cfg: TrainConfig, model: torch.nn.Module | None = None, tracker: Tracker | None = None):
        import torch.distributed as dist

        from training.ema import EMA

        self.cfg = cfg
        torch.manual_seed(cfg.seed)  # every rank builds identical initial weights
        if model is None:
            from model.dit import DualDiT
            model = build_model(DualDiT, model_config(cfg), cfg.engine)
        self.model_cfg = model.cfg
        self.engine = build_engine(model, cfg.engine,
                                   warmup_cosine(cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio))
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.loader = LatentLoader(cfg.data, self.rank, self.world_size)
        self.tracker = tracker or NullTracker()
        self.step = 0
        self.ema = EMA(self.engine.module, cfg.ema_decay) if cfg.ema_decay > 0 else None
        self.sampler = Sampler(cfg.sample, cfg.seed)
        self.peak_flops = _peak_flops(cfg)
        self._last = None  # (batch, fps) of the latest micro-batch, for samples

    def client_state(self) -> dict:
        return {"loader": self.loader.state_dict()}

    def load_client_state(self, client: dict) -> None:
        self.loader.load_state_dict(client["loader"])

    def _tokens(self, video: torch.Tensor, audio: torch.Tensor) -> tuple[int, int]:
        (pt, ph, pw), (pa,) = self.model_cfg.video.patch, self.model_cfg.audio.patch
        t, h, w = video.shape[2:]
        return (t // pt) * (h // ph) * (w // pw), audio.shape[2] // pa

    def train_step(self) -> dict:
        """One optimizer step (``grad_accum_steps`` micro-batches); returns rank-local metrics."""
        from model.conditioning import Conditioning
        from model.flops import train_flops
        from model.flow_matching import flow_matching_loss

        dtype = torch.bfloat16 if self.cfg.engine.precision == "bf16" else torch.float32
        device, accum = self.engine.device, self.cfg.engine.grad_accum_steps
        start, samples, tokens, flops = time.perf_counter(), 0, 0, 0.0
        totals = {"loss": 0.0, "loss_video": 0.0, "loss_audio": 0.0}
        for micro in range(accum):
            batch = next(self.loader)
            fps = float(batch["meta"][0].get("latent_fps") or self.model_cfg.fps)
            gen = step_generator(self.cfg.seed, self.step, micro, self.rank)
            video, audio = batch["video"].to(device, dtype), batch["audio"].to(device, dtype)
            cond = Conditioning(batch["text_emb"].to(device, dtype), batch["text_mask"].to(device), fps=fps)
            out = flow_matching_loss(self.engine, video, audio, cond, self.cfg.flow, generator=gen)
            self.engine.backward(out.total)
            self.engine.step()  # DeepSpeed steps the optimizer on the last micro-batch only
            n_video, n_audio = self._tokens(video, audio)
            samples += video.shape[0]
            tokens += video.shape[0] * (n_video + n_audio)
            flops += video.shape[0] * train_flops(self.model_cfg, n_video, n_audio, batch["text_emb"].shape[1])
            for k, v in (("loss", out.total), ("loss_video", out.video), ("loss_audio", out.audio)):
                totals[k] += v.item() / accum
            self._last = (batch, fps)
        self.step += 1
        if self.ema is not None:
            self.ema.update(self.engine.module)
        elapsed = time.perf_counter() - start
        metrics = dict(totals, lr=self.engine.get_lr()[0], grad_norm=float(self.engine.get_global_grad_norm() or 0.0),
                       samples_per_s=samples * self.world_size / elapsed,
                       tokens_per_s=tokens * self.world_size / elapsed, epoch=float(self.loader.epoch))
        if self.peak_flops:
            metrics["mfu"] = flops / elapsed / self.peak_flops
        return metrics

    def write_samples(self) -> list[Path]:
        """Generate from the latest batch's captions (every rank); rank 0 logs mp4 + caption."""
        batch, fps = self._last
        out_dir = Path(self.cfg.storage) / "samples" if self.rank == 0 else None
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
        paths = self.sampler.sample(self.engine, batch, fps, self.step, out_dir)
        for path in paths:
            self.tracker.log_artifact(path, f"samples/step{self.step:08d}")
        return paths

    def fit(self, until: int | None = None) -> list[dict]:
        """Train from wherever ``resume`` left off to ``until`` (default ``cfg.steps``, which
        also sets the LR schedule's length); returns the metrics."""
        history = []
        while self.step < min(until or self.cfg.steps, self.cfg.steps):
            metrics = self.train_step()
            history.append(metrics)
            if self.step % self.cfg.log_every == 0:
                self.tracker.log_metrics(metrics, step=self.step)
            if self.sampler.due(self.step):
                self.write_samples()
            if self.step % self.cfg.checkpoint_every == 0 or self.step in (until, self.cfg.steps):
                self.save()
        return history
