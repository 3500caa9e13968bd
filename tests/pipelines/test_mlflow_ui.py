"""What a training lead sees in the MLflow UI (issue 30), in headless chromium against
``tandem ui`` on a free port: two debug_cpu train runs that differ in ``engine.lr``, opened by
the training driver's own code (``start_driver_run``: the recipe flattened into params,
``recipe.yaml``) with a few loss steps, are

- listed under the names their commands give them, not MLflow's random ones, on the
  experiment's runs ("Model training"), not its empty GenAI "Traces" overview;
- overlaid in one ``loss`` chart, a line per run, in the Chart view;
- told apart in the Compare view under "Show diff only" by the one setting that differs
  (and the storage each wrote to).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.browser_kit import wait_for_text
from training.local_ranks import free_port

LEARNING_RATES = ("1e-3", "3e-3")
LOSSES = {"1e-3": [1.0, 0.8, 0.7, 0.65], "3e-3": [1.0, 0.6, 0.45, 0.4]}


def _log_train_run(workdir: Path, lr: str) -> tuple[str, str]:
    """A train run as the driver opens it (default store of ``workdir``), with 4 loss steps."""
    from pipelines.ray_train import start_driver_run
    from pipelines.tracking import describe_run
    from pipelines.train_cmd import load_train_recipe

    override = f"engine.lr={lr}"
    cfg = load_train_recipe("debug_cpu", [override, f"storage={workdir / f'train_lr{lr}'}"])
    name = describe_run("train", "debug_cpu", override)  # the CLI's name for `tandem train --config debug_cpu engine.lr=…`
    tracker, _ = start_driver_run(cfg, name, time.time())
    for step, loss in enumerate(LOSSES[lr], start=1):
        tracker.log_metrics({"loss": loss}, step=step)
    tracker.close()
    return tracker.run_id, name


def _wait_until_up(url: str, server: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1 never via a proxy
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"tandem ui exited {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if opener.open(f"{url}/health", timeout=5).status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"tandem ui did not answer on {url} in {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def _eventually(check, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.3)
    return True


@pytest.fixture
def ui_of_two_train_runs(tmp_path, monkeypatch):
    """``tandem ui`` serving the working directory's store of two train runs: (the address of
    the experiment it prints, [(run id, run name)] in LEARNING_RATES order, the server's base URL)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    runs = [_log_train_run(tmp_path, lr) for lr in LEARNING_RATES]
    base, log = f"http://127.0.0.1:{free_port()}", tmp_path / "ui.log"
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    with log.open("w") as out:  # its own session: the uvicorn it starts is stopped with it
        server = subprocess.Popen([str(Path(sys.executable).parent / "tandem"), "ui", "--port", base.rsplit(":", 1)[1]],
                                  cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_until_up(base, server, log)
        [address] = [line.split(": ", 1)[1] for line in log.read_text().splitlines() if line.startswith("  tandem-train: ")]
        yield address, runs, base
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


@pytest.mark.slow  # the MLflow server and chromium start: ~20 s on 2 idle cores
@pytest.mark.timeout(240)
def test_two_train_runs_are_named_overlaid_and_differ_in_one_param(ui_of_two_train_runs, chromium):
    address, runs, base = ui_of_two_train_runs
    (low_id, low), (high_id, high) = runs
    chromium.set_window_size(1600, 1000)

    chromium.get(address)  # the experiment's address as `tandem ui` prints it
    wait_for_text(chromium, "2 matching runs")  # the count comes before the table's rows render
    page = wait_for_text(chromium, low)
    assert high in page, page[:2000]  # "train debug_cpu engine.lr=1e-3", not "likeable-boar-624"
    assert "Observability" not in page and "Traces" in page  # the "Model training" sidebar, on its runs

    chart_view = chromium.find_element("css selector", "input[value=CHART]")
    chromium.execute_script("arguments[0].click()", chart_view)  # the radio's label covers it
    charts = wait_for_text(chromium, f"{low} (loss)")
    assert f"{high} (loss)" in charts  # one loss chart, both runs in its legend
    # The plotly chart's own traces (a line per run, and its faint unsmoothed copy): both runs, every step.
    traces = "const p = document.querySelector('.js-plotly-plot'); return p && p.data && p.data.map(t => [t.name, t.y.length])"
    assert _eventually(lambda: chromium.execute_script(traces)), "the loss chart never drew"
    assert {tuple(t) for t in chromium.execute_script(traces)} == {(low, len(LOSSES["1e-3"])), (high, len(LOSSES["3e-3"]))}

    ids, experiment = json.dumps([low_id, high_id]), json.dumps([address.split("/experiments/")[1].split("/")[0]])
    chromium.get(f"{base}/#/compare-runs?runs={ids}&experiments={experiment}")
    compare = wait_for_text(chromium, "engine.zero_stage")  # every resolved recipe value is a param
    assert low in compare and high in compare
    chromium.find_element("css selector", "[aria-label='Parameters - Show diff only']").click()
    assert _eventually(lambda: "engine.zero_stage" not in chromium.find_element("tag name", "body").text), \
        "Show diff only hid nothing"
    compare = chromium.find_element("tag name", "body").text
    params = compare.split("Parameters\nShow diff only\n", 1)[1].split("\nMetrics\n", 1)[0]
    storages = " ".join(str(Path.cwd() / f"train_lr{lr}") for lr in LEARNING_RATES)
    assert params.splitlines() == ["engine.lr 0.001 0.003", f"storage {storages}"], params  # and where each wrote
