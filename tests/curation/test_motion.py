"""Motion: static, moving and black footage are told apart from the shot stage's arrays."""

import pytest

from curation.ffmpeg import run_ffmpeg
from curation.motion import MotionStage
from curation.probe import ProbeStage
from curation.shots import ShotConfig, ShotStage
from curation.stage import run_stages

GEOMETRY = "size=320x240:rate=25"
SOURCES = {
    "still": f"color=c=0x3060a0:{GEOMETRY}",
    "grainy_still": f"color=c=0x808080:{GEOMETRY},noise=alls=12:allf=t",  # film grain, no motion
    "black": f"color=c=black:{GEOMETRY}",
    "moving": f"testsrc2={GEOMETRY}",
    "slow_zoom": f"mandelbrot={GEOMETRY}",
}


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    folder = tmp_path_factory.mktemp("motion")
    out = {}
    for name, source in SOURCES.items():
        path = folder / f"{name}.mp4"
        run_ffmpeg(["-f", "lavfi", "-i", source, "-t", "1.5", "-c:v", "libx264", "-preset", "ultrafast", str(path)])
        [item] = run_stages([ProbeStage(), ShotStage(ShotConfig(detector="none")), MotionStage()],
                            [{"source": {"path": str(path)}}])
        out[name] = item["motion"]
    return out


def test_static_footage_is_static_even_with_grain(measured):
    for name in ("still", "grainy_still", "black"):
        assert measured[name]["static"], (name, measured[name])


def test_moving_footage_is_not_static(measured):
    for name in ("moving", "slow_zoom"):
        assert not measured[name]["static"], (name, measured[name])
    assert measured["moving"]["score"] > measured["slow_zoom"]["score"] > 10 * measured["grainy_still"]["score"]


def test_black_ratio(measured):
    assert measured["black"]["black_ratio"] == 1.0
    assert measured["moving"]["black_ratio"] == measured["still"]["black_ratio"] == 0.0


def test_fade_to_black_counts_its_black_frames(tmp_path):
    path = tmp_path / "fade.mp4"
    run_ffmpeg(["-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25", "-t", "2",
                "-vf", "fade=t=out:st=0.8:d=0.2", "-c:v", "libx264", "-preset", "ultrafast", str(path)])
    [item] = run_stages([ProbeStage(), ShotStage(ShotConfig(detector="none")), MotionStage()],
                        [{"source": {"path": str(path)}}])
    assert item["motion"]["black_ratio"] == pytest.approx(1.0 / 2.0, abs=0.05)  # black from 1.0 s on


def test_missing_analysis_is_a_stage_error():
    [item] = run_stages([MotionStage()], [{"key": "k"}])
    assert item["reject"]["reason"] == "stage_error"
