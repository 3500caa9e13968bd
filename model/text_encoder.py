"""Prompt encoder: a transformers encoder (T5 / UMT5 class in production) plus the prompt
structure of :mod:`model.prompts`, producing a :class:`Conditioning` for the DiT.

Loads from a local directory or a hub name (``name_or_path``); nothing here downloads in
tests, which build a tiny random T5 with :meth:`TextEncoder.tiny_random` and use the
offline :class:`ByteTokenizer`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from model.conditioning import Conditioning
from model.prompts import annotate_tokens, check_references, parse_prompt
from model.references import Reference

_ENCODER_ONLY = {"t5": "T5EncoderModel", "mt5": "MT5EncoderModel", "umt5": "UMT5EncoderModel"}


@dataclass
class TextEncoderConfig:
    name_or_path: str = ""  # e.g. a local copy of google/umt5-xxl
    tokenizer: str = ""  # "" = the model's own; "bytes" = the offline ByteTokenizer
    max_length: int = 256
    dtype: str = "bfloat16"


class ByteTokenizer:
    """UTF-8 bytes as tokens (T5 conventions: pad 0, eos 1, bytes from 3), with offsets.

    Needs no files, so tests and smoke runs work offline; production uses the model's
    sentencepiece tokenizer.
    """

    vocab_size = 259
    pad_id, eos_id = 0, 1

    def __call__(self, prompts: list[str], max_length: int):
        rows, offsets = [], []
        for text in prompts:
            ids, offs = [], []
            for i, ch in enumerate(text):
                for byte in ch.encode("utf-8"):
                    ids.append(byte + 3)
                    offs.append((i, i + 1))
            ids, offs = ids[: max_length - 1] + [self.eos_id], offs[: max_length - 1] + [(0, 0)]
            rows.append(ids)
            offsets.append(offs)
        length = max(len(r) for r in rows)
        ids = torch.full((len(rows), length), self.pad_id)
        mask = torch.zeros(len(rows), length, dtype=torch.bool)
        for b, r in enumerate(rows):
            ids[b, : len(r)] = torch.tensor(r)
            mask[b, : len(r)] = True
            offsets[b] += [(0, 0)] * (length - len(r))
        return ids, mask, offsets


class TextEncoder(nn.Module):
    def __init__(self, model: nn.Module, tokenizer, max_length: int = 256):
        super().__init__()
        self.model, self.tokenizer, self.max_length = model, tokenizer, max_length

    @classmethod
    def from_config(cls, cfg: TextEncoderConfig) -> TextEncoder:
        import transformers

        if not cfg.name_or_path:
            raise ValueError("text encoder: set name_or_path to a local model directory or hub name")
        config = transformers.AutoConfig.from_pretrained(cfg.name_or_path)
        model_cls = getattr(transformers, _ENCODER_ONLY.get(config.model_type, "AutoModel"))
        model = model_cls.from_pretrained(cfg.name_or_path, dtype=getattr(torch, cfg.dtype))
        tokenizer = (ByteTokenizer() if cfg.tokenizer == "bytes"
                     else transformers.AutoTokenizer.from_pretrained(cfg.tokenizer or cfg.name_or_path))
        return cls(model.eval().requires_grad_(False), tokenizer, cfg.max_length)

    @classmethod
    def tiny_random(cls, dim: int = 64, layers: int = 2, seed: int = 0) -> TextEncoder:
        from transformers import T5Config, T5EncoderModel

        torch.manual_seed(seed)
        config = T5Config(vocab_size=ByteTokenizer.vocab_size, d_model=dim, d_kv=dim // 4, d_ff=2 * dim,
                          num_layers=layers, num_heads=4)
        return cls(T5EncoderModel(config).eval().requires_grad_(False), ByteTokenizer())

    @property
    def dim(self) -> int:
        return self.model.config.d_model if hasattr(self.model.config, "d_model") else self.model.config.hidden_size

    def tokenize(self, prompts: list[str]):
        """-> ids (B, L), mask (B, L), per-token character offsets."""
        if isinstance(self.tokenizer, ByteTokenizer):
            return self.tokenizer(prompts, self.max_length)
        out = self.tokenizer(prompts, padding=True, truncation=True, max_length=self.max_length,
                             return_offsets_mapping=True, return_tensors="pt")
        return out["input_ids"], out["attention_mask"].bool(), out["offset_mapping"].tolist()

    @torch.no_grad()
    def encode(self, prompts: list[str], references: list[Reference] | None = None,
               fps: float | None = None) -> Conditioning:
        parsed = [parse_prompt(p) for p in prompts]
        available = {(r.kind, r.index) for r in references or ()}
        for p in parsed:
            check_references(p, available)
        ids, mask, offsets = self.tokenize(prompts)
        device = next(self.model.parameters()).device
        hidden = self.model(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state
        hidden = hidden * mask.to(device)[..., None]  # padded positions carry nothing
        annotated = [annotate_tokens(p, [tuple(o) for o in offs]) for p, offs in zip(parsed, offsets, strict=True)]
        spans = torch.stack([a[0] for a in annotated]).to(device)
        slots = torch.stack([a[1] for a in annotated]).to(device)
        return Conditioning(hidden.float(), mask.to(device), spans, slots, references, fps)
