"""Sync stage: estimate the audio/video offset of a clip, then keep, correct or reject it.

The default scorer needs no learned weights: it cross-correlates the audio's onset
envelope (spectral flux of the clip's flac, 5 ms hops) with the picture's onsets (rises
of ``analysis.motion_energy``, the per-frame change the shot stage measured) over lags
of +-``max_lag_s``. The lag with the highest correlation is the offset; positive means
the audio lags the video. Confidence is how far that peak stands above the best lag at
least ``distinct_s`` away: periodic events (a metronome, footsteps) match at several
lags and get a low confidence, which the policy treats as "cannot tell".

A learned scorer (SyncNet / Synchformer style) plugs in through ``SyncScorer``: set
``scorer`` to "package.module:ClassName" and ``model_path`` to its local weights; the
class is built once per worker as ``ClassName(model_path=...)`` and must offer
``estimate(item) -> (offset_ms, confidence, method)``.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol

import numpy as np
import soundfile as sf

from curation.ffmpeg import ffprobe, run_ffmpeg
from curation.media_io import clip_durations, duration_problem, read_audio
from curation.stage import Item, Resources, Stage, reject


class SyncScorer(Protocol):
    def estimate(self, item: Item) -> tuple[float, float, str]:
        """(offset_ms, confidence 0..1, method name) for a clip item with files.flac."""


@dataclass
class SyncConfig:
    policy: str = "correct"  # keep | correct | reject
    scorer: str = "correlation"  # or "package.module:ClassName" of a learned scorer
    model_path: str | None = None  # local weights of a learned scorer
    max_lag_s: float = 1.0
    distinct_s: float = 0.1  # competing lags closer than this to the peak are the same peak
    # |offset| up to this is in sync: below what viewers notice (ITU-R BT.1359: audio
    # 45 ms early to 125 ms late) and about one frame, the estimator's resolution.
    in_sync_ms: float = 45.0
    max_correct_ms: float = 200.0  # "correct" shifts audio by at most this much
    min_confidence: float = 0.3  # below it the estimate is recorded but not acted on


class CorrelationScorer:
    """Onset cross-correlation (see module docstring). No weights, ~ms per clip."""

    method = "onset_xcorr"

    # Signals are standardised, but never by less than these spreads, so a steady tone's
    # codec noise or a camera's jitter is not blown up into "events". Measured: a click
    # or a cut in the sound peaks at 0.3-1.2 flux, a steady tone at <0.1; a flash or a
    # cut raises motion energy by 0.1-0.6, ordinary motion varies by <0.01.
    audio_floor = 0.05
    visual_floor = 0.01
    # Peak correlation of a clear match (several events lined up); weaker peaks lower
    # the confidence proportionally.
    clear_peak = 0.5

    def __init__(self, max_lag_s: float = 1.0, distinct_s: float = 0.1, hop_s: float = 0.005):
        self.max_lag_s, self.distinct_s, self.hop_s = max_lag_s, distinct_s, hop_s

    def estimate(self, item: Item) -> tuple[float, float, str]:
        samples, rate = read_audio(item["files"]["flac"])
        audio = _standardise(onset_envelope(samples.mean(axis=1), rate, self.hop_s), self.audio_floor)
        energy = np.asarray(item["analysis"]["motion_energy"], dtype=np.float64)
        visual = np.maximum(np.diff(energy, prepend=energy[:1]), 0.0)  # picture onsets
        visual[:2] = 0.0  # energy[0] is zeroed by the shot stage, so the rise at 1 is not real
        visual = _standardise(visual, self.visual_floor)
        # Value i of the envelope is the rise in the window ending at i * hop: a sound that
        # starts between two hops shows at the later one, so sample it half a hop later.
        frame_times = np.arange(len(visual)) / item["analysis"]["fps"] + self.hop_s / 2
        lags = np.arange(-round(self.max_lag_s / self.hop_s), round(self.max_lag_s / self.hop_s) + 1) * self.hop_s
        scores = np.array([_correlation(visual, audio, frame_times + lag, self.hop_s) for lag in lags])
        # A mild preference for small offsets breaks ties between equally good lags
        # (periodic events) in favour of the likelier one; it never outweighs one more match.
        scores *= 1 - 0.1 * np.abs(lags) / self.max_lag_s
        best = int(np.argmax(scores))
        far = np.abs(lags - lags[best]) >= self.distinct_s
        runner_up = float(scores[far].max()) if far.any() else 0.0
        peak = float(scores[best])
        distinct = 1 - max(runner_up, 0.0) / peak if peak > 0 else 0.0
        confidence = distinct * min(1.0, peak / self.clear_peak)
        return float(lags[best] * 1000), float(confidence), self.method


def _standardise(x: np.ndarray, floor: float) -> np.ndarray:
    return (x - x.mean()) / max(float(x.std()), floor)


def onset_envelope(mono: np.ndarray, rate: int, hop_s: float) -> np.ndarray:
    """Spectral flux every ``hop_s``: value i is the rise in log-magnitude spectrum between
    the windows ending at times (i - 1) * hop_s and i * hop_s, so a sound that starts at t
    peaks at t (windows are short: 2 hops)."""
    hop = max(1, round(rate * hop_s))
    window = 2 * hop
    padded = np.concatenate([np.zeros(window, mono.dtype), mono])
    count = (len(padded) - window) // hop + 1
    frames = np.lib.stride_tricks.sliding_window_view(padded, window)[::hop][:count]
    spectrum = np.log1p(100 * np.abs(np.fft.rfft(frames * np.hanning(window), axis=1)))
    flux = np.maximum(np.diff(spectrum, axis=0, prepend=spectrum[:1]), 0.0).mean(axis=1)
    flux[:3] = 0.0  # windows reaching into the zero padding: the clip's start is not an onset
    # A light smoothing (one hop) so the peak is not a single sample wide.
    return np.convolve(flux, [0.25, 0.5, 0.25], mode="same")


def _correlation(visual: np.ndarray, audio: np.ndarray, times: np.ndarray, hop_s: float) -> float:
    """Mean product of the (standardised) picture onsets and audio envelope sampled at
    ``times``. Frames shifted outside the audio contribute nothing but still count in the
    mean (the usual biased estimator: lags that leave part of the clip unmatched lose)."""
    index = times / hop_s
    inside = (index >= 0) & (index <= len(audio) - 1)
    a = np.interp(index[inside], np.arange(len(audio)), audio)
    return float(np.sum(a * visual[inside]) / len(visual))


def load_scorer(config: SyncConfig) -> SyncScorer:
    if config.scorer == "correlation":
        return CorrelationScorer(config.max_lag_s, config.distinct_s)
    module, _, name = config.scorer.partition(":")
    if not name:
        raise ValueError(f"sync.scorer must be 'correlation' or 'package.module:ClassName', not {config.scorer!r}")
    if not config.model_path or not Path(config.model_path).exists():
        raise ValueError(f"sync.model_path must name the learned scorer's local weights (got {config.model_path!r})")
    return getattr(importlib.import_module(module), name)(model_path=config.model_path)


class SyncStage(Stage):
    name = "sync"
    resources: ClassVar[Resources] = Resources(cpus=0.5)

    def __init__(self, config: SyncConfig | None = None):
        config = config or SyncConfig()
        if config.policy not in ("keep", "correct", "reject"):
            raise ValueError(f"sync.policy must be keep, correct or reject, not {config.policy!r}")
        super().__init__(config)
        self.scorer: SyncScorer | None = None

    def setup(self) -> None:
        self.scorer = load_scorer(self.config)

    def process(self, item: Item) -> list[Item]:
        if self.scorer is None:
            self.setup()
        if "flac" not in item.get("files", {}):
            return [{**item, "sync": {"offset_ms": None, "confidence": 0.0, "method": "none", "action": "kept"}}]
        offset_ms, confidence, method = self.scorer.estimate(item)
        sync = {"offset_ms": round(offset_ms, 1), "confidence": round(confidence, 3), "method": method}
        action = self._decide(offset_ms, confidence)
        if action == "corrected":
            problem = shift_audio(item, offset_ms / 1000)
            if problem:
                return [reject({**item, "sync": {**sync, "action": "rejected"}}, self.name, "duration_mismatch", problem)]
            sync["residual_ms"] = round(self.scorer.estimate(item)[0], 1)
        item = {**item, "sync": {**sync, "action": action}}
        if action == "rejected":
            return [reject(item, self.name, "av_desync", f"audio offset {offset_ms:+.0f} ms (confidence {confidence:.2f})")]
        return [item]

    def _decide(self, offset_ms: float, confidence: float) -> str:
        cfg = self.config
        if confidence < cfg.min_confidence or abs(offset_ms) <= cfg.in_sync_ms or cfg.policy == "keep":
            return "kept"
        if cfg.policy == "correct" and abs(offset_ms) <= cfg.max_correct_ms:
            return "corrected"
        return "rejected"


def shift_audio(item: Item, offset_s: float) -> str:
    """Move the clip's audio earlier by ``offset_s`` (later when negative) in place, in the
    flac and the mp4 alike, keeping every duration; returns a problem message or ""."""
    flac, mp4 = Path(item["files"]["flac"]), Path(item["files"]["mp4"])
    info = sf.info(str(flac))
    total, shift = info.frames, round(abs(offset_s) * info.samplerate)
    move = (f"atrim=start_sample={shift},asetpts=PTS-STARTPTS" if offset_s > 0
            else f"adelay=delays={shift}S:all=1")
    new_flac, new_mp4 = flac.with_suffix(".shifted.flac"), mp4.with_suffix(".shifted.mp4")
    run_ffmpeg(["-i", str(flac), "-af", f"{move},apad=whole_len={total},atrim=end_sample={total}",
                "-c:a", "flac", str(new_flac)])
    audio = next(s for s in ffprobe(mp4)["streams"] if s["codec_type"] == "audio")
    run_ffmpeg(["-i", str(mp4), "-i", str(new_flac), "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy",
                "-c:a", audio["codec_name"], "-b:a", audio.get("bit_rate", "192000"),
                "-movflags", "+faststart", str(new_mp4)])
    got = clip_durations(new_mp4, new_flac)
    problem = duration_problem(got, got["n_frames"], item["fps"])
    for new, old in ((new_flac, flac), (new_mp4, mp4)):
        if problem:
            new.unlink()
        else:
            os.replace(new, old)
    return problem
