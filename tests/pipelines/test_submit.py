"""`tandem submit` sends real Ray Jobs to a head these tests start on 127.0.0.1: curate a tiny
clip, encode its shards into latents, read status and logs, and stop a running job."""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines.submit import job_handler, submit_job
from tests.training.conftest import free_port, make_latent_shards

pytestmark = pytest.mark.slow  # a Ray head + Ray Jobs

BIN = Path(sys.executable).parent


def _stop_head(temp_dir: str) -> None:
    """Stop only this test's head: the processes whose command line names its temp dir
    (``ray stop`` would take down every Ray instance on the machine)."""
    import psutil

    procs = [p for p in psutil.process_iter(["cmdline"]) if any(temp_dir in c for c in p.info["cmdline"] or ())]
    for p in procs:
        p.terminate()
    for p in psutil.wait_procs(procs, timeout=15)[1]:
        p.kill()


@pytest.fixture(scope="module")
def ray_head():
    import tempfile

    temp_dir = tempfile.mkdtemp(prefix="tandem-ray-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_USAGE_STATS_ENABLED="0",
               PATH=f"{BIN}:{os.environ['PATH']}")
    port, dash = free_port(), free_port()
    start = [str(BIN / "ray"), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
             "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", "--num-cpus=2",
             "--disable-usage-stats", f"--temp-dir={temp_dir}",
             # Fixed default ports clash with other Ray instances on a shared machine.
             f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
             f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}",
             f"--ray-client-server-port={free_port()}"]
    subprocess.run(start, env=env, check=True, capture_output=True, timeout=120)
    try:
        yield f"http://127.0.0.1:{dash}"
    finally:
        _stop_head(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module", autouse=True)
def token_auth():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_AUTH_MODE", "token")  # the head's default; the client must match
        yield


def _client(address):
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(address)


def _wait(address: str, job_id: str, timeout_s: float = 150) -> str:
    from ray.job_submission import JobStatus

    client, deadline = _client(address), time.time() + timeout_s
    while (status := client.get_job_status(job_id)) not in (JobStatus.SUCCEEDED, JobStatus.FAILED,
                                                             JobStatus.STOPPED):
        assert time.time() < deadline, client.get_job_logs(job_id)[-3000:]
        time.sleep(1)
    return status.value


def _handle(capsys, address: str, what: str, job_id: str) -> str:
    capsys.readouterr()
    assert job_handler(argparse.Namespace(address=address, what=what, job_id=job_id)) == 0
    return capsys.readouterr().out


@pytest.fixture(scope="module")
def curated(ray_head, tmp_path_factory):
    """`tandem submit curate` of one two-shot clip; (job id, output dir)."""
    from curation.sample_media import make_clip

    raw = tmp_path_factory.mktemp("raw")
    make_clip(raw / "two_shots.mp4", [1.4, 1.6], size=(128, 96))
    out = tmp_path_factory.mktemp("curated") / "out"
    job_id = submit_job(ray_head, "curate", [str(raw), "--out", str(out), "skip=[transcribe]", "track=false"])
    _wait(ray_head, job_id)
    return job_id, out


@pytest.mark.timeout(240)
def test_submitted_curate_writes_clip_shards_and_reports_status_and_logs(ray_head, curated, capsys):
    job_id, out = curated
    logs = _handle(capsys, ray_head, "logs", job_id)
    assert _handle(capsys, ray_head, "status", job_id).strip() == "SUCCEEDED", logs[-3000:]
    assert "curated 1 inputs" in logs  # the command's own summary, printed on the cluster
    assert list((out / "shards").glob("clips-*.tar"))
    assert json.loads((out / "stats.json").read_text())["clips_kept"] >= 1


@pytest.mark.timeout(180)
def test_submitted_latents_encodes_the_curated_shards(ray_head, curated, tmp_path, capsys):
    _, curated_out = curated
    out = tmp_path / "latents"
    job_id = submit_job(ray_head, "latents", [str(curated_out / "shards"), "--out", str(out)])
    assert _wait(ray_head, job_id) == "SUCCEEDED", _handle(capsys, ray_head, "logs", job_id)[-3000:]
    stats = json.loads((out / "stats.json").read_text())
    kept = json.loads((curated_out / "stats.json").read_text())["clips_kept"]
    assert stats["clips_in"] == stats["encoded"] == kept and stats["skipped"] == {}
    assert stats["source_manifest_sha256"]  # curation's manifest, beside its shards/
    assert len(list(out.glob("clips-*.tar"))) == len(list((curated_out / "shards").glob("clips-*.tar")))


@pytest.mark.timeout(180)
def test_stop_ends_a_running_job(ray_head, tmp_path, capsys):
    from ray.job_submission import JobStatus

    shards = make_latent_shards(tmp_path / "latents", n=8)
    # Far more steps than the test waits for: the job is surely still running when stopped.
    job_id = submit_job(ray_head, "train", ["--config", "debug_cpu", f"data.shards={shards}", "steps=100000",
                                            f"storage={tmp_path / 'train'}", f"tracking_dir={tmp_path}"])
    client, deadline = _client(ray_head), time.time() + 90
    while client.get_job_status(job_id) != JobStatus.RUNNING:
        assert client.get_job_status(job_id) == JobStatus.PENDING, client.get_job_logs(job_id)[-3000:]
        assert time.time() < deadline, "the job never started"
        time.sleep(0.5)
    assert _handle(capsys, ray_head, "stop", job_id).strip() == "stopped"
    assert _wait(ray_head, job_id, timeout_s=60) == "STOPPED"
    assert _handle(capsys, ray_head, "status", job_id).strip() == "STOPPED"
