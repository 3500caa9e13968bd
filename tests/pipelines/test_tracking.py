import mlflow

from pipelines.tracking import NullTracker, open_tracker


def test_tracker_writes_a_real_mlflow_run(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    artifact = tmp_path / "report.txt"
    artifact.write_text("hello")
    with open_tracker("unit", run_name="r1", store_dir=tmp_path / "store") as tracker:
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
    assert run.info.status == "FAILED"


def test_null_tracker_accepts_everything():
    t = open_tracker("x", enabled=False)
    assert isinstance(t, NullTracker)
    t.log_params({"a": 1})
    t.log_metrics({"b": 2.0}, step=3)
    t.close()
