"""Video and audio autoencoders behind one interface, each producing *normalised* latents.

- :class:`model.encoders.base.VideoAutoencoder`: ``encode(pixels) -> latents``,
  ``decode(latents) -> pixels``, with ``latent_channels``, ``temporal_stride``, ``spatial_stride``.
- :class:`model.encoders.base.AudioAutoencoder`: ``encode(waveform) -> latents``,
  ``decode(latents) -> waveform``, with ``sample_rate``, ``channels``, ``latent_channels``,
  ``samples_per_latent`` (so ``latent_rate``), ``causal_stride``, ``output_sample_rate``.
- :class:`model.encoders.decoder.AVDecoder`: both decoders together -> ``model.media.AVClip``.

Implementations: tandem's own VAEs (``tandem``), LTX-2's video VAE and audio VAE + vocoder
(``ltx2``), Wan 2.x's video VAE (``wan``), Stable Audio Open's Oobleck (``oobleck``), the
published ones wrapping diffusers modules. ``training.encoders`` builds them from config and
local weight folders (this package never loads anything by itself).
"""
