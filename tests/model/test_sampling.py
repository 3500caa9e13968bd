"""Samplers: ODE exactness on straight paths, SDE log-probs, guidance, editing, extension."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from model_testkit import Oracle, make_cond, make_latents

from model.sampling import (
    Guidance,
    KnownLatents,
    gaussian_log_prob,
    group_noise,
    sample_ode,
    sample_sde,
    sde_sigma,
    sde_step,
    sdedit,
    timestep_schedule,
    trajectory_log_prob,
    velocity,
)


def noise(seed=9):
    return make_latents(seed=seed)


def test_schedule_runs_from_start_to_zero_and_shift_spends_steps_near_noise():
    ts = timestep_schedule(10)
    assert ts[0] == 1 and ts[-1] == 0 and (ts.diff() < 0).all() and len(ts) == 11
    shifted = timestep_schedule(10, shift=3.0)
    assert shifted[0] == 1 and (shifted[1:-1] > ts[1:-1]).all()
    assert timestep_schedule(5, shift=3.0, t_start=0.4)[0].item() == pytest.approx(0.4)


def test_euler_is_exact_on_the_straight_path_of_a_point_mass():
    video, audio = make_latents()
    out_v, out_a = sample_ode(Oracle(video, audio), *noise(), make_cond(), steps=4, shift=2.0)
    torch.testing.assert_close(out_v, video)
    torch.testing.assert_close(out_a, audio)


class Constant(torch.nn.Module):
    """Velocity 1 with the prompt, 0 without: guided output = the guidance scale."""

    def forward(self, x_v, x_a, t_v, t_a, text_mask, **_):
        c = text_mask.any(1).float()
        return (c.view(-1, 1, 1, 1, 1).expand_as(x_v), c.view(-1, 1, 1).expand_as(x_a))


def test_guidance_scales_are_per_modality():
    x_v, x_a = noise()
    t = torch.full((2,), 0.5)
    v, a = velocity(Constant(), x_v, x_a, t, t, make_cond(), Guidance(video_scale=5.0, audio_scale=2.0))
    assert (v == 5.0).all() and (a == 2.0).all()
    v, a = velocity(Constant(), x_v, x_a, t, t, make_cond())
    assert (v == 1.0).all() and (a == 1.0).all()


def test_sde_step_log_prob_is_the_gaussian_transition_density(live_model):
    x_v, x_a = noise()
    cond = make_cond()
    t, t_next, eta = 0.6, 0.45, 0.8
    g = torch.Generator().manual_seed(1)
    nv, na, lv, la = sde_step(live_model, x_v, x_a, t, t_next, cond, eta, generator=g)
    with torch.no_grad():
        vel_v, vel_a = live_model(x_v, x_a, torch.full((2,), t), torch.full((2,), t), **cond.kwargs())
    sigma = eta * math.sqrt(t / (1 - t))
    dt = t_next - t
    std = sigma * math.sqrt(-dt)
    for x, v, nxt, lp in ((x_v, vel_v, nv, lv), (x_a, vel_a, na, la)):
        # Flow-GRPO's mean: x + [v + sigma^2/(2t) (x + (1 - t) v)] dt
        mean = x + (v + sigma**2 / (2 * t) * (x + (1 - t) * v)) * dt
        # The density per latent element, averaged over the sample's elements (not summed).
        expected = torch.distributions.Normal(mean.double(), std).log_prob(nxt.double()).flatten(1).mean(1)
        torch.testing.assert_close(lp, expected, rtol=1e-6, atol=1e-6)
        residual = (nxt - mean) / std  # the sampled noise really has that std
        assert residual.std().item() == pytest.approx(1.0, abs=0.1)
    assert sde_sigma(1.0, 0.9, 0.5) == pytest.approx(0.5 * math.sqrt(1 / 0.1))  # t = 1 is finite


def test_stored_trajectory_rescored_gives_ratio_exactly_one(live_model):
    cond = make_cond()
    guidance = Guidance(video_scale=3.0, audio_scale=1.5)
    traj = sample_sde(live_model, cond, (2, 8, 5, 4, 4), (2, 8, 17), steps=4, eta=0.7,
                      guidance=guidance, generator=torch.Generator().manual_seed(0))
    assert traj.log_prob.shape == (2, 4) and len(traj.video) == 5
    for step in range(4):
        lv, la = trajectory_log_prob(live_model.train(), traj, step, cond, eta=0.7, guidance=guidance)
        assert torch.equal(torch.exp(lv - traj.log_prob_video[:, step]), torch.ones(2, dtype=lv.dtype))
        assert torch.equal(la, traj.log_prob_audio[:, step])
    lv.sum().backward()  # the rescoring is differentiable (the GRPO policy gradient)
    assert live_model.video_io.patch_embed.weight.grad is not None


def test_per_sample_steps_score_like_the_same_steps_one_at_a_time(live_model):
    """GRPO trains a random subset of each trajectory's steps: row i at its own step."""
    cond = make_cond()
    traj = sample_sde(live_model, cond, (2, 8, 5, 4, 4), (2, 8, 17), steps=4, eta=0.7,
                      generator=torch.Generator().manual_seed(0))
    steps = torch.tensor([3, 0])
    lv, la = trajectory_log_prob(live_model, traj, steps, cond, eta=0.7)
    for row, step in enumerate(steps.tolist()):
        torch.testing.assert_close(lv[row], traj.log_prob_video[row, step], rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(la[row], traj.log_prob_audio[row, step], rtol=1e-9, atol=1e-9)
    x_v, *_ = traj.at(torch.tensor([2]), rows=torch.tensor([1]))
    assert torch.equal(x_v[0], traj.video[2][1])


def _log_ratio_after_a_small_update(model, video_shape, audio_shape) -> float:
    """|log pi_new - log pi_old| of one stored step after nudging every weight by 1e-4."""
    cond = make_cond()
    traj = sample_sde(model, cond, video_shape, audio_shape, steps=2, eta=0.7,
                      generator=torch.Generator().manual_seed(0))
    nudged = copy.deepcopy(model)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in nudged.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 1e-4)
    lv, _ = trajectory_log_prob(nudged, traj, 0, cond, eta=0.7)
    return (lv - traj.log_prob_video[:, 0]).abs().mean().item()


def test_log_prob_is_a_per_element_mean_so_the_ratio_does_not_grow_with_latent_size(live_model):
    """With a sum, a 16x larger latent would move the log-ratio ~16x as far for the same
    update, and a 1e-4 PPO clip would saturate on any real clip size."""
    small = _log_ratio_after_a_small_update(live_model, (2, 8, 5, 4, 4), (2, 8, 17))
    large = _log_ratio_after_a_small_update(live_model, (2, 8, 5, 16, 16), (2, 8, 17))
    assert small > 0 and 0 < large < 3 * small, (small, large)
    x = torch.zeros(1, 3, 4)
    assert gaussian_log_prob(x, x, 1.0).item() == pytest.approx(-0.5 * math.log(2 * math.pi))


def test_group_noise_is_shared_within_groups_only(live_model):
    shared = group_noise((6, 3), torch.Generator().manual_seed(0), group_size=3)
    assert torch.equal(shared[0], shared[2]) and not torch.equal(shared[0], shared[3])
    with pytest.raises(ValueError, match="multiple"):
        group_noise((5, 3), None, group_size=2)
    traj = sample_sde(live_model, make_cond().repeat(2), (4, 8, 5, 4, 4), (4, 8, 17), steps=3,
                      generator=torch.Generator().manual_seed(0), group_size=2)
    assert torch.equal(traj.video[0][0], traj.video[0][1]) and torch.equal(traj.audio[0][2], traj.audio[0][3])
    assert not torch.equal(traj.video[-1][0], traj.video[-1][1])  # the SDE explores


def test_sde_with_the_exact_velocity_ends_near_the_data():
    video, audio = make_latents()
    traj = sample_sde(Oracle(video, audio), make_cond(), video.shape, audio.shape, steps=40, eta=0.5,
                      generator=torch.Generator().manual_seed(0))
    assert (traj.video[-1] - video).norm() / video.norm() < 0.05


def test_seeded_sampling_is_deterministic(live_model):
    runs = [sample_sde(live_model, make_cond(), (2, 8, 5, 4, 4), (2, 8, 17), steps=2,
                       generator=torch.Generator().manual_seed(3)) for _ in range(2)]
    assert torch.equal(runs[0].video[-1], runs[1].video[-1]) and torch.equal(runs[0].log_prob, runs[1].log_prob)


def test_sdedit_starts_from_the_noised_input_and_follows_the_new_prompt():
    source_v, source_a = make_latents(seed=1)
    target_v, target_a = make_latents(seed=2)
    model = Oracle(target_v, target_a)  # "the new prompt" = the target clip
    out_v, out_a = sdedit(model, source_v, source_a, make_cond(), strength=0.5, steps=10,
                          generator=torch.Generator().manual_seed(0))
    first = model.calls[0]
    assert first["t_video"][0].item() == pytest.approx(0.5) and len(model.calls) == 5
    g = torch.Generator().manual_seed(0)
    expected_start = 0.5 * source_v + 0.5 * torch.randn(source_v.shape, generator=g)
    torch.testing.assert_close(first["x_video"], expected_start)
    torch.testing.assert_close(out_v, target_v)
    torch.testing.assert_close(out_a, target_a)


def test_extension_keeps_the_prefix_and_generates_the_rest():
    video, audio = make_latents()
    model = Oracle(video, audio)
    prefix = torch.randn(2, 8, 2, 4, 4)  # deliberately not the oracle's clip
    known = KnownLatents(video=prefix, audio=audio[:, :, :4])
    out_v, out_a = sample_ode(model, *noise(), make_cond(), steps=8, known=known)
    assert torch.equal(out_v[:, :, :2], prefix) and torch.equal(out_a[:, :, :4], audio[:, :, :4])
    torch.testing.assert_close(out_v[:, :, 2:], video[:, :, 2:])
    # Mid-way the prefix is noised to the current level, not left clean.
    assert not torch.equal(model.calls[3]["x_video"][:, :, :2], prefix)


def test_audio_for_a_given_video_feeds_the_video_clean_at_t0():
    video, audio = make_latents()
    model = Oracle(video, audio)
    out_v, out_a = sample_ode(model, *noise(), make_cond(), steps=4, known=KnownLatents(video=video))
    assert all((c["t_video"] == 0).all() and torch.equal(c["x_video"], video) for c in model.calls)
    assert torch.equal(out_v, video)
    torch.testing.assert_close(out_a, audio)
