"""Confidence of a sync estimate: the probability that it is within 40 ms of the truth.

Each estimator's lag search (curation/sync_lag.py) says how well its best lag stands out:
``peak`` (the correlation there), ``z`` (above chance peaks), ``distinct`` (above the
best lag >= distinct_s away) and ``spread`` (how far each half of the clip on its own puts
its best lag). A logistic curve in those four maps them to the
probability that the lag is within 40 ms (one frame at 25 fps) of the true offset. Its
coefficients are fitted on real footage whose truth is known (real clips with their
audio shifted by known amounts), by ``benchmarks/sync_accuracy.py``, which fits them on
some speakers and reports their reliability on the others.
"""

from __future__ import annotations

import numpy as np

FEATURES = ("peak", "z", "distinct", "spread")


def search_features(search) -> np.ndarray:
    """The calibration's inputs from a LagSearch: peak, z (clipped to +-10), distinct, and the
    halves' spread in tenths of a second (capped at 0.5 s: beyond, they simply disagree)."""
    return np.array([search.peak, float(np.clip(search.z, -10, 10)), search.distinct, min(search.spread_s, 0.5) * 10])


def probability(coefficients: tuple[float, ...], features: np.ndarray) -> np.ndarray:
    """P(within 40 ms) for ``features`` (..., 3) under (intercept, w_peak, w_z, w_distinct, w_spread)."""
    c = np.asarray(coefficients, np.float64)
    return 1 / (1 + np.exp(-(c[0] + np.asarray(features, np.float64) @ c[1:])))


def fit_logistic(features: np.ndarray, right: np.ndarray, l2: float = 1.0, steps: int = 50) -> tuple[float, ...]:
    """(intercept, weights...) of a logistic regression of ``right`` (0/1) on ``features``
    (n, d), by Newton's method with an L2 penalty on the weights (few clips: keep it tame)."""
    x = np.column_stack([np.ones(len(features)), np.asarray(features, np.float64)])
    y = np.asarray(right, np.float64)
    penalty = np.diag([0.0] + [l2] * (x.shape[1] - 1))
    w = np.zeros(x.shape[1])
    for _ in range(steps):
        p = 1 / (1 + np.exp(-x @ w))
        gradient = x.T @ (p - y) + penalty @ w
        hessian = x.T @ (x * (p * (1 - p))[:, None]) + penalty + 1e-9 * np.eye(len(w))
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return tuple(round(float(v), 4) for v in w)
