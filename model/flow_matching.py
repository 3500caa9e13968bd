"""Flow-matching training objective for the joint video + audio model.

Convention: t = 0 is data, t = 1 is noise (as in SD3), for both modalities.

(1) x_t = (1 - t) x_0 + t eps,  eps ~ N(0, I)
    Straight path between data and noise: rectified flow (Liu et al. 2023, "Flow Straight
    and Fast", Sec. 2) = the optimal-transport conditional path of Lipman et al. 2023
    ("Flow Matching for Generative Modeling", Sec. 4.1) with sigma_min = 0, time reversed.
(2) u_t = d x_t / d t = eps - x_0
    The velocity target; it does not depend on t (Liu et al. 2023, Eq. 1).
(3) L = E_{t, eps} || v_theta(x_t, t, c) - u_t ||^2
    Conditional flow matching loss (Lipman et al. 2023, Eq. 9), one term per modality,
    weighted: L = w_video * L_video + w_audio * L_audio.
(4) t = sigmoid(u), u ~ N(m, s^2)
    Logit-normal timestep density, which puts more training on mid-range t
    (Esser et al. 2024, "Scaling Rectified Flow Transformers" (SD3), Sec. 3.1).
(5) t' = alpha t / (1 + (alpha - 1) t),  alpha = sqrt(n_tokens / n_reference)
    Timestep shift toward noise for longer sequences, whose many tokens let the model
    recover the signal from noisier inputs (Esser et al. 2024, Sec. 5.3.2).

Classifier-free guidance (Ho & Salimans 2022) needs the model to also learn unconditional
velocities: the prompt, the references and each cross-modal direction are dropped per
sample with their own probabilities.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from model.conditioning import Conditioning


@dataclass
class FlowMatchingConfig:
    logit_mean: float = 0.0
    logit_std: float = 1.0
    shift: float = 1.0  # alpha in (5) when shift_reference_tokens == 0
    shift_reference_tokens: int = 0  # > 0: alpha = sqrt(tokens / this), per modality
    independent_timesteps: bool = False  # False: both modalities share one t per sample
    video_weight: float = 1.0
    audio_weight: float = 1.0
    drop_text: float = 0.1
    drop_references: float = 0.1
    drop_audio_for_video: float = 0.05  # hide audio from the video branch
    drop_video_for_audio: float = 0.05


def shift_timesteps(t: torch.Tensor, alpha: float) -> torch.Tensor:
    """Eq. (5)."""
    return alpha * t / (1 + (alpha - 1) * t)


def shift_for(cfg: FlowMatchingConfig, n_tokens: int) -> float:
    if cfg.shift_reference_tokens > 0:
        return math.sqrt(n_tokens / cfg.shift_reference_tokens)
    return cfg.shift


def sample_timesteps(n: int, cfg: FlowMatchingConfig, n_tokens: int,
                     generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """Eqs. (4) + (5): n logit-normal timesteps, shifted for a sequence of ``n_tokens``."""
    u = torch.randn(n, generator=generator, device=device) * cfg.logit_std + cfg.logit_mean
    return shift_timesteps(torch.sigmoid(u), shift_for(cfg, n_tokens))


def interpolate(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Eq. (1), with t (B,) broadcast over the latent dims."""
    t = t.view(-1, *([1] * (x0.ndim - 1))).to(x0.dtype)
    return (1 - t) * x0 + t * noise


@dataclass
class FlowLoss:
    total: torch.Tensor
    video: torch.Tensor
    audio: torch.Tensor
    t_video: torch.Tensor
    t_audio: torch.Tensor


def drop_conditions(cond: Conditioning, cfg: FlowMatchingConfig,
                    generator: torch.Generator | None = None) -> Conditioning:
    b = cond.batch_size

    def coin(p: float) -> torch.Tensor:
        return torch.rand(b, generator=generator) < p

    return cond.drop(text=coin(cfg.drop_text), references=coin(cfg.drop_references),
                     audio_for_video=coin(cfg.drop_audio_for_video),
                     video_for_audio=coin(cfg.drop_video_for_audio))


def flow_matching_loss(model, video: torch.Tensor, audio: torch.Tensor, cond: Conditioning,
                       cfg: FlowMatchingConfig, generator: torch.Generator | None = None,
                       video_tokens: int | None = None, audio_tokens: int | None = None) -> FlowLoss:
    """Eq. (3) for clean latents ``video`` (B, C, T, H, W) and ``audio`` (B, C, T).

    ``generator`` (a CPU generator) makes timesteps, dropout and noise reproducible.
    Token counts only matter for the sequence-length shift; they default to latent sizes.
    """
    b = video.shape[0]
    n_v = video_tokens or math.prod(video.shape[2:])
    n_a = audio_tokens or audio.shape[2]
    t_v = sample_timesteps(b, cfg, n_v, generator)
    t_a = sample_timesteps(b, cfg, n_a, generator) if cfg.independent_timesteps else t_v
    cond = drop_conditions(cond, cfg, generator)
    noise_v = torch.randn(video.shape, generator=generator).to(video)
    noise_a = torch.randn(audio.shape, generator=generator).to(audio)
    t_v, t_a = t_v.to(video.device), t_a.to(video.device)
    pred_v, pred_a = model(interpolate(video, noise_v, t_v), interpolate(audio, noise_a, t_a),
                           t_v, t_a, **cond.kwargs())
    loss_v = F.mse_loss(pred_v.float(), (noise_v - video).float())  # Eq. (2) target
    loss_a = F.mse_loss(pred_a.float(), (noise_a - audio).float())
    total = cfg.video_weight * loss_v + cfg.audio_weight * loss_a
    return FlowLoss(total, loss_v, loss_a, t_v, t_a)
