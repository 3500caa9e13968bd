"""A reward training run that dies resumes from its last checkpoint under the same storage and
ends exactly where the uninterrupted run ends: same weights, same tie parameter, same held-out
metrics. Checkpoints of another config are refused, not continued."""

import json

import pytest
import torch

from reward.annotation.rankings import write_rankings
from reward.annotation.simulate import SIM_AXES, SimulationConfig, make_rollouts, simulate_rankings
from reward.scoring.train import PreferenceTrainer, RewardTrainConfig, train_reward
from reward.scoring.train_checkpoints import CheckpointMismatch


class Killed(Exception):
    pass


@pytest.fixture(scope="module")
def ranked(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    metas = make_rollouts(root / "rollouts", groups=4, per_group=3, seed=5, cfg=SimulationConfig(duration_s=0.5,
                                                                                                  max_offset_s=0.1))
    write_rankings(simulate_rankings(metas, SIM_AXES, noise=0.15, seed=5), root / "rankings")
    return root / "rankings", [root / "rollouts"]


def config(storage, **over) -> RewardTrainConfig:
    from pipelines.config_loader import from_dict

    base = {"model": {"heads": ["motion", "av_sync"], "latent": {"dim": 32, "depth": 1, "heads": 2, "fps": 16.0}},
            "steps": 8, "clips_per_step": 6, "eval_every": 4, "checkpoint_every": 3, "holdout_fraction": 0.3,
            "storage": str(storage), **over}
    return from_dict(RewardTrainConfig, base)


def test_a_killed_run_resumes_to_exactly_the_uninterrupted_result(ranked, tmp_path, monkeypatch):
    whole = train_reward(config(tmp_path / "whole"), *ranked)

    draw = PreferenceTrainer._batch

    def dies_in_step_5(self, step):
        if step == 5:  # after checkpoint step3 (dropout has drawn random numbers since)
            raise Killed
        return draw(self, step)

    with monkeypatch.context() as m:
        m.setattr(PreferenceTrainer, "_batch", dies_in_step_5)
        with pytest.raises(Killed):
            train_reward(config(tmp_path / "killed"), *ranked)
    assert (tmp_path / "killed" / "checkpoints" / "latest").read_text() == "step00000003"
    resumed = train_reward(config(tmp_path / "killed"), *ranked)

    assert len(resumed.history) == 8 - 3  # it took only the steps it had not finished
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in whole.history[3:]]
    for name, tensor in whole.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], tensor), name
    assert resumed.model.log_theta == whole.model.log_theta
    assert resumed.metrics == whole.metrics
    assert json.loads((resumed.model_dir / "reward.json").read_text())["resumed_from"] == 3


def test_checkpoints_of_another_config_are_refused(ranked, tmp_path):
    train_reward(config(tmp_path / "run", steps=3), *ranked)
    with pytest.raises(CheckpointMismatch, match="differs in: lr"):
        train_reward(config(tmp_path / "run", steps=3, lr=1e-3), *ranked)
    # Run-only fields (how often to evaluate or save) are not the run's identity.
    train_reward(config(tmp_path / "run", steps=3, eval_every=1), *ranked)
