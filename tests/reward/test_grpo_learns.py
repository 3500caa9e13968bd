"""Alignment on two ranks with DeepSpeed ZeRO-2, the debug preset from fresh weights.

Alignment learns: mean brightness of the decoded clips (fixed eval prompts and noise) rises
within a couple of dozen steps while an lr = 0 control stays exactly flat; the held-out head
that anticorrelates with it (darkness) falls, so hacking_alert flips in the learning run and
never in the control. A run started from those DeepSpeed checkpoints evaluates as the run
ended. And a rank whose groups are all skipped still runs as many passes as the other (ZeRO
reduces gradients in every backward): no hang, both end with equal weights."""

from __future__ import annotations

import pytest

from training.local_ranks import on_two_ranks

pytestmark = pytest.mark.slow  # two DeepSpeed ranks

STEPS, EVERY = 20, 10
RECIPE = [f"steps={STEPS}", f"eval.every={EVERY}", "checkpoint_every=1000", "eval.videos=0",
          "grpo.sampling_steps=6", "grpo.timestep_fraction=0.5",
          "rewards={brightness: {source: brightness}, "
          "darkness: {source: brightness, options: {target: 0.0}, optimise: false}}"]


class Recorder:
    run_id = tracking_uri = None

    def __init__(self):
        self.metrics: dict[int, dict] = {}

    def log_metrics(self, metrics, step=None):
        self.metrics.setdefault(step, {}).update(metrics)

    def log_params(self, params): ...
    def log_artifact(self, path, artifact_path=None): ...
    def set_tags(self, tags): ...
    def close(self, status="FINISHED"): ...


def one_rank_has_nothing_to_train() -> dict:
    """update() where rank 1 skipped every group: (passes, weights checksum, changed) per rank."""
    import torch
    import torch.distributed as dist

    from model.conditioning import Conditioning
    from model.dit import DualDiT
    from model.presets import get_preset
    from reward.grpo.grpo_step import GRPOConfig, rollout, update
    from training.engine import EngineConfig, build_engine

    torch.manual_seed(0)
    engine = build_engine(DualDiT(get_preset("debug")), EngineConfig(zero_stage=2, lr=1e-2, micro_batch_per_rank=2))
    rank = dist.get_rank()
    backwards = []
    real_backward = engine.backward
    engine.backward = lambda loss, **kw: (backwards.append(float(loss)), real_backward(loss, **kw))[1]
    cfg = GRPOConfig(group_size=2, prompts_per_rank=2, sampling_steps=2, timestep_fraction=1.0, train_batch=2)
    g = torch.Generator().manual_seed(rank)
    cond = Conditioning(torch.randn(2, 4, 64, generator=g), torch.ones(2, 4, dtype=torch.bool), fps=25.0)
    traj = rollout(engine, cond, (8, 3, 2, 2), (8, 9), cfg, g)
    rows = torch.arange(4) if rank == 0 else torch.zeros(0, dtype=torch.long)
    before = sum(float(p.detach().double().sum()) for p in engine.module.parameters())
    update(engine, traj, cond.repeat(2), torch.tensor([1.0, 0.5, -0.3, 2.0], dtype=torch.float64), rows, cfg, g)
    after = sum(float(p.detach().double().sum()) for p in engine.module.parameters())
    out = [None, None]
    dist.all_gather_object(out, {"backwards": backwards, "checksum": after, "changed": after != before})
    return out


def two_rank_runs(storage: str) -> dict:
    """The recipe at lr 1e-2 and at lr 0, then an update with nothing to train on rank 1, one
    after the other in the same two-rank world (a world costs a DeepSpeed start-up)."""
    import torch

    from pipelines.config_loader import load_config
    from reward.grpo.align import AlignConfig, Aligner

    torch.set_num_threads(1)
    out = {}
    # lr 0 never moves the model: the control's first evaluation after step 0 says what more would
    for name, lr, steps in (("learning", 1e-2, STEPS), ("control", 0.0, EVERY)):
        cfg = load_config(AlignConfig, None, [*RECIPE, f"steps={steps}", f"engine.lr={lr}", f"storage={storage}/{name}"])
        recorder = Recorder()
        Aligner(cfg, tracker=recorder).fit()
        out[name] = recorder.metrics
    # A run started from the learning run's DeepSpeed checkpoints (init=.../checkpoints).
    cfg = load_config(AlignConfig, None, [*RECIPE, f"storage={storage}/continued", f"init={storage}/learning/checkpoints"])
    out["continued"] = Aligner(cfg).evaluate()
    out["uneven"] = one_rank_has_nothing_to_train()
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return on_two_ranks(two_rank_runs, str(tmp_path_factory.mktemp("align")))


@pytest.mark.timeout(900)
def test_eval_reward_rises_while_the_lr0_control_stays_flat(runs):
    learning, control = runs["learning"], runs["control"]
    evals = {"learning": [learning[s]["eval_reward_mean"] for s in (0, EVERY, STEPS)],
             "control": [control[s]["eval_reward_mean"] for s in (0, EVERY)]}
    print("eval_reward_mean at steps 0, 10, 20 (control: 0, 10):", evals)

    assert evals["learning"][0] == evals["control"][0]  # the same start
    assert max(evals["control"]) - min(evals["control"]) < 1e-9, evals["control"]
    assert evals["learning"][-1] - evals["learning"][0] > 0.03, evals["learning"]
    assert evals["learning"][1] > evals["learning"][0]

    for run in (learning, control):  # on-policy before the first update: ratio exactly 1
        assert run[1]["ratio_min"] == pytest.approx(1, abs=1e-9) and run[1]["ratio_max"] == pytest.approx(1, abs=1e-9)
        assert run[1]["clip_frac"] == 0
        assert all(k in run[1] for k in ("reward_mean", "reward.brightness.mean", "reward.darkness.std",
                                         "advantage_std", "kl", "zero_std_frac", "rollout_s", "reward_s",
                                         "update_s", "lr", "grad_norm"))
    held_out = [learning[s]["eval_reward.darkness.mean"] for s in (0, STEPS)]
    assert held_out[1] < held_out[0] - 0.02
    assert learning[STEPS]["hacking_alert"] == 1.0
    assert control[EVERY]["hacking_alert"] == 0.0


@pytest.mark.timeout(900)
def test_a_run_started_from_the_aligned_checkpoints_evaluates_as_the_run_ended(runs):
    assert runs["continued"]["eval_reward_mean"] == pytest.approx(runs["learning"][STEPS]["eval_reward_mean"],
                                                                  abs=1e-6)


@pytest.mark.timeout(900)
def test_a_rank_with_every_group_skipped_keeps_the_collectives_in_step(runs):
    busy, idle = runs["uneven"]
    assert len(busy["backwards"]) == len(idle["backwards"]) == 4  # 2 micro-batches x 2 trained steps
    assert all(loss == 0 for loss in idle["backwards"]) and any(loss != 0 for loss in busy["backwards"])
    assert busy["changed"] and busy["checksum"] == idle["checksum"]  # one optimizer step, the same on both
