"""The real A/V development set: where it is, its speaker split, the shift protocol and a
per-clip feature cache, shared by benchmarks/sync_accuracy.py and the real-footage test.

The set (manifest.csv, talking/, events/) is not part of the repository: its path comes
from ``TANDEM_REAL_AV`` (default /work/shared/data/real-av); ``real_av_dir()`` is None
where it is absent, and callers skip saying why.

Truth is made by shifting the real audio against the real picture: ``shift_audio``
delays it (positive ms: the audio lags) or advances it, padding with silence and keeping
its length, exactly what a mis-synced file would hold.
"""

from __future__ import annotations

import csv
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SHIFTS_MS = (0, 40, -40, 80, -80, 160, -160, 300, -300, 500, -500)
DEFAULT_DIR = "/work/shared/data/real-av"


@dataclass
class RealClip:
    file: str  # relative to the set's folder
    family: str  # talking_head | event
    group: str  # the speaker (talking heads) or the clip itself (events): what a split keeps together
    source: str  # a name for the per-family tables: latentsync, hdtf, retalking, lrs2, condfoleygen, ...
    path: Path


def real_av_dir() -> Path | None:
    folder = Path(os.environ.get("TANDEM_REAL_AV", DEFAULT_DIR))
    return folder if (folder / "manifest.csv").is_file() else None


def real_clips(folder: Path) -> list[RealClip]:
    with open(folder / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return [RealClip(r["file"], r["family"], r["speaker"] or r["file"], Path(r["file"]).stem.split("_")[0],
                     folder / r["file"]) for r in rows]


def folds(groups: list[str], k: int, seed: int) -> dict[str, int]:
    """Each group (speaker) to one of ``k`` folds, at random with ``seed``, sizes within one."""
    unique = sorted(set(groups))
    order = np.random.default_rng(seed).permutation(len(unique))
    return {unique[i]: n % k for n, i in enumerate(order)}


def shift_audio(mono: np.ndarray, rate: int, shift_ms: float) -> np.ndarray:
    """``mono`` delayed by ``shift_ms`` (advanced when negative), silence-padded, same length."""
    n = round(abs(shift_ms) * rate / 1000)
    if n == 0:
        return mono
    if n >= len(mono):
        return np.zeros_like(mono)
    pad = np.zeros(n, mono.dtype)
    return np.concatenate([pad, mono[:-n]]) if shift_ms > 0 else np.concatenate([mono[n:], pad])


def clip_features(clip: RealClip, cache: Path, decode_width: int, detector, reader) -> dict:
    """What the sync stage computes before it looks at the audio's timing, cached per clip:
    the face track's landmarks and lip features, the mouth patches, the motion energy, the
    mono audio, and how long each step took (for the cost per clip-second)."""
    from curation.sync import read_clip
    from curation.sync_events import motion_energy
    from curation.sync_lips import mouth_track_signals

    out = cache / f"{Path(clip.file).stem}_w{decode_width}.npz"
    if out.is_file():
        return dict(np.load(out, allow_pickle=False))
    started = time.perf_counter()
    frames, fps, audio, rate = read_clip(clip.path, decode_width)
    decoded = time.perf_counter()
    mono = audio.mean(0).astype(np.float32)
    features = {"fps": np.float64(fps), "rate": np.int64(rate), "mono": mono, "n_frames": np.int64(len(frames))}
    signals = mouth_track_signals(frames, fps, detector, reader) if clip.family == "talking_head" else None
    tracked = time.perf_counter()
    if signals is not None:
        features.update(signals)
    features["motion"] = motion_energy(frames)
    features["seconds"] = np.array([decoded - started, tracked - decoded, time.perf_counter() - tracked])
    cache.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **features)
    return features
