"""The human leaderboard: Bradley-Terry-with-ties scores per axis, with bootstrap intervals.

Items are the rankings table's items (rollout sample ids) or, with ``by``, any value those
items map to (``tandem annotate leaderboard RANKINGS --by checkpoint`` maps each sample to its
rollout json's checkpoint, so the judgements compare checkpoints). Scores are the maximum-
likelihood log-strengths of ``reward.annotation.preference`` (Rao-Kupper, Eq. 2, where an axis has
ties; plain Bradley-Terry, Eq. 1, where it has none), mean zero per axis: a difference of 1 means
odds of e:1 of being preferred (before ties).

Intervals: a percentile bootstrap that resamples annotation *tasks* (a ranking of K clips is
one task with K(K-1)/2 correlated rows, so rows are not independent draws).
"""

from __future__ import annotations

import csv
import logging
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from reward.annotation.preference import OUTCOMES, fit_scores, outcome_codes

log = logging.getLogger(__name__)
CSV_COLUMNS = ("item", "axis", "score", "ci_low", "ci_high")


class LeaderboardError(ValueError):
    """Judgements that cannot be ranked as asked; the message says what to fix."""


@dataclass
class Standing:
    item: str
    axis: str
    score: float
    ci_low: float
    ci_high: float
    wins: int
    ties: int
    losses: int

    @property
    def judgements(self) -> int:
        return self.wins + self.ties + self.losses


@dataclass
class AxisFit:
    axis: str
    standings: list[Standing]  # best first
    log_theta: float  # 0 when the axis has no ties (plain Bradley-Terry)
    judgements: int
    dropped_same_item: int  # judgements whose two items map to the same ``by`` value
    connected: bool  # every item is linked to every other through comparisons


def map_items(rows: list[dict], by: dict[str, str] | None) -> tuple[list[dict], int]:
    """Rows with items replaced by ``by[item]``; rows comparing an item with itself after the
    mapping are dropped and counted. Raises for items ``by`` does not cover."""
    if by is None:
        return rows, 0
    missing = sorted({r[k] for r in rows for k in ("item_a", "item_b")} - set(by))
    if missing:
        raise LeaderboardError(f"{len(missing)} judged item(s) have no value to group by, e.g. "
                               f"{', '.join(missing[:5])}: pass the rollout directories they came from")
    mapped = [dict(r, item_a=by[r["item_a"]], item_b=by[r["item_b"]]) for r in rows]
    kept = [r for r in mapped if r["item_a"] != r["item_b"]]
    return kept, len(mapped) - len(kept)


def _connected(n: int, a: np.ndarray, b: np.ndarray) -> bool:
    parent = list(range(n))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in zip(a.tolist(), b.tolist(), strict=True):
        parent[root(i)] = root(j)
    return len({root(i) for i in range(n)}) <= 1


def fit_axis(rows: list[dict], axis: str, *, bootstrap: int = 200, confidence: float = 0.95,
             seed: int = 0, dropped: int = 0) -> AxisFit:
    """Scores and bootstrap intervals of one axis's judgements (rows already mapped)."""
    rows = [r for r in rows if r["axis"] == axis]
    if not rows:
        raise LeaderboardError(f"no judgements on axis {axis!r}")
    items = sorted({r["item_a"] for r in rows} | {r["item_b"] for r in rows})
    index = {item: i for i, item in enumerate(items)}
    a = np.array([index[r["item_a"]] for r in rows], dtype=np.int64)
    b = np.array([index[r["item_b"]] for r in rows], dtype=np.int64)
    codes = outcome_codes([r["outcome"] for r in rows])
    ties = bool((codes == OUTCOMES.index("tie")).any())
    scores, log_theta = fit_scores(a, b, codes, len(items), ties=ties)

    low, high = scores.copy(), scores.copy()
    if bootstrap > 0:
        tasks = defaultdict(list)
        for i, r in enumerate(rows):
            tasks[r["task_id"]].append(i)
        groups = [np.array(v) for v in tasks.values()]
        rng = np.random.default_rng(seed)
        draws = np.empty((bootstrap, len(items)))
        for k in range(bootstrap):
            pick = np.concatenate([groups[t] for t in rng.integers(0, len(groups), len(groups))])
            # theta held at the full fit's value: a nuisance parameter, and each refit is faster
            draws[k], _ = fit_scores(a[pick], b[pick], codes[torch.as_tensor(pick)], len(items),
                                     ties=ties, log_theta=log_theta if ties else None)
        tail = (1 - confidence) / 2 * 100
        low, high = np.percentile(draws, [tail, 100 - tail], axis=0)

    record = Counter()
    for r in rows:
        outcome = r["outcome"]
        record[r["item_a"], {"a": "w", "b": "l", "tie": "t"}[outcome]] += 1
        record[r["item_b"], {"a": "l", "b": "w", "tie": "t"}[outcome]] += 1
    standings = [Standing(item, axis, float(scores[i]), float(low[i]), float(high[i]),
                          record[item, "w"], record[item, "t"], record[item, "l"])
                 for i, item in enumerate(items)]
    standings.sort(key=lambda s: (-s.score, s.item))
    return AxisFit(axis, standings, log_theta, len(rows), dropped, _connected(len(items), a, b))


def leaderboard(rows: list[dict], *, axes: list[str] | None = None, by: dict[str, str] | None = None,
                bootstrap: int = 200, confidence: float = 0.95, seed: int = 0) -> list[AxisFit]:
    """One AxisFit per axis (default: every axis the rows have, in table order)."""
    if not rows:
        raise LeaderboardError("the rankings table is empty")
    present = list(dict.fromkeys(r["axis"] for r in rows))
    axes = axes or present
    unknown = [x for x in axes if x not in present]
    if unknown:
        raise LeaderboardError(f"no judgements on axis {', '.join(unknown)}; the table has {', '.join(present)}")
    mapped, dropped = map_items(rows, by)
    dropped_by_axis = Counter(r["axis"] for r in rows) - Counter(r["axis"] for r in mapped)
    fits, threads = [], torch.get_num_threads()
    torch.set_num_threads(1)  # a few hundred parameters: more threads only add overhead (10x on a busy box)
    try:
        for axis in axes:
            fit = fit_axis(mapped, axis, bootstrap=bootstrap, confidence=confidence, seed=seed,
                           dropped=dropped_by_axis[axis])
            if not fit.connected:
                log.warning("axis %s: the items fall into separate groups never compared with each other; "
                            "scores across groups are not comparable", axis)
            fits.append(fit)
    finally:
        torch.set_num_threads(threads)
    return fits


def write_csv(fits: list[AxisFit], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for fit in fits:
            for s in fit.standings:
                writer.writerow([s.item, s.axis, f"{s.score:.6f}", f"{s.ci_low:.6f}", f"{s.ci_high:.6f}"])
    return path


def format_table(fits: list[AxisFit], confidence: float = 0.95) -> str:
    lines = []
    for fit in fits:
        theta = f"ties: theta={np.exp(fit.log_theta):.3f}" if fit.log_theta else "no ties"
        extra = f", {fit.dropped_same_item} within one item skipped" if fit.dropped_same_item else ""
        lines.append(f"{fit.axis}: {fit.judgements} judgements, {len(fit.standings)} items, {theta}{extra}")
        width = max(len(s.item) for s in fit.standings)
        lines.append(f"  {'#':>3}  {'item':<{width}}  {'score':>7}  {round(confidence * 100)}% interval      W-T-L")
        for rank, s in enumerate(fit.standings, 1):
            lines.append(f"  {rank:>3}  {s.item:<{width}}  {s.score:>7.3f}  [{s.ci_low:>6.3f}, {s.ci_high:>6.3f}]"
                         f"  {s.wins}-{s.ties}-{s.losses}")
    return "\n".join(lines)
