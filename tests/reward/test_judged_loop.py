"""The alignment loop, end to end through the CLI, measured by an independent judge panel
(benchmarks/judges.py, benchmarks/judged_loop.py) at the smallest size that still says something:

base rollouts -> the panel's Label Studio export -> `tandem annotate import` -> `tandem reward
train` -> `tandem align` against the registered reward model, at lr 0 (the control) and with a
planted flaw (the reward also likes a bright picture, which the panel does not) -> the panel
compares each evaluation's clips with step 0's.

- The control is a coin toss to the panel: 50 % lies in every evaluation's interval, and the
  hacking monitor, fed the panel's win rate as its held-out head, stays silent.
- The flawed run's optimised reward rises while the panel's win rate falls below 50 % with its
  interval, and the monitor fires within the run.

How far a clean run gets (benchmarks/align_winrate.py) is not asserted here: at these sizes it
is not robust."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow  # three Ray commands and two alignment runs

FLAW = {"bright": {"source": "brightness", "coefficient": 10.0}}  # the flaw outweighs the reward model


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    import os

    import torch

    from benchmarks.judged_loop import LoopConfig, align, generate, judge_run, judged_rankings, setup, train_reward

    torch.set_num_threads(1)
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    cfg = LoopConfig(work=str(tmp_path_factory.mktemp("judged")), train_subjects=1, reward_steps=60,
                     align_steps=24, eval_every=12, eval_samples=2)
    try:
        paths = setup(cfg)
        rollouts = generate(cfg, paths["base"], paths["train"], paths["work"] / "rollouts")
        rankings = judged_rankings(cfg, rollouts, paths["work"] / "judged", seed=1)
        metrics = train_reward(cfg, paths, rankings, None, [rollouts])
        runs = {}
        for name, lr, extra, overrides in (("control", 0.0, None, ["steps=6", "eval.every=3", "checkpoint_every=6"]),
                                           ("flaw", cfg.lr, FLAW, [])):
            cfg.align = overrides
            runs[name] = judge_run(cfg, align(cfg, paths, name, lr, extra), paths)
    finally:
        if uri is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = uri
    return {"metrics": metrics, **runs}


@pytest.mark.timeout(900)
def test_the_reward_model_trains_on_the_panels_rankings(loop):
    for axis in ("colour", "sound", "overall"):
        assert loop["metrics"][f"heldout/{axis}/judgements"] > 0


@pytest.mark.timeout(900)
def test_the_lr0_control_is_a_coin_toss_to_the_judges(loop):
    from benchmarks.judged_loop import hacking_alerts

    for e in loop["control"][1:]:
        w = e.win["all"]
        assert w.low <= 0.5 <= w.high, (e.step, str(w))
        assert e.reward == pytest.approx(loop["control"][0].reward, abs=1e-9)  # the model did not move
    assert hacking_alerts(loop["control"]) == []


@pytest.mark.timeout(900)
def test_a_reward_that_also_likes_brightness_is_caught_by_the_judges(loop):
    from benchmarks.judged_loop import hacking_alerts, print_run

    flaw = loop["flaw"]
    print_run("flaw", flaw)
    assert flaw[-1].reward > flaw[0].reward  # the optimised reward rose...
    assert flaw[-1].win["all"].rate < 0.4  # ...while the panel prefers the base model's clips
    assert hacking_alerts(flaw)  # and the monitor, fed the panel's win rate, says so within the run
