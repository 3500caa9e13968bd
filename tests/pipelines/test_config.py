from dataclasses import dataclass, field

import pytest

from model.config import output_dict, run_only
from pipelines.config_loader import ConfigError, load_config, output_hash, save_config


@dataclass
class Optim:
    lr: float = 1e-4
    betas: tuple = (0.9, 0.999)


@dataclass
class Run:
    name: str = "x"
    steps: int = 10
    bf16: bool = False
    optim: Optim = field(default_factory=Optim)
    tags: list = field(default_factory=list)
    seed: int | None = None
    workers: int = run_only(4)  # how many, not what: leaves the output alone


def test_defaults_yaml_then_overrides(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("steps: 20\noptim:\n  lr: 0.001\n")
    cfg = load_config(Run, f, ["optim.betas=[0.8, 0.9]", "bf16=true", "name=big run", "seed=3"])
    assert cfg.steps == 20 and cfg.optim.lr == 0.001  # file beats defaults
    assert cfg.optim.betas == (0.8, 0.9) and cfg.bf16 is True and cfg.name == "big run" and cfg.seed == 3


def test_override_beats_file_and_keeps_siblings(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("optim:\n  lr: 0.5\n  betas: [0.1, 0.2]\n")
    cfg = load_config(Run, f, ["optim.lr=2"])
    assert cfg.optim.lr == 2.0 and isinstance(cfg.optim.lr, float)
    assert cfg.optim.betas == (0.1, 0.2)


def test_dump_and_reload_round_trip(tmp_path):
    cfg = load_config(Run, None, ["steps=7", "optim.lr=3e-4", "tags=[a, b]"])
    path = save_config(cfg, tmp_path / "resolved.yaml")
    again = load_config(Run, path)
    assert again == cfg
    assert output_hash(again) == output_hash(cfg)
    assert output_hash(load_config(Run, None, ["steps=8"])) != output_hash(cfg)


def test_output_hash_ignores_run_only_fields():
    cfg = load_config(Run, None, ["steps=7"])
    more_workers = load_config(Run, None, ["steps=7", "workers=64"])
    assert more_workers.workers == 64
    assert output_hash(more_workers) == output_hash(cfg)
    assert "workers" not in output_dict(cfg) and output_dict(cfg)["optim"]["lr"] == 1e-4


def test_curation_and_latents_resume_identity_leaves_out_actors_and_tracking():
    from curation.pipeline import CurationConfig
    from pipelines.latents_cmd import LatentsConfig

    base = load_config(CurationConfig)
    scaled = load_config(CurationConfig, None, ["ray.actor_pool_size=8", "track=false", "experiment=other"])
    assert output_hash(scaled) == output_hash(base)
    assert output_hash(load_config(CurationConfig, None, ["sync.policy=reject"])) != output_hash(base)
    latents = load_config(LatentsConfig)
    assert output_hash(load_config(LatentsConfig, None, ["actors=4", "cpus_per_actor=2"])) == output_hash(latents)
    assert output_hash(load_config(LatentsConfig, None, ["buckets.fps=12"])) != output_hash(latents)


@pytest.mark.parametrize("override, message", [
    ("optim.lrr=1", "optim.lrr"),
    ("stepz=3", "stepz"),
    ("steps=many", "expected int"),
    ("noequals", "key=value"),
])
def test_bad_overrides_say_what_to_fix(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(Run, None, [override])


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Run, tmp_path / "nope.yaml")
