"""Loader: per-rank partition, per-epoch shuffle, same-shape batches, exact resume."""

import pytest
import torch

from tests.training.conftest import make_latent_shards
from training.loader import LatentLoader, LoaderConfig, write_latent_shard


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
