"""``tandem ui``: MLflow's UI on the store every command logs to.

    tandem ui [--port 5000] [--host 127.0.0.1]

Serves ``runs/mlruns.db`` of the working directory (or ``MLFLOW_TRACKING_URI``'s database; a
tracking server is already a UI) until Ctrl-C, and prints each experiment's address on its
runs. MLflow 3.17 opens an experiment on its GenAI pages (an empty "Traces" overview) unless
the address says ``workflowType=machine_learning`` or the user once picked "Model training"
in its sidebar (the browser remembers that; the address alone it does not).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pipelines.tracking import DEFAULT_STORE, default_tracking_uri

MODEL_TRAINING = "workflowType=machine_learning"  # the UI's query parameter for its "Model training" pages


def add_parsers(subparsers) -> None:
    ui = subparsers.add_parser("ui", help="the MLflow UI on the runs of every command (runs/mlruns.db)")
    ui.add_argument("--port", type=int, default=5000, help="port (default: 5000)")
    ui.add_argument("--host", default="127.0.0.1", help="interface (default: 127.0.0.1, this machine only)")
    ui.set_defaults(handler=ui_handler)


def experiment_urls(base: str, uri: str) -> list[str]:
    """``name: address`` of each experiment with runs in ``uri``, on its runs ("Model training")."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "1")
    import mlflow

    client = mlflow.MlflowClient(uri)
    found = [e for e in client.search_experiments(order_by=["name ASC"])
             if client.search_runs([e.experiment_id], max_results=1)]
    return [f"{e.name}: {base}/#/experiments/{e.experiment_id}/runs?{MODEL_TRAINING}" for e in found]


def ui_command(uri: str, host: str, port: int, workers: int = 1) -> list[str]:
    """``mlflow ui`` on the SQL store ``uri``; experiments made from the UI keep their
    artifacts beside the database, as tandem's do. One worker: the UI of one user starts in
    seconds, where MLflow's default four take a minute on a busy 2-core machine, and are
    killed and started again while they miss uvicorn's start-up deadline."""
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port),
           "--workers", str(workers)]
    if uri.startswith("sqlite:///"):
        cmd += ["--default-artifact-root", (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri()]
    return cmd


def ui_handler(args) -> int:
    if not os.environ.get("MLFLOW_TRACKING_URI") and not (Path(DEFAULT_STORE) / "mlruns.db").exists():
        print(f"tandem ui: no runs here ({Path(DEFAULT_STORE, 'mlruns.db').absolute()} does not exist): run it "
              "from the directory you ran the commands in, or set MLFLOW_TRACKING_URI", file=sys.stderr)
        return 2
    uri = default_tracking_uri()
    if uri.startswith(("http://", "https://")):
        print(f"MLFLOW_TRACKING_URI is a tracking server: open {uri.rstrip('/')}/#/experiments?{MODEL_TRAINING}")
        return 0
    base = f"http://{args.host}:{args.port}"
    print(f"MLflow UI on {uri} at {base} (Ctrl-C stops it). Each experiment's runs:\n  "
          + "\n  ".join(experiment_urls(base, uri) or ["(none yet)"])
          + '\nPick "Model training" in its sidebar once: MLflow opens experiments on its GenAI pages otherwise.',
          flush=True)
    cmd = ui_command(uri, args.host, args.port)
    os.execv(cmd[0], cmd)  # this process becomes the server: a signal to it stops the server
