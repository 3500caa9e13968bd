"""Latent DAG: clip shards become latent shards the training loader reads; re-runs skip done work."""

import io
import json

import numpy as np
import pytest
import torch

from pipelines.latents import ClipShardEncoder, LatentsConfig, pending_shards, run_latents
from training.loader import LatentLoader, LoaderConfig


def _clip_shard(path, mp4: bytes, n: int = 2):
    import soundfile
    import webdataset as wds

    t = np.arange(16000) / 16000
    buf = io.BytesIO()
    soundfile.write(buf, np.stack([np.sin(2 * np.pi * 440 * t)] * 2, axis=1).astype(np.float32), 16000,
                    format="FLAC")
    with wds.TarWriter(str(path)) as sink:
        for i in range(n):
            sink.write({"__key__": f"src{i:02d}_0000000_0000024", "mp4": mp4, "flac": buf.getvalue(),
                        "json": json.dumps({"fps": 24, "start_s": 0.0}).encode(), "txt": f"caption {i}".encode()})


@pytest.mark.timeout(120)
def test_clip_shards_encode_into_loader_ready_latents(tmp_path, three_shot_clip):
    clips, out = tmp_path / "clips", tmp_path / "latents"
    clips.mkdir()
    _clip_shard(clips / "clips-00000.tar", three_shot_clip.path.read_bytes())
    (clips / "manifest.jsonl").write_text('{"key": "src00"}\n')
    encoder = ClipShardEncoder(dict(vars(LatentsConfig())), str(out))
    out.mkdir()
    encoder({"shard": pending_shards(clips, out)})
    assert pending_shards(clips, out) == []
    assert run_latents(clips, out) == out.absolute()  # nothing pending: no Ray, just the manifest
    assert (out / "manifest.jsonl").exists()

    batch = next(LatentLoader(LoaderConfig(shards=str(out), batch_size=2), 0, 1))
    assert batch["video"].shape == (2, 8, 3, 8, 8)  # 9 frames at 64x64 -> debug VAE latents
    assert batch["audio"].shape[:2] == (2, 8) and batch["audio"].shape[2] == 25  # 1 s at 100 Hz mel / 4
    assert batch["text_emb"].shape[-1] == 64 and batch["text_mask"].any()
    assert batch["meta"][0]["caption_used"].startswith("caption")
    assert torch.isfinite(batch["video"]).all() and batch["video"].std() > 0

    from model.dit import DualDiT
    from model.presets import get_preset

    v, a = DualDiT(get_preset("debug"))(batch["video"], batch["audio"], torch.rand(2), torch.rand(2),
                                        batch["text_emb"], batch["text_mask"])
    assert v.shape == batch["video"].shape and a.shape == batch["audio"].shape
