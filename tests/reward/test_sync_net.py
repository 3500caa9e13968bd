"""The latent SyncNet behind the av_sync head: pretrained on in-sync footage with its sound shifted
by known amounts (``reward.scoring.sync_pretrain``), frozen inside the latent reward backbone. That
it lets the av_sync head rank held-out clips as annotators do:
tests/reward/test_pretrained_heads.py."""

import numpy as np
import torch

from model.sequence import SequenceConfig
from reward.annotation.simulate import SimulationConfig, make_footage
from reward.scoring.sync_pretrain import (
    SyncPretrainConfig,
    cut_windows,
    decode_streams,
    pretrain_sync,
)


def _onset(signal: np.ndarray) -> int:
    """Index of the first value above the midpoint between the start and the end level."""
    return int(np.argmax(signal > (signal[: len(signal) // 8].mean() + signal[-len(signal) // 8:].mean()) / 2))


def test_windows_shift_the_sound_by_their_offset_and_never_pad(tmp_path):
    (path,) = make_footage(tmp_path, 1, seed=3)
    cfg = SyncPretrainConfig(windows_per_clip=24)
    seq = SequenceConfig(duration_s=cfg.window_s, fps=cfg.fps, height=cfg.height, width=cfg.width, sample_rate=16000)
    frames, times, audio, start = decode_streams(path, 16000, 1)
    windows = cut_windows(frames, times, audio, start, seq, np.random.default_rng(0), cfg)
    assert len(windows) == 24
    checked = 0
    for video, wav, offset in windows:
        assert video.shape == (3, seq.num_frames, 32, 32) and wav.shape == (1, seq.audio_samples)
        light = video[:, :, :4, :4].mean((0, 2, 3)).numpy()  # the event's quarter of the picture
        noise = np.convolve(np.abs(np.diff(wav[0].numpy())), np.ones(160) / 160, "same")  # the buzz
        if light.max() - light.min() < 0.5 or not 0.1 < _onset(noise) / 16000 < seq.duration_s - 0.1:
            continue  # the event is outside this window
        lag = _onset(noise) / 16000 - _onset(light) / cfg.fps
        assert abs(lag - offset) <= 0.015, (lag, offset)  # the sound lags by ``offset``, to the sample
        checked += 1
    assert checked >= 8


def test_a_reward_model_carries_its_sync_net_and_reloads_without_the_original(tmp_path, scores_after_reload):
    from reward.scoring.reward_model import RewardModel, RewardModelConfig
    from reward.scoring.sources import Clips

    make_footage(tmp_path / "footage", 4, seed=1)
    metrics = pretrain_sync(SyncPretrainConfig(steps=3, windows_per_clip=2, holdout_fraction=0.0),
                            [tmp_path / "footage"], tmp_path / "sync")
    assert metrics["examples"] == 8 and metrics["train/median_error_ms"] >= 0
    cfg = RewardModelConfig(heads=("av_sync", "overall"))
    cfg.latent.sync_net, cfg.latent.text_dim, cfg.latent.fps = str(tmp_path / "sync"), 0, 16.0
    model = RewardModel(cfg).eval()
    assert not any(p.requires_grad for p in model.backbone.sync.parameters())  # frozen
    clips = Clips(prompts=["", ""], video_latents=torch.randn(2, 8, 9, 4, 4), audio_latents=torch.randn(2, 8, 52), fps=16.0)
    before = model.score(clips)
    after = scores_after_reload(model, clips, tmp_path / "sync")
    assert all(torch.equal(before[h], after[h]) for h in cfg.heads)


def test_the_sync_pretrain_command_writes_a_net_and_refuses_footage_it_cannot_use(tmp_path, capsys):
    from pipelines.cli import main
    from reward.scoring.sync_pretrain import load_sync_net

    make_footage(tmp_path / "footage", 3, seed=2)
    (tmp_path / "footage" / "broken.mp4").write_bytes(b"not an mp4")
    assert main(["reward", "sync-pretrain", "--footage", str(tmp_path / "footage"), "--out", str(tmp_path / "net"),
                 "steps=2", "windows_per_clip=2", "holdout_fraction=0"]) == 0
    out = capsys.readouterr().out
    assert '"skipped/undecodable": 1' in out and '"examples": 6' in out
    assert load_sync_net(tmp_path / "net").features(torch.randn(1, 8, 9, 4, 4), torch.randn(1, 8, 52), 16.0).shape == (1, 1)
    (tmp_path / "short").mkdir()
    make_footage(tmp_path / "short", 1, seed=2, cfg=SimulationConfig(duration_s=0.5, max_offset_s=0.1))
    assert main(["reward", "sync-pretrain", "--footage", str(tmp_path / "short"), "--out", str(tmp_path / "n2")]) == 2
    assert "no usable footage" in capsys.readouterr().err
    assert main(["reward", "sync-pretrain", "--footage", str(tmp_path / "nowhere"), "--out", str(tmp_path / "n3")]) == 2
    assert main(["reward", "train", "--rankings", str(tmp_path), "--rollouts", str(tmp_path), "--config", "latent_cpu",
                 f"model.latent.sync_net={tmp_path / 'nowhere'}"]) == 2
    assert "tandem reward sync-pretrain" in capsys.readouterr().err  # names the command that makes one
