"""The whole curation DAG on local Ray: every input ends kept or rejected with its
reason, and the shards read back with the stock webdataset reader and with Ray Data."""

import io
import json
import time
from pathlib import Path

import mlflow
import pytest
import soundfile as sf
import webdataset as wds

from curation.pipeline import CurationConfig
from curation.sample_media import make_clip, make_speech_clip, speech_sample, whisper_tiny_en
from pipelines.config_loader import ConfigError, load_config
from pipelines.curate import run_curation

pytestmark = pytest.mark.slow  # the whole curation DAG on local Ray

REQUIRED_JSON = ["source.id", "source.path", "start_s", "end_s", "start_frame", "end_frame", "fps", "width",
                 "height", "audio.sample_rate", "audio.channels", "audio.loudness_lufs", "audio.speech_ratio",
                 "motion.score", "sync.offset_ms", "sync.confidence", "sync.method", "sync.action",
                 "pipeline.version", "pipeline.config_hash"]

OVERRIDES = ["shards.max_count=3", f"transcribe.model={whisper_tiny_en()}", "transcribe.language=en"]


def lookup(doc, dotted):
    for part in dotted.split("."):
        doc = doc[part]
    return doc


@pytest.fixture(scope="module")
def curated(tmp_path_factory, local_ray, three_shot_clip, video_without_audio, truncated_mp4, zero_byte_file,
            text_as_mp4, audio_only, duplicate_pair, rotated_video, vfr_video):
    raw = tmp_path_factory.mktemp("raw")
    unicode_name = make_clip(raw / "sub dir" / "ünï clip 名.mp4", [1.2, 1.8], size=(160, 120)).path
    speech = make_speech_clip(raw / "talk.mp4", speech_sample(), 9.0, start_s=8.4, size=(160, 120))
    inputs = [three_shot_clip.path, video_without_audio, truncated_mp4, zero_byte_file, text_as_mp4, audio_only,
              *duplicate_pair, rotated_video, vfr_video, unicode_name, speech]
    out = tmp_path_factory.mktemp("curated") / "out"
    cfg = load_config(CurationConfig, None, OVERRIDES)
    with pytest.MonkeyPatch.context() as env:  # MLflow's default store, of another working directory
        env.delenv("MLFLOW_TRACKING_URI")
        env.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "1")
        env.chdir(tmp_path_factory.mktemp("workdir"))
        started = time.time()
        result = run_curation([str(p) for p in inputs] + [str(raw)], out, cfg)
        result.wall_s, result.workdir = time.time() - started, Path.cwd()
    result.inputs = [str(p) for p in inputs] + [str(raw)]
    return inputs, result


EXPECTED_REJECTS = {
    "zero_byte_file": "zero_bytes",
    "text_as_mp4": "not_media",
    "truncated_mp4": "truncated",
    "audio_only": "no_video",
    "video_without_audio": "no_audio",
    "vfr_video": "no_audio",  # the VFR fixture has no audio track; it is probed and cut like any other
}


@pytest.mark.timeout(400)
def test_every_input_is_kept_or_rejected_with_a_reason(curated, request):
    inputs, result = curated
    kept_sources = {row["source_path"] for row in result.manifest}
    rejected: dict[str, set] = {}
    for row in result.rejects:
        rejected.setdefault(row["source_path"], set()).add(row["reason"])
    for path in inputs:
        assert str(path.resolve()) in kept_sources | set(rejected), f"{path} is not accounted for"
    for fixture, reason in EXPECTED_REJECTS.items():
        path = request.getfixturevalue(fixture)
        path = path.path if hasattr(path, "path") else path
        assert reason in rejected.get(str(path.resolve()), set()), fixture
    dup_a, dup_b = sorted(str(p.resolve()) for p in request.getfixturevalue("duplicate_pair"))
    assert dup_a in kept_sources and rejected.get(dup_b) == {"duplicate"}  # the first path wins
    for path in (request.getfixturevalue("rotated_video"), *inputs[-2:]):
        assert str(path.resolve()) in kept_sources, f"{path} should yield clips"
    # Cuts at frames 40 and 100; the middle shot (SMPTE bars) is a still picture.
    kept_frames = sorted(r["key"].split("_", 1)[1] for r in result.manifest if r["source_path"] == dup_a)
    assert kept_frames == ["0000000_0000040", "0000100_0000150"]
    static = [r for r in result.rejects if r["source_path"] == dup_a]
    assert [(r["id"].split("_", 1)[1], r["stage"], r["reason"]) for r in static] == [
        ("0000040_0000100", "prefilter", "static")]
    assert result.stats["clips_kept"] == len(result.manifest) > 0


def test_shards_read_back_with_webdataset(curated):
    _, result = curated
    shards = sorted(Path(result.out_dir, "shards").glob("clips-*.tar"))
    per_shard = {}
    for row in result.manifest:
        per_shard.setdefault(row["shard"], []).append(row["key"])
    assert sorted(per_shard) == [p.name for p in shards] and max(map(len, per_shard.values())) <= 3  # max_count=3
    assert all(name.startswith(f"clips-{name.split('-')[1]}-") for name in per_shard)  # one unit's clips each
    samples = list(wds.WebDataset([str(p) for p in shards], shardshuffle=False))
    assert sorted(s["__key__"] for s in samples) == [r["key"] for r in result.manifest]
    for sample in samples:
        assert {"mp4", "flac", "json", "txt"} <= set(sample)
        doc = json.loads(sample["json"])
        for name in REQUIRED_JSON:
            lookup(doc, name)
        assert doc["key"] == sample["__key__"] and doc["sync"]["action"] in ("kept", "corrected", "unmeasured")
        audio, rate = sf.read(io.BytesIO(sample["flac"]), always_2d=True)
        expected_channels = 1 if doc["source"]["path"].endswith("talk.mp4") else 2  # channels are kept
        assert rate == doc["audio"]["sample_rate"] and audio.shape[1] == doc["audio"]["channels"] == expected_channels
        assert abs(len(audio) / rate - (doc["end_s"] - doc["start_s"])) <= 1 / doc["fps"]


@pytest.mark.timeout(120)
def test_shards_read_back_with_ray_data(curated):
    import ray.data

    _, result = curated
    ds = ray.data.read_webdataset(str(Path(result.out_dir, "shards")), decoder=None)
    rows = ds.take_all()
    assert sorted(r["__key__"] for r in rows) == [r["key"] for r in result.manifest]
    assert all(r["mp4"][:12].find(b"ftyp") == 4 for r in rows)


def test_speech_is_transcribed_and_captioned(curated):
    _, result = curated
    [talk] = [r for r in result.manifest if r["source_path"].endswith("talk.mp4")]
    samples = {s["__key__"]: s for s in wds.WebDataset(str(Path(result.out_dir, "shards", talk["shard"])),
                                                      shardshuffle=False)}
    doc = json.loads(samples[talk["key"]]["json"])
    words = doc["transcript"]["words"]
    assert len(words) >= 8 and doc["transcript"]["language"] == "en"
    assert all(0 <= w["start_s"] <= w["end_s"] <= doc["end_s"] - doc["start_s"] + 0.05 for w in words)
    assert doc["caption"]["backend"] == "metadata" and doc["caption"]["parts"]["speech"]
    assert samples[talk["key"]]["txt"].decode() == doc["caption"]["text"]


def test_run_is_tracked_in_mlflow(curated):
    _, result = curated
    assert result.tracking_uri == f"sqlite:///{result.workdir / 'runs' / 'mlruns.db'}"  # not beside --out
    client = mlflow.MlflowClient(result.tracking_uri)
    run = client.get_run(result.mlflow_run_id)
    assert run.info.status == "FINISHED" and run.info.run_name.startswith("curate ")
    assert (run.info.end_time - run.info.start_time) / 1000 >= 0.8 * result.wall_s  # the whole command, Ray's start too
    assert {"version.tandem", "version.torch", "version.ray", "version.mlflow"} <= set(run.data.tags)
    assert "system/cpu_utilization_percentage" in run.data.metrics
    assert run.data.params["shards.max_count"] == "3"
    assert run.data.metrics["clips_kept"] == len(result.manifest)
    assert run.data.metrics["rejected.duplicate"] == 1
    assert any(k.startswith("stage.shots.") for k in run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(result.mlflow_run_id)}
    assert {"config.yaml", "manifest.parquet", "rejects.csv", "report.html", "report"} <= artifacts
    plots = {a.path for a in client.list_artifacts(result.mlflow_run_id, "report")}
    assert "report/duration_s.png" in plots and "report/reject_reasons.png" in plots


@pytest.mark.timeout(120)
def test_rerun_skips_finished_sources_and_reproduces_the_output(curated):
    _, result = curated
    before = sorted(p.read_bytes() for p in Path(result.out_dir, "shards").glob("*.tar"))
    again = run_curation(result.inputs, result.out_dir, load_config(CurationConfig, None, OVERRIDES))
    assert again.stats["sources_processed"] == 0 and again.stats["clips_kept"] == len(result.manifest)
    assert sorted(p.read_bytes() for p in Path(result.out_dir, "shards").glob("*.tar")) == before


def test_resuming_under_another_config_is_refused(curated):
    _, result = curated
    with pytest.raises(ConfigError, match="different config"):
        run_curation(result.inputs, result.out_dir, load_config(CurationConfig, None, [*OVERRIDES, "shots.min_clip_s=2"]))


@pytest.mark.parametrize("override, message", [
    ("transcribe.model=/no/such/model", "no such folder"),
    ("skip=[clip]", "can be skipped"),
    ("skip=[nonsense]", "can be skipped"),
])
def test_misconfiguration_fails_before_any_work(tmp_path, override, message):
    with pytest.raises(ValueError, match=message):
        run_curation([str(tmp_path)], tmp_path / "out", load_config(CurationConfig, None, [override]))
    assert not (tmp_path / "out").exists()  # nothing claimed: the fixed command starts cleanly
