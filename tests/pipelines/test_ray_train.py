"""Ray Train with 2 CPU workers: ZeRO-2 logs one MLflow run from rank 0 (params, metrics,
recipe, samples), registers its final weights as tandem-dit@candidate, and refuses to resume
under a changed config; under ZeRO-3 a worker killed mid-run is replaced and the run finishes
from its last checkpoint, in the same MLflow run."""

import pytest
import torch

from pipelines.tracking import default_tracking_uri
from tests.pipelines.conftest import ray_train_worker_killed_at
from tests.training.conftest import held_out_loss, make_latent_shards, trained_and_initial

pytestmark = pytest.mark.slow  # Ray Train + DeepSpeed


def _runs(store):
    import mlflow

    mlflow.set_tracking_uri(default_tracking_uri(store))
    return mlflow.search_runs(experiment_names=["tandem-train"], output_format="list"), mlflow.MlflowClient()


@pytest.mark.timeout(300)
def test_tandem_train_two_workers_zero2_logs_to_mlflow(tmp_path, mlflow_env, capsys, monkeypatch):
    import time

    from pipelines.cli import main

    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "1")  # the driver hands it to rank 0
    shards = make_latent_shards(tmp_path / "latents", n=48)
    recipe = ["--config", "debug_cpu", f"data.shards={shards}", f"storage={tmp_path / 'train'}", "steps=20",
              f"tracking_dir={tmp_path / 'runs'}", "checkpoint_every=10"]
    started = time.time()
    code = main(["train", "--run-name", "ray-zero2", *recipe])
    wall_s = time.time() - started
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "trained to step00000020" in out.out and "registered models:/tandem-dit/1" in out.out
    assert (tmp_path / "train" / "checkpoints" / "latest").read_text().strip() == "step00000020"
    assert (tmp_path / "train" / "checkpoints" / "step00000020" / "ema.safetensors").exists()
    initial, trained = trained_and_initial(tmp_path / "train" / "checkpoints")
    assert held_out_loss(trained) < 0.95 * held_out_loss(initial)  # it learned

    runs, client = _runs(tmp_path / "runs")
    assert len(runs) == 1  # rank 1 logged nothing
    run = runs[0]
    assert run.info.status == "FINISHED" and run.info.run_name == "ray-zero2"
    assert (run.info.end_time - run.info.start_time) / 1000 >= 0.8 * wall_s  # Ray's start included
    assert run.data.tags["version.deepspeed"] and run.data.tags["version.torch"]
    assert "system/cpu_utilization_percentage" in run.data.metrics  # sampled by rank 0, a Ray worker
    assert run.data.params["engine.zero_stage"] == "2" and run.data.params["preset"] == "debug"
    assert run.data.tags["data.manifest"] and run.data.tags["data.shards"] == str(shards)
    for key in ("loss", "loss_video", "loss_audio", "grad_norm", "lr", "samples_per_s", "tokens_per_s"):
        assert len(client.get_metric_history(run.info.run_id, key)) == 20, key
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert "recipe.yaml" in artifacts
    samples = [a.path for a in client.list_artifacts(run.info.run_id, "samples/step00000010")]
    assert any(p.endswith(".mp4") for p in samples) and any(p.endswith(".txt") for p in samples), samples

    # The README's models:/tandem-dit@candidate: the run's final EMA weights, logged in this run.
    from pipelines.registry import lookup, resolve
    from training.checkpoints import load_checkpoint

    uri = default_tracking_uri(tmp_path / "runs")
    assert lookup("models:/tandem-dit@candidate", tracking_uri=uri).run_id == run.info.run_id
    registered = resolve("models:/tandem-dit@candidate", tracking_uri=uri, dst=tmp_path / "download")
    model, ref = load_checkpoint(registered)
    assert ref.run_dir == registered  # its recipe came along: generate decodes with the run's decoders
    ema = load_checkpoint(tmp_path / "train" / "checkpoints" / "step00000020" / "ema.safetensors")[0]
    assert all(torch.equal(v, ema.state_dict()[k]) for k, v in model.state_dict().items())
    # Lineage (issue 25): the latents in, the registered weights out, by the digest generate records.
    from pipelines.lineage import latents_digest, logged
    from training.checkpoints import identify

    assert logged(client, run.info.run_id) == {"latent-shards": ("input", latents_digest(shards)[:32], None),
                                               "checkpoint": ("output", identify(registered).digest, None)}

    # Resuming the finished run with another learning rate would log under its old params: refused.
    assert main(["train", *recipe, "engine.lr=1e-3"]) == 2
    assert "differs in: engine.lr 0.003 -> 0.001" in capsys.readouterr().err


@pytest.mark.timeout(420)
def test_zero3_worker_killed_mid_run_is_replaced_and_resumes(tmp_path, mlflow_env):
    from pipelines.ray_train import run_training
    from pipelines.train_cmd import load_recipe

    shards = make_latent_shards(tmp_path / "latents", n=48)
    steps = 40
    cfg = load_recipe("debug_cpu", [f"data.shards={shards}", f"storage={tmp_path / 'train'}", f"steps={steps}",
                                    f"tracking_dir={tmp_path / 'runs'}", "checkpoint_every=4",
                                    "engine.zero_stage=3", "sample.every=0", "workers.max_failures=1"])
    with ray_train_worker_killed_at(tmp_path / "train" / "checkpoints", 4) as killed:
        result = run_training(cfg, run_name="ray-zero3-kill")
    assert killed, "no Ray Train worker process was found to kill"
    assert result.error is None, result.error
    assert (tmp_path / "train" / "checkpoints" / "latest").read_text().strip() == f"step{steps:08d}"
    initial, trained = trained_and_initial(tmp_path / "train" / "checkpoints")
    assert held_out_loss(trained) < 0.9 * held_out_loss(initial)  # it learned, across the restart

    runs, client = _runs(tmp_path / "runs")
    assert len(runs) == 1, "the restarted workers must continue the same MLflow run"
    run = runs[0]
    assert run.info.status == "FINISHED" and run.data.params["engine.zero_stage"] == "3"
    resumed_from = int(run.data.tags["resumed_from_step"])
    killed_at = int(killed[0][1].removeprefix("step"))
    assert 4 <= resumed_from < steps and resumed_from >= killed_at, (resumed_from, killed)
    logged_steps = {m.step for m in client.get_metric_history(run.info.run_id, "loss")}
    assert logged_steps == set(range(1, steps + 1))  # nothing missing after the restart


@pytest.mark.timeout(120)
def test_a_gpu_recipe_on_local_cpu_ray_fails_fast_with_what_to_change(tmp_path, mlflow_env, capsys):
    from pipelines.cli import main

    code = main(["train", "--config", "1b_8gpu", f"storage={tmp_path / 'train'}",
                 # 32 samples: a full batch of 4 for each of the recipe's 8 ranks, so the data passes preflight
                 f"data.shards={make_latent_shards(tmp_path / 'latents', n=32)}", f"tracking_dir={tmp_path}"])
    assert code == 2
    err = capsys.readouterr().err
    assert "8 GPU (it has 0)" in err and "workers.use_gpu=false" in err
