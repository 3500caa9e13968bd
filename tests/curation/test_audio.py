"""Audio stage: BS.1770 loudness against the standard's numbers, silence, speech (Silero),
tempo/beats on a click track, the mp4 fallback and the no_audio reject."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from curation.audio import AudioConfig, AudioStage, integrated_loudness, k_weighting
from curation.sample_media import make_clip, speech_sample
from curation.stage import run_stages

RATE = 48000


def sine(seconds: float, amplitude: float, freq: float = 997.0, rate: int = RATE) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_flac(path: Path, mono: np.ndarray, channels: int = 2, rate: int = RATE) -> dict:
    sf.write(str(path), np.repeat(mono[:, None], channels, axis=1), rate, subtype="PCM_24")
    return {"key": path.stem, "files": {"flac": str(path)}}


@pytest.fixture(scope="module")
def stage():
    s = AudioStage()
    s.setup()
    return s


def test_k_weighting_matches_the_standard_at_48k():
    # ITU-R BS.1770-4, tables 1 and 2.
    (b1, a1), (b2, a2) = k_weighting(48000)
    np.testing.assert_allclose(b1, [1.53512485958697, -2.69169618940638, 1.19839281085285], atol=1e-9)
    np.testing.assert_allclose(a1, [1.0, -1.69065929318241, 0.73248077421585], atol=1e-9)
    np.testing.assert_allclose(b2, [1.0, -2.0, 1.0])
    np.testing.assert_allclose(a2, [1.0, -1.99004745483398, 0.99007225036621], atol=1e-9)


@pytest.mark.parametrize("rate", [48000, 44100, 16000])
def test_loudness_of_a_known_sine(rate):
    # A 0 dBFS 997 Hz sine in one channel reads -3.01 LKFS (BS.1770): at amplitude 0.1
    # (-20 dBFS) that is -23.01 in one channel, +3.01 dB with the same in two channels.
    tone = sine(3.0, 0.1, rate=rate)[:, None]
    assert integrated_loudness(tone, rate) == pytest.approx(-23.01, abs=0.05)
    assert integrated_loudness(np.hstack([tone, tone]), rate) == pytest.approx(-20.0, abs=0.05)
    assert integrated_loudness(np.zeros((rate, 2), np.float32), rate) is None  # all gated out


@pytest.mark.timeout(120)
def test_half_silent_tone(stage, tmp_path):
    item = write_flac(tmp_path / "half.flac", np.concatenate([sine(2.0, 0.1), np.zeros(2 * RATE, np.float32)]))
    audio = stage.process(item)[0]["audio"]
    assert audio["silence_ratio"] == pytest.approx(0.5, abs=0.02)
    # The silent half is gated out: the tone alone reads -20 LUFS in stereo. The standard's
    # 400 ms blocks step by 100 ms, so 17 blocks are all tone and 3 straddle the edge with
    # 3/4, 1/2 and 1/4 of it (all above the relative gate): 10*log10(18.5/20) = -0.34 LU.
    assert audio["loudness_lufs"] == pytest.approx(-20.0 + 10 * np.log10(18.5 / 20), abs=0.02)
    assert audio["speech_ratio"] < 0.05  # a steady tone is not speech
    assert audio["tempo_bpm"] is None
    assert (audio["sample_rate"], audio["channels"]) == (RATE, 2)


@pytest.mark.timeout(120)
def test_click_track_at_120_bpm(stage, tmp_path):
    clicks = np.arange(0.5, 8.0, 0.5)  # one click every 0.5 s = 120 BPM
    track = np.zeros(8 * RATE, np.float32)
    for t in clicks:
        start = round(t * RATE)
        track[start:start + 480] = sine(0.01, 0.8, 2000.0)  # 10 ms clicks
    audio = stage.process(write_flac(tmp_path / "clicks.flac", track))[0]["audio"]
    assert audio["tempo_bpm"] == pytest.approx(120, abs=3) and audio["pulse_clarity"] > 0.7
    beats = np.array(audio["beats_s"])
    assert len(beats) >= 10
    # Every beat sits on a click (librosa's frame hop is 23 ms at 22.05 kHz).
    assert np.abs(beats[:, None] - clicks[None, :]).min(axis=1).max() < 0.05
    onsets = np.array(audio["onsets_s"])
    assert len(onsets) == pytest.approx(len(clicks), abs=1)
    assert np.abs(onsets[:, None] - clicks[None, :]).min(axis=1).max() < 0.05


@pytest.fixture(scope="module")
def speech_wav() -> Path:
    """pyannote.audio's sample.wav (two speakers on a phone line, 30 s, 16 kHz) and its
    reference transcript sample.stm; installed by scripts/install_asr.sh."""
    path = speech_sample()
    if path is None:
        pytest.skip("pyannote.audio's sample.wav is not installed (scripts/install_asr.sh)")
    return path


@pytest.mark.timeout(120)
def test_speech_ratio_follows_the_reference_turns(stage, speech_wav, tmp_path):
    samples, rate = sf.read(str(speech_wav), dtype="float32")
    start, end = 6.0, 16.0  # the dense middle of the conversation
    item = write_flac(tmp_path / "speech.flac", samples[round(start * rate):round(end * rate)], 1, rate)
    # Reference speech time in the window, from the turns in sample.stm.
    turns = [line.split()[3:5] for line in (speech_wav.parent / "sample.stm").read_text().splitlines()]
    covered = np.zeros(1000, bool)
    for a, b in turns:
        covered[max(0, round((float(a) - start) * 100)):max(0, round((float(b) - start) * 100))] = True
    audio = stage.process(item)[0]["audio"]
    assert audio["speech_ratio"] == pytest.approx(covered.mean(), abs=0.15)
    assert audio["speech_ratio"] > 0.6
    # The beat tracker finds "beats" in speech too; without a clear pulse none is reported.
    assert audio["tempo_bpm"] is None and audio["beats_s"] == [] and audio["pulse_clarity"] < 0.35


@pytest.mark.timeout(120)
def test_mp4_fallback_and_no_audio(stage, tmp_path):
    with_audio = make_clip(tmp_path / "a.mp4", [1.0, 1.0], size=(64, 48)).path
    silent = make_clip(tmp_path / "v.mp4", [1.0, 1.0], size=(64, 48), audio=False).path
    kept, rejected = run_stages([stage], [{"key": "a", "files": {"mp4": str(with_audio)}},
                                          {"key": "v", "files": {"mp4": str(silent)}}])
    assert (kept["audio"]["sample_rate"], kept["audio"]["channels"]) == (48000, 2)
    assert kept["audio"]["loudness_lufs"] is not None and kept.get("reject") is None
    assert rejected["reject"]["reason"] == "no_audio"
    lenient = AudioStage(AudioConfig(require_audio=False)).process({"key": "v", "files": {"mp4": str(silent)}})
    assert lenient[0]["audio"] == {"has_audio": False} and not lenient[0].get("reject")
