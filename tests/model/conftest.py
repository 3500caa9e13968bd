"""Fixtures for model tests: a seeded debug DiT, fresh and with every gate open."""

from __future__ import annotations

import pytest
import torch
from model_testkit import open_gates

from model.dit import DualDiT
from model.presets import get_preset


@pytest.fixture
def debug_model() -> DualDiT:
    torch.manual_seed(0)
    return DualDiT(get_preset("debug")).eval()


@pytest.fixture
def live_model(debug_model) -> DualDiT:
    return open_gates(debug_model)
