"""The whole alignment loop, driven through the ``tandem`` CLI and measured by the judge panel.

    base checkpoint (a seeded, fresh debug DiT)
    -> tandem generate            rollouts of the training prompts (and of the evaluation prompts)
    -> tandem annotate tasks      pairwise tasks, axes colour, sound, overall
    -> the panel judges them      a Label Studio JSON export (benchmarks.judges.judge_tasks)
    -> tandem annotate import     rankings.parquet
    -> tandem reward train        a latent reward model, registered as tandem-reward@judged
    -> tandem align               DanceGRPO against it (and an lr = 0 control, and a planted flaw)
    -> the panel compares         each evaluation's clips with step 0's (the same prompts and
                                  noise): win rate with a bootstrap interval, beside the reward
                                  model's own score; reward.grpo.align.HackingMonitor reads the two.

Everything runs in this process through ``pipelines.cli.main`` (one local Ray instance), with
MLflow in a SQLite store under the work directory. Used by benchmarks/align_winrate.py,
benchmarks/reward_accuracy.py and tests/reward/test_judged_loop.py.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from benchmarks.judged_prompts import eval_prompts, train_prompts
from benchmarks.judges import (
    AXES,
    Percept,
    WinRate,
    judge_tasks,
    make_panel,
    percepts_of_rollouts,
    win_rate,
)

ROOT = Path(__file__).resolve().parents[1]
SEQUENCE = {"duration_s": 0.36, "fps": 25.0, "height": 16, "width": 16}  # align's debug sequence
REWARD_KEY = "judged"  # the reward model's key in the align recipe: heads judged.<axis>


@dataclass
class LoopConfig:
    work: str
    seed: int = 0
    group_size: int = 4  # rollouts per prompt for the reward model's rankings
    train_subjects: int = 3  # x 8 colour-pitch combinations = training prompts
    panel_size: int = 5
    judges_per_task: int = 3
    reward_steps: int = 300
    align_steps: int = 60
    eval_every: int = 20
    eval_samples: int = 4  # per evaluation prompt: pairs compared with step 0
    lr: float = 1e-2
    reward_recipe: str = "latent_cpu"  # or media_cpu: the backbone on decoded clips
    reward_overrides: list = field(default_factory=list)  # extra key=value overrides of the reward training
    optimise: tuple = ("overall",)  # reward model heads alignment optimises
    align: list = field(default_factory=list)  # extra key=value overrides of every align run


def cli(*argv) -> None:
    from pipelines.cli import main

    code = main([str(a) for a in argv])
    if code != 0:
        raise RuntimeError(f"tandem {' '.join(map(str, argv[:2]))} exited {code}")


def setup(cfg: LoopConfig) -> dict[str, Path]:
    """The base checkpoint and the prompt files under ``cfg.work``; MLflow's store there."""
    import torch

    from model.checkpoint import save
    from model.dit import DualDiT
    from reward.grpo.align import AlignConfig, model_config

    work = Path(cfg.work).absolute()
    work.mkdir(parents=True, exist_ok=True)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
    paths = {"work": work, "base": work / "base.safetensors", "train": work / "train_prompts.txt",
             "eval": work / "eval_prompts.txt"}
    if not paths["base"].is_file():
        torch.manual_seed(cfg.seed)
        save(DualDiT(model_config(AlignConfig(preset="debug"))), paths["base"])
    paths["train"].write_text("\n".join(train_prompts(cfg.train_subjects)) + "\n")
    paths["eval"].write_text("\n".join(p for ps in eval_prompts().values() for p in ps) + "\n")
    return paths


def generate(cfg: LoopConfig, checkpoint: Path, prompts: Path, out: Path) -> Path:
    """``tandem generate`` with the sampler alignment starts from (8 steps, no guidance)."""
    seq = [f"rollout.sequence.{k}={v}" for k, v in SEQUENCE.items()]
    cli("generate", checkpoint, "--prompts", prompts, "--out", out, "--group-size", cfg.group_size,
        "rollout.steps=8", "rollout.video_guidance=1.0", "rollout.audio_guidance=1.0", f"rollout.seed={cfg.seed}", *seq)
    return out


def judged_rankings(cfg: LoopConfig, rollouts: Path, out: Path, seed: int) -> Path:
    """Pairwise tasks of ``rollouts`` -> the panel's Label Studio export -> ``tandem annotate import``."""
    cli("annotate", "tasks", rollouts, "--out", out / "tasks", "--axes", ",".join(AXES), f"seed={seed}")
    tasks = json.loads((out / "tasks" / "tasks.json").read_text())
    export = judge_tasks(tasks, percepts_of_rollouts(rollouts), make_panel(cfg.panel_size, cfg.seed), seed=seed,
                         judges_per_task=cfg.judges_per_task)
    (out / "export.json").write_text(json.dumps(export))
    cli("annotate", "import", out / "export.json", "--out", out / "rankings", "--tasks", out / "tasks",
        "--rollouts", rollouts)
    return out / "rankings"


def train_reward(cfg: LoopConfig, paths: dict, train_rankings: Path, heldout_rankings: Path | None,
                 rollouts: list[Path], alias: str = REWARD_KEY) -> dict:
    """``tandem reward train`` on the panel's rankings; its held-out metrics (metrics.json), on
    ``heldout_rankings`` or else on a fraction of the prompts (the recipe's holdout_fraction)."""
    storage = paths["work"] / f"reward-{alias}"
    heldout = ["--heldout-rankings", heldout_rankings] if heldout_rankings else []
    geometry = [f"model.latent.fps={SEQUENCE['fps']}"] if cfg.reward_recipe == "latent_cpu" else []
    cli("reward", "train", "--rankings", train_rankings, *heldout, "--rollouts", *rollouts, "--config", cfg.reward_recipe,
        "--alias", alias, f"model.heads=[{','.join(AXES)}]", *geometry, f"steps={cfg.reward_steps}",
        f"seed={cfg.seed}", f"storage={storage}", f"tracking_dir={paths['work']}", "eval_every=100000", *cfg.reward_overrides)
    from reward.scoring.reward_model import read_meta

    return read_meta(storage / "model")["metrics"]  # held-out and training metrics


def align(cfg: LoopConfig, paths: dict, name: str, lr: float, extra_rewards: dict | None = None,
          alias: str = REWARD_KEY) -> Path:
    """``tandem align`` from the base checkpoint against the reward model (plus ``extra_rewards``),
    every evaluation writing all of its clips; returns the run's storage."""
    recipe = yaml.safe_load((ROOT / "pipelines" / "recipes" / "align_debug_cpu.yaml").read_text())
    recipe["rewards"] = {REWARD_KEY: {"source": f"models:/tandem-reward@{alias}", "heads": list(cfg.optimise)},
                         **(extra_rewards or {})}
    storage = paths["work"] / f"align-{name}"
    storage.mkdir(parents=True, exist_ok=True)
    (storage.parent / f"align-{name}.yaml").write_text(yaml.safe_dump(recipe))
    n_eval = len(paths["eval"].read_text().split("\n")) - 1
    cli("align", "--config", storage.parent / f"align-{name}.yaml", f"init={paths['base']}", f"storage={storage}",
        f"tracking_dir={paths['work']}", f"steps={cfg.align_steps}", f"seed={cfg.seed}", f"engine.lr={lr}",
        f"prompts_file={paths['train']}", f"eval.prompts_file={paths['eval']}", f"eval.every={cfg.eval_every}",
        f"eval.samples_per_prompt={cfg.eval_samples}", f"eval.videos={n_eval * cfg.eval_samples}",
        f"checkpoint_every={cfg.align_steps}", "workers.num_workers=1", *cfg.align)
    return storage


def reward_model(cfg: LoopConfig, timer: Timer) -> dict:
    """Base rollouts (training and evaluation prompts) -> the panel's rankings -> ``tandem reward
    train`` on the training prompts' rankings; {"metrics": its held-out metrics (the evaluation
    prompts' rankings), "rollouts", "heldout_rollouts", "heldout_rankings"}."""
    paths = setup(cfg)
    with timer("generate"):
        rollouts = generate(cfg, paths["base"], paths["train"], paths["work"] / "rollouts")
        heldout = generate(cfg, paths["base"], paths["eval"], paths["work"] / "rollouts-eval")
    with timer("judge + import"):
        train = judged_rankings(cfg, rollouts, paths["work"] / "judged-train", seed=cfg.seed * 10 + 1)
        test = judged_rankings(cfg, heldout, paths["work"] / "judged-eval", seed=cfg.seed * 10 + 2)
    with timer("reward train"):
        metrics = train_reward(cfg, paths, train, test, [rollouts, heldout])
    return {"metrics": metrics, "rollouts": rollouts, "heldout_rollouts": heldout, "heldout_rankings": test}


def print_accuracy(metrics: dict) -> None:
    print("reward model vs the panel, held-out prompts (unseen combinations and values):")
    for axis in AXES:
        get = lambda k, a=axis: metrics.get(f"heldout/{a}/{k}", float("nan"))  # noqa: E731
        print(f"  {axis:<8} without ties {100 * get('accuracy_without_ties'):5.1f} %   with ties "
              f"{100 * get('accuracy_with_ties'):5.1f} %   ({get('judgements'):.0f} judgements; training "
              f"rankings: {100 * metrics.get(f'train/{axis}/accuracy_without_ties', float('nan')):.1f} % without ties)")


@dataclass
class Evaluation:
    step: int
    reward: float  # eval_reward_mean: what the run optimised (every optimised head, by coefficient)
    model_score: float  # the reward model's own mean score on the evaluation clips
    win: dict[str, WinRate]  # split -> the panel's win rate of this step's clips over step 0's
    rgb: tuple = ()  # mean colour of this step's clips (what the panel sees), and its spread
    rgb_std: tuple = ()
    shift: tuple = ()  # colour_shift(): (common, prompt-specific, toward the prompts' colours)


def colour_shift(now: np.ndarray, base: np.ndarray, prompts: list[str]) -> tuple[float, float, float]:
    """How the clips' mean colour moved from step 0's (same noise), ``now``/``base`` (N, 3) and
    each clip's prompt: (the length of the shift common to every prompt, the RMS length of what
    each prompt adds to it, and the mean cosine of that prompt-specific part with where the
    prompt's colour lies relative to the other prompts'). A policy that learns the prompts has a
    specific part pointing at their colours (cosine > 0); one that drifts every clip one way
    has a large common part only."""
    from benchmarks.judges import COLOURS, prompt_targets

    names = sorted(set(prompts))
    moved = np.array([(now - base)[[p == q for q in prompts]].mean(0) for p in names])
    common = moved.mean(0)
    specific = moved - common
    target = np.array([COLOURS[prompt_targets(p)[0]] for p in names])
    target = target - target.mean(0)
    cos = (specific * target).sum(1) / (np.linalg.norm(specific, axis=1) * np.linalg.norm(target, axis=1) + 1e-12)
    return (float(np.linalg.norm(common)), float(np.sqrt((specific**2).sum(1).mean())), float(cos.mean()))


def judge_run(cfg: LoopConfig, storage: Path, paths: dict) -> list[Evaluation]:
    """The panel compares every evaluation's clips with step 0's (same prompts, same noise)."""
    progress = [json.loads(line) for line in (storage / "progress.jsonl").read_text().splitlines()]
    evals = {m["step"]: m for m in progress if "eval_reward_mean" in m}
    prompts = [p for p in paths["eval"].read_text().splitlines() if p]
    splits = eval_prompts()
    panel = make_panel(cfg.panel_size, cfg.seed)

    def clips(step: int) -> list[Percept]:
        where = storage / "eval" / f"step{step:08d}"
        return [Percept.of_mp4(where / f"prompt{i:03d}_sample{j}.mp4")
                for i in range(len(prompts)) for j in range(cfg.eval_samples)]

    base = clips(0)
    shown = [p for p in prompts for _ in range(cfg.eval_samples)]
    out = []
    for step in sorted(evals):
        now = clips(step)
        win = {}
        for split, members in {**splits, "all": prompts}.items():
            idx = [k for k, p in enumerate(shown) if p in members]
            if step == 0:  # step 0's clips against themselves: 50 % by definition, nothing to judge
                win[split] = WinRate(0.5, 0.5, 0.5, len(idx), 0, 1.0)
                continue
            win[split] = win_rate([now[k] for k in idx], [base[k] for k in idx], [shown[k] for k in idx], panel,
                                  seed=cfg.seed * 1000 + step)
        heads = [k for k in evals[step] if k.startswith(f"eval_reward.{REWARD_KEY}") and k.endswith(".mean")]
        rgb = np.array([c.rgb for c in now])
        out.append(Evaluation(step, evals[step]["eval_reward_mean"], sum(evals[step][k] for k in heads) / len(heads),
                              win, tuple(round(float(x), 3) for x in rgb.mean(0)),
                              tuple(round(float(x), 3) for x in rgb.std(0)),
                              colour_shift(rgb, np.array([c.rgb for c in base]), shown)))
    return out


def hacking_alerts(evaluations: list[Evaluation], split: str = "all", threshold: float = 0.1) -> list[int]:
    """Steps at which ``reward.grpo.align.HackingMonitor`` flags hacking with the panel's win rate as
    its held-out head: the win rate fell ``threshold`` below its best while the optimised reward rose."""
    from reward.grpo.align import HackingConfig, HackingMonitor

    monitor = HackingMonitor(HackingConfig(threshold=threshold), {"judges": threshold})
    return [e.step for e in evaluations
            if monitor.check({"eval_reward_mean": e.reward, "eval_reward.judges.mean": e.win[split].rate})[0]]


def step_costs(storage: Path) -> dict[str, float]:
    """Median seconds of a step's rollout, reward and update (the run's progress.jsonl)."""
    import statistics

    rows = [json.loads(line) for line in (storage / "progress.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "update_s" in r][1:]  # the first step warms up
    return {k: statistics.median(r[f"{k}_s"] for r in rows) for k in ("rollout", "reward", "update")}


def print_run(name: str, evaluations: list[Evaluation], costs: dict[str, float] | None = None) -> None:
    for e in evaluations:
        wins = "  ".join(f"{split} {w}" for split, w in e.win.items())
        print(f"{name:>8} step {e.step:>4}  reward {e.reward:+.4f}  model score {e.model_score:+.4f}  judges: {wins}"
              f"  clips' mean RGB {e.rgb} (std {e.rgb_std})"
              + (f"  colour shift: common {e.shift[0]:.4f}, per prompt {e.shift[1]:.4f} (cos to the prompts' "
                 f"colours {e.shift[2]:+.2f})" if e.shift else ""))
    if costs:
        total = sum(costs.values())
        print(f"{name:>8} step cost: " + ", ".join(f"{k} {v:.2f} s ({100 * v / total:.0f} %)" for k, v in costs.items()))


class Timer:
    def __init__(self):
        self.split: dict[str, float] = {}

    def __call__(self, name: str):
        timer = self

        class _Span:
            def __enter__(self):
                self.start = time.perf_counter()

            def __exit__(self, *exc):
                timer.split[name] = timer.split.get(name, 0.0) + time.perf_counter() - self.start

        return _Span()
