"""The encoder registry: each published autoencoder class, built tiny with random weights and
saved with save_pretrained at test time, loads through the real path (training.encoders);
a round trip keeps shapes; latents are normalised exactly as the model's own pipeline does;
and the latents of one second of audio and one second of video land on the same RoPE seconds."""

import pytest
import torch

from model.dit import DualDiT
from model.presets import get_preset
from training.encoders import EncoderConfig, describe, load_audio, load_video
from training.random_encoders import save_random_encoders

pytestmark = pytest.mark.slow  # importing diffusers alone takes ~20 s on 2 busy cores

PAIRS = {"tandem": None, "ltx2": ("ltx2", "ltx2", "t5"), "wan+oobleck": ("wan", "oobleck", "gemma")}


@pytest.fixture(scope="module")
def encoders(tmp_path_factory) -> dict[str, EncoderConfig]:
    root = tmp_path_factory.mktemp("encoders")
    return {name: save_random_encoders(root / name, *pair) if pair else EncoderConfig()
            for name, pair in PAIRS.items()}


@pytest.fixture(scope="module")
def loaded(encoders) -> dict[str, tuple]:
    """(video, audio) autoencoders of each pair, loaded through the registry once."""
    return {name: (load_video(cfg), load_audio(cfg)) for name, cfg in encoders.items()}


def _clip(video, audio, seconds: float, fps: float, seed: int = 0):
    """Random pixels of 1 + s*k frames spanning ``seconds`` and a waveform of the same span."""
    g = torch.Generator().manual_seed(seed)
    frames = 1 + video.temporal_stride * round(seconds * fps / video.temporal_stride)
    pixels = torch.rand(1, 3, frames, 64, 96, generator=g) * 2 - 1
    waveform = 0.3 * torch.randn(1, audio.channels, round(frames / fps * audio.sample_rate), generator=g)
    return pixels, waveform


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", PAIRS)
def test_round_trip_keeps_shapes_and_duration(loaded, name):
    video, audio = loaded[name]
    pixels, waveform = _clip(video, audio, 1.0, 16.0)
    with torch.no_grad():
        z = video.encode(pixels)
        s, p = video.temporal_stride, video.spatial_stride
        assert z.shape == (1, video.latent_channels, 1 + (pixels.shape[2] - 1) // s, 64 // p, 96 // p)
        back = video.decode(z)
        assert back.shape == pixels.shape and back.abs().max() <= 1
        za = audio.encode(waveform)
        assert za.shape == (1, audio.latent_channels, audio.num_latents(waveform.shape[-1]))
        sound = audio.decode(za)
    assert sound.shape[1] == audio.channels and torch.isfinite(sound).all()
    # The decoded waveform lasts as long as the input, to within one latent's span.
    seconds_in, seconds_out = waveform.shape[-1] / audio.sample_rate, sound.shape[-1] / audio.output_sample_rate
    assert abs(seconds_out - seconds_in) <= 1 / audio.latent_rate


@pytest.mark.timeout(300)
def test_latents_are_normalised_as_each_model_defines_it(loaded):
    from model.encoders.base import per_channel

    (ltx_video, ltx_audio), (wan, oobleck) = loaded["ltx2"], loaded["wan+oobleck"]
    pixels, waveform = _clip(ltx_video, ltx_audio, 1.0, 8.0)
    with torch.no_grad():  # LTX-2 video: (z - latents_mean) * scaling_factor / latents_std
        vae = ltx_video.vae
        raw = vae.encode(pixels).latent_dist.mode()
        mean, std = per_channel(vae.latents_mean, raw), per_channel(vae.latents_std, raw)
        assert vae.config.scaling_factor != 1 and (std != 1).any()  # the statistics really act
        torch.testing.assert_close(ltx_video.encode(pixels), (raw - mean) * vae.config.scaling_factor / std)
        torch.testing.assert_close(ltx_video.decode(ltx_video.encode(pixels)), vae.decode(raw).sample.clamp(-1, 1),
                                   atol=1e-4, rtol=1e-4)

        # LTX-2 audio: packed per time step (c * M + m), then per-channel statistics
        raw = ltx_audio.vae.encode(ltx_audio.log_mel(waveform)).latent_dist.mode()
        packed = raw.permute(0, 1, 3, 2).flatten(1, 2)
        expected = (packed - ltx_audio.vae.latents_mean[:, None]) / ltx_audio.vae.latents_std[:, None]
        torch.testing.assert_close(ltx_audio.encode(waveform), expected)

        pixels, waveform = _clip(wan, oobleck, 1.0, 8.0)  # Wan: (z - config.latents_mean) / config.latents_std
        raw = wan.vae.encode(pixels).latent_dist.mode()
        mean = torch.tensor(wan.vae.config.latents_mean).view(1, -1, 1, 1, 1)
        std = torch.tensor(wan.vae.config.latents_std).view(1, -1, 1, 1, 1)
        torch.testing.assert_close(wan.encode(pixels), (raw - mean) / std)

        # Oobleck: Stable Audio applies no latent scaling
        whole = waveform[..., : waveform.shape[-1] // oobleck.samples_per_latent * oobleck.samples_per_latent]
        torch.testing.assert_close(oobleck.encode(whole), oobleck.vae.encode(whole).latent_dist.mode())


def _changed(before: torch.Tensor, after: torch.Tensor, time_dim: int) -> torch.Tensor:
    """Per latent position along ``time_dim``: did any value change?"""
    other = [d for d in range(before.ndim) if d != time_dim]
    return (before - after).abs().amax(dim=other) > 1e-5


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", PAIRS)
def test_a_second_of_audio_and_of_video_share_rope_seconds(encoders, loaded, name):
    """The DiT places each latent at the seconds the encoders' own config says it covers;
    the encoders' real behaviour agrees: per second, both modalities get their rate's worth
    of tokens, and changing the clip from 1 s on leaves exactly earlier-placed latents alone."""
    cfg, fps = encoders[name], 16.0
    video, audio = loaded[name]
    model = DualDiT(get_preset("debug", describe(cfg, fps).geometry()))
    pixels, waveform = _clip(video, audio, 2.0, fps)
    with torch.no_grad():
        z, za = video.encode(pixels), audio.encode(waveform)
        v_times, a_times = model.token_times(z, za, fps)
    per_frame = v_times.view(z.shape[2], -1)[:, 0]
    for second in (0, 1):
        def count(times, s=second):
            return ((times >= s) & (times < s + 1)).sum().item()
        assert abs(count(a_times) - audio.latent_rate) <= 1
        assert abs(count(per_frame) - fps / video.temporal_stride) <= 1
    # Both end with the clip: the last latent of each is centred within its last span.
    clip_s = pixels.shape[2] / fps
    assert clip_s - video.temporal_stride / fps <= per_frame[-1] < clip_s
    assert clip_s - 1 / audio.latent_rate <= a_times[-1] < clip_s + 0.5 / audio.latent_rate

    # Change everything from 1 s on. A causal encoder must leave every latent placed before
    # the change... and no latent placed after it may stay the same.
    later = _clip(video, audio, 2.0, fps, seed=1)
    pixels2, waveform2 = pixels.clone(), waveform.clone()
    pixels2[:, :, round(fps):] = later[0][:, :, round(fps):]
    waveform2[..., audio.sample_rate:] = later[1][..., audio.sample_rate:]
    with torch.no_grad():
        changed_v = _changed(z, video.encode(pixels2), 2)
        changed_a = _changed(za, audio.encode(waveform2), 2)
    checks = [(per_frame, changed_v)] + ([(a_times, changed_a)] if audio.causal_stride else [])
    for times, changed in checks:
        assert not changed[0] and changed[-1]
        assert (times[~changed] < 1.0).all(), (times, changed)  # untouched latents lie before the change
        assert changed[times >= 1.0].all(), (times, changed)  # latents placed after it all saw it
