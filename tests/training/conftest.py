from pathlib import Path

import pytest
import torch

import training.engine  # noqa: E402,F401  (sets TORCH_EXTENSIONS_DIR for the ranks this suite starts)


def make_latent_shards(directory: Path, n: int = 24, per_shard: int = 8, seed: int = 0, first: int = 0) -> Path:
    """Tiny debug-preset latent shards: a few repeated patterns, so a DiT can fit them;
    samples ``first`` to ``first + n - 1`` (their keys and ``index``)."""
    from training.latent_shards import write_latent_shard

    g = torch.Generator().manual_seed(seed)
    patterns = [(torch.randn(8, 2, 4, 4, generator=g), torch.randn(8, 16, generator=g)) for _ in range(3)]
    samples = []
    for i in range(n):
        video, audio = patterns[i % 3]
        text = torch.randn(3 + i % 2, 64, generator=g)
        samples.append({"key": f"clip{first + i:04d}", "video": video, "audio": audio, "text": text,
                        "meta": {"index": first + i, "clip_shard": "synthetic"}})
    for s in range(0, n, per_shard):
        write_latent_shard(directory / f"latents-{s // per_shard:05d}.tar", samples[s:s + per_shard])
    return directory


def held_out_loss(model) -> float:
    """Flow-matching loss of ``model`` (a DualDiT or its DeepSpeed engine) on make_latent_shards'
    patterns with fixed timesteps and noise: per-step training losses are too noisy (random t)
    to show learning in a dozen steps, this is not."""
    from model.conditioning import Conditioning
    from model.flow_matching import FlowMatchingConfig, flow_matching_loss

    g = torch.Generator().manual_seed(0)  # the patterns make_latent_shards trains on
    pats = [(torch.randn(8, 2, 4, 4, generator=g), torch.randn(8, 16, generator=g)) for _ in range(3)]
    video, audio = torch.stack([p[0] for p in pats]), torch.stack([p[1] for p in pats])
    cond = Conditioning(torch.randn(3, 3, 64, generator=g), torch.ones(3, 3, dtype=torch.bool))
    with torch.no_grad():
        return sum(flow_matching_loss(model, video, audio, cond, FlowMatchingConfig(),
                                      generator=torch.Generator().manual_seed(s)).total.item()
                   for s in range(8)) / 8


def trained_and_initial(checkpoints: Path, seed: int = 0):
    """(the debug DualDiT as the Trainer initialised it, the same with the latest checkpoint
    converted by DeepSpeed's zero_to_fp32)."""
    from model.dit import DualDiT
    from model.presets import get_preset
    from training.export import consolidated_state_dict

    torch.manual_seed(seed)
    initial = DualDiT(get_preset("debug"))
    trained = DualDiT(get_preset("debug"))
    trained.load_state_dict(initial.state_dict())
    missing, unexpected = trained.load_state_dict(consolidated_state_dict(checkpoints), strict=False)
    assert not unexpected and all("rope" in k or "freq" in k for k in missing), missing
    return initial, trained


@pytest.fixture
def latent_shards(tmp_path):
    return make_latent_shards(tmp_path / "latents")


def small_buckets():
    """Buckets small enough that the debug VAEs encode a clip in milliseconds: 1 s and 2 s at
    4 fps (5 and 9 frames), square, wide and tall (16 pixels: the VAE stride x patch size)."""
    from training.buckets import BucketConfig

    return BucketConfig(fps=4.0, durations=[1.0, 2.0], resolutions=[[16, 16], [16, 32], [32, 16]])


# name -> (seconds, (width, height)): two wide clips of other lengths and sizes that share the
# 2 s wide bucket, a square one for the 1 s square bucket, one shorter than every bucket.
CLIP_KINDS = {"wide160": (2.3, (160, 90)), "wide192": (2.9, (192, 108)), "square": (1.2, (96, 96)),
              "short": (0.2, (64, 64))}


@pytest.fixture(scope="session")
def clip_media(tmp_path_factory) -> dict[str, dict]:
    """Real mp4 + flac bytes (as curation writes them) and shard metadata per CLIP_KINDS entry."""
    from curation.ffmpeg import run_ffmpeg
    from curation.sample_media import make_clip

    directory = tmp_path_factory.mktemp("clip_media")
    media = {}
    for name, (seconds, (w, h)) in CLIP_KINDS.items():
        mp4 = make_clip(directory / f"{name}.mp4", [seconds], fps=25, size=(w, h)).path
        flac = directory / f"{name}.flac"
        run_ffmpeg(["-i", str(mp4), "-vn", "-c:a", "flac", str(flac)])
        media[name] = {"mp4": mp4.read_bytes(), "flac": flac.read_bytes(),
                       "json": {"start_s": 10.0, "end_s": 10.0 + seconds, "fps": 25, "width": w, "height": h,
                                "audio": {"sample_rate": 48000, "channels": 2}}}
    return media


def write_clip_shard(path: Path, samples: dict[str, dict]) -> Path:
    """One clip shard: key -> members (``mp4``/``flac`` bytes, ``json`` dict, optional ``txt``)."""
    import json

    import webdataset as wds

    path.parent.mkdir(parents=True, exist_ok=True)
    with wds.TarWriter(str(path)) as sink:
        for key, members in samples.items():
            sink.write({"__key__": key, **{ext: json.dumps(v).encode() if ext == "json" else v
                                           for ext, v in members.items()}})
    return path


@pytest.fixture(scope="session")
def clip_shards(tmp_path_factory, clip_media) -> Path:
    """Two clip shards: 2 + 2 wide clips (2 s wide bucket), 4 square (1 s square bucket), one
    too short and one without its flac (both skipped). Keys start with their kind."""
    directory = tmp_path_factory.mktemp("clip_shards")

    def sample(kind, caption):
        return dict(clip_media[kind], txt=caption.encode())

    write_clip_shard(directory / "clips-00000.tar", {
        "wide160-0": sample("wide160", "a wide clip"), "wide192-0": sample("wide192", "another wide one"),
        "square-0": sample("square", "square"), "square-1": sample("square", "a square clip, longer caption"),
        "short-0": sample("short", "too short to train on")})
    write_clip_shard(directory / "clips-00001.tar", {
        "wide160-1": sample("wide160", "wide again"), "wide192-1": sample("wide192", "wide"),
        "square-2": sample("square", "sq"), "square-3": sample("square", "square three"),
        "noflac-0": {k: v for k, v in sample("wide160", "lost its audio").items() if k != "flac"}})
    return directory
