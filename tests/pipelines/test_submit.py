"""`tandem submit` sends a real Ray Job to a head this test starts on 127.0.0.1."""

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop_head(temp_dir: str) -> None:
    """Stop only this test's head: the processes whose command line names its temp dir
    (``ray stop`` would take down every Ray instance on the machine)."""
    import psutil

    procs = [p for p in psutil.process_iter(["cmdline"]) if any(temp_dir in c for c in p.info["cmdline"] or ())]
    for p in procs:
        p.terminate()
    for p in psutil.wait_procs(procs, timeout=15)[1]:
        p.kill()


@pytest.fixture
def ray_head():
    import tempfile

    temp_dir = tempfile.mkdtemp(prefix="tandem-ray-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_USAGE_STATS_ENABLED="0",
               PATH=f"{BIN}:{os.environ['PATH']}")
    port, dash = _free_port(), _free_port()
    start = [str(BIN / "ray"), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
             "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", "--num-cpus=1",
             "--disable-usage-stats", f"--temp-dir={temp_dir}",
             # Fixed default ports clash with other Ray instances on a shared machine.
             f"--dashboard-agent-listen-port={_free_port()}", f"--dashboard-agent-grpc-port={_free_port()}",
             f"--metrics-export-port={_free_port()}", f"--runtime-env-agent-port={_free_port()}",
             f"--ray-client-server-port={_free_port()}"]
    subprocess.run(start, env=env, check=True, capture_output=True, timeout=120)
    try:
        yield f"http://127.0.0.1:{dash}"
    finally:
        _stop_head(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.timeout(240)
def test_submit_runs_a_job_and_reports_status_and_logs(ray_head, capsys, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "token")  # the head's default; the client must match
    from pipelines.submit import submit_job

    job_id = submit_job(ray_head, "train", ["--help"])
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(ray_head)
    deadline = time.time() + 150
    while client.get_job_status(job_id) not in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
        assert time.time() < deadline, client.get_job_logs(job_id)
        time.sleep(1)
    assert client.get_job_status(job_id) == JobStatus.SUCCEEDED, client.get_job_logs(job_id)
    assert "--config" in client.get_job_logs(job_id)  # the train command's help ran on the cluster

    import argparse

    from pipelines.submit import job_handler

    job_handler(argparse.Namespace(address=ray_head, what="status", job_id=job_id))
    assert capsys.readouterr().out.strip() == "SUCCEEDED"
