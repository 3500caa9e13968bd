"""DualDiT training-step cost: forward + backward time, throughput and peak memory.

How to run:

    .venv/bin/python benchmarks/model_step.py            # CPU: debug vs small, side by side
    .venv/bin/python benchmarks/model_step.py --cuda     # GPU: the 1b preset in bf16 + SDPA

What it compares. CPU mode runs the ``debug`` and ``small`` presets on the *same* clip
(17 frames at 64x64 and 25 fps -> 5x8x8 video latents = 80 video tokens, plus 17 audio
tokens and 16 text tokens), each in its own subprocess so that peak memory (max RSS) is
per preset, and prints one row per preset: parameters, ms per forward+backward, tokens/s,
achieved GFLOP/s and peak memory. CUDA mode runs ``1b`` on a production-like clip in the
geometry it is sized for (LTX-2 latents, model/presets.py: 2 s, 512x768 at 24 fps: 7x16x24
latents -> 2688 video + 51 audio tokens, 128 text tokens, batch 2) with bf16 weights, and
reports tokens/s, peak allocated memory and MFU.

FLOPs (model/flops.py; one multiply-add = 2 FLOPs), per sample, summed over blocks:
    branch(N, d, F) = 2N(4d^2 + 2dF) + 2(2Nd^2 + 2Ld^2) + 4N^2 d + 4NLd
    fusion          = 4(Nv dv^2 + Na da dv + Na da^2 + Nv dv da) + 4 Nv Na (dv + da)
    forward = depth * (branch(Nv, dv, Fv) + branch(Na, da, Fa)) + fused_blocks * fusion
    train step = 3 * forward;   MFU = train_flops * samples / seconds / peak FLOP/s
(L = text tokens + 1 null token; the peak defaults to 989 TFLOP/s, H100 SXM dense bf16.)
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.dit import DualDiT  # noqa: E402
from model.flops import train_flops  # noqa: E402
from model.presets import get_preset  # noqa: E402

CPU_CLIP = dict(video=(5, 8, 8), audio=17, text=16, batch=1)
CUDA_CLIP = dict(video=(7, 16, 24), audio=51, text=128, batch=2)


def make_batch(cfg, clip, device, dtype):
    b, (t, h, w) = clip["batch"], clip["video"]
    g = torch.Generator().manual_seed(0)
    return dict(
        video_latents=torch.randn(b, cfg.video.latent_channels, t, h, w, generator=g).to(device, dtype),
        audio_latents=torch.randn(b, cfg.audio.latent_channels, clip["audio"], generator=g).to(device, dtype),
        t_video=torch.rand(b, generator=g).to(device),
        t_audio=torch.rand(b, generator=g).to(device),
        text_emb=torch.randn(b, clip["text"], cfg.text_dim, generator=g).to(device, dtype),
        text_mask=torch.ones(b, clip["text"], dtype=torch.bool, device=device),
    )


def tokens(cfg, clip) -> tuple[int, int]:
    t, h, w = clip["video"]
    pt, ph, pw = cfg.video.patch
    return (t // pt) * (h // ph) * (w // pw), clip["audio"] // cfg.audio.patch[0]


def step(model, batch):
    v, a = model(**batch)
    (v.float().pow(2).mean() + a.float().pow(2).mean()).backward()


def measure(preset: str, clip: dict, device: str, dtype: torch.dtype, warmup: int, iters: int) -> dict:
    cfg = get_preset(preset)
    torch.manual_seed(0)
    model = DualDiT(cfg).to(device, dtype)
    batch = make_batch(cfg, clip, device, dtype)
    rss_model = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for _ in range(warmup):
        step(model, batch)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(iters):
        model.zero_grad(set_to_none=True)
        step(model, batch)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / iters
    nv, na = tokens(cfg, clip)
    flops = train_flops(cfg, nv, na, clip["text"]) * clip["batch"]
    out = dict(preset=preset, params=model.num_params(), ms=1000 * seconds,
               tokens_per_s=(nv + na) * clip["batch"] / seconds, gflops_per_s=flops / seconds / 1e9)
    if device == "cuda":
        out["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
    else:
        out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        out["model_rss_mib"] = rss_model
    return out


def cpu_table(presets: list[str], iters: int) -> None:
    rows = []
    for preset in presets:  # one process per preset: max RSS is per process
        proc = subprocess.run([sys.executable, __file__, "--one", preset, "--iters", str(iters)],
                              capture_output=True, text=True, check=True)
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(f"CPU, {torch.get_num_threads()} threads; clip: {CPU_CLIP}")
    print(f"{'preset':8} {'params':>10} {'ms/step':>9} {'tokens/s':>9} {'GFLOP/s':>8} "
          f"{'peak RSS MiB':>12} {'after build':>11}")
    for r in rows:
        print(f"{r['preset']:8} {r['params'] / 1e6:9.1f}M {r['ms']:9.1f} {r['tokens_per_s']:9.1f} "
              f"{r['gflops_per_s']:8.1f} {r['peak_rss_mib']:12.0f} {r['model_rss_mib']:11.0f}")


def cuda_run(preset: str, peak_tflops: float, iters: int) -> None:
    torch.backends.cuda.matmul.allow_tf32 = True
    r = measure(preset, CUDA_CLIP, "cuda", torch.bfloat16, warmup=2, iters=iters)
    mfu = r["gflops_per_s"] / (peak_tflops * 1e3)
    print(f"{torch.cuda.get_device_name()} bf16 SDPA; clip: {CUDA_CLIP}")
    print(f"{preset}: {r['params'] / 1e9:.2f}B params, {r['ms']:.0f} ms/step, "
          f"{r['tokens_per_s']:.0f} tokens/s, {r['gflops_per_s'] / 1e3:.1f} TFLOP/s, "
          f"MFU {100 * mfu:.1f}% (peak {peak_tflops} TFLOP/s), peak memory {r['peak_mem_gib']:.1f} GiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cuda", action="store_true", help="GPU mode (1b preset, bf16)")
    parser.add_argument("--preset", default=None, help="override the preset (default: 1b on GPU)")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="device peak, dense bf16")
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: one CPU preset
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, CPU_CLIP, "cpu", torch.float32, warmup=1, iters=args.iters)))
    elif args.cuda:
        if not torch.cuda.is_available():
            sys.exit("--cuda: no CUDA device visible")
        cuda_run(args.preset or "1b", args.peak_tflops, args.iters)
    else:
        cpu_table([args.preset] if args.preset else ["debug", "small"], args.iters)


if __name__ == "__main__":
    main()
