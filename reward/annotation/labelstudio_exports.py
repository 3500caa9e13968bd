"""Label Studio JSON exports -> rankings rows, validated before anything is written.

An export is the JSON list ``[{id, data, annotations: [{id, completed_by, result, was_cancelled,
created_at, ...}], ...}]`` that Label Studio's JSON export (and ``tandem annotate pull``) writes.
Its tasks must be tandem tasks (``data.tandem``, see ``reward.annotation.labelstudio_tasks``) of one
annotation config. Result shapes read (one per axis, ``from_name`` = the axis):

- ``choices``: ``{"choices": ["A better" | "B better" | "Tie"]}``
- ``pairwise``: ``{"selected": "left" | "right"}``
- ``ranker``: ``{"ranker": {NAME: [ids, best first]}}`` (total order), or with tiers
  ``{"ranker": {TIER: [ids], ...}}``: clips in one tier are tied, tiers ordered best first.

Refused, with the export file, task and annotation named: a task that is not a tandem task
(another project), tasks of another or of several annotation configs, item ids the rollouts do
not have, malformed results, and duplicated annotations (the same annotation id twice, or one
annotator annotating a task twice). Cancelled (skipped) and empty annotations, and axes an
annotation left unanswered, are counted and skipped. So is a total ranking still in the order the
page showed: Label Studio saves that order for a ranker nobody touched, and the shown order is a
random shuffle, so skipping it costs a deliberate judgement only 1 time in n! and biases nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

from reward.annotation.labelstudio_tasks import CHOICES, PAIRWISE_SELECTED

MAX_LISTED = 20  # errors quoted in one message


class ExportError(ValueError):
    """An export that cannot be imported; the message names every task that is wrong."""


@dataclass
class ImportResult:
    rows: list[dict]
    tasks: int = 0
    annotations: int = 0  # imported (not cancelled, not empty)
    skipped: Counter = field(default_factory=Counter)  # cancelled, empty, unanswered_axis, order_unchanged
    config: str = ""  # the annotation config digest every task carries
    schema: dict = field(default_factory=dict)


def load_export(path: str | Path) -> list[dict]:
    path = Path(path)
    try:
        tasks = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ExportError(f"{path}: not a readable JSON export ({exc})") from exc
    if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
        raise ExportError(f"{path}: a Label Studio JSON export is a list of tasks; export the project "
                          "as JSON (not JSON_MIN or CSV)")
    return tasks


def annotator_of(annotation: dict) -> str:
    who = annotation.get("completed_by")
    if isinstance(who, dict):
        return str(who.get("email") or who.get("username") or who.get("id"))
    return f"user{who}" if who is not None else "unknown"


def schema_digest(schema: dict) -> str:
    return hashlib.sha256(json.dumps(schema, sort_keys=True).encode()).hexdigest()[:12]


def _rank_outcomes(items: list[str], value, schema: dict) -> dict[tuple[str, str], str]:
    """{(a, b): outcome} for every pair the ranker result orders (a before b in the task list)."""
    tiers = schema["rank_tiers"]
    if not isinstance(value, dict) or not all(isinstance(v, list) for v in value.values()):
        raise ValueError("ranker value must map names to lists of item ids")
    if tiers:
        level = {}
        for name, ids in value.items():
            if name not in tiers:
                continue  # the List itself: clips nobody sorted into a tier are not judged
            for item in ids:
                if item in level:
                    raise ValueError(f"item {item} is in two tiers")
                level[item] = tiers.index(name)
    else:
        if len(value) != 1:
            raise ValueError(f"a ranking without tiers has one list, got {sorted(value)}")
        [order] = value.values()
        if sorted(order) != sorted(items) or len(set(order)) != len(order):
            raise ValueError(f"the ranking {order} is not an ordering of the task's clips {items}")
        level = {item: i for i, item in enumerate(order)}
    unknown = sorted(set(level) - set(items))
    if unknown:
        raise KeyError(f"unknown item id(s) {', '.join(map(str, unknown))} (the task has {', '.join(items)})")
    out = {}
    for a, b in combinations([i for i in items if i in level], 2):
        out[a, b] = "a" if level[a] < level[b] else "b" if level[a] > level[b] else "tie"
    return out


def _outcomes(result: dict, items: list[str], schema: dict) -> dict[tuple[str, str], str]:
    kind, value = result.get("type"), result.get("value")
    if not isinstance(value, dict):
        raise ValueError("result has no value")
    axis = result["from_name"]
    if schema["mode"] == "rank":
        if kind != "ranker":
            raise ValueError(f"axis {axis}: expected a ranker result, got {kind!r}")
        return _rank_outcomes(items, value.get("ranker"), schema)
    a, b = items
    if axis == schema["pairwise_tag_axis"]:
        if kind != "pairwise" or value.get("selected") not in PAIRWISE_SELECTED:
            raise ValueError(f"axis {axis}: expected a pairwise result selecting left or right, got {kind!r} {value}")
        return {(a, b): PAIRWISE_SELECTED[value["selected"]]}
    choices = value.get("choices")
    if kind != "choices" or not isinstance(choices, list) or len(choices) != 1 or choices[0] not in CHOICES:
        raise ValueError(f"axis {axis}: expected one of {', '.join(CHOICES)}, got {kind!r} {value}")
    return {(a, b): CHOICES[choices[0]]}


def import_exports(exports: dict[str, list[dict]], *, known_items: set[str] | None = None,
                   expected_config: str | None = None) -> ImportResult:
    """Judgements of ``exports`` (name -> tasks); raises ExportError listing every problem."""
    errors: list[str] = []
    result = ImportResult(rows=[])
    seen_annotations: dict[str, str] = {}
    seen_work: dict[tuple[str, str], str] = {}
    configs: Counter = Counter()
    for source, tasks in exports.items():
        for task in tasks:
            where = f"{source}: task {task.get('id')}"
            meta = (task.get("data") or {}).get("tandem")
            if not isinstance(meta, dict) or not {"config", "schema", "task", "items"} <= set(meta):
                errors.append(f"{where} is not a tandem task (no data.tandem): an export of another project?")
                continue
            where += f" ({meta['task']})"
            schema, items = meta["schema"], list(meta["items"])
            if schema_digest(schema) != meta["config"]:
                errors.append(f"{where}: its annotation config does not match its digest (edited by hand?)")
                continue
            configs[meta["config"]] += 1
            if expected_config and meta["config"] != expected_config:
                errors.append(f"{where}: made with annotation config {meta['config']}, not {expected_config} "
                              "(an export of another project or config)")
                continue
            result.schema, result.config = schema, meta["config"]
            if known_items is not None and (unknown := [i for i in items if i not in known_items]):
                errors.append(f"{where}: unknown item id(s) {', '.join(unknown)}: not in the given rollouts")
                continue
            result.tasks += 1
            for ann in task.get("annotations") or []:
                here = f"{where}, annotation {ann.get('id')}"
                if ann.get("was_cancelled"):
                    result.skipped["cancelled"] += 1
                    continue
                if not ann.get("result"):
                    result.skipped["empty"] += 1
                    continue
                annotator = annotator_of(ann)
                ann_key = f"{ann.get('project', task.get('project', ''))}:{ann.get('id')}"
                if ann_key in seen_annotations:
                    errors.append(f"{here}: duplicated annotation (also in {seen_annotations[ann_key]}): "
                                  "import each annotation once (a newer export already contains older ones)")
                    continue
                seen_annotations[ann_key] = source
                if (meta["task"], annotator) in seen_work:
                    errors.append(f"{here}: duplicated annotation: {annotator} already annotated this task "
                                  f"({seen_work[meta['task'], annotator]})")
                    continue
                seen_work[meta["task"], annotator] = here
                rows, problems, unchanged = _annotation_rows(ann, meta, schema, items, annotator, task)
                errors += [f"{here}: {p}" for p in problems]
                if not problems:
                    answered = {r["axis"] for r in rows}
                    if unchanged:
                        result.skipped["order_unchanged"] += len(unchanged)
                    if unanswered := sum(a not in answered and a not in unchanged for a in schema["axes"]):
                        result.skipped["unanswered_axis"] += unanswered
                    result.rows += rows
                    result.annotations += 1
    if len(configs) > 1:
        errors.insert(0, "the exports mix annotation configs " + ", ".join(f"{c} ({n} tasks)" for c, n in configs.items())
                      + ": import each config's exports into its own rankings table")
    if errors:
        listed = "\n  ".join(errors[:MAX_LISTED])
        more = f"\n  ... and {len(errors) - MAX_LISTED} more" if len(errors) > MAX_LISTED else ""
        raise ExportError(f"{len(errors)} problem(s), nothing written:\n  {listed}{more}")
    return result


def _annotation_rows(ann: dict, meta: dict, schema: dict, items: list[str], annotator: str,
                     task: dict) -> tuple[list[dict], list[str], set[str]]:
    """(rows, problems, axes whose ranking is still the shown order)."""
    rows, problems, axes_done, unchanged = [], [], set(), set()
    if not ann.get("created_at"):
        return [], ["malformed annotation: no created_at"], unchanged
    for res in ann["result"]:
        if not isinstance(res, dict) or "from_name" not in res:
            problems.append(f"malformed result {str(res)[:200]}")
            continue
        axis = res["from_name"]
        if axis not in schema["axes"]:
            problems.append(f"malformed result: {axis!r} is not an axis of this config ({', '.join(schema['axes'])})")
            continue
        if axis in axes_done:
            problems.append(f"malformed result: axis {axis} answered twice")
            continue
        axes_done.add(axis)
        if _shown_order(res, items, schema):
            unchanged.add(axis)
            continue
        try:
            outcomes = _outcomes(res, items, schema)
        except KeyError as exc:
            problems.append(exc.args[0])
            continue
        except ValueError as exc:
            problems.append(f"malformed result: {exc}")
            continue
        for (a, b), outcome in outcomes.items():
            rows.append({"task_id": meta["task"], "item_a": a, "item_b": b, "axis": axis, "outcome": outcome,
                         "annotator": annotator, "created_at": str(ann["created_at"]),
                         "annotation_id": str(ann.get("id")), "labelstudio_task": str(task.get("id")),
                         "project": str(ann.get("project", task.get("project", "")))})
    return rows, problems, unchanged


def _shown_order(result: dict, items: list[str], schema: dict) -> bool:
    """A total ranking equal to the order the task listed the clips in (an untouched ranker)."""
    if schema["mode"] != "rank" or schema["rank_tiers"]:
        return False
    value = (result.get("value") or {}).get("ranker")
    return isinstance(value, dict) and len(value) == 1 and list(value.values())[0] == items
