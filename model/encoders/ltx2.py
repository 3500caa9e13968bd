"""LTX-2's video VAE and audio VAE + vocoder (diffusers ``AutoencoderKLLTX2Video``,
``AutoencoderKLLTX2Audio``, ``LTX2Vocoder``), as LTX-2's pipeline uses them.

Video: latents normalised per channel, ``(z - latents_mean) * scaling_factor / latents_std``
(``LTX2Pipeline._normalize_latents``); spatial/temporal strides follow from the encoder's
down blocks (``spatial``, ``temporal``, ``spatiotemporal``) times its patch sizes: 32 and 8
for the published model. Long or large clips are encoded in the VAE's own spatial tiles and
temporal windows when ``tiling`` is on.

Audio: the waveform becomes LTX-2's log-mel (magnitude STFT, n_fft 1024, Slaney mel scale
and norm, ``log(max(mel, 1e-5))``; its trainer's ``AudioProcessor``), the VAE makes latents
(C, T, mel_bins / 4), packed per time step to C * mel_bins / 4 channels — the layout
``LTX2Pipeline._pack_audio_latents`` uses — and normalised with the VAE's per-channel
``latents_mean`` / ``latents_std`` (``_normalize_audio_latents``). The encoder is causal in
time with 4x downsampling: T mel frames give ceil(T / 4) latents, latent 0 covering one
mel frame and later ones four (the LTX-2 transformer's audio coordinates). Decoding gives
4T - 3 mel frames, which the vocoder turns into a waveform at its ``output_sampling_rate``.
"""

from __future__ import annotations

import math

import librosa
import torch

from model.encoders.base import AudioAutoencoder, VideoAutoencoder, denormalise, normalise

LATENT_DOWNSAMPLE = 4  # the audio VAE's fixed time and mel-bin downsampling


def ltx2_video_strides(config) -> tuple[int, int]:
    """(temporal, spatial) compression of an AutoencoderKLLTX2Video config, from its blocks."""
    temporal, spatial = config.patch_size_t, config.patch_size
    scaling = config.spatio_temporal_scaling
    if isinstance(scaling, bool):
        scaling = (scaling,) * len(config.downsample_type)
    for kind, scaled in zip(config.downsample_type, scaling, strict=False):
        if scaled:
            temporal *= 2 if kind in ("temporal", "spatiotemporal") else 1
            spatial *= 2 if kind in ("spatial", "spatiotemporal") else 1
    return temporal, spatial


class LTX2Video(VideoAutoencoder):
    name = "ltx2"

    def __init__(self, vae, tiling: bool = True):
        super().__init__()
        self.vae = vae
        self.latent_channels = vae.config.latent_channels
        self.temporal_stride, self.spatial_stride = ltx2_video_strides(vae.config)
        # diffusers' tiling reads these; its fallback formula ignores the block kinds.
        vae.temporal_compression_ratio, vae.spatial_compression_ratio = self.temporal_stride, self.spatial_stride
        if tiling:  # spatial tiles above 512 px, temporal windows above 16 frames
            vae.enable_tiling()
            vae.use_framewise_encoding = vae.use_framewise_decoding = True

    def _norm(self):
        return self.vae.latents_mean, self.vae.latents_std, self.vae.config.scaling_factor

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        self.check_frames(pixels)
        z = self.vae.encode(pixels.to(self.vae.dtype)).latent_dist.mode().float()
        return normalise(self.check_latents(pixels, z), *self._norm())

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        z = denormalise(latents.float(), *self._norm()).to(self.vae.dtype)
        # A timestep-conditioned decoder is asked for a clean decode (the pipeline's default 0).
        temb = torch.zeros(z.shape[0], device=z.device, dtype=z.dtype) if self.vae.config.timestep_conditioning else None
        return self.vae.decode(z, temb).sample.float().clamp(-1, 1)


class LTX2Audio(AudioAutoencoder):
    name = "ltx2"
    causal_stride = LATENT_DOWNSAMPLE

    def __init__(self, vae, vocoder, n_fft: int = 1024):
        super().__init__()
        cfg = vae.config
        if not cfg.is_causal or cfg.causality_axis != "height":
            raise ValueError("only LTX-2's causal-in-time audio VAE (causality_axis='height') is supported")
        self.vae, self.vocoder, self.n_fft = vae, vocoder, n_fft
        self.sample_rate, self.hop, self.channels = cfg.sample_rate, cfg.mel_hop_length, cfg.in_channels
        self.mel_bins = cfg.mel_bins
        self.latent_mel_bins = cfg.mel_bins // LATENT_DOWNSAMPLE
        self.latent_channels = cfg.latent_channels * self.latent_mel_bins
        self.samples_per_latent = self.hop * LATENT_DOWNSAMPLE
        self.output_sample_rate = vocoder.config.output_sampling_rate
        if vae.latents_mean.numel() != self.latent_channels:
            raise ValueError(f"LTX-2 audio VAE: latents_mean has {vae.latents_mean.numel()} entries but packed latents "
                             f"have {self.latent_channels} channels (latent_channels x mel_bins / 4)")
        fb = librosa.filters.mel(sr=self.sample_rate, n_fft=n_fft, n_mels=self.mel_bins, fmin=0.0,
                                 fmax=self.sample_rate / 2)  # Slaney scale, Slaney norm
        self.register_buffer("filterbank", torch.from_numpy(fb).float(), persistent=False)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def log_mel(self, waveform: torch.Tensor) -> torch.Tensor:
        """(B, ch, N) -> (B, ch, N // hop + 1, mel_bins)."""
        b, ch, n = waveform.shape
        spec = torch.stft(waveform.reshape(b * ch, n).float(), self.n_fft, self.hop, self.n_fft, self.window,
                          center=True, pad_mode="reflect", return_complex=True).abs()
        mel = torch.log(torch.matmul(self.filterbank, spec).clamp_min(1e-5))
        return mel.reshape(b, ch, self.mel_bins, -1).transpose(2, 3)

    def num_latents(self, samples: int) -> int:
        return math.ceil((samples // self.hop + 1) / LATENT_DOWNSAMPLE)

    def encode(self, waveform: torch.Tensor) -> torch.Tensor:
        z = self.vae.encode(self.log_mel(waveform).to(self.vae.dtype)).latent_dist.mode().float()
        b, c, t, m = z.shape
        packed = z.permute(0, 1, 3, 2).reshape(b, c * m, t)  # channel index c * M + m, as the pipeline packs
        return normalise(self.check_latents(waveform, packed), self.vae.latents_mean, self.vae.latents_std)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        z = denormalise(latents.float(), self.vae.latents_mean, self.vae.latents_std)
        b, _, t = z.shape
        z = z.reshape(b, -1, self.latent_mel_bins, t).permute(0, 1, 3, 2)  # (B, C, T, M)
        mel = self.vae.decode(z.to(self.vae.dtype)).sample  # (B, ch, 4T - 3, mel_bins)
        return self.vocoder(mel.to(next(self.vocoder.parameters()).dtype)).float()
