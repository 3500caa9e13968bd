"""Reward throughput: clips scored per second by each kind of reward source, side by side on
the same clips.

    python benchmarks/reward_throughput.py [--clips 32] [--batch 8] [--size 64] [--threads 2]
    python benchmarks/reward_throughput.py --cuda   # also the omni backbone at its real size on a GPU

What it does: renders ``--clips`` simulated rollouts (``reward.annotation.simulate``: 2 s at 16 fps,
``--size`` pixels square, mono 16 kHz; latents from the debug VAEs, as ``tandem generate``
stores them), then times, after one warm-up batch, scoring them ``--batch`` at a time with

- ``latent``: the latent backbone of the ``latent_cpu`` recipe (dim 128, 3 blocks) on the
  stored latents (read from disk once, like alignment scoring fresh rollouts in memory);
- ``omni-tiny``: the omni backbone's whole path (frames -> vision patches, audio -> Whisper
  features, the interleaved sequence, a tiny random Qwen2.5-Omni thinker with LoRA) on the
  decoded clips: what the code costs around the model;
- ``loudness_clipping``, ``motion``: the metric heads on the decoded clips;
- ``decode``: decoding the mp4s alone (what every media source pays first);
- ``--cuda``: ``omni-7b``, the same path with Qwen2.5-Omni-7B's thinker shapes (random weights,
  bf16) on 5 s 480x832 clips at 24 fps held on the GPU (2 fps x 448x448 max to the vision
  encoder, as the omni_7b recipe), and ``latent`` on the GPU.

It prints clips/s and ms per clip for each, and each one's speed relative to ``latent``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

HEADS = ("visual_quality", "motion", "audio_quality", "av_sync", "prompt_alignment", "overall")


def timed(fn, batches) -> float:
    """Seconds for ``fn`` over every batch, after one warm-up call."""
    fn(batches[0])
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    for b in batches:
        fn(b)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def chunks(store, n: int, batch: int):
    return [store.collate(list(range(i, min(i + batch, n)))) for i in range(0, n, batch)]


def latent_model(device: str):
    from pipelines.reward_cmd import load_reward_recipe
    from reward.scoring.reward_model import RewardModel

    cfg = load_reward_recipe("latent_cpu").model
    return RewardModel(cfg).to(device).eval()


def omni_model(size: str, device: str, directory: Path):
    from reward.scoring.backbones.omni import OmniBackboneConfig, random_omni, save_random_omni
    from reward.scoring.reward_model import RewardModel, RewardModelConfig

    dtype = "bfloat16" if device == "cuda" else "float32"
    cfg = RewardModelConfig(backbone="omni", heads=HEADS,
                            omni=OmniBackboneConfig(dtype=dtype, max_pixels=448 * 448, fps=2.0))
    if size == "tiny":  # through the real loading path, from a local directory
        cfg.omni.model_path = str(save_random_omni(directory / "omni-tiny"))
        return RewardModel(cfg).to(device).eval()
    from reward.scoring.backbones.omni import OmniBackbone

    with torch.device(device):
        thinker, tokenizer, features = random_omni(size, dtype=getattr(torch, dtype))
    backbone = OmniBackbone(cfg.omni, HEADS, thinker=thinker, tokenizer=tokenizer, feature_extractor=features)
    return RewardModel(cfg, backbone=backbone).to(device).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cuda", action="store_true", help="add the omni backbone at its real size on a GPU")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from reward.annotation.simulate import SimulationConfig, make_rollouts
    from reward.scoring.clip_store import ClipStore, find_clips
    from reward.scoring.metric_heads import LoudnessClipping, Motion

    results: list[tuple[str, str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        print(f"rendering {args.clips} simulated rollouts ({args.size}x{args.size}, 2 s at 16 fps) ...", flush=True)
        make_rollouts(tmp / "rollouts", groups=max(1, args.clips // 4), per_group=4,
                      cfg=SimulationConfig(size=args.size))
        files = find_clips([tmp / "rollouts"])[: args.clips]
        n = len(files)
        latents = ClipStore(files, "latents")
        media = ClipStore(files, "media")
        start = time.perf_counter()
        media_batches = chunks(media, n, args.batch)
        results.append(("decode", "cpu", time.perf_counter() - start))
        latent_batches = chunks(latents, n, args.batch)

        model = latent_model("cpu")
        with torch.no_grad():
            results.append(("latent", "cpu", timed(model, latent_batches)))
            omni = omni_model("tiny", "cpu", tmp)
            results.append(("omni-tiny", "cpu", timed(omni, media_batches)))
        for source in (LoudnessClipping(), Motion()):
            results.append((source.name, "cpu", timed(source.score, media_batches)))
        if args.cuda:
            if not torch.cuda.is_available():
                sys.exit("--cuda: no CUDA device")
            from reward.scoring.reward_model import clips_to
            from reward.scoring.sources import Clips

            model = latent_model("cuda")
            gpu_latents = [clips_to(c, torch.device("cuda")) for c in latent_batches]
            with torch.no_grad():
                results.append(("latent", "cuda", timed(model, gpu_latents)))
                omni = omni_model("7b", "cuda", tmp)
                real = [Clips(prompts=["a drummer on a stage, evening light"] * args.batch,
                              video=torch.rand(args.batch, 3, 121, 480, 832, device="cuda") * 2 - 1,
                              audio=torch.randn(args.batch, 1, 80000, device="cuda") * 0.1, fps=24.0,
                              sample_rate=16000) for _ in range(max(1, n // args.batch))]
                results.append(("omni-7b", "cuda", timed(omni, real)))
                n_real = len(real) * args.batch
                results[-1] = ("omni-7b", "cuda", results[-1][2] * n / n_real)  # per-clip time on n clips

    base = next(s for name, dev, s in results if name == "latent" and dev == "cpu")
    print(f"\n{n} clips, batches of {args.batch}, {args.threads} CPU threads")
    print(f"{'source':<20}{'device':<8}{'clips/s':>10}{'ms/clip':>10}{'vs latent':>11}")
    for name, device, seconds in results:
        print(f"{name:<20}{device:<8}{n / seconds:>10.1f}{1000 * seconds / n:>10.1f}{base / seconds:>10.2f}x")


if __name__ == "__main__":
    main()
