"""The reward stage's contracts: the preference likelihoods and accuracies, the rankings
table, the rollouts directory."""

import numpy as np
import pytest
import torch

from reward.annotation.preference import (
    A_WINS,
    B_WINS,
    TIE,
    accuracy_with_ties,
    accuracy_without_ties,
    fit_scores,
    log_likelihood,
)


def test_rao_kupper_probabilities_sum_to_one_and_theta_one_is_bradley_terry():
    d = torch.linspace(-4, 4, 17, dtype=torch.float64)
    for log_theta in (0.2, 1.0, 2.5):
        total = sum(log_likelihood(d, torch.full_like(d, o, dtype=torch.long), log_theta).exp() for o in (0, 1, 2))
        torch.testing.assert_close(total, torch.ones_like(d))
    torch.testing.assert_close(log_likelihood(d, torch.zeros_like(d, dtype=torch.long), 0.0),
                               torch.nn.functional.logsigmoid(d))


def test_accuracy_with_ties_equals_the_brute_force_sweep():
    rng = np.random.default_rng(0)
    d, outcome = rng.normal(size=500).round(1), rng.integers(0, 3, size=500)

    def brute():
        best = (-1.0, 0.0)
        for eps in np.unique(np.concatenate([[0.0], np.abs(d)])):
            acc = np.mean(np.where(d > eps, A_WINS, np.where(d < -eps, B_WINS, TIE)) == outcome)
            best = max(best, (acc, -eps))
        return best[0], -best[1]

    assert accuracy_with_ties(d, outcome) == pytest.approx(brute())
    assert accuracy_without_ties([1.0, -2.0, 0.5, 3.0], [A_WINS, B_WINS, TIE, B_WINS]) == pytest.approx(2 / 3)


def test_fit_recovers_scores_and_tie_strength_of_simulated_judgements():
    rng = np.random.default_rng(1)
    n, m, log_theta = 12, 6000, np.log(2.5)
    true = rng.normal(size=n)
    a = rng.integers(0, n, m)
    b = (a + rng.integers(1, n, m)) % n
    d = true[a] - true[b]
    p_a, p_b = 1 / (1 + np.exp(-(d - log_theta))), 1 / (1 + np.exp(d + log_theta))
    u = rng.random(m)
    outcome = torch.tensor(np.where(u < p_a, A_WINS, np.where(u < p_a + p_b, B_WINS, TIE)))
    scores, fitted = fit_scores(a, b, outcome, n)
    assert np.corrcoef(scores, true)[0, 1] > 0.98 and fitted == pytest.approx(log_theta, abs=0.1)


def test_rankings_table_round_trip_and_validation(tmp_path):
    from reward.annotation.rankings import (
        RankingsError,
        pairs_for_axis,
        read_rankings,
        write_rankings,
    )

    row = {"task_id": "t1", "item_a": "s1", "item_b": "s2", "axis": "motion", "outcome": "a",
           "annotator": "ann", "created_at": "2026-11-29T10:00:00Z"}
    rows = [row, dict(row, outcome="tie", annotator="other"), dict(row, axis="overall", outcome="b")]
    write_rankings(rows, tmp_path)
    assert read_rankings(tmp_path) == rows
    items, a, b, codes = pairs_for_axis(rows, "motion")
    assert items == ["s1", "s2"] and a.tolist() == [0, 0] and codes.tolist() == [A_WINS, TIE]
    with pytest.raises(RankingsError, match="outcome 'left'"):
        write_rankings([dict(row, outcome="left")], tmp_path / "bad")
    assert not (tmp_path / "bad" / "rankings.parquet").exists()


def test_rollouts_are_complete_once_their_json_exists(tmp_path):
    from reward.rollouts.rollout_dir import (
        RolloutsError,
        finish_sample,
        is_done,
        read_rollouts,
        sample_paths,
    )

    paths = sample_paths(tmp_path, "g1-00")
    paths["mp4"].parent.mkdir(parents=True)
    meta = {"sample_id": "g1-00", "group_id": "g1", "prompt": "a drum", "seed": 7}
    with pytest.raises(RolloutsError, match="before finishing"):
        finish_sample(tmp_path, meta)
    paths["mp4"].write_bytes(b"mp4")
    assert not is_done(tmp_path, "g1-00")
    finish_sample(tmp_path, meta, {"video": torch.ones(2, 1, 2, 2), "audio": torch.zeros(2, 3)})
    [rollout] = read_rollouts(tmp_path)
    assert is_done(tmp_path, "g1-00") and rollout.prompt == "a drum" and rollout.seed == 7
    assert rollout.latents()["video"].shape == (2, 1, 2, 2)
    with pytest.raises(RolloutsError, match="appears twice"):
        read_rollouts(tmp_path, tmp_path)
