"""Probe: ids are content hashes, the header facts are right, and every bad input kind
ends as a reject with its own reason code (never an exception)."""

import pytest

from curation.probe import ProbeStage, content_id
from curation.stage import run_stages


def probe(path):
    [out] = run_stages([ProbeStage()], [{"source": {"path": str(path)}}])
    return out


def test_good_clip_is_described(three_shot_clip):
    out = probe(three_shot_clip.path)
    assert out.get("reject") is None
    p = out["probe"]
    assert p["duration_s"] == pytest.approx(6.0, abs=0.05)
    assert p["fps"] == 25.0 and p["fps_rational"] == "25/1" and not p["vfr"]
    assert (p["width"], p["height"], p["rotation"]) == (160, 120, 0)
    assert p["n_frames"] == 150 and p["video_codec"] == "h264"
    assert (p["has_audio"], p["audio_sample_rate"], p["audio_channels"]) == (True, 48000, 2)
    assert out["source"]["size_bytes"] == three_shot_clip.path.stat().st_size


def test_id_is_a_content_hash(duplicate_pair, video_without_audio):
    first, second = (probe(p)["source"]["id"] for p in duplicate_pair)
    assert first == second == content_id(duplicate_pair[0])
    assert len(first) == 16 and int(first, 16) >= 0
    assert probe(video_without_audio)["source"]["id"] != first


@pytest.mark.parametrize("fixture, reason", [
    ("zero_byte_file", "zero_bytes"),
    ("text_as_mp4", "not_media"),
    ("truncated_mp4", "truncated"),
    ("headless_mp4", "truncated"),
    ("audio_only", "no_video"),
])
def test_bad_inputs_are_rejected_with_a_reason(fixture, reason, request):
    out = probe(request.getfixturevalue(fixture))
    assert out["reject"]["stage"] == "probe"
    assert out["reject"]["reason"] == reason, out["reject"]["message"]


def test_missing_file_is_unreadable(tmp_path):
    out = probe(tmp_path / "gone.mp4")
    assert out["reject"]["reason"] == "unreadable"


def test_video_without_audio_is_kept(video_without_audio):
    p = probe(video_without_audio)["probe"]
    assert p["has_audio"] is False and p["audio_sample_rate"] is None


def test_variable_frame_rate_is_detected(vfr_video):
    p = probe(vfr_video)["probe"]
    assert p["vfr"] is True
    assert 20 < p["fps"] < 30  # the mean rate


def test_rotation_swaps_the_displayed_size(rotated_video):
    p = probe(rotated_video)["probe"]
    assert p["rotation"] in (90, 270)
    assert (p["width"], p["height"]) == (160, 120)
    assert (p["display_width"], p["display_height"]) == (120, 160)


def test_non_ascii_name_with_spaces(unicode_name_video, three_shot_clip):
    out = probe(unicode_name_video)
    assert out.get("reject") is None
    assert out["source"]["path"].endswith("clip ünï 名.mp4")
    assert out["source"]["id"] == content_id(three_shot_clip.path)


@pytest.mark.timeout(120)
def test_long_file_is_scanned_quickly(long_video):
    p = probe(long_video)["probe"]
    assert p["duration_s"] == pytest.approx(630, abs=0.1)
    assert p["n_frames"] == 630 * 25 and not p["vfr"]


@pytest.mark.timeout(120)
def test_every_input_ends_kept_or_rejected_with_a_reason(request, tmp_path):
    """All of helper A's stages over every kind of input a crawl delivers: nothing raises,
    nothing disappears, each source ends as clips or as a reject with a reason code."""
    from curation.clip import ClipConfig, ClipStage
    from curation.motion import MotionStage
    from curation.shots import ShotStage
    from curation.sync import SyncStage

    expected = {
        "zero_byte_file": "zero_bytes", "text_as_mp4": "not_media", "truncated_mp4": "truncated",
        "headless_mp4": "truncated", "audio_only": "no_video",
        "video_without_audio": None, "vfr_video": None, "rotated_video": None, "unicode_name_video": None,
    }
    paths = {name: str(request.getfixturevalue(name)) for name in expected}
    stages = [ProbeStage(), ShotStage(), ClipStage(ClipConfig(work_dir=str(tmp_path))), MotionStage(), SyncStage()]
    out = run_stages(stages, [{"source": {"path": p}} for p in paths.values()])
    by_source = {}
    for item in out:
        by_source.setdefault(item["source"]["path"], []).append(item)
    assert set(by_source) == set(paths.values())
    for name, reason in expected.items():
        items = by_source[paths[name]]
        if reason:
            assert [i["reject"]["reason"] for i in items] == [reason], name
        else:
            assert all(i.get("reject") is None for i in items), (name, [i.get("reject") for i in items])
            assert all({"motion", "sync"} <= set(i) and "mp4" in i["files"] for i in items), name
