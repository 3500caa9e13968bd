"""Pairwise preferences: the Bradley-Terry likelihood with and without ties, and pairwise accuracy.

A judgement compares items a and b and says ``a`` (a is better), ``b`` or ``tie``. Items have
scores r (higher is better); d = r_a - r_b. Used by the human leaderboard (one free score per
item, fitted by maximum likelihood) and by the reward model (scores from a network, per head).

(1) Bradley-Terry (Bradley & Terry 1952, "Rank analysis of incomplete block designs", Eq. 1,
    with pi = exp(r)):  P(a > b) = sigma(d).  A tie carries no information and is dropped.
(2) Rao-Kupper, Bradley-Terry with ties (Rao & Kupper 1967, "Ties in paired-comparison
    experiments: a generalization of the Bradley-Terry model", JASA 62, Eq. 2.2), theta >= 1:
        P(a > b) = pi_a / (pi_a + theta pi_b) = sigma(d - log theta)
        P(b > a) = sigma(-d - log theta)
        P(tie)   = 1 - P(a > b) - P(b > a) = (theta^2 - 1) pi_a pi_b / ((pi_a + theta pi_b)(theta pi_a + pi_b))
    The "BTT" loss of VideoAlign (Liu et al. 2025, "Improving Video Generation with Human
    Feedback", Sec. 4.2). theta = 1 is plain Bradley-Terry; a larger theta makes ties likelier.
    The loss is the mean negative log-likelihood of the observed outcomes.
(3) Pairwise accuracy without ties: on the pairs humans did not tie, the fraction where
    sign(d) agrees with them (d = 0 counts as wrong).
(4) Pairwise accuracy with ties and tie calibration (Deutsch et al. 2023, "Ties Matter:
    Meta-Evaluating Modern Metrics with Pairwise Accuracy and Tie Calibration", Sec. 4 and
    Alg. 1): the scorer predicts a tie when |d| <= epsilon; accuracy over all pairs, ties
    included, at the epsilon that maximises it (the sweep over every distinct |d|). This is
    the "w/ Ties" accuracy VideoGen-RewardBench reports.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

OUTCOMES = ("a", "b", "tie")
A_WINS, B_WINS, TIE = 0, 1, 2  # outcome codes, in OUTCOMES order


def outcome_codes(outcomes) -> torch.Tensor:
    """``["a", "tie", ...]`` -> tensor of A_WINS / B_WINS / TIE."""
    index = {o: i for i, o in enumerate(OUTCOMES)}
    return torch.tensor([index[o] for o in outcomes], dtype=torch.long)


def log_likelihood(d: torch.Tensor, outcome: torch.Tensor, log_theta: torch.Tensor | float = 0.0) -> torch.Tensor:
    """Per-judgement log P(outcome | d) under Eq. (2) (Eq. (1) when log_theta = 0, where a
    tie has probability 0: drop ties before calling it so)."""
    log_theta = torch.as_tensor(log_theta, dtype=d.dtype, device=d.device)
    log_a = F.logsigmoid(d - log_theta)
    log_b = F.logsigmoid(-d - log_theta)
    # log(1 - p_a - p_b), computed stably: 1 - p_a - p_b = p_a p_b (theta^2 - 1) / (pi-form)
    # = sigma(d - lt) sigma(-d - lt) (e^{2 lt} - 1)
    log_tie = log_a + log_b + torch.log(torch.expm1(2 * log_theta).clamp_min(1e-30))
    return torch.where(outcome == A_WINS, log_a, torch.where(outcome == B_WINS, log_b, log_tie))


def preference_loss(d: torch.Tensor, outcome: torch.Tensor, log_theta: torch.Tensor | float | None) -> torch.Tensor:
    """Mean negative log-likelihood: Rao-Kupper (2) with ``log_theta``, or plain
    Bradley-Terry (1) over the non-tied judgements when ``log_theta`` is None."""
    if log_theta is None:
        keep = outcome != TIE
        if not bool(keep.any()):
            return d.sum() * 0.0
        return -log_likelihood(d[keep], outcome[keep]).mean()
    return -log_likelihood(d, outcome, log_theta).mean()


def tie_probability(d: torch.Tensor, log_theta: float) -> torch.Tensor:
    return 1 - torch.sigmoid(d - log_theta) - torch.sigmoid(-d - log_theta)


def sample_outcomes(d: np.ndarray, log_theta: float, rng: np.random.Generator) -> np.ndarray:
    """Outcome codes drawn from Eq. (2) for score differences ``d``: simulated judgements with
    a known truth, to check fits and trainers against."""
    p_a, p_b = 1 / (1 + np.exp(-(d - log_theta))), 1 / (1 + np.exp(d + log_theta))
    u = rng.random(len(d))
    return np.where(u < p_a, A_WINS, np.where(u < p_a + p_b, B_WINS, TIE))


def fit_scores(item_a: np.ndarray, item_b: np.ndarray, outcome: torch.Tensor, n_items: int, *,
               log_theta: float | None = None, ties: bool = True, l2: float = 1e-4,
               max_iter: int = 500) -> tuple[np.ndarray, float]:
    """Maximum-likelihood score per item (mean zero) from judgements (index arrays into the
    items, outcome codes), and log theta. ``ties=False``: Eq. (1) on non-tied judgements.
    ``ties=True``: Eq. (2), log theta fitted unless given. A tiny L2 term keeps items that
    won (or lost) every comparison finite."""
    a, b = torch.as_tensor(item_a, dtype=torch.long), torch.as_tensor(item_b, dtype=torch.long)
    if not ties:
        keep = outcome != TIE
        a, b, outcome = a[keep], b[keep], outcome[keep]
    scores = torch.zeros(n_items, dtype=torch.float64, requires_grad=True)
    # theta = 1 + exp(u) keeps theta > 1 without a constraint
    u = torch.tensor(0.0 if log_theta is None else math.log(max(math.expm1(log_theta), 1e-12)),
                     dtype=torch.float64, requires_grad=ties and log_theta is None)
    params = [scores] + ([u] if u.requires_grad else [])
    opt = torch.optim.LBFGS(params, max_iter=max_iter, tolerance_grad=1e-10, tolerance_change=1e-12,
                            line_search_fn="strong_wolfe")

    def nll():
        opt.zero_grad()
        lt = torch.log1p(torch.exp(u)) if ties else None
        loss = preference_loss(scores[a] - scores[b], outcome, lt) * len(outcome) + l2 * scores.pow(2).sum()
        loss.backward()
        return loss

    opt.step(nll)
    with torch.no_grad():
        fitted = (scores - scores.mean()).numpy().copy()
        lt = float(torch.log1p(torch.exp(u))) if ties else 0.0
    return fitted, lt


def accuracy_without_ties(d, outcome) -> float:
    """Eq. (3); NaN when every judgement is a tie."""
    d, outcome = np.asarray(d, dtype=np.float64), np.asarray(outcome)
    keep = outcome != TIE
    if not keep.any():
        return float("nan")
    predicted = np.where(d[keep] > 0, A_WINS, np.where(d[keep] < 0, B_WINS, TIE))
    return float(np.mean(predicted == outcome[keep]))


def accuracy_with_ties(d, outcome) -> tuple[float, float]:
    """Eq. (4): (best accuracy over all judgements, the epsilon that reaches it). One sort,
    then every threshold at once: O(n log n), so 100k judgements take milliseconds."""
    d, outcome = np.asarray(d, dtype=np.float64), np.asarray(outcome)
    if d.size == 0:
        return float("nan"), 0.0
    order = np.argsort(np.abs(d), kind="stable")
    ad, o, dd = np.abs(d)[order], outcome[order], d[order]
    is_tie = o == TIE
    right = ((dd > 0) & (o == A_WINS)) | ((dd < 0) & (o == B_WINS))
    # threshold after position k: items 0..k predicted tie, the rest by sign
    correct = np.cumsum(is_tie) + (right.sum() - np.cumsum(right))
    group_end = np.append(ad[1:] > ad[:-1], True)
    candidates = np.flatnonzero(group_end)
    k = candidates[np.argmax(correct[candidates])]
    best, eps = float(correct[k]), float(ad[k])
    no_ties = float(right.sum())  # epsilon below every |d|: nothing predicted tie
    if no_ties >= best and ad[0] > 0:
        best, eps = no_ties, 0.0
    return best / d.size, eps
