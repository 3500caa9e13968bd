"""Curation throughput: the CPU DAG against the floors it is built on, on a short and a long source.

    .venv/bin/python benchmarks/curation_throughput.py                 # 30-s and 10-minute 720p sources
    .venv/bin/python benchmarks/curation_throughput.py --seconds 30    # only the 30-s one
    .venv/bin/python benchmarks/curation_throughput.py --source my.mp4 --no-ray

On each source, in one run, side by side, it times
  (a) the whole CPU curation DAG without the ASR and caption models (probe, shots, clip,
      audio, motion, sync, filter; one decode per source), two ways:
      (a1) ``run_curation(..., in_process=True)`` in a fresh process: one worker's cost;
      (a2) ``run_curation`` on local Ray, timed after Ray has started and a first run on
           a 2-s clip has warmed its worker (cluster start-up and a worker's imports and
           model warm-up are fixed costs, not throughput; (a1) likewise runs every
           stage's setup() and imports what the warm driver holds (matplotlib for
           the report, pandas for the tables) before its clock starts). The warm-up run's time is printed:
           it is what a fresh worker costs once;
  (b) PySceneDetect's own CLI detecting shots alone (``scenedetect -i F detect-adaptive``);
  (c) one ``ffmpeg -i F -f null -`` decode pass,
and prints footage-seconds per wall-second and the ratios against the targets:
a1/b <= 1.0 (the DAG costs no more than detecting shots), a2/a1 <= 1.3 (Ray's overhead),
and the peak memory of a worker (the one-process run, and the Ray worker that ran the
unit, each with its ffmpeg children) <= 2 GB. The sources are 720p30 lavfi patterns with
a hard cut every ~7 s and a stereo tone (one shot in three is a still picture). The
machine is shared and noisy: compare ratios from the same run, not absolutes.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from curation.ffmpeg import binary, run_ffmpeg  # noqa: E402
from curation.sample_media import PATTERNS  # noqa: E402

OVERRIDES = ["skip=[transcribe, caption]", "track=false"]


def make_source(path: Path, seconds: int) -> Path:
    """720p30 with a hard cut every ~7 s and a stereo tone track."""
    shots = max(1, seconds // 7)
    parts = []
    for i in range(shots):
        parts += ["-f", "lavfi", "-t", str(seconds / shots), "-i", f"{PATTERNS[i % 3]}=size=1280x720:rate=30"]
    chain = "".join(f"[{i}:v]" for i in range(shots)) + f"concat=n={shots}:v=1:a=0,format=yuv420p[v]"
    run_ffmpeg([*parts, "-f", "lavfi", "-i", f"aevalsrc=0.2*sin(2*PI*330*t)|0.2*sin(2*PI*495*t):s=48000:d={seconds}",
                "-filter_complex", chain, "-map", "[v]", "-map", f"{shots}:a", "-c:v", "libx264", "-preset",
                "veryfast", "-crf", "23", "-c:a", "aac", "-t", str(seconds), str(path)], timeout=3600)
    return path


def timed(cmd: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


IN_ONE_PROCESS = """
import json, resource, sys, time
from pipelines.config import load_config
from pipelines.curate import CurationConfig, build_stages, run_curation
from pipelines.ray_adapter import Worker
cfg = load_config(CurationConfig, None, json.loads(sys.argv[3]))
worker = Worker.get(cfg)
for segment in worker.segments:  # model/numba warm-up is a per-worker constant, not throughput
    for stage in segment.stages:
        stage.setup()
import curation.report  # matplotlib, as the Ray driver has it from its warm-up run
import pyarrow, pandas  # noqa: E401,F401  the tables' first write imports pandas (0.3 s): the driver has it too
started = time.perf_counter()
result = run_curation([sys.argv[1]], sys.argv[2], cfg, in_process=True)
wall = time.perf_counter() - started
peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
print(json.dumps({"wall_s": wall, "peak_rss_mb": peak / 1024, "kept": len(result.manifest),
                  "rejected": len(result.rejects),
                  "stage_s": {k: v["seconds"] for k, v in result.stats["per_stage"].items()}}))
"""


def in_one_process(source: Path, out: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", IN_ONE_PROCESS, str(source), str(out), json.dumps(OVERRIDES)],
                          check=True, capture_output=True, text=True, cwd=ROOT)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def on_local_ray(source: Path, out: Path) -> dict:
    from pipelines.config import load_config
    from pipelines.curate import CurationConfig, run_curation
    from pipelines.ray_local import init_ray

    init_ray()
    cfg = load_config(CurationConfig, None, OVERRIDES)
    warm = out.with_name(out.name + "-warmup")
    started = time.perf_counter()
    run_curation([str(make_source(warm.with_suffix(".mp4"), 2))], warm, cfg)
    warmup_s = time.perf_counter() - started
    started = time.perf_counter()
    result = run_curation([str(source)], out, cfg)
    return {"wall_s": time.perf_counter() - started, "peak_rss_mb": result.stats.get("worker_peak_rss_mb", 0.0),
            "kept": len(result.manifest), "warmup_s": warmup_s}


def footage_seconds(source: Path) -> float:
    from curation.probe import ProbeStage

    return ProbeStage().process({"source": {"path": str(source)}})[0]["probe"]["duration_s"]


def measure(source: Path, tmp: Path, ray: bool) -> dict:
    scenedetect = str(Path(sys.executable).parent / "scenedetect")
    row = {"source": source, "footage_s": footage_seconds(source),
           "decode_s": timed([binary("ffmpeg"), "-nostdin", "-i", str(source), "-f", "null", "-"]),
           "scenedetect_s": timed([scenedetect, "-q", "-i", str(source), "detect-adaptive"]),
           "one_process": in_one_process(source, tmp / f"{source.stem}-one")}
    row["ray"] = on_local_ray(source, tmp / f"{source.stem}-ray") if ray else None
    return row


def report(row: dict) -> None:
    footage = row["footage_s"]

    def rate(seconds: float) -> str:
        return f"{footage / seconds:7.1f} footage-s/s ({seconds:7.1f} s)"

    one, ray = row["one_process"], row["ray"]
    print(f"\nsource: {row['source'].name} ({footage:.0f} s of 720p30)")
    print(f"  (c)  ffmpeg decode pass          {rate(row['decode_s'])}")
    print(f"  (b)  PySceneDetect CLI, adaptive {rate(row['scenedetect_s'])}")
    print(f"  (a1) CPU DAG, one process        {rate(one['wall_s'])}  kept={one['kept']} rejected={one['rejected']}")
    if ray:
        print(f"  (a2) CPU DAG, local Ray          {rate(ray['wall_s'])}  kept={ray['kept']}  "
              f"(a fresh worker's first run, on a 2-s clip: {ray['warmup_s']:.1f} s)")
    busy = ", ".join(f"{k} {v:.1f}" for k, v in one["stage_s"].items() if v >= 0.05)
    print(f"       busy seconds per stage in (a1) (the shot stage overlaps the rest): {busy}")
    print(f"  a1/b  = {one['wall_s'] / row['scenedetect_s']:.2f}  (target <= 1.0)   "
          f"a1/c = {one['wall_s'] / row['decode_s']:.2f}")
    if ray:
        print(f"  a2/a1 = {ray['wall_s'] / one['wall_s']:.2f}  (target <= 1.3)   "
              f"a2/b = {ray['wall_s'] / row['scenedetect_s']:.2f}")
    peaks = f"one process {one['peak_rss_mb']:.0f} MB" + (f", Ray worker {ray['peak_rss_mb']:.0f} MB" if ray else "")
    print(f"  peak memory per worker: {peaks} (target <= 2048)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, action="append", help="footage to use (repeatable)")
    parser.add_argument("--seconds", type=int, action="append", help="generated source lengths (default 30 and 600)")
    parser.add_argument("--no-ray", action="store_true", help="skip the local Ray runs")
    parser.add_argument("--keep", action="store_true", help="keep the generated sources and outputs")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tandem-bench-"))
    sources = args.source or [make_source(tmp / f"source-{s}s.mp4", s) for s in (args.seconds or [30, 600])]
    rows = [measure(source, tmp, not args.no_ray) for source in sources]
    for row in rows:
        report(row)
    print(f"\npeak memory of this driver: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    if args.keep:
        print(f"sources and outputs kept in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
