"""The alignment loop, end to end through the CLI, measured by an independent judge panel
(benchmarks/judges.py, benchmarks/judged_loop.py), at the smallest size that still says something:

base rollouts -> the panel's Label Studio export -> `tandem annotate import` -> `tandem reward
train` -> `tandem align` against the registered reward model at lr 0 (the control) -> the panel
compares each evaluation's clips with step 0's.

Asserted where it is robust at this size: the reward model trains on the panel's rankings and
reports held-out accuracy per head; the control is a coin toss to the panel (50 % in every
evaluation's interval) and the hacking monitor, fed the panel's win rate, stays silent; the
monitor fires when the panel's win rate falls while the optimised reward rises, and only then.
Whether a clean run beats the base model, and whether a planted flaw is caught end to end, is
measured by benchmarks/align_winrate.py: at this size neither is robust (a 24-step run with a
brightness-loving reward lowered the panel's win rate to 36 % but its raw reward fell too)."""

from __future__ import annotations

import pytest

from benchmarks.judged_loop import Evaluation, hacking_alerts
from benchmarks.judges import WinRate


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    import os

    import torch

    from benchmarks.judged_loop import (
        LoopConfig,
        align,
        generate,
        judge_run,
        judged_rankings,
        setup,
        train_reward,
    )

    torch.set_num_threads(1)
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    cfg = LoopConfig(work=str(tmp_path_factory.mktemp("judged")), train_subjects=1, reward_steps=60,
                     align_steps=6, eval_every=3, eval_samples=2)
    try:
        paths = setup(cfg)
        rollouts = generate(cfg, paths["base"], paths["train"], paths["work"] / "rollouts")
        rankings = judged_rankings(cfg, rollouts, paths["work"] / "judged", seed=1)
        metrics = train_reward(cfg, paths, rankings, None, [rollouts])
        control = judge_run(cfg, align(cfg, paths, "control", 0.0), paths)
    finally:  # setup() points MLflow at the work directory
        if uri is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = uri
    return {"metrics": metrics, "control": control}


@pytest.mark.slow  # three Ray commands and an alignment run
@pytest.mark.timeout(900)
def test_the_reward_model_trains_on_the_panels_rankings(loop):
    for axis in ("colour", "sound", "overall"):
        assert loop["metrics"][f"heldout/{axis}/judgements"] > 0
        assert 0 <= loop["metrics"][f"heldout/{axis}/accuracy_without_ties"] <= 1


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_lr0_control_is_a_coin_toss_to_the_judges(loop):
    control = loop["control"]
    assert [e.step for e in control] == [0, 3, 6]
    for e in control[1:]:
        w = e.win["all"]
        assert w.judgements == 5 * w.pairs == 5 * 12 * 2  # every judge, every prompt's samples
        assert w.low <= 0.5 <= w.high, (e.step, str(w))
        assert e.reward == pytest.approx(control[0].reward, abs=1e-9)  # the model did not move
    assert hacking_alerts(control) == []


def evaluations(rewards, win_rates) -> list[Evaluation]:
    return [Evaluation(step, reward, reward, {"all": WinRate(rate, rate - 0.05, rate + 0.05, 48, 240, 0.2)})
            for step, (reward, rate) in enumerate(zip(rewards, win_rates, strict=True))]


def test_the_monitor_fires_when_the_judges_win_rate_falls_while_the_reward_rises():
    assert hacking_alerts(evaluations([0.0, 1.0, 2.0], [0.5, 0.45, 0.35])) == [2]  # reward up, judges down
    assert hacking_alerts(evaluations([0.0, 1.0, 2.0], [0.5, 0.6, 0.7])) == []  # both up: learning
    assert hacking_alerts(evaluations([0.0, -1.0, -2.0], [0.5, 0.4, 0.3])) == []  # both down: a bad run
    assert hacking_alerts(evaluations([0.0, 1.0, 2.0], [0.5, 0.7, 0.55])) == [2]  # fell from its best
