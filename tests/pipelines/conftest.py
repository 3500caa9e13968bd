import contextlib
import os
import signal
import threading
import time

import pytest


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance (127.0.0.1 only) per test module (tests/conftest.py shuts Ray
    down after each module, so no instance carries one module's environment into the next)."""
    from pipelines.ray_local import init_ray

    yield init_ray(num_cpus=2)


@pytest.fixture
def mlflow_env(monkeypatch):
    """MLflow with no tracking server from the environment and no telemetry; Ray shut down after."""
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "1")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    yield
    import ray

    ray.shutdown()


def _cmdline(process) -> str:
    import psutil

    try:
        return " ".join(process.cmdline())
    except psutil.Error:  # exited meanwhile
        return ""


@contextlib.contextmanager
def ray_train_worker_killed_at(checkpoint_dir, step: int):
    """While the block runs, SIGKILL one of this test's Ray Train workers (a descendant of
    this process: the local Ray instance is ours) as soon as checkpoint ``step`` is on disk.
    Yields the list that receives ``(pid, checkpoint tag)`` of the kill; the watcher stops
    when the block ends, whether or not it killed anything."""
    import psutil

    killed: list = []
    stop = threading.Event()
    latest = checkpoint_dir / "latest"

    def watch():
        while not stop.is_set():
            if latest.exists() and int(latest.read_text().strip().removeprefix("step") or 0) >= step:
                workers = [p for p in psutil.Process().children(recursive=True) if "RayTrainWorker" in _cmdline(p)]
                if workers:
                    workers[-1].send_signal(signal.SIGKILL)
                    killed.append((workers[-1].pid, latest.read_text().strip()))
                    return
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield killed
    finally:
        stop.set()
        watcher.join()
