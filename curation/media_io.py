"""Decode helpers shared by the curation stages (ffmpeg pipes, PyAV, soundfile).

Decoding is the expensive part of curation, so the source video is decoded exactly
once (``iter_frames``, by the shot stage) at analysis resolution; later stages read
the small per-frame arrays that decode produced, or the clip files the clip stage wrote.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf

from curation.ffmpeg import FFmpegError, binary, ffprobe


def analysis_size(width: int, height: int, target_width: int) -> tuple[int, int]:
    """(w, h) of the analysis frames: ``target_width`` wide (never upscaled), even sizes."""
    w = min(target_width, width)
    w -= w % 2
    h = max(2, int(round(height * w / width / 2)) * 2)
    return w, h


def iter_frames(path: str | Path, fps: str, size: tuple[int, int], timeout: float = 3600) -> Iterator[np.ndarray]:
    """Yield the video's frames as small BGR uint8 arrays, resampled to the constant rate
    ``fps`` (a rational string such as "30000/1001"), so frame i is at time i/fps even for
    variable-frame-rate sources. Display rotation is applied (ffmpeg autorotates), so
    ``size`` is the *displayed* orientation."""
    w, h = size
    cmd = [binary("ffmpeg"), "-hide_banner", "-nostdin", "-loglevel", "error", "-i", str(path),
           "-map", "0:v:0", "-vf", f"fps={fps},scale={w}:{h}:flags=area", "-pix_fmt", "bgr24",
           "-f", "rawvideo", "-"]
    frame_bytes = w * h * 3
    # stderr goes to a file, not a pipe: a corrupt source can log more than a pipe holds,
    # and ffmpeg blocked on stderr would never finish stdout.
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errors)
        try:
            while len(buf := proc.stdout.read(frame_bytes)) == frame_bytes:
                yield np.frombuffer(buf, np.uint8).reshape(h, w, 3)
            if proc.wait(timeout=timeout) != 0:
                errors.seek(0)
                message = errors.read().decode(errors="replace").strip()[-1000:]
                raise FFmpegError(f"decoding {path} failed: {message}")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """A lossless audio file as float32 (samples, channels) and its rate."""
    samples, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return samples, rate


def clip_durations(mp4: str | Path, flac: str | Path | None) -> dict:
    """What was really written: the mp4's video frame count and duration, its audio
    duration, and the flac's duration from its sample count (exact)."""
    info = ffprobe(mp4)
    video = next(s for s in info["streams"] if s["codec_type"] == "video")
    audio = next((s for s in info["streams"] if s["codec_type"] == "audio"), None)
    n_frames = int(video["nb_frames"])  # the mp4 sample table: exact, no decode needed
    rate = Fraction(video["avg_frame_rate"]) or Fraction(video["r_frame_rate"])
    out = {"n_frames": n_frames, "video_s": float(n_frames / rate),
           "width": int(video["width"]), "height": int(video["height"]),
           "mp4_audio_s": float(audio["duration"]) if audio else None}
    if flac is not None:
        meta = sf.info(str(flac))
        out.update(flac_s=meta.frames / meta.samplerate, flac_samples=meta.frames,
                   sample_rate=meta.samplerate, channels=meta.channels)
    return out


def duration_problem(got: dict, frames: int, fps: float, max_error_frames: float = 1.0) -> str:
    """Why a written clip (``clip_durations``) is not ``frames`` frames with audio of the
    same length, within ``max_error_frames``; "" when it is."""
    if got["n_frames"] != frames:
        return f"wrote {got['n_frames']} video frames, expected {frames}"
    for name in ("mp4_audio_s", "flac_s"):
        if got.get(name) is not None and abs(got[name] - got["video_s"]) > max_error_frames / fps:
            return f"{name}={got[name]:.4f}s but video is {got['video_s']:.4f}s"
    return ""
