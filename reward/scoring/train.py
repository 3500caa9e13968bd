"""Reward-model training: Bradley-Terry with ties per head, held-out accuracy with and without ties.

Launch it with the CLI (Ray Train, one or more workers; MLflow; registry):

    tandem reward train --rankings RANKINGS_DIR --rollouts ROLLOUTS_DIR --config latent_cpu [key=value ...]

or in a plain loop / under torchrun, without Ray or MLflow:

    from reward.scoring.train import RewardTrainConfig, train_reward
    result = train_reward(RewardTrainConfig(), rankings_dir, [rollouts_dir])

One step: draw up to ``clips_per_step`` clips by walking the training judgements in random
order, score each clip once, and use every judgement among them: the backbone's cost is per
clip, while a group of K samples ranked on several axes gives K(K-1)/2 pairs per axis, so a
step learns from all of them at the price of K forwards. For each head, take the mean
negative log-likelihood of that head's judgements under Rao-Kupper
(``reward.annotation.preference`` Eq. 2; ``loss.ties=drop``: plain Bradley-Terry, Eq. 1, on the
non-tied ones). The step's loss is the mean over the heads present, so a head with few labels is not
drowned out. log theta is a trained scalar (``loss.learn_theta``) or fixed at ``loss.theta``.

Every ``eval_every`` steps and at the end, each head is scored on the held-out judgements:
accuracy without ties (Eq. 3) and with ties at the calibrated tie threshold (Eq. 4).
Several ranks (torchrun, Ray Train) each draw their own clips for a step and average gradients;
``engine=deepspeed`` puts large backbones on a ``training.engine`` DeepSpeed engine (ZeRO 0-2).
Every ``checkpoint_every`` steps the run is saved under ``storage/checkpoints`` and a run
started again on the same storage (a Ray worker restarted after a crash, or the same command
run again) resumes from there exactly (``reward.scoring.train_checkpoints``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from model.config import run_only
from reward.annotation.preference import accuracy_with_ties, accuracy_without_ties, preference_loss
from reward.annotation.rankings import read_rankings
from reward.scoring.clip_store import ClipStore, find_clips
from reward.scoring.pairs import Judgements, PreparedPairs, prepare_pairs
from reward.scoring.reward_model import RewardModel, RewardModelConfig, clips_to
from training.collectives import all_reduce
from training.engine import EngineConfig
from training.resume import checkpoint_dir
from training.tracker import NullTracker, Tracker
from training.trainer import WorkersConfig, warmup_cosine

log = logging.getLogger(__name__)


@dataclass
class LossConfig:
    ties: str = "rao_kupper"  # rao_kupper | drop (plain Bradley-Terry, ties left out of the loss)
    theta: float = 2.0  # Rao-Kupper theta > 1; the starting value when learn_theta
    learn_theta: bool = True

    def __post_init__(self):
        if self.ties not in ("rao_kupper", "drop"):
            raise ValueError(f"loss.ties must be rao_kupper or drop, got {self.ties!r}")
        if self.ties == "rao_kupper" and not self.theta > 1:
            raise ValueError(f"loss.theta must be > 1 (theta = 1 gives ties probability 0), got {self.theta}")


@dataclass
class RewardTrainConfig:
    model: RewardModelConfig = field(default_factory=RewardModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    steps: int = 300
    clips_per_step: int = 64  # per rank; every judgement among them is used
    lr: float = 5e-4
    weight_decay: float = 0.05
    warmup_steps: int = 30
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    holdout_fraction: float = 0.2  # of rollout groups, when no held-out rankings are given
    eval_every: int = run_only(100)
    checkpoint_every: int = run_only(100)  # steps between checkpoints a killed run resumes from (0: none)
    eval_batch: int = run_only(32)  # clips per forward when scoring held-out clips
    log_every: int = run_only(25)  # progress line every this many steps
    engine: str = "torch"  # torch | deepspeed (large backbones; see deepspeed.*)
    deepspeed: EngineConfig = field(default_factory=lambda: EngineConfig(zero_stage=2, lr=1e-4))
    workers: WorkersConfig = field(default_factory=lambda: WorkersConfig(num_workers=1))
    storage: str = "runs/reward"
    experiment: str = run_only("tandem-reward")
    tracking_dir: str = run_only("runs")

    def __post_init__(self):
        if self.engine not in ("torch", "deepspeed"):
            raise ValueError(f"engine must be torch or deepspeed, got {self.engine!r}")
        if self.engine == "deepspeed" and self.deepspeed.zero_stage > 2:
            raise ValueError("reward training runs DeepSpeed ZeRO stages 0-2 (the reward model is saved from "
                             "rank 0's full copy); set deepspeed.zero_stage to 2")


class ClipScorer(nn.Module):
    """(n,) clip indices -> (n, H) scores: loads each clip's inputs once, batches equal shapes."""

    def __init__(self, model: RewardModel, store: ClipStore, batch_size: int = 0):
        super().__init__()
        self.model, self.store, self.batch_size = model, store, batch_size

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        idx = indices.tolist()
        parts, order = [], []
        for positions, clips in self.store.batches(idx, self.batch_size):
            parts.append(self.model(clips_to(clips, self.model.device)))
            order += positions
        inverse = torch.empty(len(order), dtype=torch.long)
        inverse[torch.tensor(order)] = torch.arange(len(order))
        return torch.cat(parts)[inverse.to(parts[0].device)]


class ItemScores(nn.Module):
    """One free score per item and head (no backbone): the leaderboard's model, which the
    trained loss must reproduce."""

    def __init__(self, n_items: int, n_heads: int):
        super().__init__()
        self.scores = nn.Parameter(torch.zeros(n_items, n_heads, dtype=torch.float64))

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        return self.scores[indices]


class Preference(nn.Module):
    """The scorer plus the Rao-Kupper tie parameter: theta = 1 + exp(u), so theta > 1."""

    def __init__(self, scorer: nn.Module, loss: LossConfig):
        super().__init__()
        self.scorer, self.cfg = scorer, loss
        u = math.log(math.expm1(math.log(loss.theta))) if loss.ties == "rao_kupper" else 0.0
        # Shape (1,), not a scalar: DeepSpeed broadcasts parameters as bytes, which a 0-d tensor cannot be.
        self.u = nn.Parameter(torch.tensor([u]), requires_grad=loss.learn_theta and loss.ties == "rao_kupper")

    def log_theta(self) -> torch.Tensor | None:
        return None if self.cfg.ties == "drop" else nn.functional.softplus(self.u)[0]

    def forward(self, pairs: Judgements, n_heads: int) -> tuple[torch.Tensor, dict[int, float]]:
        """Mean over the heads present of each head's mean NLL; and the per-head losses."""
        items, inverse = np.unique(np.concatenate([pairs.a, pairs.b]), return_inverse=True)
        scores = self.scorer(torch.from_numpy(items))
        ia, ib = torch.from_numpy(inverse[: len(pairs)]), torch.from_numpy(inverse[len(pairs):])
        head, outcome = torch.from_numpy(pairs.head), torch.from_numpy(pairs.outcome)
        d = scores[ia, head] - scores[ib, head]
        log_theta = self.log_theta()
        per_head = {h: preference_loss(d[head == h], outcome[head == h].to(d.device), log_theta)
                    for h in range(n_heads) if bool((head == h).any())}
        return torch.stack(list(per_head.values())).mean(), {h: float(v.detach()) for h, v in per_head.items()}


@dataclass
class TrainResult:
    metrics: dict[str, float]
    history: list[dict]
    model_dir: Path | None = None
    model: RewardModel | None = None


class PreferenceTrainer:
    """Trains a scorer on judgements, one plain loop; several ranks when torch.distributed is
    initialised (each draws its own clips for a step; gradients are averaged)."""

    def __init__(self, cfg: RewardTrainConfig, scorer: nn.Module, pairs: PreparedPairs, heads: tuple[str, ...],
                 tracker: Tracker | None = None):
        import torch.distributed as dist

        self.cfg, self.pairs, self.heads = cfg, pairs, tuple(heads)
        self.tracker = tracker or NullTracker()
        self.distributed = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank() if self.distributed else 0
        self.world = dist.get_world_size() if self.distributed else 1
        self.module = Preference(scorer, cfg.loss)
        self.engine = None
        schedule = warmup_cosine(cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio)
        if cfg.engine == "deepspeed":
            from training.engine import build_engine

            self.engine = build_engine(self.module, cfg.deepspeed, schedule)
        else:
            params = [p for p in self.module.parameters() if p.requires_grad]
            self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
            self.schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule)
        self.step = 0

    @property
    def checkpoint_dir(self) -> Path:
        return checkpoint_dir(self.cfg.storage)

    def resume(self) -> bool:
        """Continue from the latest checkpoint under storage, if any; True when resumed."""
        from reward.scoring import train_checkpoints

        return train_checkpoints.resume(self, self.checkpoint_dir)

    def save(self) -> None:
        from reward.scoring import train_checkpoints

        train_checkpoints.save(self, self.checkpoint_dir)

    def _batch(self, step: int) -> Judgements:
        """This rank's judgements for step ``step``: every one among up to ``clips_per_step``
        clips, gathered by walking the judgements in an order drawn from (seed, step, rank)."""
        train, budget = self.pairs.train, self.cfg.clips_per_step
        rng = np.random.default_rng((self.cfg.seed, step, self.rank))
        chosen: set[int] = set()
        for j in rng.permutation(len(train)):
            new = {int(train.a[j]), int(train.b[j])} - chosen
            if len(chosen) + len(new) <= budget:
                chosen |= new
            if len(chosen) >= budget:
                break
        members = np.fromiter(chosen, dtype=np.int64)
        return train.subset(np.isin(train.a, members) & np.isin(train.b, members))

    def _update(self, loss: torch.Tensor) -> None:
        if self.engine is not None:
            self.engine.backward(loss)
            self.engine.step()
            return
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for p in self.module.parameters() if p.requires_grad]
        if self.distributed:  # the scorer runs several forwards per step, so average by hand, not DDP
            for p in params:
                p.grad = all_reduce(p.grad if p.grad is not None else torch.zeros_like(p)) / self.world
        if self.cfg.grad_clip:
            nn.utils.clip_grad_norm_(params, self.cfg.grad_clip)
        self.optimizer.step()
        self.schedule.step()

    def fit(self, on_eval: Callable[[dict], None] | None = None) -> TrainResult:
        cfg, history = self.cfg, []
        self.module.train()
        start = time.perf_counter()
        while self.step < cfg.steps:
            t0 = time.perf_counter()
            # Through the engine when there is one (its forward does DeepSpeed's bookkeeping).
            forward = self.engine if self.engine is not None else self.module
            batch = self._batch(self.step)
            loss, per_head = forward(batch, len(self.heads))
            self._update(loss)
            self.step += 1
            lt = self.module.log_theta()
            row = {"loss": float(loss.detach()), "log_theta": float(lt.detach()) if lt is not None else 0.0,
                   "pairs_per_s": len(batch) / (time.perf_counter() - t0),
                   **{f"loss/{self.heads[h]}": v for h, v in per_head.items()}}
            history.append(row)
            if self.rank == 0:
                self.tracker.log_metrics(row, step=self.step)
                if self.step % cfg.log_every == 0:
                    log.info("step %d/%d  loss %.4f  log theta %.3f  %.1f pairs/s", self.step, cfg.steps,
                             row["loss"], row["log_theta"], row["pairs_per_s"])
            if cfg.checkpoint_every and (self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps):
                self.save()
            if self.step % cfg.eval_every == 0 or self.step == cfg.steps:
                metrics = self.evaluate(self.pairs.heldout, "heldout")
                if self.rank == 0:
                    self.tracker.log_metrics(metrics, step=self.step)
                    log.info("step %d/%d  loss %.4f  %s  (%.0f s)", self.step, cfg.steps, row["loss"],
                             _summary(metrics, self.heads), time.perf_counter() - start)
                if on_eval:
                    on_eval(metrics)
        final = {**self.evaluate(self.pairs.heldout, "heldout"), **self.evaluate(self.pairs.train, "train")}
        return TrainResult(final, history)

    @torch.no_grad()
    def item_scores(self, items: np.ndarray) -> np.ndarray:
        """(n, H) scores of ``items``, in eval mode."""
        was_training = self.module.training
        self.module.eval()
        try:
            out = [self.module.scorer(torch.from_numpy(items[i:i + 256])).float().cpu()
                   for i in range(0, len(items), 256)]
        finally:
            self.module.train(was_training)
        return torch.cat(out).numpy() if out else np.zeros((0, len(self.heads)))

    def evaluate(self, pairs: Judgements, split: str) -> dict[str, float]:
        """Per head: accuracy without ties, with ties (and its tie threshold), judgements."""
        if len(pairs) == 0:
            return {}
        items, inverse = np.unique(np.concatenate([pairs.a, pairs.b]), return_inverse=True)
        scores = self.item_scores(items)
        d = scores[inverse[: len(pairs)], pairs.head] - scores[inverse[len(pairs):], pairs.head]
        out = {}
        for h, name in enumerate(self.heads):
            sel = pairs.head == h
            if not sel.any():
                continue
            with_ties, eps = accuracy_with_ties(d[sel], pairs.outcome[sel])
            out.update({f"{split}/{name}/accuracy_without_ties": accuracy_without_ties(d[sel], pairs.outcome[sel]),
                        f"{split}/{name}/accuracy_with_ties": with_ties, f"{split}/{name}/tie_epsilon": eps,
                        f"{split}/{name}/judgements": float(sel.sum())})
        return out


def _summary(metrics: dict, heads) -> str:
    return "  ".join(f"{h} {metrics.get(f'heldout/{h}/accuracy_without_ties', float('nan')):.3f}" for h in heads)


def train_reward(cfg: RewardTrainConfig, rankings: str | Path, rollouts: list[str | Path], *,
                 heldout_rankings: str | Path | None = None, tracker: Tracker | None = None,
                 save: bool = True) -> TrainResult:
    """Train the reward model ``cfg`` describes on ``rankings`` over ``rollouts``; rank 0 saves
    it to ``storage/model`` with its held-out metrics (``TrainResult.model_dir``)."""
    tracker = tracker or NullTracker()
    torch.manual_seed(cfg.seed)  # every rank builds the same initial weights
    heads = tuple(cfg.model.heads)
    clips = find_clips(rollouts)
    rows = read_rankings(rankings)
    pairs = prepare_pairs(rows, [c.id for c in clips], [str(c.meta.get("group_id", c.id)) for c in clips], heads,
                          heldout_rows=read_rankings(heldout_rankings) if heldout_rankings else None,
                          holdout_fraction=cfg.holdout_fraction, seed=cfg.seed)
    if len(pairs.train) == 0:
        raise ValueError(f"no usable training judgements among {pairs.rows_in} rows "
                         f"(dropped: {dict(pairs.dropped)}); check that --rollouts holds the ranked samples "
                         f"and that the heads ({', '.join(heads)}) name the rankings' axes")
    model = RewardModel(cfg.model)
    if torch.cuda.is_available():
        model = model.cuda()
    store = ClipStore(clips, model.uses, cache=getattr(model.backbone, "cache_inputs", model.uses == "latents"))
    counts = {"clips": len(clips), "rows_in": pairs.rows_in, "train_judgements": len(pairs.train),
              "heldout_judgements": len(pairs.heldout), **{f"dropped/{k}": v for k, v in pairs.dropped.items()}}
    tracker.log_metrics({f"data/{k}": float(v) for k, v in counts.items()}, step=0)
    for reason, n in pairs.dropped.items():
        if n:
            log.warning("%d judgements not used: %s", n, reason)
    trainer = PreferenceTrainer(cfg, ClipScorer(model, store, cfg.eval_batch), pairs, heads, tracker)
    resumed_from = trainer.step if trainer.resume() else None
    if resumed_from is not None:
        log.info("resumed from %s at step %d of %d", trainer.checkpoint_dir, resumed_from, cfg.steps)
    result = trainer.fit()
    log_theta = trainer.module.log_theta()
    model.log_theta = float(log_theta.detach()) if log_theta is not None else 0.0
    result.model = model
    if save and trainer.rank == 0:
        result.model_dir = model.save(Path(cfg.storage) / "model", metrics=result.metrics, data=counts,
                                      per_head=pairs.train.counts(heads), trained_steps=trainer.step,
                                      resumed_from=resumed_from,
                                      run_id=tracker.run_id)
    return result
