"""Does alignment make clips the judges prefer? The whole loop, measured by the judge panel.

    PYTHONPATH=. python benchmarks/align_winrate.py [--work DIR] [--seed 0] [--align-steps 60]
        [--eval-every 20] [--reward-steps 300] [--fractions 0.5,0.25] [--flaw 2.0] [--judge-only]
        [--recipe latent_cpu|media_cpu] [--set grpo.kl_beta=0.1 ...] [--reward-set model.media.bound=2 ...]
        [--runs clean,control,flaw] [--tag NAME] [--reuse-reward] [--group-size 4] [--train-subjects 3]
        [--optimise overall]

One seed of ``benchmarks.judged_loop`` (every stage through the ``tandem`` CLI, debug preset,
CPU): rollouts of the base model judged by the panel, a reward model trained on the panel's
rankings (``--recipe``: latent_cpu reads the latents, media_cpu the decoded clips), then four
``tandem align`` runs from the same base checkpoint:

- ``clean``: against the reward model's ``overall`` head (lr 1e-2);
- ``control``: the same at lr 0 (the judges must find it a coin toss: 50 % in its interval);
- ``flaw``: the reward model plus ``--flaw`` x brightness (a reward that also likes a bright
  picture, which the judges do not): the panel's win rate falls while the reward rises, and
  ``reward.grpo.align.HackingMonitor`` fed the win rate as its held-out head must say so;
- one more clean run per extra ``--fractions`` value (timestep subsampling: the share of each
  trajectory's steps the update trains).

Printed: the reward model's held-out accuracy per head against the panel (prompts of
unseen combinations and values), then per run and evaluation step the optimised reward, the
reward model's own score, and the panel's win rate over step 0's clips (same prompts, same
noise) per prompt split with a bootstrap 95 % interval; the steps where the monitor fires;
the median step's CPU seconds split into rollout, reward and update. Numbers depend on the
machine's load only through the seconds.

To compare align settings on one reward model (choosing them), ``--reuse-reward`` keeps the
reward model already trained in ``--work`` (same seed and reward settings), ``--runs clean``
skips the control and the flaw (a reported run keeps all three) and ``--tag`` names the runs
(``align-clean-TAG``) so that several settings share the work directory.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.judged_loop import (  # noqa: E402
    REWARD_KEY,
    LoopConfig,
    Timer,
    align,
    hacking_alerts,
    judge_run,
    print_accuracy,
    print_run,
    reward_model,
    setup,
    step_costs,
)


def plan_runs(lr: float, flaw: float, names: str = "clean,control,flaw", fractions: str = "",
              tag: str = "") -> dict[str, tuple]:
    """run name -> (lr, extra reward sources, its own overrides): the chosen ``names`` of clean,
    control and flaw, one clean run per timestep fraction, every name suffixed ``-tag``."""
    runs = {"clean": (lr, None, []), "control": (0.0, None, []),
            "flaw": (lr, {"bright": {"source": "brightness", "coefficient": flaw}}, [])}
    runs = {k: v for k, v in runs.items() if k in names.split(",")}
    for f in filter(None, fractions.split(",")):
        runs[f"tf{f}"] = (lr, None, [f"grpo.timestep_fraction={f}"])
    return {f"{k}-{tag}" if tag else k: v for k, v in runs.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", help="work directory (default: a temporary one)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--align-steps", type=int, default=60)
    ap.add_argument("--eval-every", type=int, default=20)
    ap.add_argument("--reward-steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--flaw", type=float, default=2.0, help="brightness coefficient of the flawed reward")
    ap.add_argument("--fractions", default="", help="extra clean runs at these grpo.timestep_fraction values")
    ap.add_argument("--threshold", type=float, default=0.1, help="win-rate fall that raises the alert")
    ap.add_argument("--recipe", default="latent_cpu", help="reward recipe: latent_cpu or media_cpu")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="an override of every align run (repeatable), e.g. grpo.kl_beta=0.1")
    ap.add_argument("--reward-set", action="append", default=[], metavar="KEY=VALUE",
                    help="an override of the reward model's training (repeatable), e.g. model.media.bound=2")
    ap.add_argument("--group-size", type=int, default=4, help="base rollouts per prompt the panel ranks")
    ap.add_argument("--train-subjects", type=int, default=3, help="subjects x 8 combinations = training prompts")
    ap.add_argument("--optimise", default="overall", help="reward model heads alignment optimises (comma-separated)")
    ap.add_argument("--runs", default="clean,control,flaw", help="which of the three runs (a reported run: all)")
    ap.add_argument("--tag", default="", help="suffix of the runs' names, to keep several settings in one --work")
    ap.add_argument("--reuse-reward", action="store_true",
                    help="use the reward model already in --work (trained with the same seed and --reward-set)")
    ap.add_argument("--judge-only", action="store_true",
                    help="print the figures of the runs already in --work (same seed and sizes) without running them")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    work = args.work or tempfile.mkdtemp(prefix="align_winrate_")
    cfg = LoopConfig(work=work, seed=args.seed, reward_steps=args.reward_steps, align_steps=args.align_steps,
                     eval_every=args.eval_every, lr=args.lr, reward_recipe=args.recipe,
                     reward_overrides=list(args.reward_set), group_size=args.group_size,
                     train_subjects=args.train_subjects, optimise=tuple(args.optimise.split(",")))
    timer = Timer()
    reward_json = Path(work) / f"reward-{REWARD_KEY}" / "model" / "reward.json"
    if args.judge_only or (args.reuse_reward and reward_json.is_file()):
        metrics = json.loads(reward_json.read_text())["metrics"]
    else:
        metrics = reward_model(cfg, timer)["metrics"]
    paths = setup(cfg)
    runs = plan_runs(cfg.lr, args.flaw, args.runs, args.fractions, args.tag)
    results = {}
    for name, (lr, extra, overrides) in runs.items():
        cfg.align = [*args.set, *overrides]  # every run: --set, then the run's own
        with timer(f"align {name}"):
            storage = paths["work"] / f"align-{name}" if args.judge_only else align(cfg, paths, name, lr, extra)
        if not (storage / "progress.jsonl").is_file():
            continue
        results[name] = (judge_run(cfg, storage, paths), step_costs(storage))
    print(f"\n== seed {args.seed}, work {work}")
    print_accuracy(metrics)
    for name, (evaluations, costs) in results.items():
        print_run(name, evaluations, costs)
        print(f"{name:>8} hacking alerts (panel win rate as the held-out head, threshold "
              f"{args.threshold}): steps {hacking_alerts(evaluations, threshold=args.threshold) or 'none'}")
    print("wall seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in timer.split.items()))


if __name__ == "__main__":
    main()
