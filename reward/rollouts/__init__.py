"""Rollouts: samples generated from a checkpoint, the input of annotation, scoring and alignment."""
