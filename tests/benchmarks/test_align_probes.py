"""benchmarks/align_probes.py's generator probe on a fresh debug checkpoint: its head input
depends on the prompt a little (text cross-attention is not gated), and a read-out of the named
colour is scored on every evaluation split. And the runs benchmarks/align_winrate.py plans."""

from __future__ import annotations

import torch

from benchmarks.align_probes import generator_probe
from benchmarks.judged_prompts import eval_prompts, train_prompts


def test_the_generator_probe_measures_how_much_of_the_head_input_the_prompt_sets(tmp_path):
    from model.checkpoint import save
    from model.dit import DualDiT
    from reward.grpo.align import AlignConfig, model_config

    torch.manual_seed(0)
    save(DualDiT(model_config(AlignConfig(preset="debug"))), tmp_path / "base.safetensors")
    out = generator_probe(tmp_path / "base.safetensors", train_prompts(1), eval_prompts(), samples=2, times=(0.5,))
    assert 0 < out["share"][0.5] < 0.5  # the prompt reaches the head, the noise sets most of it
    assert set(out["r2"]) == {(0.5, split) for split in eval_prompts()}
    assert all(r.shape == (3,) and (r <= 1).all() for r in out["r2"].values())


def test_align_winrate_plans_the_three_runs_or_the_ones_named_under_a_tag():
    from benchmarks.align_winrate import plan_runs

    runs = plan_runs(1e-2, 2.0)
    assert list(runs) == ["clean", "control", "flaw"] and runs["control"][0] == 0.0
    assert runs["flaw"][1] == {"bright": {"source": "brightness", "coefficient": 2.0}}
    tagged = plan_runs(2e-3, 2.0, names="clean", fractions="0.25", tag="c")
    assert tagged == {"clean-c": (2e-3, None, []), "tf0.25-c": (2e-3, None, ["grpo.timestep_fraction=0.25"])}
