"""What trainers log to: the ``Tracker`` protocol, and ``NullTracker`` that logs nothing.

Trainers (training, reward, alignment) take a tracker object and never import MLflow, so they
run under plain Python or torchrun; ``pipelines.tracking`` provides the MLflow implementation
and hands it to rank 0. Non-zero ranks and tests that do not care get a ``NullTracker``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol


class Tracker(Protocol):
    run_id: str | None
    tracking_uri: str | None

    def log_params(self, params: dict[str, Any]) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...
    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None: ...
    def set_tags(self, tags: dict[str, str]) -> None: ...
    def release(self) -> None: ...  # done logging; the run stays open for its owner to close
    def close(self, status: str = "FINISHED") -> None: ...


class NullTracker:
    run_id = None
    tracking_uri = None

    def log_params(self, params):
        pass

    def log_metrics(self, metrics, step=None):
        pass

    def log_artifact(self, path, artifact_path=None):
        pass

    def set_tags(self, tags):
        pass

    def release(self):
        pass

    def close(self, status="FINISHED"):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
