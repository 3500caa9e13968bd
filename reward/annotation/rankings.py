"""The rankings table: the contract between annotation and the reward model (docs/design.md).

``RANKINGS_DIR/rankings.parquet``, one row per judgement: ``task_id``, ``item_a``, ``item_b``,
``axis``, ``outcome`` (``a`` | ``b`` | ``tie``), ``annotator``, ``created_at`` (ISO 8601).
Items are rollout sample ids. A ranking of K items is stored as the pairwise rows it implies;
several annotators of one pair stay separate rows. Extra columns are allowed and kept.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from reward.annotation.preference import OUTCOMES, outcome_codes

FILE = "rankings.parquet"
COLUMNS = ("task_id", "item_a", "item_b", "axis", "outcome", "annotator", "created_at")
AXES = ("visual_quality", "motion", "audio_quality", "av_sync", "prompt_alignment", "overall")
SCHEMA = pa.schema([(c, pa.string()) for c in COLUMNS])


class RankingsError(ValueError):
    """A rankings table that breaks the contract; the message says which row and why."""


def check_rows(rows: list[dict]) -> None:
    for i, row in enumerate(rows):
        missing = [c for c in COLUMNS if row.get(c) in (None, "")]
        if missing:
            raise RankingsError(f"judgement {i} (task {row.get('task_id')!r}) lacks {', '.join(missing)}")
        if row["outcome"] not in OUTCOMES:
            raise RankingsError(f"judgement {i} (task {row['task_id']!r}): outcome {row['outcome']!r} "
                                f"is not one of {', '.join(OUTCOMES)}")
        if row["item_a"] == row["item_b"]:
            raise RankingsError(f"judgement {i} (task {row['task_id']!r}) compares {row['item_a']!r} with itself")


def write_rankings(rows: list[dict], directory: str | Path) -> Path:
    """Validate every row, then write ``directory/rankings.parquet`` atomically."""
    check_rows(rows)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    extra = sorted({k for r in rows for k in r} - set(COLUMNS))
    table = pa.Table.from_pylist([{c: r.get(c) for c in (*COLUMNS, *extra)} for r in rows],
                                 schema=SCHEMA if not extra else None)
    path, tmp = directory / FILE, directory / (FILE + ".tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return path


def read_rankings(path: str | Path) -> list[dict]:
    """The judgements of ``path`` (a rankings directory or the parquet file), checked."""
    path = Path(path)
    path = path / FILE if path.is_dir() else path
    if not path.is_file():
        raise RankingsError(f"no rankings table at {path}: make one with `tandem annotate import`")
    rows = pq.read_table(path).to_pylist()
    missing = [c for c in COLUMNS if rows and c not in rows[0]]
    if missing:
        raise RankingsError(f"{path} lacks the column(s) {', '.join(missing)}")
    check_rows(rows)
    return rows


def pairs_for_axis(rows: list[dict], axis: str, items: list[str] | None = None):
    """(items, index of a, index of b, outcome codes) of the judgements on ``axis``; items
    default to those the judgements mention, sorted."""
    rows = [r for r in rows if r["axis"] == axis]
    items = items or sorted({r["item_a"] for r in rows} | {r["item_b"] for r in rows})
    index = {item: i for i, item in enumerate(items)}
    a = np.array([index[r["item_a"]] for r in rows], dtype=np.int64)
    b = np.array([index[r["item_b"]] for r in rows], dtype=np.int64)
    return items, a, b, outcome_codes([r["outcome"] for r in rows])
