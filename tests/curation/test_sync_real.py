"""Sync on real footage (the development set, outside the repository: TANDEM_REAL_AV): the
default settings never shift an in-sync real clip by more than in_sync_ms, and never
report an estimate that is off by more than 80 ms, whatever the audio's true shift.
benchmarks/sync_accuracy.py runs the whole set with held-out speakers and prints the table."""

import numpy as np
import pytest

from benchmarks.real_av import real_av_dir, real_clips, shift_audio
from curation.sync import SyncConfig, SyncStage, estimate_sync, read_clip

# Different sources: a 512 px HDTF face crop, a 160 px LRS2 mouth crop, a sound event.
CLIPS = ("talking/hdtf_WDA_BobMenendez_000.mp4", "talking/lrs2_00016.mp4", "events/condfoleygen_hitting_metal.mp4")


@pytest.fixture(scope="module")
def real_set():
    folder = real_av_dir()
    if folder is None:
        pytest.skip("the real A/V development set is absent (set TANDEM_REAL_AV to its folder)")
    try:
        from curation.lip_landmarks import predictor_path

        predictor_path()
    except ValueError as err:
        pytest.skip(f"lip landmarks unavailable: {err}")
    return {c.file: c for c in real_clips(folder)}


@pytest.mark.slow
@pytest.mark.parametrize("name", CLIPS)
def test_real_clips_are_never_harmed_nor_confidently_wrong(real_set, name):
    config = SyncConfig()
    frames, fps, audio, rate = read_clip(real_set[name].path, config.decode_width)
    mono = audio.mean(0)
    stage = SyncStage(config)
    for shift_ms in (0, 300, -160):
        est = estimate_sync(frames, fps, shift_audio(mono, rate, shift_ms)[None], rate, config)
        if est.offset_ms is not None:
            assert abs(est.offset_ms - shift_ms) <= 80, (name, shift_ms, est)
            assert est.confidence >= config.min_confidence
        else:
            assert est.reason in ("no_face", "no_speech", "no_events", "ambiguous")
        if shift_ms == 0:
            action = stage._decide(est)
            assert action != "corrected" or abs(est.offset_ms) <= config.in_sync_ms, (name, est)
    assert np.isfinite(est.confidence)
