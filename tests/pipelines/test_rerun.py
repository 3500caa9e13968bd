"""Running it again must just work (issue 29): what is done is decided by content, not by
timestamps, so a second run does no work and leaves the same bytes; one changed input
redoes its own unit and the latents of its clips, nothing else; and the tables hold
nothing that differs from run to run (memory addresses in ffmpeg's messages)."""

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from curation.pipeline import CurationConfig
from curation.sample_media import make_clip
from pipelines.config_loader import load_config
from pipelines.curate import run_curation

# The cheapest real DAG: no Whisper, no MLflow; the sources are a few seconds long.
OVERRIDES = ["skip=[transcribe]", "track=false"]
TABLES = ("manifest.csv", "manifest.parquet", "rejects.csv", "rejects.parquet")


def curate(raw: Path, out: Path):
    return run_curation([str(raw)], out, load_config(CurationConfig, None, OVERRIDES), in_process=True)


def digests(out: Path) -> dict[str, str]:
    """sha256 of the tables and of every shard, by name."""
    names = [*TABLES, *(f"shards/{p.name}" for p in sorted((out / "shards").glob("*.tar")))]
    return {n: hashlib.sha256((out / n).read_bytes()).hexdigest() for n in names}


@pytest.fixture(scope="module")
def raw(tmp_path_factory, headless_mp4):
    """Two short clips and an mp4 without its index, whose ffprobe message names an address."""
    raw = tmp_path_factory.mktemp("raw")
    make_clip(raw / "a.mp4", [1.2, 1.4], size=(128, 96))
    make_clip(raw / "b.mp4", [1.6], size=(128, 96))
    shutil.copyfile(headless_mp4, raw / "headless.mp4")
    return raw


@pytest.fixture(scope="module")
def first(raw, tmp_path_factory):
    out = tmp_path_factory.mktemp("first") / "out"
    return out, curate(raw, out)


@pytest.mark.timeout(300)
def test_a_second_run_and_a_run_after_touching_every_input_do_no_work(raw, first):
    out, result = first
    before = digests(out)
    assert result.stats["sources_processed"] == 3 and result.manifest  # something to keep
    again = curate(raw, out)
    assert again.stats["sources_processed"] == 0 and digests(out) == before
    for path in raw.iterdir():  # new mtimes, the same bytes (what the demo's old re-run did)
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    touched = curate(raw, out)
    assert touched.stats["sources_processed"] == 0 and digests(out) == before


@pytest.mark.timeout(300)
def test_two_runs_into_fresh_folders_write_identical_tables_and_shards(raw, first, tmp_path):
    out, _ = first
    curate(raw, tmp_path / "out")
    assert digests(tmp_path / "out") == digests(out)
    [headless] = [r for r in _rejects(out) if r["source_path"].endswith("headless.mp4")]
    assert "moov atom not found" in headless["message"] and "0x" not in headless["message"]


def _rejects(out: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(out / "rejects.parquet").to_pylist()


def _encode_in_process(todo, out_dir, cfg, address):
    """pipelines.latents_cmd' Ray step, in this process (one actor's work, shard by shard)."""
    from pipelines.latents_encode import encode_shard
    from training.clip_encoder import ClipEncoder

    encoder = ClipEncoder(cfg.encoder)
    for shard in todo:
        encode_shard(encoder, cfg.buckets, shard, out_dir)


@pytest.mark.timeout(300)
def test_one_changed_byte_redoes_its_unit_and_the_latents_of_its_clips(raw, tmp_path, monkeypatch, caplog):
    from pipelines import latents_cmd

    monkeypatch.setattr(latents_cmd, "_encode_pending", _encode_in_process)
    mine = tmp_path / "raw"
    shutil.copytree(raw, mine)
    curated, encoded = tmp_path / "curated", tmp_path / "latents"
    first = curate(mine, curated)
    latents_cmd.run_latents_job(curated, encoded, track=False)
    shards_of = {Path(r["source_path"]).name: r["shard"] for r in first.manifest}
    kept = {p.name: p.stat().st_mtime_ns for p in encoded.glob("*.tar")}
    assert set(kept) == set(shards_of.values()) and shards_of["a.mp4"] != shards_of["b.mp4"]

    data = (mine / "a.mp4").read_bytes()  # one byte of its muxer tag: the same size, still a video
    (mine / "a.mp4").write_bytes(data.replace(b"Lavf", b"Lavg", 1))
    second = curate(mine, curated)
    assert second.stats["sources_processed"] == 1
    now = {Path(r["source_path"]).name: r["shard"] for r in second.manifest}
    assert now["b.mp4"] == shards_of["b.mp4"] and now["a.mp4"] != shards_of["a.mp4"]
    assert sorted(p.name for p in (curated / "shards").iterdir()) == sorted(set(now.values()))

    with caplog.at_level("INFO", logger="pipelines.latents_cmd"):
        again = latents_cmd.run_latents_job(curated, encoded, track=False)
    assert "1 latent shard(s) were made from clip shards that changed or are gone" in caplog.text
    assert again.shards_encoded == 1 and not again.shards_failed
    assert sorted(p.name for p in encoded.glob("*.tar")) == sorted(set(now.values()))
    assert (encoded / now["b.mp4"]).stat().st_mtime_ns == kept[now["b.mp4"]]  # b's latents were kept
    assert {r["shard"] for r in again.manifest} == set(now.values())

    # The same clip shards into a fresh folder: the same latents (the debug encoders' fixed seed).
    latents_cmd.run_latents_job(curated, tmp_path / "fresh", track=False)
    assert (tmp_path / "fresh" / "manifest.jsonl").read_bytes() == (encoded / "manifest.jsonl").read_bytes()
    for shard in encoded.glob("*.tar"):
        assert _members(shard) == _members(tmp_path / "fresh" / shard.name)


def _members(tar_path: Path) -> dict[str, str]:
    """sha256 of each member's bytes (the tar headers' mtimes aside)."""
    import tarfile

    with tarfile.open(tar_path) as tar:
        return {m.name: hashlib.sha256(tar.extractfile(m).read()).hexdigest() for m in tar.getmembers()}


def test_the_demo_makes_its_footage_once_and_again_only_what_changed(tmp_path, monkeypatch):
    from pipelines import demo

    made = []

    def stand_in(kind):
        def make(path, *args, **kwargs):
            made.append(Path(path).name)
            Path(path).write_bytes(f"{kind} {args} {sorted(kwargs.items())}".encode())
        return make

    monkeypatch.setattr(demo, "make_clip", stand_in("clip"))
    monkeypatch.setattr(demo, "make_speech_clip", stand_in("speech"))
    footage = tmp_path / "footage"
    first = demo.gather_footage(footage)
    assert "three shots.mp4" in made and (footage / "broken.mp4").read_text() == "not a video"
    written = {p.name: p.stat().st_mtime_ns for p in first}

    made.clear()
    assert demo.gather_footage(footage) == first and made == []
    assert {p.name: p.stat().st_mtime_ns for p in first} == written  # not rewritten: the same mtimes

    (footage / "three shots.mp4").write_bytes(b"damaged")
    (footage / "broken.mp4").unlink()
    demo.gather_footage(footage)
    assert made == ["three shots.mp4"] and (footage / "broken.mp4").read_text() == "not a video"


def test_the_demo_makes_outputs_of_another_config_again_instead_of_refusing_them(tmp_path):
    from pipelines.config_loader import output_hash
    from pipelines.demo import _start_over_where_config_changed
    from pipelines.latents_cmd import CLAIM, LatentsConfig

    cfg = load_config(CurationConfig, None, OVERRIDES)
    for folder in ("curated/.work/units", "latents", "train"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "curated/.work/units/u.json").write_text("{}")
    (tmp_path / "curated/.work/config_hash").write_text(output_hash(cfg))
    (tmp_path / "latents/clips-u-0000.tar").write_bytes(b"")
    (tmp_path / "latents" / CLAIM).write_text(json.dumps({"config_hash": output_hash(LatentsConfig())}))
    _start_over_where_config_changed(tmp_path, cfg)  # made under this config: kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curated", "latents", "train"]

    (tmp_path / "latents" / CLAIM).write_text(json.dumps({"config_hash": "an older tandem's"}))
    _start_over_where_config_changed(tmp_path, cfg)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curated"]  # latents and what was trained on them
    (tmp_path / "curated/.work/config_hash").write_text("an older tandem's")
    _start_over_where_config_changed(tmp_path, cfg)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow  # the demo's curation on local Ray, twice (its latents and training: the tests above)
@pytest.mark.timeout(900)
def test_the_demo_runs_twice_in_the_same_folder(tmp_path):
    import os
    import subprocess
    import sys

    import mlflow

    cmd = [str(Path(sys.executable).parent / "tandem"), "demo", "--no-train", "--out", str(tmp_path / "demo")]
    workdir = tmp_path / "workdir"  # MLflow's default store: runs/ of the working directory
    workdir.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    runs = [subprocess.run(cmd, capture_output=True, text=True, timeout=400, cwd=workdir, env=env) for _ in range(2)]
    for run in runs:
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    client = mlflow.MlflowClient(f"sqlite:///{workdir / 'runs' / 'mlruns.db'}")
    found = client.search_runs([client.get_experiment_by_name("tandem-curation").experiment_id])
    assert {(r.info.run_name, r.info.status) for r in found} == {("demo curate", "FINISHED")}
    second = runs[1].stdout + runs[1].stderr
    assert "(0 already done)" in runs[0].stdout + runs[0].stderr
    assert "Traceback" not in second
    [line] = [ln for ln in second.splitlines() if "input files in" in ln and "work units" in ln]
    units = line.split(" work units")[0].rsplit(" ", 1)[1]
    assert f"({units} already done)" in line  # curation: nothing to redo


def test_the_demo_trains_again_only_when_its_latents_or_its_recipe_changed(tmp_path):
    from pipelines.config_loader import save_config
    from pipelines.demo import _restart_on_new_data
    from pipelines.train_cmd import load_train_recipe

    latents, storage = tmp_path / "latents", tmp_path / "train"
    latents.mkdir()
    (latents / "manifest.jsonl").write_text('{"key": "a"}\n')
    _restart_on_new_data(latents, storage)
    (storage / "checkpoints").mkdir()
    _restart_on_new_data(latents, storage)  # same latents: the run resumes
    assert (storage / "checkpoints").exists()
    (latents / "manifest.jsonl").write_text('{"key": "b"}\n')
    _restart_on_new_data(latents, storage)  # other latents: no stale checkpoints to resume from
    assert not (storage / "checkpoints").exists() and (storage / "trained_on.sha256").exists()

    recipe = load_train_recipe("debug_cpu", [f"data.shards={latents}", f"storage={storage}"])
    save_config(recipe, storage / "recipe.yaml")
    (storage / "mlflow_run_id").write_text("0123")
    _restart_on_new_data(latents, storage, recipe)  # the recipe its run was started with: resumed
    assert (storage / "mlflow_run_id").exists()
    recipe.steps += 1  # a tandem whose demo recipe changed: `tandem train` would refuse; the demo starts over
    _restart_on_new_data(latents, storage, recipe)
    assert not (storage / "mlflow_run_id").exists() and (storage / "trained_on.sha256").exists()
