"""Ray Train with 2 CPU workers: under ZeRO-3 a worker killed mid-run is replaced and the run
finishes from its last checkpoint, in the same MLflow run; a GPU recipe on a CPU-only local
Ray fails fast. (`tandem train --config debug_cpu`, ZeRO-2, as docs/quickstart.md runs it: its MLflow
run, registration and refused resume are checked by tests/test_readme_commands.py.)"""

import pytest

from pipelines.tracking import default_tracking_uri
from tests.pipelines.conftest import ray_train_worker_killed_at
from tests.training.conftest import held_out_loss, make_latent_shards, trained_and_initial

pytestmark = pytest.mark.slow  # Ray Train + DeepSpeed


def _runs(store):
    import mlflow

    mlflow.set_tracking_uri(default_tracking_uri(store))
    return mlflow.search_runs(experiment_names=["tandem-train"], output_format="list"), mlflow.MlflowClient()


@pytest.mark.timeout(420)
def test_zero3_worker_killed_mid_run_is_replaced_and_resumes(tmp_path, mlflow_env):
    from pipelines.ray_train import run_training
    from pipelines.train_cmd import load_train_recipe

    shards = make_latent_shards(tmp_path / "latents", n=48)
    steps = 40
    cfg = load_train_recipe("debug_cpu", [f"data.shards={shards}", f"storage={tmp_path / 'train'}", f"steps={steps}",
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
