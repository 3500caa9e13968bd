"""Sync from visible impulsive events against audio onsets (footage without a speaking face).

A flash, a cut, a door slam, a ball hitting a bat: the picture changes suddenly in the
frame where the sound starts. The picture's onsets are the rises of motion energy (the
mean grey-level change between consecutive blurred ~160 px frames above a noise floor,
as the shot stage measures it); the audio's are the spectral flux every 5 ms. Their
cross-correlation over +-max_lag gives the offset (curation/sync_lag.py).

This only works where there are events: clear ones in both streams. Footage whose
picture changes smoothly (a slow pan, a steady pattern) or whose sound has no onsets
(a drone, a steady tone) answers ``no_events``; music over unrelated motion usually
finds some lag that matches a little, which the lag search's chance level and the
calibrated confidence turn into "cannot tell".
"""

from __future__ import annotations

import cv2
import numpy as np

from curation.sync_lag import LagSearch, search_lags

HOP_S = 0.005
ANALYSIS_WIDTH = 160
# Grey-level changes up to this size are noise, not motion (as the shot stage's floor).
NOISE_FLOOR = 4
# What counts as an event. Measured: a click or a cut in the sound peaks at 0.3-1.2
# flux, a steady tone at < 0.1; a flash or a cut raises motion energy by 0.1-0.6,
# ordinary motion varies by < 0.01.
AUDIO_EVENT = 0.25
VISUAL_EVENT = 0.02
MIN_EVENTS = 2


def motion_energy(frames: np.ndarray) -> np.ndarray:
    """(T,) mean absolute change of each frame from the previous one (0 for the first), 0..1."""
    h, w = frames.shape[1:3]
    size = (min(ANALYSIS_WIDTH, w), max(2, round(h * min(ANALYSIS_WIDTH, w) / w)))
    energy, previous = np.zeros(len(frames)), None
    for t, frame in enumerate(frames):
        grey = cv2.GaussianBlur(cv2.cvtColor(cv2.resize(frame, size, interpolation=cv2.INTER_AREA),
                                             cv2.COLOR_RGB2GRAY), (5, 5), 0)
        if previous is not None:
            energy[t] = float(cv2.subtract(cv2.absdiff(grey, previous), NOISE_FLOOR).mean()) / 255
        previous = grey
    return energy


def onset_envelope(mono: np.ndarray, rate: int, hop_s: float = HOP_S) -> np.ndarray:
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


def _peaks(x: np.ndarray, threshold: float, spacing: int) -> int:
    """How many local maxima above ``threshold`` at least ``spacing`` samples apart."""
    above = np.flatnonzero((x >= threshold) & (x >= np.roll(x, 1)) & (x >= np.roll(x, -1)))
    count, last = 0, -spacing
    for i in above:
        if i - last >= spacing:
            count, last = count + 1, i
    return count


def picture_onsets(energy: np.ndarray) -> np.ndarray:
    """Rises of motion energy; the first two frames are never onsets (no previous frame)."""
    rises = np.maximum(np.diff(energy, prepend=energy[:1]), 0.0)
    rises[:2] = 0.0
    return rises


def event_lag(energy: np.ndarray, fps: float, mono: np.ndarray, rate: int, *, max_lag_s: float,
              distinct_s: float) -> tuple[LagSearch | None, str | None]:
    """(lag search, None), or (None, "no_events") when either stream lacks clear events."""
    visual = picture_onsets(energy)
    audio = onset_envelope(mono, rate)
    # Events at least 0.1 s apart in both streams: one flash and one click pin nothing down.
    if (_peaks(visual, VISUAL_EVENT, max(1, round(0.1 * fps))) < MIN_EVENTS
            or _peaks(audio, AUDIO_EVENT, round(0.1 / HOP_S)) < MIN_EVENTS):
        return None, "no_events"
    # Value i of the envelope is the rise in the window ending at i * hop: a sound that
    # starts between two hops shows at the later one, so sample it half a hop later.
    audio = np.concatenate([audio[1:], audio[-1:]]) * 0.5 + audio * 0.5
    basis = (visual - visual.mean())[:, None]
    basis /= np.linalg.norm(basis) + 1e-12
    return search_lags(basis, audio, HOP_S, fps, max_lag_s=max_lag_s, distinct_s=distinct_s, step_s=HOP_S), None
