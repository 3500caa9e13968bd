"""Loader: per-rank partition, per-epoch shuffle, same-bucket batches, exact resume, for latent
shards and for clip shards encoded on the fly."""

import pytest
import torch

from pipelines.config_loader import ConfigError, from_dict
from tests.training.conftest import make_latent_shards, small_buckets, write_clip_shard
from training.buckets import Bucket, BucketConfig
from training.latent_shards import write_latent_shard
from training.loader import LatentLoader, LoaderConfig


def keys(batch):
    return [m["index"] for m in batch["meta"]]


@pytest.mark.timeout(60)
def test_ranks_partition_each_epoch_and_epochs_reshuffle(latent_shards):
    cfg = LoaderConfig(shards=str(latent_shards), batch_size=2, seed=3)
    ranks = [LatentLoader(cfg, r, 2) for r in range(2)]
    epoch0 = [[k for _ in range(len(ld)) for k in keys(next(ld))] for ld in ranks]
    assert not set(epoch0[0]) & set(epoch0[1])
    assert sorted(epoch0[0] + epoch0[1]) == list(range(24))
    epoch1 = [k for _ in range(len(ranks[0])) for k in keys(next(ranks[0]))]
    assert epoch1 != epoch0[0]


@pytest.mark.timeout(60)
def test_resume_neither_repeats_nor_skips(latent_shards):
    cfg = LoaderConfig(shards=str(latent_shards), batch_size=2, seed=1)
    straight = LatentLoader(cfg, 1, 2)
    expected = [keys(next(straight)) for _ in range(15)]  # crosses two epoch boundaries
    first = LatentLoader(cfg, 1, 2)
    got = [keys(next(first)) for _ in range(7)]
    resumed = LatentLoader(cfg, 1, 2)
    resumed.load_state_dict(first.state_dict())
    got += [keys(next(resumed)) for _ in range(8)]
    assert got == expected
    with pytest.raises(ValueError, match="ranks"):
        LatentLoader(cfg, 0, 1).load_state_dict(first.state_dict())


@pytest.mark.timeout(60)
def test_batches_group_same_shapes_and_pad_text(tmp_path):
    make_latent_shards(tmp_path / "d", n=8, per_shard=8)
    long = [{"key": f"long{i}", "video": torch.zeros(8, 4, 4, 4), "audio": torch.zeros(8, 32),
             "text": torch.ones(5, 64), "meta": {"index": 100 + i}} for i in range(4)]
    write_latent_shard(tmp_path / "d" / "latents-long.tar", long)
    loader = LatentLoader(LoaderConfig(shards=str(tmp_path / "d"), batch_size=2), 0, 1)
    for _ in range(len(loader)):
        batch = next(loader)
        is_long = [k >= 100 for k in keys(batch)]
        assert len(set(is_long)) == 1  # never mixes durations in one batch
        assert batch["video"].shape[2] == (4 if is_long[0] else 2)
        lengths = batch["text_mask"].sum(1).tolist()
        assert all(n == 5 for n in lengths) if is_long[0] else set(lengths) <= {3, 4}
        assert batch["text_emb"][~batch["text_mask"]].abs().sum() == 0  # padding is zeros


def test_no_full_batch_is_a_clear_error(tmp_path):
    make_latent_shards(tmp_path / "d", n=3, per_shard=3)  # 3 samples of one shape
    with pytest.raises(ValueError, match="no full batch of 4 for each of 2 ranks"):
        LatentLoader(LoaderConfig(shards=str(tmp_path / "d"), batch_size=4), rank=0, world_size=2)


def _named_bucket_shard(path, bucket, first, n, text_len=3):
    return write_latent_shard(path, [{"key": f"{bucket}-{i}", "video": torch.zeros(8, 2, 4, 4),
                                      "audio": torch.zeros(8, 16), "text": torch.ones(text_len, 64),
                                      "meta": {"index": first + i, "bucket": bucket}} for i in range(n)])


@pytest.mark.timeout(60)
def test_latent_dag_bucket_names_keep_same_shaped_buckets_apart(tmp_path):
    # Same latent shapes, different buckets (e.g. 2 s at 8 fps vs 1 s at 16 fps): never one batch.
    _named_bucket_shard(tmp_path / "d" / "a.tar", "2s_64x112", 0, 6)
    _named_bucket_shard(tmp_path / "d" / "b.tar", "1s_64x112", 100, 6)
    loader = LatentLoader(LoaderConfig(shards=str(tmp_path / "d"), batch_size=2, seed=2), 0, 1)
    seen = []
    for _ in range(len(loader)):
        batch = next(loader)
        assert len({m["bucket"] for m in batch["meta"]}) == 1
        assert batch["keys"] == [f"{m['bucket']}-{m['index'] % 100}" for m in batch["meta"]]
        seen += keys(batch)
    assert sorted(seen) == list(range(6)) + list(range(100, 106))

    _named_bucket_shard(tmp_path / "d" / "c.tar", "2s_64x112", 200, 2, text_len=3)
    write_latent_shard(tmp_path / "d" / "d.tar", [{"key": "odd", "video": torch.zeros(8, 3, 4, 4),
                                                   "audio": torch.zeros(8, 16), "text": torch.ones(3, 64),
                                                   "meta": {"bucket": "2s_64x112"}}])
    with pytest.raises(ValueError, match="different VAEs"):
        LatentLoader(LoaderConfig(shards=str(tmp_path / "d")), 0, 1)


def test_source_is_validated_and_nested_configs_load():
    with pytest.raises(ValueError, match="data.source must be one of latents, clips"):
        LoaderConfig(source="frames")
    with pytest.raises(ConfigError, match="data.source"):
        from_dict(LoaderConfig, {"source": "mp4"})
    cfg = from_dict(LoaderConfig, {"source": "clips", "buckets": {"fps": 4, "durations": [1, 2]},
                                   "encoder": {"text_dim": 32}})
    assert isinstance(cfg.buckets, BucketConfig) and cfg.buckets.fps == 4.0 and cfg.encoder.text_dim == 32


def test_resume_refuses_other_data_with_the_same_count(tmp_path):
    make_latent_shards(tmp_path / "a", n=8, per_shard=8)
    _named_bucket_shard(tmp_path / "b" / "latents-00000.tar", "2s_64x112", 0, 8)
    state = LatentLoader(LoaderConfig(shards=str(tmp_path / "a")), 0, 1).state_dict()
    with pytest.raises(ValueError, match="other samples or buckets"):
        LatentLoader(LoaderConfig(shards=str(tmp_path / "b")), 0, 1).load_state_dict(state)


def _clip_cfg(shards, **kw):
    return LoaderConfig(shards=str(shards), source="clips", buckets=small_buckets(), **kw)


WIDE, SQUARE = Bucket(2.0, 16, 32, 4.0), Bucket(1.0, 16, 16, 4.0)


@pytest.mark.timeout(120)
def test_clip_source_buckets_by_duration_and_aspect_and_partitions_ranks(clip_shards):
    ranks = [LatentLoader(_clip_cfg(clip_shards, batch_size=2, seed=5), r, 2) for r in range(2)]
    assert ranks[0].skipped == {"incomplete_sample": 1, "too_short": 1}
    assert [len(ld) for ld in ranks] == [2, 2]  # 4 wide + 4 square clips in batches of 2, over 2 ranks
    taken = []
    for loader in ranks:
        keys_of_rank = []
        for _ in range(len(loader)):
            batch = next(loader)
            kinds = {k.split("-")[0] for k in batch["keys"]}
            bucket = SQUARE if kinds == {"square"} else WIDE
            assert kinds <= ({"square"} if bucket == SQUARE else {"wide160", "wide192"})  # never mixed
            assert {m["bucket"] for m in batch["meta"]} == {bucket.name}
            seq = bucket.sequence
            assert batch["video"].shape == (2, 8, *seq.video_latent_shape)  # (2, 8, 3, 2, 4) / (2, 8, 2, 2, 2)
            assert batch["audio"].shape == (2, 8, seq.audio_latents)
            assert torch.isfinite(batch["video"]).all() and batch["video"].std() > 0
            assert batch["text_mask"].any(1).all()
            keys_of_rank += batch["keys"]
        taken.append(keys_of_rank)
    assert not set(taken[0]) & set(taken[1])
    assert sorted(taken[0] + taken[1]) == sorted([f"wide160-{i}" for i in range(2)] + [f"wide192-{i}" for i in range(2)]
                                                 + [f"square-{i}" for i in range(4)])


@pytest.mark.timeout(120)
def test_clip_source_resumes_exactly_with_identical_latents(clip_shards):
    cfg = _clip_cfg(clip_shards, batch_size=2, seed=7)
    # Each loader meets another global RNG state, as a resumed process would.
    torch.manual_seed(1)
    straight = LatentLoader(cfg, 1, 2)
    expected = [next(straight) for _ in range(3)]  # 2 batches an epoch for this rank: crosses into epoch 1
    torch.manual_seed(2)
    first = LatentLoader(cfg, 1, 2)
    got = [next(first)]
    torch.manual_seed(3)
    resumed = LatentLoader(cfg, 1, 2)
    resumed.load_state_dict(first.state_dict())
    got += [next(resumed) for _ in range(2)]
    assert [b["keys"] for b in got] == [b["keys"] for b in expected]
    for a, b in zip(got, expected, strict=True):  # each loader's own encoder has the same weights
        for name in ("video", "audio", "text_emb", "text_mask"):
            assert torch.equal(a[name], b[name]), name
    with pytest.raises(ValueError, match="is not a latent sample .* set data.source=clips"):
        LatentLoader(LoaderConfig(shards=str(clip_shards), source="latents"), 0, 1)


@pytest.mark.timeout(120)
def test_undecodable_clip_is_replaced_by_the_next_clip_of_its_bucket(tmp_path, clip_media):
    good = dict(clip_media["wide160"], txt=b"fine")
    corrupt = dict(good, mp4=b"this is not an mp4 " * 64)  # metadata looks fine: only decoding finds out
    write_clip_shard(tmp_path / "one" / "clips-00000.tar", {"clip0": good, "clip1-corrupt": corrupt, "clip2": good})
    batches = []
    for _ in range(2):  # a fresh loader (another rank, a resumed run) substitutes the same way
        loader = LatentLoader(_clip_cfg(tmp_path / "one", batch_size=3), 0, 1)
        batch = next(loader)
        assert batch["video"].shape == (3, 8, *WIDE.sequence.video_latent_shape)
        assert sorted(batch["keys"]) == ["clip0", "clip2", "clip2"]
        assert [m.get("substitute_for") for m in batch["meta"]].count("clip1-corrupt") == 1
        assert list(loader.unreadable) == ["clips-00000.tar:clip1-corrupt"]
        assert "InvalidDataError" in loader.unreadable["clips-00000.tar:clip1-corrupt"]
        batches.append(batch["keys"])
    assert batches[0] == batches[1]

    write_clip_shard(tmp_path / "none" / "clips-00000.tar", {"clip1-corrupt": corrupt})
    with pytest.raises(RuntimeError, match=r"none of the 1 clips of bucket 2s_16x32.*clips-00000.tar:clip1-corrupt"):
        next(LatentLoader(_clip_cfg(tmp_path / "none", batch_size=1), 0, 1))


def test_latent_shards_record_their_format_and_mixed_formats_are_refused(tmp_path):
    from training.latent_shards import LatentFormat, format_path, read_latent_format

    def shard(name, fmt):
        return write_latent_shard(tmp_path / "d" / name, [{"key": name.removesuffix(".tar"), "video": torch.zeros(8, 2, 4, 4),
                                                         "audio": torch.zeros(8, 16), "text": torch.zeros(3, 64)}], fmt)

    debug = LatentFormat(video_encoder="tandem:debug", video_channels=8, audio_channels=8, text_width=64)
    first = shard("a.tar", debug)
    assert format_path(first).name == "a.format.json" and not list((tmp_path / "d").glob("*.tmp"))
    shard("b.tar", debug)
    assert read_latent_format(tmp_path / "d") == debug
    assert len(LatentLoader(LoaderConfig(shards=str(tmp_path / "d"), batch_size=1))) == 2
    shard("c.tar", LatentFormat(video_encoder="ltx2", video_channels=128, audio_channels=8, text_width=64))
    with pytest.raises(ValueError, match="different encoders"):
        LatentLoader(LoaderConfig(shards=str(tmp_path / "d"), batch_size=1))


def test_several_directories_separated_by_commas_are_read_as_one_data_set(tmp_path):
    """A partitioned pipeline encodes each footage batch to its own directory (the same shard
    names in each) and trains on all of them: every sample of each, once an epoch."""
    from training.latent_shards import LatentFormat, read_latent_format, shard_dirs

    debug = LatentFormat(video_encoder="tandem:debug", video_channels=8, audio_channels=8, text_width=64)
    make_latent_shards(tmp_path / "batch1", n=8, per_shard=4)
    make_latent_shards(tmp_path / "batch2", n=8, per_shard=4, first=8)  # latents-00000.tar, ... there too
    both = f"{tmp_path / 'batch1'}, {tmp_path / 'batch2'}"
    assert shard_dirs(both) == [tmp_path / "batch1", tmp_path / "batch2"]
    loader = LatentLoader(LoaderConfig(shards=both, batch_size=2), 0, 1)
    assert sorted(k for _ in range(len(loader)) for k in keys(next(loader))) == list(range(16))
    assert read_latent_format(both) is None  # these shards carry no format file

    write_latent_shard(tmp_path / "batch2" / "other.tar", [{"key": "x", "video": torch.zeros(128, 2, 4, 4),
                       "audio": torch.zeros(8, 16), "text": torch.zeros(3, 64)}],
                       LatentFormat(video_encoder="ltx2", video_channels=128, audio_channels=8, text_width=64))
    write_latent_shard(tmp_path / "batch1" / "other.tar", [{"key": "y", "video": torch.zeros(8, 2, 4, 4),
                       "audio": torch.zeros(8, 16), "text": torch.zeros(3, 64)}], debug)
    with pytest.raises(ValueError, match="different encoders"):  # one format across the directories too
        read_latent_format(both)
