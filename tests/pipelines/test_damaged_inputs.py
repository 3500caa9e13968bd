"""Damaged or too little data, and unreachable clusters, are decided before Ray starts and
reported in one line each, exit 2: a shard cut short (an interrupted copy) is named, and
skipped only when ``data.skip_damaged=true`` says so; data too small for one batch per rank
gives the numbers and the settings that would fit; an unreachable Ray address names itself.
Writers never leave half a shard under a shard's name."""

import os
import tarfile

import pytest

from curation.shards import DamagedShard, ShardConfig, index_shard, write_unit_shards
from curation.storage import Store
from pipelines.cli import main
from tests.training.conftest import make_latent_shards, write_clip_shard

TRAIN = ["train", "--config", "debug_cpu"]
pytestmark = pytest.mark.timeout(60)


@pytest.fixture(autouse=True)
def no_ray_may_start(monkeypatch):
    """Every case here is decided before Ray: starting it fails the test."""
    import pipelines.latents_cmd
    import pipelines.ray_train

    def refuse(*args, **kwargs):
        raise AssertionError("Ray was started although the inputs cannot be used")

    monkeypatch.setattr(pipelines.ray_train, "init_ray", refuse)
    monkeypatch.setattr(pipelines.latents_cmd, "_encode_pending", refuse)


def cut_short(path, fraction=2 / 3):
    """What an interrupted copy leaves: the first ``fraction`` of the file."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def train(tmp_path, shards, *overrides):
    return main([*TRAIN, f"data.shards={shards}", f"storage={tmp_path / 'train'}", *overrides])


def test_a_shard_cut_short_stops_train_before_ray_naming_it_on_its_own_line(tmp_path, capsys):
    shards = make_latent_shards(tmp_path / "latents", n=24, per_shard=8)
    damaged = cut_short(shards / "latents-00001.tar")
    assert train(tmp_path, shards) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    named = [line for line in err.splitlines() if str(damaged) in line]
    assert len(named) == 1 and ("cut short" in named[0] or "damaged" in named[0])
    assert "latents-00000.tar" not in err and "latents-00002.tar" not in err  # whole shards are not named
    assert "data.skip_damaged=true" in err


def test_skip_damaged_plans_over_the_other_shards_and_names_what_it_left_out(tmp_path, monkeypatch, capsys):
    from types import SimpleNamespace

    import pipelines.ray_train
    from pipelines.preflight import preflight
    from pipelines.train_cmd import load_train_recipe
    from training.loader import LatentLoader

    shards = make_latent_shards(tmp_path / "latents", n=24, per_shard=8)
    damaged = cut_short(shards / "latents-00001.tar")
    cfg = load_train_recipe("debug_cpu", [f"data.shards={shards}", f"storage={tmp_path / 'train'}", "data.skip_damaged=true"])
    data = preflight(cfg)
    assert list(data.damaged) == [str(damaged)] and len(data.entries) == 16
    # Every rank's loader leaves out the same shard, and the run's MLflow tag names it.
    loaders = [LatentLoader(cfg.data, rank, 2) for rank in range(2)]
    assert all(set(loader.damaged) == {str(damaged)} for loader in loaders)
    assert not any(e.shard == str(damaged) for e in loaders[0].entries)
    assert pipelines.ray_train.damaged_tag(loaders[0].damaged) == "latents-00001.tar"
    assert pipelines.ray_train.damaged_tag({}) == "none"
    with pytest.raises(DamagedShard, match="latents-00001.tar"):  # without the setting, a loader refuses it
        LatentLoader(load_train_recipe("debug_cpu", [f"data.shards={shards}"]).data)

    monkeypatch.setattr(pipelines.ray_train, "run_training", lambda cfg, **kw: SimpleNamespace(error=None))
    monkeypatch.setattr(pipelines.ray_train, "register_trained", lambda cfg: SimpleNamespace(uri="models:/tandem-dit/1"))
    assert train(tmp_path, shards, "data.skip_damaged=true") == 0
    err = capsys.readouterr().err
    assert "leaving out 1 damaged shard(s)" in err and str(damaged) in err


def test_a_cut_between_two_members_is_damage_too(tmp_path):
    """tarfile alone reads a tar cut exactly at a member boundary as a shorter, whole one."""
    shard = make_latent_shards(tmp_path / "latents", n=4, per_shard=4) / "latents-00000.tar"
    with tarfile.open(shard) as tar:
        boundary = tar.getmembers()[5].offset  # the header of the 6th member
    os.truncate(shard, boundary)
    with tarfile.open(shard) as tar:
        assert len(tar.getmembers()) == 5  # no error from tarfile
    with pytest.raises(DamagedShard, match="no end-of-archive block"):
        index_shard(shard)


@pytest.mark.parametrize("clips, fits", [
    (1, ["data.batch_size=1 engine.micro_batch_per_rank=1 workers.num_workers=1"]),
    (2, ["data.batch_size=1 engine.micro_batch_per_rank=1", "workers.num_workers=1"]),
    (3, ["data.batch_size=1 engine.micro_batch_per_rank=1", "workers.num_workers=1", "data.drop_last=false"]),
])
def test_too_few_samples_for_a_batch_per_rank_exit_2_with_numbers_and_settings_that_fit(tmp_path, capsys, clips,
                                                                                      fits):
    from pipelines.train_cmd import load_train_recipe
    from training.loader import LatentLoader

    shards = make_latent_shards(tmp_path / "latents", n=clips, per_shard=1)  # one bucket
    assert train(tmp_path, shards) == 2  # debug_cpu: 2 ranks x batch 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert f"{clips} samples in 1 buckets" in err
    assert "data.batch_size=2" in err and "workers.num_workers=2 ranks" in err
    offered = err.split("Settings that fit: ")[1].split("; or add data")[0].split(" | ")
    assert offered == fits
    for fit in offered:  # each offer is what the loader itself accepts, on every rank
        cfg = load_train_recipe("debug_cpu", [f"data.shards={shards}", *fit.split()])
        for rank in range(cfg.workers.num_workers):
            assert len(LatentLoader(cfg.data, rank, cfg.workers.num_workers)) >= 1


def test_a_config_error_anywhere_is_one_line_exit_2(monkeypatch, capsys):
    import pipelines.latents_cmd
    from model.config import ConfigError

    def claim(args):
        raise ConfigError("runs/x/latents holds latents of other clip shards: use another --out")

    monkeypatch.setattr(pipelines.latents_cmd, "main", claim)
    assert main(["latents", "clips", "--out", "runs/x/latents"]) == 2
    err = capsys.readouterr().err
    assert err == "tandem latents: runs/x/latents holds latents of other clip shards: use another --out\n"


@pytest.mark.parametrize("action", [["train", "--", "--config", "debug_cpu"], ["status", "raysubmit_123"]])
def test_an_unreachable_submit_address_is_one_line_naming_it(capsys, action):
    assert main(["submit", "--address", "http://127.0.0.1:1", *action]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "http://127.0.0.1:1" in err and "does not answer" in err


def test_latents_names_a_damaged_clip_shard_before_ray_and_leaves_it_for_the_next_run(tmp_path, capsys):
    from pipelines.latents_cmd import run_latents_job, summary

    clips = tmp_path / "clips"
    sample = {"json": {"start_s": 0.0, "end_s": 2.0}, "mp4": os.urandom(20000), "flac": os.urandom(20000)}
    shard = cut_short(write_clip_shard(clips / "clips-00000.tar", {"a": sample, "b": sample}))
    result = run_latents_job(clips, tmp_path / "latents", track=False)  # Ray refused: never needed
    assert result.shards_failed == ["clips-00000.tar"] and result.shards_encoded == 0
    assert [r["reason"] for r in result.rejects] == ["unreadable_shard"] and str(shard) in result.rejects[0]["message"]
    assert "FAILED" in summary(result) and "clips-00000.tar" in summary(result)


def test_interrupted_writers_leave_no_shard_under_its_name_and_resume_ignores_their_leftovers(tmp_path):
    import torch

    from pipelines.latents_cmd import pending_shards
    from training.latent_shards import write_latent_shard
    from training.loader import LatentLoader, LoaderConfig

    # Clip shards: the unit fails on its second clip, after its first shard was published.
    items = [{"key": f"k{i}", "start_s": 0.0, "end_s": 1.0, "source": {"id": "s", "path": "p"}} for i in range(3)]

    def media(item):
        if item["key"] == "k1":
            raise OSError("disk full")
        return {"mp4": b"x" * 100}

    store, scratch = Store(tmp_path / "curated"), tmp_path / "scratch"
    scratch.mkdir()
    with pytest.raises(OSError):
        write_unit_shards(items, store, "u", ShardConfig(max_count=1), {}, scratch, media=media)
    assert store.list("shards") == ["clips-u-0000.tar"] and not list(scratch.iterdir())

    # Latent shards: a sample that cannot be written midway.
    out = make_latent_shards(tmp_path / "latents", n=4, per_shard=4)
    good = {"key": "a", "video": torch.zeros(8, 2, 4, 4), "audio": torch.zeros(8, 16), "text": torch.zeros(3, 64)}
    with pytest.raises(KeyError):
        write_latent_shard(out / "latents-00001.tar", [good, {"key": "b"}])
    assert sorted(p.name for p in out.iterdir()) == ["latents-00000.tar"]

    # A leftover temp file of a killed writer: not a shard to read, and its shard is still to do.
    (out / "latents-00001.tar.tmp").write_bytes(b"half a tar")
    assert len(LatentLoader(LoaderConfig(shards=str(out), batch_size=1)).entries) == 4
    clips = tmp_path / "clips"
    write_clip_shard(clips / "latents-00001.tar", {"a": {"json": {}}})
    assert pending_shards(clips, out) == [str(clips / "latents-00001.tar")]


def test_an_unreachable_cluster_address_for_train_is_one_line_in_seconds(tmp_path, monkeypatch, capsys):
    """A GCS address nothing listens on: ray.init alone retries it for many minutes."""
    import time

    import pipelines.ray_local
    import pipelines.ray_train

    monkeypatch.setattr(pipelines.ray_train, "init_ray", pipelines.ray_local.init_ray)
    shards = make_latent_shards(tmp_path / "latents", n=8, per_shard=8)
    start = time.perf_counter()
    assert main([*TRAIN, f"data.shards={shards}", f"storage={tmp_path / 'train'}", "--address", "127.0.0.1:1"]) == 2
    assert time.perf_counter() - start < 30
    err = capsys.readouterr().err
    said = [line for line in err.splitlines() if line.startswith("tandem train:")]
    assert said == [line for line in said if "cannot reach the Ray cluster, nothing answers on 127.0.0.1:1" in line]
    assert len(said) == 1 and "Traceback" not in err
