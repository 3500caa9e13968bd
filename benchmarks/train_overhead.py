"""Training overhead: the same model, data and steps, side by side in one run.

    python benchmarks/train_overhead.py [--preset small] [--steps 30] [--batch 4]
    python benchmarks/train_overhead.py --cuda [--steps 20]   # 1b, bf16, ZeRO-2, one GPU

CPU (one worker/process, one thread each, so it measures framework overhead and not
scaling; ``--preset debug`` is quick but its 352 tiny tensors make DeepSpeed's per-parameter
Python work dominate, ``small`` (0.33B, the default) is the honest figure): a plain PyTorch loop (loader + AdamW + clipping) vs the Trainer on a
DeepSpeed ZeRO-2 engine in this process vs Ray Train + DeepSpeed ZeRO-2 (``tandem train``'s
path, MLflow logging every step included). Every rate is end to end over the timed steps
(for Ray: from the MLflow timestamps of the first and last timed step). Prints samples/s
and the ratios; target: Ray Train + ZeRO-2 within 15 % of the plain loop. Also the
loader's rate vs what one step consumes (target >= 5x).

--cuda: the ``1b`` preset in bf16 under ZeRO-2 on one GPU through the Trainer, on synthetic
LTX-2-shaped latents of a 2 s 512x512 24 fps clip: tokens/s and MFU (model/flops.py FLOPs; peak from
training.trainer.PEAK_TFLOPS, H100 = 989 TFLOP/s bf16 dense).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def synthetic_shards(directory: Path, n: int, video_shape, audio_shape, text_dim: int) -> str:
    from training.latent_shards import write_latent_shard

    g = torch.Generator().manual_seed(0)
    samples = [{"key": f"s{i:05d}", "video": torch.randn(video_shape, generator=g),
                "audio": torch.randn(audio_shape, generator=g), "text": torch.randn(12, text_dim, generator=g),
                "meta": {"index": i}} for i in range(n)]
    for s in range(0, n, 16):
        write_latent_shard(directory / f"latents-{s // 16:05d}.tar", samples[s:s + 16])
    return str(directory)


def plain_loop(shards: str, steps: int, batch: int, preset: str) -> float:
    from model.conditioning import Conditioning
    from model.dit import DualDiT
    from model.flow_matching import FlowMatchingConfig, flow_matching_loss
    from model.presets import get_preset
    from training.loader import LatentLoader, LoaderConfig

    torch.manual_seed(0)
    model = DualDiT(get_preset(preset))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loader = LatentLoader(LoaderConfig(shards=shards, batch_size=batch), 0, 1)
    fm = FlowMatchingConfig()

    def step(i):
        b = next(loader)
        cond = Conditioning(b["text_emb"], b["text_mask"])
        out = flow_matching_loss(model, b["video"], b["audio"], cond, fm, generator=torch.Generator().manual_seed(i))
        opt.zero_grad()
        out.total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        out.total.item()

    step(-1)  # warm-up
    start = time.perf_counter()
    for i in range(steps):
        step(i)
    return steps * batch / (time.perf_counter() - start)


def _recipe(shards: str, storage: str, steps: int, batch: int, extra: list[str] = ()):
    from pipelines.train_cmd import load_train_recipe

    return load_train_recipe("debug_cpu", [f"data.shards={shards}", "workers.cpus_per_worker=1", f"storage={storage}", f"steps={steps}",
                                     f"checkpoint_every={10**9}", "workers.num_workers=1", "sample.every=0",
                                     "ema_decay=0", f"engine.micro_batch_per_rank={batch}",
                                     f"data.batch_size={batch}", f"tracking_dir={storage}/runs", *extra])


class _StepClock:
    """A tracker that notes when each step's metrics arrive (as MLflow's timestamps do for Ray)."""

    def __init__(self):
        self.times, self.metrics = [], []

    def log_metrics(self, metrics, step=None):
        self.times.append(time.perf_counter())
        self.metrics.append(metrics)


def trainer_in_process(cfg, warmup: int = 1) -> tuple[list[dict], float]:
    """The Trainer on a one-rank DeepSpeed engine in this process: metrics of the timed steps,
    and samples/s end to end from the end of the warm-up to the end of the last step."""
    from training.local_ranks import join_local_world

    join_local_world()
    from training.trainer import Trainer

    clock = _StepClock()
    Trainer(cfg, tracker=clock).fit()
    times, history = clock.times[warmup - 1:], clock.metrics[warmup:]
    samples = cfg.data.batch_size * cfg.engine.grad_accum_steps * (len(times) - 1)
    return history, samples / (times[-1] - times[0])


def ray_deepspeed(cfg, warmup: int = 1) -> float:
    import mlflow

    from pipelines.ray_train import run_training
    from pipelines.tracking import default_tracking_uri

    result = run_training(cfg, run_name="bench")
    if result.error:
        raise SystemExit(f"Ray Train failed: {result.error}")
    mlflow.set_tracking_uri(default_tracking_uri(cfg.tracking_dir))
    run = mlflow.search_runs(experiment_names=["tandem-train"], output_format="list")[0]
    history = sorted(mlflow.MlflowClient().get_metric_history(run.info.run_id, "loss"), key=lambda m: m.step)
    timed = history[warmup - 1:]  # from the end of the warm-up step to the end of the last
    seconds = (timed[-1].timestamp - timed[0].timestamp) / 1000
    return (len(timed) - 1) * cfg.data.batch_size / seconds


def loader_rate(shards: str, batch: int, n: int = 50) -> float:
    from training.loader import LatentLoader, LoaderConfig

    loader = LatentLoader(LoaderConfig(shards=shards, batch_size=batch), 0, 1)
    start = time.perf_counter()
    for _ in range(n):
        next(loader)
    return n * batch / (time.perf_counter() - start)


def cuda_1b(steps: int, batch: int) -> None:
    if not torch.cuda.is_available():
        raise SystemExit("--cuda needs a GPU")
    from model.presets import get_preset
    from model.sequence import SequenceConfig

    preset = get_preset("1b")  # sized for LTX-2 latents: 8x temporal, 32x spatial, 1x1 patches
    seq = SequenceConfig(duration_s=2.0, fps=24, height=512, width=512, video_temporal_stride=8,
                         video_spatial_stride=32, video_patch=(1, 1, 1))
    with tempfile.TemporaryDirectory() as tmp:
        shards = synthetic_shards(Path(tmp) / "latents", 64, (preset.video.latent_channels, *seq.video_latent_shape),
                                  (preset.audio.latent_channels, seq.audio_latents), preset.text_dim)
        cfg = _recipe(shards, f"{tmp}/train", steps + 2, batch,
                      ["preset=1b", "engine.precision=bf16", "engine.zero_stage=2", "workers.use_gpu=true"])
        history, _ = trainer_in_process(cfg, warmup=2)
    tokens = sum(m["tokens_per_s"] for m in history) / len(history)
    mfu = sum(m.get("mfu", 0.0) for m in history) / len(history)
    print(f"{torch.cuda.get_device_name()}: 1b preset, bf16, ZeRO-2, batch {batch}, "
          f"{seq.video_tokens} video + {seq.audio_tokens} audio tokens per sample")
    print(f"  tokens/s {tokens:,.0f}   MFU {100 * mfu:.1f} %   peak memory "
          f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--preset", default="small", help="debug | small (CPU comparison)")
    ap.add_argument("--cuda", action="store_true")
    args = ap.parse_args()
    if args.cuda:
        return cuda_1b(args.steps, max(1, args.batch // 2))
    from model.presets import get_preset

    torch.set_num_threads(1)
    preset = get_preset(args.preset)
    with tempfile.TemporaryDirectory() as tmp:
        shards = synthetic_shards(Path(tmp) / "latents", 96, (preset.video.latent_channels, 3, 8, 8),
                                  (preset.audio.latent_channels, 25), preset.text_dim)
        runs = [f"preset={args.preset}"]
        plain = plain_loop(shards, args.steps, args.batch, args.preset)
        _, in_process = trainer_in_process(_recipe(shards, f"{tmp}/direct", args.steps + 1, args.batch, runs))
        ray_ds = ray_deepspeed(_recipe(shards, f"{tmp}/ray", args.steps + 1, args.batch, runs))
        feed = loader_rate(shards, args.batch)
    print(f"{args.preset} preset, batch {args.batch}, {args.steps} timed steps, 1 thread per process")
    print(f"plain PyTorch loop          : {plain:7.2f} samples/s")
    print(f"Trainer + ZeRO-2, in process: {in_process:7.2f} samples/s  ({in_process / plain:.2f}x plain)")
    print(f"Ray Train + ZeRO-2 (1 worker): {ray_ds:7.2f} samples/s  ({ray_ds / plain:.2f}x plain, {ray_ds / in_process:.2f}x in-process; "
          f"overhead {100 * (1 - ray_ds / plain):.1f} %, target <= 15 %)")
    print(f"loader                      : {feed:7.1f} samples/s = {feed / plain:.1f}x the step's need (target >= 5x)")


if __name__ == "__main__":
    main()
