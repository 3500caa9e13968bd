"""DanceGRPO's step, piece by piece, on the debug DiT (no DeepSpeed: a plain-optimizer engine)."""

from __future__ import annotations

import copy

import pytest
import torch

from model.conditioning import Conditioning
from model.dit import DualDiT
from model.presets import get_preset
from reward.grpo.grpo_step import (
    GRPOConfig,
    Head,
    branch_of,
    group_advantages,
    policy_terms,
    restrict_to_branch,
    rollout,
    rows_to_train,
    train_steps_per_sample,
    update,
)

VIDEO, AUDIO = (8, 3, 2, 2), (8, 9)  # debug latents of 9 frames at 16x16 px and 0.36 s of audio


class PlainEngine:
    """The engine interface of reward.grpo.grpo_step.update over a plain module and SGD."""

    def __init__(self, model, lr=1e-2):
        self.module, self.opt, self.steps = model, torch.optim.SGD(model.parameters(), lr=lr), 0

    def __call__(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    def parameters(self):
        return self.module.parameters()

    def backward(self, loss, scale_wrt_gas=True):
        loss.backward()

    def set_gradient_accumulation_boundary(self, is_boundary):
        pass

    def step(self):
        self.opt.step()
        self.opt.zero_grad()
        self.steps += 1


def live_model(seed=0) -> DualDiT:
    """The debug DiT with its zero-initialised heads and gates opened, as after training."""
    torch.manual_seed(seed)
    model = DualDiT(get_preset("debug"))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def prompts(n=2) -> Conditioning:
    g = torch.Generator().manual_seed(0)
    return Conditioning(torch.randn(n, 5, 64, generator=g), torch.ones(n, 5, dtype=torch.bool), fps=25.0)


def test_ratio_is_exactly_one_before_the_first_update():
    """Rollout batch = training batch: the recomputed log-probs are the rollout's, so the
    first update starts on-policy (ratio 1, nothing clipped) at every trained step."""
    model, cfg = live_model(), GRPOConfig(group_size=3, prompts_per_rank=2, sampling_steps=3, timestep_fraction=1.0)
    traj = rollout(model, prompts(), VIDEO, AUDIO, cfg, torch.Generator().manual_seed(0))
    n = cfg.samples_per_rank
    for step in range(cfg.sampling_steps):
        terms = policy_terms(model, traj, torch.arange(n), torch.full((n,), step), prompts().repeat(3),
                             torch.randn(n, dtype=torch.float64), cfg)
        torch.testing.assert_close(terms.ratio, torch.ones(n, dtype=torch.float64), rtol=0, atol=1e-12)
    stats = update(PlainEngine(model), traj, prompts().repeat(3), torch.randn(n, dtype=torch.float64),
                   torch.arange(n), cfg, torch.Generator().manual_seed(1))
    assert stats["ratio_min"] == pytest.approx(1, abs=1e-12) and stats["ratio_max"] == pytest.approx(1, abs=1e-12)
    assert stats["clipped"] == 0 and stats["count"] == n * cfg.sampling_steps


def test_second_update_of_a_rollout_moves_the_ratio_and_the_clip_catches_it():
    model = live_model()
    cfg = GRPOConfig(group_size=2, prompts_per_rank=2, sampling_steps=3, timestep_fraction=1.0,
                     updates_per_rollout=2, clip_range=1e-6, train_batch=2)
    traj = rollout(model, prompts(), VIDEO, AUDIO, cfg, torch.Generator().manual_seed(0))
    engine = PlainEngine(model, lr=0.05)
    stats = update(engine, traj, prompts().repeat(2), torch.tensor([1.0, -1.0, 1.0, -1.0], dtype=torch.float64),
                   torch.arange(4), cfg, torch.Generator().manual_seed(1))
    assert engine.steps == 2  # one optimizer step per half of the rollout
    assert stats["ratio_max"] - stats["ratio_min"] > 1e-6 and stats["clipped"] > 0


def test_advantages_are_normalised_per_group_and_head_clamped_and_summed_by_coefficient():
    cfg = GRPOConfig(group_size=4, prompts_per_rank=3, adv_clip_max=1.5)
    rewards = {
        "sharp": torch.tensor([1.0, 2.0, 3.0, 4.0, 10.0, 10.0, 10.0, 10.0, 0.0, 0.0, 0.0, 9.0]),
        "sync": torch.tensor([0.5, 0.5, 0.5, 0.5, 1.0, 1.0, 1.0, 1.0, 4.0, 3.0, 2.0, 1.0]),
        "held": torch.tensor([5.0, -5.0, 5.0, -5.0, 1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0]),
    }
    heads = [Head("sharp", 1.0), Head("sync", 0.5), Head("held", 3.0, optimised=False)]
    adv = group_advantages(rewards, heads, cfg)
    first = (torch.tensor([1.0, 2, 3, 4]) - 2.5) / torch.tensor([1.0, 2, 3, 4]).std(unbiased=False)
    torch.testing.assert_close(adv.per_head["sharp"][:4], first.double())
    assert adv.per_head["sync"][:4].eq(0).all()  # no spread in that head: no signal from it
    # The outlier 9 would be (9 - 2.25) / 3.9 = 1.73 standard deviations: clamped to 1.5.
    assert adv.per_head["sharp"][11].item() == pytest.approx(1.5) and adv.per_head["sharp"][8:11].lt(0).all()
    torch.testing.assert_close(adv.combined, adv.per_head["sharp"] + 0.5 * adv.per_head["sync"])
    assert "held" not in adv.per_head  # held-out heads never reach the advantage
    assert adv.zero_spread.tolist() == [False, True, False]  # group 2: neither optimised head varies
    assert rows_to_train(adv, cfg).tolist() == [0, 1, 2, 3, 8, 9, 10, 11]


def test_global_std_divides_by_the_spread_of_the_whole_step():
    cfg = GRPOConfig(group_size=2, prompts_per_rank=2, global_std=True)
    r = torch.tensor([0.0, 1.0, 10.0, 30.0])
    adv = group_advantages({"h": r}, [Head("h")], cfg, global_rewards={"h": torch.cat([r, r])})
    torch.testing.assert_close(adv.combined, torch.tensor([-0.5, 0.5, -10.0, 10.0], dtype=torch.float64)
                               / r.std(unbiased=False).double())


def test_best_of_n_trains_only_the_best_and_worst_of_each_group():
    cfg = GRPOConfig(group_size=6, prompts_per_rank=1, best_of_n=2)
    adv = group_advantages({"h": torch.tensor([3.0, 9.0, 1.0, 4.0, 5.0, 2.0])}, [Head("h")], cfg)
    assert rows_to_train(adv, cfg).tolist() == [1, 2]


@pytest.mark.parametrize("bad, match", [({"group_size": 1}, "group_size must be >= 2"),
                                        ({"best_of_n": 3}, "best_of_n"), ({"branches": "text"}, "branches"),
                                        ({"timestep_fraction": 0}, "timestep_fraction"),
                                        ({"sampling_steps": 0}, "sampling_steps must be >= 1"),
                                        ({"prompts_per_rank": 0}, "prompts_per_rank must be >= 1")])
def test_config_refuses_what_cannot_train(bad, match):
    with pytest.raises(ValueError, match=match):
        GRPOConfig(**bad)


def test_each_sample_trains_its_own_random_subset_of_steps():
    cfg = GRPOConfig(sampling_steps=10, timestep_fraction=0.3)
    steps = train_steps_per_sample(5, cfg, torch.Generator().manual_seed(0))
    assert steps.shape == (5, 3) and all(len(set(row.tolist())) == 3 for row in steps)
    assert len({tuple(row.tolist()) for row in steps}) > 1


def test_audio_only_training_freezes_the_picture_branch_and_leaves_its_log_prob_out():
    model = live_model()
    trainable = restrict_to_branch(model, "audio")
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names and all(branch_of(n) == "audio" for n in names)
    assert "blocks.0.fusion.video_to_audio.q.weight" in names or any("video_to_audio" in n for n in names)
    assert not any(n.startswith("video_io") or ".video." in n or "audio_to_video" in n for n in names)
    assert trainable == sum(p.numel() for n, p in model.named_parameters() if n in names)
    cfg = GRPOConfig(group_size=2, prompts_per_rank=1, sampling_steps=2, branches="audio")
    assert cfg.log_prob_weights() == (0.0, 1.0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    traj = rollout(model, prompts(1), VIDEO, AUDIO, cfg, torch.Generator().manual_seed(0))
    update(PlainEngine(model), traj, prompts(1).repeat(2), torch.tensor([1.0, -1.0], dtype=torch.float64),
           torch.arange(2), cfg, torch.Generator().manual_seed(0))
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= names


def test_kl_to_the_frozen_reference_is_zero_at_the_start_and_grows_as_the_policy_moves():
    model = live_model()
    reference = copy.deepcopy(model).requires_grad_(False)
    cfg = GRPOConfig(group_size=2, prompts_per_rank=1, sampling_steps=3, kl_beta=0.5)
    traj = rollout(model, prompts(1), VIDEO, AUDIO, cfg, torch.Generator().manual_seed(0))
    args = (traj, torch.arange(2), torch.tensor([1, 2]), prompts(1).repeat(2), torch.zeros(2, dtype=torch.float64), cfg)
    assert policy_terms(model, *args, reference=reference).kl.abs().max() < 1e-12
    with torch.no_grad():
        model.video_io.proj_out.bias.add_(0.01)
    terms = policy_terms(model, *args, reference=reference)
    # Only the video mean moved, by 0.01 x (1 + drift (1 - t)) dt per element: KL = w ||.||^2 / (2 sigma^2) > 0.
    assert (terms.kl > 0).all()
    torch.testing.assert_close(terms.loss, 0.5 * terms.kl.to(terms.loss))  # zero advantage: the loss is beta KL
