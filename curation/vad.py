"""Voice activity detection with the Silero VAD model that faster-whisper's wheel ships
(``faster_whisper/assets/silero_vad_v6.onnx``, run by onnxruntime): no download, ~ms a
second of audio on one CPU core. Used by the audio stage (speech ratio) and by the
transcribe stage (which chunks to send to Whisper)."""

from __future__ import annotations

from math import gcd

import numpy as np
from scipy.signal import resample_poly

SAMPLE_RATE = 16000  # the only rate Silero (and Whisper) take


def to_mono_16k(samples: np.ndarray, rate: int) -> np.ndarray:
    """(samples, channels) or (samples,) float audio at ``rate`` -> mono float32 at 16 kHz."""
    mono = samples.mean(axis=1) if samples.ndim == 2 else samples
    if rate != SAMPLE_RATE:
        g = gcd(SAMPLE_RATE, rate)
        mono = resample_poly(mono, SAMPLE_RATE // g, rate // g)
    return np.ascontiguousarray(mono, dtype=np.float32)


def speech_segments(
    audio_16k: np.ndarray,
    threshold: float = 0.5,
    min_speech_ms: int = 250,
    min_silence_ms: int = 300,
    pad_ms: int = 100,
    max_speech_s: float = float("inf"),
) -> list[tuple[float, float]]:
    """(start_s, end_s) of the speech in mono 16 kHz audio, in order, non-overlapping."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    options = VadOptions(threshold=threshold, min_speech_duration_ms=min_speech_ms,
                         min_silence_duration_ms=min_silence_ms, speech_pad_ms=pad_ms,
                         max_speech_duration_s=max_speech_s)
    stamps = get_speech_timestamps(audio_16k, options)
    return [(s["start"] / SAMPLE_RATE, s["end"] / SAMPLE_RATE) for s in stamps]
