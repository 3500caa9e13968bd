"""Filter stage: drop clips whose measurements fall outside the configured thresholds.

Runs last, after every measurement. Each failed check is its own reason code, and the
message names the measured value and the threshold, so the rejects table says exactly
why a clip went. A measurement that is missing (its stage was skipped, or could not
measure) is never a reason to drop a clip.

Reason codes: ``too_short``, ``too_long``, ``too_quiet``, ``mostly_silent``,
``too_little_speech``, ``static``, ``mostly_black``, ``av_desync``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from curation.stage import Item, Resources, Stage, reject


@dataclass
class FilterConfig:
    min_duration_s: float = 1.0
    max_duration_s: float = 30.0
    min_loudness_lufs: float = -60.0  # below: effectively silent audio
    max_silence_ratio: float = 0.95  # share of 50 ms windows below the silence level
    min_speech_ratio: float = 0.0  # 0 = off; raise it for talking-head datasets
    reject_static: bool = True  # motion stage's verdict: a frozen picture
    max_black_ratio: float = 0.5  # share of black frames
    # Only clips whose offset was measured confidently and left as is ("kept") are checked:
    # corrected clips are in sync by construction, rejected ones never reach here, and
    # unmeasured ones (offset null) are the sync stage's call (sync.require=measured).
    max_abs_sync_offset_ms: float = 200.0
    min_sync_confidence: float = 0.3


def _get(item: Item, section: str, field: str) -> Any:
    return (item.get(section) or {}).get(field)


class FilterStage(Stage):
    name = "filter"
    resources: ClassVar[Resources] = Resources(cpus=0.25)

    def __init__(self, config: FilterConfig | None = None):
        super().__init__(config or FilterConfig())

    def failures(self, item: Item) -> list[tuple[str, str]]:
        """Every failed check as ``(reason, message)``, in a fixed order."""
        cfg: FilterConfig = self.config
        out = []
        duration = item.get("end_s", 0.0) - item.get("start_s", 0.0)
        if duration < cfg.min_duration_s:
            out.append(("too_short", f"duration {duration:.2f}s < min_duration_s={cfg.min_duration_s}"))
        if duration > cfg.max_duration_s:
            out.append(("too_long", f"duration {duration:.2f}s > max_duration_s={cfg.max_duration_s}"))
        loudness = _get(item, "audio", "loudness_lufs")
        if loudness is not None and loudness < cfg.min_loudness_lufs:
            out.append(("too_quiet", f"loudness {loudness:.1f} LUFS < min_loudness_lufs={cfg.min_loudness_lufs}"))
        silence = _get(item, "audio", "silence_ratio")
        if silence is not None and silence > cfg.max_silence_ratio:
            out.append(("mostly_silent", f"silence ratio {silence:.2f} > max_silence_ratio={cfg.max_silence_ratio}"))
        speech = _get(item, "audio", "speech_ratio")
        if cfg.min_speech_ratio > 0 and speech is not None and speech < cfg.min_speech_ratio:
            out.append(("too_little_speech", f"speech ratio {speech:.2f} < min_speech_ratio={cfg.min_speech_ratio}"))
        if cfg.reject_static and _get(item, "motion", "static"):
            out.append(("static", f"static picture (motion score {_get(item, 'motion', 'score')})"))
        black = _get(item, "motion", "black_ratio")
        if black is not None and black > cfg.max_black_ratio:
            out.append(("mostly_black", f"black frames {black:.2f} > max_black_ratio={cfg.max_black_ratio}"))
        offset, confidence = _get(item, "sync", "offset_ms"), _get(item, "sync", "confidence") or 0.0
        if (_get(item, "sync", "action") == "kept" and offset is not None and confidence >= cfg.min_sync_confidence
                and abs(offset) > cfg.max_abs_sync_offset_ms):
            out.append(("av_desync", f"A/V offset {offset:.0f} ms (confidence {confidence:.2f}) > "
                                     f"max_abs_sync_offset_ms={cfg.max_abs_sync_offset_ms}"))
        return out

    def process(self, item: Item) -> list[Item]:
        failed = self.failures(item)
        if not failed:
            return [item]
        reason, message = failed[0]
        if len(failed) > 1:
            message += "; also " + "; ".join(f"{r}: {m}" for r, m in failed[1:])
        return [reject(item, self.name, reason, message)]
