"""Inter-annotator agreement per axis of a rankings table.

A *unit* is one axis and one unordered pair of items; its values are the outcomes every
judgement of that pair gave, oriented the same way (``a`` means the lexicographically first
item won). Units judged once carry no agreement information and are left out.

- Pairwise agreement: over every two judgements of the same unit, the fraction that agree.
- Krippendorff's alpha for nominal data (Krippendorff 2011, "Computing Krippendorff's
  Alpha-Reliability", Sec. A): with the coincidence matrix
      o_ck = sum_u (number of c-k value pairs in unit u) / (m_u - 1),   n_c = sum_k o_ck,
      alpha = 1 - (n - 1) * sum_{c != k} o_ck / sum_{c != k} n_c n_k.
  1 is perfect agreement, 0 what chance gives, below 0 systematic disagreement.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from itertools import combinations

FLIP = {"a": "b", "b": "a", "tie": "tie"}


def units(rows: list[dict], axis: str) -> list[list[str]]:
    """The oriented outcomes of every pair judged on ``axis``, pairs judged once included."""
    by_pair: dict[tuple[str, str], list[str]] = defaultdict(list)
    for r in rows:
        if r["axis"] != axis:
            continue
        a, b = r["item_a"], r["item_b"]
        by_pair[min(a, b), max(a, b)].append(r["outcome"] if a < b else FLIP[r["outcome"]])
    return list(by_pair.values())


def pairwise_agreement(values: list[list]) -> float:
    agree = total = 0
    for unit in values:
        for x, y in combinations(unit, 2):
            agree += x == y
            total += 1
    return agree / total if total else float("nan")


def krippendorff_alpha_nominal(values: list[list]) -> float:
    """``values``: per unit, the values coders gave (missing ones simply absent)."""
    o: Counter = Counter()
    for unit in values:
        m = len(unit)
        if m < 2:
            continue
        for i, j in ((i, j) for i in range(m) for j in range(m) if i != j):
            o[unit[i], unit[j]] += 1 / (m - 1)
    n_c: Counter = Counter()
    for (c, _), w in o.items():
        n_c[c] += w
    n = sum(n_c.values())
    observed = sum(w for (c, k), w in o.items() if c != k)
    expected = sum(n_c[c] * n_c[k] for c in n_c for k in n_c if c != k)
    if n <= 1 or expected == 0:
        return float("nan")  # one value only: agreement is undefined
    return 1 - (n - 1) * observed / expected


def agreement_report(rows: list[dict]) -> dict[str, dict]:
    """Per axis: judgements, pairs judged more than once, annotators, pairwise agreement, alpha
    (None where no pair was judged twice, or every judgement agrees on one value)."""
    report = {}
    for axis in dict.fromkeys(r["axis"] for r in rows):
        vals = units(rows, axis)
        multi = [u for u in vals if len(u) > 1]
        report[axis] = {"judgements": sum(len(u) for u in vals), "pairs": len(vals),
                        "pairs_judged_twice_or_more": len(multi),
                        "annotators": len({r["annotator"] for r in rows if r["axis"] == axis}),
                        "pairwise_agreement": _or_none(pairwise_agreement(multi)),
                        "krippendorff_alpha": _or_none(krippendorff_alpha_nominal(multi))}
    return report


def _or_none(x: float) -> float | None:
    return None if x != x else x  # NaN is not JSON
