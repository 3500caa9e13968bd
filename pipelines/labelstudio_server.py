"""A Label Studio server on 127.0.0.1, and the SDK operations tandem runs against any server.

``LabelStudioServer(data_dir, media_root)`` installs Label Studio into its own virtual
environment on first use (scripts/install_labelstudio.sh), starts it headless on a free
loopback port with the data under ``data_dir`` and local-file serving from ``media_root``,
waits until it answers, and stops it on exit. Offline: Sentry, the version check and
analytics are switched off.

Credentials: ``LABEL_STUDIO_USERNAME`` / ``LABEL_STUDIO_PASSWORD`` / ``LABEL_STUDIO_API_KEY``
(a 40-character token) from the environment, else generated once into
``data_dir/credentials.json`` with mode 0600. They go to the server through its environment
and never into a log or onto a command line.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from training.local_ranks import free_port

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[1]
INSTALLER = ROOT / "scripts" / "install_labelstudio.sh"
OPS = Path(__file__).with_name("labelstudio_ops.py")
OFFLINE = {"SENTRY_DSN": "", "FRONTEND_SENTRY_DSN": "", "LATEST_VERSION_CHECK": "false",
           "COLLECT_ANALYTICS": "false"}


class LabelStudioError(RuntimeError):
    """The server or an SDK call failed; the message carries what it said."""


@dataclass
class Credentials:
    username: str
    password: str
    token: str
    source: str  # "environment" or the file they are kept in


def credentials(data_dir: Path) -> Credentials:
    env = {k: os.environ.get(k) for k in ("LABEL_STUDIO_USERNAME", "LABEL_STUDIO_PASSWORD", "LABEL_STUDIO_API_KEY")}
    if all(env.values()):
        return Credentials(*env.values(), source="environment")
    path = data_dir / "credentials.json"
    if not path.is_file():
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # only the user can read it
        with os.fdopen(fd, "w") as f:
            json.dump({"username": "annotator@tandem.local", "password": secrets.token_urlsafe(18),
                       "token": secrets.token_hex(20)}, f, indent=1)
    stored = json.loads(path.read_text())
    return Credentials(stored["username"], stored["password"], stored["token"], source=str(path))


def install(venv: str | None = None) -> Path:
    """Label Studio's virtual environment (installed on first use, a few minutes)."""
    args = ["bash", str(INSTALLER)] + ([venv] if venv else [])
    proc = subprocess.run(args, capture_output=True, text=True)
    if proc.returncode != 0:
        raise LabelStudioError(f"installing Label Studio failed:\n{proc.stderr[-3000:]}")
    return Path(proc.stdout.strip().splitlines()[-1])


def run_op(venv: Path, url: str, token: str, request: dict, timeout: float = 900) -> dict:
    """One ``pipelines/labelstudio_ops.py`` request in Label Studio's interpreter."""
    env = dict(os.environ, LABEL_STUDIO_URL=url, LABEL_STUDIO_API_KEY=token,
               LABEL_STUDIO_BASE_DATA_DIR=str(venv / "var"))
    proc = subprocess.run([str(venv / "bin" / "python"), str(OPS)], input=json.dumps(request), env=env,
                          capture_output=True, text=True, timeout=timeout)
    try:
        answer = json.loads(proc.stdout)
    except ValueError:
        raise LabelStudioError(f"label-studio-sdk {request['op']} failed: {proc.stderr[-2000:]}") from None
    if "error" in answer:
        raise LabelStudioError(f"Label Studio at {url} refused {request['op']}: {answer['error']}")
    return answer


class LabelStudioServer:
    """``with LabelStudioServer(data_dir, media_root) as server: server.url ...``"""

    def __init__(self, data_dir: str | Path, media_root: str | Path, *, port: int | None = None,
                 venv: str | None = None, start_timeout: float = 600):
        self.data_dir = Path(data_dir).absolute()
        self.media_root = Path(media_root).absolute()
        self.port, self.venv_arg, self.start_timeout = port, venv, start_timeout
        self.venv: Path | None = None
        self.proc: subprocess.Popen | None = None
        self.creds = credentials(self.data_dir)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "server.log"

    def start(self) -> LabelStudioServer:
        self.venv = install(self.venv_arg)
        self.port = self.port or free_port()
        env = dict(os.environ, **OFFLINE, LABEL_STUDIO_BASE_DATA_DIR=str(self.data_dir),
                   LABEL_STUDIO_USERNAME=self.creds.username, LABEL_STUDIO_PASSWORD=self.creds.password,
                   LABEL_STUDIO_USER_TOKEN=self.creds.token, LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN="true",
                   LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED="true",
                   LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=str(self.media_root))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        database, template = self.data_dir / "label_studio.sqlite3", self.venv / "template" / "label_studio.sqlite3"
        if not database.exists() and template.is_file():
            shutil.copyfile(template, database)  # migrated once at install: starts in seconds, not minutes
        self._log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        log.info("starting Label Studio on %s (data in %s)", self.url, self.data_dir)
        with open(self.log_path, "ab") as out:
            # --internal-host is the listen address (the default is every interface)
            self.proc = subprocess.Popen(
                [str(self.venv / "bin" / "label-studio"), "start", "--internal-host", "127.0.0.1",
                 "--port", str(self.port), "--no-browser", "--data-dir", str(self.data_dir)],
                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self._wait_healthy()
        return self

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise LabelStudioError(f"Label Studio exited with {self.proc.returncode}; see {self.log_path}:\n"
                                       + self.log_path.read_text()[-2000:])
            with open(self.log_path, "rb") as f:
                f.seek(self._log_start)
                started = re.search(rb"Starting development server at http://127.0.0.1:(\d+)/", f.read())
            if started and int(started[1]) != self.port:
                # Label Studio silently takes the next free port when ours was taken meanwhile
                log.warning("port %d was taken; Label Studio listens on %s instead", self.port, started[1].decode())
                self.port = int(started[1])
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=5) as resp:
                    if resp.status == 200:
                        log.info("Label Studio is up at %s", self.url)
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(2)
        self.stop()
        raise LabelStudioError(f"Label Studio did not answer on {self.url} within {self.start_timeout:.0f} s; "
                               f"see {self.log_path}")

    def op(self, request: dict) -> dict:
        return run_op(self.venv, self.url, self.creds.token, request)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)  # its own session: the server and the workers it started
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> LabelStudioServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
