"""Curation never waits for ever.

- A tail stage slower than a second per clip (the face detector on a talking head, a busy
  machine) once lost the fan-out's end marker and hung the unit for good: the DAG must
  finish, quiet or with both cores busy.
- A stage that really hangs is a fault of the machine: on Ray its worker is stopped after
  ``units.stall_s``, the unit retried, and the source quarantined as ``worker_stalled``
  naming the stage, while every other input is accounted for.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import mlflow
import pytest

from benchmarks.busy_machine import busy_loops
from curation.audio import AudioStage
from curation.pipeline import CurationConfig
from curation.sample_media import make_clip
from curation.units import STALLS
from pipelines.config_loader import load_config
from pipelines.curate import run_curation

FAST = ["skip=[transcribe,caption,sync]", "track=false"]


@pytest.fixture(scope="module")
def three_shots(tmp_path_factory):
    raw = tmp_path_factory.mktemp("raw")
    make_clip(raw / "three shots.mp4", [1.5, 1.5, 1.5], size=(160, 120))
    return raw


@pytest.fixture
def slow_audio(monkeypatch):
    """The audio stage takes 1.2 s more per clip: longer than read_ahead's old 1 s grace."""
    measure = AudioStage.process

    def slow(self, item):
        import time

        time.sleep(1.2)
        return measure(self, item)

    monkeypatch.setattr(AudioStage, "process", slow)


@pytest.fixture
def busy_cores():
    """Both cores kept busy by other processes for the length of the test (at most 10 minutes,
    even if teardown never runs)."""
    with busy_loops(2, max_s=600):
        yield


def every_shot_accounted_for(result) -> bool:
    # make_clip's middle shot is a still picture: the prefilter drops it as static.
    return len(result.manifest) == 2 and [r["reason"] for r in result.rejects] == ["static"]


def curate(raw, out, *overrides):
    return run_curation([str(raw)], out, load_config(CurationConfig, None, [*FAST, *overrides]), in_process=True)


@pytest.mark.timeout(120)
def test_a_tail_stage_taking_over_a_second_per_clip_does_not_hang_the_unit(three_shots, slow_audio, tmp_path):
    result = curate(three_shots, tmp_path / "out")
    assert every_shot_accounted_for(result)


@pytest.mark.timeout(240)
def test_the_same_with_both_cores_busy(three_shots, slow_audio, busy_cores, tmp_path):
    result = curate(three_shots, tmp_path / "out")
    assert every_shot_accounted_for(result)


def ray_with_faults(monkeypatch, **env):
    """A fresh local Ray whose workers load tests/pipelines/fault_injection (they inherit
    this environment) with ``env`` saying which fault to inject."""
    import ray

    from pipelines.ray_local import init_ray

    injection = Path(__file__).parent / "fault_injection"
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(injection), os.environ.get("PYTHONPATH")])))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    ray.shutdown()
    init_ray(num_cpus=2)


@pytest.fixture
def sources(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    make_clip(raw / "a.mp4", [1.2, 1.4], size=(160, 120))
    make_clip(raw / "stuck.mp4", [1.3], size=(160, 120))
    return raw


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_stage_that_hangs_is_quarantined_and_the_run_finishes(sources, tmp_path, monkeypatch):
    ray_with_faults(monkeypatch, TANDEM_TEST_HANG="motion:stuck.mp4")  # motion waits for ever there
    cfg = load_config(CurationConfig, None, [*FAST, "units.stall_s=4", "units.max_worker_crashes=1"])
    result = run_curation([str(sources)], tmp_path / "out", cfg)
    [row] = [r for r in result.rejects if r["source_path"].endswith("stuck.mp4")]
    assert (row["reason"], row["stage"]) == ("worker_stalled", "motion"), row
    # a.mp4 went through: its first shot kept, its still second shot dropped as static.
    assert [Path(r["source_path"]).name for r in result.manifest] == ["a.mp4"]
    assert [r["reason"] for r in result.rejects if r["source_path"].endswith("a.mp4")] == ["static"]
    [note] = [json.loads(p.read_text()) for p in (tmp_path / "out" / STALLS).iterdir()]  # the stopped attempt
    assert note["stage"] == "motion" and note["source"].endswith("stuck.mp4")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_workers_dying_in_setup_stop_the_run_with_the_stage_and_signal(sources, tmp_path, monkeypatch, capsys):
    from pipelines.cli import main

    ray_with_faults(monkeypatch, TANDEM_TEST_SETUP_CRASH="motion")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlruns.db'}")
    rc = main(["curate", str(sources), "--out", str(tmp_path / "out"), *FAST, "track=true"])
    said = capsys.readouterr().out
    assert rc == 1
    client = mlflow.MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    [run] = client.search_runs([client.get_experiment_by_name("tandem-curation").experiment_id])
    assert run.info.status == "FAILED" and "SetupCrashed" in run.data.tags["error"]  # the run says it failed
    assert "stage motion was setting up" in said and "Segmentation fault" in said, said
    assert not list((tmp_path / "out").glob("rejects*")) or "motion" not in (tmp_path / "out" / "rejects.csv").read_text()
