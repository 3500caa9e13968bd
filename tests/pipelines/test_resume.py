"""Exactly-once resume: kill -9 a curation run mid-way, run the same command again, and
end with exactly the shards of an uninterrupted run (same keys, same bytes per sample)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import webdataset as wds

from curation.sample_media import make_clip

TANDEM = str(Path(sys.executable).parent / "tandem")
N_SOURCES = 6


def curate_cmd(raw: Path, out: Path) -> list[str]:
    return [TANDEM, "curate", str(raw), "--out", str(out), "shards.max_count=4", "track=false", "skip=[transcribe]"]


def run_to_end(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def kill_session(proc: subprocess.Popen) -> None:
    """kill -9 the whole run: the CLI and every process of its session (Ray's workers have
    process groups of their own, and would otherwise finish their units as orphans)."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 30
    while time.time() < deadline:
        left = []
        for pid in map(int, filter(str.isdigit, os.listdir("/proc"))):
            try:
                if os.getsid(pid) == proc.pid:
                    os.kill(pid, signal.SIGKILL)
                    left.append(pid)
            except (ProcessLookupError, PermissionError):
                pass
        if not left:
            return
        time.sleep(0.1)


def json_diff(a: bytes, b: bytes) -> list:
    """The fields in which two samples' json documents differ (for the failure message)."""
    def flat(doc, prefix=""):
        if isinstance(doc, dict):
            return {k: v for key, value in doc.items() for k, v in flat(value, f"{prefix}{key}.").items()}
        return {prefix.rstrip("."): doc}
    x, y = flat(json.loads(a)), flat(json.loads(b))
    return [(k, x.get(k), y.get(k)) for k in sorted(set(x) | set(y)) if x.get(k) != y.get(k)]


def shard_contents(out: Path) -> dict[str, dict]:
    samples = wds.WebDataset(sorted(str(p) for p in (out / "shards").glob("clips-*.tar")), shardshuffle=False)
    return {s["__key__"]: {"members": sorted(k for k in s if not k.startswith("__")),
                           "bytes": {k: v for k, v in s.items() if not k.startswith("__")}} for s in samples}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path):
    raw = tmp_path / "raw"
    for i in range(N_SOURCES):
        make_clip(raw / f"src{i}.mp4", [1.2 + 0.2 * i, 1.4], size=(128, 96))

    reference = tmp_path / "reference"
    run_to_end(curate_cmd(raw, reference))

    crashed = tmp_path / "crashed"
    proc = subprocess.Popen(curate_cmd(raw, crashed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    done_dir = crashed / ".work" / "units"  # one record per finished work unit (here: a source)
    deadline = time.time() + 240
    while time.time() < deadline and len(list(done_dir.glob("*.json"))) < 1:
        time.sleep(0.05)
    kill_session(proc)
    committed = len(list(done_dir.glob("*.json")))
    assert 1 <= committed < N_SOURCES, "the kill should land mid-run"
    assert not (crashed / "manifest.parquet").exists()
    assert len(list((crashed / "shards").glob("*.tar"))) >= committed  # the workers wrote them

    run_to_end(curate_cmd(raw, crashed))
    stats = json.loads((crashed / "stats.json").read_text())
    assert stats["sources_processed"] == N_SOURCES - committed  # finished work was skipped

    expected, resumed = shard_contents(reference), shard_contents(crashed)
    assert len(expected) >= N_SOURCES
    assert list(resumed) == list(expected)  # same keys, same order, no duplicates
    for key, sample in expected.items():
        got = resumed[key]
        assert got["members"] == sample["members"] == ["flac", "json", "mp4", "txt"]
        assert got["bytes"] == sample["bytes"], json_diff(got["bytes"]["json"], sample["bytes"]["json"])
    assert sorted(p.name for p in (crashed / "shards").iterdir()) == sorted(
        p.name for p in (reference / "shards").iterdir())
