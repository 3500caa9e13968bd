"""The analytic FLOP formula used for MFU agrees with PyTorch's FLOP counter."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from model.dit import DualDiT
from model.flops import forward_flops, train_flops, train_flops_per_token
from model.presets import get_preset


def test_matmul_flops_match_the_flop_counter():
    cfg = get_preset("debug")
    model = DualDiT(cfg)
    video, audio = torch.randn(1, 8, 5, 16, 16), torch.randn(1, 8, 17)
    text, mask = torch.randn(1, 6, 64), torch.ones(1, 6, dtype=torch.bool)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(video, audio, torch.rand(1), torch.rand(1), text, mask)
    # The counter misses CPU SDPA, so compare the matmul terms; the rest (embeddings,
    # heads) is what the formula leaves out on purpose.
    analytic = forward_flops(cfg, 5 * 8 * 8, 17, 6, attention=False)
    assert abs(counter.get_total_flops() - analytic) / analytic < 0.02
    full = forward_flops(cfg, 5 * 8 * 8, 17, 6)
    assert full > analytic and train_flops(cfg, 320, 17, 6) == 3 * full
    assert train_flops_per_token(cfg, 320, 17, 6) == 3 * full / 337
