"""How well do the heads on pretrained nets (av_sync on the SyncNet, prompt_alignment on the
text-match net) learn what simulated annotators prefer, and how far off is the SyncNet?

    PYTHONPATH=. python benchmarks/pretrained_heads.py [--seeds 0,1,2] [--work DIR]

Per seed k (CPU, the same run as tests/reward/test_pretrained_heads.py, which is seed 0): the
SyncNet on latents pretrains on 400 in-sync clips of other scenes (``make_footage``, 4 shifted
windows each, a fifth of the files held out) and the text-match net on 400 captioned clips of
other scenes (``make_captioned_shards``, 1500 steps, a tenth held out); then the ``latent_cpu``
reward model (100 steps, heads av_sync and prompt_alignment, reading only the frozen nets) is
calibrated on 400 simulated rollouts that vary both the buzz's lag behind the light and how much
of the picture shows the prompt's look, ranked by annotators with 15 % flips (``reward_simulation``).

Seeds: footage 100k+10, captioned clips 100k+11, rollouts 100k, rankings 100k+1, consensus
100k+2; the nets' and the reward model's own seeds k. Printed per seed: the SyncNet's median
error on held-out footage (ms), how often a held-out captioned clip scores higher with its own
caption, and each head's held-out accuracy without and with ties against the consensus; then
the ranges over the seeds and the minutes per seed. A seed already run in ``--work`` is read back
from what it saved (the nets' json and the reward model's ``reward.json``), as in
``reward_simulation``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.reward_simulation import (  # noqa: E402
    SEED_STRIDE,
    heldout_accuracy,
    print_accuracy_table,
    saved_metrics,
    simulated_rankings,
    train_on_simulation,
)

HEADS = ("av_sync", "prompt_alignment")


def pretrain_nets(work: Path, seed: int, sim) -> tuple[dict, dict]:
    """The SyncNet under ``work/sync`` and the text-match net under ``work/text``, each
    pretrained on simulated clips of its own; returns their metrics."""
    from reward.annotation.simulate import make_captioned_shards, make_footage
    from reward.scoring.sync_pretrain import SyncPretrainConfig, pretrain_sync
    from reward.scoring.text_pretrain import TextPretrainConfig, pretrain_text

    base = SEED_STRIDE * seed
    make_footage(work / "footage", 400, seed=base + 10, cfg=sim)
    sync = pretrain_sync(SyncPretrainConfig(window_s=sim.duration_s, max_offset_s=sim.max_offset_s, seed=seed),
                         [work / "footage"], work / "sync")
    make_captioned_shards(work / "captioned", 400, seed=base + 11, cfg=sim)
    text = pretrain_text(TextPretrainConfig(steps=1500, seed=seed), [work / "captioned"], work / "text")
    return sync, text


def train_heads(work: Path, seed: int):
    """The reward model's av_sync and prompt_alignment heads on ``work``'s pretrained nets."""
    return train_on_simulation(work, HEADS, seed, ["steps=100", f"model.latent.sync_net={work / 'sync'}",
                                                   f"model.latent.text_net={work / 'text'}"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--work", help="work directory (default: a temporary one); one subfolder per seed")
    args = ap.parse_args()
    import torch

    from reward.annotation.simulate import SimulationConfig

    torch.set_num_threads(2)  # as the test: the VAEs encode thousands of clips
    work = Path(args.work or tempfile.mkdtemp(prefix="pretrained_heads_"))
    sim = SimulationConfig()
    nets, by_seed, minutes = {}, {}, {}
    for seed in map(int, args.seeds.split(",")):
        t0, here = time.monotonic(), work / f"seed{seed}"
        metrics = saved_metrics(here)
        if metrics is None:
            nets[seed] = pretrain_nets(here, seed, sim)
            simulated_rankings(here, HEADS, seed, sim)
            metrics = train_heads(here, seed).metrics
            minutes[seed] = round((time.monotonic() - t0) / 60, 1)
        else:
            nets[seed] = tuple(json.loads((here / net / f"{net}_net.json").read_text())["metrics"] for net in ("sync", "text"))
            minutes[seed] = "read back"
        by_seed[seed] = heldout_accuracy(metrics, HEADS)
        print(f"seed {seed}:", minutes[seed], "" if minutes[seed] == "read back" else "min", flush=True)
    print(f"\npretrained nets on held-out simulated clips; seeds {args.seeds}; work {work}")
    print(f"{'seed':>4} {'SyncNet median error':>21} {'within 40 ms':>13} {'own caption wins':>17}")
    for seed, (sync, text) in nets.items():
        print(f"{seed:>4} {sync['heldout/median_error_ms']:>18.0f} ms {100 * sync['heldout/within_40ms']:>12.0f}% "
              f"{100 * text['heldout/own_caption_wins']:>16.0f}%")
    errors = [sync["heldout/median_error_ms"] for sync, _ in nets.values()]
    print(f"{'range':>4} {min(errors):>15.0f}-{max(errors):.0f} ms")
    print_accuracy_table("\nheads on the pretrained nets vs the annotators' consensus on held-out prompts",
                         by_seed, HEADS)
    print("minutes per seed (footage, pretraining, rollouts, calibration):", minutes)


if __name__ == "__main__":
    main()
