import subprocess
import time
from pathlib import Path

import mlflow
import pytest

from pipelines.tracking import (
    DEFAULT_STORE,
    NullTracker,
    default_tracking_uri,
    describe_run,
    git_tags,
    open_tracker,
)

VERSION_TAGS = ("version.tandem", "version.torch", "version.ray", "version.deepspeed", "version.mlflow")


def test_tracker_writes_a_real_mlflow_run(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    artifact = tmp_path / "report.txt"
    artifact.write_text("hello")
    started = time.time() - 30  # the command began before its tracker was opened
    with open_tracker("unit", run_name="r1", store_dir=tmp_path / "store", start_time=started) as tracker:
        tracker.log_params({"model": {"preset": "debug", "depth": 2}, "lr": 0.001})
        tracker.log_metrics({"loss": 1.5}, step=0)
        tracker.log_metrics({"loss": 0.5}, step=1)
        tracker.log_artifact(artifact)
        tracker.set_tags({"stage": "test"})
    assert tracker.tracking_uri.startswith("sqlite:///") and str(tmp_path) in tracker.tracking_uri

    mlflow.set_tracking_uri(tracker.tracking_uri)
    runs = mlflow.search_runs(experiment_names=["unit"])
    assert len(runs) == 1
    row = runs.iloc[0]
    assert row["run_id"] == tracker.run_id and row["status"] == "FINISHED"
    assert row["params.model.preset"] == "debug" and row["params.lr"] == "0.001"
    assert row["metrics.loss"] == 0.5 and row["tags.stage"] == "test"
    client = mlflow.MlflowClient(tracker.tracking_uri)
    assert [m.value for m in client.get_metric_history(tracker.run_id, "loss")] == [1.5, 0.5]
    assert [a.path for a in client.list_artifacts(tracker.run_id)] == ["report.txt"]
    run = client.get_run(tracker.run_id)
    assert run.info.run_name == "r1" and run.info.start_time == int(started * 1000)
    assert run.info.end_time - run.info.start_time >= 30_000  # the run lasts as long as the command
    assert all(run.data.tags[k] not in ("", "not installed") for k in VERSION_TAGS), run.data.tags
    if (Path(__file__).parents[2] / ".git").exists():  # a checkout: its commit and whether it was edited
        assert len(run.data.tags["mlflow.source.git.commit"]) == 40 and run.data.tags["git.dirty"] in ("true", "false")
    # MLflow 3 opens experiments on its GenAI pages unless they say they hold model training runs.
    assert client.get_experiment_by_name("unit").tags["mlflow.experimentKind"] == "custom_model_development"


def test_tracking_uri_env_is_honoured(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    tracker = open_tracker("unit-env", store_dir=tmp_path / "ignored")
    tracker.close()
    assert tracker.tracking_uri == uri
    assert not (tmp_path / "ignored").exists()


def test_failed_block_marks_run_failed(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    try:
        with open_tracker("unit-fail", store_dir=tmp_path) as tracker:
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    run = mlflow.MlflowClient(tracker.tracking_uri).get_run(tracker.run_id)
    assert run.info.status == "FAILED" and run.data.tags["error"] == "RuntimeError: boom"


def test_ctrl_c_during_ray_train_leaves_the_run_killed_not_failed(tmp_path, monkeypatch):
    """Ray Train answers Ctrl-C itself, aborting its run and exiting the driver (SystemExit):
    the command's run says KILLED, as on any other command's Ctrl-C."""
    from pipelines import ray_train
    from pipelines.train_cmd import load_train_recipe

    def ctrl_c(*args, **kwargs):
        raise SystemExit(1)

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(ray_train, "ray_for", lambda cfg, address: None)
    monkeypatch.setattr(ray_train, "fit_on_ray", ctrl_c)
    cfg = load_train_recipe("debug_cpu", [f"storage={tmp_path / 'train'}", f"tracking_dir={tmp_path / 'runs'}"])
    with pytest.raises(SystemExit):
        ray_train.fit_in_run(None, {}, cfg, address=None, run_name="train debug_cpu", started=time.time())
    client = mlflow.MlflowClient(default_tracking_uri(tmp_path / "runs"))
    [run] = client.search_runs([client.get_experiment_by_name("tandem-train").experiment_id])
    assert run.info.status == "KILLED" and run.data.tags["error"] == "interrupted (Ctrl-C)"


def test_every_command_logs_to_runs_of_the_working_directory_by_default(tmp_path, monkeypatch):
    from reward.grpo.align import AlignConfig
    from reward.scoring.train import RewardTrainConfig
    from training.trainer import TrainConfig

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert default_tracking_uri() == f"sqlite:///{tmp_path / 'runs' / 'mlruns.db'}"
    # curate, latents and generate take no store setting; the Ray Train commands' default is the same
    assert TrainConfig().tracking_dir == AlignConfig().tracking_dir == RewardTrainConfig().tracking_dir == DEFAULT_STORE


def test_system_metrics_are_sampled_while_the_run_lasts(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")
    with open_tracker("unit-system", store_dir=tmp_path, system_metrics=True) as tracker:
        time.sleep(1.5)
    client = mlflow.MlflowClient(tracker.tracking_uri)
    metrics = client.get_run(tracker.run_id).data.metrics
    assert "system/cpu_utilization_percentage" in metrics and "system/system_memory_usage_megabytes" in metrics
    assert len(client.get_metric_history(tracker.run_id, "system/cpu_utilization_percentage")) >= 3


def test_a_run_shorter_than_one_sampling_interval_still_has_its_system_metrics(tmp_path):
    with open_tracker("unit-system", store_dir=tmp_path, system_metrics=True) as tracker:  # 10 s interval
        time.sleep(0.5)
    assert "system/cpu_utilization_percentage" in mlflow.MlflowClient(tracker.tracking_uri).get_run(tracker.run_id).data.metrics


@pytest.mark.gpu
def test_a_machine_with_nvidia_gpus_samples_them_too(tmp_path, monkeypatch):
    """The ``gpu`` extra (nvidia-ml-py) on a machine with a GPU: its utilisation and memory join
    the system metrics. (Without either, the runs above log the rest: nothing fails.)"""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    pytest.importorskip("pynvml", reason="nvidia-ml-py is not installed (pip install -e '.[gpu]')")
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")
    with open_tracker("unit-gpu", store_dir=tmp_path, system_metrics=True) as tracker:
        time.sleep(1)
    metrics = mlflow.MlflowClient(tracker.tracking_uri).get_run(tracker.run_id).data.metrics
    assert {"system/gpu_0_utilization_percentage", "system/gpu_0_memory_usage_megabytes"} <= set(metrics)


@pytest.mark.parametrize("words, name", [
    (("train", "debug_cpu", "engine.lr=1e-3"), "train debug_cpu engine.lr=1e-3"),
    (("curate", "footage/", "shots.max_clip_s=4"), "curate footage/ shots.max_clip_s=4"),
    (("latents", "/tmp/pytest-of-root/pytest-7/test_a0/curated/shards", None, "actors=2"),
     "latents …/curated/shards actors=2"),
    (("train", "debug_cpu", "data.shards=/tmp/pytest-of-root/pytest-7/test_a0/latents/"),
     "train debug_cpu data.shards=…/test_a0/latents/"),
])
def test_runs_are_named_for_what_they_are(words, name):
    assert describe_run(*words) == name


def test_the_cli_names_runs_from_the_command_recipe_inputs_and_overrides():
    from pipelines.cli import build_parser, default_run_name

    def name(*argv):
        args, extra = build_parser().parse_known_args(argv)
        (args.overrides if hasattr(args, "overrides") else args.inputs).extend(extra)
        return args.run_name or default_run_name(args)

    assert name("curate", "footage/", "--out", "shards/", "shots.max_clip_s=4") == "curate footage/ shots.max_clip_s=4"
    assert name("train", "--config", "debug_cpu", "storage=runs/a", "engine.lr=1e-3", "tracking_dir=x") \
        == "train debug_cpu engine.lr=1e-3"  # where it writes is not what it is
    assert name("latents", "curated/", "--out", "lat/", "--config", "1b_ltx2") == "latents 1b_ltx2 curated/"
    assert name("reward", "train", "--rankings", "r", "--rollouts", "a", "--config", "latent_cpu", "steps=9") \
        == "reward train latent_cpu steps=9"
    assert name("align", "--config", "debug_cpu", "--run-name", "mine") == "mine"


def test_a_checkout_says_its_commit_and_whether_and_how_it_was_edited(tmp_path):
    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                       check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    git("add", "a.py")
    git("commit", "-qm", "one")
    clean = git_tags(tmp_path)
    assert len(clean["mlflow.source.git.commit"]) == 40 and clean["git.dirty"] == "false" and "git.diff" not in clean
    (tmp_path / "a.py").write_text("x = 2\n")
    first = git_tags(tmp_path)
    (tmp_path / "a.py").write_text("x = 3\n")
    second = git_tags(tmp_path)
    assert first["git.dirty"] == second["git.dirty"] == "true" and first["git.diff"] != second["git.diff"]
    (tmp_path / "site-packages").mkdir()  # inside a checkout, not its top (a venv in it): not its code
    assert git_tags(tmp_path / "site-packages") == {}


def test_null_tracker_accepts_everything():
    t = open_tracker("x", enabled=False)
    assert isinstance(t, NullTracker)
    t.log_params({"a": 1})
    t.log_metrics({"b": 2.0}, step=3)
    t.close()


def test_tandem_ui_serves_the_store_of_the_working_directory_and_lists_each_experiments_runs(
        tmp_path, monkeypatch, capsys):
    from pipelines.cli import main
    from pipelines.ui import experiment_urls, ui_command

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["ui"]) == 2 and "no runs here" in capsys.readouterr().err  # not where the commands ran
    open_tracker("tandem-train", run_name="train debug_cpu").close()
    uri = default_tracking_uri()
    [line] = experiment_urls("http://127.0.0.1:5000", uri)  # "Default" has no runs: not listed
    assert line.startswith("tandem-train: http://127.0.0.1:5000/#/experiments/")
    assert line.endswith("/runs?workflowType=machine_learning")  # the "Model training" pages, not GenAI's
    cmd = ui_command(uri, "127.0.0.1", 5000)
    assert cmd[cmd.index("--backend-store-uri") + 1] == uri
