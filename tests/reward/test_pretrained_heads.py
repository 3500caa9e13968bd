"""The heads that read a frozen pretrained net learn what simulated annotators prefer: av_sync
(the SyncNet, pretrained on in-sync footage with its sound shifted) and prompt_alignment (the
text-match net, pretrained on captioned latent shards), each >= 90 % held-out without ties.

The rollouts (``reward.annotation.simulate``) vary both properties at once: how far the buzz lags
the light, and how much of the picture shows the prompt's look rather than another word's. The nets
see other scenes than the rollouts (footage and captioned clips of their own), and the rankings only
calibrate their estimates: the heads read nothing else (``sync_heads``, ``text_heads``), so a third
of the recipe's steps is plenty. This is seed 0 of benchmarks/pretrained_heads.py, which prints
the figures docs/reward.md quotes over several seeds."""

import pytest
import torch

from benchmarks.pretrained_heads import HEADS, pretrain_nets, train_heads
from benchmarks.reward_simulation import heldout_accuracy, simulated_rankings
from reward.annotation.simulate import SimulationConfig


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_heads_on_pretrained_nets_learn_what_simulated_annotators_prefer(tmp_path):
    torch.set_num_threads(2)  # the VAEs encode thousands of clips here: both cores pay (~80 s less)
    sim = SimulationConfig()
    sync, text = pretrain_nets(tmp_path, 0, sim)
    print("sync net:", sync, "\ntext net:", text)
    simulated_rankings(tmp_path, HEADS, 0, sim)
    accuracy = heldout_accuracy(train_heads(tmp_path, 0).metrics, HEADS)
    print("held-out accuracy (without ties, with ties):", accuracy)
    assert min(without for without, _ in accuracy.values()) >= 0.90, accuracy
