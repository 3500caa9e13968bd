"""The encoder registry: which video/audio autoencoders and text encoder make (and decode)
latents, chosen by config and loaded from local folders.

    encoder.video=ltx2|wan|tandem    encoder.video_path=DIR   (a diffusers save_pretrained folder)
    encoder.audio=ltx2|oobleck|tandem encoder.audio_path=DIR  encoder.vocoder_path=DIR
    encoder.text_path=DIR            (T5/UMT5/Gemma class from transformers; "" = tiny random T5)

``tandem`` are the in-house VAEs (``video_preset``/``audio_preset`` from model.video_vae /
model.audio_vae, random seeded weights unless ``video_path``/``audio_path`` name a weights
file; ``vocoder_path`` a HiFi-GAN safetensors, "" = Griffin-Lim). Nothing here downloads.

Entry points: ``load_video`` / ``load_audio`` / ``load_text`` (encoding), ``load_decoder``
(the one decode path for samples, ``tandem generate``, rollouts and alignment), ``describe``
(the LatentFormat a config makes, without loading weights) and ``check`` (config errors,
before any cluster is booked).
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from model.config import run_only
from model.encoders.base import AudioAutoencoder, VideoAutoencoder
from model.encoders.decoder import AVDecoder
from training.latent_shards import LatentFormat

VIDEO_ENCODERS = ("tandem", "ltx2", "wan")
AUDIO_ENCODERS = ("tandem", "ltx2", "oobleck")
RANDOM_WEIGHTS = "random-seed0"  # the debug encoders' weights: seeded, the same in every process
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class EncoderConfig:
    video: str = "tandem"  # tandem | ltx2 | wan
    video_path: str = ""  # ltx2/wan: save_pretrained folder (required); tandem: weights file ("" = random)
    video_preset: str = "debug"  # tandem only: a model.video_vae preset
    audio: str = "tandem"  # tandem | ltx2 | oobleck
    audio_path: str = ""
    audio_preset: str = "debug"  # tandem only: a model.audio_vae preset
    vocoder_path: str = ""  # ltx2: LTX2Vocoder folder (required); tandem: HiFi-GAN safetensors ("" = Griffin-Lim)
    text_path: str = ""  # T5/UMT5/Gemma folder; "" = a tiny random T5 (debug)
    text_tokenizer: str = ""  # "" = the text model's own; "bytes" = the offline byte tokenizer
    text_dim: int = 64  # width of the tiny random T5 (text_path "")
    text_max_length: int = 256
    dtype: str = "float32"  # encoders' weights and compute: bfloat16 on GPUs
    tiling: bool = True  # the VAEs' own spatial tiles / temporal windows for large or long clips
    batch_size: int = run_only(4)  # clips of one bucket encoded together


class EncoderConfigError(ValueError):
    """An encoder config that cannot work; the message says what to set."""


def check(cfg: EncoderConfig, prefix: str = "encoder") -> None:
    """Raise EncoderConfigError for unknown encoders, missing folders or presets."""
    from model.audio_vae import AUDIO_VAE_PRESETS
    from model.video_vae import VIDEO_VAE_PRESETS

    problems = []
    for field, value, known in ((".video", cfg.video, VIDEO_ENCODERS), (".audio", cfg.audio, AUDIO_ENCODERS)):
        if value not in known:
            problems.append(f"{prefix}{field}={value!r}: choose one of {', '.join(known)}")
    if cfg.video == "tandem" and cfg.video_preset not in VIDEO_VAE_PRESETS:
        problems.append(f"{prefix}.video_preset={cfg.video_preset!r}: choose one of {', '.join(VIDEO_VAE_PRESETS)}")
    if cfg.audio == "tandem" and cfg.audio_preset not in AUDIO_VAE_PRESETS:
        problems.append(f"{prefix}.audio_preset={cfg.audio_preset!r}: choose one of {', '.join(AUDIO_VAE_PRESETS)}")
    # field -> the encoder that needs it (None: optional)
    required = {"video_path": cfg.video if cfg.video != "tandem" else None,
                "audio_path": cfg.audio if cfg.audio != "tandem" else None,
                "vocoder_path": cfg.audio if cfg.audio == "ltx2" else None}
    for field, needed_by in required.items():
        path = getattr(cfg, field)
        if needed_by and not path:
            problems.append(f"{prefix}.{field} is required for {needed_by!r}: the local folder its weights were "
                            "saved to (save_pretrained)")
        elif path and not Path(path).exists():
            problems.append(f"{prefix}.{field}={path}: no such file or folder")
    if cfg.text_path and not Path(cfg.text_path).exists():
        problems.append(f"{prefix}.text_path={cfg.text_path}: no such folder")
    if cfg.dtype not in DTYPES:
        problems.append(f"{prefix}.dtype={cfg.dtype!r}: choose one of {', '.join(DTYPES)}")
    if problems:
        raise EncoderConfigError("; ".join(problems))


def _pretrained(cls, path: str, dtype: torch.dtype, meta: bool):
    """A diffusers model from a save_pretrained folder; on ``meta`` its config only (no weights)."""
    if meta:
        with torch.device("meta"):
            return cls.from_config(cls.load_config(path))
    return cls.from_pretrained(path, torch_dtype=dtype).eval()


def _diffusers_model(cls_name: str, path: str, dtype: torch.dtype, meta: bool):
    import diffusers

    return _pretrained(getattr(diffusers, cls_name), path, dtype, meta)


def _ltx2_vocoder(path: str, dtype: torch.dtype, meta: bool):
    """LTX2Vocoder, or the bandwidth-extending LTX2VocoderWithBWE, as the folder's config says."""
    from diffusers.pipelines.ltx2 import vocoder as ltx2_vocoders

    name = json.loads((Path(path) / "config.json").read_text()).get("_class_name", "LTX2Vocoder")
    return _pretrained(getattr(ltx2_vocoders, name), path, dtype, meta)


def _seeded(build):
    with torch.random.fork_rng(devices=[]):  # random debug weights: the same in every process
        torch.manual_seed(0)
        return build()


def load_video(cfg: EncoderConfig, device: str | torch.device = "cpu", meta: bool = False) -> VideoAutoencoder:
    """The video autoencoder ``cfg`` names, in eval mode (``meta``: geometry only, no weights)."""
    dtype = DTYPES[cfg.dtype]
    if cfg.video == "ltx2":
        from model.encoders.ltx2 import LTX2Video

        module = LTX2Video(_diffusers_model("AutoencoderKLLTX2Video", cfg.video_path, dtype, meta), cfg.tiling)
    elif cfg.video == "wan":
        from model.encoders.wan import WanVideo

        module = WanVideo(_diffusers_model("AutoencoderKLWan", cfg.video_path, dtype, meta), cfg.tiling)
    else:
        from model.checkpoint import load_weights
        from model.encoders.tandem import TandemVideo
        from model.video_vae import VIDEO_VAE_PRESETS, VideoVAE

        vae = _seeded(lambda: VideoVAE(VIDEO_VAE_PRESETS[cfg.video_preset]))
        if cfg.video_path and not meta:
            load_weights(vae, cfg.video_path)
        module = TandemVideo(vae.to(dtype), cfg.video_preset, cfg.tiling)
    return module if meta else module.to(device).eval()


def load_audio(cfg: EncoderConfig, device: str | torch.device = "cpu", meta: bool = False) -> AudioAutoencoder:
    """The audio autoencoder (with its vocoder) ``cfg`` names, in eval mode."""
    dtype = DTYPES[cfg.dtype]
    if cfg.audio == "ltx2":
        from model.encoders.ltx2 import LTX2Audio

        module = LTX2Audio(_diffusers_model("AutoencoderKLLTX2Audio", cfg.audio_path, dtype, meta),
                           _ltx2_vocoder(cfg.vocoder_path, dtype, meta))
    elif cfg.audio == "oobleck":
        from model.encoders.oobleck import OobleckAudio

        module = OobleckAudio(_diffusers_model("AutoencoderOobleck", cfg.audio_path, dtype, meta))
    else:
        from model.audio_vae import AUDIO_VAE_PRESETS, AudioVAE
        from model.checkpoint import load, load_weights
        from model.encoders.tandem import TandemAudio
        from model.vocoder import GriffinLimVocoder, HiFiGANConfig, HiFiGANVocoder

        vae = _seeded(lambda: AudioVAE(AUDIO_VAE_PRESETS[cfg.audio_preset]))
        if cfg.audio_path and not meta:
            load_weights(vae, cfg.audio_path)
        vocoder = (load(HiFiGANVocoder, HiFiGANConfig, cfg.vocoder_path) if cfg.vocoder_path and not meta
                   else GriffinLimVocoder(vae.cfg.mel))
        module = TandemAudio(vae.to(dtype), vocoder, cfg.audio_preset)
    return module if meta else module.to(device).eval()


def load_text(cfg: EncoderConfig, device: str | torch.device = "cpu"):
    """The text encoder: ``text_path`` (T5/UMT5/Gemma class) or a tiny random T5."""
    from model.text_encoder import ByteTokenizer, TextEncoder, TextEncoderConfig

    if cfg.text_path:
        encoder = TextEncoder.from_config(TextEncoderConfig(name_or_path=cfg.text_path, tokenizer=cfg.text_tokenizer,
                                                            max_length=cfg.text_max_length, dtype=cfg.dtype))
        return encoder.to(device)
    from transformers import T5Config, T5EncoderModel

    d = cfg.text_dim
    model = _seeded(lambda: T5EncoderModel(T5Config(vocab_size=ByteTokenizer.vocab_size, d_model=d, d_kv=16,
                                                    d_ff=2 * d, num_layers=1, num_heads=4)))
    return TextEncoder(model.eval().to(device), ByteTokenizer(), max_length=cfg.text_max_length)


def text_width(cfg: EncoderConfig) -> int:
    """The text encoder's embedding width, from its config alone."""
    if not cfg.text_path:
        return cfg.text_dim
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(cfg.text_path)
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    return getattr(config, "d_model", None) or config.hidden_size


def load_decoder(cfg: EncoderConfig, device: str | torch.device = "cpu") -> AVDecoder:
    """The decoders of the latents ``cfg`` makes: ``decode(video_latents, audio_latents, fps)``
    -> ``model.media.AVClip(video in [-1, 1], audio waveform, fps, sample_rate)`` (``.save_mp4``).
    Samples during training, ``tandem generate``, rollouts and alignment all decode here."""
    check(cfg, "decoder")
    return AVDecoder(load_video(cfg, device), load_audio(cfg, device))


@functools.lru_cache(maxsize=64)
def _digest(path: str, stamp: tuple) -> str:
    root = Path(path)
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.relative_to(root).as_posix().encode() if root.is_dir() else b"")
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def weights_digest(path: str) -> str:
    """sha256 (16 hex digits) of a weights file, or of a folder's files in name order;
    RANDOM_WEIGHTS when no path is given. Cached per process while the files are unchanged."""
    if not path:
        return RANDOM_WEIGHTS
    root = Path(path)
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    return _digest(str(root.resolve()), tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files))


def encoder_names(cfg: EncoderConfig) -> dict[str, str]:
    """The registry names a LatentFormat records for ``cfg`` (as the wrappers name themselves)."""
    return {"video_encoder": f"tandem:{cfg.video_preset}" if cfg.video == "tandem" else cfg.video,
            "audio_encoder": f"tandem:{cfg.audio_preset}" if cfg.audio == "tandem" else cfg.audio}


def _text_name(cfg: EncoderConfig) -> str:
    return f"{Path(cfg.text_path).name}" if cfg.text_path else f"tiny-random-t5:{cfg.text_dim}"


def format_of(cfg: EncoderConfig, video: VideoAutoencoder, audio: AudioAutoencoder, width: int,
              fps: float) -> LatentFormat:
    """What ``video``/``audio`` (built from ``cfg``) make of clips sampled at ``fps``."""
    names = encoder_names(cfg)
    if (video.name, audio.name) != (names["video_encoder"], names["audio_encoder"]):
        raise RuntimeError(f"encoders named {video.name}/{audio.name}, registry says {names}")
    return LatentFormat(
        video_encoder=video.name, video_weights=weights_digest(cfg.video_path),
        audio_encoder=audio.name, audio_weights=weights_digest(cfg.audio_path),
        vocoder_weights=weights_digest(cfg.vocoder_path),
        text_encoder=_text_name(cfg), text_weights=weights_digest(cfg.text_path),
        video_channels=video.latent_channels, audio_channels=audio.latent_channels,
        video_stride=(video.temporal_stride, video.spatial_stride, video.spatial_stride),
        audio_stride=audio.samples_per_latent, fps=fps, latent_fps=fps / video.temporal_stride,
        sample_rate=audio.sample_rate, audio_latent_rate=audio.latent_rate,
        audio_causal_stride=audio.causal_stride, text_width=width)


def describe(cfg: EncoderConfig, fps: float) -> LatentFormat:
    """The LatentFormat ``cfg`` makes at ``fps``, from configs and weight digests only."""
    check(cfg)
    return format_of(cfg, load_video(cfg, meta=True), load_audio(cfg, meta=True), text_width(cfg), fps)
