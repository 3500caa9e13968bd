"""Single-device model code for joint audio-video generation (never imports ray,
deepspeed or mlflow; parallelism and activation checkpointing are applied from training/).

Stable entry points (what training/ and reward/ use):

- ``model.presets.get_preset(name, latents=None) -> DualDiTConfig``: ``debug``, ``small``, ``1b``,
  ``14b``; input/output geometry from a ``LatentGeometry`` (the latents trained on).
- ``model.encoders``: video/audio autoencoders behind one interface (tandem's, LTX-2's, Wan's,
  Oobleck), normalised latents, and ``AVDecoder`` (latents -> frames + waveform -> mp4).
- ``model.dit.DualDiT(cfg)``: ``forward(video_latents, audio_latents, t_video, t_audio,
  text_emb, text_mask, text_spans=None, text_ref_slots=None, references=None, fps=None,
  keep_audio_for_video=None, keep_video_for_audio=None) -> (v_video, v_audio)``.
  ``model.blocks`` is an ``nn.ModuleList`` of self-contained :class:`model.blocks.DualBlock`
  (wrap each for activation checkpointing / FSDP). ``num_params()``; FLOPs in
  ``model.flops.train_flops_per_token(cfg, video_tokens, audio_tokens, text_tokens)``.
- ``model.conditioning.Conditioning``: text + references + dropout flags;
  ``cond.kwargs()`` expands into ``DualDiT.forward``.
- ``model.flow_matching``: ``FlowMatchingConfig``, ``flow_matching_loss(model, video, audio,
  cond, cfg, generator) -> FlowLoss(total, video, audio, t_video, t_audio)``.
- ``model.sampling``: ``sample_ode`` (Euler; guidance per modality, prefix extension,
  one modality given the other), ``sdedit``, ``sample_sde`` -> ``Trajectory`` with
  per-step log-probs, ``trajectory_log_prob`` (GRPO ratio), ``group_noise``.
- ``model.video_vae.VideoVAE`` / ``VIDEO_VAE_PRESETS``; ``model.audio_vae.AudioVAE`` /
  ``AUDIO_VAE_PRESETS``; ``model.vocoder.GriffinLimVocoder`` / ``HiFiGANVocoder``;
  each VAE has ``loss(x)``, ``num_params()`` and ``flops_per_pixel()`` / ``flops_per_latent()``.
- ``model.text_encoder.TextEncoder``: ``from_config(TextEncoderConfig)`` or ``tiny_random()``;
  ``encode(prompts, references) -> Conditioning`` (parses @tags and ``[a-bs]`` shots).
- ``model.sequence.SequenceConfig``: latent lengths of both modalities from duration,
  fps, sample rate and strides.
- ``model.generate.JointGenerator``: prompt -> latents -> frames + waveform -> mp4.
- ``model.checkpoint.save / load / load_weights``: safetensors with the config inside.
"""
