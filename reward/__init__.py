"""The reward stage, in four rooms, each importing only the rooms before it:

- ``reward.rollouts``: samples generated from a checkpoint (the rollouts directory, the
  generator, the reference media a prompt names);
- ``reward.annotation``: Label Studio tasks and exports, the rankings table, Bradley-Terry
  preferences, the human leaderboard, annotator agreement, simulated rollouts and annotators;
- ``reward.scoring``: reward sources, the reward model (backbones, frozen pretrained nets),
  its training and checkpoints, metric heads;
- ``reward.grpo``: DanceGRPO alignment (the RL step, the trainer, what it reads).

``tests/test_import_boundaries.py`` enforces the order.
"""
