"""The stage -> Ray Data adapter: resources, fan-out grouping, timing, crash isolation."""

import json
from typing import ClassVar

import pytest

from curation.stage import Resources, Stage
from pipelines.ray_adapter import apply_stage, process_row


class Split(Stage):
    name = "shots"

    def process(self, item):
        return [{**item, "key": f"{item['source']['id']}_{i}"} for i in range(item["n"])]


class Boom(Stage):
    name = "boom"

    def process(self, item):
        raise RuntimeError("corrupt frame")


class CountingActor(Stage):
    name = "count"
    resources: ClassVar[Resources] = Resources(cpus=0.5, gpus=1.0, actor=True)

    def setup(self):
        self.calls = 0

    def process(self, item):
        self.calls += 1
        return [{**item, "seen_by_actor": self.calls}]


def row(source_id, n=1):
    return {"item": json.dumps({"source": {"id": source_id, "path": f"/{source_id}.mp4"}, "n": n})}


def test_fan_out_is_stamped_with_the_group_size_and_timed():
    out = [json.loads(r["item"]) for r in process_row(Split(), row("s", 3), group_by="shots")]
    assert [o["key"] for o in out] == ["s_0", "s_1", "s_2"]
    assert all(o["_group"] == {"id": "s", "size": 3} and o["_timing"]["shots"] >= 0 for o in out)


def test_a_crash_becomes_that_item_s_reject():
    [out] = process_row(Boom(), row("s"), group_by=None)
    reject = json.loads(out["item"])["reject"]
    assert reject["stage"] == "boom" and reject["reason"] == "stage_error" and "corrupt frame" in reject["message"]


@pytest.mark.slow  # local Ray
@pytest.mark.timeout(120)
def test_tasks_and_actor_pools_on_local_ray(local_ray):
    import sys

    import ray.cloudpickle
    import ray.data

    # Workers cannot import a test module: ship these stand-in stages by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ds = ray.data.from_items([row("a", 2), row("b", 1)], override_num_blocks=2)
    ds = apply_stage(ds, Split(), group_by="shots")
    ds = apply_stage(ds, CountingActor(), cluster_gpus=0.0)  # no GPU here: the request is dropped
    items = sorted((json.loads(r["item"]) for r in ds.take_all()), key=lambda it: it["key"])
    assert [it["key"] for it in items] == ["a_0", "a_1", "b_0"]
    assert sorted(it["seen_by_actor"] for it in items) == [1, 2, 3]  # one long-lived actor did all three
