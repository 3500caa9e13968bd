"""The alignment trainer: DanceGRPO steps (reward/grpo/grpo_step.py) on a DeepSpeed engine, with
EMA, checkpoints, resume, periodic evaluation and a reward-hacking monitor.

It is the Trainer's sibling and reuses its pieces: ``training.engine.build_engine`` (ZeRO-2/3,
precision, clipping), ``training.ema.EMA``, the warmup schedule and per-(seed, step, rank)
generators of ``training.trainer``, and DeepSpeed checkpoints with the step, EMA and monitor
in their client state. Every random draw (prompts, group noise, trained steps) is a function
of (seed, step, rank), so a run resumed from a checkpoint logs what the uninterrupted run
would have logged. Runs under plain torchrun or inside Ray Train (pipelines/align_cmd.py).
"""

from __future__ import annotations

import copy
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist

from model.config import ConfigError, run_only
from model.sequence import SequenceConfig
from reward.grpo.align_inputs import (
    BUILTIN_EVAL_PROMPTS,
    BUILTIN_PROMPTS,
    RewardSourceConfig,
    build_sources,
    contrastive_scores,
    encode_prompts,
    parse_rewards,
    prompt_texts,
)
from reward.grpo.grpo_step import (
    GRPOConfig,
    Head,
    PromptBatch,
    cond_rows,
    grpo_step,
    restrict_to_branch,
    rollout,
)
from reward.scoring.sources import Clips
from training.checkpoint_loader import load_weights_into
from training.clip_encoder import EncoderConfig
from training.engine import EngineConfig
from training.resume import Resumable
from training.tracker import NullTracker, Tracker
from training.trainer import WorkersConfig

log = logging.getLogger(__name__)


def debug_sequence() -> SequenceConfig:
    """9 frames of 16x16 at 25 fps with 0.36 s of 16 kHz audio: the debug VAEs decode it in ms."""
    return SequenceConfig(duration_s=0.36, fps=25.0, height=16, width=16)


@dataclass
class EvalConfig:
    every: int = 10  # steps between evaluations (also at step 0 and the last step); 0 = never
    prompts_file: str = ""  # one prompt per line; "" = the built-in evaluation prompts
    samples_per_prompt: int = 2
    seed: int = 1234  # fixed noise: the same clips every evaluation but for the weights
    videos: int = 4  # mp4s written and logged per evaluation


@dataclass
class HackingConfig:
    threshold: float = 0.02  # a held-out head falling this far below its best evaluation (unless its
    #                          source sets hacking_threshold)...
    min_rise: float = 0.0  # ...while eval_reward_mean rose more than this since raises hacking_alert


@dataclass
class AlignConfig:
    preset: str = "debug"
    init: str = ""  # "" = a freshly initialised preset; safetensors, DeepSpeed dir, or models:/tandem-dit@ALIAS
    steps: int = 30
    seed: int = 0
    warmup_steps: int = 0
    min_lr_ratio: float = 1.0  # 1 = constant after warmup
    checkpoint_every: int = run_only(10)  # a resume continues exactly from any checkpoint
    ema_decay: float = 0.0  # 0 disables
    storage: str = "runs/align"
    prompts_file: str = ""  # training prompts, one per line; "" = the built-in set
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    rewards: dict[str, RewardSourceConfig] = field(default_factory=dict)
    sequence: SequenceConfig = field(default_factory=debug_sequence)  # what rollouts generate
    encoder: EncoderConfig = field(default_factory=EncoderConfig)  # text encoder + the encoders that decode rollouts
    eval: EvalConfig = field(default_factory=EvalConfig)
    hacking: HackingConfig = field(default_factory=HackingConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    workers: WorkersConfig = field(default_factory=WorkersConfig)
    register_alias: str = run_only("candidate")  # alias of the aligned checkpoint in tandem-aligned
    experiment: str = run_only("tandem-align")
    tracking_dir: str = run_only("runs")

    def __post_init__(self):
        self.rewards = parse_rewards(self.rewards)
        if self.engine.grad_accum_steps != 1:
            raise ConfigError("engine.grad_accum_steps is not used by align: the update accumulates over "
                              "grpo.train_batch micro-batches and trained steps; use grpo.updates_per_rollout")


class HackingMonitor:
    """Flags reward hacking: a held-out head has fallen more than its threshold below the best
    it reached while the optimised eval reward rose (by more than ``min_rise``) since then.
    ``held_out``: head id -> threshold in that head's units (0: ``cfg.threshold``)."""

    def __init__(self, cfg: HackingConfig, held_out: dict[str, float]):
        self.cfg, self.held_out = cfg, {h: t or cfg.threshold for h, t in held_out.items()}
        self.best: dict[str, tuple[float, float]] = {}  # head -> (its best eval, eval_reward_mean then)

    def check(self, metrics: dict[str, float]) -> tuple[bool, str]:
        reward, hacked = metrics["eval_reward_mean"], []
        for head, threshold in self.held_out.items():
            now = metrics[f"eval_reward.{head}.mean"]
            best, reward_then = self.best.get(head, (now, reward))
            if now >= best:
                self.best[head] = (now, reward)
            elif best - now > threshold and reward - reward_then > self.cfg.min_rise:
                hacked.append(f"held-out {head} fell {best - now:.4g} below its best while eval_reward_mean "
                              f"rose {reward - reward_then:+.4g}")
        return bool(hacked), ("possible reward hacking: " + "; ".join(hacked)) if hacked else ""

    def state_dict(self) -> dict:
        return {"best": dict(self.best)}

    def load_state_dict(self, state: dict) -> None:
        self.best = {k: tuple(v) for k, v in state.get("best", {}).items()}


def model_config(cfg: AlignConfig):
    """The policy's DualDiTConfig: the preset's size with the geometry of the latents
    ``cfg.encoder`` makes (read from configs, no weights loaded)."""
    from model.presets import get_preset
    from training.encoders import describe

    return get_preset(cfg.preset, describe(cfg.encoder, cfg.sequence.fps).geometry())


def step_generator(seed: int, step: int, rank: int, stream: int = 0) -> torch.Generator:
    from training.trainer import step_generator as trainer_generator

    return trainer_generator(seed, step, stream, rank)


class Aligner(Resumable):
    def __init__(self, cfg: AlignConfig, tracker: Tracker | None = None, init_path: str = "",
                 reward_paths: dict[str, str] | None = None):
        from model.dit import DualDiT
        from training.ema import EMA
        from training.encoders import load_decoder, load_text
        from training.engine import build_engine
        from training.trainer import warmup_cosine

        self.cfg, self.tracker = cfg, tracker or NullTracker()
        torch.manual_seed(cfg.seed)  # every rank builds identical initial weights
        model = DualDiT(model_config(cfg))
        if init_path or cfg.init:
            load_weights_into(model, init_path or cfg.init)
        self.model_cfg = model.cfg
        g = cfg.grpo
        self.reference = (copy.deepcopy(model).eval().requires_grad_(False)
                          if g.kl_beta > 0 or g.kl_reference else None)
        self.trainable = restrict_to_branch(model, g.branches)
        self.engine = build_engine(model, cfg.engine, warmup_cosine(cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio))
        self.device = self.engine.device
        self.dtype = torch.bfloat16 if cfg.engine.precision == "bf16" else torch.float32
        if self.reference is not None:  # in the policy's precision, as DeepSpeed casts the policy
            self.reference.to(self.device, self.dtype)
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.ema = EMA(self.engine.module, cfg.ema_decay) if cfg.ema_decay > 0 else None
        self.sources = build_sources(cfg.rewards, reward_paths or {}, self.device)
        self.heads: list[Head] = [h for _, _, named in self.sources for _, h in named]
        self.monitor = HackingMonitor(cfg.hacking, {h.id: cfg.rewards[key].hacking_threshold
                                                    for key, _, named in self.sources for _, h in named
                                                    if not h.optimised})
        self.prompts = prompt_texts(cfg.prompts_file, BUILTIN_PROMPTS)
        self.eval_prompts = prompt_texts(cfg.eval.prompts_file, BUILTIN_EVAL_PROMPTS)
        encoder = load_text(cfg.encoder, self.device)
        self.cond = encode_prompts(encoder, self.prompts, cfg.sequence.fps, self.device, self.dtype)
        self.eval_cond = encode_prompts(encoder, self.eval_prompts, cfg.sequence.fps, self.device, self.dtype)
        del encoder
        # decoded clips: for sources that score media, and for the mp4s evaluations write
        self.needs_media = any(s.uses != "latents" for _, s, _ in self.sources)
        self.decoder = load_decoder(cfg.encoder, self.device) if self.needs_media or cfg.eval.videos else None
        seq = cfg.sequence
        self.video_shape = (self.model_cfg.video.latent_channels, *seq.video_latent_shape)
        self.audio_shape = (self.model_cfg.audio.latent_channels, seq.audio_latents)  # preflight: = the encoder's
        self.step = 0

    # ------------------------------------------------------------------ checkpoints

    def client_state(self) -> dict:
        return {"monitor": self.monitor.state_dict()}

    def load_client_state(self, client: dict) -> None:
        self.monitor.load_state_dict(client.get("monitor") or {})

    # ---------------------------------------------------------------------- rewards

    @torch.no_grad()
    def decode(self, video_latents: torch.Tensor, audio_latents: torch.Tensor):
        """Latents -> the clip as it would be written (pixels and samples in [-1, 1])."""
        return self.decoder.decode(video_latents.float(), audio_latents.float(), self.cfg.sequence.fps)

    def score(self, video_latents: torch.Tensor, audio_latents: torch.Tensor, prompts: list[str],
              text, clip=None) -> dict[str, torch.Tensor]:
        """Head id -> (N,) rewards of clips given by their final latents and their prompts'
        conditioning ``text`` (for reward models that read the text embedding)."""
        if clip is None and self.needs_media:
            clip = self.decode(video_latents, audio_latents)
        seq = self.cfg.sequence
        clips = Clips(prompts, clip.video if clip else None, clip.audio if clip else None, seq.fps,
                      clip.sample_rate if clip else seq.sample_rate, video_latents.float(), audio_latents.float(),
                      text.text_emb.float(), text.text_mask)
        out = {}
        for key, source, named in self.sources:
            scores = (contrastive_scores(source, clips, self.prompts, self.cond.text_emb.float(), self.cond.text_mask)
                      if self.cfg.rewards[key].contrast else source.score(clips))
            out.update({head.id: scores[name].detach().float().cpu() for name, head in named})
        return out

    # ------------------------------------------------------------------------- steps

    def prompt_batch(self) -> PromptBatch:
        """This rank's prompts of this step: consecutive slots of a per-epoch shuffle."""
        n, per = len(self.prompts), self.cfg.grpo.prompts_per_rank
        picked = []
        for j in range(per):
            slot = (self.step * self.world + self.rank) * per + j
            order = torch.randperm(n, generator=torch.Generator().manual_seed(self.cfg.seed * 7919 + slot // n))
            picked.append(int(order[slot % n]))
        return PromptBatch(cond_rows(self.cond, torch.tensor(picked)), picked)

    def train_step(self) -> dict[str, float]:
        batch = self.prompt_batch()
        gen = step_generator(self.cfg.seed, self.step, self.rank)

        def score(traj, prompt_indices):
            return self.score(traj.video[-1], traj.audio[-1], [self.prompts[i] for i in prompt_indices],
                              cond_rows(self.cond, torch.tensor(prompt_indices)))

        metrics = grpo_step(self.engine, batch, self.video_shape, self.audio_shape, score, self.heads,
                            self.cfg.grpo, gen, self.reference, self.dtype)
        self.step += 1
        if self.ema is not None:
            self.ema.update(self.engine.module)
        metrics.update(lr=self.engine.get_lr()[0], grad_norm=float(self.engine.get_global_grad_norm() or 0.0))
        return metrics

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Eval rewards on the fixed prompt set with fixed noise; mp4s of the first
        ``eval.videos`` samples under storage/eval/stepNNNNNNNN (logged by rank 0)."""
        ev, start = self.cfg.eval, time.perf_counter()
        out_dir = Path(self.cfg.storage) / "eval" / f"step{self.step:08d}"
        cfg = copy.copy(self.cfg.grpo)
        cfg.group_size, cfg.rollout_batch = ev.samples_per_prompt, 0
        rounds = -(-len(self.eval_prompts) // self.world)
        rewards: list[tuple[int, dict[str, list[float]]]] = []
        for r in range(rounds):
            index = r * self.world + self.rank
            real = index < len(self.eval_prompts)  # ranks without a prompt still run (collective forwards)
            i = index if real else 0
            gen = torch.Generator().manual_seed(ev.seed * 100_003 + i)
            traj = rollout(self.engine, cond_rows(self.eval_cond, torch.tensor([i])), self.video_shape,
                           self.audio_shape, cfg, gen, self.dtype)
            if not real:
                continue
            clip = self.decode(traj.video[-1], traj.audio[-1]) if self.decoder is not None else None
            scores = self.score(traj.video[-1], traj.audio[-1], [self.eval_prompts[i]] * ev.samples_per_prompt,
                                cond_rows(self.eval_cond, torch.tensor([i] * ev.samples_per_prompt)), clip)
            rewards.append((i, {k: v.tolist() for k, v in scores.items()}))
            for j in range(ev.samples_per_prompt):
                if clip is not None and i * ev.samples_per_prompt + j < ev.videos:
                    clip.save_mp4(out_dir / f"prompt{i:03d}_sample{j}.mp4", j)
                    (out_dir / f"prompt{i:03d}_sample{j}.txt").write_text(self.eval_prompts[i] + "\n")
        gathered = [None] * self.world
        dist.all_gather_object(gathered, rewards)
        per_head = {h.id: [v for part in gathered for _, r in part for v in r[h.id]] for h in self.heads}
        metrics = {f"eval_reward.{k}.mean": sum(v) / len(v) for k, v in per_head.items()}
        metrics["eval_reward_mean"] = sum(h.coefficient * metrics[f"eval_reward.{h.id}.mean"]
                                          for h in self.heads if h.optimised)
        hacked, message = self.monitor.check(metrics)
        metrics["hacking_alert"] = float(hacked)
        metrics["eval_s"] = time.perf_counter() - start
        if hacked and self.rank == 0:
            log.warning("step %d: %s", self.step, message)
        dist.barrier()  # every rank's mp4s are written
        if self.rank == 0 and out_dir.is_dir():
            self.tracker.log_artifact(out_dir, f"eval/step{self.step:08d}")
        return metrics

    def eval_due(self) -> bool:
        every = self.cfg.eval.every
        return every > 0 and (self.step % every == 0 or self.step == self.cfg.steps)

    def log(self, metrics: dict[str, float], step: int) -> None:
        """To the tracker, and (rank 0) one line of ``storage/progress.jsonl`` that
        ``tandem align`` prints as the run goes."""
        self.tracker.log_metrics(metrics, step=step)
        if self.rank == 0:
            with open(Path(self.cfg.storage) / "progress.jsonl", "a") as f:
                f.write(json.dumps({"step": step, "steps": self.cfg.steps, **metrics}) + "\n")

    def fit(self, until: int | None = None) -> list[dict]:
        """Align from wherever ``resume`` left off to ``until`` (default ``cfg.steps``);
        returns the per-step metrics (eval metrics merged into their step's)."""
        history = []
        Path(self.cfg.storage).mkdir(parents=True, exist_ok=True)
        if self.step == 0 and self.eval_due():
            self.log(self.evaluate(), step=0)
        while self.step < min(until or self.cfg.steps, self.cfg.steps):
            metrics = self.train_step()
            if self.eval_due():
                metrics.update(self.evaluate())
            self.log(metrics, step=self.step)
            history.append(metrics)
            if self.step % self.cfg.checkpoint_every == 0 or self.step in (until, self.cfg.steps):
                self.save()
        return history
