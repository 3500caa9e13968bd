"""``tandem ui``: MLflow's UI on the store every command logs to.

    tandem ui [--port 5000] [--host 127.0.0.1]

Serves ``runs/mlruns.db`` of the working directory (or ``MLFLOW_TRACKING_URI``'s database;
a tracking server is already a UI: its address is printed) until Ctrl-C, and prints the
address that opens on the "Model training" pages: MLflow 3 opens an experiment on its GenAI
pages unless the address says ``workflowType=machine_learning`` (or the user once picked
"Model training" in its sidebar, which the browser remembers).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pipelines.tracking import default_tracking_uri

MODEL_TRAINING = "workflowType=machine_learning"  # the UI's query parameter for its "Model training" view


def add_parsers(subparsers) -> None:
    ui = subparsers.add_parser("ui", help="the MLflow UI on the runs of every command (runs/mlruns.db)")
    ui.add_argument("--port", type=int, default=5000, help="port (default: 5000)")
    ui.add_argument("--host", default="127.0.0.1", help="interface (default: 127.0.0.1, this machine only)")
    ui.set_defaults(handler=ui_handler)


def ui_url(base: str) -> str:
    """The experiments page of the UI at ``base``, on its "Model training" view."""
    return f"{base.rstrip('/')}/#/experiments?{MODEL_TRAINING}"


def ui_command(uri: str, host: str, port: int) -> list[str]:
    """``mlflow ui`` on the SQL store ``uri``; experiments made from the UI keep their
    artifacts beside the database, as tandem's do."""
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port)]
    if uri.startswith("sqlite:///"):
        cmd += ["--default-artifact-root", (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri()]
    return cmd


def ui_handler(args) -> int:
    uri = default_tracking_uri()
    if uri.startswith(("http://", "https://")):
        print(f"MLFLOW_TRACKING_URI is a tracking server: open {ui_url(uri)}", flush=True)
        return 0
    print(f"MLflow UI on {uri}: open {ui_url(f'http://{args.host}:{args.port}')} (Ctrl-C stops it)", flush=True)
    try:
        return subprocess.run(ui_command(uri, args.host, args.port)).returncode
    except KeyboardInterrupt:
        return 0
