"""Alignment learns: two ranks, DeepSpeed ZeRO-2, the debug preset from fresh weights. Mean
brightness of the decoded clips (fixed eval prompts and noise) rises within a couple of dozen
steps, while an lr = 0 control stays exactly flat; the held-out head that anticorrelates with
it (darkness) falls, so hacking_alert flips in the learning run and never in the control."""

from __future__ import annotations

import pytest

from tests.training.conftest import on_two_ranks

pytestmark = pytest.mark.slow  # two DeepSpeed ranks

STEPS, EVERY = 20, 10
RECIPE = [f"steps={STEPS}", f"eval.every={EVERY}", "checkpoint_every=1000", "eval.videos=0",
          "grpo.sampling_steps=6", "grpo.timestep_fraction=0.5",
          "rewards={brightness: {source: brightness}, "
          "darkness: {source: brightness, options: {target: 0.0}, optimise: false}}"]


class Recorder:
    run_id = tracking_uri = None

    def __init__(self):
        self.metrics: dict[int, dict] = {}

    def log_metrics(self, metrics, step=None):
        self.metrics.setdefault(step, {}).update(metrics)

    def log_params(self, params): ...
    def log_artifact(self, path, artifact_path=None): ...
    def set_tags(self, tags): ...
    def close(self, status="FINISHED"): ...


def align_twice(storage: str) -> dict[str, dict[int, dict]]:
    """The recipe at lr 1e-2 and at lr 0, one after the other in the same two-rank world."""
    import torch

    from pipelines.config import load_config
    from reward.align import AlignConfig, Aligner

    torch.set_num_threads(1)
    out = {}
    for name, lr in (("learning", 1e-2), ("control", 0.0)):
        cfg = load_config(AlignConfig, None, [*RECIPE, f"engine.lr={lr}", f"storage={storage}/{name}"])
        recorder = Recorder()
        Aligner(cfg, tracker=recorder).fit()
        out[name] = recorder.metrics
    return out


@pytest.mark.timeout(600)
def test_eval_reward_rises_while_the_lr0_control_stays_flat(tmp_path):
    runs = on_two_ranks(align_twice, str(tmp_path))
    learning, control = runs["learning"], runs["control"]
    evals = {name: [run[s]["eval_reward_mean"] for s in (0, EVERY, STEPS)] for name, run in runs.items()}
    print("eval_reward_mean at steps 0, 10, 20:", evals)

    assert evals["learning"][0] == evals["control"][0]  # the same start
    assert max(evals["control"]) - min(evals["control"]) < 1e-9, evals["control"]
    assert evals["learning"][-1] - evals["learning"][0] > 0.03, evals["learning"]
    assert evals["learning"][1] > evals["learning"][0]

    for run in (learning, control):  # on-policy before the first update: ratio exactly 1
        assert run[1]["ratio_min"] == pytest.approx(1, abs=1e-9) and run[1]["ratio_max"] == pytest.approx(1, abs=1e-9)
        assert run[1]["clip_frac"] == 0
        assert all(k in run[1] for k in ("reward_mean", "reward.brightness.mean", "reward.darkness.std",
                                         "advantage_std", "kl", "zero_std_frac", "rollout_s", "reward_s",
                                         "update_s", "lr", "grad_norm"))
    held_out = [learning[s]["eval_reward.darkness.mean"] for s in (0, STEPS)]
    assert held_out[1] < held_out[0] - 0.02
    assert learning[STEPS]["hacking_alert"] == 1.0
    assert all(control[s]["hacking_alert"] == 0.0 for s in (EVERY, STEPS))
