"""DualDiT: shapes, presets, fusion behaviour, checkpoints and determinism."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from model_testkit import AUDIO_SHAPE, VIDEO_SHAPE, make_cond, make_latents, open_gates

from model import checkpoint
from model.dit import DualDiT, DualDiTConfig, patchify, unpatchify
from model.presets import PRESETS, get_preset


def run(model, video, audio, cond, t=0.5):
    tt = torch.full((video.shape[0],), t)
    return model(video, audio, tt, tt, **cond.kwargs())


def test_forward_returns_velocities_shaped_like_the_latents(debug_model):
    video, audio = make_latents()
    v, a = run(debug_model, video, audio, make_cond())
    assert v.shape == VIDEO_SHAPE and a.shape == AUDIO_SHAPE
    assert torch.isfinite(v).all() and torch.isfinite(a).all()


def test_modalities_accept_different_timesteps_and_use_them(live_model):
    video, audio = make_latents()
    cond = make_cond()
    same = live_model(video, audio, torch.full((2,), 0.5), torch.full((2,), 0.5), **cond.kwargs())
    other = live_model(video, audio, torch.full((2,), 0.5), torch.full((2,), 0.9), **cond.kwargs())
    assert not torch.allclose(same[1], other[1])


def test_patchify_round_trip_and_token_layout():
    x = torch.randn(2, 3, 4, 6, 8)
    tokens, grid = patchify(x, (2, 2, 2))
    assert tokens.shape == (2, 2 * 3 * 4, 2 * 2 * 2 * 3) and grid == [2, 3, 4]
    assert torch.equal(unpatchify(tokens, grid, (2, 2, 2), 3), x)
    first = tokens[0, 0].view(2, 2, 2, 3).permute(3, 0, 1, 2)
    assert torch.equal(first, x[0, :, :2, :2, :2])


@pytest.mark.parametrize(("name", "low", "high"), [
    ("debug", 1e6, 5e6), ("small", 2.7e8, 3.5e8), ("1b", 0.9e9, 1.15e9), ("14b", 13e9, 15e9),
])
def test_preset_parameter_counts(name, low, high):
    with torch.device("meta"):
        model = DualDiT(get_preset(name))
    assert low <= model.num_params() <= high
    cfg = get_preset(name)
    assert isinstance(model.blocks, torch.nn.ModuleList) and len(model.blocks) == cfg.depth


def test_14b_is_asymmetric_and_presets_are_independent_copies():
    cfg = get_preset("14b")
    assert cfg.video.dim > 2 * cfg.audio.dim
    cfg.depth = 1
    assert get_preset("14b").depth == PRESETS["14b"].depth != 1
    with pytest.raises(ValueError, match="choose one of"):
        get_preset("huge")


def test_fusion_blocks_are_configurable():
    cfg = dataclasses.replace(get_preset("debug"), fusion_blocks=(1, 3))
    model = DualDiT(cfg)
    assert [b.fusion is not None for b in model.blocks] == [False, True, False, True]
    with pytest.raises(ValueError, match="outside"):
        dataclasses.replace(get_preset("debug"), fusion_blocks=(7,))


def test_fresh_fusion_is_neutral_then_couples_the_branches(debug_model):
    """Zero gates: the audio prediction ignores the video; opened gates: it does not."""
    model = open_gates(debug_model)
    for block in model.blocks:
        block.fusion.gate_video.data.zero_()
        block.fusion.gate_audio.data.zero_()
    video, audio = make_latents()
    cond = make_cond()
    a1 = run(model, video, audio, cond)[1]
    a2 = run(model, video + 1.0, audio, cond)[1]
    torch.testing.assert_close(a1, a2, rtol=0, atol=0)
    open_gates(model, seed=1)
    assert (run(model, video, audio, cond)[1] - run(model, video + 1.0, audio, cond)[1]).abs().max() > 1e-3


def _video_branch_grad(model, fusion_on: bool) -> float:
    video, audio = make_latents()
    _, a = run(model, video, audio, make_cond())
    a.pow(2).mean().backward()  # an audio-only loss
    grads = [p.grad for b in model.blocks for p in b.video.parameters()]
    assert fusion_on or all(g is None or not g.any() for g in grads)
    return sum(float(g.abs().sum()) for g in grads if g is not None)


def test_audio_loss_reaches_video_branch_only_through_fusion():
    torch.manual_seed(0)
    fused = open_gates(DualDiT(get_preset("debug")))
    assert _video_branch_grad(fused, fusion_on=True) > 0
    torch.manual_seed(0)
    unfused = open_gates(DualDiT(dataclasses.replace(get_preset("debug"), fusion_blocks=())))
    assert _video_branch_grad(unfused, fusion_on=False) == 0


def test_cross_modal_dropout_hides_the_other_modality_per_sample(live_model):
    video, audio = make_latents()
    cond = make_cond().replace(keep_video_for_audio=torch.tensor([False, True]))
    a1 = run(live_model, video, audio, cond)[1]
    a2 = run(live_model, video * 2, audio, cond)[1]
    torch.testing.assert_close(a1[0], a2[0], rtol=0, atol=1e-6)  # sample 0 cannot see video
    assert (a1[1] - a2[1]).abs().max() > 1e-3


def test_safetensors_round_trip_restores_config_and_outputs(live_model, tmp_path):
    path = checkpoint.save(live_model, tmp_path / "dit.safetensors")
    loaded = checkpoint.load(DualDiT, DualDiTConfig, path).eval()
    assert loaded.cfg == live_model.cfg
    video, audio = make_latents()
    for x, y in zip(run(live_model, video, audio, make_cond()), run(loaded, video, audio, make_cond()),
                    strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    with pytest.raises(RuntimeError):  # wrong architecture must not load silently
        checkpoint.load_weights(DualDiT(dataclasses.replace(get_preset("debug"), depth=2)), path)


def test_seeded_construction_and_forward_are_deterministic():
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        model = open_gates(DualDiT(get_preset("debug")), seed=4)
        outs.append(run(model, *make_latents(seed=7), make_cond(seed=7)))
    for x, y in zip(*outs, strict=True):
        assert torch.equal(x, y)


class Checkpointed(torch.nn.Module):
    """What training/ does: wrap each block from outside, without touching model code."""

    def __init__(self, block):
        super().__init__()
        self.block = block

    def forward(self, *args):
        return torch.utils.checkpoint.checkpoint(self.block, *args, use_reentrant=False)


def test_blocks_can_be_activation_checkpointed_from_outside():
    grads = []
    for wrap in (False, True):
        torch.manual_seed(0)
        model = open_gates(DualDiT(get_preset("debug")))
        if wrap:
            for i, block in enumerate(model.blocks):
                model.blocks[i] = Checkpointed(block)
        v, a = run(model, *make_latents(), make_cond())
        (v.pow(2).mean() + a.pow(2).mean()).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[0], grads[1])
