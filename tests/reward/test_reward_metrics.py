"""Metric heads need no training: on clips written to mp4 and decoded back, the clipping head
ranks clips by how hard their tone is driven into the ceiling, the motion head by how fast
their picture drifts; loudness is BS.1770, with silence at the floor."""

import numpy as np
import pytest
import torch

from model.media import to_uint8_frames, write_mp4
from reward.annotation.simulate import SimulationConfig, render
from reward.scoring.clip_store import ClipFile, ClipStore, score_clip_files
from reward.scoring.metric_heads import (
    METRIC_HEADS,
    LoudnessClipping,
    Motion,
    metric_source,
    register_metric,
)
from reward.scoring.sources import Clips

LEVELS = (0.0, 0.35, 0.7, 1.0)


def write_clips(directory, prop: str):
    """Clips alike but for ``prop``: ``motion`` (the simulated scene's drift speed) or
    ``clipping`` (a tone driven 1-4x into the ±1 ceiling)."""
    cfg = SimulationConfig(event=False)  # no light or buzz: only the property under test varies
    files = []
    for i, level in enumerate(LEVELS):
        props = {"dark": 0.0, "motion": level if prop == "motion" else 0.5, "muffled": 0.0, "offset": 0.0}
        video, audio = render(props, cfg, np.random.default_rng(i))
        if prop == "clipping":
            t = np.arange(audio.shape[1]) / cfg.sample_rate
            audio = torch.from_numpy(np.clip(np.sin(2 * np.pi * 330 * t) * 4.0**level, -1, 1)).float()[None]
        path = write_mp4(directory / f"{prop}{i}.mp4", to_uint8_frames(video), cfg.fps, audio.numpy(), cfg.sample_rate)
        files.append(ClipFile(path.stem, path, None))
    return files


def ranks(values):
    return np.argsort(np.argsort(values)).tolist()


def test_clipping_head_prefers_clean_audio(tmp_path):
    scores = score_clip_files(LoudnessClipping(), write_clips(tmp_path, "clipping"))
    clipping = [s["clipping"] for s in scores]
    assert clipping[0] == pytest.approx(0.0, abs=0.5)  # a clean tone barely touches the ceiling
    assert ranks(clipping) == [3, 2, 1, 0]  # more drive, more clipped samples, lower score
    assert all(-20 < s["loudness"] <= 0 for s in scores)


def test_motion_head_prefers_more_motion(tmp_path):
    scores = score_clip_files(Motion(), write_clips(tmp_path, "motion"))
    assert ranks([s["motion"] for s in scores]) == [0, 1, 2, 3]


def test_silence_scores_the_loudness_floor():
    clips = torch.zeros(1, 1, 32000)
    from reward.scoring.sources import Clips

    out = LoudnessClipping(target_lufs=-16).score(Clips(prompts=[""], audio=clips, sample_rate=16000))
    assert float(out["loudness"][0]) == pytest.approx(-54.0) and float(out["clipping"][0]) == 0.0


def test_metric_registry_builds_sources_and_accepts_new_ones():
    assert metric_source("motion").heads == ("motion",)
    with pytest.raises(ValueError, match="unknown metric head 'sharpness'; known: av_sync, brightness"):
        metric_source("sharpness")

    class Constant:
        name, heads, uses = "constant", ("av_sync",), "media"

        def score(self, clips):
            return {"av_sync": torch.zeros(len(clips))}

    register_metric("constant", Constant)
    try:
        assert metric_source("constant").heads == ("av_sync",)
    finally:
        METRIC_HEADS.pop("constant")


def test_media_batches_group_equal_shapes(tmp_path):
    files = write_clips(tmp_path, "motion")
    batches = ClipStore(files, "media", cache=False).batches([3, 0, 1])
    assert sorted(p for positions, _ in batches for p in positions) == [0, 1, 2]
    assert all(c.video.shape[0] == len(positions) for positions, c in batches)


def test_av_sync_head_scores_measured_offsets_and_penalises_what_cannot_be_told():
    """Flash-and-click clips (curation's synthetic events with known offsets) through the
    A/V-sync head: the in-sync clip beats the one whose sound lags by 200 ms; a clip with
    nothing to measure (noise picture, silence) scores -unmeasured_ms. Synthetic clips test
    the plumbing only, so every estimate counts (min_confidence 0): the calibration fitted on
    real footage never trusts the event estimator."""
    import av as pyav

    from curation.sample_media import make_clip
    from reward.scoring.metric_heads import AVSync

    def decode(path, frames=40):
        with pyav.open(str(path)) as c:
            video = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)][:frames]
        with pyav.open(str(path)) as c:
            audio = np.concatenate([f.to_ndarray() for f in c.decode(audio=0)], axis=1)
            rate = c.streams.audio[0].rate
        v = torch.from_numpy(np.stack(video)).permute(3, 0, 1, 2).float() / 127.5 - 1
        return v, torch.from_numpy(audio[:, : int(len(video) / 25 * rate)]).float(), rate

    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        clips = [make_clip(Path(tmp) / f"c{i}.mp4", [4.0], size=(96, 64), beeps=True, audio_offset_s=off).path
                 for i, off in enumerate((0.0, 0.2))]
        (v0, a0, rate), (v1, a1, _) = decode(clips[0], 100), decode(clips[1], 100)
    n = min(a0.shape[1], a1.shape[1])
    batch = Clips(["in sync", "late sound", "nothing"],
                  video=torch.stack([v0, v1, torch.rand_like(v0) * 0.01]),
                  audio=torch.stack([a0[:, :n], a1[:, :n], torch.zeros_like(a0[:, :n])]), fps=25.0, sample_rate=rate)
    scores = AVSync(unmeasured_ms=500, min_confidence=0.0).score(batch)["av_sync"]
    assert scores[0] > -45 and -260 < scores[1] < -150, scores
    assert scores[2] == -500
