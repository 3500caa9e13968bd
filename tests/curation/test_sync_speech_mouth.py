"""The speech-to-mouth model's plumbing on made-up signals (never a figure: accuracy is
measured on real footage by benchmarks/sync_accuracy.py --compare): fitted where the
mouth opens with the sound, it predicts the opening, and the lag search on it recovers a
known audio delay."""

import numpy as np
import pytest

from benchmarks.real_av import shift_audio
from curation.sync_lips import signals_lag
from curation.sync_speech_mouth import fit_model, mouth_opening

RATE, FPS, SECONDS = 16000, 25.0, 6.0


def _clip(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noise whose loudness comes and goes at syllable rate, and landmarks whose lips open with it."""
    rng = np.random.default_rng(seed)
    knots = rng.uniform(0, 1, int(SECONDS * 4) + 2) ** 2  # ~4 syllables a second
    t_audio = np.arange(int(SECONDS * RATE)) / RATE
    loudness = np.interp(t_audio, np.arange(len(knots)) / 4, knots)
    mono = (rng.normal(0, 0.1, len(t_audio)) * loudness).astype(np.float32)
    frames = np.arange(int(SECONDS * FPS)) / FPS
    opening = np.interp(frames, np.arange(len(knots)) / 4, knots)
    landmarks = np.zeros((len(frames), 68, 2), np.float32)
    landmarks[:, 36:42, 0], landmarks[:, 42:48, 0] = 0.0, 10.0  # eyes 10 px apart
    landmarks[:, [61, 62, 63, 50, 51, 52], 1] = 20.0
    landmarks[:, [67, 66, 65, 58, 57, 56], 1] = 20.0 + 3 * opening[:, None]
    return mono, landmarks


def test_the_opening_is_scale_free_and_standardised():
    _, landmarks = _clip(0)
    opening = mouth_opening(landmarks, FPS)
    assert abs(opening.mean()) < 1e-6 and abs(opening.std() - 1) < 1e-6
    np.testing.assert_allclose(mouth_opening(landmarks * 2.5, FPS), opening, atol=1e-4)


@pytest.mark.parametrize("delay_ms", [0, 200, -300])
def test_a_fitted_model_recovers_a_known_audio_delay(delay_ms):
    model = fit_model([(*_clip(seed)[:1], RATE, _clip(seed)[1], FPS) for seed in (1, 2)])
    mono, landmarks = _clip(3)
    search, reason = signals_lag({"landmarks": landmarks}, FPS, shift_audio(mono, RATE, delay_ms), RATE,
                                 max_lag_s=0.6, distinct_s=0.1, kind="predicted", model=model)
    assert reason is None and abs(search.offset_s * 1000 - delay_ms) <= 20, search


def test_the_predicted_signal_needs_a_model():
    mono, landmarks = _clip(0)
    with pytest.raises(ValueError, match="model"):
        signals_lag({"landmarks": landmarks}, FPS, mono, RATE, max_lag_s=0.5, distinct_s=0.1, kind="predicted")
