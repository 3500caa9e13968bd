"""A pipeline stage materialised as a Ray Job: ``tandem pipeline run FILE --submit http://HEAD:8265``.

The job runs the stage's own command (``tandem curate|latents|train|align``, the line a user
would type) on the cluster through ``tandem submit``'s client (``pipelines/submit.py``), with
this machine's MLflow store in ``MLFLOW_TRACKING_URI`` so its run lands beside the others. The
stage writes where the pipeline's ``out`` says, so that folder must be one the cluster and this
machine share (a network filesystem, or the same machine). The asset then reads the output's
digest and the run that logged it, as it does for a stage run in process. Generate, tasks,
rankings and reward stay in process (``tandem submit`` has no such job).
"""

from __future__ import annotations

import time
from pathlib import Path

from pipelines.pipeline_spec import THIS_REWARD, PipelineSpec

JOB_STAGES = ("curate", "latents", "train", "align")
POLL_S = 2.0


class JobFailed(RuntimeError):
    """The stage's Ray Job ended FAILED or STOPPED (the message holds its last log lines)."""


def stage_argv(spec: PipelineSpec, stage: str, out: Path, upstream: dict[str, dict]) -> list[str]:
    """``tandem STAGE`` arguments for the stage as ``pipeline.yaml`` configures it; every path
    absolute (the job's working directory is the cluster's copy of the code)."""
    s = spec.stages[stage]
    recipe = s.recipe if not s.recipe or not Path(s.recipe).exists() else str(Path(s.recipe).absolute())
    config = ["--config", recipe] if recipe else []
    named = [*config, "--run-name", f"pipeline {stage}"]
    if stage == "curate":
        return [*upstream["footage"]["inputs"], "--out", str(out), *named, *s.overrides]  # the batch's
    if stage == "latents":
        return [str(Path(upstream["clip_shards"]["path"]) / "shards"), "--out", str(out), *named, *s.overrides]
    if stage == "train":
        return [*named, *s.overrides, f"data.shards={upstream['latent_shards']['path']}", f"storage={out}"]
    if stage == "align":
        overrides = [o.replace(f"={THIS_REWARD}", f"={upstream['reward_model']['model']}") for o in s.overrides]
        return [*named, *overrides, f"storage={out}", f"init={upstream['checkpoint']['model']}"]
    raise ValueError(f"stage {stage!r} has no Ray Job (job stages: {', '.join(JOB_STAGES)})")


def run_job(spec: PipelineSpec, stage: str, argv: list[str], log=None, timeout_s: float | None = None) -> str:
    """Submit ``tandem STAGE ARGV`` to ``spec.submit`` and wait for it; returns the job id.
    A job that ends FAILED or STOPPED raises ``JobFailed`` with the end of its log."""
    from ray.job_submission import JobStatus

    from pipelines.submit import _client, _reached, submit_job
    from pipelines.tracking import default_tracking_uri

    env = {"MLFLOW_TRACKING_URI": default_tracking_uri()}
    job_id = _reached(lambda: submit_job(spec.submit, stage, argv, env), spec.submit)
    say = log or (lambda message: None)
    say(f"{stage}: Ray Job {job_id} submitted to {spec.submit}")
    client, started, last = _client(spec.submit), time.monotonic(), None
    while (status := _reached(lambda: client.get_job_status(job_id), spec.submit)) not in (
            JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
        if status != last:
            say(f"{stage}: Ray Job {job_id} {status.value}")
            last = status
        if timeout_s is not None and time.monotonic() - started > timeout_s:
            client.stop_job(job_id)
            raise JobFailed(f"{stage}: Ray Job {job_id} still {status.value} after {timeout_s:.0f} s: stopped")
        time.sleep(POLL_S)
    if status != JobStatus.SUCCEEDED:
        tail = "\n".join(client.get_job_logs(job_id).strip().splitlines()[-20:])
        raise JobFailed(f"{stage}: Ray Job {job_id} {status.value} (`tandem submit --address {spec.submit} "
                        f"logs {job_id}`); its last lines:\n{tail}")
    say(f"{stage}: Ray Job {job_id} SUCCEEDED")
    return job_id


def model_of_run(name: str, run_id: str | None) -> str | None:
    """The ``models:/NAME/VERSION`` a job's run registered (train: tandem-dit, align: tandem-aligned)."""
    import mlflow

    from pipelines.tracking import default_tracking_uri

    if not run_id:
        return None
    versions = mlflow.MlflowClient(default_tracking_uri()).search_model_versions(
        f"name = '{name}' and run_id = '{run_id}'")
    latest = max(versions, key=lambda v: int(v.version), default=None)
    return f"models:/{name}/{latest.version}" if latest else None
