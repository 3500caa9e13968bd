"""Loader headroom: samples/s of the training loader's two sources against what one
debug-preset training step consumes, on the same clips and the same batch shape.

    python benchmarks/loader_throughput.py [--clips 16] [--batch 4] [--size 320x180] [--threads 1]
    python benchmarks/loader_throughput.py --device cuda   # step (and the clips source's encoder) on a GPU

What it does: makes ``--clips`` synthetic clips (make_clip: mp4 with AAC audio, plus the
flac curation writes beside it) of 2.3-2.9 s into one clip shard, all in the default
BucketConfig's 2 s 64x112 bucket; encodes them once into a latent shard the way the latent
DAG does (ClipEncoder + write_latent_shard). Then it times

- ``latents``: next(LatentLoader) over the latent shard (read + torch.load + collate),
- ``clips``:   next(LatentLoader) over the clip shard, decoding + encoding every sample when
  read (the clips source; its encoder uses CUDA when there is one, ClipEncoder's default),
- ``step``:    one step of model.dit.DualDiT(get_preset("debug")): flow-matching forward +
  backward + AdamW, on a batch the latent loader yielded (the clips source yields the same
  shapes),

each after one warm-up batch/step, and prints samples/s and the headroom ratio (loader
samples/s / step samples/s). The loader runs in the training process, so a headroom of h
means the loader adds 1/h to every step's time. Target: >= 5x for the latent source; the
clips source is for small experiments and its ratio says how small they have to be.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LENGTHS_S = (2.3, 2.5, 2.7, 2.9)  # distinct source clips, all covering the 2 s bucket


def make_clip_shard(directory: Path, clips: int, size: tuple[int, int], lengths_s: tuple = LENGTHS_S) -> Path:
    """One clip shard of ``clips`` samples (the ``lengths_s`` clips repeated under new keys)."""
    import json

    import webdataset as wds

    from curation.ffmpeg import run_ffmpeg
    from curation.sample_media import make_clip

    media = []
    for i, seconds in enumerate(lengths_s):
        mp4 = make_clip(directory / f"src{i}.mp4", [seconds / 2, seconds / 2], fps=25, size=size).path
        run_ffmpeg(["-i", str(mp4), "-vn", "-c:a", "flac", str(directory / f"src{i}.flac")])
        meta = {"start_s": 0.0, "end_s": seconds, "fps": 25, "width": size[0], "height": size[1]}
        media.append((mp4.read_bytes(), (directory / f"src{i}.flac").read_bytes(), json.dumps(meta).encode()))
    shard = directory / "clips" / "clips-00000.tar"
    shard.parent.mkdir()
    with wds.TarWriter(str(shard)) as sink:
        for n in range(clips):
            mp4, flac, meta = media[n % len(media)]
            sink.write({"__key__": f"clip{n:05d}", "mp4": mp4, "flac": flac, "json": meta,
                        "txt": f"synthetic test pattern number {n}".encode()})
    return shard.parent


def encode_latent_shard(clip_dir: Path, out_dir: Path) -> Path:
    """The latent DAG's work, inline: every clip encoded at its bucket into one latent shard."""
    from curation.shards import read_clip_shard
    from training.buckets import BucketConfig
    from training.clip_encoder import ClipEncoder, EncoderConfig
    from training.latent_shards import write_latent_shard

    encoder, buckets = ClipEncoder(EncoderConfig()), BucketConfig()
    samples = [encoder.encode(s, buckets) for shard in sorted(clip_dir.glob("*.tar")) for s in read_clip_shard(shard)]
    write_latent_shard(out_dir / "latents-00000.tar", samples)
    return out_dir


def loader_rate(shards: Path, source: str, batch: int, batches: int) -> float:
    from training.loader import LatentLoader, LoaderConfig

    loader = LatentLoader(LoaderConfig(shards=str(shards), source=source, batch_size=batch), 0, 1)
    next(loader)  # warm-up: the clips source builds its encoder on first use
    start = time.perf_counter()
    for _ in range(batches):
        next(loader)
    return batches * batch / (time.perf_counter() - start)


def step_rate(shards: Path, batch: int, steps: int, device: str) -> float:
    from model.conditioning import Conditioning
    from model.dit import DualDiT
    from model.flow_matching import FlowMatchingConfig, flow_matching_loss
    from model.presets import get_preset
    from training.loader import LatentLoader, LoaderConfig

    torch.manual_seed(0)
    model = DualDiT(get_preset("debug")).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    b = next(LatentLoader(LoaderConfig(shards=str(shards), batch_size=batch), 0, 1))
    video, audio = b["video"].to(device), b["audio"].to(device)
    cond = Conditioning(b["text_emb"].to(device), b["text_mask"].to(device))

    def step(i: int) -> None:
        out = flow_matching_loss(model, video, audio, cond, FlowMatchingConfig(),
                                 generator=torch.Generator().manual_seed(i))
        opt.zero_grad()
        out.total.backward()
        opt.step()

    step(-1)  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for i in range(steps):
        step(i)
    if device == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--size", default="320x180", help="source clip WxH (decoding cost grows with it)")
    ap.add_argument("--latent-batches", type=int, default=50)
    ap.add_argument("--clip-batches", type=int, default=4)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1, help="torch threads for everything timed")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    size = tuple(int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        clip_dir = make_clip_shard(Path(tmp), args.clips, size)
        latent_dir = encode_latent_shard(clip_dir, Path(tmp) / "latents")
        step = step_rate(latent_dir, args.batch, args.steps, args.device)
        latents = loader_rate(latent_dir, "latents", args.batch, args.latent_batches)
        clips = loader_rate(clip_dir, "clips", args.batch, args.clip_batches)
    print(f"{args.clips} clips {args.size} -> bucket 2s_64x112, batch {args.batch}, {args.threads} thread(s), "
          f"step on {args.device}")
    print(f"debug DiT train step : {step:9.1f} samples/s")
    print(f"latents source       : {latents:9.1f} samples/s = {latents / step:6.1f}x the step's need (target >= 5x)")
    print(f"clips source         : {clips:9.1f} samples/s = {clips / step:6.2f}x the step's need")


if __name__ == "__main__":
    main()
