"""How open the mouth should be, predicted from the speech around each moment.

Correlating the lips' opening directly with the loudness of the speech finds the true lag
on real talking heads for only about a quarter of clips (benchmarks/sync_accuracy.py): a
mouth's opening follows the phonemes, not the loudness (it opens for a quiet vowel, closes
for a loud "m", moves 50-150 ms before the sound of a plosive), so on a clip of a few
seconds the correlation of the two is barely above chance (0.2-0.3 at the true lag).

A linear model can learn that relation instead: the log-mel spectrum (24 bands, 10 ms
hops) at taps from -200 to +200 ms around a moment predicts, by ridge regression, the lips'
(inner + outer) opening over the eye distance at that moment, band-passed to 0.5-8 Hz and
standardised per clip (Slaney & Covell's FaceSync, NIPS 2000, fitted the same kind of
linear audio-to-face map). The lag search (curation/sync_lag.py) then compares the
predicted opening, shifted, with the seen one: one signed column each, so a lag only
scores where the mouth opens when the speech says it should.

It is evaluated, not shipped: ``benchmarks/sync_accuracy.py --compare`` fits it on three
folds' speakers at their recorded alignment and searches the fourth's. The only real
talking heads at hand (the development set) may be used to evaluate and to fit small
calibrations, not to train weights that ship, and no such model ships with a registry
package; so the stage keeps the untrained lip measures (curation/sync_lips.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import butter, sosfiltfilt

HOP_S = 0.01
N_MELS = 24
TAPS = tuple(range(-20, 21, 2))  # in hops: -200..+200 ms every 20 ms
RIDGE = 1.0
EYES_LEFT, EYES_RIGHT = slice(36, 42), slice(42, 48)
INNER = ((61, 67), (62, 66), (63, 65))
OUTER = ((50, 58), (51, 57), (52, 56))


@dataclass
class SpeechMouthModel:
    weights: np.ndarray  # (N_MELS * len(TAPS),)
    mean: np.ndarray  # of the design's columns, on the training clips
    scale: np.ndarray

    def predict(self, mono: np.ndarray, rate: int) -> np.ndarray:
        """The predicted opening every HOP_S from the audio's start (standardised units)."""
        return ((speech_design(log_mel(mono, rate)) - self.mean) / self.scale) @ self.weights


def log_mel(mono: np.ndarray, rate: int) -> np.ndarray:
    """(N, N_MELS) log-mel energies every HOP_S (25 ms windows), each band floored at its
    10th percentile (silence's level is noise) and centred."""
    import librosa

    mel = librosa.feature.melspectrogram(y=np.asarray(mono, np.float32), sr=rate, n_fft=int(0.025 * rate) // 2 * 2,
                                         hop_length=round(HOP_S * rate), n_mels=N_MELS, fmin=80.0,
                                         fmax=min(7600.0, rate / 2))
    x = np.log(mel + 1e-6).T
    x = np.maximum(x, np.percentile(x, 10, axis=0))
    return x - x.mean(0)


def speech_design(mel: np.ndarray) -> np.ndarray:
    """(N, N_MELS * len(TAPS)): each hop's row holds the spectrum at every tap around it."""
    index = np.clip(np.arange(len(mel))[:, None] + np.array(TAPS)[None, :], 0, len(mel) - 1)
    return mel[index].reshape(len(mel), -1)


def mouth_opening(landmarks: np.ndarray, fps: float) -> np.ndarray:
    """(T,) the lips' inner + outer opening over the eye distance (68-point landmarks),
    band-passed to 0.5-8 Hz (no pose drift, no landmark jitter) and standardised."""
    lm = landmarks.astype(np.float64)
    eyes = np.linalg.norm(lm[:, EYES_LEFT].mean(1) - lm[:, EYES_RIGHT].mean(1), axis=-1) + 1e-6
    pairs = np.array(INNER + OUTER)
    opening = np.linalg.norm(lm[:, pairs[:, 0]] - lm[:, pairs[:, 1]], axis=-1).sum(1) / eyes
    if len(opening) >= 16:
        sos = butter(2, [0.5, min(8.0, 0.45 * fps)], btype="band", fs=fps, output="sos")
        opening = sosfiltfilt(sos, opening)
    opening = opening - opening.mean()
    return opening / (opening.std() + 1e-9)


def fit_model(clips: list[tuple[np.ndarray, int, np.ndarray, float]], ridge: float = RIDGE) -> SpeechMouthModel:
    """Ridge regression of the seen opening on the speech design, over ``clips`` of
    (mono, rate, landmarks, fps), each at its recorded (in-sync) alignment."""
    rows, targets = [], []
    for mono, rate, landmarks, fps in clips:
        design, opening = speech_design(log_mel(mono, rate)), mouth_opening(landmarks, fps)
        at = np.round(np.arange(len(opening)) / fps / HOP_S).astype(int)
        keep = at < len(design)
        rows.append(design[at[keep]])
        targets.append(opening[keep])
    x, y = np.concatenate(rows), np.concatenate(targets)
    mean, scale = x.mean(0), x.std(0) + 1e-6
    x = (x - mean) / scale
    weights = np.linalg.solve(x.T @ x + ridge * len(x) * np.eye(x.shape[1]), x.T @ y)
    return SpeechMouthModel(weights, mean, scale)
