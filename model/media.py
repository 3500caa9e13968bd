"""Write a generated clip (frames + audio track) to an mp4 with PyAV (no ffmpeg binary), and
the two decoding steps every reader of clips shares. ``AVClip`` is the one record of decoded
clips (what the joint generator and the latent decoders return)."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

_LAYOUTS = {1: "mono", 2: "stereo"}


@dataclass
class AVClip:
    """A batch of decoded clips: frames and waveforms, and the rates they play at."""

    video: torch.Tensor  # (B, 3, T, H, W) in [-1, 1]
    audio: torch.Tensor  # (B, channels, samples), as long as the frames
    fps: float
    sample_rate: int

    def save_mp4(self, path: str | Path, index: int = 0) -> Path:
        """Clip ``index`` of the batch as an mp4 at ``path``."""
        return write_mp4(path, to_uint8_frames(self.video[index]), self.fps,
                         self.audio[index].float().cpu().numpy(), self.sample_rate)


def frame_at(times: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """For each target instant (s), the index of the last frame shown at or before it, of
    frames shown at ``times`` (s, ascending)."""
    return np.clip(np.searchsorted(times, np.asarray(targets) + 1e-6, side="right") - 1, 0, len(times) - 1)


def decode_audio(container, rate: int, channels: int) -> tuple[np.ndarray | None, float]:
    """The first audio stream of an open PyAV ``container`` resampled to ``rate`` Hz, mono or
    (``channels`` 2) stereo: (channels, N) float32, or None when it decodes to nothing; and the
    time (s) of its first sample on the container's clock."""
    resampler = av.AudioResampler(format="fltp", layout="stereo" if channels == 2 else "mono", rate=rate)
    chunks, start = [], None
    for frame in container.decode(audio=0):
        if start is None:
            start = float(frame.time or 0.0)
        chunks += [r.to_ndarray() for r in resampler.resample(frame)]
    chunks += [r.to_ndarray() for r in resampler.resample(None)]
    return (np.concatenate(chunks, axis=1).astype(np.float32) if chunks else None), start or 0.0


def to_uint8_frames(video: torch.Tensor) -> np.ndarray:
    """(3, T, H, W) in [-1, 1] -> (T, H, W, 3) uint8."""
    frames = ((video.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return frames.permute(1, 2, 3, 0).cpu().numpy()


def write_mp4(path: str | Path, frames: np.ndarray, fps: float, audio: np.ndarray | None = None,
              sample_rate: int = 16000, crf: int = 18) -> Path:
    """frames (T, H, W, 3) uint8 (H, W even); audio (channels, samples) float in [-1, 1]."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    t, h, w, _ = frames.shape
    if h % 2 or w % 2:
        raise ValueError(f"H.264 needs even frame sizes, got {w}x{h}")
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), mode="w") as container:
        vstream = container.add_stream("libx264", rate=rate)
        vstream.width, vstream.height, vstream.pix_fmt = w, h, "yuv420p"
        vstream.options = {"crf": str(crf)}
        astream = None
        if audio is not None:
            if audio.shape[0] not in _LAYOUTS:
                raise ValueError(f"audio must be mono or stereo, got {audio.shape[0]} channels")
            astream = container.add_stream("aac", rate=sample_rate, layout=_LAYOUTS[audio.shape[0]])
        for frame in frames:
            container.mux(vstream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(vstream.encode())
        if astream is not None:
            samples = np.clip(audio, -1, 1).astype(np.float32)
            chunk, pts = 1024, 0
            for start in range(0, samples.shape[1], chunk):
                piece = np.ascontiguousarray(samples[:, start:start + chunk])
                frame = av.AudioFrame.from_ndarray(piece, format="fltp", layout=_LAYOUTS[audio.shape[0]])
                frame.sample_rate, frame.pts = sample_rate, pts
                pts += piece.shape[1]
                container.mux(astream.encode(frame))
            container.mux(astream.encode())
    return path
