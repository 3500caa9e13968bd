"""Ray Train: 2 CPU workers train the debug preset under ZeRO-2; rank 0 alone logs to MLflow."""

import os

import pytest

from tests.training.conftest import make_latent_shards


@pytest.mark.timeout(300)
def test_ray_train_two_workers_zero2_logs_to_mlflow(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "1")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import ray

    from pipelines.train_cmd import load_recipe
    from training.ray_train import run_training

    shards = make_latent_shards(tmp_path / "latents", n=48)
    cfg = load_recipe("debug_cpu", [f"data.shards={shards}", f"storage={tmp_path / 'train'}", "steps=10",
                                    f"tracking_dir={tmp_path / 'runs'}", "checkpoint_every=5"])
    try:
        result = run_training(cfg, run_name="ray-zero2")
    finally:
        ray.shutdown()
    assert result.error is None, result.error
    assert (tmp_path / "train" / "checkpoints" / "latest").read_text().strip() == "step00000010"

    import mlflow

    from pipelines.tracking import default_tracking_uri

    mlflow.set_tracking_uri(default_tracking_uri(tmp_path / "runs"))
    runs = mlflow.search_runs(experiment_names=["tandem-train"], output_format="list")
    assert len(runs) == 1  # rank 1 logged nothing
    run = runs[0]
    assert run.data.params["engine.zero_stage"] == "2" and run.data.params["preset"] == "debug"
    assert run.data.tags["data.manifest"] and run.data.tags["data.shards"] == str(shards)
    client = mlflow.tracking.MlflowClient()
    for key in ("loss", "loss_video", "loss_audio", "grad_norm", "lr", "samples_per_s"):
        assert len(client.get_metric_history(run.info.run_id, key)) == 10, key
