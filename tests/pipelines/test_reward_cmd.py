"""``tandem reward``: a trained model registered as tandem-reward@ALIAS and reloaded from the
registry scores clips exactly as it did before it was saved (latent and omni backbones);
``tandem reward score`` prints per-head scores; bad inputs exit 2 before Ray starts; the CLI
trains on Ray Train, logs held-out accuracy per head to MLflow and sets the alias."""

import hashlib
import json
from pathlib import Path

import pytest
import torch

from pipelines.cli import main
from pipelines.registry import register
from pipelines.reward_cmd import open_reward_source, score_clips
from pipelines.tracking import MlflowTracker
from reward.annotation.rankings import write_rankings
from reward.annotation.simulate import SIM_AXES, SimulationConfig, make_rollouts, simulate_rankings
from reward.scoring.clip_store import find_clips, score_clip_files
from reward.scoring.train import RewardTrainConfig, train_reward

HEADS = ["motion", "av_sync", "overall"]


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Small tensors: a second OpenMP thread costs more than it gives on a busy 2-core box."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def ranked_rollouts(tmp_path_factory):
    root = tmp_path_factory.mktemp("reward")
    short = SimulationConfig(duration_s=0.5, max_offset_s=0.1)  # cheap to encode
    metas = make_rollouts(root / "rollouts", groups=6, per_group=3, seed=3, cfg=short)
    write_rankings(simulate_rankings(metas, SIM_AXES, noise=0.15, seed=3), root / "rankings")
    return root / "rollouts", root / "rankings"


def small_config(tmp_path, **over) -> RewardTrainConfig:
    from pipelines.config_loader import from_dict

    base = {"model": {"heads": HEADS, "latent": {"dim": 32, "depth": 1, "heads": 2, "fps": 16.0}},
            "steps": 4, "clips_per_step": 8, "eval_every": 4, "holdout_fraction": 0.4, "storage": str(tmp_path / "run")}
    for key, value in over.items():
        node = base
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return from_dict(RewardTrainConfig, base)


@pytest.mark.parametrize("backbone", ["latent", "media", "omni"])
def test_model_reloaded_from_the_registry_scores_exactly_as_before_saving(ranked_rollouts, tmp_path, backbone):
    rollouts, rankings = ranked_rollouts
    over = {}
    if backbone == "omni":
        from reward.scoring.backbones.omni import save_random_omni

        over = {"model.backbone": "omni", "model.omni.model_path": str(save_random_omni(tmp_path / "omni")),
                "model.omni.dtype": "float32", "model.omni.lora_rank": 4, "steps": 2, "clips_per_step": 4,
                "eval_every": 2}
    if backbone == "media":
        over = {"model.backbone": "media"}
    result = train_reward(small_config(tmp_path, **over), rankings, [rollouts])
    clips = find_clips([rollouts])[:5]
    before = score_clip_files(result.model, clips)
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    with MlflowTracker("tandem-reward", tracking_uri=uri) as run:  # artifacts beside the store, as the CLI
        register(result.model_dir, "tandem-reward", alias="candidate", run_id=run.run_id, tracking_uri=uri)
    [source] = open_reward_source("models:/tandem-reward@candidate", tracking_uri=uri)
    assert source.heads == tuple(HEADS) and source.uses == ("latents" if backbone == "latent" else "media")
    assert score_clip_files(source, clips) == before  # float for float
    rows = score_clips("models:/tandem-reward@candidate", [str(c.mp4) for c in clips], tracking_uri=uri)
    assert [{h: r[h] for h in HEADS} for r in rows] == before
    meta = json.loads((result.model_dir / "reward.json").read_text())
    assert set(meta["metrics"]) >= {f"heldout/{h}/accuracy_with_ties" for h in HEADS}


def test_score_command_prints_per_head_scores_of_metric_heads(ranked_rollouts, capsys):
    rollouts, _ = ranked_rollouts
    assert main(["reward", "score", "metric:motion,loudness_clipping", str(rollouts / "samples" / "sim3-g0000-0.mp4"),
                 "--json"]) == 0
    row = json.loads(capsys.readouterr().out.strip())
    assert row["clip"] == "sim3-g0000-0" and set(row) >= {"motion", "loudness", "clipping"}


@pytest.mark.parametrize("argv, message", [
    (["--rankings", "{tmp}/none", "--config", "latent_cpu"], "no rankings table at"),
    (["--rankings", "{rankings}", "--config", "nonexistent"], "unknown recipe 'nonexistent'; known: latent_cpu"),
    (["--rankings", "{rankings}", "--config", "latent_cpu", "model.heads=[lighting]"], "0 training and 0 held-out"),
    (["--rankings", "{rankings}", "--config", "latent_cpu", "loss.theta=1"], "theta must be > 1"),
    (["{rollouts}", "loss.ties=never", "--rankings", "{rankings}", "--config", "latent_cpu"], "ties must be"),
    (["--rankings", "{rankings}", "--config", "omni_7b"], "is not a local model directory"),
    (["--rankings", "{rankings}", "--config", "latent_cpu", "clips_per_step=1"], "clips_per_step to at least 2"),
])
def test_bad_inputs_exit_2_before_ray_starts(ranked_rollouts, tmp_path, capsys, argv, message):
    rollouts, rankings = ranked_rollouts
    argv = [a.format(tmp=tmp_path, rankings=rankings, rollouts=rollouts) for a in argv]
    assert main(["reward", "train", "--rollouts", str(rollouts), *argv]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_train_command_on_two_ray_workers_with_deepspeed_logs_heldout_accuracy_and_sets_the_alias(
        ranked_rollouts, tmp_path, monkeypatch, capsys, local_ray):
    """Two Ray Train workers, a DeepSpeed ZeRO-2 engine each (the path large backbones take)."""
    import mlflow

    rollouts, rankings = ranked_rollouts
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert main(["reward", "train", "--rankings", str(rankings), "--rollouts", str(rollouts), "--config", "latent_cpu",
                 "--alias", "candidate", f"storage={tmp_path / 'run'}", "steps=6", "eval_every=3", "clips_per_step=8",
                 "holdout_fraction=0.4", f"model.heads={json.dumps(HEADS)}", "model.latent.dim=32",
                 "model.latent.depth=1", "workers.num_workers=2", "engine=deepspeed", "deepspeed.zero_stage=2",
                 "deepspeed.micro_batch_per_rank=1"]) == 0
    out = capsys.readouterr().out
    assert "registered: models:/tandem-reward@candidate (version 1)" in out and "av_sync" in out
    client = mlflow.MlflowClient(uri)
    version = client.get_model_version_by_alias("tandem-reward", "candidate")
    run = client.get_run(version.run_id)
    assert run.info.status == "FINISHED" and run.data.params["engine"] == "deepspeed"
    assert run.data.params["workers.num_workers"] == "2"
    for head in HEADS:
        for metric in ("accuracy_without_ties", "accuracy_with_ties", "tie_epsilon"):
            assert f"heldout/{head}/{metric}" in run.data.metrics
        assert len(client.get_metric_history(run.info.run_id, f"heldout/{head}/accuracy_with_ties")) == 2  # steps 3, 6
    from pipelines.lineage import logged, rollouts_digest, weights_digest  # issue 25

    assert logged(client, run.info.run_id) == {
        "rankings": ("input", hashlib.sha256((rankings / "rankings.parquet").read_bytes()).hexdigest()[:16], None),
        "rollouts": ("input", rollouts_digest(rollouts), None),
        "reward-model": ("output", weights_digest(tmp_path / "run" / "model"), None)}
    assert main(["reward", "score", "models:/tandem-reward@candidate", str(rollouts)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["clip", *HEADS] and len(table) == 1 + 18
    assert torch.isfinite(torch.tensor([float(v) for v in table[1].split()[1:]])).all()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_reward_worker_killed_mid_run_is_restarted_and_the_run_ends_as_if_uninterrupted(
        ranked_rollouts, tmp_path, monkeypatch, local_ray):
    """Two Ray Train workers; one is SIGKILLed once a checkpoint is down. Ray restarts them,
    they resume from the last checkpoint, and the registered model is the uninterrupted one's."""
    from safetensors.torch import load_file

    from pipelines.reward_cmd import run_reward_training
    from tests.pipelines.conftest import ray_train_worker_killed_at

    rollouts, rankings = ranked_rollouts
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlruns.db'}")
    over = {"steps": 8, "checkpoint_every": 2, "workers.num_workers": 2, "workers.cpus_per_worker": 0.5}
    whole = run_reward_training(small_config(tmp_path / "whole", **over), str(rankings), [str(rollouts)])
    with ray_train_worker_killed_at(tmp_path / "killed" / "run" / "checkpoints", step=4) as killed:
        resumed = run_reward_training(small_config(tmp_path / "killed", **over), str(rankings), [str(rollouts)])
    assert killed, "no worker was killed"
    resumed_from = json.loads(Path(resumed["model_dir"], "reward.json").read_text())["resumed_from"]
    assert resumed_from is not None and resumed_from >= 4, resumed_from  # it did not start over
    expected = load_file(f"{whole['model_dir']}/reward.safetensors")
    got = load_file(f"{resumed['model_dir']}/reward.safetensors")
    assert expected.keys() == got.keys() and all(torch.equal(got[k], v) for k, v in expected.items())
    assert resumed["metrics"] == whole["metrics"]
