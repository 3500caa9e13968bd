"""Judgements as index arrays, split into training and held-out, with every row accounted for.

``prepare_pairs(rows, clips, heads, ...)`` turns rankings rows (``reward.annotation.rankings``) into
``Judgements`` (item index a, item index b, head index, outcome code) over ``clips`` (the
rollout samples the rows compare). The held-out set is either a second rankings table (e.g. a
consensus set several annotators agreed on) or the judgements among a hashed fraction of the
rollout *groups* (samples of one prompt), so no held-out clip or prompt is ever trained on.
Rows that cannot be used are counted by reason, never silently lost:

- ``axis_not_a_head``: the model has no head for the row's axis;
- ``unknown_item``: an item that is not among the rollouts given;
- ``crosses_split``: a pair with one clip on each side of the split (training on it would
  leak held-out clips);
- ``heldout_item_in_training``: with a separate held-out table, training rows that touch one
  of its clips.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from reward.annotation.preference import TIE, outcome_codes


@dataclass
class Judgements:
    a: np.ndarray  # item index
    b: np.ndarray
    head: np.ndarray  # head index
    outcome: np.ndarray  # A_WINS / B_WINS / TIE

    def __len__(self) -> int:
        return len(self.a)

    def subset(self, mask_or_index) -> Judgements:
        return Judgements(self.a[mask_or_index], self.b[mask_or_index], self.head[mask_or_index],
                          self.outcome[mask_or_index])

    def counts(self, heads: tuple[str, ...]) -> dict[str, dict[str, int]]:
        """Per head: judgements and ties."""
        return {h: {"judgements": int((self.head == i).sum()),
                    "ties": int(((self.head == i) & (self.outcome == TIE)).sum())} for i, h in enumerate(heads)}


@dataclass
class PreparedPairs:
    train: Judgements
    heldout: Judgements
    dropped: Counter = field(default_factory=Counter)
    rows_in: int = 0


def is_heldout_group(group_id: str, fraction: float, seed: int = 0) -> bool:
    """Deterministic: the same group is held out in every run with the same fraction and seed."""
    digest = hashlib.sha256(f"{seed}:{group_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def _to_judgements(rows: list[dict], index: dict[str, int], heads: tuple[str, ...], dropped: Counter) -> Judgements:
    head_index = {h: i for i, h in enumerate(heads)}
    keep = []
    for r in rows:
        if r["axis"] not in head_index:
            dropped["axis_not_a_head"] += 1
        elif r["item_a"] not in index or r["item_b"] not in index:
            dropped["unknown_item"] += 1
        else:
            keep.append(r)
    return Judgements(np.array([index[r["item_a"]] for r in keep], dtype=np.int64),
                      np.array([index[r["item_b"]] for r in keep], dtype=np.int64),
                      np.array([head_index[r["axis"]] for r in keep], dtype=np.int64),
                      outcome_codes([r["outcome"] for r in keep]).numpy())


def prepare_pairs(rows: list[dict], item_ids: list[str], groups: list[str], heads: tuple[str, ...], *,
                  heldout_rows: list[dict] | None = None, holdout_fraction: float = 0.2,
                  seed: int = 0) -> PreparedPairs:
    """``item_ids[i]`` is clip i's sample id and ``groups[i]`` its group id."""
    index = {item: i for i, item in enumerate(item_ids)}
    dropped: Counter = Counter()
    rows_in = len(rows) + len(heldout_rows or [])
    everything = _to_judgements(rows, index, heads, dropped)
    if heldout_rows is not None:
        heldout = _to_judgements(heldout_rows, index, heads, dropped)
        held_items = np.zeros(len(item_ids), dtype=bool)
        held_items[heldout.a], held_items[heldout.b] = True, True
        touches = held_items[everything.a] | held_items[everything.b]
        dropped["heldout_item_in_training"] += int(touches.sum())
        return PreparedPairs(everything.subset(~touches), heldout, dropped, rows_in)
    held_items = np.array([is_heldout_group(g, holdout_fraction, seed) for g in groups], dtype=bool)
    side_a, side_b = held_items[everything.a], held_items[everything.b]
    dropped["crosses_split"] += int((side_a != side_b).sum())
    return PreparedPairs(everything.subset(~side_a & ~side_b), everything.subset(side_a & side_b), dropped, rows_in)
