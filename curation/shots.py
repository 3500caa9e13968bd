"""Shot stage: one decode of the source feeds shot detection, the per-frame analysis and
the clips' pixels.

The source is decoded once (``media_io.decode_frames``), resampled to its nominal
constant frame rate, with frame 0 at the video stream's first frame. Every frame is
shrunk to ~160 px wide for PySceneDetect's detector (adaptive by default) and for the
cheap per-frame measurements later stages need (``frame_measurements``: motion energy,
black-frame flags), so no later stage decodes the source again.

With a ``Handoff`` (the curation DAG sets one), the frames are decoded at the clips'
output size instead, held in a spool on local disk, and each finished clip is handed to
the clip stage as its raw frames plus its slice of the source's audio (decoded once,
from the same origin): the clip stage only encodes. Without one (tests, analysis-only
use) the clip stage cuts each clip out of the source itself.

Shots become clips as the decode goes, with a bounded lookahead: shorter than
``min_clip_s`` -> a rejected clip item (``too_short``, so the footage is accounted for);
longer than ``max_clip_s`` -> windows of ``max_clip_s`` while more than two windows' worth
remains, then the rest split evenly in two, so every window lies in [min_clip_s,
max_clip_s] and no more than two windows of frames wait on disk. Inner window
boundaries can optionally move to a nearby pause in speech.
One output item per clip, keyed ``{source_id}_{start_frame:07d}_{end_frame:07d}``
(end exclusive), carrying ``start_s``/``end_s``/``fps``, ``shot`` and ``analysis``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np

from curation.ffmpeg import FFmpegError
from curation.media_io import (
    FrameFormat,
    FrameSpool,
    analysis_size,
    decode_audio,
    decode_frames,
    decode_frames_and_thumbnails,
    output_size,
)
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


@dataclass(frozen=True)
class Handoff:
    """Where and how the shot stage hands each clip its decoded media (the DAG sets it
    from the clip stage's config, so both agree on size and audio rate)."""

    work_dir: str
    max_side: int = 512  # the clips' longer side (ClipConfig.max_side; 0 keeps the size)
    sample_rate: int | None = 48000  # the clips' audio rate (ClipConfig.sample_rate; None keeps it)


class ShotStage(Stage):
    name = "shots"
    resources: ClassVar[Resources] = Resources(cpus=1.0)
    fans_out = True

    def __init__(self, config: ShotConfig | None = None, speech_finder: SpeechFinder | None = None,
                 handoff: Handoff | None = None):
        config = config or ShotConfig()
        if config.detector not in ("adaptive", "content", "none"):
            raise ValueError(f"shots.detector must be adaptive, content or none, not {config.detector!r}")
        if config.max_clip_s < 2 * config.min_clip_s:
            raise ValueError("shots.max_clip_s must be at least twice min_clip_s (windows are split evenly)")
        super().__init__(config)
        self.speech_finder = speech_finder  # None: Silero VAD on the audio, when snap_to_pauses
        self.handoff = handoff

    def setup(self) -> None:
        # Analysis frames are ~160 px: OpenCV's thread pool costs more than it saves there,
        # and ffmpeg's decoder threads need the cores.
        cv2.setNumThreads(1)

    def process(self, item: Item) -> list[Item]:
        return list(self.stream(item))

    def stream(self, item: Item) -> Iterator[Item]:
        cfg, probe, path = self.config, item["probe"], item["source"]["path"]
        fps = Fraction(probe["fps_rational"])
        rate = f"{fps.numerator}/{fps.denominator}"
        origin = float(probe.get("video_start_s") or 0.0)
        shown = (probe["display_width"], probe["display_height"])
        speech: list = []

        def find_speech() -> list:  # decoded and run once, the first time a boundary may snap
            if self.config.snap_to_pauses and probe.get("has_audio") and not speech:
                speech.append(self.speech_finder(path) if self.speech_finder else silero_speech(path, origin))
            return speech[0] if speech else []

        detector = self._detector(fps)
        lag = detector.event_buffer_length + 1 if detector is not None else 0
        windows = _Windows(cfg, fps, find_speech)
        measures: dict[str, list] = {}
        count, previous, media, frames = 0, None, None, None
        try:
            if self.handoff:
                fmt = FrameFormat(*output_size(*shown, self.handoff.max_side), rate=rate)
                media = _Media(self.handoff, fmt, item, origin)
                frames = decode_frames_and_thumbnails(path, rate, (fmt.width, fmt.height),
                                                      analysis_size(fmt.width, fmt.height, cfg.analysis_width),
                                                      origin_s=origin)
            else:
                size = analysis_size(*shown, cfg.analysis_width)
                frames = ((None, f) for f in decode_frames(path, rate, size, origin_s=origin))
            for count, (planes, small) in enumerate(frames, start=1):
                if media:
                    media.spool.append(planes)
                if detector is not None:
                    windows.add_cuts(detector.process_frame(count - 1, small))
                gray = cv2.GaussianBlur(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY), (5, 5), 0)
                for name, value in frame_measurements(gray, previous, cfg).items():
                    measures.setdefault(name, []).append(value)
                previous = gray
                for window in windows.settle(count - lag):
                    yield self._clip_item(item, *window, fps, measures, media)
            if count == 0:
                yield reject(item, self.name, "no_frames", "the video decoded to no frames")
                return
            if detector is not None:
                windows.add_cuts(detector.post_process(count))
            for window in windows.finish(count):
                yield self._clip_item(item, *window, fps, measures, media)
        except FFmpegError as exc:
            done = f" (after {windows.next} frames were clipped)" if windows.next else ""
            yield reject(item, self.name, "decode_error", f"{exc}{done}")
        finally:
            if frames is not None:
                frames.close()
            if media is not None:
                media.close()

    def _detector(self, fps: Fraction):
        from scenedetect.detectors import AdaptiveDetector, ContentDetector

        min_len = max(1, round(self.config.detector_min_shot_s * fps))
        threshold = self.config.threshold
        if self.config.detector == "adaptive":
            return AdaptiveDetector(min_scene_len=min_len, **({} if threshold is None else {"adaptive_threshold": threshold}))
        if self.config.detector == "content":
            return ContentDetector(min_scene_len=min_len, **({} if threshold is None else {"threshold": threshold}))
        return None

    def _clip_item(self, item, start, end, shot, fps, measures, media) -> Item:
        source_id = item["source"]["id"]
        clip = {k: v for k, v in item.items() if k != "reject"}
        analysis = {"fps": float(fps)}
        for name, values in measures.items():
            part = values[start:end]
            if part and isinstance(part[0], float):
                # Each float measure compares a frame with the one before; before the clip's
                # first frame lies the previous shot (often across a cut): not motion here.
                analysis[name] = [0.0] + [round(v, 5) for v in part[1:]]
            else:
                analysis[name] = [bool(v) for v in part]
        clip.update(
            key=f"{source_id}_{start:07d}_{end:07d}",
            start_frame=start, end_frame=end, fps=float(fps),
            start_s=float(start / fps), end_s=float(end / fps),
            shot={**shot, "detector": self.config.detector}, analysis=analysis,
        )
        if (end - start) < math.ceil(self.config.min_clip_s * fps):
            return reject(clip, self.name, "too_short",
                          f"shot of {float((end - start) / fps):.2f}s < min_clip_s={self.config.min_clip_s}")
        if media:
            clip["handoff"] = media.export(clip["key"], start, end, fps)
        return clip


def frame_measurements(gray: np.ndarray, previous: np.ndarray | None, cfg: ShotConfig) -> dict[str, float | bool]:
    """The per-frame analysis: one value per measurement for one blurred grey analysis frame
    (``previous`` is the frame before, None for the first). Each becomes a per-clip array
    ``analysis[name]``; float measures compare the frame with the previous one."""
    return {
        "motion_energy": 0.0 if previous is None else _motion_energy(gray, previous),
        "local_motion": 0.0 if previous is None else _local_motion(gray, previous),
        "black": bool((gray < cfg.black_luma * 255).mean() >= cfg.black_pixel_ratio),
    }


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


class _Media:
    """The decoded media of one source on its way to the clip stage: the frame spool, and
    the whole audio track decoded once from the video's first frame."""

    def __init__(self, handoff: Handoff, fmt: FrameFormat, item: Item, origin_s: float):
        probe = item["probe"]
        self.dir = Path(handoff.work_dir)
        self.fmt = fmt
        self.spool = FrameSpool(self.dir / f".spool-{item['source']['id']}", fmt.frame_bytes)
        self.audio = None
        if probe.get("has_audio"):
            self.rate = handoff.sample_rate or probe["audio_sample_rate"]
            self.channels = probe["audio_channels"]
            raw = decode_audio(item["source"]["path"], origin_s, self.rate, self.spool.dir / "audio.f32")
            self.audio = np.memmap(raw, dtype=np.float32, mode="r").reshape(-1, self.channels)

    def export(self, key: str, start: int, end: int, fps: Fraction) -> dict:
        """Hand over frames [start, end) (links to the spool's chunks) and the audio samples
        of the same interval, padded with silence where the track ends early."""
        folder = self.dir / f"{key}.frames"
        frames = self.spool.export(start, end, folder)
        self.spool.release(start)
        out = {"frames": frames, "width": self.fmt.width, "height": self.fmt.height, "rate": self.fmt.rate,
               "paths": [str(folder)]}
        if self.audio is not None:
            first, count = round(start / fps * self.rate), round((end - start) / fps * self.rate)
            samples = np.zeros((count, self.channels), np.float32)
            part = self.audio[first: first + count]
            samples[: len(part)] = part
            path = self.dir / f"{key}.f32"
            samples.tofile(path)
            out.update(audio=str(path), sample_rate=self.rate, channels=self.channels)
            out["paths"].append(str(path))
        return out

    def close(self) -> None:
        self.audio = None
        self.spool.close()
        for leftover in self.spool.dir.glob("*"):
            leftover.unlink(missing_ok=True)
        self.spool.dir.rmdir()


class _Windows:
    """Cuts and the count of settled frames (those no later cut can precede) in, clip
    windows ``(start, end, shot)`` out, with at most two windows of lookahead."""

    def __init__(self, cfg: ShotConfig, fps: Fraction, speech: Callable[[], list]):
        self.min = math.ceil(cfg.min_clip_s * fps)
        self.max = math.floor(cfg.max_clip_s * fps)
        self.trim, self.fps, self.speech, self.snap_s = cfg.edge_trim_frames, fps, speech, cfg.snap_window_s
        self.snap = cfg.snap_to_pauses
        self.shot_start = self.next = self.index = self.window = 0
        self.pending: list[int] = []
        self.cuts: set[int] = set()

    def add_cuts(self, cuts) -> None:
        for cut in cuts:
            if cut > max(self.shot_start, self.next) and cut not in self.cuts:  # a later cut never moves a finished clip
                self.cuts.add(cut)
                self.pending.append(cut)
        self.pending.sort()

    def settle(self, settled: int) -> list:
        out = []
        while self.pending and self.pending[0] <= settled:
            out += self._close(self.pending.pop(0))
        lo = max(self.next, self.shot_start + self.trim)
        while settled - self.trim - lo > 2 * self.max:  # the shot goes on for more than two windows
            out.append(self._window(lo, self._snap(lo + self.max, lo, None)))
            lo = self.next
        return out

    def finish(self, count: int) -> list:
        out = []
        for cut in self.pending:
            if cut < count:
                out += self._close(cut)
        self.pending = []
        return out + self._close(count)

    def _close(self, end: int) -> list:
        lo, hi = max(self.next, self.shot_start + self.trim), end - self.trim
        out = []
        while hi - lo > 2 * self.max:
            out.append(self._window(lo, lo + self.max))
            lo = self.next
        if hi - lo > self.max:  # the rest, in two even windows
            out.append(self._window(lo, self._snap(lo + (hi - lo) // 2, lo, hi)))
            lo = self.next
        out.append(self._window(lo, max(lo, hi)))  # shorter than min_clip_s: a too_short reject
        self.shot_start = self.next = end
        self.index, self.window = self.index + 1, 0
        return out

    def _window(self, start: int, end: int) -> tuple:
        shot = {"index": self.index, "window": self.window,
                "starts_at_cut": start in self.cuts, "ends_at_cut": end in self.cuts}
        self.next, self.window = end, self.window + 1
        return start, end, shot

    def _snap(self, bound: int, lo: int, hi: int | None) -> int:
        """Move a window boundary out of speech to the nearest pause edge within
        ``snap_window_s``, as long as the windows on both sides stay within [min, max]."""
        if not self.snap:
            return bound
        t = float(bound / self.fps)
        for s, e in self.speech():
            if s < t < e:
                for edge in sorted((s, e), key=lambda x: abs(x - t)):
                    new = round(edge * self.fps)
                    ok = self.min <= new - lo <= self.max and (hi is None or self.min <= hi - new <= self.max)
                    if abs(edge - t) <= self.snap_s and ok:
                        return new
                break
        return bound


def silero_speech(path: str | Path, origin_s: float = 0.0) -> list[tuple[float, float]]:
    """Speech segments of a media file (Silero VAD, as curation.vad runs it), in seconds from
    ``origin_s`` on the file's timeline (the video's first frame, like the shots)."""
    import tempfile

    from curation.vad import SAMPLE_RATE, speech_segments

    with tempfile.TemporaryDirectory() as tmp:
        mono = np.fromfile(decode_audio(path, origin_s, SAMPLE_RATE, Path(tmp) / "audio.f32", channels=1), np.float32)
    return speech_segments(mono, min_silence_ms=200)
