import pytest

from curation.filters import FilterConfig, FilterStage
from curation.stage import run_stages


def clip(**sections):
    item = {"key": "k", "source": {"id": "s", "path": "x"}, "start_s": 0.0, "end_s": 4.0,
            "audio": {"loudness_lufs": -20.0, "silence_ratio": 0.1, "speech_ratio": 0.5},
            "motion": {"score": 0.01, "static": False, "black_ratio": 0.0},
            "sync": {"offset_ms": 10.0, "confidence": 0.9, "action": "kept"}}
    for name, fields in sections.items():
        item[name] = {**item.get(name, {}), **fields} if isinstance(fields, dict) else fields
    return item


def verdict(item, **cfg):
    [out] = run_stages([FilterStage(FilterConfig(**cfg))], [item])
    return (out.get("reject") or {}).get("reason")


def test_a_good_clip_passes():
    assert verdict(clip()) is None


@pytest.mark.parametrize("item, reason", [
    (clip(end_s=0.5), "too_short"),
    (clip(end_s=45.0), "too_long"),
    (clip(audio={"loudness_lufs": -70.0}), "too_quiet"),
    (clip(audio={"silence_ratio": 0.99}), "mostly_silent"),
    (clip(motion={"static": True}), "static"),
    (clip(motion={"black_ratio": 0.8}), "mostly_black"),
    (clip(sync={"offset_ms": -450.0}), "av_desync"),
])
def test_each_threshold_has_its_reason(item, reason):
    assert verdict(item) == reason


def test_message_names_value_and_threshold_and_every_failure():
    [out] = run_stages([FilterStage()], [clip(end_s=0.5, motion={"static": True})])
    assert out["reject"]["reason"] == "too_short"
    assert "0.50s < min_duration_s=1.0" in out["reject"]["message"] and "static" in out["reject"]["message"]


def test_thresholds_come_from_config():
    assert verdict(clip(audio={"speech_ratio": 0.2}), min_speech_ratio=0.3) == "too_little_speech"
    assert verdict(clip(motion={"static": True}), reject_static=False) is None
    assert verdict(clip(sync={"offset_ms": -450.0}), max_abs_sync_offset_ms=500) is None


def test_unconfident_or_corrected_offsets_are_not_desync():
    assert verdict(clip(sync={"offset_ms": 600.0, "confidence": 0.05})) is None
    assert verdict(clip(sync={"offset_ms": 150.0, "action": "corrected"}), max_abs_sync_offset_ms=100) is None


def test_missing_measurements_never_drop_a_clip():
    bare = {"key": "k", "source": {"id": "s", "path": "x"}, "start_s": 0.0, "end_s": 3.0}
    assert verdict(bare) is None
    assert verdict({**bare, "audio": {"loudness_lufs": None}, "sync": {"offset_ms": None, "action": "kept"}}) is None


def test_unmeasured_sync_never_drops_a_clip_here():
    """Cannot-tell clips are the sync stage's business (sync.require=measured), not a desync."""
    unmeasured = clip(sync={"offset_ms": None, "confidence": 0.2, "reason": "ambiguous", "action": "unmeasured"})
    assert verdict(unmeasured) is None
    assert verdict(unmeasured, max_abs_sync_offset_ms=0.0) is None
