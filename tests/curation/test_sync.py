"""Sync: offsets are estimated to within one frame from audio and picture events,
ambiguous footage is never acted on with confidence, and correction really re-aligns."""

import sys
import types

import pytest
import soundfile as sf

from curation.clip import ClipConfig, ClipStage
from curation.ffmpeg import ffprobe
from curation.probe import ProbeStage
from curation.sample_media import make_clip
from curation.shots import ShotConfig, ShotStage
from curation.stage import run_stages
from curation.sync import CorrelationScorer, SyncConfig, SyncStage

TOLERANCE_MS = 40


def events_clip(path, offset_s, fps=25, duration_s=4.0):
    """A moving pattern with a white flash at each irregularly timed event and a click in
    the (stereo) audio ``offset_s`` later (positive: audio lags)."""
    return make_clip(path, [duration_s], fps=fps, size=(128, 96), beeps=True, audio_offset_s=offset_s).path


def clip_items(path, work_dir):
    """Probe, one analysis decode (the whole file as one shot), cut: what sync receives."""
    return run_stages([ProbeStage(), ShotStage(ShotConfig(detector="none")),
                       ClipStage(ClipConfig(work_dir=str(work_dir)))], [{"source": {"path": str(path)}}])


def events_item(tmp_path, offset_s):
    [item] = clip_items(events_clip(tmp_path / f"events_{offset_s}.mp4", offset_s), tmp_path / "clips")
    return item


@pytest.mark.parametrize("offset_s", [-0.4, -0.25, -0.12, 0.0, 0.1, 0.2, 0.33, 0.4])
def test_offset_of_irregular_events(tmp_path, offset_s):
    offset_ms, confidence, method = CorrelationScorer().estimate(events_item(tmp_path, offset_s))
    assert abs(offset_ms - offset_s * 1000) <= TOLERANCE_MS
    assert confidence > 0.6 and method == "onset_xcorr"


@pytest.mark.parametrize("offset_s", [-0.15, 0.12])
def test_correction_realigns_audio_and_keeps_durations(tmp_path, offset_s):
    item = events_item(tmp_path, offset_s)
    samples_before = sf.info(item["files"]["flac"]).frames
    [out] = run_stages([SyncStage(SyncConfig(policy="correct"))], [item])
    assert out.get("reject") is None and out["sync"]["action"] == "corrected"
    assert abs(out["sync"]["residual_ms"]) <= TOLERANCE_MS
    assert abs(CorrelationScorer().estimate(out)[0]) <= TOLERANCE_MS  # a fresh look at the new files
    assert sf.info(out["files"]["flac"]).frames == samples_before
    streams = {s["codec_type"]: s for s in ffprobe(out["files"]["mp4"])["streams"]}
    assert int(streams["video"]["nb_frames"]) == item["end_frame"] - item["start_frame"]
    assert float(streams["audio"]["duration"]) == pytest.approx(samples_before / 48000, abs=1 / 25)


def test_policies(tmp_path):
    small, large = events_item(tmp_path, 0.1), events_item(tmp_path, 0.33)
    [kept] = run_stages([SyncStage(SyncConfig(policy="keep"))], [large])
    assert kept["sync"]["action"] == "kept" and kept["sync"]["offset_ms"] == pytest.approx(330, abs=TOLERANCE_MS)
    [too_far] = run_stages([SyncStage(SyncConfig(policy="correct", max_correct_ms=200))], [large])
    assert too_far["reject"]["reason"] == "av_desync" and too_far["sync"]["action"] == "rejected"
    [strict] = run_stages([SyncStage(SyncConfig(policy="reject"))], [small])
    assert strict["reject"]["reason"] == "av_desync"


def test_footage_without_events_is_kept_with_low_confidence(tmp_path):
    clip = make_clip(tmp_path / "tone.mp4", [3.0], size=(128, 96), audio_offset_s=0.2)
    [out] = run_stages([SyncStage()], clip_items(clip.path, tmp_path / "clips"))
    assert out["sync"]["confidence"] < 0.1 and out["sync"]["action"] == "kept"


def test_clip_without_audio_is_kept_unmeasured(video_without_audio, tmp_path):
    [out] = run_stages([SyncStage()], clip_items(video_without_audio, tmp_path))
    assert out["sync"] == {"offset_ms": None, "confidence": 0.0, "method": "none", "action": "kept"}


def test_a_learned_scorer_plugs_in_from_a_local_path(tmp_path, monkeypatch):
    class FixedScorer:
        def __init__(self, model_path):
            self.model_path = model_path

        def estimate(self, item):
            return 12.0, 0.9, f"fixed:{self.model_path}"

    module = types.ModuleType("fake_sync_model")
    module.FixedScorer = FixedScorer
    monkeypatch.setitem(sys.modules, "fake_sync_model", module)
    weights = tmp_path / "sync.pt"
    weights.write_bytes(b"weights")
    item = events_item(tmp_path, 0.0)
    [out] = run_stages([SyncStage(SyncConfig(scorer="fake_sync_model:FixedScorer", model_path=str(weights)))], [item])
    assert out["sync"] == {"offset_ms": 12.0, "confidence": 0.9, "method": f"fixed:{weights}", "action": "kept"}
    with pytest.raises(ValueError, match="model_path"):
        SyncStage(SyncConfig(scorer="fake_sync_model:FixedScorer", model_path=str(tmp_path / "missing"))).setup()
    with pytest.raises(ValueError, match="policy"):
        SyncStage(SyncConfig(policy="fix"))
