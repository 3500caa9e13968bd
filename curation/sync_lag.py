"""The lag search every sync estimator shares, and what makes its confidence mean something.

A picture signal ``V`` (T frames x k features) and an audio signal ``a`` (one value per
hop) are compared at every lag L in +-max_lag: the score is the correlation between
``a`` sampled at the frame times + L and the best linear combination of V's columns
(for k = 1, the plain signed correlation). The best lag is the offset estimate;
positive means the audio lags the picture.

A peak alone says little: speech is quasi-periodic and any two signals have some lag
where they match a bit. So the peak is compared with the peaks the same search finds
when the audio cannot be in sync with the picture: circularly shifted by more than
the search range, and time-reversed (Hershey & Movellan, "Audio-Vision: Using
Audio-Visual Synchrony to Locate Sounds", NIPS 1999, judge synchrony against such a
chance level). ``z`` is how many standard deviations the real peak stands above those
chance peaks; ``distinct`` is how far it stands above the best lag at least
``distinct_s`` away from it. Both go into the calibrated confidence (curation/sync.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class LagSearch:
    offset_s: float  # best lag; positive: audio lags
    peak: float  # score at the best lag
    z: float  # (peak - mean of chance peaks) / their spread
    distinct: float  # 1 - runner-up (>= distinct_s away) / peak, in 0..1
    spread_s: float = 0.0  # how far the best lags of the clip's two halves lie from the whole's (the farther)


def orthonormal_basis(features: np.ndarray, k: int) -> np.ndarray:
    """The first ``k`` principal directions in time of (T, d) ``features``, centred: (T, <=k)."""
    x = features - features.mean(0)
    if x.shape[1] < x.shape[0]:  # a few measures per frame (lips): the thin SVD, O(T d^2)
        vectors, singular, _ = np.linalg.svd(x, full_matrices=False)
        values = singular**2
    else:  # more features per frame than frames (a mouth patch): the (T, T) Gram matrix is smaller
        values, vectors = np.linalg.eigh(x @ x.T)
    order = np.argsort(values)[::-1][:k]
    keep = values[order] > max(float(values.max()), 0.0) * 1e-8
    return vectors[:, order[keep]] if values.max() > 0 else np.zeros((len(x), 0))


def _scores(basis: np.ndarray, audio_at: np.ndarray, signed: bool) -> np.ndarray:
    """Correlation of each row of ``audio_at`` (..., T) with the span of ``basis`` (T, k); for
    audio with several channels (..., T, c), the first canonical correlation of the two spans."""
    if audio_at.ndim == basis.ndim + 1 and audio_at.shape[-2] == len(basis):
        a = audio_at - audio_at.mean(-2, keepdims=True)
        q, _ = np.linalg.qr(a)  # (..., T, c): an orthonormal basis of each lag's audio channels
        return np.linalg.svd(np.swapaxes(q, -1, -2) @ basis, compute_uv=False)[..., 0]
    a = audio_at - audio_at.mean(-1, keepdims=True)
    norm = np.linalg.norm(a, axis=-1) + 1e-12
    projection = a @ basis  # (..., k)
    if signed:
        return projection[..., 0] / norm
    return np.linalg.norm(projection, axis=-1) / norm


def _sample(signal: np.ndarray, times: np.ndarray, grid: np.ndarray, **interp) -> np.ndarray:
    """``signal`` (N,) or (N, c) on ``grid`` at ``times`` (L, T): (L, T) or (L, T, c)."""
    if signal.ndim == 1:
        return np.interp(times, grid, signal, **interp)
    return np.stack([np.interp(times, grid, signal[:, j], **interp) for j in range(signal.shape[1])], -1)


def search_lags(basis: np.ndarray, audio: np.ndarray, hop_s: float, fps: float, *, max_lag_s: float,
                distinct_s: float, step_s: float = 0.005, n_null: int = 48) -> LagSearch:
    """Search lags in +-``max_lag_s`` (see the module docstring). ``basis`` is (T, k) with
    orthonormal centred columns (``orthonormal_basis``), ``audio`` one value per ``hop_s``
    from the clip's first frame. With k = 1 the correlation is signed (events must match
    events, not their absence); with more, any combination of the picture features counts."""
    signed = basis.shape[1] == 1
    frame_times = np.arange(len(basis)) / fps
    duration = max(len(audio) * hop_s, frame_times[-1] + 1 / fps)
    lags = np.arange(-round(max_lag_s / step_s), round(max_lag_s / step_s) + 1) * step_s
    grid = np.arange(len(audio)) * hop_s

    def at(signal: np.ndarray, shift: float, lag_values: np.ndarray) -> np.ndarray:
        times = (frame_times[None, :] + lag_values[:, None] + shift) % duration  # circular
        return _sample(signal, times, grid, period=duration)

    # The real alignment is not circular: frames whose sound lies outside the clip get
    # the audio's mean (no evidence either way) instead of sound from the other end.
    times = frame_times[None, :] + lags[:, None]
    outside = (times < 0) | (times > grid[-1])
    sampled = _sample(audio, np.clip(times, 0, grid[-1]), grid)
    sampled[outside] = audio.mean(0)
    curve = _scores(basis, sampled, signed)
    # A mild preference for small offsets breaks ties between equally good lags (periodic
    # content) in favour of the likelier one; it never outweighs a clearly better match.
    curve = curve * (1 - 0.05 * np.abs(lags) / max_lag_s)
    best = int(np.argmax(curve))
    peak = float(curve[best])
    far = np.abs(lags - lags[best]) >= distinct_s
    runner_up = float(curve[far].max()) if far.any() else 0.0
    distinct = float(np.clip(1 - max(runner_up, 0.0) / peak, 0, 1)) if peak > 0 else 0.0
    # Each half of the clip on its own: a true offset holds throughout, a chance match rarely.
    spread, half = 0.0, len(basis) // 2
    if half >= 8:
        for part in (slice(0, half), slice(half, None)):
            piece = basis[part] - basis[part].mean(0)
            # Re-orthonormalised; one signed column keeps its sign (QR might flip it).
            piece = piece / (np.linalg.norm(piece) + 1e-12) if signed else np.linalg.qr(piece)[0]
            spread = max(spread, abs(float(lags[int(np.argmax(_scores(piece, sampled[:, part], signed)))] - lags[best])))

    # Chance peaks: the audio shifted circularly (lags that would bring it back within
    # the search range of the true alignment are left out), and reversed in time.
    coarse = lags[::4]
    null = []
    for shift in duration * (np.arange(n_null // 2) + 0.5) / (n_null // 2):
        total = (shift + coarse + duration / 2) % duration - duration / 2
        away = np.abs(total) > max_lag_s + 0.25
        if away.any():
            null.append(_scores(basis, at(audio, shift, coarse[away]), signed).max())
    reversed_audio = audio[::-1].copy()
    null += [_scores(basis, at(reversed_audio, s, coarse), signed).max()
             for s in duration * np.arange(n_null - len(null)) / max(1, n_null - len(null))]
    null = np.asarray(null)
    z = float((peak - null.mean()) / max(float(null.std()), 0.02))
    return LagSearch(float(lags[best]), peak, z, distinct, spread)
