"""Curation throughput: the CPU DAG against the two floors it is built on.

    .venv/bin/python benchmarks/curation_throughput.py            # ~60 s 720p source
    .venv/bin/python benchmarks/curation_throughput.py --long     # 10-minute 720p source
    .venv/bin/python benchmarks/curation_throughput.py --source my.mp4

On the same footage, in one run, it times
  (a) the whole CPU curation DAG without the ASR and caption models
      (probe, shots, clip, audio, motion, sync, filter), two ways: the stages in one
      process (a plain loop, the per-worker cost) and ``run_curation`` on local Ray
      (timed after Ray has started: cluster start-up is a fixed cost, not throughput);
  (b) PySceneDetect's own CLI detecting shots alone (``scenedetect -i F detect-adaptive``);
  (c) one ``ffmpeg -i F -f null -`` decode pass,
and prints footage-seconds per wall-second, the ratios a/b and a/c (targets: a/b <= 1.0,
a/c <= 3) and the peak memory of the process that ran the stages (target <= 2 GB on a
10-minute 720p source). The machine is shared and noisy: compare ratios, not absolutes.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from curation.ffmpeg import binary, run_ffmpeg  # noqa: E402
from curation.sample_media import PATTERNS  # noqa: E402

SKIP = ["transcribe", "caption"]


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


STAGES_IN_ONE_PROCESS = """
import json, resource, sys, time
from dataclasses import replace
from pathlib import Path
from pipelines.config import load_config
from pipelines.curate import CurationConfig, build_stages
from curation.stage import run_stages
cfg = load_config(CurationConfig, None, ["skip=[transcribe, caption]"])
stages = build_stages(cfg, Path(sys.argv[2]))
for s in stages:
    s.setup()  # model/numba warm-up is a per-worker constant, not throughput
started = time.perf_counter()
items = run_stages(stages, [{"source": {"path": sys.argv[1]}}])
wall = time.perf_counter() - started
kb = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
print(json.dumps({"wall_s": wall, "peak_rss_mb": kb / 1024, "clips": len(items),
                  "kept": sum(1 for i in items if not i.get("reject"))}))
"""


def stages_in_one_process(source: Path, work: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", STAGES_IN_ONE_PROCESS, str(source), str(work)], check=True,
                         capture_output=True, text=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def dag_on_ray(source: Path, out: Path) -> float:
    from pipelines.config import load_config
    from pipelines.curate import CurationConfig, run_curation
    from pipelines.ray_local import init_ray

    init_ray()
    cfg = load_config(CurationConfig, None, [f"skip=[{', '.join(SKIP)}]", "track=false"])
    started = time.perf_counter()
    run_curation([str(source)], out, cfg)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, help="footage to use (default: generated 720p lavfi)")
    parser.add_argument("--seconds", type=int, default=60, help="length of the generated source")
    parser.add_argument("--long", action="store_true", help="generate a 10-minute source")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray DAG run")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tandem-bench-"))
    source = args.source or make_source(tmp / "source.mp4", 600 if args.long else args.seconds)
    from curation.probe import ProbeStage

    footage_s = ProbeStage().process({"source": {"path": str(source)}})[0]["probe"]["duration_s"]

    decode_s = timed([binary("ffmpeg"), "-nostdin", "-i", str(source), "-f", "null", "-"])
    scenedetect_s = timed([str(Path(sys.executable).parent / "scenedetect"), "-q", "-i", str(source),
                           "detect-adaptive"])
    loop = stages_in_one_process(source, tmp / "loop")
    dag_s = None if args.no_ray else dag_on_ray(source, tmp / "dag")

    def rate(seconds: float) -> str:
        return f"{footage_s / seconds:8.1f} footage-s/s ({seconds:6.1f} s)"

    print(f"\nsource: {source} ({footage_s:.1f} s)")
    print(f"(c) ffmpeg decode pass         {rate(decode_s)}")
    print(f"(b) PySceneDetect CLI, adaptive {rate(scenedetect_s)}")
    print(f"(a) CPU DAG, one process       {rate(loop['wall_s'])}  clips={loop['clips']} kept={loop['kept']}")
    if dag_s is not None:
        print(f"(a) CPU DAG, local Ray         {rate(dag_s)}")
    print(f"a/b = {loop['wall_s'] / scenedetect_s:.2f} (target <= 1.0), a/c = {loop['wall_s'] / decode_s:.2f} "
          f"(target <= 3) [one-process DAG]")
    if dag_s is not None:
        print(f"a/b = {dag_s / scenedetect_s:.2f}, a/c = {dag_s / decode_s:.2f} [Ray DAG]")
    print(f"peak memory of the stage process: {loop['peak_rss_mb']:.0f} MB (target <= 2048)")
    print(f"peak memory of this driver: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
