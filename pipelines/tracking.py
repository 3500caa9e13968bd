"""The one door to MLflow.

Every command logs to one store: ``MLFLOW_TRACKING_URI`` when set, else the SQLite store
``runs/mlruns.db`` of the working directory (``default_tracking_uri``), wherever its ``--out``
points, so curation, latents, training, reward and alignment runs sit side by side in one UI
(``tandem ui``). ``open_tracker(experiment, run_name, ...)`` gives an ``MlflowTracker``; it
implements ``training.tracker.Tracker``, the protocol trainers take; ``NullTracker`` (same
methods, does nothing) is for non-zero ranks and untracked runs.

A run is named for what it is (``describe_run``: ``train debug_cpu engine.lr=1e-3``), covers the
command from its start (``start_time``) to its end, ends FAILED when the command raised, and
carries the code it ran (``code_version_tags``: package and library versions, the git commit
and whether the checkout was edited). ``system_metrics=True`` samples MLflow's ``system/``
metrics (CPU, memory, disk, network; GPUs where ``nvidia-ml-py`` is installed) of the machine
the tracker lives on, every ``MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL`` seconds (10).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from model.config import flatten
from training.tracker import NullTracker, Tracker

log = logging.getLogger(__name__)
DEFAULT_STORE = "runs"  # every command's MLflow store, relative to the working directory
# MLflow's record of what an experiment holds: model training runs, not GenAI traces. (The 3.17
# UI picks its pages by its own GenAI / "Model training" switch instead: see pipelines/ui.py.)
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
VERSIONS = {"tandem": "tandem-av", "torch": "torch", "ray": "ray", "deepspeed": "deepspeed", "mlflow": "mlflow"}
NAME_LIMIT = 160  # characters of a run name (MLflow keeps 250; the UI's legends far fewer)
RUN_ID_FILE = "mlflow_run_id"  # in a job's storage: the MLflow run a restarted or re-run job continues


def default_tracking_uri(store_dir: str | Path = DEFAULT_STORE) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else a SQLite store inside ``store_dir``."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    store_dir = Path(store_dir).resolve()
    store_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{store_dir / 'mlruns.db'}"


def run_id_of(storage: str | Path) -> str | None:
    """The MLflow run the job in ``storage`` (training, alignment) logs to, if it has started one."""
    path = Path(storage) / RUN_ID_FILE
    return (path.read_text().strip() or None) if path.exists() else None


def experiment_id(client, name: str) -> str:
    """The id of experiment ``name``, created if new, marked as one of model training runs;
    with a local SQLite store its artifacts go beside the database, not into ``./mlruns``
    of whatever directory the command runs in."""
    exp = client.get_experiment_by_name(name)
    if exp:
        if exp.tags.get(EXPERIMENT_KIND[0]) is None:  # made before tandem marked its experiments
            client.set_experiment_tag(exp.experiment_id, *EXPERIMENT_KIND)
        return exp.experiment_id
    uri = client.tracking_uri
    root = (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri() if uri.startswith("sqlite:") else None
    return client.create_experiment(name, artifact_location=root, tags=dict([EXPERIMENT_KIND]))


def describe_run(command: str, *words: str | None) -> str:
    """What a run is, from its command, recipe, inputs and overrides as typed:
    ``describe_run("train", "debug_cpu", "engine.lr=1e-3")`` -> ``train debug_cpu engine.lr=1e-3``.
    Long paths keep their last two parts (``data.shards=…/x/latents``)."""
    name = " ".join([command, *(_short(w) for w in words if w)])
    return name if len(name) <= NAME_LIMIT else name[:NAME_LIMIT - 1] + "…"


def _short(word: str) -> str:
    key, eq, value = word.partition("=")
    if eq and key.replace(".", "").replace("_", "").isalnum():
        return f"{key}={_short(value)}"
    if "/" not in word or len(word) <= 32:
        return word
    tail = "/".join(word.rstrip("/").split("/")[-2:])
    return "…/" + tail + ("/" if word.endswith("/") else "")


@functools.lru_cache(maxsize=1)
def code_version_tags() -> dict[str, str]:
    """The code a run ran: MLflow's own context tags (user, source), the versions of tandem
    and of the libraries that decide its numbers, and, where tandem runs from a git checkout,
    its commit and whether it was edited (``git.dirty``; ``git.diff`` tells two edits apart)."""
    from mlflow.tracking.context.registry import resolve_tags

    tags = dict(resolve_tags())
    for name, dist in VERSIONS.items():
        try:
            tags[f"version.{name}"] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            tags[f"version.{name}"] = "not installed"
    return tags | git_tags(Path(__file__).resolve().parents[1])


def git_tags(root: Path) -> dict[str, str]:
    """``mlflow.source.git.commit`` (the UI shows it), ``git.dirty`` and, when dirty, ``git.diff``
    (a digest of the changes) of the checkout at ``root``; nothing where ``root`` is not the
    top of one (an installed wheel) or git is missing."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True,
                              timeout=30).stdout.strip()

    try:
        if Path(git("rev-parse", "--show-toplevel")).resolve() != root:
            return {}
        commit, status = git("rev-parse", "HEAD"), git("status", "--porcelain")
        diff = git("diff", "HEAD") if status else ""
    except (OSError, subprocess.SubprocessError):
        return {}
    tags = {"mlflow.source.git.commit": commit, "git.dirty": str(bool(status)).lower()}
    if status:
        tags["git.diff"] = hashlib.sha256((status + "\n" + diff).encode()).hexdigest()[:16]
    return tags


class MlflowTracker:
    """One MLflow run: a new one (``run_name``, started at ``start_time``, a ``time.time()``,
    else now), or ``run_id`` continued, e.g. by the Ray worker that logs a driver's run."""

    def __init__(self, experiment: str, run_name: str | None = None, tracking_uri: str | None = None,
                 store_dir: str | Path = DEFAULT_STORE, run_id: str | None = None, *,
                 start_time: float | None = None, system_metrics: bool = False):
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
            start_ms = int(1000 * (start_time or time.time()))
            self.run_id = self._client.create_run(exp_id, start_time=start_ms, tags=code_version_tags(),
                                                  run_name=run_name).info.run_id
        self._monitor = self._start_system_metrics(resume=bool(run_id)) if system_metrics else None
        log.info("MLflow run %s in experiment %r at %s", self.run_id, experiment, self.tracking_uri)

    def _start_system_metrics(self, resume: bool):
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)  # its start and stop lines
        monitor = SystemMetricsMonitor(self.run_id, resume_logging=resume, tracking_uri=self.tracking_uri)
        monitor.start()
        return monitor

    def log_params(self, params: dict[str, Any]) -> None:
        flat = {k: str(v)[:6000] for k, v in flatten(params).items()}
        items = list(flat.items())
        for i in range(0, len(items), 100):  # MLflow's per-call batch limit
            self._client.log_batch(self.run_id, params=[self._mlflow.entities.Param(k, v) for k, v in items[i:i + 100]])

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
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

    def release(self) -> None:
        """This process is done logging (its system metrics flushed); the run stays open for
        the process that owns it to close."""
        monitor, self._monitor = self._monitor, None
        if monitor is not None:
            monitor.finish()
            # MLflow drops the samples of the last, unfinished interval: publish them, so a run
            # shorter than one interval still has its system metrics.
            monitor.collect_metrics()
            monitor.publish_metrics(monitor.aggregate_metrics())
            monitor.mlflow_logger.flush()

    def close(self, status: str = "FINISHED") -> None:
        self.release()
        if self.run_id:
            self._client.set_terminated(self.run_id, status)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is not None:
            self.set_tags(error_tag(exc))
        interrupted = exc_type is not None and issubclass(exc_type, KeyboardInterrupt)
        self.close("FINISHED" if exc_type is None else "KILLED" if interrupted else "FAILED")


def error_tag(exc: BaseException | str) -> dict[str, str]:
    """``{"error": ...}``: why a run failed, on one line, for the runs table."""
    text = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
    return {"error": (text.strip().splitlines() or ["?"])[0][:1000]}


def open_tracker(experiment: str, run_name: str | None = None, *, store_dir: str | Path = DEFAULT_STORE,
                 enabled: bool = True, run_id: str | None = None, start_time: float | None = None,
                 system_metrics: bool = False) -> Tracker:
    """An MLflow tracker (a new run, or ``run_id`` continued), or a NullTracker when
    ``enabled`` is false (non-zero ranks, untracked runs)."""
    if not enabled:
        return NullTracker()
    return MlflowTracker(experiment, run_name, store_dir=store_dir, run_id=run_id, start_time=start_time,
                         system_metrics=system_metrics)
