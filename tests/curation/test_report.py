import base64
import re

from curation.report import write_report

MANIFEST = [{"key": f"k{i}", "duration_s": 2.0 + i, "sync_offset_ms": 10.0 * i, "sync_action": "kept",
             "sync_method": "lip_envelope", "sync_reason": None, "loudness_lufs": -20.0,
             "tempo_bpm": None, "motion_score": 0.01, "speech_ratio": 0.3} for i in range(4)]
UNMEASURED = [{"key": f"u{i}", "duration_s": 3.0, "sync_offset_ms": None, "sync_action": "unmeasured",
               "sync_method": "onset_xcorr", "sync_reason": reason, "loudness_lufs": -20.0}
              for i, reason in enumerate(["ambiguous", "no_face", "no_face"])]
REJECTS = [
    {"id": "a", "stage": "probe", "reason": "not_media", "message": "<script>x</script>"},
    {"id": "b", "stage": "filter", "reason": "static", "message": "still"},
    {"id": "c", "stage": "filter", "reason": "static", "message": "still"},
]
STATS = {"inputs": 5, "clips_kept": 4, "hours_in": 0.01, "per_stage": {"shots": {"items": 4, "seconds": 2.0,
                                                                                 "footage_s": 14.0}}}


def test_report_names_every_reason_and_embeds_its_plots(tmp_path):
    page = write_report(tmp_path, MANIFEST, REJECTS, STATS).read_text()
    assert re.search(r"<td>static</td><td>2</td>", page) and re.search(r"<td>not_media</td><td>1</td>", page)
    images = dict((alt, src) for src, alt in re.findall(r'<img src="([^"]+)" alt="([^"]+)"', page))
    assert "duration_s.png" in images and "reject_reasons.png" in images
    assert "tempo_bpm.png" not in images  # no clip has a tempo
    # Self-contained (MLflow's artifact preview, a mailed page): each plot is the PNG itself.
    for name, src in images.items():
        assert src.startswith("data:image/png;base64,"), src[:40]
        assert base64.b64decode(src.split(",", 1)[1]) == (tmp_path / "report" / name).read_bytes()
        assert len(src) > 1000
    assert "<script>x" not in page and "&lt;script&gt;" in page  # messages are escaped
    assert "<td>shots</td><td>4</td>" in page


def test_empty_run_still_reports(tmp_path):
    page = write_report(tmp_path, [], [], {"inputs": 0}).read_text()
    assert "none" in page and "<img" not in page


def test_sync_offsets_of_measured_clips_only_and_the_rest_counted(tmp_path):
    page = write_report(tmp_path, MANIFEST + UNMEASURED, [], STATS).read_text()
    assert "<td>kept</td><td>lip_envelope</td><td>4</td>" in page
    assert "<td>unmeasured</td><td>no_face</td><td>2</td>" in page
    assert "<td>unmeasured</td><td>ambiguous</td><td>1</td>" in page
    assert 'alt="sync_offset_ms.png"' in page  # plotted from the 4 measured offsets
