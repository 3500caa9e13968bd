"""The synthetic footage helper: ffprobe must confirm durations, streams and cut times."""

import numpy as np
import pytest

from curation.ffmpeg import ffprobe
from curation.sample_media import make_clip, make_tone


def stream(info, kind):
    return next(s for s in info["streams"] if s["codec_type"] == kind)


def frame_luma_means(path):
    """Mean luma per decoded frame, via ffprobe's signalstats on the lavfi movie source."""
    info = ffprobe(f"movie={path},signalstats", "-f", "lavfi",
                   "-show_entries", "frame=pts_time:frame_tags=lavfi.signalstats.YAVG")
    frames = info["frames"]
    return (np.array([float(f["pts_time"]) for f in frames]),
            np.array([float(f["tags"]["lavfi.signalstats.YAVG"]) for f in frames]))


def test_clip_has_the_requested_streams_and_duration(tmp_path):
    clip = make_clip(tmp_path / "a.mp4", [1.0, 1.5], fps=25, size=(160, 120), sample_rate=48000)
    info = ffprobe(clip.path)
    v, a = stream(info, "video"), stream(info, "audio")
    assert (v["width"], v["height"]) == (160, 120) and v["r_frame_rate"] == "25/1"
    assert int(v["nb_frames"]) == 62 or int(v["nb_frames"]) == 63
    assert a["channels"] == 2 and int(a["sample_rate"]) == 48000
    assert float(info["format"]["duration"]) == pytest.approx(2.5, abs=0.05)
    assert clip.cut_times_s == [1.0]


def test_cut_times_are_where_the_picture_changes(tmp_path):
    clip = make_clip(tmp_path / "cuts.mp4", [0.8, 1.2, 1.0], fps=25, size=(160, 120), audio=False)
    times, luma = frame_luma_means(clip.path)
    jumps = np.abs(np.diff(luma))
    biggest = sorted(times[1:][np.argsort(jumps)[-2:]])
    assert biggest == pytest.approx(clip.cut_times_s, abs=1 / 25 + 1e-6)
    assert "audio" not in {s["codec_type"] for s in ffprobe(clip.path)["streams"]}


def test_audio_offset_delays_the_audio(tmp_path):
    import av

    def first_loud_sample_s(path):
        with av.open(str(path)) as c:
            samples = np.concatenate([f.to_ndarray()[0] for f in c.decode(audio=0)])
            rate = c.streams.audio[0].rate
        return np.argmax(np.abs(samples) > 0.05) / rate

    base = make_clip(tmp_path / "b.mp4", [1.0], beeps=True, size=(64, 48))
    late = make_clip(tmp_path / "l.mp4", [1.0], beeps=True, size=(64, 48), audio_offset_s=0.2)
    assert first_loud_sample_s(late.path) - first_loud_sample_s(base.path) == pytest.approx(0.2, abs=0.005)


def test_tone_is_audio_only(tmp_path):
    info = ffprobe(make_tone(tmp_path / "t.wav", 1.0))
    assert [s["codec_type"] for s in info["streams"]] == ["audio"]
