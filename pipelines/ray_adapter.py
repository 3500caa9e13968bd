"""The one place curation stages meet Ray Data.

Each row of the dataset carries one item as a JSON string (``{"item": "..."}``):
items are nested dicts whose keys differ from clip to clip, which Arrow cannot unify
into one schema, and JSON is what they become in the shards anyway.

``apply_stage`` maps a stage onto the dataset with the resources it declares:
stateless stages run as tasks (``num_cpus``), model stages (``resources.actor``) as an
actor pool whose actors run ``setup()`` once and keep the model loaded (``num_gpus``
when the cluster has GPUs). Every stage goes through ``curation.stage.run_one``, so a
crash on one sample becomes that sample's reject, and the time spent per item is
recorded under ``_timing`` for the run's per-stage throughput.
"""

from __future__ import annotations

import json
import time
from typing import Any

from curation.stage import Item, Stage, run_one

_STAGES: dict[tuple, Stage] = {}  # per worker process: built and set up once


def _worker_stage(stage_cls: type[Stage], config: Any) -> Stage:
    key = (stage_cls, repr(config))
    if key not in _STAGES:
        stage = stage_cls(config)
        stage.setup()
        _STAGES[key] = stage
    return _STAGES[key]


def process_row(stage: Stage, row: dict[str, Any], group_by: str | None) -> list[dict[str, Any]]:
    item: Item = json.loads(row["item"])
    started = time.perf_counter()
    outputs = run_one(stage, item)
    seconds = (time.perf_counter() - started) / max(1, len(outputs))
    for out in outputs:
        out.setdefault("_timing", {})[stage.name] = seconds
        if stage.name == group_by:
            # The driver knows a source is finished once it has seen this many items.
            out["_group"] = {"id": item["source"]["id"], "size": len(outputs)}
    return [{"item": json.dumps(out)} for out in outputs]


def _task_fn(row: dict[str, Any], stage_cls: type[Stage], config: Any, group_by: str | None):
    return process_row(_worker_stage(stage_cls, config), row, group_by)


class _StageActor:
    def __init__(self, stage_cls: type[Stage], config: Any, group_by: str | None):
        self.stage = _worker_stage(stage_cls, config)
        self.group_by = group_by

    def __call__(self, row: dict[str, Any]) -> list[dict[str, Any]]:
        return process_row(self.stage, row, self.group_by)


def apply_stage(ds, stage: Stage, *, group_by: str | None = None, actor_pool_size: int = 1,
                cluster_gpus: float = 0.0):
    """``ds.flat_map`` of ``stage`` with its declared resources."""
    import ray.data

    res = stage.resources
    gpus = res.gpus if cluster_gpus >= res.gpus > 0 else 0.0
    args = (type(stage), stage.config, group_by)
    if res.actor:
        return ds.flat_map(_StageActor, fn_constructor_args=args, num_cpus=res.cpus, num_gpus=gpus,
                           compute=ray.data.ActorPoolStrategy(min_size=1, max_size=actor_pool_size))
    return ds.flat_map(_task_fn, fn_args=args, num_cpus=res.cpus, num_gpus=gpus)
