"""The learned scorer: Wav2Lip's SyncNet architecture, its front ends and offset sweep, run
through the real path with random weights saved the way Wav2Lip publishes them."""

import numpy as np
import pytest
import torch

from curation.sample_media import make_talking_face, speech_sample
from curation.sync import SyncConfig, SyncStage, estimate_sync_file, read_clip
from curation.syncnet import SyncNet, SyncNetScorer, load_syncnet, log_mel


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """Random weights in the published checkpoint's layout (DataParallel prefix included)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("syncnet") / "lipsync_expert.pth"
    state = {f"module.{k}": v for k, v in SyncNet().state_dict().items()}
    torch.save({"state_dict": state, "global_step": 0, "optimizer": None}, path)
    return path


def test_embeddings_have_the_published_shapes(checkpoint):
    net = load_syncnet(checkpoint)
    audio, face = net(torch.zeros(2, 1, 80, 16), torch.zeros(2, 15, 48, 96))
    assert audio.shape == face.shape == (2, 512)
    assert torch.allclose(audio.norm(dim=1), torch.ones(2), atol=1e-5)


def test_a_checkpoint_of_another_network_is_refused(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"state_dict": {"conv.weight": torch.zeros(1)}}, path)
    with pytest.raises(ValueError, match="not a Wav2Lip SyncNet"):
        load_syncnet(path)


def test_mel_front_end_rate_and_range():
    rate = 48000
    tone = 0.5 * np.sin(2 * np.pi * 440 * np.arange(2 * rate) / rate).astype(np.float32)
    mel = log_mel(tone, rate)
    assert mel.shape[1] == 80 and abs(mel.shape[0] - 160) <= 1  # 80 frames a second
    assert mel.min() >= -4 and mel.max() <= 4 and mel.max() > 0


def test_the_sweep_finds_the_shift_between_embeddings(checkpoint):
    scorer = SyncNetScorer(checkpoint, device="cpu", confidence_scale=0.05)
    rng = np.random.default_rng(0)
    face = rng.normal(size=(100, 512))
    face /= np.linalg.norm(face, axis=1, keepdims=True)
    sound = np.roll(face, 3, axis=0)  # audio window i + 3 is picture window i: audio lags 3 frames
    est = scorer._offset(face, sound, 25.0)
    assert est.offset_ms == pytest.approx(120, abs=5) and est.confidence > 0.9


@pytest.fixture(scope="module")
def talking_face(tmp_path_factory):
    speech = speech_sample()
    if speech is None:
        pytest.skip("pyannote.audio's sample.wav is not installed")
    return make_talking_face(tmp_path_factory.mktemp("face") / "talk.mp4", speech, 2.0, start_s=10.5).path


@pytest.mark.slow
def test_random_weights_run_the_whole_path_per_clip_and_in_batches(checkpoint, talking_face):
    scorer = SyncNetScorer(checkpoint, device="cpu")
    frames, fps, audio, rate = read_clip(talking_face)
    one = scorer.estimate(frames, fps, audio, rate)
    assert one.method == "syncnet" and one.candidate_ms is not None and abs(one.candidate_ms) <= 1000
    blank = np.zeros((20, 64, 64, 3), np.uint8)
    both = scorer.score_batch([(frames, fps, audio, rate), (blank, 25.0, audio[:, : rate], rate)])
    assert both[0].candidate_ms == one.candidate_ms
    assert both[1].offset_ms is None and both[1].reason == "no_face"


@pytest.mark.slow
def test_the_stage_runs_it_as_a_gpu_actor_from_a_local_path(checkpoint, talking_face):
    config = SyncConfig(scorer="syncnet", model_path=str(checkpoint))
    stage = SyncStage(config)
    assert stage.resources.actor and stage.resources.gpus == 1  # used only where the cluster has GPUs
    assert estimate_sync_file(talking_face, config).method == "syncnet"
    with pytest.raises(ValueError, match="model_path"):
        SyncStage(SyncConfig(scorer="syncnet", model_path="/nowhere/lipsync_expert.pth")).preflight()
