"""Recipes resolve, their DeepSpeed configs build, and their models instantiate on meta."""

from pathlib import Path

import pytest
import torch

from pipelines.config_loader import load_config
from training.engine import deepspeed_config
from training.trainer import TrainConfig

RECIPES = Path(__file__).parents[2] / "pipelines" / "recipes"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name,stage,gpus,ckpt", [("debug_cpu", 2, 0, False), ("1b_8gpu", 2, 8, False),
                                                  ("14b_64gpu", 3, 64, True)])
def test_recipe_builds_deepspeed_config_and_meta_model(name, stage, gpus, ckpt):
    cfg = load_config(TrainConfig, RECIPES / f"train_{name}.yaml")
    world = cfg.workers.num_workers
    assert (cfg.workers.use_gpu, world if gpus else 0) == (gpus > 0, gpus)
    ds = deepspeed_config(cfg.engine, world)
    assert ds["zero_optimization"]["stage"] == stage
    assert ds["train_batch_size"] == cfg.engine.micro_batch_per_rank * cfg.engine.grad_accum_steps * world
    assert ds["bf16"]["enabled"] == (gpus > 0)
    assert ds["optimizer"]["params"]["torch_adam"] is True
    assert cfg.engine.activation_checkpointing == ckpt

    from model.dit import DualDiT
    from model.presets import get_preset
    from training.engine import apply_activation_checkpointing

    with torch.device("meta"):
        model = DualDiT(get_preset(cfg.preset))
    if ckpt:
        assert apply_activation_checkpointing(model) == get_preset(cfg.preset).depth
    expected = {"debug": 2e6, "1b": 0.9e9, "14b": 13e9}[cfg.preset]
    assert expected < sum(p.numel() for p in model.parameters()) < 1.3 * expected


def test_overrides_reach_the_engine():
    cfg = load_config(TrainConfig, RECIPES / "train_debug_cpu.yaml", ["engine.zero_stage=3", "steps=7"])
    assert (cfg.engine.zero_stage, cfg.steps) == (3, 7)


def test_tandem_train_rejects_bad_recipes_before_starting_ray(capsys):
    from pipelines.cli import main

    assert main(["train", "--config", "debug_cpu", "engine.zero_stag=3"]) == 2
    assert "zero_stage" in capsys.readouterr().err  # names the valid keys
    assert main(["train", "--config", "debug_cpu", "data.batch_size=3"]) == 2
    assert "micro_batch_per_rank" in capsys.readouterr().err
    assert main(["train", "--config", "nope"]) == 2  # a setting to change, like any other
    assert "unknown recipe 'nope'; known: 14b_64gpu, 1b_8gpu, debug_cpu" in capsys.readouterr().err


def test_each_preset_has_one_latents_recipe_and_train_recipes_decode_with_it():
    """Recipes that cannot mismatch: the encoders a train recipe's samples decode with are the
    ones its preset's latents recipe encodes with."""
    from model.presets import PRESETS
    from pipelines.config_loader import resolve_recipe
    from pipelines.latents_cmd import LatentsConfig
    from pipelines.preflight import DECODER_FIELDS

    latents = {}
    for preset in PRESETS:
        [path] = [*RECIPES.glob(f"latents_{preset}.yaml"), *RECIPES.glob(f"latents_{preset}_*.yaml")]
        latents[preset] = load_config(LatentsConfig, path)
        assert resolve_recipe(path.stem.removeprefix("latents_"), "latents") == path
    for path in RECIPES.glob("train_*.yaml"):
        cfg = load_config(TrainConfig, path)
        encoder = latents[cfg.preset].encoder
        assert {f: getattr(cfg.sample.decoder, f) for f in DECODER_FIELDS} == \
            {f: getattr(encoder, f) for f in DECODER_FIELDS}, path.name


def test_each_environment_keeps_its_own_deepspeed_op_build(monkeypatch):
    """torch rebuilds the op when its include paths change: two venvs sharing one build folder
    would rebuild it in turn, every run paying the ~60 s build."""
    from training.engine import extensions_dir

    monkeypatch.setattr("sys.prefix", "/work/a/.venv")
    first = extensions_dir()
    assert extensions_dir() == first
    monkeypatch.setattr("sys.prefix", "/work/b/.venv")
    assert extensions_dir() != first and extensions_dir().parent == first.parent
