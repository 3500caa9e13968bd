"""Reference clips a prompt names (``@image1``, ``@video2``, ``@audio1``) -> the latents the DiT
takes as extra, clean tokens (model/references.py).

A prompts JSONL line carries them as ``"references": {"image1": "dog.png", "audio1": "bark.wav"}``
(paths relative to the prompts file). Images (Pillow) and videos (ffmpeg) are resized to the
generated clip's size; a video is sampled at the clip's frame rate, at most the clip's length,
trimmed to the 1 + 4k frames the causal video VAE takes; both are encoded with the video VAE; audio is decoded at the audio VAE's
rate and channels (at most the clip's length) and encoded with the audio VAE. Encoding takes the
posterior mode, so a reference gives the same latents every time.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import numpy as np
import torch

from model.prompts import REFERENCE_LIMITS
from model.references import Reference


def parse_tag(tag: str) -> tuple[str, int]:
    """``"image2"`` -> ("image", 2); raises ValueError naming the valid tags."""
    kind = tag.rstrip("0123456789")
    index = tag[len(kind):]
    if kind not in REFERENCE_LIMITS or not index.isdigit() or not 1 <= int(index) <= REFERENCE_LIMITS[kind]:
        limits = ", ".join(f"{k}1..{k}{n}" for k, n in REFERENCE_LIMITS.items())
        raise ValueError(f"reference {tag!r}: use {limits}")
    return kind, int(index)


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _frames(path: Path, seq, count: int) -> torch.Tensor:
    from curation.media_io import iter_frames

    frames = []
    for frame in iter_frames(path, str(seq.fps), (seq.width, seq.height)):
        frames.append(frame[..., ::-1].copy())  # BGR -> RGB
        if len(frames) == count:
            break
    if not frames:
        raise ValueError(f"{path}: no picture could be decoded")
    usable = 1 + (len(frames) - 1) // seq.video_temporal_stride * seq.video_temporal_stride
    video = torch.from_numpy(np.stack(frames[:usable])).permute(3, 0, 1, 2).float() / 127.5 - 1
    return video[None]  # (1, 3, T, H, W)


def _image(path: Path, seq) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            rgb = np.asarray(image.convert("RGB").resize((seq.width, seq.height), Image.Resampling.BICUBIC))
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"{path}: not an image ({exc})") from None
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None, :, None].float() / 127.5 - 1  # (1, 3, 1, H, W)


def _audio(path: Path, seq, channels: int) -> torch.Tensor:
    from curation.ffmpeg import binary

    cmd = [binary("ffmpeg"), "-hide_banner", "-nostdin", "-loglevel", "error", "-i", str(path), "-vn",
           "-t", f"{seq.clip_seconds:.6f}", "-ac", str(channels), "-ar", str(seq.sample_rate), "-f", "f32le", "-"]
    proc = subprocess.run(cmd, capture_output=True, timeout=600)
    if proc.returncode != 0 or not proc.stdout:
        raise ValueError(f"{path}: no audio could be decoded ({proc.stderr.decode(errors='replace')[-300:]})")
    samples = np.frombuffer(proc.stdout, np.float32).reshape(-1, channels).T.copy()
    return torch.from_numpy(samples)[None]  # (1, channels, N)


@torch.no_grad()
def encode_references(spec: dict[str, str], seq, video_vae, audio_vae, device) -> list[Reference]:
    """``{"image1": path, ...}`` -> References (batch 1) in the latent spaces of these
    autoencoders (``model.encoders`` wrappers: normalised latents, as the DiT trained on)."""
    refs = []
    for tag, path in sorted(spec.items()):
        kind, index = parse_tag(tag)
        path = Path(path)
        if kind == "audio":
            wav = _audio(path, seq, audio_vae.channels).to(device)
            latents = audio_vae.encode(wav)
        else:
            video = (_image(path, seq) if kind == "image" else _frames(path, seq, seq.num_frames)).to(device)
            latents = video_vae.encode(video)
        refs.append(Reference(kind, index, latents.float()))
    return refs
