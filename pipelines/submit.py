"""``tandem submit``: send train / curate / latents / align as Ray Jobs through the Jobs SDK.

The job runs the same ``tandem`` command on the cluster; the runtime environment carries
the working tree (minus runs and the venv) and any ``--env KEY=VALUE``. A dashboard address
nothing answers on is one line naming it, exit 2 (fix the address or start the cluster).
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

from model.config import ConfigError

REPO = Path(__file__).resolve().parents[1]
EXCLUDES = [".git", ".venv", "runs", "**/__pycache__", "*.tar", "*.mp4"]


def add_parsers(subparsers) -> None:
    submit = subparsers.add_parser("submit", help="submit a job to a Ray cluster (Ray Jobs)")
    submit.add_argument("--address", default=None, help="Ray dashboard address, e.g. http://HEAD:8265")
    actions = submit.add_subparsers(dest="action", metavar="ACTION", required=True)
    for what in ("train", "curate", "latents", "align"):
        job = actions.add_parser(what, help=f"run `tandem {what} ...` as a Ray Job")
        job.add_argument("--env", action="append", default=[], help="KEY=VALUE for the job's environment")
        job.add_argument("--no-working-dir", action="store_true",
                         help="do not upload this checkout (the cluster image already has it)")
        job.add_argument("args", nargs="*", help=f"arguments for `tandem {what}` (after --)")
        job.set_defaults(handler=submit_handler, what=what)
    for what in ("status", "logs", "stop"):
        job = actions.add_parser(what, help=f"{what} of a submitted job")
        job.add_argument("job_id")
        job.set_defaults(handler=job_handler, what=what)


def _client(address: str | None):
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(address)


def _reached(call, address: str | None):
    """``call()``; a dashboard that does not answer (at connect, or later: requests' own
    ConnectionError) is a ConfigError naming the address: the CLI prints it, exit 2."""
    import requests

    try:
        return call()
    except ConnectionError as exc:  # the client's connect check: it names the address it tried
        why = str(exc).strip()
    except requests.exceptions.ConnectionError:  # a later call: its message is urllib3's detail
        from pipelines.ray_local import cluster_address

        why = f"no answer from {cluster_address(address) or 'the default http://localhost:8265'}"
    raise ConfigError(f"the Ray dashboard does not answer ({why}): check --address (http://HEAD:8265; "
                      "RAY_ADDRESS, when set, takes its place) and that the cluster is up")


def submit_job(address: str | None, what: str, args: list[str], env: dict[str, str] | None = None,
               upload: bool = True) -> str:
    """Submit ``tandem WHAT ARGS`` and return the job id."""
    runtime_env: dict = {"env_vars": dict(env or {})}
    if upload:
        runtime_env.update(working_dir=str(REPO), excludes=EXCLUDES)
    entrypoint = shlex.join([sys.executable if not upload else "python", "-m", "pipelines.cli", what, *args])
    client = _client(address)
    deadline = time.monotonic() + 90
    while True:
        try:
            return client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env)
        except RuntimeError as exc:
            # A head that just started has no job agent for a few seconds.
            if "No available agent" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(2)


def submit_handler(args) -> int:
    env = dict(item.split("=", 1) for item in args.env)
    job_id = _reached(lambda: submit_job(args.address, args.what, args.args, env, upload=not args.no_working_dir),
                      args.address)
    where = f" --address {args.address}" if args.address else ""
    print(f"submitted {job_id}\nfollow: tandem submit{where} logs {job_id}   "
          f"(or: ray job logs -f {job_id}{where})")
    return 0


def job_handler(args) -> int:
    client = _reached(lambda: _client(args.address), args.address)
    if args.what == "status":
        print(_reached(lambda: client.get_job_status(args.job_id), args.address).value)
    elif args.what == "logs":
        print(_reached(lambda: client.get_job_logs(args.job_id), args.address), end="")
    else:
        print("stopped" if _reached(lambda: client.stop_job(args.job_id), args.address) else "already finished")
    return 0
