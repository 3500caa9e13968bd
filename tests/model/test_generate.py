"""End to end: prompt -> joint latents -> frames + waveform -> an mp4 with both streams."""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch

from model.audio_vae import AUDIO_VAE_PRESETS, AudioVAE
from model.dit import DualDiT
from model.generate import GenerationConfig, JointGenerator
from model.media import write_mp4
from model.presets import get_preset
from model.sequence import SequenceConfig
from model.text_encoder import TextEncoder
from model.video_vae import VIDEO_VAE_PRESETS, VideoVAE
from model.vocoder import GriffinLimVocoder


def test_generate_writes_an_mp4_with_video_and_audio(tmp_path):
    torch.manual_seed(0)
    audio_vae = AudioVAE(AUDIO_VAE_PRESETS["debug"]).eval()
    gen = JointGenerator(DualDiT(get_preset("debug")).eval(), VideoVAE(VIDEO_VAE_PRESETS["debug"]).eval(),
                         audio_vae, TextEncoder.tiny_random(dim=64),
                         GriffinLimVocoder(audio_vae.cfg.mel, n_iter=4))
    seq = SequenceConfig(duration_s=0.64, fps=25, height=32, width=32)
    clip = gen.generate(["[0-0.3s] a drum hit, then silence"],
                        GenerationConfig(sequence=seq, steps=2, video_guidance=2.0))
    assert clip.video.shape == (1, 3, 17, 32, 32) and clip.audio.shape == (1, 1, 10880)
    assert clip.video_latents.shape == (1, 8, 5, 4, 4) and clip.audio_latents.shape == (1, 8, 17)
    path = clip.save_mp4(tmp_path / "clip.mp4")
    with av.open(str(path)) as container:
        kinds = {s.type for s in container.streams}
        frames = sum(1 for _ in container.decode(video=0))
    assert kinds == {"video", "audio"} and frames == 17


def test_write_mp4_keeps_duration_rate_and_channels(tmp_path):
    frames = np.zeros((25, 16, 16, 3), dtype=np.uint8)
    frames[:, :, :, 0] = np.linspace(0, 255, 25, dtype=np.uint8)[:, None, None]
    t = np.arange(16000) / 16000
    audio = np.stack([0.3 * np.sin(2 * np.pi * 440 * t), 0.3 * np.sin(2 * np.pi * 660 * t)])
    path = write_mp4(tmp_path / "a.mp4", frames, 25.0, audio, 16000)
    with av.open(str(path)) as container:
        v, a = container.streams.video[0], container.streams.audio[0]
        assert (v.average_rate, a.rate, a.codec_context.channels) == (25, 16000, 2)
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == 25 and decoded[-1][..., 0].mean() > decoded[0][..., 0].mean() + 200
    with pytest.raises(ValueError, match="even"):
        write_mp4(tmp_path / "b.mp4", np.zeros((2, 15, 16, 3), np.uint8), 25.0)
