"""Same input, same outputs, pinned: the clip shards that ``tandem curate`` makes of one fixed
clip, and the latent shards that ``tandem latents`` makes of those, member by member. A change
that means no change of behaviour (a refactor, a file moved) leaves every pin equal; a change
that means to alter the output updates the pins here, in the same commit, saying why.

- Clip shards and tables: the sha256 of each member's bytes. Paths are the test's own, so the
  input folder is written as ``<input>`` and each shard's name (its unit id names the input's
  path) as ``<shard>``; member names (content hash and frame range) are pinned.
- ``pipeline.config_hash`` is pinned apart (``CONFIG_HASHES``): a new config field changes it,
  and that should show as what it is.
- Latent tensors: shape, sum and sum of magnitudes to 1e-4 of their magnitude, not their bytes:
  CPU kernels may differ in the last bits from machine to machine; a change of behaviour moves
  them by far more.
- The input is made by ffmpeg's lavfi sources; its digest is pinned first, so a toolchain
  that makes other bytes (another ffmpeg) says so before any output is compared.

The checkpoints' pin is in tests/training/test_deepspeed_trainer.py, whose training it reuses.
"""

import hashlib
import io
import json
import re
import tarfile
from pathlib import Path

import pytest

from curation.pipeline import CurationConfig
from curation.sample_media import make_clip
from pipelines.config_loader import load_config, output_hash
from pipelines.curate import run_curation
from pipelines.latents_cmd import LatentsConfig, run_latents_job

OVERRIDES = ["skip=[transcribe]", "track=false"]  # the cheapest real DAG: no Whisper, no MLflow
INPUT_SHA256 = "53d489b1413c86a2b79a395c8d47068cc3f0ff8e032846a2277afb4e014449db"
CONFIG_HASHES = {"curation": "0ec1ed25e4e0", "latents": "763786026125"}
CLIP = "53d489b1413c86a2_0000000_0000030"  # the first shot; the second is a static picture (rejects.csv)
CLIP_SHARDS = {
    f"{CLIP}.flac": "377f96d192b035229664b6952c4141fce842f5afe4e3a1ba60068e0bff34684c",
    f"{CLIP}.json": "875128a12a182a14cc1fead571ce3eb12c04f1f358b810f152e051405e3c4b67",
    f"{CLIP}.mp4": "0a85fa5c4ed7f9effcd34029fe5d9105c034892e54d26a3cde23c0accb40db15",
    f"{CLIP}.txt": "e58b383740f9ceee01fabae0db64a0e0d7114baaa995506f8f6fb70989ed97cb",
    "manifest.csv": "32e43d8511843009e22d983fcf34e0f5f35ac41da85a3c6a8fdfce1086426107",
    "rejects.csv": "570062f4124a4f44da1f464c339c73dee0c7a983f7c05a1ed5ab8cf7643d2571",
}
LATENT_SHARDS = {
    f"{CLIP}.audio.pth": [[8, 28], -14.93152204528451, 55.6299413703382],
    f"{CLIP}.json": "490a32300b1c17c85ba1006c960411024d6eec3062b1a0e34a0be225d3cdba46",
    f"{CLIP}.text.pth": [[256, 64], 1703.5114162904788, 13077.386019200436],
    f"{CLIP}.video.pth": [[8, 3, 8, 14], 164.03419859567657, 1053.609662364237],
    "manifest.jsonl": "f8f5c3508ce781b52b410489b3746882b86cbe4e4f7444f59ff3ca9f5da35ddf",
}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def anonymous(text: str, root: Path) -> bytes:
    """``text`` without this test's paths: its input folder, and its shards' names."""
    return re.sub(r"clips-[0-9a-f]{16}-(\d{4})\.tar", r"<shard>-\1.tar", text.replace(str(root), "<input>")).encode()


def members(tar_path: Path, root: Path, config_hash: str) -> dict:
    """Member name -> sha256 of its bytes (a json's ``anonymous``, its ``config_hash`` left
    out), or a tensor's [shape, sum, sum of magnitudes]."""
    import torch

    out = {}
    with tarfile.open(tar_path) as tar:
        for m in tar.getmembers():
            data = tar.extractfile(m).read()
            if m.name.endswith(".pth"):
                t = torch.load(io.BytesIO(data)).double()
                out[m.name] = [list(t.shape), t.sum().item(), t.abs().sum().item()]
                continue
            if m.name.endswith(".json"):
                meta = json.loads(data)
                assert meta["pipeline"].pop("config_hash") == config_hash, m.name
                data = anonymous(json.dumps(meta, sort_keys=True), root)
            out[m.name] = sha256(data)
    return out


def shards(folder: Path, root: Path, config_hash: str) -> dict:
    found: dict = {}
    for shard in sorted(folder.glob("*.tar")):
        found.update(members(shard, root, config_hash))
    return found


def matches(got: dict, pinned: dict) -> bool:
    """Equal; a tensor's sums to 1e-4 of its pinned magnitude (sum of magnitudes): a sum that
    nearly cancels moves by more than 1e-5 of itself between CPUs whose kernels sum in other
    orders (an AVX-512 machine against these pins: 4e-5 of the audio latents' sum, 1e-5 of
    their magnitude)."""
    if got.keys() != pinned.keys():
        return False
    for key, value in got.items():
        if isinstance(value, list):
            shape, *sums = value
            scale = max(abs(pinned[key][2]), 1e-6)
            if shape != pinned[key][0] or not all(
                    abs(a - b) <= 1e-4 * scale for a, b in zip(sums, pinned[key][1:], strict=True)):
                return False
        elif value != pinned[key]:
            return False
    return True


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """One two-shot clip, curated in this process, then encoded with the debug encoders."""
    from pipelines import latents_cmd

    root = tmp_path_factory.mktemp("golden")
    make_clip(root / "input" / "two shots.mp4", [1.2, 1.4], size=(128, 96))
    cfg = load_config(CurationConfig, None, OVERRIDES)
    run_curation([str(root / "input")], root / "curated", cfg, in_process=True)

    def encode_here(todo, out_dir, cfg, address):  # the Ray actor's work, in this process
        from pipelines.latents_encode import encode_shard
        from training.clip_encoder import ClipEncoder

        encoder = ClipEncoder(cfg.encoder)
        for shard in todo:
            encode_shard(encoder, cfg.buckets, shard, out_dir)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(latents_cmd, "_encode_pending", encode_here)
        run_latents_job(root / "curated", root / "latents", LatentsConfig(), track=False)
    return root, cfg


def test_the_input_is_the_pinned_one(made):
    root, _ = made
    got = sha256((root / "input" / "two shots.mp4").read_bytes())
    assert got == INPUT_SHA256, ("ffmpeg made another input than the one the pins below were made from "
                                 f"(another toolchain?): {got}")


def test_config_hashes_are_the_pinned_ones(made):
    _, cfg = made
    got = {"curation": output_hash(cfg), "latents": output_hash(LatentsConfig())}
    assert got == CONFIG_HASHES, f"a config changed its resume identity (document it, then pin): {got}"


def test_clip_shards_and_tables_are_the_pinned_ones(made):
    root, cfg = made
    got = shards(root / "curated" / "shards", root / "input", output_hash(cfg))
    for table in ("manifest.csv", "rejects.csv"):
        got[table] = sha256(anonymous((root / "curated" / table).read_text(), root / "input"))
    assert matches(got, CLIP_SHARDS), f"the clip shards changed: {json.dumps(got, indent=1)}"


def test_latent_shards_are_the_pinned_ones(made):
    root, cfg = made
    got = shards(root / "latents", root / "input", output_hash(cfg))
    got["manifest.jsonl"] = sha256(anonymous((root / "latents" / "manifest.jsonl").read_text(), root / "input"))
    assert matches(got, LATENT_SHARDS), f"the latent shards changed: {json.dumps(got, indent=1)}"
