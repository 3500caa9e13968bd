"""Encode throughput: clips per second through each encoder of the registry, side by side.

How to run:

    .venv/bin/python benchmarks/encode_throughput.py               # CPU: tiny random configs
    .venv/bin/python benchmarks/encode_throughput.py --clips 8 --batch 4 --threads 0   # all cores
    .venv/bin/python benchmarks/encode_throughput.py --cuda        # GPU: real-size configs + 1b MFU

What it compares. The same clips go through every pair of encoders in training/encoders.py —
tandem's debug VAEs, LTX-2's video VAE + audio VAE/vocoder, Wan 2.1's video VAE + Stable
Audio's Oobleck — each built with random weights, saved with save_pretrained and loaded back
through the real path (training.random_encoders). Per pair it times, after a warm-up batch:

- ``video``: pixels at the bucket's shape -> normalised latents (the video VAE alone),
- ``audio``: the bucket's waveform -> normalised latents (mel front end + audio VAE),
- ``clips``: ClipEncoder.encode_many on real clip-shard samples (mp4 + flac decode, crop and
  resize, resample, both VAEs and the text encoder, batched per bucket): what `tandem latents`
  does per actor,

and prints clips/s (from the median of ``--iters`` calls) and each pair's ratio to tandem:debug. CPU mode uses the tiny configs the
tests use at the debug bucket (2 s, 64x112, 8 fps). ``--cuda`` uses the published real-size
configs (random weights; the text encoder stays the tiny one) at the 1b recipe's bucket
(5 s, 512x768, 24 fps) and the 14b recipe's (10 s, 704x1280 = 720p, 24 fps, tiled), in
bf16, and then runs benchmarks/model_step.py's step for the 1b preset on LTX-2-shaped latents
(5 s 512x768 at 24 fps -> 16x16x24 video latents, 126 audio latents) to report its MFU.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.buckets import Bucket  # noqa: E402

PAIRS = {"tandem:debug": None, "ltx2": ("ltx2", "ltx2"), "wan+oobleck": ("wan", "oobleck")}
CPU_BUCKET = Bucket(duration_s=2.0, height=64, width=112, fps=8.0)
CUDA_BUCKETS = {"1b (5 s 512x768)": Bucket(5.0, 512, 768, 24.0), "14b (10 s 720p)": Bucket(10.0, 704, 1280, 24.0)}
LTX2_1B_CLIP = dict(video=(16, 16, 24), audio=126, text=128, batch=2)  # 5 s, 512x768, 24 fps


def _rate(fn, batch: int, iters: int, device: str) -> float:
    """Clips/s from the median call: on a shared machine a neighbour's burst hits single calls."""
    fn()  # warm-up: lazy inits, kernels, allocator
    seconds = []
    for _ in range(iters):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    return batch / statistics.median(seconds)


def measure_pair(cfg, bucket: Bucket, samples: list[dict], batch: int, iters: int, device: str) -> dict:
    from training.buckets import BucketConfig
    from training.clip_encoder import ClipEncoder

    cfg.batch_size = batch
    encoder = ClipEncoder(cfg, device)
    video, audio = encoder.video_vae, encoder.audio_vae
    stride = video.temporal_stride
    bucket = Bucket(bucket.duration_s, bucket.height, bucket.width, bucket.fps, stride)
    frames = bucket.sequence.num_frames
    pixels = torch.rand(batch, 3, frames, bucket.height, bucket.width, device=device) * 2 - 1
    wave = 0.1 * torch.randn(batch, audio.channels, round(frames / bucket.fps * audio.sample_rate), device=device)
    buckets = BucketConfig(fps=bucket.fps, durations=[bucket.duration_s], resolutions=[[bucket.height, bucket.width]])
    with torch.no_grad():
        row = {"video": _rate(lambda: video.encode(pixels), batch, iters, device),
               "audio": _rate(lambda: audio.encode(wave), batch, iters, device)}
    latents, failed = encoder.encode_many(samples[:batch], buckets)  # warm-up, and a check
    if failed or len(latents) != batch:
        raise RuntimeError(f"encode_many failed on the benchmark clips: {failed}")
    row["clips"] = _rate(lambda: encoder.encode_many(samples[:batch], buckets), batch, iters, device)
    row["latents"] = tuple(latents[0]["video"].shape), tuple(latents[0]["audio"].shape)
    return row


def run(size: str, buckets: dict[str, Bucket], clips: int, batch: int, iters: int, device: str) -> None:
    from benchmarks.loader_throughput import make_clip_shard
    from curation.shards import read_clip_shard
    from training.encoders import EncoderConfig
    from training.random_encoders import save_random_encoders

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for label, bucket in buckets.items():
            shard_dir = tmp / label.split()[0]
            shard_dir.mkdir()
            # Sources longer than the bucket, at 2x its resolution (decode + resize are part of the cost).
            size_px = (2 * bucket.width, 2 * bucket.height)
            shard = make_clip_shard(shard_dir, clips, size_px, (bucket.duration_s + 0.3, bucket.duration_s + 0.6))
            samples = read_clip_shard(next(shard.glob("*.tar")))
            print(f"\n{label}: {bucket.duration_s:g} s at {bucket.fps:g} fps, {bucket.height}x{bucket.width}, "
                  f"batch {batch}, {device}, {torch.get_num_threads()} threads, {size} configs (random weights)")
            print(f"{'encoders':14} {'video latents':>15} {'audio':>10} {'video clips/s':>14} {'audio clips/s':>14} "
                  f"{'end-to-end clips/s':>19} {'vs tandem':>10}")
            base = None
            for name, pair in PAIRS.items():
                cfg = save_random_encoders(tmp / name / size, *pair, text="", size=size) if pair else EncoderConfig()
                cfg.dtype = "bfloat16" if device == "cuda" else "float32"
                r = measure_pair(cfg, bucket, samples, batch, iters, device)
                base = base or r["clips"]
                (v, a) = r["latents"]
                print(f"{name:14} {'x'.join(map(str, v)):>15} {'x'.join(map(str, a)):>10} {r['video']:14.2f} "
                      f"{r['audio']:14.2f} {r['clips']:19.2f} {r['clips'] / base:9.2f}x")


def mfu_1b(peak_tflops: float, iters: int) -> None:
    from benchmarks.model_step import measure

    r = measure("1b", LTX2_1B_CLIP, "cuda", torch.bfloat16, warmup=2, iters=iters)
    print(f"\n1b train step on LTX-2-shaped latents {LTX2_1B_CLIP}: {r['ms']:.0f} ms/step, "
          f"{r['tokens_per_s']:.0f} tokens/s, MFU {100 * r['gflops_per_s'] / (peak_tflops * 1e3):.1f}% "
          f"(peak {peak_tflops} TFLOP/s), peak memory {r['peak_mem_gib']:.1f} GiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cuda", action="store_true", help="real-size configs on a GPU, bf16, plus the 1b MFU")
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (0: torch's default); 1 keeps a shared machine's numbers steady")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="device peak, dense bf16 (H100/H200)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cuda:
        if not torch.cuda.is_available():
            sys.exit("--cuda: no CUDA device visible")
        run("real", CUDA_BUCKETS, args.clips, args.batch, args.iters, "cuda")
        mfu_1b(args.peak_tflops, args.iters)
    else:
        run("tiny", {"debug bucket": CPU_BUCKET}, args.clips, args.batch, args.iters, "cpu")


if __name__ == "__main__":
    main()
