"""DanceGRPO for the joint audio-video model: one RL step, readable top to bottom.

    rollout    for each prompt, a group of G trajectories of the SDE sampler (model.sampling,
               Flow-GRPO Eq. 9-12) that share their initial noise, so a group differs only
               by the sampler's exploration noise;
    reward     every head of every source scores the final latents (decoded or not; the
               caller's ``score``); held-out heads are scored and logged, never optimised;
    advantage  per optimised head: (r - mean_group) / std (the group's, or the whole step's
               with ``global_std``), clamped to +-adv_clip_max, then summed with the head
               coefficients (DanceGRPO sums per-head advantages); groups in which no head
               varies are counted (``zero_std_frac``) and skipped; ``best_of_n`` keeps only
               the best and worst samples of each group (DanceGRPO's best-of-N);
    update     for a random ``timestep_fraction`` of each trajectory's steps, the PPO-clipped
               objective  max(-A r, -A clip(r, 1 - eps, 1 + eps)),  r = exp(lp_new - lp_old),
               lp = w_video lp_video + w_audio lp_audio with per-element-mean log-probs
               (model/sampling.py docstring: a sum saturates eps = 1e-4), plus optionally
               beta KL(pi_theta || pi_ref) = beta ||mu_theta - mu_ref||^2 / (2 sigma^2) per
               element (Flow-GRPO, Eq. 13) against a frozen copy of the initial weights.
               ``branches`` restricts training to one branch (the other's parameters
               frozen, its log-prob left out of the ratio).

Every rank rolls out and trains the same number of forwards and backwards, because under
ZeRO-3 each forward gathers parameters collectively and ZeRO-2 reduces gradients in every
backward: a rank with fewer samples to train (skipped groups) runs zero-weight passes.
DanceGRPO: Xue et al. 2025, arXiv:2505.07818. Flow-GRPO: Liu et al. 2025, arXiv:2505.05470.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

from model.conditioning import Conditioning
from model.sampling import Guidance, Trajectory, gaussian_log_prob, sample_sde, sde_transition
from training.collectives import ReduceOp, all_gather_cat, all_reduce, world_size

BRANCHES = ("both", "video", "audio")


@dataclass
class GRPOConfig:
    group_size: int = 4  # G: samples per prompt, sharing the initial noise
    prompts_per_rank: int = 1  # groups each rank rolls out per step
    sampling_steps: int = 8  # SDE steps of a rollout
    eta: float = 0.7  # SDE noise level (sigma_t = eta sqrt(t / (1 - t)))
    shift: float = 3.0  # timestep shift of the sampling schedule
    video_guidance: float = 1.0  # CFG scales during rollouts (1 = off, one forward)
    audio_guidance: float = 1.0
    rollout_batch: int = 0  # samples per rollout forward (a multiple of G); 0 = all of a rank's
    train_batch: int = 0  # samples per training forward; 0 = rollout_batch
    updates_per_rollout: int = 1  # optimizer steps per rollout batch (> 1: ratios move off 1)
    timestep_fraction: float = 0.6  # share of each trajectory's steps that is trained
    clip_range: float = 1e-4  # PPO epsilon on the per-element-mean ratio (DanceGRPO)
    adv_clip_max: float = 5.0  # per-head advantages clamped to +-this
    global_std: bool = False  # normalise by the std over the whole step, not per group
    zero_std_eps: float = 1e-6  # a head whose group std is below this has "zero spread"
    best_of_n: int = 0  # 0: train on all G; k: only the k/2 best and k/2 worst of each group
    video_weight: float = 1.0  # lp = video_weight lp_video + audio_weight lp_audio
    audio_weight: float = 1.0
    kl_beta: float = 0.0  # weight of the KL to the frozen reference (Flow-GRPO)
    kl_reference: bool = False  # load the reference to measure kl even when kl_beta is 0
    branches: str = "both"  # both | video | audio: which branch's parameters train

    def __post_init__(self):
        for knob in ("sampling_steps", "prompts_per_rank"):
            if getattr(self, knob) < 1:
                raise ValueError(f"grpo.{knob} must be >= 1 (got {getattr(self, knob)})")
        if self.group_size < 2:
            raise ValueError(f"grpo.group_size must be >= 2 (got {self.group_size}): advantages compare "
                             "the samples of a group, a group of one has nothing to compare")
        if self.branches not in BRANCHES:
            raise ValueError(f"grpo.branches must be one of {BRANCHES}, got {self.branches!r}")
        if not 0 < self.timestep_fraction <= 1:
            raise ValueError(f"grpo.timestep_fraction must be in (0, 1], got {self.timestep_fraction}")
        if self.best_of_n and (self.best_of_n % 2 or not 2 <= self.best_of_n <= self.group_size):
            raise ValueError(f"grpo.best_of_n must be 0 or an even number in 2..group_size, got {self.best_of_n}")
        n = self.group_size * self.prompts_per_rank
        if self.rollout_batch and (self.rollout_batch % self.group_size or n % self.rollout_batch):
            raise ValueError(f"grpo.rollout_batch ({self.rollout_batch}) must be a multiple of group_size "
                             f"and divide group_size x prompts_per_rank ({n})")
        if self.updates_per_rollout < 1:
            raise ValueError("grpo.updates_per_rollout must be >= 1")

    @property
    def samples_per_rank(self) -> int:
        return self.group_size * self.prompts_per_rank

    @property
    def train_steps(self) -> int:
        """How many of each trajectory's steps are trained."""
        return max(1, math.ceil(self.sampling_steps * self.timestep_fraction))

    def log_prob_weights(self) -> tuple[float, float]:
        """(video, audio) weights of the ratio; a frozen branch's log-prob is left out."""
        return (0.0 if self.branches == "audio" else self.video_weight,
                0.0 if self.branches == "video" else self.audio_weight)


@dataclass(frozen=True)
class Head:
    """One scored quantity: ``id`` names it in metrics (``reward.<id>.mean``)."""

    id: str
    coefficient: float = 1.0
    optimised: bool = True  # False: held out, tracked to expose reward hacking


# ------------------------------------------------------------------------------ branches


def branch_of(name: str) -> str | None:
    """'video' / 'audio' for a DualDiT parameter that writes into that branch's stream,
    None for shared ones (reference slot embeddings)."""
    parts = name.replace("._checkpoint_wrapped_module", "").split(".")
    if parts[0] in ("video_io", "audio_io"):
        return parts[0].removesuffix("_io")
    if parts[0] == "blocks" and parts[2] in ("video", "audio"):
        return parts[2]
    if parts[0] == "blocks" and parts[2] == "fusion":  # each fusion direction writes into its query branch
        return "video" if parts[3] in ("norm_video", "audio_to_video", "gate_video") else "audio"
    return None


def restrict_to_branch(model: torch.nn.Module, branches: str) -> int:
    """Freeze every parameter outside ``branches`` (before the engine is built); returns how
    many parameters stay trainable. The frozen branch can still shift a little, through the
    fusion attention that reads the trained branch's hidden states."""
    for name, p in model.named_parameters():
        p.requires_grad_(branches == "both" or branch_of(name) == branches)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ------------------------------------------------------------------------------- rollout


def concat_trajectories(parts: list[Trajectory]) -> Trajectory:
    if len(parts) == 1:
        return parts[0]
    return Trajectory(parts[0].timesteps,
                      [torch.cat(xs) for xs in zip(*(p.video for p in parts), strict=True)],
                      [torch.cat(xs) for xs in zip(*(p.audio for p in parts), strict=True)],
                      torch.cat([p.log_prob_video for p in parts]), torch.cat([p.log_prob_audio for p in parts]))


def rollout(model, cond: Conditioning, video_shape: tuple, audio_shape: tuple, cfg: GRPOConfig,
            generator: torch.Generator, dtype=torch.float32) -> Trajectory:
    """Groups of ``cfg.group_size`` SDE trajectories per prompt of ``cond`` (P prompts ->
    P x G samples, a group's samples consecutive and sharing their initial noise)."""
    g, n = cfg.group_size, cond.batch_size * cfg.group_size
    chunk = cfg.rollout_batch or n
    full = cond.repeat(g)
    device = next(model.parameters()).device
    guidance = Guidance(cfg.video_guidance, cfg.audio_guidance)
    parts = []
    for start in range(0, n, chunk):
        rows = slice(start, start + chunk)
        part_cond = cond_rows(full, rows)
        parts.append(sample_sde(model, part_cond, (chunk, *video_shape), (chunk, *audio_shape),
                                cfg.sampling_steps, cfg.shift, cfg.eta, guidance, generator, g,
                                device=device, dtype=dtype))
    return concat_trajectories(parts)


def cond_rows(cond: Conditioning, rows) -> Conditioning:
    def pick(x):
        return None if x is None else x[rows]
    return Conditioning(pick(cond.text_emb), pick(cond.text_mask), pick(cond.text_spans),
                        pick(cond.text_ref_slots), cond.references, cond.fps,
                        pick(cond.keep_audio_for_video), pick(cond.keep_video_for_audio))


# ---------------------------------------------------------------------------- advantages


@dataclass
class Advantages:
    combined: torch.Tensor  # (N,) sum of coefficient x clamped normalised head advantages
    per_head: dict[str, torch.Tensor]  # head id -> (N,) before the coefficient
    zero_spread: torch.Tensor  # (N / G,) bool: no optimised head varies within the group


def group_advantages(rewards: dict[str, torch.Tensor], heads: list[Head], cfg: GRPOConfig,
                     global_rewards: dict[str, torch.Tensor] | None = None) -> Advantages:
    """Per optimised head, normalise within each group of ``cfg.group_size`` consecutive
    samples, clamp, weight and sum. ``global_rewards`` (every rank's rewards of the step)
    gives the std for ``global_std``."""
    g = cfg.group_size
    optimised = [h for h in heads if h.optimised]
    n = next(iter(rewards.values())).shape[0]
    combined = torch.zeros(n, dtype=torch.float64)
    zero_spread = torch.ones(n // g, dtype=torch.bool)
    per_head = {}
    for head in optimised:
        r = rewards[head.id].double().view(-1, g)
        std = r.std(1, unbiased=False, keepdim=True)
        flat = std <= cfg.zero_std_eps
        if cfg.global_std:
            pool = (global_rewards or rewards)[head.id].double()
            std = pool.std(unbiased=False).expand_as(std)
        adv = torch.where(flat, torch.zeros_like(r), (r - r.mean(1, keepdim=True)) / std.clamp_min(cfg.zero_std_eps))
        adv = adv.clamp(-cfg.adv_clip_max, cfg.adv_clip_max).flatten()
        per_head[head.id] = adv
        combined += head.coefficient * adv
        zero_spread &= flat.flatten()
    return Advantages(combined, per_head, zero_spread)


def rows_to_train(adv: Advantages, cfg: GRPOConfig) -> torch.Tensor:
    """Sample indices to train on, in rollout order: zero-spread groups skipped; with
    ``best_of_n``, only the best and worst best_of_n / 2 of each group by advantage."""
    g, keep = cfg.group_size, []
    for group, flat in enumerate(adv.zero_spread.tolist()):
        if flat:
            continue
        rows = torch.arange(group * g, (group + 1) * g)
        if cfg.best_of_n:
            order = adv.combined[rows].argsort(stable=True)
            k = cfg.best_of_n // 2
            rows = rows[torch.cat([order[:k], order[-k:]]).sort().values]
        keep.append(rows)
    return torch.cat(keep) if keep else torch.zeros(0, dtype=torch.long)


# -------------------------------------------------------------------------------- update


@dataclass
class PolicyTerms:
    loss: torch.Tensor  # (B,) per-sample PPO loss (+ beta KL), to be weighted and summed
    ratio: torch.Tensor  # (B,)
    kl: torch.Tensor  # (B,) 0 without a reference


def policy_terms(model, traj: Trajectory, rows: torch.Tensor, step: torch.Tensor, cond: Conditioning,
                 advantages: torch.Tensor, cfg: GRPOConfig, reference=None) -> PolicyTerms:
    """The clipped objective of transition ``step[i]`` of sample ``rows[i]`` of ``traj``
    (``cond`` and ``advantages`` are those rows')."""
    x_v, x_a, next_v, next_a, t, t_next = traj.at(step, rows)
    guidance = Guidance(cfg.video_guidance, cfg.audio_guidance)
    tr = sde_transition(model, x_v, x_a, t, t_next, cond, cfg.eta, guidance)
    w_v, w_a = cfg.log_prob_weights()
    old = w_v * traj.log_prob_video[rows, step] + w_a * traj.log_prob_audio[rows, step]
    new = (w_v * gaussian_log_prob(next_v, tr.mean_video, tr.std)
           + w_a * gaussian_log_prob(next_a, tr.mean_audio, tr.std))
    ratio = torch.exp(new - old.to(new.device))
    adv = advantages.to(ratio)
    loss = torch.maximum(-adv * ratio, -adv * ratio.clamp(1 - cfg.clip_range, 1 + cfg.clip_range))
    kl = torch.zeros_like(loss)
    if reference is not None:
        with torch.no_grad():
            ref = sde_transition(reference, x_v, x_a, t, t_next, cond, cfg.eta, guidance)
        kl = (w_v * (tr.mean_video - ref.mean_video).double().pow(2).flatten(1).mean(1)
              + w_a * (tr.mean_audio - ref.mean_audio).double().pow(2).flatten(1).mean(1)) / (2 * tr.std**2)
        loss = loss + cfg.kl_beta * kl
    return PolicyTerms(loss, ratio.detach(), kl.detach())


def train_steps_per_sample(n: int, cfg: GRPOConfig, generator: torch.Generator) -> torch.Tensor:
    """(n, train_steps) step indices: a random subset of each trajectory's steps."""
    if n == 0:
        return torch.zeros(0, cfg.train_steps, dtype=torch.long)
    return torch.stack([torch.randperm(cfg.sampling_steps, generator=generator)[: cfg.train_steps]
                        for _ in range(n)])


class Engine(Protocol):
    """What the update needs of a DeepSpeed engine (``training.engine.build_engine``)."""

    def __call__(self, *args, **kwargs): ...
    def parameters(self): ...
    def backward(self, loss: torch.Tensor, scale_wrt_gas: bool = True): ...
    def set_gradient_accumulation_boundary(self, is_boundary: bool): ...
    def step(self): ...


def update(engine: Engine, traj: Trajectory, cond: Conditioning, adv: torch.Tensor, rows: torch.Tensor,
           cfg: GRPOConfig, generator: torch.Generator, reference=None) -> dict[str, float]:
    """Train on samples ``rows`` of ``traj``: ``updates_per_rollout`` optimizer steps, each
    averaging the objective over its samples (all ranks) and their trained steps. Every rank
    runs as many passes as the busiest one (zero-weight passes where it has fewer)."""
    steps = train_steps_per_sample(traj.log_prob.shape[0], cfg, generator)
    batch = cfg.train_batch or cfg.rollout_batch or cfg.samples_per_rank
    ratios, kls, losses = [], [], []
    for part in torch.tensor_split(rows, cfg.updates_per_rollout):
        busiest = int(all_reduce(torch.tensor([len(part)]), ReduceOp.MAX))
        total = int(all_reduce(torch.tensor([len(part)])))
        if total == 0:
            continue  # every rank skipped every group of this part: no optimizer step
        passes = [(mb, k) for mb in range(math.ceil(busiest / batch)) for k in range(cfg.train_steps)]
        for i, (mb, k) in enumerate(passes):
            picked = part[mb * batch:(mb + 1) * batch]
            weight = torch.ones(len(picked), dtype=torch.float64)
            if len(picked) == 0:  # nothing of this rank's in this pass: keep the collectives in step
                picked, weight = torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.float64)
            terms = policy_terms(engine, traj, picked, steps[picked, k], cond_rows(cond, picked), adv[picked],
                                 cfg, reference)
            # DeepSpeed averages gradients over ranks; this scale makes the step's gradient
            # the mean over every rank's samples and trained steps.
            scale = world_size() / (total * cfg.train_steps)
            engine.set_gradient_accumulation_boundary(i == len(passes) - 1)
            engine.backward((terms.loss * weight.to(terms.loss)).sum().float() * scale, scale_wrt_gas=False)
            real = weight.bool()
            ratios.append(terms.ratio[real].cpu())
            kls.append(terms.kl[real].cpu())
            losses.append(terms.loss.detach()[real].cpu())
        engine.step()
    ratio, kl, loss = (torch.cat(x) if x else torch.zeros(0, dtype=torch.float64) for x in (ratios, kls, losses))
    return {"ratio_sum": float(ratio.sum()), "count": float(len(ratio)),
            "clipped": float(((ratio - 1).abs() > cfg.clip_range).sum()), "kl_sum": float(kl.sum()),
            "loss_sum": float(loss.sum()), "ratio_min": float(ratio.min()) if len(ratio) else math.inf,
            "ratio_max": float(ratio.max()) if len(ratio) else -math.inf}


# ---------------------------------------------------------------------------------- step


Scorer = Callable[[Trajectory, list[int]], dict[str, torch.Tensor]]


@dataclass
class PromptBatch:
    """This rank's prompts of the step: their conditioning and their index in the prompt set."""

    cond: Conditioning
    indices: list[int]


def grpo_step(engine: Engine, prompts: PromptBatch, video_shape: tuple, audio_shape: tuple, score: Scorer,
              heads: list[Head], cfg: GRPOConfig, generator: torch.Generator, reference=None,
              dtype=torch.float32) -> dict[str, float]:
    """One GRPO step on this rank (all ranks call it together); returns the step's metrics,
    reduced over ranks. ``score(traj, prompt_index_per_sample)`` -> head id -> (N,) rewards."""
    start = time.perf_counter()
    traj = rollout(engine, prompts.cond, video_shape, audio_shape, cfg, generator, dtype)
    rollout_s = time.perf_counter() - start

    start = time.perf_counter()
    sample_prompts = [i for i in prompts.indices for _ in range(cfg.group_size)]
    rewards = {k: v.double().cpu() for k, v in score(traj, sample_prompts).items()}
    everyone = {k: all_gather_cat(v) for k, v in rewards.items()}
    adv = group_advantages(rewards, heads, cfg, everyone)
    rows = rows_to_train(adv, cfg)
    reward_s = time.perf_counter() - start

    start = time.perf_counter()
    stats = update(engine, traj, prompts.cond.repeat(cfg.group_size), adv.combined, rows, cfg, generator, reference)
    update_s = time.perf_counter() - start
    return step_metrics(everyone, adv, rows, stats, heads, cfg) | {
        "rollout_s": rollout_s, "reward_s": reward_s, "update_s": update_s}


def step_metrics(rewards: dict[str, torch.Tensor], adv: Advantages, rows: torch.Tensor, stats: dict,
                 heads: list[Head], cfg: GRPOConfig) -> dict[str, float]:
    """The per-step metrics a training lead reads, over every rank's samples."""
    out: dict[str, float] = {}
    combined = torch.zeros_like(next(iter(rewards.values())))
    for head in heads:
        r = rewards[head.id]
        out[f"reward.{head.id}.mean"], out[f"reward.{head.id}.std"] = float(r.mean()), float(r.std(unbiased=False))
        if head.optimised:
            combined += head.coefficient * r
    out["reward_mean"] = float(combined.mean())
    a = all_gather_cat(adv.combined)
    out.update(advantage_mean=float(a.mean()), advantage_std=float(a.std(unbiased=False)),
               advantage_abs_max=float(a.abs().max()))
    flat = all_gather_cat(adv.zero_spread.double())
    out["zero_std_frac"] = float(flat.mean())
    out["trained_frac"] = float(all_reduce(torch.tensor([float(len(rows))]))) / len(a)
    sums = all_reduce(torch.tensor([stats[k] for k in ("ratio_sum", "count", "clipped", "kl_sum", "loss_sum")],
                                    dtype=torch.float64))
    count = max(float(sums[1]), 1.0)
    lo = float(all_reduce(torch.tensor([stats["ratio_min"]], dtype=torch.float64), ReduceOp.MIN))
    hi = float(all_reduce(torch.tensor([stats["ratio_max"]], dtype=torch.float64), ReduceOp.MAX))
    out.update(ratio_mean=float(sums[0]) / count if sums[1] else 1.0, ratio_min=lo if sums[1] else 1.0,
               ratio_max=hi if sums[1] else 1.0, clip_frac=float(sums[2]) / count, kl=float(sums[3]) / count,
               loss=float(sums[4]) / count)
    return out
