"""The heads that read a frozen pretrained net learn what simulated annotators prefer: av_sync
(the SyncNet, pretrained on in-sync footage with its sound shifted) and prompt_alignment (the
text-match net, pretrained on captioned latent shards), each >= 90 % held-out without ties.

The rollouts (``reward.annotation.simulate``) vary both properties at once: how far the buzz lags
the light, and how much of the picture shows the prompt's look rather than another word's. The nets
see other scenes than the rollouts (footage and captioned clips of their own), and the rankings only
calibrate their estimates: the heads read nothing else (``sync_heads``, ``text_heads``), so a third
of the recipe's steps is plenty."""

import pytest
import torch

from pipelines.reward_cmd import load_reward_recipe
from reward.annotation.rankings import write_rankings
from reward.annotation.simulate import (
    SimulationConfig,
    make_captioned_shards,
    make_footage,
    make_rollouts,
    simulate_rankings,
)
from reward.scoring.pairs import is_heldout_group
from reward.scoring.sync_pretrain import SyncPretrainConfig, pretrain_sync
from reward.scoring.text_pretrain import TextPretrainConfig, pretrain_text
from reward.scoring.train import train_reward

HEADS = ("av_sync", "prompt_alignment")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_heads_on_pretrained_nets_learn_what_simulated_annotators_prefer(tmp_path):
    torch.set_num_threads(2)  # the VAEs encode thousands of clips here: both cores pay (~80 s less)
    sim = SimulationConfig()
    make_footage(tmp_path / "footage", 400, seed=10, cfg=sim)
    sync = pretrain_sync(SyncPretrainConfig(window_s=sim.duration_s, max_offset_s=sim.max_offset_s),
                         [tmp_path / "footage"], tmp_path / "sync")
    make_captioned_shards(tmp_path / "captioned", 400, seed=11, cfg=sim)
    text = pretrain_text(TextPretrainConfig(steps=1500), [tmp_path / "captioned"], tmp_path / "text")
    print("sync net:", sync, "\ntext net:", text)

    metas = make_rollouts(tmp_path / "rollouts", groups=50, per_group=8, seed=0, cfg=sim)
    heldout = [m for m in metas if is_heldout_group(m["group_id"], 0.25)]
    write_rankings(simulate_rankings(metas, HEADS, noise=0.15, seed=1), tmp_path / "rankings")
    write_rankings(simulate_rankings(heldout, HEADS, noise=0.0, seed=2), tmp_path / "consensus")
    cfg = load_reward_recipe("latent_cpu", [f"storage={tmp_path / 'run'}", f"model.heads=[{','.join(HEADS)}]",
                                            "steps=100", f"model.latent.sync_net={tmp_path / 'sync'}",
                                            f"model.latent.text_net={tmp_path / 'text'}"])
    result = train_reward(cfg, tmp_path / "rankings", [tmp_path / "rollouts"], heldout_rankings=tmp_path / "consensus")
    accuracy = {h: result.metrics[f"heldout/{h}/accuracy_without_ties"] for h in HEADS}
    print("held-out accuracy without ties:", accuracy,
          "with ties:", {h: result.metrics[f"heldout/{h}/accuracy_with_ties"] for h in HEADS})
    assert min(accuracy.values()) >= 0.90, accuracy
