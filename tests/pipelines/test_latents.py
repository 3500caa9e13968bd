"""Latent DAG: clip shards become bucketed latent shards the training loader reads; bad clips
become rejects with a reason; `tandem latents` records stats and an MLflow run and resumes."""

import hashlib
import io
import json
import time

import mlflow
import numpy as np
import pytest
import torch

from curation.sample_media import make_clip
from pipelines.cli import main
from pipelines.latents_cmd import pending_shards
from pipelines.latents_encode import encode_shard
from training.buckets import BucketConfig
from training.clip_encoder import ClipEncoder, EncoderConfig
from training.latent_shards import read_latent_format
from training.loader import LatentLoader, LoaderConfig

STATS_KEYS = {"source_manifest_sha256", "clips_in", "encoded", "skipped", "buckets", "seconds"}


def _flac(seconds: float) -> bytes:
    import soundfile

    t = np.arange(int(16000 * seconds)) / 16000
    buf = io.BytesIO()
    soundfile.write(buf, np.stack([np.sin(2 * np.pi * 440 * t)] * 2, axis=1).astype(np.float32), 16000,
                    format="FLAC")
    return buf.getvalue()


def clip_sample(key: str, path, seconds: float, size: tuple[int, int], fps: int = 25, **members) -> dict:
    """One clip shard sample with the json fields the encoder buckets by."""
    meta = {"start_s": 0.0, "end_s": seconds, "fps": fps, "width": size[0], "height": size[1],
            "audio": {"sample_rate": 16000, "channels": 2}}
    sample = {"__key__": key, "mp4": path.read_bytes() if path else b"", "flac": _flac(seconds),
              "json": json.dumps(meta).encode(), "txt": f"caption of {key}".encode()}
    sample.update(members)
    return {k: v for k, v in sample.items() if v is not None}


def write_clip_shard(path, samples: list[dict]) -> None:
    import webdataset as wds

    path.parent.mkdir(parents=True, exist_ok=True)
    with wds.TarWriter(str(path)) as sink:
        for s in samples:
            sink.write(s)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """A landscape 1.2 s clip, a portrait 0.7 s clip and a 0.3 s clip (too short for any bucket)."""
    d = tmp_path_factory.mktemp("media")
    return {"wide": (make_clip(d / "wide.mp4", [1.2], size=(192, 108)).path, 1.2, (192, 108)),
            "tall": (make_clip(d / "tall.mp4", [0.7], size=(96, 160)).path, 0.7, (96, 160)),
            "short": (make_clip(d / "short.mp4", [0.3], size=(192, 108)).path, 0.3, (192, 108))}


@pytest.mark.timeout(120)
def test_bad_clips_become_rejects_and_good_ones_loader_ready_latents(tmp_path, clips):
    wide, _, size = clips["wide"]
    write_clip_shard(tmp_path / "clips" / "clips-000000.tar", [
        clip_sample("a_good", *clips["wide"]),
        clip_sample("b_short", *clips["short"]),
        clip_sample("c_garbage", None, 1.2, size, mp4=b"this is not an mp4"),
        clip_sample("d_no_flac", wide, 1.2, size, flac=None),
    ])
    out = tmp_path / "latents"
    out.mkdir()
    [shard] = pending_shards(tmp_path / "clips", out)
    row = encode_shard(ClipEncoder(EncoderConfig()), BucketConfig(), shard, out)
    assert (row["encoded"], row["skipped"], row["failed"]) == (1, 3, False)
    assert pending_shards(tmp_path / "clips", out) == []

    rejects = [json.loads(line) for line in (out / "clips-000000.rejects.jsonl").read_text().splitlines()]
    assert {r["key"]: r["reason"] for r in rejects} == {
        "b_short": "too_short", "c_garbage": "encode_failed", "d_no_flac": "incomplete_sample"}
    assert all(r["shard"] == "clips-000000.tar" and r["message"] for r in rejects)
    assert "flac" in next(r for r in rejects if r["key"] == "d_no_flac")["message"]

    batch = next(LatentLoader(LoaderConfig(shards=str(out), batch_size=1), 0, 1))
    meta = batch["meta"][0]
    assert meta["bucket"] == "1s_64x112"  # 1.2 s of 16:9 footage: the 1 s landscape bucket
    assert batch["video"].shape == (1, 8, 3, 8, 14)  # 9 frames at 8 fps, 64x112 -> debug VAE latents
    assert batch["audio"].shape[:2] == (1, 8) and batch["audio"].shape[2] == meta["audio_shape"][1]
    assert meta["caption_used"] == "caption of a_good" and batch["text_mask"].any()
    assert torch.isfinite(batch["video"]).all() and batch["video"].std() > 0

    from model.dit import DualDiT
    from model.presets import get_preset

    v, a = DualDiT(get_preset("debug"))(batch["video"], batch["audio"], torch.rand(1), torch.rand(1),
                                        batch["text_emb"], batch["text_mask"])
    assert v.shape == batch["video"].shape and a.shape == batch["audio"].shape


def _runs(store, experiment="tandem-latents"):
    client = mlflow.MlflowClient(f"sqlite:///{store / 'mlruns.db'}")
    exp = client.get_experiment_by_name(experiment)
    return client, client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])


@pytest.mark.slow  # local Ray
@pytest.mark.timeout(300)
def test_tandem_latents_encodes_records_and_resumes(tmp_path, clips, local_ray, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    curated = tmp_path / "curated"  # the layout `tandem curate --out curated` leaves
    write_clip_shard(curated / "shards" / "clips-000000.tar",
                     [clip_sample("a_wide", *clips["wide"]), clip_sample("b_short", *clips["short"])])
    write_clip_shard(curated / "shards" / "clips-000001.tar", [clip_sample("c_tall", *clips["tall"])])
    (curated / "manifest.parquet").write_bytes(b"stand-in for curation's manifest")
    out = tmp_path / "latents"
    cmd = ["latents", str(curated / "shards"), "--out", str(out), "actors=1"]  # trailing override
    workdir = tmp_path / "workdir"  # MLflow's default store is that of the working directory, not --out's
    workdir.mkdir()
    monkeypatch.chdir(workdir)

    started = time.time()
    assert main(cmd) == 0
    wall_s = time.time() - started
    printed = capsys.readouterr().out
    assert "2 encoded" in printed and "too_short=1" in printed

    stats = json.loads((out / "stats.json").read_text())
    assert set(stats) == STATS_KEYS
    assert stats["source_manifest_sha256"] == hashlib.sha256(
        (curated / "manifest.parquet").read_bytes()).hexdigest()
    assert (stats["clips_in"], stats["encoded"], stats["skipped"]) == (3, 2, {"too_short": 1})
    assert stats["buckets"] == {"1s_64x112": 1, "0.5s_112x64": 1}

    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [(r["key"], r["shard"], r["bucket"]) for r in manifest] == [
        ("a_wide", "clips-000000.tar", "1s_64x112"), ("c_tall", "clips-000001.tar", "0.5s_112x64")]
    assert manifest[0]["video_shape"] == [8, 3, 8, 14] and manifest[1]["video_shape"] == [8, 2, 14, 8]
    assert manifest[0]["duration"] == pytest.approx(9 / 8) and manifest[1]["duration"] == pytest.approx(5 / 8)
    [reject] = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert (reject["key"], reject["shard"], reject["reason"]) == ("b_short", "clips-000000.tar", "too_short")

    # Each shard says what made it: encoders, weights, channels, strides, rates, text width.
    fmt = read_latent_format(out)
    assert (fmt.video_encoder, fmt.audio_encoder, fmt.video_weights) == ("tandem:debug", "tandem:debug", "random-seed0")
    assert (fmt.video_channels, fmt.audio_channels, fmt.text_width) == (8, 8, 64)
    assert tuple(fmt.video_stride) == (4, 8, 8) and fmt.latent_fps == 2.0 and fmt.fps == 8.0
    assert fmt.audio_latent_rate * fmt.audio_stride == fmt.sample_rate
    assert sorted(p.name for p in out.glob("*.format.json")) == ["clips-000000.format.json", "clips-000001.format.json"]

    loader = LatentLoader(LoaderConfig(shards=str(out), batch_size=1), 0, 1)
    shapes = {tuple(next(loader)["video"].shape[2:]) for _ in range(len(loader))}
    assert shapes == {(3, 8, 14), (2, 14, 8)}  # both buckets, batched separately

    client, [run] = _runs(workdir / "runs")
    assert run.info.run_name == "latents …/curated/shards actors=1" and run.info.status == "FINISHED"
    assert (run.info.end_time - run.info.start_time) / 1000 >= 0.8 * wall_s
    assert run.data.params["buckets.fps"] == "8.0" and run.data.params["encoder.video"] == "tandem"
    assert run.data.metrics["encoded"] == 2 and run.data.metrics["skipped.too_short"] == 1
    assert run.data.metrics["clips_per_s"] > 0
    assert run.data.tags["source_manifest_sha256"] == stats["source_manifest_sha256"]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "stats.json", "rejects.jsonl", "manifest.jsonl"} <= artifacts
    from pipelines.lineage import logged  # issue 25: what it read and wrote, as MLflow datasets

    assert logged(client, run.info.run_id) == {
        # sha256s to MLflow's 36 characters; a stand-in manifest: no curation run made it
        "clip-shards": ("input", stats["source_manifest_sha256"][:32], None),
        "latent-shards": ("output", hashlib.sha256((out / "manifest.jsonl").read_bytes()).hexdigest()[:32], None)}
    assert run.data.tags["lineage.stage"] == "latents" and len(run.data.tags["lineage.config_digest"]) >= 8

    # The same command again: every shard is done, nothing is encoded, the outputs stay.
    written = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")}
    assert main(cmd) == 0
    assert "0 shards encoded by this run" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")} == written
    again = json.loads((out / "stats.json").read_text())
    assert {k: v for k, v in again.items() if k != "seconds"} == {k: v for k, v in stats.items() if k != "seconds"}
    _, [_, rerun] = _runs(workdir / "runs")
    assert rerun.data.metrics["shards_encoded"] == 0 and "clips_per_s" not in rerun.data.metrics

    # Other buckets would mix two kinds of latents in one directory: refused.
    assert main([*cmd, "buckets.fps=12"]) == 2
    assert "different encoder/bucket config" in capsys.readouterr().out
