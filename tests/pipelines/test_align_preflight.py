"""``tandem align`` refuses what cannot run before Ray starts: exit 2 with the fix."""

from __future__ import annotations

import sys

import pytest

from pipelines.cli import main


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "1")
    return tmp_path


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """An MLflow store holding tandem-reward@prod (one store: creating one takes seconds)."""
    from pipelines.registry import register
    from pipelines.tracking import default_tracking_uri

    store = tmp_path_factory.mktemp("registry")
    (store / "reward.safetensors").write_bytes(b"weights")
    with pytest.MonkeyPatch.context() as env:
        env.delenv("MLFLOW_TRACKING_URI", raising=False)
        env.chdir(store)  # MLflow may put a new experiment's artifacts under ./mlruns
        register(store / "reward.safetensors", "tandem-reward", alias="prod", tracking_uri=default_tracking_uri(store))
        yield store


def align(store, *overrides):
    return main(["align", "--config", "debug_cpu", f"storage={store / 'align'}", f"tracking_dir={store}",
                 *overrides])


def assert_refused_before_ray(code, capsys, *needles):
    err = capsys.readouterr().err
    assert code == 2, err
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()
    for needle in needles:
        assert needle in err, err


def test_a_group_of_one_is_refused(store, capsys):
    assert_refused_before_ray(align(store, "grpo.group_size=1"), capsys, "group_size must be >= 2")


def test_an_unknown_reward_model_alias_is_refused_and_the_existing_ones_listed(registry, store, capsys):
    code = align(registry, "rewards.quality.source=models:/tandem-reward@nope")
    assert_refused_before_ray(code, capsys, "rewards.quality.source", "models:/tandem-reward@nope does not resolve",
                              "has @prod")


def test_a_registered_file_that_is_no_reward_model_is_refused_before_ray(registry, store, capsys):
    code = align(registry, "rewards.quality.source=models:/tandem-reward@prod")
    assert_refused_before_ray(code, capsys, "rewards.quality", "does not load as a reward model")
    assert (registry / "align" / "rewards" / "quality" / "model" / "reward.safetensors").read_bytes() == b"weights"


def test_a_checkpoint_of_another_preset_is_refused(store, capsys):
    from model.checkpoint import save
    from model.dit import DualDiT
    from model.presets import get_preset

    cfg = get_preset("debug")
    cfg.depth = 2
    path = save(DualDiT(cfg), store / "ema.safetensors")
    assert_refused_before_ray(align(store, f"init={path}"), capsys, "the recipe says preset=debug", '"depth": 2')
    run = store / "train"
    (run / "checkpoints" / "step00000004").mkdir(parents=True)
    (run / "checkpoints" / "latest").write_text("step00000004")
    (run / "recipe.yaml").write_text("preset: small\n")
    assert_refused_before_ray(align(store, f"init={run / 'checkpoints'}"), capsys, "preset 'small'",
                              "set preset to the checkpoint's")


def test_a_missing_checkpoint_unknown_registry_model_or_recipe_is_refused(registry, store, capsys):
    assert_refused_before_ray(align(registry, f"init={registry / 'nope.safetensors'}"), capsys, "does not exist")
    assert_refused_before_ray(align(registry, "init=models:/tandem-dit@prod"), capsys,
                              "no registered model 'tandem-dit'")
    assert_refused_before_ray(main(["align", "--config", "nope"]), capsys, "unknown recipe 'nope'", "debug_cpu")


def test_latents_the_encoders_do_not_make_or_a_reserved_alias_are_refused(store, capsys):
    assert_refused_before_ray(align(store, "sequence.video_temporal_stride=8"), capsys, "sequence strides",
                              "sequence.video_temporal_stride=4")
    assert_refused_before_ray(align(store, "encoder.video=ltx2"), capsys, "encoder.video_path is required")
    assert_refused_before_ray(align(store, "register_alias=latest"), capsys, "reserved")


def test_both_recipes_load():
    from pipelines.align_cmd import load_align_recipe

    assert load_align_recipe("debug_cpu").init == ""
    big = load_align_recipe("1b_8gpu")
    assert big.preset == "1b" and big.engine.precision == "bf16" and big.workers.num_workers == 8
    assert any(not r.optimise for r in big.rewards.values())


def test_submit_sends_align_with_its_arguments():
    from pipelines.cli import build_parser

    args = build_parser().parse_args(["submit", "align", "--", "--config", "1b_8gpu", "steps=10"])
    assert (args.what, args.args) == ("align", ["--config", "1b_8gpu", "steps=10"])


def test_a_checkpoint_trained_at_another_frame_rate_names_fps_and_the_override(store, capsys):
    """The quickstart's path: a debug checkpoint of 8 fps latents into the 25 fps debug recipe."""
    from model.checkpoint import save
    from model.dit import DualDiT
    from pipelines.align_cmd import load_align_recipe, preflight
    from reward.grpo.align import model_config

    eight_fps = model_config(load_align_recipe("debug_cpu", ["sequence.fps=8"]))
    path = save(DualDiT(eight_fps), store / "ema.safetensors")
    assert_refused_before_ray(align(store, f"init={path}"), capsys, "fps: checkpoint 8.0 vs recipe 25.0",
                              "set sequence.fps=8")
    assert "preset" not in capsys.readouterr().err  # the size is the recipe's: the preset is not the problem
    plan = preflight(load_align_recipe("debug_cpu", [f"init={path}", "sequence.fps=8", f"storage={store / 'a'}",
                                                     f"tracking_dir={store}"]))
    assert plan.init_path == str(path) and plan.lineage == {}  # a file of no known run


def test_resuming_a_storage_under_another_config_is_refused_naming_the_keys(store, capsys):
    from pipelines.align_cmd import load_align_recipe, preflight
    from pipelines.config_loader import save_config

    storage = store / "align"
    save_config(load_align_recipe("debug_cpu", [f"storage={storage}"]), storage / "recipe.yaml")
    (storage / "checkpoints").mkdir()
    (storage / "checkpoints" / "latest").write_text("step00000010")
    assert_refused_before_ray(align(store, "steps=60", "engine.lr=0.001"), capsys,
                              f"storage={storage} holds a run of another config",
                              "engine.lr 0.01 -> 0.001", "steps 30 -> 60", "use another storage=")
    # Where it runs and how it is recorded may change: those fields are run_only.
    preflight(load_align_recipe("debug_cpu", [f"storage={storage}", "checkpoint_every=5", "register_alias=prod",
                                              f"tracking_dir={store / 'elsewhere'}"]))


def test_the_quickstart_aligns_a_debug_training_run_at_the_frame_rate_it_was_trained_at():
    """The quickstart's `tandem align --config debug_cpu init=runs/train_debug_cpu/checkpoints ...`:
    its overrides give the policy the model config `tandem train --config debug_cpu` makes on
    `tandem latents --config debug` latents, and a storage of its own (the fresh example's run
    would otherwise be resumed under another config: refused)."""
    import shlex
    from pathlib import Path

    from model.presets import get_preset
    from pipelines.align_cmd import load_align_recipe
    from pipelines.config_loader import load_config, resolve_recipe
    from pipelines.latents_cmd import LatentsConfig
    from pipelines.train_cmd import load_train_recipe
    from reward.grpo.align import model_config
    from training.encoders import describe

    quickstart = (Path(__file__).parents[2] / "docs" / "quickstart.md").read_text()
    [line] = [x for x in quickstart.splitlines() if "tandem align --config debug_cpu init=runs/train_debug_cpu" in x]
    overrides = [a for a in shlex.split(line.split("#")[0])[4:] if not a.startswith("init=")]
    cfg = load_align_recipe("debug_cpu", overrides)
    latents = load_config(LatentsConfig, resolve_recipe("debug", kind="latents"))
    trained = get_preset(load_train_recipe("debug_cpu").preset, describe(latents.encoder, latents.buckets.fps).geometry())
    assert model_config(cfg) == trained
    assert cfg.storage != load_align_recipe("debug_cpu").storage
