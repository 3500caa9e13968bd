"""One timing origin: the analysis decode, the cut and the audio all count from the video
stream's first frame, even when the audio stream starts earlier (a container's start
time is the earliest stream's, which is not where frame 0 is)."""

import numpy as np
import pytest
import soundfile as sf

from curation.clip import ClipConfig, ClipStage
from curation.ffmpeg import run_ffmpeg
from curation.media_io import iter_frames
from curation.probe import ProbeStage
from curation.sample_media import make_clip
from curation.shots import Handoff, ShotConfig, ShotStage
from curation.stage import run_stages

LEAD_S = 0.5  # the audio starts this long before the first video frame


@pytest.fixture(scope="module")
def audio_first(tmp_path_factory):
    """Flashes and clicks in sync; the video stream starts 0.5 s after the audio stream,
    whose lead-in holds one more click (at 0.2 s) that no frame shows."""
    d = tmp_path_factory.mktemp("origin")
    synced = make_clip(d / "synced.mp4", [4.0], size=(160, 120), beeps=True, stereo=False)
    lead_click = "0.8*sin(2*PI*1500*t)*between(t\\,0.2\\,0.215)"
    path = d / "audio_first.mp4"
    run_ffmpeg(["-itsoffset", str(LEAD_S), "-i", str(synced.path), "-i", str(synced.path),
                "-f", "lavfi", "-i", f"aevalsrc={lead_click}:s=48000:d={LEAD_S}",
                "-filter_complex", f"[1:a]adelay={int(LEAD_S * 1000)}:all=1[late];[late][2:a]amix=inputs=2:normalize=0[a]",
                "-map", "0:v", "-map", "[a]", "-c:v", "copy", "-c:a", "aac", "-b:a", "192k", str(path)])
    return path, synced


def click_times(samples: np.ndarray, rate: int) -> list[float]:
    loud = np.flatnonzero(np.abs(samples.mean(axis=1)) > 0.2)
    starts = loud[np.insert(np.diff(loud) > rate * 0.05, 0, True)]
    return [s / rate for s in starts]


def flash_frames(mp4, size) -> list[int]:
    w, h = size
    box = [f[3 * h // 8: 5 * h // 8, 3 * w // 8: 5 * w // 8].mean() for f in iter_frames(mp4, "25", size)]
    return [i for i, v in enumerate(box) if v > 235]


def test_probe_finds_the_first_frame_after_the_audio_start(audio_first):
    path, _ = audio_first
    [item] = run_stages([ProbeStage()], [{"source": {"path": str(path)}}])
    probe = item["probe"]
    assert probe["video_start_s"] == pytest.approx(LEAD_S, abs=0.002)
    assert probe["audio_start_s"] == pytest.approx(0.0, abs=0.03) and probe["start_time_s"] < LEAD_S


@pytest.mark.parametrize("handoff", [True, False], ids=["handed over", "cut from the source"])
def test_cut_and_audio_count_from_the_first_video_frame(audio_first, tmp_path, handoff):
    path, synced = audio_first
    stages = [ProbeStage(), ShotStage(ShotConfig(detector="none", min_clip_s=0.5, max_clip_s=2.0),
                                      handoff=Handoff(str(tmp_path)) if handoff else None),
              ClipStage(ClipConfig(work_dir=str(tmp_path), max_side=0))]
    clips = run_stages(stages, [{"source": {"path": str(path)}}])
    assert [(c["start_frame"], c["end_frame"]) for c in clips] == [(0, 50), (50, 100)]  # 4 s of video, not 4.5
    beeps = [round(t * 25) for t in synced.beep_times_s]  # flash frames, counted from the first video frame
    for clip in clips:
        first, last = clip["start_frame"], clip["end_frame"]
        # Frames: each flash lands on its own frame number, so the cut starts at the analysed frame.
        assert flash_frames(clip["files"]["mp4"], (160, 120)) == [b - first for b in beeps if first <= b < last]
        # Audio: each click at its flash (sample-accurate), and the click before the video is not there.
        samples, rate = sf.read(clip["files"]["flac"], always_2d=True)
        expected = [b / 25 - clip["start_s"] for b in beeps if first <= b < last]
        got = click_times(samples, rate)
        assert len(got) == len(expected) and np.allclose(got, expected, atol=0.003), (got, expected)
