"""The text-match net behind the prompt_alignment head: a per-location, per-time match of the
latents with the prompt, pretrained on captioned latent shards (``reward.scoring.text_pretrain``),
frozen inside the latent reward backbone. That it lets the prompt_alignment head rank held-out
clips as annotators do: tests/reward/test_pretrained_heads.py."""

import torch

from reward.annotation.simulate import make_captioned_shards
from reward.scoring.backbones.text_net import LatentTextNet, TextNetConfig
from reward.scoring.text_pretrain import TextPretrainConfig, load_text_net, pretrain_text


def test_the_score_is_the_mean_of_independent_location_matches():
    """Swapping locations between two clips moves their matches with them: the two scores'
    sum is unchanged, and a clip of one location repeated scores what that location does."""
    torch.manual_seed(0)
    net = LatentTextNet(TextNetConfig()).eval()
    a, b = torch.randn(1, 8, 9, 4, 4), torch.randn(1, 8, 9, 4, 4)
    prompt = torch.randn(1, 5, 64).expand(2, -1, -1)
    left_a = torch.cat([a[..., :2], b[..., 2:]], -1)
    left_b = torch.cat([b[..., :2], a[..., 2:]], -1)
    with torch.no_grad():
        before = net.features(torch.cat([a, b]), prompt, None).sum()
        after = net.features(torch.cat([left_a, left_b]), prompt, None).sum()
        assert torch.allclose(before, after, atol=1e-5)
        one = a[..., :1, :1].expand(-1, -1, -1, 4, 4)
        logit = net.location_logits(net.embed_video(a[..., :1, :1]), net.embed_text(prompt[:1]))
        assert torch.allclose(net.features(one, prompt[:1], None), 10 * logit.sigmoid().mean(), atol=1e-5)


def test_a_reward_model_carries_its_text_net_and_its_heads_read_only_it(tmp_path, scores_after_reload):
    from reward.scoring.reward_model import RewardModel, RewardModelConfig
    from reward.scoring.sources import Clips

    make_captioned_shards(tmp_path / "captioned", 8, seed=1, per_shard=4)
    metrics = pretrain_text(TextPretrainConfig(steps=3, holdout_fraction=0.0), [tmp_path / "captioned"], tmp_path / "text")
    assert metrics["clips"] == 8 and metrics["train/clips"] == 8
    cfg = RewardModelConfig(heads=("prompt_alignment", "overall"))
    cfg.latent.text_net, cfg.latent.fps = str(tmp_path / "text"), 16.0
    model = RewardModel(cfg).eval()
    assert not any(p.requires_grad for p in model.backbone.text_match.parameters())  # frozen
    with torch.no_grad():
        model.head_weight.normal_()  # as after training: every head weighs every feature it reads
    clips = Clips(prompts=["", ""], video_latents=torch.randn(2, 8, 9, 4, 4), audio_latents=torch.randn(2, 8, 52),
                  text_emb=torch.randn(2, 5, 64), text_mask=torch.ones(2, 5, dtype=torch.bool), fps=16.0)
    before = model.score(clips)
    other_sound = model.score(Clips(**{**clips.__dict__, "audio_latents": torch.randn(2, 8, 52)}))
    assert torch.equal(before["prompt_alignment"], other_sound["prompt_alignment"])  # reads only the text net
    assert not torch.equal(before["overall"], other_sound["overall"])
    after = scores_after_reload(model, clips, tmp_path / "text")
    assert all(torch.equal(before[h], after[h]) for h in cfg.heads)


def test_the_text_pretrain_command_writes_a_net_and_counts_what_it_cannot_use(tmp_path, capsys):
    from pipelines.cli import main
    from training.latent_shards import write_latent_shard

    make_captioned_shards(tmp_path / "captioned", 6, seed=2)
    write_latent_shard(tmp_path / "captioned" / "uncaptioned.tar",
                       [{"key": "silent", "video": torch.randn(8, 9, 4, 4), "audio": torch.randn(8, 50),
                         "text": torch.zeros(0, 64), "meta": {}}])
    (tmp_path / "captioned" / "truncated.tar").write_bytes(b"not a tar")
    assert main(["reward", "text-pretrain", "--latents", str(tmp_path / "captioned"), "--out", str(tmp_path / "net"),
                 "steps=2", "holdout_fraction=0"]) == 0
    out = capsys.readouterr().out
    assert '"clips": 6' in out and '"skipped/no_caption": 1' in out and '"skipped/unreadable_shard": 1' in out
    assert load_text_net(tmp_path / "net").features(torch.randn(1, 8, 9, 4, 4), torch.randn(1, 3, 64), None).shape == (1, 1)
    assert main(["reward", "text-pretrain", "--latents", str(tmp_path / "nowhere"), "--out", str(tmp_path / "n2")]) == 2
    assert "no latent shards" in capsys.readouterr().err
    assert main(["reward", "text-pretrain", "--latents", str(tmp_path / "captioned"), "--out", str(tmp_path / "n3"),
                 "net.text_dim=32"]) == 2
    assert "net.text_dim=64" in capsys.readouterr().err  # says what to set
    assert main(["reward", "train", "--rankings", str(tmp_path), "--rollouts", str(tmp_path), "--config", "latent_cpu",
                 f"model.latent.text_net={tmp_path / 'nowhere'}"]) == 2
    assert "tandem reward text-pretrain" in capsys.readouterr().err  # names the command that makes one
