"""Shard writing: schema, count bounds, per-unit names, byte-identical re-runs."""

import json

import pytest
import webdataset as wds

from curation.shards import ShardConfig, shard_json, write_table, write_unit_shards
from curation.storage import Store

PIPELINE = {"version": "test", "config_hash": "abc"}


def write_shards(items, out, config, pipeline, unit="u1"):
    """The unit's shards in ``out/shards`` (scratch space beside it)."""
    scratch = out.parent / f"{out.name}-scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    rows = write_unit_shards(items, Store(out), unit, config, pipeline, scratch)
    assert not list(scratch.iterdir())  # every shard was published
    return rows


def fake_item(tmp_path, key, with_flac=True):
    mp4, flac = tmp_path / f"{key}.mp4", tmp_path / f"{key}.flac"
    mp4.write_bytes(b"mp4-" + key.encode())
    files = {"mp4": str(mp4)}
    if with_flac:
        flac.write_bytes(b"flac-" + key.encode())
        files["flac"] = str(flac)
    return {"key": key, "source": {"id": "s", "path": "/raw/x.mp4"}, "start_s": 0.0, "end_s": 1.5,
            "caption": {"text": f"caption {key}"}, "files": files, "analysis": {"motion_energy": [0.1]},
            "_timing": {"probe": 0.1}, "handoff": {"frames": "/tmp/x.yuv"}, "reject": None}


def test_samples_follow_the_schema_and_key_order(tmp_path):
    items = [fake_item(tmp_path, k) for k in ("c", "a", "b")]
    rows = write_shards(items, tmp_path / "out", ShardConfig(max_count=2), PIPELINE)
    assert [r["key"] for r in rows] == ["a", "b", "c"]
    assert [r["shard"] for r in rows] == ["clips-u1-0000.tar", "clips-u1-0000.tar", "clips-u1-0001.tar"]
    assert sorted(p.name for p in (tmp_path / "out" / "shards").iterdir()) == ["clips-u1-0000.tar", "clips-u1-0001.tar"]
    samples = list(wds.WebDataset(str(tmp_path / "out" / "shards" / "clips-u1-{0000..0001}.tar"), shardshuffle=False))
    assert [s["__key__"] for s in samples] == ["a", "b", "c"]
    first = samples[0]
    assert set(first) >= {"mp4", "flac", "json", "txt"}
    assert first["mp4"] == b"mp4-a" and first["txt"] == b"caption a"
    doc = json.loads(first["json"])
    assert doc["pipeline"] == PIPELINE and doc["key"] == "a"
    assert not {"files", "analysis", "_timing", "handoff", "reject"} & set(doc)


def test_rewrite_is_byte_identical_and_replaces_a_half_written_shard(tmp_path):
    items = [fake_item(tmp_path, k) for k in "abcde"]
    write_shards(items, tmp_path / "one", ShardConfig(max_count=2), PIPELINE)
    out = tmp_path / "two"
    (out / "shards").mkdir(parents=True)
    (out / "shards" / "clips-u1-0000.tar").write_bytes(b"half-written by a killed worker")
    write_shards(list(reversed(items)), out, ShardConfig(max_count=2), PIPELINE)
    names = sorted(p.name for p in (out / "shards").iterdir())
    assert names == ["clips-u1-0000.tar", "clips-u1-0001.tar", "clips-u1-0002.tar"]
    for name in names:
        assert (out / "shards" / name).read_bytes() == (tmp_path / "one" / "shards" / name).read_bytes()


def test_size_bound_starts_a_new_shard(tmp_path):
    items = [fake_item(tmp_path, k) for k in "abc"]
    for it in items:
        with open(it["files"]["mp4"], "wb") as f:
            f.write(b"x" * 600_000)
    rows = write_shards(items, tmp_path / "s", ShardConfig(max_count=100, max_size_mb=1.0), PIPELINE)
    assert [r["shard"] for r in rows] == ["clips-u1-0000.tar", "clips-u1-0000.tar", "clips-u1-0001.tar"]


def test_no_kept_clips_writes_no_shard(tmp_path):
    assert write_shards([], tmp_path / "s", ShardConfig(), PIPELINE) == []
    assert not (tmp_path / "s" / "shards").exists()


def test_clip_without_audio_has_no_flac_member(tmp_path):
    write_shards([fake_item(tmp_path, "k", with_flac=False)], tmp_path / "s", ShardConfig(), PIPELINE)
    [sample] = list(wds.WebDataset(str(tmp_path / "s" / "shards" / "clips-u1-0000.tar"), shardshuffle=False))
    assert "flac" not in sample


def test_tables_are_written_as_parquet_and_csv(tmp_path):
    import pyarrow.parquet as pq

    paths = write_table([{"id": "a", "reason": "too_short"}], tmp_path / "rejects")
    assert [p.rsplit("/", 1)[1] for p in paths] == ["rejects.parquet", "rejects.csv"]
    assert pq.read_table(paths[0]).to_pylist() == [{"id": "a", "reason": "too_short"}]
    write_table([], tmp_path / "empty")
    assert (tmp_path / "empty.parquet").exists() and not list(tmp_path.glob(".*tmp"))


@pytest.mark.parametrize("field", ["files", "analysis"])
def test_private_fields_are_stripped(field, tmp_path):
    assert field not in shard_json(fake_item(tmp_path, "k"), PIPELINE)


def test_the_reader_indexes_what_the_writer_wrote_and_names_missing_members(tmp_path):
    from curation.shards import index_clip_shard, missing_members, read_clip_shard, read_members

    items = [fake_item(tmp_path, "a"), fake_item(tmp_path, "b", with_flac=False)]
    write_shards(items, tmp_path / "out", ShardConfig(), PIPELINE)
    shard = tmp_path / "out" / "shards" / "clips-u1-0000.tar"
    index = index_clip_shard(shard)
    assert list(index) == ["a", "b"] and set(index["a"]) == {"mp4", "flac", "json", "txt"}
    assert read_members(shard, index["a"], ("mp4",)) == {"mp4": b"mp4-a"}  # one member, by its byte span
    samples = read_clip_shard(shard)
    assert [s["__key__"] for s in samples] == ["a", "b"] and samples[0]["flac"] == b"flac-a"
    assert missing_members(samples[0]) == [] and missing_members(samples[1]) == ["flac"]
