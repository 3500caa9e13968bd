"""Where one DanceGRPO step's time goes: rollout, reward, update, side by side in one run.

    python benchmarks/align_step.py [--steps 5] [key=value ...]    # CPU, debug preset, one rank
    python benchmarks/align_step.py --cuda [--steps 5] [key=value ...]   # 1b preset, bf16, one GPU

The alignment trainer (reward/grpo/align.py) on a one-rank DeepSpeed ZeRO-2 engine in this
process, with the ``align_debug_cpu`` recipe (``key=value`` overrides it: ``grpo.group_size=8``,
``grpo.sampling_steps=16``...). After one warm-up step, each timed step is split into

- rollout: G SDE trajectories per prompt (``sampling_steps`` forwards of the whole batch);
- reward: decoding the final latents (video VAE, audio VAE + vocoder) and scoring every head;
- update: ``timestep_fraction`` of the steps, forward + backward per trained transition;

printed as seconds and shares of the step (medians), with the cost of one transition in the
rollout (forward only) vs the update (forward + backward, expected ~3x) as the side-by-side
ratio. Tokens/s count video + audio tokens of every transition processed.

--cuda: the ``1b`` preset in bf16 on one GPU with a 2 s 256x256 24 fps sequence and the base
VAEs (random weights: the decode cost is real, the rewards are not): rollout tokens/s and the
update's MFU (model/flops.py FLOPs, x2 with classifier-free guidance, which trains both passes;
peak from training.trainer.PEAK_TFLOPS). Not measured on the machines this was written on.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CUDA_RECIPE = ["preset=1b", "engine.precision=bf16", "encoder.video_preset=base", "encoder.audio_preset=base",
               "encoder.text_dim=4096", "sequence.duration_s=2.0", "sequence.fps=24", "sequence.height=256",
               "sequence.width=256", "grpo.sampling_steps=16", "eval.every=0", "workers.use_gpu=true"]


def one_rank() -> None:
    from training.local_ranks import join_local_world

    join_local_world()


def measure(overrides: list[str], steps: int):
    """(aligner, per-step metrics of the timed steps) after one warm-up step."""
    from pipelines.align_cmd import load_align_recipe
    from reward.grpo.align import Aligner

    one_rank()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_align_recipe("debug_cpu", [f"storage={tmp}", f"steps={steps + 1}", "eval.every=0",
                                              f"checkpoint_every={10**9}", *overrides])
        aligner = Aligner(cfg)
        aligner.train_step()  # warm-up: allocations, lazy init
        return aligner, [aligner.train_step() for _ in range(steps)]


def report(aligner, history: list[dict]) -> dict[str, float]:
    from model.flops import train_flops

    cfg, g = aligner.cfg, aligner.cfg.grpo
    seq = cfg.sequence
    split = {k: statistics.median(m[f"{k}_s"] for m in history) for k in ("rollout", "reward", "update")}
    total = sum(split.values())
    n, tokens = g.samples_per_rank, seq.video_tokens + seq.audio_tokens
    passes = 2 if (g.video_guidance != 1 or g.audio_guidance != 1) else 1
    rollout_transitions = n * g.sampling_steps
    trained = statistics.median(m["trained_frac"] for m in history) * n * g.train_steps
    print(f"{cfg.preset} preset, {n} samples (G={g.group_size}), {g.sampling_steps} SDE steps, "
          f"{g.train_steps} trained per sample, {tokens} tokens per sample, {len(history)} timed steps")
    for k, v in split.items():
        print(f"  {k:8s} {v:8.3f} s  {100 * v / total:5.1f} %")
    per_rollout = split["rollout"] / rollout_transitions
    per_update = split["update"] / max(trained, 1)
    print(f"  one transition: rollout {1e3 * per_rollout:.1f} ms, update {1e3 * per_update:.1f} ms "
          f"= {per_update / per_rollout:.2f}x (forward + backward vs forward, ~3x expected)")
    out = {"rollout_tokens_per_s": rollout_transitions * tokens / split["rollout"],
           "update_tokens_per_s": trained * tokens / split["update"]}
    print(f"  rollout {out['rollout_tokens_per_s']:,.0f} tokens/s, update {out['update_tokens_per_s']:,.0f} tokens/s")
    text_tokens = aligner.cond.text_emb.shape[1]
    flops = trained * passes * train_flops(aligner.model_cfg, seq.video_tokens, seq.audio_tokens, text_tokens)
    out["update_flops_per_s"] = flops / split["update"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--cuda", action="store_true", help="1b preset, bf16, one GPU: tokens/s and MFU")
    ap.add_argument("overrides", nargs="*", help="key=value overrides of the align_debug_cpu recipe")
    args = ap.parse_args()
    if args.cuda and not torch.cuda.is_available():
        raise SystemExit("--cuda needs a GPU")
    if not args.cuda:
        torch.set_num_threads(1)
    aligner, history = measure((CUDA_RECIPE if args.cuda else []) + args.overrides, args.steps)
    out = report(aligner, history)
    if args.cuda:
        from training.trainer import PEAK_TFLOPS

        name = torch.cuda.get_device_name()
        peak = next((v for k, v in PEAK_TFLOPS.items() if k in name), 0.0) * 1e12
        mfu = f"{100 * out['update_flops_per_s'] / peak:.1f} %" if peak else "n/a (unknown peak)"
        print(f"{name}: update MFU {mfu}, peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
