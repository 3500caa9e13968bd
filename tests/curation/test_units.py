"""Work units, worker side, without Ray: planning, duplicates, faults versus data, and
the quarantine of a source that keeps killing its worker. Stand-in stages keep it fast;
the real stages run in test_curate_dag.py."""

import json
from pathlib import Path
from typing import ClassVar

import pytest
import webdataset as wds

from curation.probe import content_id
from curation.shards import ShardConfig
from curation.stage import Resources, Stage
from curation.storage import Store
from curation.units import (
    ATTEMPTS,
    STALLS,
    UNITS,
    Segment,
    UnitConfig,
    fetch,
    plan_units,
    run_segment,
    segments,
)

PIPELINE = {"version": "test", "config_hash": "h"}


class OneClip(Stage):
    """Each source becomes one clip whose mp4 is the source's bytes."""

    name = "clip"

    def __init__(self, out: Path):
        super().__init__()
        self.out = out

    def process(self, item):
        self.out.mkdir(parents=True, exist_ok=True)
        key = f"{item['source']['id']}_0000000_0000010"
        mp4 = self.out / f"{key}.mp4"
        mp4.write_bytes(Path(item["source"]["path"]).read_bytes())
        return [{**item, "key": key, "start_s": 0.0, "end_s": 1.0, "files": {"mp4": str(mp4)}}]


class Fails(Stage):
    name = "model"

    def __init__(self, exc):
        super().__init__()
        self.exc = exc

    def process(self, item):
        raise self.exc


def run(tmp_path, sources, stages, limit=2, stall_s=900.0):
    """Every unit of ``sources`` through ``stages`` as one segment; (store, records, summaries)."""
    store, records, summaries = Store(tmp_path / "out"), [], []
    for unit in plan_units(sources, UnitConfig(min_units=1)):
        summaries.append(run_segment(Segment(stages, False, True, True), {"unit": unit}, store, tmp_path / "scratch",
                                     UnitConfig(max_worker_crashes=limit, stall_s=stall_s),
                                     finish={"shards": ShardConfig(), "pipeline_info": PIPELINE}))
        records.append(json.loads(store.read_text(f"{UNITS}/{unit['id']}.json")))
    return store, records, summaries


def files(tmp_path, contents: dict[str, bytes]):
    out = []
    for name, data in contents.items():
        path = tmp_path / "raw" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        out.append({"path": str(path), "size": len(data), "version": "1", "content": content_id(path)})
    return sorted(out, key=lambda f: f["path"])


def test_equal_sizes_share_a_unit_big_files_go_alone_and_small_ones_batch():
    listing = [{"path": f"/r/{n}", "size": s, "version": "v", "content": f"id-{n}"} for n, s in
               [("a", 10), ("b", 20), ("c", 10), ("d", 5_000_000), ("e", 30), ("f", 40)]]
    units = plan_units(listing, UnitConfig(max_sources=2, max_mb=1.0, min_units=1))
    assert [[s["path"][3:] for s in u["sources"]] for u in units] == [["a", "c"], ["d"], ["b", "e"], ["f"]]
    assert plan_units(listing, UnitConfig(max_sources=2, max_mb=1.0, min_units=1)) == units  # same ids again
    spread = plan_units(listing, UnitConfig(max_sources=2, max_mb=1.0, min_units=64))
    assert [len(u["sources"]) for u in spread] == [2, 1, 1, 1, 1]  # few sources: one unit each
    touched = [{**f, "version": "w"} if f["path"] == "/r/f" else f for f in listing]
    ids = [u["id"] for u in units]  # a new mtime, the same bytes: the same units
    assert [u["id"] for u in plan_units(touched, UnitConfig(max_sources=2, max_mb=1.0, min_units=1))] == ids
    changed = [{**f, "content": "id-new"} if f["path"] == "/r/f" else f for f in listing]
    assert plan_units(changed, UnitConfig(max_sources=2, max_mb=1.0, min_units=1))[-1]["id"] != units[-1]["id"]


def test_segments_fuse_cpu_stages_and_give_each_model_stage_its_actors():
    class Model(Stage):
        name = "model"
        resources: ClassVar[Resources] = Resources(actor=True, batch_size=8)

    cpu = [Stage(), Stage()]
    plan = segments([*cpu, Model(), Stage()])
    assert [(len(s.stages), s.actor, s.first, s.last) for s in plan] == [
        (2, False, True, False), (1, True, False, False), (1, False, False, True)]


def test_a_unit_writes_its_shards_and_record_and_the_first_path_of_a_content_wins(tmp_path):
    sources = files(tmp_path, {"a.mp4": b"same", "copy.mp4": b"same"})  # equal sizes: one unit
    store, [record], [summary] = run(tmp_path, sources, [OneClip(tmp_path / "scratch" / "clips")])
    [row] = record["manifest"]
    assert row["source_path"].endswith("a.mp4")
    [dup] = record["rejects"]
    assert dup["reason"] == "duplicate" and dup["source_path"].endswith("copy.mp4") and "a.mp4" in dup["message"]
    shards = store.list("shards")
    assert shards == record["shards"] == [f"clips-{record['unit']}-0000.tar"]
    [sample] = wds.WebDataset(str(tmp_path / "out" / "shards" / shards[0]), shardshuffle=False)
    assert sample["mp4"] == b"same" and json.loads(sample["json"])["source"]["path"].endswith("a.mp4")
    assert summary["kept"] == 1 and summary["reasons"] == {"duplicate": 1}
    assert not store.list(f"{ATTEMPTS}/{record['unit']}")  # no attempt left open


def test_an_infrastructure_fault_fails_the_unit_and_blames_no_input(tmp_path):
    sources = files(tmp_path, {"a.mp4": b"aaaa"})
    with pytest.raises(OSError, match="No space left"):
        run(tmp_path, sources, [Fails(OSError(28, "No space left on device"))])
    store = Store(tmp_path / "out")
    assert not store.list(UNITS)  # not done: a re-run processes it again
    assert not store.list(f"{ATTEMPTS}/{plan_units(sources, UnitConfig())[0]['id']}")  # not a crash either


def test_a_problem_of_the_input_is_a_reject(tmp_path):
    sources = files(tmp_path, {"a.mp4": b"aaaa"})
    _, [record], _ = run(tmp_path, sources, [Fails(ValueError("corrupt frame"))])
    [row] = record["rejects"]
    assert (row["stage"], row["reason"]) == ("model", "stage_error") and "corrupt frame" in row["message"]


def test_a_source_that_killed_its_worker_twice_is_quarantined(tmp_path):
    sources = files(tmp_path, {"a.mp4": b"a", "b.mp4": b"bb", "c.mp4": b"ccc"})
    store = Store(tmp_path / "out")
    [unit] = plan_units(sources, UnitConfig(min_units=1))
    for attempt in range(2):  # what two killed workers leave behind: their markers on source 1
        store.write_text(f"{ATTEMPTS}/{unit['id']}/00001.probe+clip.dead{attempt}.json", "{}")
    store, [record], _ = run(tmp_path, sources, [OneClip(tmp_path / "scratch" / "clips")])
    assert sorted(Path(r["source_path"]).name for r in record["manifest"]) == ["a.mp4", "c.mp4"]
    [row] = record["rejects"]
    assert row["reason"] == "worker_crashed" and row["source_path"].endswith("b.mp4") and "2 times" in row["message"]
    assert not store.list(f"{ATTEMPTS}/{unit['id']}")


def test_a_source_whose_attempts_stalled_is_quarantined_naming_the_stage(tmp_path):
    sources = files(tmp_path, {"a.mp4": b"a", "b.mp4": b"bb"})
    store = Store(tmp_path / "out")
    [unit] = plan_units(sources, UnitConfig(min_units=1))
    marker = {"host": "h", "pid": 1, "segment": "probe+clip", "stalled": {"stage": "sync", "idle_s": 900.0}}
    store.write_text(f"{ATTEMPTS}/{unit['id']}/00000.probe+clip.dead0.json", json.dumps(marker))
    store.write_text(f"{ATTEMPTS}/{unit['id']}/00000.probe+clip.dead1.json", "")  # died as it was written
    _, [record], _ = run(tmp_path, sources, [OneClip(tmp_path / "scratch" / "clips")])
    [row] = record["rejects"]
    assert (row["reason"], row["stage"]) == ("worker_stalled", "sync") and row["source_path"].endswith("a.mp4")
    assert "1 of 2 failed attempts stalled" in row["message"]


class Slow(Stage):
    name = "encode"

    def process(self, item):
        import time

        time.sleep(1.0)
        return [item]


@pytest.mark.timeout(30)
def test_a_stall_in_process_is_named_but_not_fatal(tmp_path, caplog):
    sources = files(tmp_path, {"a.mp4": b"a"})
    _, [record], _ = run(tmp_path, sources, [OneClip(tmp_path / "scratch" / "clips"), Slow()], stall_s=0.3)
    assert len(record["manifest"]) == 1  # no executor to stop: the unit goes on and finishes
    assert "made no progress" in caplog.text and "in stage encode" in caplog.text and "a.mp4" in caplog.text
    store = Store(tmp_path / "out")
    notes = [json.loads(store.read_text(f"{STALLS}/{name}")) for name in store.list(STALLS)]
    assert notes and all(n["stage"] == "encode" and n["source"].endswith("a.mp4") for n in notes)


def test_remote_inputs_are_fetched_and_hashed_on_the_worker(tmp_path):
    import fsspec

    from curation.probe import content_id

    fsspec.filesystem("memory").pipe("/in/clip.mp4", b"remote bytes")
    local, source_id, error = fetch("memory:///in/clip.mp4", tmp_path)
    assert not error and Path(local).read_bytes() == b"remote bytes" and source_id == content_id(local)
    missing = fetch("memory:///in/gone.mp4", tmp_path)
    assert missing[1].startswith("unreadable-") and "cannot read" in missing[2]
