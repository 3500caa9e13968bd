"""The sync calibration's plumbing and the evaluation protocol: the logistic fit recovers
what separates right from wrong, speakers never straddle folds, shifted audio keeps its
length, and the report counts what the sync stage did and by how much."""

import numpy as np

from benchmarks.real_av import folds, shift_audio
from curation.report import sync_actions, sync_reliability
from curation.sync_calibration import fit_logistic, probability


def test_the_fit_turns_a_separating_feature_into_probabilities():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, 400)
    right = rng.random(400) < 1 / (1 + np.exp(-(z - 1)))  # right answers stand out above chance
    features = np.column_stack([rng.random(400), z, rng.random(400), rng.random(400)])
    coefficients = fit_logistic(features, right)
    assert coefficients[2] > 0.5  # z carries the information
    assert probability(coefficients, [0.5, 6, 0.5, 0.5]) > 0.95 > 0.05 > probability(coefficients, [0.5, -4, 0.5, 0.5])
    never = fit_logistic(features, np.zeros(400, bool))  # never right: never confident
    assert probability(never, features).max() < 0.05


def test_folds_keep_each_speaker_whole_and_are_seeded():
    speakers = ["a", "a", "b", "c", "c", "d", "e", "f", "g"]
    first, again = folds(speakers, 3, seed=0), folds(speakers, 3, seed=0)
    assert first == again and set(first) == set(speakers)
    assert sorted(np.bincount(list(first.values()))) == [2, 2, 3]


def test_shifted_audio_keeps_its_length_and_moves_by_the_shift():
    rate, mono = 1000, np.zeros(1000, np.float32)
    mono[500] = 1.0
    assert np.argmax(shift_audio(mono, rate, 120)) == 620  # audio later: lags the picture
    assert np.argmax(shift_audio(mono, rate, -80)) == 420
    assert len(shift_audio(mono, rate, 300)) == len(shift_audio(mono, rate, -300)) == 1000


def test_the_report_counts_sync_actions_and_how_far_off():
    manifest = [{"sync_action": "kept", "sync_offset_ms": 10.0}, {"sync_action": "unmeasured", "sync_offset_ms": None},
                {"sync_action": "corrected", "sync_offset_ms": -120.0}, {"sync_action": "corrected", "sync_offset_ms": 80.0}]
    rejects = [{"stage": "sync", "reason": "av_desync", "sync_offset_ms": 300.0},
               {"stage": "audio", "reason": "silent", "sync_offset_ms": None}]
    assert sync_actions(manifest, rejects) == [("corrected", 2, "100", "120"), ("kept", 1, "10", "10"),
                                               ("rejected", 1, "300", "300"), ("unmeasured", 1, "-", "-")]
    assert {row[0] for row in sync_reliability()} == {"lip_envelope", "onset_xcorr"}
