"""DanceGRPO alignment: the RL step, the trainer that runs it on DeepSpeed, and what it reads."""
