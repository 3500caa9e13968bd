"""The leaderboard: scores with bootstrap intervals per axis, items grouped by a rollout field
(checkpoints ranked from judgements of their samples), the CSV, the command."""

import csv

import numpy as np
import pytest

from reward.annotation.leaderboard import LeaderboardError, leaderboard, write_csv


def simulated(strengths: dict[str, float], n: int, seed: int = 0, theta: float = 2.0):
    """Rao-Kupper judgements between random pairs of items with these log-strengths."""
    rng = np.random.default_rng(seed)
    items, rows = list(strengths), []
    for t in range(n):
        a, b = rng.choice(len(items), 2, replace=False)
        d = strengths[items[a]] - strengths[items[b]]
        p_a, p_b = 1 / (1 + theta * np.exp(-d)), 1 / (1 + theta * np.exp(d))
        u = rng.random()
        outcome = "a" if u < p_a else "b" if u < p_a + p_b else "tie"
        rows.append({"task_id": f"t{t}", "item_a": items[a], "item_b": items[b], "axis": "overall",
                     "outcome": outcome, "annotator": "x", "created_at": "2026-11-29T10:00:00Z"})
    return rows


def test_scores_order_items_and_intervals_cover_them_and_shrink_with_data():
    truth = {"s0": 1.0, "s1": 0.3, "s2": -0.2, "s3": -1.1}
    [small] = leaderboard(simulated(truth, 300), bootstrap=100)
    [large] = leaderboard(simulated(truth, 3000, seed=1), bootstrap=100)
    assert [s.item for s in large.standings] == ["s0", "s1", "s2", "s3"]
    assert np.exp(large.log_theta) == pytest.approx(2.0, rel=0.15)
    for fit in (small, large):
        for s in fit.standings:
            assert s.ci_low <= s.score <= s.ci_high
    def width(fit):
        return np.mean([s.ci_high - s.ci_low for s in fit.standings])

    assert width(large) < 0.5 * width(small)  # ~1/sqrt(10) of it


def test_by_groups_samples_into_checkpoints_and_drops_within_checkpoint_pairs(tmp_path):
    rows = simulated({"a-1": 0.8, "a-2": 0.6, "b-1": -0.5, "b-2": -0.7}, 2000)
    by = {item: "ckpt_" + item.split("-")[0] for item in ("a-1", "a-2", "b-1", "b-2")}
    [fit] = leaderboard(rows, by=by, bootstrap=50)
    within = sum(by[r["item_a"]] == by[r["item_b"]] for r in rows)
    assert fit.dropped_same_item == within and fit.judgements == len(rows) - within
    assert [s.item for s in fit.standings] == ["ckpt_a", "ckpt_b"]
    path = write_csv([fit], tmp_path / "board.csv")
    with open(path) as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == ["item", "axis", "score", "ci_low", "ci_high"] and table[0]["item"] == "ckpt_a"
    with pytest.raises(LeaderboardError, match="no value to group by"):
        leaderboard(rows, by={"a-1": "x"})
    with pytest.raises(LeaderboardError, match="no judgements on axis motion"):
        leaderboard(rows, axes=["motion"])


def test_leaderboard_command(tmp_path, capsys):
    from pipelines.cli import main
    from reward.annotation.rankings import write_rankings

    write_rankings(simulated({"s0": 1.0, "s1": 0.0, "s2": -1.0}, 400), tmp_path / "rankings")
    assert main(["annotate", "leaderboard", str(tmp_path / "rankings"), "--bootstrap", "30",
                 "--out", str(tmp_path / "board.csv")]) == 0
    out = capsys.readouterr().out
    assert "overall: 400 judgements, 3 items" in out and out.index("s0") < out.index("s2")
    assert main(["annotate", "leaderboard", str(tmp_path / "rankings"), "--by", "checkpoint"]) == 2
    assert main(["annotate", "leaderboard", str(tmp_path / "nothing")]) == 2
