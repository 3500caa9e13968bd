"""Lip sync of a speaking face: the lips' shape against the levels of the speech bands.

The face is tracked (curation/faces.py) and dlib's 68 landmarks outline its lips in every
frame (curation/lip_landmarks.py): inner-lip opening, outer-lip opening and mouth width,
each over the nose's length. The audio is the level of three speech bands. Both are
band-passed to the syllable rate (1-8 Hz); over lags of +-max_lag the first canonical
correlation of the two (Slaney & Covell, "FaceSync: A linear operator for measuring
synchronization of video facial images and audio tracks", NIPS 2000) is the score, and the
best lag is the offset (curation/sync_lag.py).

Measured on real talking heads (benchmarks/sync_accuracy.py): the best lag is within 40 ms
of the truth for only about a quarter of clips, because quasi-periodic syllables match at
other lags nearly as well on clips of a few seconds. The calibrated confidence therefore
leaves real clips ``unmeasured`` rather than guessing (curation/sync.py).
"""

from __future__ import annotations

import numpy as np
from scipy.signal import butter, sosfiltfilt

from curation.faces import FaceDetector, mouth_crops, track_mouth
from curation.lip_landmarks import LipReader, lip_features
from curation.sync_lag import LagSearch, orthonormal_basis, search_lags
from curation.sync_speech_mouth import HOP_S as MODEL_HOP_S
from curation.sync_speech_mouth import SpeechMouthModel, mouth_opening

HOP_S = 0.005
MOUTH_COMPONENTS = 5
LIP_SIGNAL = "lips"  # chosen on the real development set: benchmarks/sync_accuracy.py --compare
# Speech whose band level stays this far below full scale is not there to sync to.
SILENT_DBFS = -50.0
AUDIO_BANDS_HZ = (150, 700, 1500, 4000)


def _highpass(x: np.ndarray, rate: float, cutoff_hz: float = 0.7) -> np.ndarray:
    """Remove slow drift (pose, light, loudness trends) along axis 0."""
    if len(x) < 16:
        return x - x.mean(0)
    return sosfiltfilt(butter(2, cutoff_hz, btype="high", fs=rate, output="sos"), x, axis=0)


def _syllable_band(x: np.ndarray, rate: float) -> np.ndarray:
    """``x`` along axis 0 band-passed to 1-8 Hz: syllables, without drift or frame jitter."""
    if len(x) < 16:
        return x - x.mean(0)
    return sosfiltfilt(butter(2, [1.0, min(8.0, 0.45 * rate)], btype="band", fs=rate, output="sos"), x, axis=0)


def speech_envelope(mono: np.ndarray, rate: int, hop_s: float = HOP_S, band: tuple = (150, 4000)) -> np.ndarray:
    """Level in dB of the speech ``band`` every ``hop_s`` (20 ms windows centred on each hop)."""
    band = sosfiltfilt(butter(4, [band[0], min(band[1], 0.45 * rate)], btype="band", fs=rate, output="sos"), mono)
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


def mouth_track_signals(frames: np.ndarray, fps: float, detector: FaceDetector, reader: LipReader
                        ) -> dict[str, np.ndarray] | None:
    """What the picture says about the clip's main mouth, or None without a face: per frame
    its 68 ``landmarks``, its ``lips`` (inner/outer opening, width: lip_landmarks.py) and its
    grey ``patch`` (the mouth's appearance, the previous estimator's input)."""
    track = track_mouth(frames, fps, detector)
    if track is None:
        return None
    landmarks = reader.landmarks(frames, track)
    return {"landmarks": landmarks, "lips": lip_features(landmarks).astype(np.float32),
            "patch": mouth_crops(frames, track), "found_ratio": np.float64(track.found_ratio)}


def mouth_signal(signals: dict[str, np.ndarray], fps: float, kind: str = LIP_SIGNAL) -> np.ndarray:
    """(T, k) picture signal with orthonormal centred columns, drift removed: ``opening``,
    the inner lips' opening alone (k = 1, so the search wants the mouth open while the
    sound is loud, not merely some lag where anything matches); ``lips``, the three lip
    measures' principal components; ``patch``, the mouth patch's (appearance)."""
    if kind == "opening":
        x = _highpass(signals["lips"][:, :1].astype(np.float64), fps)
        norm = np.linalg.norm(x - x.mean())
        return (x - x.mean()) / norm if norm > 1e-9 else np.zeros((len(x), 0))
    if kind == "lips":
        x = signals["lips"].astype(np.float64)
        return orthonormal_basis(_syllable_band(x / (x.std(0) + 1e-9), fps), 3)
    crops = np.stack([c - c.mean() for c in signals["patch"]])  # brightness flicker is not speech
    return orthonormal_basis(_highpass(crops.reshape(len(crops), -1), fps), MOUTH_COMPONENTS)


def audio_signal(mono: np.ndarray, rate: int, hop_s: float = HOP_S) -> np.ndarray:
    """(N, 3) level in dB of three speech bands (150-700 Hz: voicing and F1, 700-1500 Hz:
    F1/F2 of open vowels, 1500-4000 Hz: F2 and frication) every ``hop_s``, in the syllable
    band (1-8 Hz). Measured on the real development set (benchmarks/sync_accuracy.py): the
    three bands against the three lip measures found the true lag about twice as often as
    one broadband envelope against the inner opening."""
    levels = []
    for low, high in zip(AUDIO_BANDS_HZ[:-1], AUDIO_BANDS_HZ[1:], strict=True):
        env = speech_envelope(mono, rate, hop_s, band=(low, high))
        levels.append(np.maximum(env, np.percentile(env, 10)))  # silence's level is noise, not signal
    return _syllable_band(np.stack(levels, 1), 1 / hop_s)


def signals_lag(signals: dict[str, np.ndarray], fps: float, mono: np.ndarray, rate: int, *, max_lag_s: float,
                distinct_s: float, kind: str = LIP_SIGNAL, model: SpeechMouthModel | None = None
                ) -> tuple[LagSearch | None, str | None]:
    """(lag search, None) for the mouth ``signals`` against ``mono``, or (None, reason).
    ``lips``, ``opening``, ``patch``: lip measures or appearance against the levels of three
    speech bands; ``predicted``: the seen opening against the one ``model`` predicts from the
    speech (curation/sync_speech_mouth.py: evaluated by the benchmark, not shipped)."""
    if not speech_present(speech_envelope(mono, rate)):
        return None, "no_speech"
    if kind == "predicted":
        if model is None:
            raise ValueError("the predicted lip signal needs a speech-to-mouth model (fit_model)")
        seen = mouth_opening(signals["landmarks"], fps)[:, None]
        if not np.isfinite(seen).all() or seen.std() < 1e-6:
            return None, "ambiguous"
        predicted = model.predict(mono, rate)
        return search_lags(seen / np.linalg.norm(seen), predicted, MODEL_HOP_S, fps,
                           max_lag_s=max_lag_s, distinct_s=distinct_s, step_s=MODEL_HOP_S), None
    basis = mouth_signal(signals, fps, kind)
    if basis.shape[1] == 0:
        return None, "ambiguous"
    return search_lags(basis, audio_signal(mono, rate), HOP_S, fps, max_lag_s=max_lag_s,
                       distinct_s=distinct_s, step_s=HOP_S), None


def lip_lag(frames: np.ndarray, fps: float, mono: np.ndarray, rate: int, detector: FaceDetector,
            reader: LipReader, *, max_lag_s: float, distinct_s: float) -> tuple[LagSearch | None, str | None]:
    """(lag search, None) for a speaking face, or (None, reason): no_face, no_speech."""
    if not speech_present(speech_envelope(mono, rate)):
        return None, "no_speech"
    signals = mouth_track_signals(frames, fps, detector, reader)
    if signals is None:
        return None, "no_face"
    return signals_lag(signals, fps, mono, rate, max_lag_s=max_lag_s, distinct_s=distinct_s)
