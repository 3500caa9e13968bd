"""Mel front end, audio VAE and vocoders."""

from __future__ import annotations

import dataclasses

import librosa
import pytest
import torch
from model_testkit import real_audio

from model import checkpoint
from model.audio_vae import AUDIO_VAE_PRESETS, AudioVAE, AudioVAEConfig
from model.mel import MelConfig, MelSpectrogram
from model.vocoder import (
    HIFIGAN_PRESETS,
    GriffinLimVocoder,
    HiFiGANConfig,
    HiFiGANVocoder,
    vocoder_loss,
)


def sine(freq: float, seconds: float = 1.0, sr: int = 16000, amp: float = 0.5) -> torch.Tensor:
    t = torch.arange(int(seconds * sr)) / sr
    return (amp * torch.sin(2 * torch.pi * freq * t))[None, None]


def test_mel_frames_channels_and_band_placement():
    mel = MelSpectrogram(MelConfig())
    out = mel(sine(1000.0))
    assert out.shape == (1, 64, 100)  # 100 frames per second at hop 160
    centres = librosa.mel_frequencies(n_mels=66, fmax=8000)[1:-1]
    assert abs(centres[out[0, :, 50].argmax()] - 1000.0) < 100
    stereo = MelSpectrogram(MelConfig(channels=2))
    wav = torch.cat([sine(300.0), sine(3000.0)], dim=1)
    out = stereo(wav)
    assert out.shape == (1, 128, 100)
    assert out[0, :64, 50].argmax() < out[0, 64:, 50].argmax()  # channels are kept apart
    with pytest.raises(ValueError, match="2-channel"):
        stereo(sine(300.0))


@pytest.mark.parametrize("preset", ["debug", "debug_stereo"])
def test_audio_vae_latents_at_25_per_second(preset):
    vae = AudioVAE(AUDIO_VAE_PRESETS[preset]).eval()
    ch = vae.cfg.mel.channels
    assert vae.cfg.latent_rate == 25.0
    with torch.no_grad():
        post = vae.encode(torch.randn(2, ch, 32000) * 0.1)
        assert post.mean.shape == (2, 8, 50)
        assert vae.decode(post.mean).shape == (2, ch * 64, 200)
        assert vae.encode(torch.randn(1, ch, 10880) * 0.1).mean.shape == (1, 8, 17)  # ceil(68 / 4)


def test_debug_audio_vae_learns_real_audio():
    torch.manual_seed(0)
    vae = AudioVAE(AUDIO_VAE_PRESETS["debug"])
    wav = real_audio(1.0)
    mel = vae.waveform_to_mel(wav)

    def recon_error():
        with torch.no_grad():
            return (vae.decode(vae.encode_mel(mel).mode()) - mel).abs().mean().item()

    before = recon_error()
    opt = torch.optim.Adam(vae.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(150):
        loss = vae.loss(wav, g)
        opt.zero_grad()
        loss.total.backward()
        opt.step()
    after = recon_error()
    flat = (mel - mel.mean(-1, keepdim=True)).abs().mean().item()  # each band's average level
    assert after < 0.6 * min(before, flat), (before, after, flat)


def test_griffin_lim_is_audible_at_the_right_pitch():
    mel = MelSpectrogram(MelConfig())
    tone = sine(440.0)
    out = GriffinLimVocoder(MelConfig())(mel(tone))
    assert out.shape == tone.shape
    spectrum = torch.fft.rfft(out[0, 0]).abs()
    peak_hz = spectrum.argmax().item() * 16000 / out.shape[-1]
    assert abs(peak_hz - 440.0) < 35  # within half a mel band at 440 Hz
    assert 0.3 < out.std() / tone.std() < 3.0
    stereo = GriffinLimVocoder(MelConfig(channels=2))
    assert stereo(MelSpectrogram(MelConfig(channels=2))(torch.cat([tone, tone], 1))).shape == (1, 2, 16000)


def test_hifigan_shapes_training_and_weights(tmp_path):
    torch.manual_seed(0)
    voc = HiFiGANVocoder(HIFIGAN_PRESETS["debug"])
    mel = MelSpectrogram(voc.cfg.mel)
    wav = real_audio(0.5)
    assert voc(mel(wav)).shape == wav.shape
    opt = torch.optim.Adam(voc.parameters(), lr=2e-3)
    losses = []
    for _ in range(12):
        loss = vocoder_loss(voc, wav, mel)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert min(losses[-3:]) < 0.8 * losses[0]
    path = checkpoint.save(voc, tmp_path / "vocoder.safetensors")
    loaded = checkpoint.load(HiFiGANVocoder, HiFiGANConfig, path)
    with torch.no_grad():
        assert torch.equal(loaded(mel(wav)), voc(mel(wav)))
    with pytest.raises(ValueError, match="multiply"):
        HiFiGANVocoder(dataclasses.replace(HIFIGAN_PRESETS["debug"], upsample_rates=(4, 4)))


def test_audio_vae_round_trip_and_cost(tmp_path):
    vae = AudioVAE(AUDIO_VAE_PRESETS["debug_stereo"])
    loaded = checkpoint.load(AudioVAE, AudioVAEConfig, checkpoint.save(vae, tmp_path / "a.safetensors"))
    assert loaded.cfg == vae.cfg and loaded.cfg.mel.channels == 2
    assert vae.num_params() > 1e5 and vae.flops_per_latent() > 1e5
