"""Named DualDiT sizes. ``get_preset(name)`` returns a fresh, editable config.

=======  =====  ==============  ==============  ========  ============================
preset   depth  video dim/heads audio dim/heads text dim  parameters (tested)
=======  =====  ==============  ==============  ========  ============================
debug    4      128 / 4         96 / 3          64        2.4M: trains on a CPU in seconds
small    12     1024 / 16       512 / 8         4096      0.33B
1b       17     1536 / 12       768 / 6         4096      1.02B
14b      40     4096 / 32       1536 / 12       4096      14.2B (Seedance-class, asymmetric)
=======  =====  ==============  ==============  ========  ============================

Larger presets expect UMT5-XXL text features (4096 wide) and 16-channel video / audio
latents (14b: MLP ratio 3.5); audio is narrower than video because it carries ~100x fewer tokens per second.
"""

from __future__ import annotations

import copy

from model.dit import BranchConfig, DualDiTConfig

PRESETS: dict[str, DualDiTConfig] = {
    "debug": DualDiTConfig(
        depth=4,
        video=BranchConfig(dim=128, heads=4, latent_channels=8, patch=(1, 2, 2)),
        audio=BranchConfig(dim=96, heads=3, latent_channels=8, patch=(1,)),
        text_dim=64,
    ),
    "small": DualDiTConfig(
        depth=12,
        video=BranchConfig(dim=1024, heads=16, latent_channels=16, patch=(1, 2, 2)),
        audio=BranchConfig(dim=512, heads=8, latent_channels=16, patch=(1,)),
        text_dim=4096,
    ),
    "1b": DualDiTConfig(
        depth=17,
        video=BranchConfig(dim=1536, heads=12, latent_channels=16, patch=(1, 2, 2)),
        audio=BranchConfig(dim=768, heads=6, latent_channels=16, patch=(1,)),
        text_dim=4096,
    ),
    "14b": DualDiTConfig(
        depth=40,
        video=BranchConfig(dim=4096, heads=32, latent_channels=16, patch=(1, 2, 2)),
        audio=BranchConfig(dim=1536, heads=12, latent_channels=16, patch=(1,)),
        mlp_ratio=3.5,
        text_dim=4096,
    ),
}


def get_preset(name: str) -> DualDiTConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown DualDiT preset {name!r}; choose one of {sorted(PRESETS)}")
    return copy.deepcopy(PRESETS[name])
