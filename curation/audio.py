"""Audio stage: loudness, silence, speech, tempo, beats and onsets of a clip's audio.

Reads the clip's lossless ``files.flac`` (or decodes the audio track of ``files.mp4``
when there is no flac) once, then measures:

- ``loudness_lufs``: integrated loudness, ITU-R BS.1770-4 (K-weighting, 400 ms blocks,
  absolute gate -70 LUFS, relative gate -10 LU), pure numpy/scipy. ``None`` when every
  block is below the absolute gate (digital silence).
- ``silence_ratio``: fraction of 50 ms windows quieter than ``silence_dbfs``.
- ``speech_ratio``: fraction of the clip the Silero VAD marks as speech (curation.vad).
- ``tempo_bpm``, ``beats_s``, ``onsets_s``: librosa's beat tracker and onset detector.
  The beat tracker finds "beats" in anything (speech included), so ``pulse_clarity``
  (the highest autocorrelation of the onset envelope at lags of 40-240 BPM, 0..1)
  decides whether there is a beat at all: below ``min_pulse_clarity``, or with fewer
  than ``min_beats`` beats, ``tempo_bpm`` is ``None`` and ``beats_s`` is empty.
  Measured: a click track 0.85, clicks in noise 0.6, speech 0.08-0.25, Big Buck
  Bunny's orchestral opening 0.13, a steady tone 0.02. librosa's numba kernels load
  from a cache that one process compiles and checks before any worker reads it
  (``curation/jit_cache.py``: parallel compiles into one cache crashed every later run).

A clip without audio is rejected ``no_audio`` unless ``require_audio`` is false, in
which case it passes with ``audio.has_audio = False`` and no measurements.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from math import gcd
from typing import ClassVar

import numpy as np
from scipy.signal import lfilter, resample_poly

from curation.ffmpeg import binary, ffprobe
from curation.jit_cache import ensure_warm
from curation.media_io import read_audio
from curation.stage import Item, Resources, Stage, reject
from curation.vad import speech_segments, to_mono_16k


@dataclass
class AudioConfig:
    require_audio: bool = True  # reject clips without an audio track (reason no_audio)
    silence_dbfs: float = -50.0  # a 50 ms window below this RMS level is silence
    vad_threshold: float = 0.5  # Silero speech probability above which a frame is speech
    analysis_rate: int = 22050  # librosa works at this rate (beats need no more)
    min_beats: int = 4  # fewer beats than this: no tempo is reported
    min_pulse_clarity: float = 0.35  # weaker periodicity: no tempo (see module doc)
    max_onsets: int = 2000  # cap on stored onset times (keeps the json small)


class AudioStage(Stage):
    name = "audio"
    resources: ClassVar[Resources] = Resources(cpus=1.0)

    def __init__(self, config: AudioConfig | None = None):
        super().__init__(config or AudioConfig())

    def setup(self) -> None:
        # librosa's numba kernels: compiled once per environment (curation/jit_cache.py),
        # loaded here once per worker rather than inside the first clip.
        noise = _noise(self.config.analysis_rate)
        rhythm(noise, self.config.analysis_rate, self.config.analysis_rate)
        speech_segments(to_mono_16k(noise, self.config.analysis_rate))  # the VAD's onnx session loads once

    def process(self, item: Item) -> list[Item]:
        loaded = load_clip_audio(item)
        if loaded is None:
            if self.config.require_audio:
                return [reject(item, self.name, "no_audio", "the clip has no audio track")]
            return [{**item, "audio": {**item.get("audio", {}), "has_audio": False}}]
        samples, rate = loaded
        if len(samples) == 0:
            return [reject(item, self.name, "no_audio", "the audio track is empty")]
        return [{**item, "audio": {**item.get("audio", {}), **self.measure(samples, rate)}}]

    def measure(self, samples: np.ndarray, rate: int) -> dict:
        cfg = self.config
        duration = len(samples) / rate
        speech = speech_segments(to_mono_16k(samples, rate), threshold=cfg.vad_threshold)
        tempo, beats, onsets, clarity = rhythm(samples, rate, cfg.analysis_rate)
        if clarity < cfg.min_pulse_clarity or len(beats) < cfg.min_beats:
            tempo, beats = None, []
        loudness = integrated_loudness(samples, rate)
        return {
            "has_audio": True,
            "sample_rate": rate,
            "channels": samples.shape[1],
            "duration_s": round(duration, 4),
            "loudness_lufs": None if loudness is None else round(loudness, 2),
            "peak_dbfs": round(_db(float(np.abs(samples).max()) ** 2), 2),
            "silence_ratio": round(silence_ratio(samples, rate, cfg.silence_dbfs), 4),
            "speech_ratio": round(min(1.0, sum(e - s for s, e in speech) / duration), 4),
            "speech_segments_s": [[round(s, 3), round(e, 3)] for s, e in speech],
            "pulse_clarity": round(clarity, 3),
            "tempo_bpm": None if tempo is None else round(tempo, 2),
            "beats_s": [round(t, 3) for t in beats],
            "onsets_s": [round(t, 3) for t in onsets[: cfg.max_onsets]],
        }


def load_clip_audio(item: Item) -> tuple[np.ndarray, int] | None:
    """The clip's audio as float32 (samples, channels) and its rate; None without audio."""
    files = item.get("files", {})
    if files.get("flac"):
        return read_audio(files["flac"])
    if not files.get("mp4") or item.get("probe", {}).get("has_audio") is False:
        return None
    stream = next((s for s in ffprobe(files["mp4"])["streams"] if s["codec_type"] == "audio"), None)
    if stream is None:
        return None
    rate, channels = int(stream["sample_rate"]), int(stream["channels"])
    raw = subprocess.run([binary("ffmpeg"), "-hide_banner", "-nostdin", "-loglevel", "error",
                          "-i", files["mp4"], "-map", "0:a:0", "-f", "f32le", "-"],
                         capture_output=True, check=True, timeout=600).stdout
    return np.frombuffer(raw, np.float32).reshape(-1, channels), rate


# --- loudness (ITU-R BS.1770-4) ------------------------------------------------------

def k_weighting(rate: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The two K-weighting stages (pre-filter high shelf, RLB high-pass) at ``rate``, as
    (b, a). Designed from the analog parameters BS.1770's 48 kHz coefficients come from
    (bilinear transform, as libebur128 does), so every sample rate gets the same curve."""
    f0, gain_db, q = 1681.974450955533, 3.999843853973347, 0.7071752369554196
    k = np.tan(np.pi * f0 / rate)
    vh = 10 ** (gain_db / 20)
    vb = vh**0.4996667741545416
    a0 = 1 + k / q + k * k
    shelf = (np.array([vh + vb * k / q + k * k, 2 * (k * k - vh), vh - vb * k / q + k * k]) / a0,
             np.array([1.0, 2 * (k * k - 1) / a0, (1 - k / q + k * k) / a0]))
    f0, q = 38.13547087602444, 0.5003270373238773
    k = np.tan(np.pi * f0 / rate)
    a0 = 1 + k / q + k * k
    # The standard states the high-pass numerator as exactly [1, -2, 1].
    highpass = (np.array([1.0, -2.0, 1.0]), np.array([1.0, 2 * (k * k - 1) / a0, (1 - k / q + k * k) / a0]))
    return [shelf, highpass]


def integrated_loudness(samples: np.ndarray, rate: int) -> float | None:
    """Gated integrated loudness in LUFS of (samples, channels) float audio."""
    x = samples.astype(np.float64)
    for b, a in k_weighting(rate):
        x = lfilter(b, a, x, axis=0)
    block, step = round(0.4 * rate), round(0.1 * rate)
    if len(x) < block:
        return None
    starts = np.arange(0, len(x) - block + 1, step)
    power = np.cumsum(np.vstack([np.zeros((1, x.shape[1])), x**2]), axis=0)
    mean_square = (power[starts + block] - power[starts]) / block  # (blocks, channels)
    weighted = mean_square @ _channel_weights(x.shape[1])
    loud = -0.691 + 10 * np.log10(np.maximum(weighted, 1e-20))
    kept = weighted[loud > -70.0]
    if len(kept) == 0:
        return None
    relative_gate = -0.691 + 10 * np.log10(kept.mean()) - 10.0
    kept = weighted[(loud > -70.0) & (loud > relative_gate)]
    return float(-0.691 + 10 * np.log10(kept.mean()))


def _channel_weights(channels: int) -> np.ndarray:
    # BS.1770: surrounds weigh 1.41, the LFE is left out (5.1 order L R C LFE Ls Rs).
    if channels == 6:
        return np.array([1.0, 1.0, 1.0, 0.0, 1.41, 1.41])
    return np.ones(channels)


# --- level, rhythm -------------------------------------------------------------------

def _db(power: float) -> float:
    return float(10 * np.log10(max(power, 1e-20)))


def silence_ratio(samples: np.ndarray, rate: int, silence_dbfs: float, window_s: float = 0.05) -> float:
    """Fraction of ``window_s`` windows whose RMS (over all channels) is below ``silence_dbfs``
    (0 dBFS = a full-scale square wave)."""
    n = max(1, round(window_s * rate))
    count = max(1, len(samples) // n)
    frames = samples[: count * n].reshape(count, -1)
    rms_db = 10 * np.log10(np.maximum((frames.astype(np.float64) ** 2).mean(axis=1), 1e-20))
    return float((rms_db < silence_dbfs).mean())


def rhythm(samples: np.ndarray, rate: int, analysis_rate: int) -> tuple[float, list[float], list[float], float]:
    """(tempo in BPM, beat times, onset times, pulse clarity) from librosa, on the mono mix."""
    ensure_warm()  # before librosa's import: its kernels load from the project's checked cache
    import librosa

    mono = samples.mean(axis=1)
    if rate != analysis_rate:
        g = gcd(rate, analysis_rate)
        mono = resample_poly(mono, analysis_rate // g, rate // g)
    mono = mono.astype(np.float32)
    envelope = librosa.onset.onset_strength(y=mono, sr=analysis_rate)
    tempo, beats = librosa.beat.beat_track(onset_envelope=envelope, sr=analysis_rate, units="time")
    onsets = librosa.onset.onset_detect(onset_envelope=envelope, sr=analysis_rate, units="time")
    return (float(np.atleast_1d(tempo)[0]), [float(t) for t in beats], [float(t) for t in onsets],
            pulse_clarity(envelope, analysis_rate / 512))


def _noise(rate: int) -> np.ndarray:
    return np.random.default_rng(0).normal(0, 0.1, (rate, 1)).astype(np.float32)


def jit_exercise() -> list:
    """What compiles the JIT cache (curation/jit_cache.py runs it in a child process):
    the set-up's rhythm on one second of noise. It reaches every numba kernel librosa
    compiles at import (beat, onset, util, core), the sync stage's ones included."""
    rate = AudioConfig.analysis_rate
    return list(rhythm(_noise(rate), rate, rate))


def pulse_clarity(envelope: np.ndarray, frames_per_s: float) -> float:
    """Highest normalised autocorrelation of the onset envelope at lags of 40-240 BPM."""
    centred = envelope - envelope.mean()
    energy = float(centred @ centred)
    lo, hi = int(frames_per_s * 60 / 240), int(frames_per_s * 60 / 40)
    if energy <= 0 or len(centred) <= lo + 1:
        return 0.0
    lags = range(max(1, lo), min(hi, len(centred) - 1) + 1)
    return float(max(centred[:-lag] @ centred[lag:] for lag in lags) / energy)
