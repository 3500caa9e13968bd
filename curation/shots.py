"""Shot stage: one decode of the source feeds shot detection and the per-frame analysis.

The source is decoded once, at ~160 px wide and resampled to its nominal constant
frame rate (``media_io.iter_frames``). Every frame goes to PySceneDetect's detector
(adaptive by default) and to the cheap per-frame measurements later stages need
(motion energy, black-frame flags), so no later stage decodes the source again.

Shots become clips: shorter than ``min_clip_s`` -> a rejected clip item (``too_short``,
so the footage is accounted for); longer than ``max_clip_s`` -> split into equal
windows, whose inner boundaries can optionally move to a nearby pause in speech.
One output item per clip, keyed ``{source_id}_{start_frame:07d}_{end_frame:07d}``
(end exclusive), carrying ``start_s``/``end_s``/``fps``, ``shot`` and ``analysis``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np

from curation.ffmpeg import FFmpegError
from curation.media_io import analysis_size, iter_frames
from curation.stage import Item, Resources, Stage, reject

# (start_s, end_s) of speech in a media file.
SpeechFinder = Callable[[str], list[tuple[float, float]]]


@dataclass
class ShotConfig:
    detector: str = "adaptive"  # "adaptive", "content", or "none" (the whole file is one shot)
    # The detector's threshold: adaptive_threshold (PySceneDetect default 3.0) or the
    # content threshold (default 27.0). None keeps PySceneDetect's default.
    threshold: float | None = None
    # Cuts closer together than this are merged by the detector (keep it small: clip
    # length is enforced below, this only guards against flicker).
    detector_min_shot_s: float = 0.3
    analysis_width: int = 160
    min_clip_s: float = 1.0
    max_clip_s: float = 10.0
    # Frames dropped at both ends of every shot (gradual transitions, encoder smear).
    edge_trim_frames: int = 0
    # A frame is black when this fraction of its pixels is darker than black_luma (0..1).
    black_luma: float = 0.1
    black_pixel_ratio: float = 0.98
    # Move window boundaries inside long shots out of speech (Silero VAD). Off by default:
    # it decodes the audio track and runs a model.
    snap_to_pauses: bool = False
    snap_window_s: float = 1.0


class ShotStage(Stage):
    name = "shots"
    resources: ClassVar[Resources] = Resources(cpus=1.0)

    def __init__(self, config: ShotConfig | None = None, speech_finder: SpeechFinder | None = None):
        config = config or ShotConfig()
        if config.detector not in ("adaptive", "content", "none"):
            raise ValueError(f"shots.detector must be adaptive, content or none, not {config.detector!r}")
        if config.max_clip_s < 2 * config.min_clip_s:
            raise ValueError("shots.max_clip_s must be at least twice min_clip_s (windows are split evenly)")
        super().__init__(config)
        self.speech_finder = speech_finder or (silero_speech if config.snap_to_pauses else None)

    def process(self, item: Item) -> list[Item]:
        probe, path = item["probe"], item["source"]["path"]
        fps = Fraction(probe["fps_rational"])
        try:
            cuts, energy, black, local = self._analyse(path, probe, fps)
        except FFmpegError as exc:
            return [reject(item, self.name, "decode_error", str(exc))]
        if len(energy) == 0:
            return [reject(item, self.name, "no_frames", "the video decoded to no frames")]
        bounds = [0, *sorted(c for c in set(cuts) if 0 < c < len(energy)), len(energy)]
        max_frames = math.floor(self.config.max_clip_s * fps)
        has_long_shot = any(b - a > max_frames for a, b in zip(bounds, bounds[1:], strict=False))
        # The VAD decodes the audio track: only worth it when some shot will be split.
        speech = self.speech_finder(path) if self.speech_finder and has_long_shot and probe.get("has_audio") else []
        clips = []
        for index, (start, end) in enumerate(zip(bounds, bounds[1:], strict=False)):
            start, end = start + self.config.edge_trim_frames, end - self.config.edge_trim_frames
            windows = self._windows(start, end, fps, speech)
            for number, (a, b) in enumerate(windows):
                shot = {"index": index, "window": number, "windows": len(windows),
                        "detector": self.config.detector, "n_shots": len(bounds) - 1,
                        "starts_at_cut": a in cuts, "ends_at_cut": b in cuts}
                clips.append(self._clip_item(item, a, b, fps, shot, energy, black, local))
        return clips

    def _analyse(self, path: str, probe: dict, fps: Fraction):
        cfg = self.config
        size = analysis_size(probe["display_width"], probe["display_height"], cfg.analysis_width)
        detector = self._detector(fps)
        cuts, energy, black, local, previous = [], [], [], [], None
        for number, frame in enumerate(iter_frames(path, f"{fps.numerator}/{fps.denominator}", size)):
            if detector is not None:
                cuts += detector.process_frame(number, frame)
            # Blurred, and a noise floor below: sensor noise and grain must not read as motion.
            gray = cv2.GaussianBlur(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), (5, 5), 0)
            energy.append(0.0 if previous is None else _motion_energy(gray, previous))
            local.append(0.0 if previous is None else _local_motion(gray, previous))
            black.append(bool((gray < cfg.black_luma * 255).mean() >= cfg.black_pixel_ratio))
            previous = gray
        if detector is not None:
            cuts += detector.post_process(len(energy))
        return cuts, np.asarray(energy), np.asarray(black), np.asarray(local)

    def _detector(self, fps: Fraction):
        from scenedetect.detectors import AdaptiveDetector, ContentDetector

        min_len = max(1, round(self.config.detector_min_shot_s * fps))
        threshold = self.config.threshold
        if self.config.detector == "adaptive":
            return AdaptiveDetector(min_scene_len=min_len, **({} if threshold is None else {"adaptive_threshold": threshold}))
        if self.config.detector == "content":
            return ContentDetector(min_scene_len=min_len, **({} if threshold is None else {"threshold": threshold}))
        return None

    def _windows(self, start: int, end: int, fps: Fraction, speech) -> list[tuple[int, int]]:
        """[start, end) as clips within [min_clip_s, max_clip_s]; a shot too short for that
        stays one piece, which ``_clip_item`` rejects as too_short."""
        min_frames = math.ceil(self.config.min_clip_s * fps)
        max_frames = math.floor(self.config.max_clip_s * fps)
        length = end - start
        if length < min_frames:
            return [(start, max(start, end))]
        pieces = math.ceil(length / max_frames)
        bounds = [start + round(i * length / pieces) for i in range(pieces + 1)]
        for i in range(1, pieces):
            bounds[i] = _snap(bounds[i], bounds[i - 1], bounds[i + 1], fps, speech,
                              self.config.snap_window_s, min_frames, max_frames)
        return list(zip(bounds, bounds[1:], strict=False))

    def _clip_item(self, item, start, end, fps, shot, energy, black, local) -> Item:
        source_id = item["source"]["id"]
        clip = {k: v for k, v in item.items() if k != "reject"}
        motion = energy[start:end].copy()
        if len(motion):
            motion[0] = 0.0  # its difference is to the frame before the clip (often across a cut)
        clip.update(
            key=f"{source_id}_{start:07d}_{end:07d}",
            start_frame=start, end_frame=end, fps=float(fps),
            start_s=float(start / fps), end_s=float(end / fps),
            shot=shot,
            analysis={"fps": float(fps), "motion_energy": [round(float(v), 5) for v in motion],
                      "black": [bool(v) for v in black[start:end]],
                      "local_motion": [0.0] + [round(float(v), 5) for v in local[start + 1:end]]},
        )
        if (end - start) < math.ceil(self.config.min_clip_s * fps):
            return reject(clip, self.name, "too_short",
                          f"shot of {float((end - start) / fps):.2f}s < min_clip_s={self.config.min_clip_s}")
        return clip


# Grey-level changes up to this size are noise, not motion (saturating subtraction).
_NOISE_FLOOR = 4


def _motion_energy(gray, previous) -> float:
    """Mean absolute change between two blurred grey frames above the noise floor, in 0..1."""
    return float(cv2.subtract(cv2.absdiff(gray, previous), _NOISE_FLOOR).mean()) / 255


def _local_motion(gray, previous, grid: int = 12) -> float:
    """The largest mean change above the noise floor among ``grid`` x ``grid`` blocks, 0..1:
    a mouth, eyes or hands moving in an otherwise still frame (a talking head) stand out
    here while the whole-frame mean barely moves."""
    change = cv2.subtract(cv2.absdiff(gray, previous), _NOISE_FLOOR)
    return float(cv2.resize(change.astype(np.float32), (grid, grid), interpolation=cv2.INTER_AREA).max()) / 255


def _snap(bound, lo, hi, fps, speech, window_s, min_frames, max_frames) -> int:
    """Move a window boundary out of speech to the nearest pause edge within ``window_s``,
    as long as both neighbouring windows stay within [min_frames, max_frames]."""
    t = float(bound / fps)
    for s, e in speech:
        if s < t < e:
            for edge in sorted((s, e), key=lambda x: abs(x - t)):
                new = round(edge * fps)
                ok = min_frames <= new - lo <= max_frames and min_frames <= hi - new <= max_frames
                if abs(edge - t) <= window_s and ok:
                    return new
            break
    return bound


def silero_speech(path: str | Path) -> list[tuple[float, float]]:
    """Speech segments of a media file (Silero VAD, as curation.vad runs it)."""
    from faster_whisper.audio import decode_audio

    from curation.vad import SAMPLE_RATE, speech_segments

    return speech_segments(decode_audio(str(path), sampling_rate=SAMPLE_RATE), min_silence_ms=200)
