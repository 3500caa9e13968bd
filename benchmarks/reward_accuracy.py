"""How well does a reward model trained on the panel's rankings agree with the panel on new prompts?

    PYTHONPATH=. python benchmarks/reward_accuracy.py [--seeds 0,1,2] [--reward-steps 300] [--work DIR] \
        [--recipe latent_cpu|media_cpu]

Per seed (``benchmarks.judged_loop``, every stage through the ``tandem`` CLI, debug preset,
CPU): a fresh base model (seeded) generates 4 clips per training prompt and per evaluation
prompt; the judge panel (``benchmarks.judges``, seeded) judges every pair of each prompt's
clips on colour, sound and overall in Label Studio's export shape; ``tandem annotate import``
and ``tandem reward train`` (``--recipe``: latent_cpu reads the generator's latents, media_cpu
the decoded clips; heads colour, sound, overall) fit the reward model on the training prompts'
rankings only. Held out: the evaluation prompts' rankings
(subjects never trained on, colour-pitch combinations never trained on, and colours / pitches
never named in training).

Printed per head: accuracy without ties (the panel's non-tied judgements) and with ties (at
the calibrated tie threshold) per seed and their mean, and the ceiling: how often the panel's
own noiseless rule (the misfits it perceives, before noise; 50/50 weights for overall) agrees
with the panel's non-tied judgements, i.e. how noisy the labels are; and the accuracy on the
training rankings themselves (how well the model fits what it saw). Then, per evaluation split
(``benchmarks.judged_prompts``: held-out combinations of seen values; prompts naming a value never
named in training), the saved model's accuracy without ties on that split's judgements: a
model that knows words only from the rankings cannot know a word it never saw.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.judged_loop import REWARD_KEY, LoopConfig, Timer, reward_model  # noqa: E402
from benchmarks.judges import AXES, percepts_of_rollouts  # noqa: E402


def rule_ceiling(rankings: Path, rollouts: Path) -> dict[str, float]:
    """Per axis: accuracy of the panel's noiseless rule on its own non-tied judgements."""
    from reward.annotation.rankings import read_rankings
    from reward.rollouts.rollout_dir import read_rollouts

    percepts = percepts_of_rollouts(rollouts)
    prompts = {r.sample_id: r.prompt for r in read_rollouts(rollouts)}
    hits: dict[str, list[bool]] = {a: [] for a in AXES}
    for row in read_rankings(rankings):
        if row["outcome"] == "tie":
            continue
        a, b = (percepts[row[k]].misfit(prompts[row[k]]) for k in ("item_a", "item_b"))
        if row["axis"] == "overall":
            fa, fb = (a["colour"] + a["sound"]) / 2, (b["colour"] + b["sound"]) / 2
        else:
            fa, fb = a[row["axis"]], b[row["axis"]]
        hits[row["axis"]].append((fa < fb) == (row["outcome"] == "a"))
    return {a: sum(h) / len(h) for a, h in hits.items() if h}


def split_accuracy(model_dir: Path, rankings: Path, rollouts: Path) -> dict[str, dict[str, float]]:
    """split -> axis -> accuracy without ties of the saved reward model on that split's judgements."""
    from benchmarks.judged_prompts import eval_prompts
    from reward.annotation.rankings import read_rankings
    from reward.scoring.clip_store import find_clips, score_clip_files
    from reward.scoring.reward_model import load_reward_model

    clips = find_clips([rollouts])
    scores = dict(zip([c.id for c in clips], score_clip_files(load_reward_model(model_dir), clips), strict=True))
    prompt_split = {p: split for split, prompts in eval_prompts().items() for p in prompts}
    prompts = {c.id: c.prompt for c in clips}
    hits: dict[str, dict[str, list[bool]]] = {}
    for row in read_rankings(rankings):
        if row["outcome"] == "tie" or row["item_a"] not in scores or row["item_b"] not in scores:
            continue
        a, b = scores[row["item_a"]][row["axis"]], scores[row["item_b"]][row["axis"]]
        split = prompt_split.get(prompts[row["item_a"]], "other")
        hits.setdefault(split, {}).setdefault(row["axis"], []).append((a > b) == (row["outcome"] == "a"))
    return {split: {axis: sum(h) / len(h) for axis, h in by_axis.items()} for split, by_axis in hits.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--reward-steps", type=int, default=300)
    ap.add_argument("--train-subjects", type=int, default=3)
    ap.add_argument("--work", help="work directory (default: a temporary one); one subfolder per seed")
    ap.add_argument("--recipe", default="latent_cpu", help="reward recipe: latent_cpu (latents) or media_cpu (decoded clips)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    work = Path(args.work or tempfile.mkdtemp(prefix="reward_accuracy_"))
    table: dict[str, dict[int, tuple[float, ...]]] = {a: {} for a in AXES}
    splits: dict[int, dict[str, dict[str, float]]] = {}
    timer = Timer()
    for seed in map(int, args.seeds.split(",")):
        cfg = LoopConfig(work=str(work / f"seed{seed}"), seed=seed, reward_steps=args.reward_steps,
                         train_subjects=args.train_subjects, reward_recipe=args.recipe)
        out = reward_model(cfg, timer)
        splits[seed] = split_accuracy(Path(cfg.work) / f"reward-{REWARD_KEY}" / "model", out["heldout_rankings"],
                                      out["heldout_rollouts"])
        ceiling = rule_ceiling(out["heldout_rankings"], out["heldout_rollouts"])
        for axis in AXES:
            m = out["metrics"]
            table[axis][seed] = (m[f"heldout/{axis}/accuracy_without_ties"], m[f"heldout/{axis}/accuracy_with_ties"],
                                 ceiling.get(axis, float("nan")), m.get(f"train/{axis}/accuracy_without_ties", float("nan")))
    print(f"\nreward model ({args.recipe}, {args.reward_steps} steps) vs the judge panel on held-out prompts; "
          f"seeds {args.seeds}; work {work}")
    print(f"{'head':<8} {'seed':>5} {'w/o ties':>9} {'w/ ties':>8} {'rule ceiling':>13} {'train w/o ties':>15}")
    widths = (8, 7, 12, 14)
    for axis in AXES:
        for seed, row in table[axis].items():
            print(f"{axis:<8} {seed:>5} " + " ".join(f"{100 * v:{w}.1f}%" for v, w in zip(row, widths, strict=True)))
        cols = list(zip(*table[axis].values(), strict=True))
        print(f"{axis:<8} {'mean':>5} " + " ".join(f"{100 * statistics.mean(c):{w}.1f}%" for c, w in zip(cols, widths, strict=True)))
    print("\nper evaluation split, accuracy without ties (seed: colour / sound / overall)")
    for seed, by_split in splits.items():
        for split, acc in sorted(by_split.items()):
            print(f"  seed {seed} {split:<22} " + " / ".join(f"{100 * acc.get(a, float('nan')):5.1f}%" for a in AXES))
    print("wall seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in timer.split.items()))


if __name__ == "__main__":
    main()
