"""Shots: cuts land on the right frame, clips respect min/max length, and the one
decode also yields the per-frame analysis arrays later stages use and, with a handoff,
each clip's decoded frames and audio."""

import pytest

from curation.probe import ProbeStage
from curation.sample_media import make_clip
from curation.shots import ShotConfig, ShotStage, silero_speech
from curation.stage import run_stages


def shots(path, config=None, **kwargs):
    return run_stages([ProbeStage(), ShotStage(config or ShotConfig(), **kwargs)],
                      [{"source": {"path": str(path)}}])


def kept(items):
    return [i for i in items if not i.get("reject")]


@pytest.mark.parametrize("detector", ["adaptive", "content"])
def test_cuts_of_synthetic_clip_are_frame_exact(three_shot_clip, detector):
    out = shots(three_shot_clip.path, ShotConfig(detector=detector))
    assert [(c["start_frame"], c["end_frame"]) for c in out] == [(0, 40), (40, 100), (100, 150)]
    assert all(c.get("reject") is None for c in out)
    second = out[1]
    assert second["start_s"] == pytest.approx(1.6) and second["end_s"] == pytest.approx(4.0)
    assert second["key"] == f"{second['source']['id']}_0000040_0000100"
    assert second["shot"]["starts_at_cut"] and second["shot"]["ends_at_cut"]
    assert second["shot"]["index"] == 1 and second["probe"]["fps"] == 25.0


def test_bikes_cuts_within_one_frame(bikes_path, bikes_cut_frames):
    out = shots(bikes_path)
    found = [c["start_frame"] for c in out][1:]
    assert len(found) == len(bikes_cut_frames)
    for got, truth in zip(found, bikes_cut_frames, strict=True):
        assert abs(got - truth) <= 1, (found, bikes_cut_frames)
    # The last shot (9.68 s to 10 s) is shorter than min_clip_s: accounted for as a reject.
    assert out[-1]["reject"]["reason"] == "too_short" and out[-1]["end_frame"] == 250
    assert len(kept(out)) == 5


def test_analysis_arrays_cover_each_clip(three_shot_clip):
    for clip in shots(three_shot_clip.path):
        energy = clip["analysis"]["motion_energy"]
        assert len(energy) == len(clip["analysis"]["black"]) == clip["end_frame"] - clip["start_frame"]
        assert energy[0] == 0.0  # the cut itself is not motion inside the clip
        assert max(energy) < 0.2 and not any(clip["analysis"]["black"])


def test_long_shot_is_split_into_full_windows_and_an_even_rest(tmp_path):
    clip = make_clip(tmp_path / "one.mp4", [5.0], size=(64, 48), audio=False)
    out = shots(clip.path, ShotConfig(min_clip_s=0.5, max_clip_s=2.0))
    # 125 frames, windows of at most 50: one full window, then the last 75 frames in two
    # (at most two windows of frames wait for the shot's end).
    assert [(c["start_frame"], c["end_frame"]) for c in out] == [(0, 50), (50, 87), (87, 125)]
    assert [c["shot"]["window"] for c in out] == [0, 1, 2] and {c["shot"]["index"] for c in out} == {0}
    assert not out[1]["shot"]["starts_at_cut"]


def test_window_boundaries_snap_out_of_speech(tmp_path):
    clip = make_clip(tmp_path / "talk.mp4", [5.0], size=(64, 48))
    out = shots(clip.path, ShotConfig(min_clip_s=0.5, max_clip_s=2.0, snap_to_pauses=True),
                speech_finder=lambda path: [(1.8, 2.2), (3.0, 3.6)])
    # A full window would end at 50 (2.0 s), inside the first speech segment: it ends at
    # its nearer edge instead, 1.8 s = frame 45. The rest (80 frames) splits at 85 (3.4 s),
    # inside the second segment -> its nearer end, 3.6 s = frame 90 (a 35-frame tail,
    # still >= 0.5 s).
    assert [c["start_frame"] for c in out] == [0, 45, 90]


def test_detector_none_keeps_the_file_as_one_shot(three_shot_clip):
    out = shots(three_shot_clip.path, ShotConfig(detector="none"))
    assert [(c["start_frame"], c["end_frame"]) for c in out] == [(0, 150)]


@pytest.mark.timeout(120)
def test_very_long_file_becomes_ten_second_windows(long_video):
    out = shots(long_video)
    assert len(out) == 63 and all(c.get("reject") is None for c in out)
    assert all(c["end_frame"] - c["start_frame"] == 250 for c in out)
    assert len({c["key"] for c in out}) == 63 and out[-1]["end_frame"] == 630 * 25


def test_rotated_vfr_and_unicode_sources(rotated_video, vfr_video, unicode_name_video):
    assert [c["start_frame"] for c in shots(rotated_video)] == [0, 40, 100]
    assert [c["start_frame"] for c in shots(unicode_name_video)] == [0, 40, 100]
    [vfr] = shots(vfr_video)  # resampled to its mean rate: frame i is at i / fps
    assert vfr["end_frame"] == pytest.approx(vfr["probe"]["duration_s"] * vfr["fps"], abs=2)


def test_misconfiguration_raises():
    with pytest.raises(ValueError, match="detector"):
        ShotStage(ShotConfig(detector="histogramm"))
    with pytest.raises(ValueError, match="max_clip_s"):
        ShotStage(ShotConfig(min_clip_s=3, max_clip_s=5))


def test_silero_finds_no_speech_in_a_tone(three_shot_clip):
    assert silero_speech(three_shot_clip.path) == []


def test_silero_finds_the_speech_in_real_talk(tmp_path):
    from curation.sample_media import make_speech_clip, speech_sample
    from curation.shots import silero_speech

    if speech_sample() is None:
        pytest.skip("pyannote.audio's sample.wav is not installed (scripts/install_asr.sh)")
    # 8.4-17.4 s of sample.wav: speech nearly throughout (sample.stm).
    segments = silero_speech(make_speech_clip(tmp_path / "talk.mp4", speech_sample(), 9.0, start_s=8.4))
    spoken = sum(end - start for start, end in segments)
    assert 6.0 < spoken <= 9.1 and all(0 <= s < e <= 9.1 for s, e in segments)
