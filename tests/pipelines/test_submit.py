"""`tandem submit` sends real Ray Jobs to a head these tests start on 127.0.0.1: `tandem pipeline
run --submit` curates a tiny clip and encodes its shards into latents as two jobs (status, logs,
lineage, and a second run that skips both), and a running job is stopped."""

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
from tests.training.conftest import make_latent_shards
from training.local_ranks import free_port

pytestmark = pytest.mark.slow  # a Ray head + Ray Jobs

BIN = Path(sys.executable).parent


def _stop_head(temp_dir: str) -> None:
    """Stop only this test's head: the processes whose command line names its temp dir
    (``ray stop`` would take down every Ray instance on the machine)."""
    import psutil

    procs = [p for p in psutil.process_iter(["cmdline"]) if any(temp_dir in c for c in p.info["cmdline"] or ())]
    for p in procs:
        p.terminate()
    for p in psutil.wait_procs(procs, timeout=5)[1]:  # some never end on SIGTERM: 15 s here was 15 s lost
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
def piped(ray_head, tmp_path_factory):
    """``tandem pipeline run --submit``: curate, latents and train of one footage batch as Ray Jobs
    on the head; (the pipeline file, each asset's last value, the pipeline status)."""
    import yaml

    from curation.sample_media import make_clip
    from pipelines.cli import main
    from pipelines.pipeline_assets import last_value
    from pipelines.pipeline_cmd import open_instance, pipeline_status
    from pipelines.pipeline_spec import load_spec

    root = tmp_path_factory.mktemp("pipeline")
    make_clip(root / "footage" / "batch1" / "two_shots.mp4", [1.4, 1.6], size=(128, 96))
    path = root / "pipeline.yaml"
    path.write_text(yaml.safe_dump({"footage": "footage", "out": "out", "stages": {
        "curate": {"overrides": ["skip=[transcribe]"]}, "latents": {"recipe": "debug"},
        "train": {"recipe": "debug_cpu", "overrides": [  # one clip: one sample, so one rank of batch 1
            "steps=2", "data.batch_size=1", "engine.micro_batch_per_rank=1", "workers.num_workers=1"]}}}))
    assert main(["pipeline", "run", str(path), "--submit", ray_head]) == 0
    spec = load_spec(path)
    with open_instance(spec) as instance:
        values = {asset: last_value(instance, asset) for asset in ("clip_shards", "latent_shards", "checkpoint")}
    return path, values, pipeline_status(spec)


@pytest.mark.timeout(600)
def test_pipeline_stages_run_as_ray_jobs_with_their_status_logs_and_lineage(ray_head, piped, capsys):
    _, values, status = piped
    curate, latents = values["clip_shards"], values["latent_shards"]
    assert {a: s["state"] for a, s in status.items()} == {"clip_shards[batch1]": "fresh",
                                                          "latent_shards[batch1]": "fresh", "checkpoint": "fresh"}
    jobs = {values[a]["ray_job_id"] for a in values}
    assert len(jobs) == 3 and all(jobs)
    logs = _handle(capsys, ray_head, "logs", curate["ray_job_id"])
    assert _handle(capsys, ray_head, "status", curate["ray_job_id"]).strip() == "SUCCEEDED", logs[-3000:]
    assert "curated 1 inputs" in logs  # the command's own summary, printed on the cluster
    out = Path(curate["path"])
    assert list((out / "shards").glob("clips-*.tar"))
    stats = json.loads((Path(latents["path"]) / "stats.json").read_text())
    kept = json.loads((out / "stats.json").read_text())["clips_kept"]
    assert kept >= 1 and stats["clips_in"] == stats["encoded"] == kept and stats["skipped"] == {}
    assert len(list(Path(latents["path"]).glob("clips-*.tar"))) == len(list((out / "shards").glob("clips-*.tar")))
    # the jobs logged into this machine's store: lineage from the latents reaches the footage file
    from pipelines.lineage import chain

    tree = chain(latents["run_id"])
    made_by = tree["inputs"][0]["produced_by"]
    assert made_by["run_id"] == curate["run_id"] and [Path(f["path"]).name for f in made_by["footage"]] == ["two_shots.mp4"]
    # the train job registered its final weights: the asset names that version and its run
    from pipelines.registry import lookup

    checkpoint = values["checkpoint"]
    assert checkpoint["model"].startswith("models:/tandem-dit/") and checkpoint["run_id"]
    assert lookup(checkpoint["model"]).run_id == checkpoint["run_id"]
    assert chain(checkpoint["run_id"])["inputs"][0]["produced_by"]["run_id"] == latents["run_id"]


@pytest.mark.timeout(300)
def test_a_second_submitted_run_skips_every_asset_without_a_job(ray_head, piped, capsys):
    from pipelines.cli import main

    path, values, _ = piped
    capsys.readouterr()
    assert main(["pipeline", "run", str(path), "--submit", ray_head]) == 0
    out = capsys.readouterr().out
    assert all(f"{asset:<26} skipped" in out for asset in ("clip_shards[batch1]", "latent_shards[batch1]",
                                                            "checkpoint")), out
    assert "Ray Job" not in out


@pytest.mark.timeout(180)
def test_stop_ends_a_running_job(ray_head, tmp_path, capsys):
    from ray.job_submission import JobStatus

    shards = make_latent_shards(tmp_path / "latents", n=8)
    # Far more steps than the test waits for: the job is surely still running when stopped.
    job_id = submit_job(ray_head, "train", ["--config", "debug_cpu", f"data.shards={shards}", "steps=100000",
                                            f"storage={tmp_path / 'train'}", f"tracking_dir={tmp_path}"])
    client, deadline = _client(ray_head), time.time() + 90
    # One read per pass: the job may start between two reads.
    while (status := client.get_job_status(job_id)) != JobStatus.RUNNING:
        assert status == JobStatus.PENDING, client.get_job_logs(job_id)[-3000:]
        assert time.time() < deadline, "the job never started"
        time.sleep(0.5)
    assert _handle(capsys, ray_head, "stop", job_id).strip() == "stopped"
    assert _wait(ray_head, job_id, timeout_s=60) == "STOPPED"
    assert _handle(capsys, ray_head, "status", job_id).strip() == "STOPPED"
