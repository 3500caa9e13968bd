"""The leaderboard's fit agrees with independent maximum-likelihood fits on real human
paired comparisons (tests/assets/paired_comparisons/README.md says where they come from):
without ties against ``choix``, with ties against a Rao-Kupper likelihood written here
directly in its pi form and minimised by scipy."""

import csv
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.stats import spearmanr

from reward.annotation.leaderboard import leaderboard

ASSETS = Path(__file__).parents[1] / "assets" / "paired_comparisons"


def _read(name):
    with open(ASSETS / name) as f:
        return list(csv.DictReader(f))


def rows_from_counts(name):
    """One rankings row per judgement of a count table (every pair its own task)."""
    rows = []
    for k, r in enumerate(_read(name)):
        for outcome, column in (("a", "wins_a"), ("b", "wins_b"), ("tie", "ties")):
            rows += [{"task_id": f"{k}-{outcome}-{i}", "item_a": r["item_a"], "item_b": r["item_b"],
                      "axis": "overall", "outcome": outcome, "annotator": "judge",
                      "created_at": "1973-01-01T00:00:00Z"} for i in range(int(r.get(column) or 0))]
    return rows


def rows_from_judgements(name):
    return [{"task_id": f"{r['judge']}:{r['item_a']}:{r['item_b']}", "item_a": r["item_a"], "item_b": r["item_b"],
             "axis": "overall", "outcome": r["outcome"], "annotator": r["judge"],
             "created_at": "1998-01-01T00:00:00Z"} for r in _read(name)]


def scores_of(rows):
    [fit] = leaderboard(rows, bootstrap=0)
    return {s.item: s.score for s in fit.standings}, fit.log_theta


@pytest.mark.parametrize("name", ["soundquality_counts.csv", "firstnames_counts.csv"])
def test_without_ties_agrees_with_choix(name):
    import choix

    rows = rows_from_counts(name)
    ours, log_theta = scores_of(rows)
    items = sorted(ours)
    index = {item: i for i, item in enumerate(items)}
    data = [(index[r["item_a"]], index[r["item_b"]]) if r["outcome"] == "a" else (index[r["item_b"]], index[r["item_a"]])
            for r in rows]
    theirs = choix.ilsr_pairwise(len(items), data, alpha=0.0, tol=1e-12)
    theirs -= theirs.mean()
    mine = np.array([ours[i] for i in items])
    assert log_theta == 0.0  # forced choice: plain Bradley-Terry
    assert spearmanr(mine, theirs).statistic >= 0.99
    np.testing.assert_allclose(mine, theirs, atol=1e-4)


def rao_kupper_mle(rows):
    """Direct ML of Rao & Kupper (1967): P(i > j) = pi_i / (pi_i + theta pi_j), P(tie) =
    (theta^2 - 1) pi_i pi_j / ((pi_i + theta pi_j)(theta pi_i + pi_j)), pi = exp(s)."""
    items = sorted({r["item_a"] for r in rows} | {r["item_b"] for r in rows})
    index = {item: i for i, item in enumerate(items)}
    i = np.array([index[r["item_a"]] for r in rows])
    j = np.array([index[r["item_b"]] for r in rows])
    outcome = np.array([r["outcome"] for r in rows])

    def nll(params):
        pi, theta = np.exp(params[:-1]), 1 + np.exp(params[-1])
        pa, pb = pi[i], pi[j]
        win = pa / (pa + theta * pb)
        loss = pb / (pb + theta * pa)
        tie = (theta**2 - 1) * pa * pb / ((pa + theta * pb) * (theta * pa + pb))
        p = np.where(outcome == "a", win, np.where(outcome == "b", loss, tie))
        return -np.log(p).sum()

    best = minimize(nll, np.zeros(len(items) + 1), method="BFGS", options={"gtol": 1e-9})
    scores = best.x[:-1] - best.x[:-1].mean()
    return dict(zip(items, scores, strict=True)), np.log1p(np.exp(best.x[-1]))


@pytest.mark.parametrize("rows", [rows_from_judgements("cems_judgements.csv"), rows_from_counts("springall_counts.csv")],
                         ids=["cems", "springall"])
def test_with_ties_agrees_with_a_direct_rao_kupper_mle(rows):
    ours, log_theta = scores_of(rows)
    theirs, their_log_theta = rao_kupper_mle(rows)
    items = sorted(ours)
    mine, ref = np.array([ours[i] for i in items]), np.array([theirs[i] for i in items])
    assert spearmanr(mine, ref).statistic >= 0.99
    np.testing.assert_allclose(mine, ref, atol=1e-4)
    assert log_theta == pytest.approx(their_log_theta, abs=1e-4)
