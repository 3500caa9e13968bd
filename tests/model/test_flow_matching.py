"""Flow-matching objective: conventions, timestep sampling, dropout, and a real overfit."""

from __future__ import annotations

import pytest
import torch
from model_testkit import Oracle, make_cond, make_latents

from model.dit import DualDiT
from model.flow_matching import (
    FlowMatchingConfig,
    flow_matching_loss,
    interpolate,
    sample_timesteps,
    shift_timesteps,
)
from model.presets import get_preset
from model.sampling import sample_ode

NO_DROPOUT = dict(drop_text=0.0, drop_references=0.0, drop_audio_for_video=0.0,
                  drop_video_for_audio=0.0)


def test_path_endpoints_and_velocity_sign():
    x0, noise = torch.randn(3, 4), torch.randn(3, 4)
    assert torch.equal(interpolate(x0, noise, torch.zeros(3)), x0)
    assert torch.equal(interpolate(x0, noise, torch.ones(3)), noise)
    video, audio = make_latents()
    cfg = FlowMatchingConfig(**NO_DROPOUT)
    loss = flow_matching_loss(Oracle(video, audio), video, audio, make_cond(), cfg,
                              torch.Generator().manual_seed(0))
    assert loss.video < 1e-8 and loss.audio < 1e-8  # the oracle's velocity is the target


def test_timestep_shift_and_logit_normal_sampling():
    t = torch.linspace(0, 1, 11)
    assert torch.equal(shift_timesteps(t, 1.0), t)
    shifted = shift_timesteps(t, 3.0)
    assert shifted[0] == 0 and shifted[-1] == 1 and (shifted[1:-1] > t[1:-1]).all()
    assert shift_timesteps(torch.tensor([0.5]), 3.0).item() == pytest.approx(0.75)
    g = torch.Generator().manual_seed(0)
    plain = sample_timesteps(20000, FlowMatchingConfig(), 100, g)
    assert plain.median().item() == pytest.approx(0.5, abs=0.02) and 0 < plain.min() < plain.max() < 1
    long_seq = sample_timesteps(20000, FlowMatchingConfig(shift_reference_tokens=256), 256 * 9, g)
    assert long_seq.median().item() == pytest.approx(0.75, abs=0.02)  # alpha = sqrt(9) = 3


def test_shared_or_independent_timesteps_and_weights():
    video, audio = make_latents()
    model = Oracle(video * 0, audio * 0)  # wrong on purpose: loss = |eps|^2-ish, > 0
    g = torch.Generator().manual_seed(0)
    shared = flow_matching_loss(model, video, audio, make_cond(), FlowMatchingConfig(**NO_DROPOUT), g)
    assert torch.equal(shared.t_video, shared.t_audio)
    cfg = FlowMatchingConfig(independent_timesteps=True, video_weight=0.25, audio_weight=2.0, **NO_DROPOUT)
    loss = flow_matching_loss(model, video, audio, make_cond(), cfg, g)
    assert not torch.equal(loss.t_video, loss.t_audio)
    torch.testing.assert_close(loss.total, 0.25 * loss.video + 2.0 * loss.audio)


def test_condition_dropout_reaches_the_model():
    video, audio = make_latents()
    model = Oracle(video, audio)
    cfg = FlowMatchingConfig(drop_text=1.0, drop_references=0.0, drop_audio_for_video=1.0,
                             drop_video_for_audio=0.0)
    flow_matching_loss(model, video, audio, make_cond(), cfg, torch.Generator().manual_seed(0))
    seen = model.calls[-1]
    assert not seen["text_mask"].any()
    assert not seen["keep_audio_for_video"].any() and seen["keep_video_for_audio"].all()
    flow_matching_loss(model, video, audio, make_cond(), FlowMatchingConfig(**NO_DROPOUT))
    assert model.calls[-1]["text_mask"].all()


@pytest.mark.slow
def test_debug_preset_overfits_one_batch_and_the_ode_reproduces_it():
    """Two clips with different prompts; each step sees 4 noise draws per clip (8 cost a third
    more for the same fit: loss ratio 0.017 vs 0.030, ODE error 0.07 vs 0.15, limits 0.1 and 0.25)."""
    torch.manual_seed(0)
    model = DualDiT(get_preset("debug"))
    video, audio = make_latents(seed=1)
    cond = make_cond(seed=1)
    repeats = 4
    batch_v, batch_a = video.repeat(repeats, 1, 1, 1, 1), audio.repeat(repeats, 1, 1)
    batch_cond = cond.replace(text_emb=cond.text_emb.repeat(repeats, 1, 1),
                              text_mask=cond.text_mask.repeat(repeats, 1))
    cfg = FlowMatchingConfig(**NO_DROPOUT)
    steps = 300
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=5e-3, total_steps=steps, pct_start=0.1)

    def held_out_loss():  # fixed timesteps and noise, so before/after are comparable
        g = torch.Generator().manual_seed(99)
        with torch.no_grad():
            return sum(flow_matching_loss(model, batch_v, batch_a, batch_cond, cfg, g).total.item()
                       for _ in range(4)) / 4

    before = held_out_loss()
    g = torch.Generator().manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls: threads only add overhead on a shared CPU
    try:
        for _ in range(steps):
            loss = flow_matching_loss(model, batch_v, batch_a, batch_cond, cfg, g).total
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
    finally:
        torch.set_num_threads(threads)
    after = held_out_loss()
    assert after <= 0.1 * before, (before, after)

    g = torch.Generator().manual_seed(5)
    gen_v, gen_a = sample_ode(model.eval(), torch.randn(video.shape, generator=g),
                              torch.randn(audio.shape, generator=g), cond, steps=30)
    assert (gen_v - video).norm() / video.norm() < 0.25
    assert (gen_a - audio).norm() / audio.norm() < 0.25
    # Each prompt brings back its own clip, not the other one.
    assert (gen_v[0] - video[0]).norm() < (gen_v[0] - video[1]).norm()
