"""Clip: the interval is cut frame-exactly and sample-exactly, durations agree, channels
and rates are what the config asks for, and a disagreement becomes a reject. Both ways
a clip gets its pixels are checked: handed over by the shot stage's one decode (the
DAG's way), and cut out of the source (a clip picked by hand)."""

from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf

from curation.clip import ClipConfig, ClipStage
from curation.ffmpeg import ffprobe
from curation.media_io import iter_frames
from curation.probe import ProbeStage
from curation.sample_media import make_clip
from curation.shots import Handoff, ShotConfig, ShotStage
from curation.stage import run_stages


def clips_of(path, work_dir, shot_config=None, handoff=True, **clip_config):
    clip = ClipConfig(work_dir=str(work_dir), **clip_config)
    shots = ShotStage(shot_config or ShotConfig(),
                      handoff=Handoff(str(work_dir), clip.max_side, clip.sample_rate) if handoff else None)
    out = run_stages([ProbeStage(), shots, ClipStage(clip)], [{"source": {"path": str(path)}}])
    assert not [p for p in Path(work_dir).iterdir() if p.suffix not in (".mp4", ".flac")]  # handed-off media gone
    return out


def frames(path, size):
    return np.stack([f.astype(np.float32) for f in iter_frames(path, "25", size)])


@pytest.fixture(scope="module")
def one_long_shot(tmp_path_factory):
    """6 s of testsrc2 (every frame differs; a keyframe every 25 frames)."""
    return make_clip(tmp_path_factory.mktemp("clip") / "moving.mp4", [6.0], size=(160, 120))


@pytest.fixture(scope="module", params=["handed over", "cut from the source"])
def windows(one_long_shot, tmp_path_factory, request):
    return clips_of(one_long_shot.path, tmp_path_factory.mktemp("out"), ShotConfig(min_clip_s=0.5, max_clip_s=1.6),
                    handoff=request.param == "handed over")


def test_frames_are_exactly_the_interval(one_long_shot, windows):
    # Boundaries off the keyframes, clips starting after the 1 s pre-roll: seeking must be exact.
    assert [(c["start_frame"], c["end_frame"]) for c in windows] == [(0, 40), (40, 80), (80, 115), (115, 150)]
    source = frames(one_long_shot.path, (160, 120))
    for clip in windows:
        got = frames(clip["files"]["mp4"], (160, 120))
        assert len(got) == clip["clip"]["n_frames"] == clip["end_frame"] - clip["start_frame"]
        for index, frame in ((clip["start_frame"], got[0]), (clip["end_frame"] - 1, got[-1])):
            candidates = [j for j in (index - 1, index, index + 1) if 0 <= j < len(source)]
            errors = [np.abs(source[j] - frame).mean() for j in candidates]
            assert candidates[int(np.argmin(errors))] == index


def test_audio_is_the_same_samples_and_durations_agree(one_long_shot, windows):
    with av.open(str(one_long_shot.path)) as container:
        source = np.concatenate([f.to_ndarray() for f in container.decode(audio=0)], axis=1).T
    for clip in windows:
        audio, rate = sf.read(clip["files"]["flac"], dtype="float32")
        assert rate == 48000 and audio.shape[1] == 2  # stereo stays stereo
        duration = clip["end_s"] - clip["start_s"]
        assert len(audio) == round(duration * rate)
        start = round(clip["start_s"] * rate)
        expected = source[start:start + len(audio)]
        # Sample-exact: a one-sample shift of these tones would differ by > 0.01 nearly
        # everywhere. (The AAC decoder's last frame differs slightly after a seek.)
        assert np.mean(np.abs(audio[: len(expected)] - expected).max(axis=1) < 1e-4) > 0.98
        info = ffprobe(clip["files"]["mp4"])
        a = next(s for s in info["streams"] if s["codec_type"] == "audio")
        assert float(a["duration"]) == pytest.approx(duration, abs=1 / 25)
        assert clip["audio"] == {"sample_rate": 48000, "channels": 2}


def test_size_is_capped_and_silent_sources_give_no_flac(bikes_path, tmp_path):
    out = [c for c in clips_of(bikes_path, tmp_path) if not c.get("reject")]
    assert len(out) == 5
    clip = out[1]
    assert (clip["width"], clip["height"]) == (512, 216)
    assert "flac" not in clip["files"] and "audio" not in clip
    assert [s["codec_type"] for s in ffprobe(clip["files"]["mp4"])["streams"]] == ["video"]
    assert clip["clip"]["n_frames"] == clip["end_frame"] - clip["start_frame"]


def test_source_rate_and_mono_can_be_kept(tmp_path):
    src = make_clip(tmp_path / "mono.mp4", [1.5], size=(64, 48), sample_rate=22050, stereo=False)
    [clip] = clips_of(src.path, tmp_path / "out", sample_rate=None)
    info = sf.info(clip["files"]["flac"])
    duration = clip["end_s"] - clip["start_s"]  # 38 frames: 1.5 s rounded up to the frame grid
    assert (info.samplerate, info.channels, info.frames) == (22050, 1, round(duration * 22050))


def test_rotated_source_is_cut_upright(rotated_video, tmp_path):
    out = clips_of(rotated_video, tmp_path)
    assert [(c["width"], c["height"]) for c in out] == [(120, 160)] * 3


def test_vfr_and_unicode_sources(vfr_video, unicode_name_video, tmp_path):
    [vfr] = clips_of(vfr_video, tmp_path)
    assert vfr.get("reject") is None and vfr["clip"]["n_frames"] == vfr["end_frame"]
    out = clips_of(unicode_name_video, tmp_path)
    assert all(c.get("reject") is None for c in out) and len(out) == 3


@pytest.mark.timeout(60)
def test_clip_deep_inside_a_long_file_is_exact(long_video, tmp_path):
    [item] = run_stages([ProbeStage()], [{"source": {"path": str(long_video)}}])
    item.update(key="deep", start_frame=400 * 25 + 7, end_frame=402 * 25 + 7)
    item.update(start_s=item["start_frame"] / 25, end_s=item["end_frame"] / 25)
    [clip] = run_stages([ClipStage(ClipConfig(work_dir=str(tmp_path)))], [item])
    assert clip.get("reject") is None and clip["clip"]["n_frames"] == 50
    assert sf.info(clip["files"]["flac"]).frames == 2 * 48000


def test_an_interval_past_the_end_is_a_duration_mismatch(three_shot_clip, tmp_path):
    [item] = run_stages([ProbeStage()], [{"source": {"path": str(three_shot_clip.path)}}])
    item.update(key="past_end", start_frame=100, end_frame=175, start_s=4.0, end_s=7.0)
    [clip] = run_stages([ClipStage(ClipConfig(work_dir=str(tmp_path)))], [item])
    assert clip["reject"]["reason"] == "duration_mismatch"


def test_work_dir_is_required():
    with pytest.raises(ValueError, match="work_dir"):
        ClipStage(ClipConfig())


def test_output_frame_rate_can_be_changed(three_shot_clip, tmp_path):
    out = clips_of(three_shot_clip.path, tmp_path, fps=30)
    assert all(c.get("reject") is None and c["fps"] == 30.0 for c in out)
    assert [c["clip"]["n_frames"] for c in out] == [48, 72, 60]  # 1.6 s, 2.4 s, 2.0 s at 30 fps
