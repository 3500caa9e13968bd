"""The training loss, checked against an independent computation: with one free score per item
(no backbone), the trainer's Rao-Kupper loss converges to the leaderboard's maximum-likelihood
fit (``reward.annotation.preference.fit_scores``, L-BFGS) on the same judgements; plain
Bradley-Terry ignores ties; every ranking row is accounted for by the train / held-out split."""

import numpy as np
import pytest
import torch

from reward.annotation.preference import TIE, fit_scores, sample_outcomes
from reward.scoring.pairs import Judgements, PreparedPairs, prepare_pairs
from reward.scoring.train import ItemScores, LossConfig, PreferenceTrainer, RewardTrainConfig


def simulated_judgements(n_items=10, m=2000, log_theta=np.log(2.5), seed=0):
    rng = np.random.default_rng(seed)
    true = rng.normal(size=n_items)
    a = rng.integers(0, n_items, m)
    b = (a + rng.integers(1, n_items, m)) % n_items
    return a, b, sample_outcomes(true[a] - true[b], log_theta, rng)


def train_item_scores(a, b, outcome, n_items, loss: LossConfig, steps=300):
    cfg = RewardTrainConfig(loss=loss, steps=steps, clips_per_step=n_items, lr=0.05, weight_decay=0.0,
                            warmup_steps=10, min_lr_ratio=0.001, grad_clip=0.0, eval_every=steps)
    pairs = Judgements(a, b, np.zeros_like(a), outcome)
    trainer = PreferenceTrainer(cfg, ItemScores(n_items, 1), PreparedPairs(pairs, pairs), ("overall",))
    result = trainer.fit()
    scores = trainer.module.scorer.scores.detach()[:, 0].numpy()
    return scores - scores.mean(), trainer.module.log_theta(), result


@pytest.mark.parametrize("learn_theta", [True, False])
def test_rao_kupper_loss_converges_to_the_leaderboard_maximum_likelihood_fit(learn_theta):
    a, b, outcome = simulated_judgements()
    loss = LossConfig(ties="rao_kupper", theta=2.5 if not learn_theta else 1.5, learn_theta=learn_theta)
    scores, log_theta, result = train_item_scores(a, b, outcome, 10, loss)
    expected, expected_log_theta = fit_scores(a, b, torch.tensor(outcome), 10, l2=0.0,
                                              log_theta=None if learn_theta else float(np.log(2.5)))
    np.testing.assert_allclose(scores, expected, atol=2e-3)
    assert float(log_theta.detach()) == pytest.approx(expected_log_theta, abs=2e-3)
    # The fitted scores predict the training judgements as well as the fit does (with ties).
    assert result.metrics["train/overall/accuracy_with_ties"] > 0.5


def test_plain_bradley_terry_drops_ties():
    a, b, outcome = simulated_judgements(seed=1)
    scores, log_theta, _ = train_item_scores(a, b, outcome, 10, LossConfig(ties="drop"))
    expected, _ = fit_scores(a, b, torch.tensor(outcome), 10, ties=False, l2=0.0)
    np.testing.assert_allclose(scores, expected, atol=2e-3)
    assert log_theta is None
    # Ties contribute nothing: the same run without them ends at the same scores.
    kept = outcome != TIE
    without, _, _ = train_item_scores(a[kept], b[kept], outcome[kept], 10, LossConfig(ties="drop"))
    np.testing.assert_allclose(scores, without, atol=1e-6)


def test_theta_must_allow_ties():
    with pytest.raises(ValueError, match="theta must be > 1"):
        LossConfig(theta=1.0)


def test_every_ranking_row_is_accounted_for_and_heldout_groups_are_never_trained_on():
    items = [f"g{g}-{k}" for g in range(40) for k in range(3)]
    groups = [i.split("-")[0] for i in items]
    rows = [{"item_a": f"g{g}-0", "item_b": f"g{g}-{k}", "axis": axis, "outcome": "a"}
            for g in range(40) for k in (1, 2) for axis in ("motion", "overall", "lighting")]
    rows += [{"item_a": "g1-0", "item_b": "elsewhere-0", "axis": "motion", "outcome": "b"},
             {"item_a": "g1-0", "item_b": "g2-0", "axis": "motion", "outcome": "tie"}]
    pairs = prepare_pairs(rows, items, groups, ("motion", "overall"), holdout_fraction=0.25)
    used = len(pairs.train) + len(pairs.heldout)
    assert used + sum(pairs.dropped.values()) == pairs.rows_in == len(rows)
    assert pairs.dropped["axis_not_a_head"] == 80 and pairs.dropped["unknown_item"] == 1
    held = {groups[i] for i in np.concatenate([pairs.heldout.a, pairs.heldout.b])}
    trained = {groups[i] for i in np.concatenate([pairs.train.a, pairs.train.b])}
    assert held and trained and not held & trained
    assert 0.1 < len(held) / 40 < 0.45
    # A separate held-out table: training rows that touch its clips are left out.
    heldout_rows = [r for r in rows if r["item_a"] == "g3-0" and r["axis"] == "motion"]
    split = prepare_pairs(rows, items, groups, ("motion", "overall"), heldout_rows=heldout_rows)
    assert split.dropped["heldout_item_in_training"] == 4  # g3's two pairs on motion and overall
    assert len(split.heldout) == 2
