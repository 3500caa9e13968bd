"""Video VAE: shapes, causality, exact tiling, learning on a real clip, weights on disk."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from model_testkit import real_clip_frames

from model import checkpoint
from model.video_vae import VIDEO_VAE_PRESETS, VideoVAE, VideoVAEConfig


@pytest.fixture
def vae():
    torch.manual_seed(0)
    return VideoVAE(VIDEO_VAE_PRESETS["debug"]).eval()


def test_shapes_8x_space_4x_time(vae):
    x = torch.randn(2, 3, 17, 32, 48)
    with torch.no_grad():
        post = vae.encode(x)
        assert post.mean.shape == (2, 8, 5, 4, 6) and post.sample().shape == post.mean.shape
        assert vae.decode(post.mean).shape == x.shape
        assert vae.encode(x[:, :, :1]).mean.shape == (2, 8, 1, 4, 6)  # an image is 1 frame
    with pytest.raises(ValueError, match="1 \\+ 4k"):
        vae.encode(x[:, :, :8])


def test_encoder_is_causal(vae):
    x = torch.randn(1, 3, 17, 32, 32)
    future_changed = x.clone()
    future_changed[:, :, 9:] = torch.randn(1, 3, 8, 32, 32)  # frames after latent 2's span
    with torch.no_grad():
        a, b = vae.encode(x, tiled=False).mean, vae.encode(future_changed, tiled=False).mean
        assert torch.equal(a[:, :, :3], b[:, :, :3])
        assert (a[:, :, 3:] - b[:, :, 3:]).abs().max() > 1e-3
        # and the decoder: pixels of latent frames 0..2 do not see latents 3..4
        za, zb = a.clone(), a.clone()
        zb[:, :, 3:] += 1.0
        assert torch.equal(vae.decode(za, tiled=False)[:, :, :9], vae.decode(zb, tiled=False)[:, :, :9])


def test_temporal_tiling_matches_one_piece(vae):
    x = torch.randn(1, 3, 25, 32, 32)  # frame 0 + three 8-frame tiles
    with torch.no_grad():
        full, tiled = vae.encode(x, tiled=False).mean, vae.encode(x, tiled=True).mean
        torch.testing.assert_close(tiled, full, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(vae.decode(full, tiled=True), vae.decode(full, tiled=False),
                                   rtol=1e-4, atol=1e-5)


def test_debug_vae_learns_to_reconstruct_a_real_clip():
    torch.manual_seed(0)
    vae = VideoVAE(VIDEO_VAE_PRESETS["debug"])
    clip = real_clip_frames(9, 32)

    def recon_error():
        with torch.no_grad():
            return (vae.decode(vae.encode(clip).mode()) - clip).abs().mean().item()

    before = recon_error()
    # At lr 5e-3 training is at the edge of stable: on one CPU it passed, on another (AVX-512)
    # three seeds stalled at the flat grey's error (0.30) for 100 steps. At 1e-3 all three reach
    # 0.06-0.09 in 50 steps there, with one thread or two.
    opt = torch.optim.Adam(vae.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        loss = vae.loss(clip, g)
        opt.zero_grad()
        loss.total.backward()
        opt.step()
    assert torch.isfinite(loss.kl) and loss.kl > 0
    after = recon_error()
    flat_grey = (clip - clip.mean()).abs().mean().item()  # what a blurry average achieves
    assert after < 0.5 * min(before, flat_grey), (before, after, flat_grey)


def test_weights_round_trip_through_a_local_safetensors_file(vae, tmp_path):
    path = checkpoint.save(vae, tmp_path / "vae.safetensors")
    loaded = checkpoint.load(VideoVAE, VideoVAEConfig, path)
    assert loaded.cfg == vae.cfg
    x = torch.randn(1, 3, 5, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded.encode(x).mean, vae.encode(x).mean)
    with pytest.raises(FileNotFoundError):
        checkpoint.load_weights(vae, tmp_path / "missing.safetensors")


def test_cost_reporting(vae):
    assert 5e5 < vae.num_params() < 5e6
    assert vae.flops_per_pixel() > 1e4
    with pytest.raises(ValueError, match="multiple"):
        VideoVAE(dataclasses.replace(VIDEO_VAE_PRESETS["debug"], tile_frames=6))
