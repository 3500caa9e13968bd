"""`tandem train` checks, before Ray starts and within seconds, that the recipe can run: data
that exists and is not empty, latents made by the encoders its sample decoder names, a preset
whose patches fit the latents, a storage whose checkpoints are of the same model. Each
failure exits 2 and says what to change."""

import json
import time

import pytest

from pipelines.cli import main
from pipelines.config_loader import save_config
from pipelines.latents_cmd import LatentsConfig
from pipelines.latents_encode import encode_shard
from training.buckets import BucketConfig
from training.clip_encoder import ClipEncoder, EncoderConfig
from training.latent_shards import manifest_rows

TRAIN = ["train", "--config", "debug_cpu"]


@pytest.fixture(autouse=True)
def no_ray_may_start(monkeypatch):
    """Every case here must be decided before Ray: starting it fails the test."""
    import pipelines.ray_train

    def refuse(*args, **kwargs):
        raise AssertionError("Ray was started although the recipe cannot run")

    monkeypatch.setattr(pipelines.ray_train, "init_ray", refuse)


def test_a_fresh_directory_exits_2_in_seconds_and_says_how_to_make_latents(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the recipe's data.shards (runs/latents) does not exist here
    start = time.perf_counter()
    assert main(TRAIN) == 2
    assert time.perf_counter() - start < 10
    err = capsys.readouterr().err
    assert "data.shards='runs/latents': no such directory" in err
    assert "tandem curate" in err and "tandem latents" in err and "tandem demo" in err

    (tmp_path / "runs" / "latents").mkdir(parents=True)
    assert main(TRAIN) == 2
    assert "holds no latent shards" in capsys.readouterr().err


def test_debug_latents_under_the_1b_recipe_exit_2_with_both_ways_out(tmp_path, capsys):
    """The first thing a new user tries: `tandem latents` with the defaults, then the 1b recipe."""
    import torch

    from training.encoders import describe
    from training.latent_shards import write_latent_shard

    latents = tmp_path / "latents"
    sample = {"key": "k", "video": torch.zeros(8, 3, 8, 14), "audio": torch.zeros(8, 29), "text": torch.zeros(4, 64)}
    write_latent_shard(latents / "clips-000000.tar", [sample], describe(EncoderConfig(), 8.0))
    save_config(LatentsConfig(), latents / "config.yaml")
    assert main(["train", "--config", "1b_8gpu", f"data.shards={latents}", f"storage={tmp_path / 'train'}"]) == 2
    err = capsys.readouterr().err
    assert "video_encoder: latents 'tandem:debug' vs decoder 'ltx2'" in err
    assert "set sample.decoder.video=tandem" in err  # decode what is there...
    assert "--config latents_1b_ltx2" in err  # ...or make what the preset is sized for


@pytest.fixture(scope="module")
def stereo_latents(tmp_path_factory):
    """Latents made through the real encoding path by the debug VAEs with the stereo audio VAE,
    with the config.yaml and manifest `tandem latents` writes beside them."""
    from curation.sample_media import make_clip
    from tests.pipelines.test_latents import clip_sample, write_clip_shard

    root = tmp_path_factory.mktemp("stereo")
    clip = make_clip(root / "wide.mp4", [0.7], size=(112, 64)).path  # the 0.5 s 64x112 bucket: 5 frames
    write_clip_shard(root / "clips" / "clips-000000.tar", [clip_sample("c0", clip, 0.7, (112, 64))])
    cfg = LatentsConfig(encoder=EncoderConfig(audio_preset="debug_stereo"), buckets=BucketConfig())
    out = root / "latents"
    out.mkdir()
    row = encode_shard(ClipEncoder(cfg.encoder, "cpu"), cfg.buckets, root / "clips" / "clips-000000.tar", out)
    assert row["encoded"] == 1
    save_config(cfg, out / "config.yaml")
    (out / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in manifest_rows(out / "clips-000000.tar")))
    return out


@pytest.mark.slow  # encodes a clip with the debug encoders: ~15 s of imports and encoding on 2 busy cores
def test_latents_and_sample_decoder_must_be_the_same_encoders(stereo_latents, tmp_path, capsys):
    args = [*TRAIN, f"data.shards={stereo_latents}", f"storage={tmp_path / 'train'}"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "audio_encoder: latents 'tandem:debug_stereo' vs decoder 'tandem:debug'" in err
    assert "set sample.decoder.audio_preset=debug_stereo" in err  # the fix, from the latents' config.yaml

    weights = tmp_path / "video_vae.safetensors"  # same architecture, other weights
    from model.checkpoint import save
    from model.video_vae import VIDEO_VAE_PRESETS, VideoVAE

    save(VideoVAE(VIDEO_VAE_PRESETS["debug"]), weights)
    assert main([*args, "sample.decoder.audio_preset=debug_stereo", f"sample.decoder.video_path={weights}"]) == 2
    err = capsys.readouterr().err
    assert "video_weights: latents 'random-seed0'" in err and "sample.decoder.video_path=" in err

    assert main([*args, "sample.decoder.audio_preset=debug_stereo", "sample.decoder.video_path=/no/such/vae"]) == 2
    assert "sample.decoder.video_path=/no/such/vae: no such file or folder" in capsys.readouterr().err


@pytest.mark.slow
def test_preset_patches_must_fit_and_storage_must_hold_the_same_model(stereo_latents, tmp_path, capsys):
    from model.config import to_dict
    from pipelines.train_cmd import load_train_recipe
    from training.trainer import model_config

    args = [*TRAIN, f"data.shards={stereo_latents}", "sample.decoder.audio_preset=debug_stereo"]
    storage = tmp_path / "train" / "checkpoints"
    storage.mkdir(parents=True)
    (storage / "latest").write_text("step00000005")
    other = model_config(load_train_recipe("debug_cpu", [f"data.shards={tmp_path}"]))  # no format: default geometry
    (storage / "model.json").write_text(json.dumps(to_dict(other)))
    assert main([*args, f"storage={tmp_path / 'train'}"]) == 2
    err = capsys.readouterr().err
    assert "holds checkpoints of another model (fps: 24.0 vs 8.0)" in err  # its latents were 24 fps, these 8

    odd = tmp_path / "odd"  # latents whose 7x7 grid a 2x2 patch cannot split
    odd.mkdir()
    for f in stereo_latents.iterdir():
        (odd / f.name).write_bytes(f.read_bytes())
    rows = [dict(json.loads(line), video_shape=[8, 2, 7, 7]) for line in (odd / "manifest.jsonl").read_text().splitlines()]
    (odd / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main([*TRAIN, f"data.shards={odd}", "sample.decoder.audio_preset=debug_stereo",
                 f"storage={tmp_path / 'fresh'}"]) == 2
    assert "do not split into preset 'debug''s 1x2x2 patches" in capsys.readouterr().err


def test_a_storage_holding_a_run_resumes_only_under_the_config_it_started_with(tmp_path, monkeypatch, capsys):
    """Re-running `tandem train` on a storage continues its run (and MLflow run): with another
    engine.lr or steps it would go on under settings its params and recipe.yaml do not show."""
    from pipelines.preflight import preflight
    from pipelines.train_cmd import load_train_recipe
    from tests.training.conftest import make_latent_shards

    monkeypatch.chdir(tmp_path)  # the recipe's relative data.shards and storage
    shards = make_latent_shards(tmp_path / "runs" / "latents")
    started = load_train_recipe("debug_cpu", [f"data.shards={shards.absolute()}"])  # recorded as run_training makes it
    storage = tmp_path / "runs" / "train_debug_cpu"
    save_config(started, storage / "recipe.yaml")
    (storage / "mlflow_run_id").write_text("0123")  # started, killed before its first checkpoint
    assert main([*TRAIN, "steps=6", "engine.lr=1e-3"]) == 2
    err = capsys.readouterr().err
    assert "storage=runs/train_debug_cpu holds a run of another config" in err
    assert "engine.lr 0.003 -> 0.001" in err and "steps 20 -> 6" in err and "data.shards" not in err
    # run_only fields (how often it logs and saves, where it is tracked) may change on resume
    preflight(load_train_recipe("debug_cpu", ["log_every=5", "checkpoint_every=2", f"tracking_dir={tmp_path / 'other'}"]))


def test_each_of_several_data_directories_must_exist(tmp_path, capsys):
    from tests.training.conftest import make_latent_shards

    make_latent_shards(tmp_path / "batch1", n=4, per_shard=4)
    assert main(TRAIN + [f"data.shards={tmp_path / 'batch1'},{tmp_path / 'batch2'}"]) == 2
    assert f"data.shards='{tmp_path / 'batch2'}': no such directory" in capsys.readouterr().err
    (tmp_path / "batch2").mkdir()
    assert main(TRAIN + [f"data.shards={tmp_path / 'batch1'},{tmp_path / 'batch2'}"]) == 2
    assert f"data.shards={tmp_path / 'batch2'} holds no latent shards" in capsys.readouterr().err
