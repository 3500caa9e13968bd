"""Lip sync of a speaking face: mouth appearance against the speech envelope.

The mouth is tracked (curation/faces.py) and cut from every frame as an upright grey
patch at a fixed scale. Its changes over time, reduced to a few principal components,
are the picture signal; the loudness of the speech band (log energy, 150-4000 Hz) is
the audio signal. Over lags of +-max_lag the audio is compared with the best linear
combination of the mouth components (canonical correlation, as in Slaney & Covell,
"FaceSync: A linear operator for measuring synchronization of video facial images and
audio tracks", NIPS 2000), and the best lag is the offset (curation/sync_lag.py).
A mouth opens before and while a vowel sounds and closes in pauses, so the envelope
follows the mouth closely; quasi-periodic syllables match at other lags too, which the
lag search's chance level accounts for.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import butter, sosfiltfilt

from curation.faces import FaceDetector, MouthTrack, mouth_crops, track_mouth
from curation.sync_lag import LagSearch, orthonormal_basis, search_lags

HOP_S = 0.005
MOUTH_COMPONENTS = 5
# Speech whose band level stays this far below full scale is not there to sync to.
SILENT_DBFS = -50.0


def _highpass(x: np.ndarray, rate: float, cutoff_hz: float = 0.7) -> np.ndarray:
    """Remove slow drift (pose, light, loudness trends) along axis 0."""
    if len(x) < 16:
        return x - x.mean(0)
    return sosfiltfilt(butter(2, cutoff_hz, btype="high", fs=rate, output="sos"), x, axis=0)


def speech_envelope(mono: np.ndarray, rate: int, hop_s: float = HOP_S) -> np.ndarray:
    """Speech-band level in dB every ``hop_s`` (20 ms windows centred on each hop)."""
    band = sosfiltfilt(butter(4, [150, min(4000, 0.45 * rate)], btype="band", fs=rate, output="sos"), mono)
    hop, window = max(1, round(rate * hop_s)), max(2, round(rate * 0.02))
    # The moving average of np.convolve(mode="same"), computed at the hops only: a full
    # convolution computed every sample's window to keep one in ``hop`` (~100 ms a clip).
    padded = np.pad(band.astype(np.float64) ** 2, (window // 2, (window - 1) // 2))
    power = np.lib.stride_tricks.sliding_window_view(padded, window)[::hop].sum(1) / window
    return 10 * np.log10(power + 1e-10)


def speech_present(envelope_db: np.ndarray) -> bool:
    """Audible, modulated sound: some windows well above the quiet ones and above silence."""
    if not len(envelope_db):
        return False
    loud, quiet = np.percentile(envelope_db, 95), np.percentile(envelope_db, 10)
    return bool(loud > SILENT_DBFS and loud - quiet > 10.0)


def speech_like(envelope_db: np.ndarray, hop_s: float = HOP_S) -> bool:
    """Loudness that comes and goes at syllable rate (most modulation energy at 2-8 Hz)
    with pauses between (>= 20 dB range), as speech does; music and ambience do not.
    Measured: two speakers on the phone 0.50-0.73 and 22-45 dB, Big Buck Bunny's score 0.19."""
    if len(envelope_db) < round(1 / hop_s):
        return False
    x = (envelope_db - envelope_db.mean()) * np.hanning(len(envelope_db))
    power, freq = np.abs(np.fft.rfft(x)) ** 2, np.fft.rfftfreq(len(x), hop_s)
    syllabic = power[(freq >= 2) & (freq <= 8)].sum() / max(power[(freq >= 0.5) & (freq <= 16)].sum(), 1e-12)
    spread = np.percentile(envelope_db, 95) - np.percentile(envelope_db, 10)
    return bool(syllabic >= 0.4 and spread >= 20)


def mouth_signal(frames: np.ndarray, fps: float, track: MouthTrack) -> np.ndarray:
    """(T, k) orthonormal basis of how the mouth patch changes over the clip."""
    crops = mouth_crops(frames, track)
    crops = np.stack([c - c.mean() for c in crops])  # brightness flicker is not speech
    return orthonormal_basis(_highpass(crops.reshape(len(crops), -1), fps), MOUTH_COMPONENTS)


def audio_signal(mono: np.ndarray, rate: int, hop_s: float = HOP_S) -> np.ndarray:
    """The speech envelope smoothed over one video frame's worth (~40 ms), drift removed."""
    env = np.maximum(speech_envelope(mono, rate, hop_s), np.percentile(speech_envelope(mono, rate, hop_s), 5))
    env = sosfiltfilt(butter(2, 10, fs=1 / hop_s, output="sos"), env) if len(env) > 16 else env
    return _highpass(env, 1 / hop_s)


def lip_lag(frames: np.ndarray, fps: float, mono: np.ndarray, rate: int, detector: FaceDetector, *,
            max_lag_s: float, distinct_s: float) -> tuple[LagSearch | None, str | None]:
    """(lag search, None) for a speaking face, or (None, reason): no_face, no_speech."""
    if not speech_present(speech_envelope(mono, rate)):
        return None, "no_speech"
    track = track_mouth(frames, fps, detector)
    if track is None:
        return None, "no_face"
    basis = mouth_signal(frames, fps, track)
    if basis.shape[1] == 0:
        return None, "ambiguous"
    return search_lags(basis, audio_signal(mono, rate), HOP_S, fps, max_lag_s=max_lag_s,
                       distinct_s=distinct_s, step_s=HOP_S), None
