"""The one door to MLflow.

``open_tracker(experiment, run_name, store_dir=...)`` gives an ``MlflowTracker`` writing to
``MLFLOW_TRACKING_URI`` when set, else to a SQLite store ``<store_dir>/mlruns.db`` (one
local store shared by all runs under the same parent, so the MLflow UI can compare them
side by side). It implements ``training.tracker.Tracker``, the protocol trainers take;
``NullTracker`` (same methods, does nothing) is for non-zero ranks and tests.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from training.tracker import NullTracker, Tracker

log = logging.getLogger(__name__)


def default_tracking_uri(store_dir: str | Path) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else a SQLite store inside ``store_dir``."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    store_dir = Path(store_dir).resolve()
    store_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{store_dir / 'mlruns.db'}"


def experiment_id(client, name: str) -> str:
    """The id of experiment ``name``, created if new; with a local SQLite store its artifacts
    go beside the database, not into ``./mlruns`` of whatever directory the command runs in."""
    exp = client.get_experiment_by_name(name)
    if exp:
        return exp.experiment_id
    uri = client.tracking_uri
    root = (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri() if uri.startswith("sqlite:") else None
    return client.create_experiment(name, artifact_location=root)


def flatten(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config -> ``{"a.b": value}`` (MLflow params are flat)."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


class MlflowTracker:
    def __init__(self, experiment: str, run_name: str | None = None, tracking_uri: str | None = None,
                 store_dir: str | Path = "runs", run_id: str | None = None):
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "1")
        import mlflow  # imported here so code that never tracks never pays for it

        self._mlflow = mlflow
        self.tracking_uri = tracking_uri or default_tracking_uri(store_dir)
        self._client = mlflow.MlflowClient(self.tracking_uri)
        self.experiment_id = exp_id = experiment_id(self._client, experiment)
        if run_id:  # continue a run, e.g. training restarted from its checkpoint
            self._client.update_run(run_id, status="RUNNING")
            self.run_id = run_id
        else:
            self.run_id = self._client.create_run(exp_id, run_name=run_name).info.run_id
        log.info("MLflow run %s in experiment %r at %s", self.run_id, experiment, self.tracking_uri)

    def log_params(self, params: dict[str, Any]) -> None:
        flat = {k: str(v)[:6000] for k, v in flatten(params).items()}
        items = list(flat.items())
        for i in range(0, len(items), 100):  # MLflow's per-call batch limit
            self._client.log_batch(self.run_id, params=[self._mlflow.entities.Param(k, v) for k, v in items[i:i + 100]])

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        import time

        now = int(time.time() * 1000)
        ms = [self._mlflow.entities.Metric(k, float(v), now, step or 0) for k, v in metrics.items()]
        if ms:
            self._client.log_batch(self.run_id, metrics=ms)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            self._client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            self._client.log_artifact(self.run_id, str(path), artifact_path)

    def set_tags(self, tags: dict[str, str]) -> None:
        for k, v in tags.items():
            self._client.set_tag(self.run_id, k, str(v))

    def close(self, status: str = "FINISHED") -> None:
        if self.run_id:
            self._client.set_terminated(self.run_id, status)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        self.close("FAILED" if exc_type else "FINISHED")


def open_tracker(experiment: str, run_name: str | None = None, *, store_dir: str | Path = "runs",
                 enabled: bool = True, run_id: str | None = None) -> Tracker:
    """An MLflow tracker (a new run, or ``run_id`` continued), or a NullTracker when
    ``enabled`` is false (non-zero ranks)."""
    if not enabled:
        return NullTracker()
    return MlflowTracker(experiment, run_name, store_dir=store_dir, run_id=run_id)
