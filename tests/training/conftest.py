import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache/tandem/torch_extensions"))


def make_latent_shards(directory: Path, n: int = 24, per_shard: int = 8, seed: int = 0) -> Path:
    """Tiny debug-preset latent shards: a few repeated patterns, so a DiT can fit them."""
    from training.loader import write_latent_shard

    g = torch.Generator().manual_seed(seed)
    patterns = [(torch.randn(8, 2, 4, 4, generator=g), torch.randn(8, 16, generator=g)) for _ in range(3)]
    samples = []
    for i in range(n):
        video, audio = patterns[i % 3]
        text = torch.randn(3 + i % 2, 64, generator=g)
        samples.append({"key": f"clip{i:04d}", "video": video, "audio": audio, "text": text,
                        "meta": {"index": i, "clip_shard": "synthetic"}})
    for s in range(0, n, per_shard):
        write_latent_shard(directory / f"latents-{s // per_shard:05d}.tar", samples[s:s + per_shard])
    return directory


@pytest.fixture
def latent_shards(tmp_path):
    return make_latent_shards(tmp_path / "latents")
