"""Decode helpers shared by the curation stages (ffmpeg pipes, soundfile).

Decoding is the expensive part of curation, so each source is decoded exactly once,
by the shot stage: ``decode_frames`` yields its frames on a constant-rate grid (at the
clips' output size when the clips are cut from this decode, else at analysis size) and
``decode_audio`` its whole audio track. Both count time from the video stream's first
frame (``probe.video_start_s``): frame i is at i / fps and audio sample n at n / rate,
whatever the container's start time or the audio stream's own start, so the analysis,
the cut and the sync estimate share one timing origin.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import soundfile as sf

from curation.ffmpeg import binary, ffmpeg_failure, ffprobe
from curation.readahead import read_ahead
from curation.watchdog import beat


def analysis_size(width: int, height: int, target_width: int) -> tuple[int, int]:
    """(w, h) of the analysis frames: ``target_width`` wide (never upscaled), even sizes."""
    w = min(target_width, width)
    w -= w % 2
    h = max(2, int(round(height * w / width / 2)) * 2)
    return w, h


def output_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """(w, h) of the clips: the longer side scaled down to ``max_side`` (never up; 0 keeps
    the size), both even, as ffmpeg's ``scale=trunc(f*iw/2)*2`` computes it."""
    factor = min(1.0, max_side / max(width, height)) if max_side else 1.0
    return max(2, int(factor * width / 2) * 2), max(2, int(factor * height / 2) * 2)


@dataclass(frozen=True)
class FrameFormat:
    """Raw frames as the shot stage hands them to the clip stage: planar YUV 4:2:0."""

    width: int
    height: int
    rate: str  # constant frame rate, a rational string ("30000/1001")

    @property
    def frame_bytes(self) -> int:
        return self.width * self.height * 3 // 2


_PIPE_BYTES = 1 << 20  # Linux's default cap for an unprivileged pipe size


def decode_frames(path: str | Path, fps: str, size: tuple[int, int], *, origin_s: float | None = None,
                  timeout: float = 3600) -> Iterator[np.ndarray]:
    """Yield the video's frames as (h, w, 3) BGR uint8 arrays, resampled to the constant
    rate ``fps`` (a rational string such as "30000/1001") and scaled to ``size`` (the
    *displayed* orientation: ffmpeg applies display rotation). ``origin_s`` (the first
    frame's time on the input's own timeline) anchors the grid, so frame i is at
    origin + i / fps even for variable-frame-rate sources."""
    w, h = size
    graph = f"{_grid(fps, origin_s)},scale={w}:{h}:flags=area,format=bgr24"
    for buf in _ffmpeg_frames(path, graph, "bgr24", w * h * 3, origin_s is not None, timeout):
        yield np.frombuffer(buf, np.uint8).reshape(h, w, 3)


def decode_frames_and_thumbnails(path: str | Path, fps: str, size: tuple[int, int], thumbnail: tuple[int, int],
                                 *, origin_s: float, timeout: float = 3600):
    """Like ``decode_frames``, but each frame comes at ``size`` as its three YUV 4:2:0
    planes (views, for the spool) together with a BGR copy at ``thumbnail`` size (for
    the analysis). ffmpeg scales both, stacked in one output frame, so the pixels are
    decoded once and Python does no resampling."""
    (w, h), (tw, th) = size, thumbnail
    graph = (f"{_grid(fps, origin_s)},scale={w}:{h}:flags=area,format=yuv420p,split[big][copy];"
             f"[copy]scale={tw}:{th}:flags=area,pad={w}:{th}[small];[big][small]vstack")
    rows = h + th
    for buf in _ffmpeg_frames(path, graph, "yuv420p", w * rows * 3 // 2, True, timeout):
        flat = np.frombuffer(buf, np.uint8)
        y = flat[: w * rows].reshape(rows, w)
        u = flat[w * rows: w * rows * 5 // 4].reshape(rows // 2, w // 2)
        v = flat[w * rows * 5 // 4:].reshape(rows // 2, w // 2)
        small = np.concatenate([y[h:, :tw].reshape(-1), u[h // 2:, : tw // 2].reshape(-1),
                                v[h // 2:, : tw // 2].reshape(-1)]).reshape(th * 3 // 2, tw)
        yield (y[:h], u[: h // 2], v[: h // 2]), cv2.cvtColor(small, cv2.COLOR_YUV2BGR_I420)


def _grid(fps: str, origin_s: float | None) -> str:
    return f"fps=fps={fps}" + (f":start_time={origin_s:.6f}" if origin_s is not None else "")


def _ffmpeg_frames(path, graph: str, pix_fmt: str, frame_bytes: int, copyts: bool, timeout: float) -> Iterator[bytes]:
    """Raw frames of ``path`` through the filter ``graph``, from an ffmpeg process that
    decodes ahead of the caller (a reader thread fills a small queue)."""
    cmd = [binary("ffmpeg"), "-hide_banner", "-nostdin", "-loglevel", "error", *(["-copyts"] if copyts else []),
           "-i", str(path), "-filter_complex", f"[0:v:0]{graph}[out]", "-map", "[out]",
           "-pix_fmt", pix_fmt, "-f", "rawvideo", "-"]
    # stderr goes to a file, not a pipe: a corrupt source can log more than a pipe holds,
    # and ffmpeg blocked on stderr would never finish stdout.
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errors)
        with contextlib.suppress(OSError):  # a bigger pipe lets ffmpeg run further ahead
            fcntl.fcntl(proc.stdout.fileno(), 1031, _PIPE_BYTES)  # F_SETPIPE_SZ

        def read() -> Iterator[bytes]:
            while len(buf := proc.stdout.read(frame_bytes)) == frame_bytes:
                beat()  # a frame decoded is progress (curation.watchdog)
                yield buf

        frames = read_ahead(read(), depth=8)
        try:
            yield from frames
            if proc.wait(timeout=timeout) != 0:
                errors.seek(0)
                raise ffmpeg_failure(f"decoding {path} failed", errors.read().decode(errors="replace"))
        finally:
            if proc.poll() is None:  # stopped early: the reader thread is unblocked by EOF
                proc.kill()
                proc.wait()
            frames.close()
            proc.stdout.close()


def iter_frames(path: str | Path, fps: str, size: tuple[int, int], timeout: float = 3600) -> Iterator[np.ndarray]:
    """BGR frames of a file at the constant rate ``fps`` and ``size`` (see ``decode_frames``)."""
    return decode_frames(path, fps, size, timeout=timeout)


def decode_audio(path: str | Path, origin_s: float, rate: int, out: str | Path, channels: int | None = None,
                 timeout: float = 3600) -> Path:
    """The whole first audio track as interleaved float32 at ``rate`` (its channels, or
    downmixed to ``channels``) in the raw file ``out``: sample 0 is at ``origin_s`` on the
    input's timeline (the video's first frame). Audio before it is dropped; where the
    audio starts later, silence fills in."""
    from curation.ffmpeg import run_ffmpeg

    run_ffmpeg(["-copyts", "-i", str(path), "-map", "0:a:0", "-af",
                f"atrim=start={origin_s:.6f},asetpts=PTS-{origin_s:.6f}/TB,aresample={rate}:first_pts=0",
                *(["-ac", str(channels)] if channels else []),
                "-c:a", "pcm_f32le", "-f", "f32le", str(out)], timeout=timeout)
    return Path(out)


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


def read_spooled(frames: dict, width: int, height: int, size: tuple[int, int]) -> np.ndarray:
    """The frames a ``FrameSpool`` exported (``frames``: its ``export`` dict; raw YUV 4:2:0 at
    ``width`` x ``height``) as (T, h, w, 3) RGB uint8 at ``size``. Scaled in YUV (area
    averaging), then converted (BT.601, limited range), as ffmpeg's decode of the encoded
    clip at that size would: a stage after the clip stage reads its pixels without
    decoding the clip again."""
    (w, h), frame_bytes = size, width * height * 3 // 2
    out = np.empty((frames["count"], h, w, 3), np.uint8)
    at, skip = 0, frames["skip"]
    for name in frames["files"]:
        chunk = np.memmap(name, np.uint8, mode="r")
        for flat in chunk[: len(chunk) - len(chunk) % frame_bytes].reshape(-1, frame_bytes)[skip:]:
            if at == len(out):
                break
            planes = (flat[: width * height].reshape(height, width),
                      flat[width * height: frame_bytes * 5 // 6].reshape(height // 2, width // 2),
                      flat[frame_bytes * 5 // 6:].reshape(height // 2, width // 2))
            if (w, h) != (width, height):
                planes = [cv2.resize(p, (w // (1 + (i > 0)), h // (1 + (i > 0))), interpolation=cv2.INTER_AREA)
                          for i, p in enumerate(planes)]
            i420 = np.concatenate([p.reshape(-1) for p in planes]).reshape(h * 3 // 2, w)
            out[at] = cv2.cvtColor(i420, cv2.COLOR_YUV2RGB_I420)
            at += 1
        skip = max(0, skip - len(chunk) // frame_bytes)
        del chunk
    if at != len(out):
        raise ValueError(f"the spool holds {at} of the clip's {len(out)} frames")
    return out


class FrameSpool:
    """Raw frames of a source, kept on local disk (the page cache, not the heap) from the
    moment they are decoded until the clips they belong to are encoded. Frames live in
    chunk files of ``chunk`` frames. A clip is handed over as hard links to the chunks
    that hold its frames (no copy); ``release`` drops the spool's own names below a frame,
    and a chunk's disk space goes once the last clip linking it is done with it."""

    def __init__(self, directory: str | Path, frame_bytes: int, chunk: int = 64):
        self.dir, self.frame_bytes, self.chunk = Path(directory), frame_bytes, chunk
        self.dir.mkdir(parents=True, exist_ok=True)
        self.count = 0
        self._released = 0  # chunks below this frame are gone
        self._open = None

    def _chunk(self, index: int) -> Path:
        return self.dir / f"{index // self.chunk:08d}.raw"

    def append(self, planes) -> None:
        """One frame: an array, or its planes in order (written as they are, no copy)."""
        if self.count % self.chunk == 0:
            if self._open:
                self._open.close()
            self._open = open(self._chunk(self.count), "wb")  # noqa: SIM115 (open across appends)
        for plane in (planes if isinstance(planes, tuple) else (planes,)):
            self._open.write(np.ascontiguousarray(plane).data)
        self.count += 1

    def export(self, start: int, end: int, folder: str | Path) -> dict:
        """Frames [start, end) as links in ``folder``: ``{"files": [...], "skip": n, "count": m}``
        (read the files in order, drop the first ``skip`` frames, keep ``count``)."""
        if self._open:
            self._open.flush()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        files = []
        for first in range(start - start % self.chunk, end, self.chunk):
            link = folder / self._chunk(first).name
            os.link(self._chunk(first), link)
            files.append(str(link))
        return {"files": files, "skip": start % self.chunk, "count": end - start}

    def release(self, before: int) -> None:
        for first in range(self._released, before - before % self.chunk, self.chunk):
            self._chunk(first).unlink(missing_ok=True)
        self._released = max(self._released, before - before % self.chunk)

    def close(self) -> None:
        if self._open:
            self._open.close()
            self._open = None
        for path in self.dir.glob("*.raw"):
            path.unlink(missing_ok=True)
