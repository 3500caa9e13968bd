"""Random-weight encoders of the published architectures, saved as local folders exactly as
``save_pretrained`` leaves them, so the real loading path (training/encoders.py) runs without
any download: tests use the tiny configs (CPU seconds), the throughput benchmark and cluster
smoke runs the published real-size configs (the diffusers classes' defaults are LTX-2's,
Wan 2.1's and Stable Audio Open's; the weights stay random).

    cfg = save_random_encoders(tmp / "encoders", video="ltx2", audio="ltx2", text="t5")
    # -> EncoderConfig(video="ltx2", video_path=".../ltx2_video", audio="ltx2", ..., text_path=".../t5")
"""

from __future__ import annotations

from pathlib import Path

import torch

from training.encoders import EncoderConfig

TINY = {
    "ltx2_video": dict(latent_channels=8, block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(16, 32, 64),
                       layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1), patch_size=1,
                       decoder_causal=False, decoder_spatial_padding_mode="zeros",
                       scaling_factor=0.7),  # 8x spatial, 8x temporal
    # latents (4 channels x 16 / 4 mel bins) pack to 16 channels = base_channels, the size of
    # latents_mean / latents_std (LTX-2: 8 x 64 / 4 = 128 = base_channels).
    "ltx2_audio": dict(base_channels=16, latent_channels=4, mel_bins=16, num_res_blocks=1, resolution=16),
    "ltx2_vocoder": dict(in_channels=2 * 16, hidden_channels=32, resnet_kernel_sizes=[3], resnet_dilations=[[1, 3]]),
    "wan": dict(base_dim=8, z_dim=8, dim_mult=[1, 1, 1, 1], num_res_blocks=1, latents_mean=[0.1 * i for i in range(8)],
                latents_std=[1.0 + 0.1 * i for i in range(8)]),
    "oobleck": dict(encoder_hidden_size=16, downsampling_ratios=[8, 8, 8], channel_multiples=[1, 2, 2],
                    decoder_channels=4, decoder_input_channels=8, sampling_rate=16000),  # 2 x 8: mean + scale
}
TINY_TEXT = {
    "t5": dict(d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4),
    "gemma": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                  num_key_value_heads=1, head_dim=16),
}


def _save(cls, kwargs: dict, folder: Path) -> str:
    model = cls(**kwargs)
    buffers = dict(model.named_buffers(recurse=False))
    if "latents_mean" in buffers:  # LTX-2 keeps its latent statistics as buffers: make them matter
        with torch.no_grad():
            model.latents_mean.copy_(0.1 * torch.randn_like(model.latents_mean))
            model.latents_std.copy_(1.0 + 0.5 * torch.rand_like(model.latents_std))
    model.save_pretrained(str(folder))
    return str(folder)


def save_random_encoders(out_dir: str | Path, video: str = "ltx2", audio: str = "ltx2", text: str = "t5",
                         size: str = "tiny", seed: int = 0) -> EncoderConfig:
    """Random ``video`` (ltx2 | wan), ``audio`` (ltx2 | oobleck) and ``text`` (t5 | gemma | "" for
    the built-in tiny random T5) encoders of ``size`` (tiny | real) under ``out_dir``; returns
    the EncoderConfig that loads them (text through the offline byte tokenizer)."""
    import diffusers
    from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder

    out, cfg = Path(out_dir), EncoderConfig(video=video, audio=audio, text_tokenizer="bytes")
    configs = TINY if size == "tiny" else {}
    torch.manual_seed(seed)
    video_cls = {"ltx2": diffusers.AutoencoderKLLTX2Video, "wan": diffusers.AutoencoderKLWan}[video]
    cfg.video_path = _save(video_cls, configs.get(f"{video}_video" if video == "ltx2" else video, {}),
                           out / f"{video}_video")
    if audio == "ltx2":
        cfg.audio_path = _save(diffusers.AutoencoderKLLTX2Audio, configs.get("ltx2_audio", {}), out / "ltx2_audio")
        cfg.vocoder_path = _save(LTX2Vocoder, configs.get("ltx2_vocoder", {}), out / "ltx2_vocoder")
    else:
        cfg.audio_path = _save(diffusers.AutoencoderOobleck, configs.get("oobleck", {}), out / "oobleck")
    if text:
        cfg.text_path = _save_text(text, out / text, size)
    return cfg


def _save_text(kind: str, folder: Path, size: str) -> str:
    import transformers

    from model.text_encoder import ByteTokenizer

    vocab = ByteTokenizer.vocab_size
    if kind == "t5":
        config = transformers.T5Config(vocab_size=vocab, **(TINY_TEXT["t5"] if size == "tiny" else
                                                            dict(d_model=4096, d_kv=64, d_ff=10240, num_layers=24,
                                                                 num_heads=64)))
        model = transformers.T5EncoderModel(config)
    else:
        config = transformers.Gemma3TextConfig(vocab_size=vocab, **TINY_TEXT["gemma"]) if size == "tiny" else \
            transformers.Gemma3TextConfig(vocab_size=vocab)
        model = transformers.Gemma3TextModel(config)
    model.save_pretrained(str(folder))
    return str(folder)
