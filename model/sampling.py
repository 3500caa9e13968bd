"""Samplers for the joint model: Euler ODE, SDE with per-step log-probabilities, SDEdit.

Time runs from t = 1 (noise) to t = 0 (data); ``x_{t+dt} = x_t + v dt`` with dt < 0.

- :func:`sample_ode`: deterministic Euler integration of the learned velocity; also does
  extension from prefix latents and generation of one modality given the other
  (:class:`KnownLatents`), and SDEdit starts (:func:`sdedit`).
- :func:`sample_sde`: the stochastic sampler of Flow-GRPO (Liu et al. 2025, Eq. 9-12) /
  DanceGRPO: Euler-Maruyama on the reverse SDE with the same marginals as the ODE,
    x_{t+dt} = x_t + [v + sigma_t^2 / (2t) * (x_t + (1 - t) v)] dt + sigma_t sqrt(-dt) z,
    sigma_t = eta * sqrt(t / (1 - t)),
  where the sigma^2/(2t) term is the score-based drift correction. Each step is a Gaussian
  transition, so its log-probability is exact (:func:`sde_step`), which GRPO needs.

Log-probabilities are per-element MEANS over a sample's latent elements, not sums (as
DanceGRPO and Flow-GRPO compute them). A sum grows with the latent size (10^5..10^7
elements for real clips), so the tiny weight change of one update moves log pi_new -
log pi_old by far more than a PPO clip range of 1e-4: every ratio would be clipped and
the policy gradient would vanish. The mean is the sum divided by the element count: the
gradient direction is unchanged (its scale is absorbed by the learning rate), the ratio
becomes a per-element geometric mean that does not depend on resolution or duration,
and a video and an audio log-prob of very different sizes are commensurable, so they
can be combined with plain weights. It is no longer the transition's log-density; use
``gaussian_log_prob(...) * numel`` where that is needed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from model.conditioning import Conditioning
from model.flow_matching import interpolate, shift_timesteps


@dataclass
class Guidance:
    """Classifier-free guidance scale per modality (1.0 = off, one forward pass)."""

    video_scale: float = 1.0
    audio_scale: float = 1.0

    @property
    def active(self) -> bool:
        return self.video_scale != 1.0 or self.audio_scale != 1.0


def timestep_schedule(steps: int, shift: float = 1.0, t_start: float = 1.0) -> torch.Tensor:
    """steps + 1 times from ``t_start`` to 0, uniform before the shift of flow_matching Eq. 5."""
    u_start = t_start / (shift - (shift - 1) * t_start)  # inverse shift of t_start
    return shift_timesteps(torch.linspace(u_start, 0.0, steps + 1, dtype=torch.float64), shift).float()


def group_noise(shape: tuple[int, ...], generator: torch.Generator | None, group_size: int = 1) -> torch.Tensor:
    """Gaussian noise where each run of ``group_size`` consecutive samples is identical
    (a GRPO group: one prompt and one start, several stochastic trajectories)."""
    if shape[0] % group_size:
        raise ValueError(f"batch {shape[0]} is not a multiple of group_size {group_size}")
    noise = torch.randn((shape[0] // group_size, *shape[1:]), generator=generator)
    return noise.repeat_interleave(group_size, dim=0)


def velocity(model, x_v, x_a, t_v: torch.Tensor, t_a: torch.Tensor, cond: Conditioning,
             guidance: Guidance = Guidance()) -> tuple[torch.Tensor, torch.Tensor]:
    """Model velocity, guided per modality: u + s (c - u)."""
    c_v, c_a = model(x_v, x_a, t_v, t_a, **cond.kwargs())
    if not guidance.active:
        return c_v, c_a
    u_v, u_a = model(x_v, x_a, t_v, t_a, **cond.unconditional().kwargs())
    return u_v + guidance.video_scale * (c_v - u_v), u_a + guidance.audio_scale * (c_a - u_a)


@dataclass
class KnownLatents:
    """Clean latents the sampler must keep: a prefix of either modality (extension), or
    all of one modality (generate audio for a given video, or the reverse).

    A partial prefix is re-noised to the current t at each step (replacement sampling),
    which needs no special training; a complete modality is fed clean at t = 0, which
    relies on training with ``independent_timesteps``.
    """

    video: torch.Tensor | None = None  # (B, C, Tp, H, W): the first Tp latent frames
    audio: torch.Tensor | None = None  # (B, C, Tp)
    noise_video: torch.Tensor | None = field(default=None, repr=False)
    noise_audio: torch.Tensor | None = field(default=None, repr=False)

    def apply(self, x_v, x_a, t: float):
        return _impose(x_v, self.video, self.noise_video, t), _impose(x_a, self.audio, self.noise_audio, t)

    def frozen(self, x_v, x_a) -> tuple[bool, bool]:
        return (self.video is not None and self.video.shape[2] == x_v.shape[2],
                self.audio is not None and self.audio.shape[2] == x_a.shape[2])


def _impose(x, known, noise, t: float):
    if known is None:
        return x
    n = known.shape[2]
    noisy = known if noise is None else (1 - t) * known + t * noise[:, :, :n]
    return torch.cat([noisy.to(x), x[:, :, n:]], dim=2)


@torch.no_grad()
def sample_ode(model, noise_video: torch.Tensor, noise_audio: torch.Tensor, cond: Conditioning,
               steps: int = 30, shift: float = 1.0, guidance: Guidance = Guidance(),
               known: KnownLatents | None = None, t_start: float = 1.0):
    """Euler integration from x(t_start) = (noise_video, noise_audio) to t = 0.

    For t_start < 1 the inputs must already be the noised latents at t_start (see sdedit).
    """
    ts = timestep_schedule(steps, shift, t_start)
    x_v, x_a = noise_video, noise_audio
    known = known or KnownLatents()
    if known.noise_video is None and known.video is not None:
        known.noise_video = noise_video
    if known.noise_audio is None and known.audio is not None:
        known.noise_audio = noise_audio
    frozen_v, frozen_a = known.frozen(x_v, x_a)
    b = x_v.shape[0]
    for i in range(steps):
        t, t_next = float(ts[i]), float(ts[i + 1])
        x_v, x_a = known.apply(x_v, x_a, t)
        tv = torch.full((b,), 0.0 if frozen_v else t, device=x_v.device)
        ta = torch.full((b,), 0.0 if frozen_a else t, device=x_v.device)
        if frozen_v:
            x_v = known.video.to(x_v)
        if frozen_a:
            x_a = known.audio.to(x_a)
        v_v, v_a = velocity(model, x_v, x_a, tv, ta, cond, guidance)
        dt = t_next - t
        x_v = x_v if frozen_v else x_v + dt * v_v
        x_a = x_a if frozen_a else x_a + dt * v_a
    return known.apply(x_v, x_a, 0.0)


@torch.no_grad()
def sdedit(model, video: torch.Tensor, audio: torch.Tensor, cond: Conditioning, strength: float,
           steps: int = 30, shift: float = 1.0, guidance: Guidance = Guidance(),
           generator: torch.Generator | None = None):
    """V2V (and A2A) editing: noise the clean latents to t = strength (flow_matching Eq. 1),
    then denoise under ``cond`` (the new prompt). strength 0 returns the input, 1 ignores it."""
    if not 0 < strength <= 1:
        raise ValueError(f"strength must be in (0, 1], got {strength}")
    t = torch.full((video.shape[0],), strength)
    x_v = interpolate(video, torch.randn(video.shape, generator=generator).to(video), t)
    x_a = interpolate(audio, torch.randn(audio.shape, generator=generator).to(audio), t)
    n = max(1, math.ceil(steps * strength))
    return sample_ode(model, x_v, x_a, cond, n, shift, guidance, t_start=strength)


# ---------------------------------------------------------------------------------- SDE


def sde_sigma(t, t_next, eta: float):
    """sigma_t = eta sqrt(t / (1 - t)) for floats or (B,) tensors. sigma_t diverges at
    t = 1; like Flow-GRPO, use the next time in the denominator there."""
    if isinstance(t, torch.Tensor):
        return eta * torch.sqrt(t / torch.where(t < 1, 1 - t, 1 - t_next))
    return eta * math.sqrt(t / (1 - (t if t < 1 else t_next)))


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, std) -> torch.Tensor:
    """Per-sample MEAN over all but the batch dim of log N(x; mean, std^2 I), in float64
    (see the module docstring for why a mean). ``std``: a float or a (B,) tensor."""
    std = torch.as_tensor(std, dtype=torch.float64, device=x.device)
    std = std.view(-1, *([1] * (x.ndim - 1))) if std.ndim else std
    z = (x.double() - mean.double()) / std
    per_elem = -0.5 * z**2 - torch.log(std) - 0.5 * math.log(2 * math.pi)
    return per_elem.flatten(1).mean(1)


def _per_sample(t, b: int, device) -> torch.Tensor:
    t = torch.as_tensor(t, dtype=torch.float64, device=device)
    return t.expand(b) if t.ndim == 0 else t


@dataclass
class Transition:
    """The Gaussian SDE transition from x_t to x_{t_next}: per-modality means, one std
    per sample (B,) in float64."""

    mean_video: torch.Tensor
    mean_audio: torch.Tensor
    std: torch.Tensor


def sde_transition(model, x_v, x_a, t, t_next, cond: Conditioning, eta: float,
                   guidance: Guidance = Guidance()) -> Transition:
    """Mean and std of the step from ``t`` to ``t_next`` (floats, or (B,) tensors: one time
    per sample, as GRPO trains a random subset of each trajectory's steps)."""
    b = x_v.shape[0]
    t, t_next = _per_sample(t, b, x_v.device), _per_sample(t_next, b, x_v.device)
    v_v, v_a = velocity(model, x_v, x_a, t.float(), t.float(), cond, guidance)
    sigma, dt = sde_sigma(t, t_next, eta), t_next - t
    drift = sigma**2 / (2 * t)

    def mean(x, v):
        def col(c):
            return c.view(-1, *([1] * (x.ndim - 1))).to(x.dtype)
        return x + (v + col(drift) * (x + col(1 - t) * v)) * col(dt)

    return Transition(mean(x_v, v_v), mean(x_a, v_a), sigma * torch.sqrt(-dt))


def sde_step(model, x_v, x_a, t, t_next, cond: Conditioning, eta: float,
             guidance: Guidance = Guidance(), next_video=None, next_audio=None,
             generator: torch.Generator | None = None):
    """One stochastic step. Returns (next_video, next_audio, log_prob_video, log_prob_audio),
    the log-probs per-element means (module docstring).

    With ``next_*`` given, scores that stored transition instead of sampling one (the GRPO
    ratio's numerator); the computation is otherwise identical, so a stored trajectory
    rescored by the same weights gives the same log-probabilities, bit for bit.
    """
    tr = sde_transition(model, x_v, x_a, t, t_next, cond, eta, guidance)
    out = []
    for x, mean, given in ((x_v, tr.mean_video, next_video), (x_a, tr.mean_audio, next_audio)):
        if given is None:
            std = tr.std.view(-1, *([1] * (x.ndim - 1))).to(x.dtype)
            given = mean + std * torch.randn(x.shape, generator=generator).to(x)
        out.append((given, gaussian_log_prob(given.detach(), mean, tr.std)))
    (nv, lv), (na, la) = out
    return nv, na, lv, la


@dataclass
class Trajectory:
    timesteps: torch.Tensor  # (steps + 1,) float64
    video: list[torch.Tensor]  # latents at each timestep, steps + 1 entries
    audio: list[torch.Tensor]
    log_prob_video: torch.Tensor  # (B, steps), float64, per-element means
    log_prob_audio: torch.Tensor

    @property
    def log_prob(self) -> torch.Tensor:
        return self.log_prob_video + self.log_prob_audio

    def at(self, step, rows: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """(x_video, x_audio, next_video, next_audio, t, t_next) of transition ``step``: an int,
        or a long tensor with one step per sample of ``rows`` (default: every sample)."""
        if not isinstance(step, torch.Tensor):
            ts = self.timesteps
            return (self.video[step], self.audio[step], self.video[step + 1], self.audio[step + 1],
                    float(ts[step]), float(ts[step + 1]))
        rows = torch.arange(step.shape[0]) if rows is None else rows

        def pick(states, offset):
            return torch.stack([states[s + offset][i] for i, s in zip(rows.tolist(), step.tolist(), strict=True)])

        return (pick(self.video, 0), pick(self.audio, 0), pick(self.video, 1), pick(self.audio, 1),
                self.timesteps[step].double(), self.timesteps[step + 1].double())


@torch.no_grad()
def sample_sde(model, cond: Conditioning, video_shape, audio_shape, steps: int = 20,
               shift: float = 1.0, eta: float = 0.7, guidance: Guidance = Guidance(),
               generator: torch.Generator | None = None, group_size: int = 1,
               device=None, dtype=torch.float32) -> Trajectory:
    """Sample a batch with the SDE, keeping every latent and step log-probability.

    ``group_size`` > 1 shares the initial noise within each run of that many samples.
    """
    if eta <= 0:
        raise ValueError("the SDE sampler needs eta > 0 (use sample_ode for eta = 0)")
    ts = timestep_schedule(steps, shift).double()
    x_v = group_noise(tuple(video_shape), generator, group_size).to(device, dtype)
    x_a = group_noise(tuple(audio_shape), generator, group_size).to(device, dtype)
    videos, audios, lps_v, lps_a = [x_v], [x_a], [], []
    for i in range(steps):
        x_v, x_a, lv, la = sde_step(model, x_v, x_a, ts[i], ts[i + 1], cond, eta,
                                    guidance, generator=generator)
        videos.append(x_v)
        audios.append(x_a)
        lps_v.append(lv)
        lps_a.append(la)
    return Trajectory(ts, videos, audios, torch.stack(lps_v, 1), torch.stack(lps_a, 1))


def trajectory_log_prob(model, traj: Trajectory, step, cond: Conditioning, eta: float,
                        guidance: Guidance = Guidance()) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probabilities (video, audio) of the stored transition ``step`` (an int, or a (B,)
    long tensor: one step per sample) under ``model``, with gradients: the GRPO ratio."""
    x_v, x_a, next_v, next_a, t, t_next = traj.at(step)
    _, _, lv, la = sde_step(model, x_v, x_a, t, t_next, cond, eta, guidance,
                            next_video=next_v, next_audio=next_a)
    return lv, la
