"""Prompt structure the DiT understands: @-reference tags and multi-shot time ranges.

- ``@image1``..``@image9``, ``@video1``..``@video3``, ``@audio1``..``@audio3`` address the
  reference clips passed alongside the prompt. Each gets a *slot* id (1..15, 0 = none).
  The text tokens spelling a tag carry that slot's learned embedding, and so do the
  reference's latent tokens, which is how "the dog from @image2" finds image 2.
- ``[0-3s] close-up ... [3-6s] wide shot ...``: the text after a marker, up to the next
  marker, conditions only tokens whose time lies in that range. Text before the first
  marker is global (conditions every token).

Parsing works on characters; :func:`annotate_tokens` maps the result onto any tokenizer's
tokens through their character offsets.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import torch

REFERENCE_LIMITS = {"image": 9, "video": 3, "audio": 3}
_SLOT_BASE = {"image": 0, "video": 9, "audio": 12}
NUM_REFERENCE_SLOTS = 15

_TAG = re.compile(r"@(image|video|audio)(\d+)\b")
_SHOT = re.compile(r"\[\s*(\d+(?:\.\d+)?)\s*s?\s*-\s*(\d+(?:\.\d+)?)\s*s\s*\]")


def reference_slot(kind: str, index: int) -> int:
    """Slot id 1..15 of ``@{kind}{index}``; raises with the valid range otherwise."""
    if kind not in REFERENCE_LIMITS:
        raise ValueError(f"unknown reference kind {kind!r}; use one of {sorted(REFERENCE_LIMITS)}")
    if not 1 <= index <= REFERENCE_LIMITS[kind]:
        raise ValueError(f"@{kind}{index}: {kind} references are numbered 1..{REFERENCE_LIMITS[kind]}")
    return _SLOT_BASE[kind] + index


@dataclass(frozen=True)
class ReferenceTag:
    kind: str
    index: int
    start: int  # character span of the tag in the prompt
    end: int

    @property
    def slot(self) -> int:
        return reference_slot(self.kind, self.index)


@dataclass(frozen=True)
class Shot:
    start_s: float
    end_s: float
    start: int  # character span of the shot's text, marker included
    end: int


@dataclass
class ParsedPrompt:
    text: str
    tags: list[ReferenceTag] = field(default_factory=list)
    shots: list[Shot] = field(default_factory=list)

    def time_range_at(self, char: int) -> tuple[float, float]:
        for shot in self.shots:
            if shot.start <= char < shot.end:
                return shot.start_s, shot.end_s
        return -math.inf, math.inf

    def slot_at(self, char: int) -> int:
        return next((t.slot for t in self.tags if t.start <= char < t.end), 0)


def parse_prompt(text: str) -> ParsedPrompt:
    tags = [ReferenceTag(m[1], int(m[2]), m.start(), m.end()) for m in _TAG.finditer(text)]
    for tag in tags:
        reference_slot(tag.kind, tag.index)  # validates the index
    markers = list(_SHOT.finditer(text))
    shots = []
    for i, m in enumerate(markers):
        start_s, end_s = float(m[1]), float(m[2])
        if end_s <= start_s:
            raise ValueError(f"shot marker {m[0]!r} must have end > start")
        end_char = markers[i + 1].start() if i + 1 < len(markers) else len(text)
        shots.append(Shot(start_s, end_s, m.start(), end_char))
    return ParsedPrompt(text, tags, shots)


def check_references(parsed: ParsedPrompt, available: set[tuple[str, int]]) -> None:
    """Raise if the prompt names a reference that was not supplied (a silent no-op
    would generate something other than what the user asked for)."""
    missing = sorted({(t.kind, t.index) for t in parsed.tags} - available)
    if missing:
        names = ", ".join(f"@{k}{i}" for k, i in missing)
        raise ValueError(f"prompt mentions {names} but no such reference was given")


def annotate_tokens(
    parsed: ParsedPrompt, offsets: list[tuple[int, int]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token time ranges (L, 2) in seconds and reference slots (L,) from char offsets.

    Special tokens (empty offsets, e.g. EOS/padding) are global and slot-free.
    """
    spans = torch.empty(len(offsets), 2)
    spans[:, 0], spans[:, 1] = -math.inf, math.inf
    slots = torch.zeros(len(offsets), dtype=torch.long)
    for i, (start, end) in enumerate(offsets):
        if end <= start:
            continue
        spans[i] = torch.tensor(parsed.time_range_at(start))
        slots[i] = parsed.slot_at(start)
    return spans, slots


def text_time_mask(query_times: torch.Tensor, spans: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
    """Which text tokens each branch token may attend: (B, 1, N, L) bool.

    ``query_times`` (N,) in seconds, NaN for tokens outside the clip's time axis
    (references), which see every valid text token. ``spans`` (B, L, 2), ``key_mask`` (B, L).
    """
    t = query_times[None, :, None]
    inside = (spans[:, None, :, 0] <= t) & (t < spans[:, None, :, 1])
    inside = inside | torch.isnan(t)
    return (inside & key_mask[:, None, :])[:, None]
