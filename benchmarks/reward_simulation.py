"""How well does the latent reward model learn what simulated annotators prefer?

    PYTHONPATH=. python benchmarks/reward_simulation.py [--seeds 0,1,2] [--work DIR]

Per seed k (CPU, ``latent_cpu`` recipe, the same run as tests/reward/test_reward_training.py,
which is seed 0): 400 simulated rollouts (``reward.annotation.simulate``: 50 prompts, groups of 8)
that vary exposure, drift speed and how muffled their sound is, latents from the debug VAEs;
annotators rank each group on visual_quality, motion, audio_quality and overall with 15 % of
their judgements flipped and ties below a 0.1 quality difference; the reward model trains on
those rankings, a quarter of the prompts held out by hashed group. Held out, it is scored
against the careful annotators' consensus (the same judges without the flips).

Seeds: rollouts 100k, rankings 100k+1, consensus 100k+2; the reward model's own seed (initial
weights, batch order) k. Printed per head and seed: held-out accuracy without ties and with ties
(at the calibrated tie threshold), their range over the seeds, and the minutes per seed.

A seed already run in ``--work`` (``seedK/run/model/reward.json``, the saved model with its
held-out metrics) is read back, not rerun: seeds can run as separate processes on one machine,
and a last call with all of them prints them together.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

AXES = ("visual_quality", "motion", "audio_quality", "overall")
NOISE = 0.15  # share of the annotators' non-tied judgements flipped
SEED_STRIDE = 100  # seed k draws every simulation seed of seed 0 plus 100k


def simulated_rankings(work: Path, heads, seed: int, sim) -> dict:
    """Rollouts under ``work/rollouts``, the noisy annotators' rankings of them under
    ``work/rankings`` and the held-out groups' consensus (no flips) under ``work/consensus``;
    returns the rollouts' metadata, the held-out ones and the noisy rankings."""
    from reward.annotation.rankings import write_rankings
    from reward.annotation.simulate import make_rollouts, simulate_rankings
    from reward.scoring.pairs import is_heldout_group

    base = SEED_STRIDE * seed
    metas = make_rollouts(work / "rollouts", groups=50, per_group=8, seed=base, cfg=sim)
    heldout = [m for m in metas if is_heldout_group(m["group_id"], 0.25)]
    noisy = simulate_rankings(metas, heads, noise=NOISE, seed=base + 1)
    write_rankings(noisy, work / "rankings")
    write_rankings(simulate_rankings(heldout, heads, noise=0.0, seed=base + 2), work / "consensus")
    return {"metas": metas, "heldout": heldout, "noisy": noisy}


def train_on_simulation(work: Path, heads, seed: int, overrides=()):
    """The ``latent_cpu`` reward model trained on ``work``'s rankings and scored on its consensus."""
    from pipelines.reward_cmd import load_reward_recipe
    from reward.scoring.train import train_reward

    cfg = load_reward_recipe("latent_cpu", [f"storage={work / 'run'}", f"model.heads=[{','.join(heads)}]",
                                            f"seed={seed}", *overrides])
    return train_reward(cfg, work / "rankings", [work / "rollouts"], heldout_rankings=work / "consensus")


def saved_metrics(work: Path) -> dict | None:
    """The held-out metrics of the reward model a finished run saved in ``work``, or None."""
    meta = work / "run" / "model" / "reward.json"
    return json.loads(meta.read_text())["metrics"] if meta.is_file() else None


def heldout_accuracy(metrics: dict, heads) -> dict[str, tuple[float, float]]:
    """head -> (held-out accuracy without ties, with ties)."""
    return {h: (metrics[f"heldout/{h}/accuracy_without_ties"], metrics[f"heldout/{h}/accuracy_with_ties"])
            for h in heads}


def print_accuracy_table(title: str, by_seed: dict[int, dict[str, tuple[float, float]]], heads) -> None:
    print(title)
    print(f"{'head':<17} {'seed':>5} {'w/o ties':>9} {'w/ ties':>8}")
    for head in heads:
        for seed, acc in by_seed.items():
            print(f"{head:<17} {seed:>5} {100 * acc[head][0]:>8.1f}% {100 * acc[head][1]:>7.1f}%")
        lo_hi = [(min(100 * a[head][i] for a in by_seed.values()), max(100 * a[head][i] for a in by_seed.values()))
                 for i in (0, 1)]
        print(f"{head:<17} {'range':>5} {lo_hi[0][0]:>4.0f}-{lo_hi[0][1]:.0f}% {lo_hi[1][0]:>3.0f}-{lo_hi[1][1]:.0f}%")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--work", help="work directory (default: a temporary one); one subfolder per seed")
    args = ap.parse_args()
    import torch

    from reward.annotation.simulate import SimulationConfig

    torch.set_num_threads(2)  # as the test: the VAEs encode 400 clips
    work = Path(args.work or tempfile.mkdtemp(prefix="reward_simulation_"))
    sim = SimulationConfig(event=False, prompt_mix=False)
    by_seed, minutes = {}, {}
    for seed in map(int, args.seeds.split(",")):
        t0, here = time.monotonic(), work / f"seed{seed}"
        metrics = saved_metrics(here)
        if metrics is None:
            simulated_rankings(here, AXES, seed, sim)
            metrics = train_on_simulation(here, AXES, seed).metrics
            minutes[seed] = round((time.monotonic() - t0) / 60, 1)
        else:
            minutes[seed] = "read back"
        by_seed[seed] = heldout_accuracy(metrics, AXES)
        print(f"seed {seed}:", minutes[seed], "" if minutes[seed] == "read back" else "min", flush=True)
    print_accuracy_table(f"\nreward model (latent_cpu) vs simulated annotators' consensus on held-out prompts; "
                         f"seeds {args.seeds}; work {work}", by_seed, AXES)
    print("minutes per seed (rollouts, rankings, training):", minutes)


if __name__ == "__main__":
    main()
