"""The stages after a fan-out work side by side: the next clip is encoded while the last
one is still being measured, and the clips come out in order all the same."""

import threading

import pytest

from curation.stage import Stage, pipeline, reject


class Split(Stage):
    name, fans_out = "split", True

    def stream(self, item):
        for i in range(4):
            yield {**item, "key": f"clip{i}"}


class Encode(Stage):
    name = "encode"

    def __init__(self, started: dict):
        super().__init__()
        self.started = started

    def process(self, item):
        self.started[item["key"]].set()
        return [item if item["key"] != "clip2" else reject(item, self.name, "bad", "for the test")]


class Measure(Stage):
    name = "measure"

    def __init__(self, started: dict):
        super().__init__()
        self.started = started

    def process(self, item):
        following = f"clip{int(item['key'][-1]) + 1}"
        if following in self.started:  # would wait for ever if encode and measure took turns
            assert self.started[following].wait(timeout=20), f"{following} was not encoded while {item['key']} was measured"
        return [{**item, "measured": True}]


@pytest.mark.timeout(60)
def test_the_next_clip_is_encoded_while_the_last_one_is_measured():
    started = {f"clip{i}": threading.Event() for i in range(4)}
    out = list(pipeline([Split(), Encode(started), Measure(started)], {"source": {"path": "x"}}))
    assert [it["key"] for it in out] == ["clip0", "clip1", "clip2", "clip3"]
    assert [bool(it.get("reject")) for it in out] == [False, False, True, False]  # a reject passes measure by
    assert [it.get("measured", False) for it in out] == [True, True, False, True]
    assert all(it["_timing"]["measure"] >= 0 for it in out if not it.get("reject"))


class Boom(Stage):
    name = "boom"

    def process(self, item):
        raise MemoryError("a fault of the machine")


@pytest.mark.timeout(60)
def test_a_fault_in_a_later_stage_still_reaches_the_caller():
    with pytest.raises(MemoryError):
        list(pipeline([Split(), Boom()], {"source": {"path": "x"}}))
    lingering = [t for t in threading.enumerate() if t.name == "read-ahead" and t.is_alive()]
    assert not lingering
