"""The ``omni`` backbone: a Qwen2.5-Omni-class thinker (video + audio + text) with LoRA, its
heads on reward tokens, loaded from a local path.

Each clip becomes one chat turn, as Qwen2.5-Omni reads a video with its sound track:

    <|im_start|>system ...<|im_end|> <|im_start|>user <|vision_bos|><|audio_bos|>
      [video tokens 0-2 s][audio tokens 0-2 s][video tokens 2-4 s][audio tokens 2-4 s] ...
    <|audio_eos|><|vision_eos|> {instruction} Prompt: {prompt}<|im_end|> <|im_start|>assistant
    <reward token 1> ... <reward token H>

(the model's own TMRoPE layout: picture and sound interleaved in ``seconds_per_chunk`` chunks,
positions from the model's ``get_rope_index``). The last H positions hold one learned
embedding per head, VideoAlign-style; the thinker's final hidden state there is that head's
feature. Only LoRA adapters on the language model's attention (peft) and the reward-token
embeddings train; the base stays frozen and is never copied into a saved reward model.

Frames are resized and cut into the vision encoder's (temporal x spatial) patches here, in
torch, in the layout Qwen2-VL's video processor produces (the transformers video processor
needs torchvision, which has no CPU build on PyPI); audio goes through the checkpoint's
Whisper feature extractor; token counts come from the model's own length functions.

``model_path`` is a local directory with the checkpoint (a whole Qwen2.5-Omni or its thinker),
its tokenizer and ``preprocessor_config.json``. Nothing is downloaded. Tests build a tiny
random one with ``save_random_omni(dir)``; ``random_omni("7b")`` is the real size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from reward.scoring.sources import Clips

CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
SYSTEM = "You are a careful judge of generated videos with sound."


@dataclass
class OmniBackboneConfig:
    model_path: str = ""  # local directory: checkpoint + tokenizer + preprocessor_config.json
    dtype: str = "bfloat16"  # float32 for CPU tests
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_targets: tuple = ("q_proj", "k_proj", "v_proj", "o_proj")  # language-model attention only
    fps: float = 2.0  # frames per second shown to the vision encoder
    max_frames: int = 32
    min_pixels: int = 56 * 56
    max_pixels: int = 448 * 448
    use_audio: bool = True  # interleave the sound track with the picture (TMRoPE)
    instruction: str = "Judge the video and its sound against the prompt."
    gradient_checkpointing: bool = False


class OmniBackbone(nn.Module):
    uses = "media"

    def __init__(self, cfg: OmniBackboneConfig, heads: tuple[str, ...], *, thinker=None, tokenizer=None,
                 feature_extractor=None):
        super().__init__()
        from peft import LoraConfig, get_peft_model

        self.cfg, self.heads = cfg, tuple(heads)
        if thinker is None:
            thinker, tokenizer, feature_extractor = load_omni(cfg)
        self.tokenizer, self.features = tokenizer, feature_extractor
        self.config = thinker.config
        thinker.lm_head = nn.Identity()  # reward heads read hidden states; the vocabulary projection is unused
        hidden = thinker.config.get_text_config().hidden_size
        self.feature_dim = hidden
        embed = thinker.get_input_embeddings().weight
        # Start every reward token at the mean word embedding (a neutral, in-distribution input).
        self.reward_embeds = nn.Parameter(embed.detach().float().mean(0, keepdim=True).repeat(len(heads), 1)
                                          + torch.randn(len(heads), hidden) * embed.detach().float().std() * 0.1)
        names = "|".join(cfg.lora_targets)
        lora = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                          target_modules=rf"model\.layers\.\d+\.self_attn\.({names})")
        if cfg.gradient_checkpointing:
            thinker.gradient_checkpointing_enable()
            thinker.enable_input_require_grads()
        self.thinker = get_peft_model(thinker, lora)

    # ---------------------------------------------------------------------------- inputs

    def _video_patches(self, video: torch.Tensor, fps_in: float):
        """(B, 3, T, H, W) in [-1, 1] -> (pixel_values_videos, grid_thw (B, 3), seconds per grid)."""
        vc = self.config.vision_config
        p, m, tp = vc.patch_size, vc.spatial_merge_size, vc.temporal_patch_size
        b, _, t, h, w = video.shape
        seconds = t / fps_in if fps_in else t / self.cfg.fps
        n = max(tp, min(self.cfg.max_frames, round(seconds * self.cfg.fps)) // tp * tp)
        picks = torch.linspace(0, t - 1, n).round().long()
        frames = (video[:, :, picks].float() + 1) / 2  # (B, 3, n, H, W) in [0, 1]
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

        rh, rw = smart_resize(h, w, p * m, self.cfg.min_pixels, self.cfg.max_pixels)
        frames = F.interpolate(frames.transpose(1, 2).reshape(b * n, 3, h, w), size=(rh, rw), mode="bicubic",
                               antialias=True, align_corners=False).clamp(0, 1)
        mean = torch.tensor(getattr(self.features, "image_mean", None) or CLIP_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(getattr(self.features, "image_std", None) or CLIP_STD).view(1, 3, 1, 1)
        frames = ((frames - mean.to(frames)) / std.to(frames)).view(b, n // tp, tp, 3, rh // p // m, m, p, rw // p // m, m, p)
        # Qwen2-VL's order: (t, h-block, w-block, h-in-block, w-in-block) tokens of (C, tp, p, p) pixels.
        patches = frames.permute(0, 1, 4, 7, 5, 8, 3, 2, 6, 9).reshape(-1, 3 * tp * p * p)
        grid = torch.tensor([[n // tp, rh // p, rw // p]] * b)
        return patches, grid, tp / (n / seconds)

    def _audio_features(self, audio: torch.Tensor, rate: int):
        """Mono, at the feature extractor's rate -> (input_features, feature_attention_mask)."""
        from scipy.signal import resample_poly

        target = self.features.sampling_rate
        mono = audio.float().mean(1).cpu().numpy()
        if rate and rate != target:
            g = math.gcd(int(rate), int(target))
            mono = resample_poly(mono, target // g, int(rate) // g, axis=-1)
        out = self.features(list(mono), sampling_rate=target, return_attention_mask=True, padding="max_length",
                            return_tensors="pt")
        return out["input_features"], out["attention_mask"]

    def _media_ids(self, grid: torch.Tensor, second_per_grid: float, n_audio: int) -> list[int]:
        """The token ids of one clip's picture (and sound) block, in the model's layout."""
        c = self.config
        m = c.vision_config.spatial_merge_size
        gt, gh, gw = (int(v) for v in grid)
        per_frame = gh * gw // (m * m)
        if not self.cfg.use_audio:
            return [c.vision_start_token_id] + [c.video_token_id] * (gt * per_frame) + [c.vision_end_token_id]
        video_pos = (torch.arange(gt) * second_per_grid * c.position_id_per_seconds).long().repeat_interleave(per_frame)
        per_chunk = int(c.position_id_per_seconds * c.seconds_per_chunk)
        chunks_v = self.thinker.get_base_model().get_chunked_index(video_pos, per_chunk, 0)
        chunks_a = self.thinker.get_base_model().get_chunked_index(torch.arange(n_audio), per_chunk, 0)
        ids = [c.vision_start_token_id, c.audio_start_token_id]
        for j in range(max(len(chunks_v), len(chunks_a))):
            if j < len(chunks_v):
                ids += [c.video_token_id] * (chunks_v[j][1] - chunks_v[j][0])
            if j < len(chunks_a):
                ids += [c.audio_token_id] * (chunks_a[j][1] - chunks_a[j][0])
        return ids + [c.audio_end_token_id, c.vision_end_token_id]

    def prepare(self, clips: Clips) -> dict:
        """The thinker's keyword arguments for ``clips`` (reward tokens last, left padding)."""
        if clips.video is None or (self.cfg.use_audio and clips.audio is None):
            raise ValueError("the omni reward backbone needs decoded clips (video and audio)")
        patches, grid, spg = self._video_patches(clips.video, clips.fps)
        kwargs = {"pixel_values_videos": patches, "video_grid_thw": grid,
                  "video_second_per_grid": torch.tensor([spg] * len(clips))}
        n_audio = [0] * len(clips)
        if self.cfg.use_audio:
            feats, mask = self._audio_features(clips.audio, clips.sample_rate)
            n_audio = self.thinker.get_base_model().audio_tower._get_feat_extract_output_lengths(mask.sum(-1))[1].tolist()
            kwargs.update(input_features=feats, feature_attention_mask=mask, use_audio_in_video=True)
        tok = self.tokenizer
        rows = []
        for i, prompt in enumerate(clips.prompts):
            head = tok(f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n", add_special_tokens=False).input_ids
            tail = tok(f"{self.cfg.instruction}\nPrompt: {prompt}<|im_end|>\n<|im_start|>assistant\n",
                       add_special_tokens=False).input_ids
            rows.append(head + self._media_ids(grid[i], spg, n_audio[i]) + tail + [tok.pad_token_id] * len(self.heads))
        length = max(len(r) for r in rows)
        ids = torch.full((len(rows), length), tok.pad_token_id, dtype=torch.long)
        attention = torch.zeros(len(rows), length, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, length - len(r):], attention[i, length - len(r):] = torch.tensor(r), 1
        return {"input_ids": ids, "attention_mask": attention, **kwargs}

    # ---------------------------------------------------------------------------- forward

    def forward(self, clips: Clips) -> torch.Tensor:
        kwargs = self.prepare(clips)
        device = self.reward_embeds.device
        dtype = self.thinker.get_input_embeddings().weight.dtype
        kwargs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
        for key in ("pixel_values_videos", "input_features"):
            if key in kwargs:
                kwargs[key] = kwargs[key].to(dtype)
        embeds = self.thinker.get_input_embeddings()(kwargs["input_ids"])
        h = len(self.heads)
        embeds = torch.cat([embeds[:, :-h], self.reward_embeds.to(dtype)[None].expand(len(clips), -1, -1)], 1)
        out = self.thinker(inputs_embeds=embeds, **kwargs)
        return out.logits[:, -h:].float()  # lm_head is the identity: final hidden states

    def trainable_state(self) -> dict[str, torch.Tensor]:
        from peft import get_peft_model_state_dict

        return {"reward_embeds": self.reward_embeds.detach(),
                **{f"lora.{k}": v for k, v in get_peft_model_state_dict(self.thinker).items()}}

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        from peft import set_peft_model_state_dict

        with torch.no_grad():
            self.reward_embeds.copy_(state["reward_embeds"])
        lora = {k.removeprefix("lora."): v for k, v in state.items() if k.startswith("lora.")}
        result = set_peft_model_state_dict(self.thinker, lora)
        missing = [k for k in result.missing_keys if "lora_" in k]
        if missing or result.unexpected_keys:
            raise ValueError(f"LoRA weights do not fit this base model (missing {missing[:3]}, unexpected "
                             f"{list(result.unexpected_keys)[:3]}): was it trained on another model_path / lora_rank?")


def load_omni(cfg: OmniBackboneConfig):
    """(thinker, tokenizer, feature extractor) from ``cfg.model_path``, a local directory."""
    from transformers import (
        AutoTokenizer,
        Qwen2_5OmniThinkerForConditionalGeneration,
        WhisperFeatureExtractor,
    )

    path = Path(cfg.model_path)
    if not cfg.model_path or not (path / "config.json").is_file():
        raise ValueError(f"omni.model_path={cfg.model_path!r} is not a local model directory (config.json, "
                         "weights, tokenizer, preprocessor_config.json): point it at a local copy of "
                         "Qwen2.5-Omni (or its thinker)")
    thinker = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(path, dtype=getattr(torch, cfg.dtype))
    return thinker, AutoTokenizer.from_pretrained(path), WhisperFeatureExtractor.from_pretrained(path)


SIZES = {
    "tiny": {"audio": dict(d_model=32, encoder_attention_heads=4, encoder_ffn_dim=64, encoder_layers=2,
                           num_mel_bins=128, max_source_positions=1500, n_window=100, output_dim=64),
             "vision": dict(depth=2, embed_dim=32, hidden_size=32, intermediate_size=64, num_heads=4,
                            out_hidden_size=64, fullatt_block_indexes=[1]),
             "text": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=2, rope_scaling={"mrope_section": [2, 3, 3], "rope_type": "default",
                                                               "type": "default"})},
    "7b": {"audio": {}, "vision": {}, "text": {"vocab_size": 152064}},  # the config defaults are Qwen2.5-Omni-7B's thinker
}
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|IMAGE|>", "<|VIDEO|>",
                  "<|vision_bos|>", "<|vision_eos|>", "<|audio_bos|>", "<|audio_eos|>")


def random_omni(size: str = "tiny", seed: int = 0, dtype: torch.dtype | None = None):
    """(thinker with random weights, tokenizer, feature extractor) of Qwen2.5-Omni's architecture:
    ``tiny`` (~0.3M parameters, for tests) or ``7b`` (the real thinker's shapes, for benchmarks;
    build it under ``torch.device("cuda")`` with ``dtype=torch.bfloat16``). The tokenizer is a
    small byte-level BPE with the chat and media special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        Qwen2_5OmniThinkerConfig,
        Qwen2_5OmniThinkerForConditionalGeneration,
        Qwen2TokenizerFast,
        WhisperFeatureExtractor,
    )

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator([SYSTEM, OmniBackboneConfig.instruction, "Prompt: a drum in a room"],
                            trainers.BpeTrainer(vocab_size=400, special_tokens=list(SPECIAL_TOKENS),
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = Qwen2TokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    spec = SIZES[size]
    config = Qwen2_5OmniThinkerConfig(
        audio_config=spec["audio"], vision_config=spec["vision"],
        text_config={"vocab_size": bpe.get_vocab_size(), **spec["text"]},
        audio_token_index=ids["<|AUDIO|>"], image_token_index=ids["<|IMAGE|>"], video_token_index=ids["<|VIDEO|>"],
        audio_start_token_id=ids["<|audio_bos|>"], audio_end_token_id=ids["<|audio_eos|>"],
        vision_start_token_id=ids["<|vision_bos|>"], vision_end_token_id=ids["<|vision_eos|>"],
        user_token_id=ids["<|im_start|>"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        thinker = Qwen2_5OmniThinkerForConditionalGeneration._from_config(config, dtype=dtype)
    return thinker, tokenizer, WhisperFeatureExtractor(feature_size=config.audio_config.num_mel_bins)


def save_random_omni(directory: str | Path, size: str = "tiny", seed: int = 0) -> Path:
    """Write a random ``random_omni(size)`` as a local model directory ``model_path`` accepts."""
    directory = Path(directory)
    for part in random_omni(size, seed):
        part.save_pretrained(directory)
    return directory
