"""SequenceConfig: the worked examples of model/sequence.py, and its guard rails."""

from __future__ import annotations

import pytest

from model.sequence import SequenceConfig


@pytest.mark.parametrize(("clip", "expected"), [
    (dict(duration_s=5, fps=24, height=480, width=832), (121, (31, 60, 104), 48360, 80667, 504, 126)),
    (dict(duration_s=2, fps=25, height=256, width=256), (49, (13, 32, 32), 3328, 31360, 196, 49)),
    (dict(duration_s=0.64, fps=25, height=32, width=32), (17, (5, 4, 4), 20, 10880, 68, 17)),
])
def test_worked_examples(clip, expected):
    s = SequenceConfig(**clip)
    assert (s.num_frames, s.video_latent_shape, s.video_tokens, s.audio_samples,
            s.mel_frames, s.audio_latents) == expected
    assert s.audio_latent_rate == 25.0 and s.audio_tokens == s.audio_latents
    assert (s.num_frames - 1) % 4 == 0  # the causal VAE's native 1 + 4k lengths


def test_audio_covers_the_video_duration():
    s = SequenceConfig(duration_s=5, fps=24)
    assert abs(s.audio_samples / s.sample_rate - s.clip_seconds) < 1 / s.sample_rate
    assert abs(s.audio_latents / s.audio_latent_rate - s.clip_seconds) < 1 / s.audio_latent_rate


def test_other_rates_and_strides():
    s = SequenceConfig(duration_s=4, fps=30, height=720, width=1280, sample_rate=24000, mel_hop=240,
                       video_patch=(1, 2, 2))
    assert s.num_frames == 121 and s.video_latent_shape == (31, 90, 160)
    assert s.audio_latent_rate == 25.0 and s.audio_latents == 101  # 121/30 s * 25


def test_sizes_that_do_not_fit_the_strides_are_rejected():
    with pytest.raises(ValueError, match="multiples of 16"):
        SequenceConfig(height=100, width=832)
    with pytest.raises(ValueError, match="temporal patch"):
        SequenceConfig(duration_s=5, fps=24, video_patch=(2, 2, 2))
