"""Training overhead: a plain single-process PyTorch loop vs Ray Train + DeepSpeed ZeRO-2,
same model (debug preset), data and steps, side by side; plus loader headroom.

    python benchmarks/train_overhead.py [--steps 20] [--workers 1]
    python benchmarks/train_overhead.py --cuda   # 1b preset, bf16, ZeRO-2 on one GPU: tokens/s, MFU

Targets: Ray+DeepSpeed samples/s within 15 % of the plain loop (same worker count = 1, so
the comparison measures framework overhead, not scaling); loader >= 5x the step's need.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def plain_loop(shards: str, steps: int, batch: int, preset: str = "debug", device: str = "cpu",
               dtype=torch.float32) -> float:
    from model.conditioning import Conditioning
    from model.dit import DualDiT
    from model.flow_matching import FlowMatchingConfig, flow_matching_loss
    from model.presets import get_preset
    from training.loader import LatentLoader, LoaderConfig

    torch.manual_seed(0)
    model = DualDiT(get_preset(preset)).to(device, dtype)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loader = LatentLoader(LoaderConfig(shards=shards, batch_size=batch), 0, 1)
    fm = FlowMatchingConfig()

    def step(i):
        b = next(loader)
        cond = Conditioning(b["text_emb"].to(device, dtype), b["text_mask"].to(device))
        out = flow_matching_loss(model, b["video"].to(device, dtype), b["audio"].to(device, dtype), cond, fm,
                                 generator=torch.Generator().manual_seed(i))
        opt.zero_grad()
        out.total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    step(-1)  # warm-up
    start = time.perf_counter()
    for i in range(steps):
        step(i)
    return steps * batch / (time.perf_counter() - start)


def ray_deepspeed(shards: str, steps: int, batch: int, workers: int, storage: str) -> float:
    import mlflow

    from pipelines.train_cmd import load_recipe
    from training.ray_train import run_training

    cfg = load_recipe("debug_cpu", [f"data.shards={shards}", f"storage={storage}", f"steps={steps + 1}",
                                    f"checkpoint_every={10**9}", f"workers.num_workers={workers}",
                                    f"engine.micro_batch_per_rank={batch}", f"data.batch_size={batch}",
                                    f"tracking_dir={storage}/runs"])
    run_training(cfg, run_name="bench")
    from pipelines.tracking import default_tracking_uri

    mlflow.set_tracking_uri(default_tracking_uri(f"{storage}/runs"))
    run = mlflow.search_runs(experiment_names=["tandem-train"], output_format="list")[0]
    history = mlflow.tracking.MlflowClient().get_metric_history(run.info.run_id, "samples_per_s")
    rates = [m.value for m in sorted(history, key=lambda m: m.step)][1:]  # skip the warm-up step
    return len(rates) / sum(1 / r for r in rates)  # harmonic mean = total samples / total time


def loader_rate(shards: str, batch: int, n: int = 50) -> float:
    from training.loader import LatentLoader, LoaderConfig

    loader = LatentLoader(LoaderConfig(shards=shards, batch_size=batch), 0, 1)
    start = time.perf_counter()
    for _ in range(n):
        next(loader)
    return n * batch / (time.perf_counter() - start)


def cuda_1b(steps: int = 10) -> None:
    """1b preset, bf16, one GPU: the model's own CUDA benchmark (model/flops.py FLOPs, H100
    peak 989 TFLOP/s) gives tokens/s and MFU; the ZeRO-2 engine path on GPU is the same
    Trainer code the cluster recipes run (not measurable on this CPU-only machine)."""
    if not torch.cuda.is_available():
        raise SystemExit("--cuda needs a GPU")
    import subprocess

    subprocess.run([sys.executable, str(Path(__file__).with_name("model_step.py")), "--cuda"], check=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--cuda", action="store_true")
    args = ap.parse_args()
    if args.cuda:
        return cuda_1b(args.steps)
    from tests.training.conftest import make_latent_shards

    with tempfile.TemporaryDirectory() as tmp:
        shards = str(make_latent_shards(Path(tmp) / "latents", n=64))
        torch.set_num_threads(1)
        plain = plain_loop(shards, args.steps, args.batch)
        ray_ds = ray_deepspeed(shards, args.steps, args.batch, args.workers, f"{tmp}/train")
        feed = loader_rate(shards, args.batch)
    print(f"plain PyTorch loop      : {plain:8.1f} samples/s")
    print(f"Ray Train + ZeRO-2 (x{args.workers}) : {ray_ds:8.1f} samples/s")
    print(f"overhead                : {100 * (1 - ray_ds / plain):6.1f} %  (target <= 15 %)")
    print(f"loader                  : {feed:8.1f} samples/s = {feed / plain:.1f}x the step's need (target >= 5x)")


if __name__ == "__main__":
    main()
