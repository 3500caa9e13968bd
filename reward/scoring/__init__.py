"""Scoring clips: the reward-source interface, the reward model (backbones, frozen pretrained
nets), its training on rankings and its checkpoints, and metric heads that need no training."""
