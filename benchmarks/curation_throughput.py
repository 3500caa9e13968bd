"""Curation throughput, CLI against CLI, on a long real source: what a user runs, side by side.

    .venv/bin/python benchmarks/curation_throughput.py              # ~4.6 min source (every real piece once)
    .venv/bin/python benchmarks/curation_throughput.py --minutes 10 # the issue's 10-minute length (pieces repeat)
    .venv/bin/python benchmarks/curation_throughput.py --source film.mp4   # your own footage
    .venv/bin/python benchmarks/curation_throughput.py --baseline /tmp/old  # + an older checkout's curate
    .venv/bin/python benchmarks/curation_throughput.py --busy 2     # beside 2 busy loops (a busy machine)
    .venv/bin/python benchmarks/curation_throughput.py --variant sync.scorer=events   # + curate with a setting changed

The source (``benchmarks/real_long_source.py``) is real footage with its own sound, pieces
of several real sources concatenated at 1280x720, 25 fps; the output lists where each
piece came from. On it, in one run, each as a whole process (its wall clock from start to
exit, imports, Ray start-up and MLflow close included):

  floor      one ``ffmpeg`` pass: decode the source, encode it once at the clip stage's
             settings (``ClipConfig``: longer side 512, x264 veryfast crf 20, AAC 192k,
             and the flac copy of the audio);
  detect     ``scenedetect -i F detect-adaptive list-scenes`` (PySceneDetect's CLI, shots only);
  curate     ``tandem curate F --out D 'skip=[transcribe,caption]'`` starting its own local Ray;
  cluster    the same with ``--address`` on an already running local cluster (``ray start
             --head`` on 127.0.0.1 in a temp dir of its own, workers at normal priority as
             docs/cluster.md advises for shared machines, stopped after);
  split      ``scenedetect -i F detect-adaptive split-video`` (detect, then ffmpeg per scene);
  baseline   with ``--baseline DIR``: ``curate`` again, run from another checkout (``git archive
             REV | tar -x -C DIR``), so a change is measured before/after in the same run;
  variant    with ``--variant 'KEY=VALUE ...'`` (repeatable): ``curate`` again with those overrides,
             so what a setting costs is measured in the same run.

It prints the ratios against the floor and against split (issue 24's targets: curate
<= 1.5x the floor, 1.2x the aim; <= 0.5x split), the busy seconds per stage (stats.json),
the phases of each curate's wall clock (from the times its log lines appeared: before Ray,
Ray's and the worker's start, the units, the merge and MLflow logging, the exit),
the CPU seconds each command used and so the cores it kept busy (CPU-s / wall: every
process of the command's tree, reaped by this script as a child subreaper; for the cluster
run, the cluster's processes too), the peak RSS of each kind of process, and the
machine's load average during each command. The machine is shared: compare the ratios of
one run, not absolutes across runs. ``--busy N`` keeps N busy loops at normal priority
running through every command, as other work on a busy machine would. The results also go to
benchmarks/results/curation_throughput.txt (``--results``).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

from benchmarks.busy_machine import busy_loops  # noqa: E402
from benchmarks.real_long_source import build  # noqa: E402
from curation.clip import ClipConfig  # noqa: E402
from curation.ffmpeg import binary, ffprobe  # noqa: E402
from training.local_ranks import free_port  # noqa: E402

SKIP = "skip=[transcribe,caption]"
RESULTS = ROOT / "benchmarks" / "results" / "curation_throughput.txt"
PR_SET_CHILD_SUBREAPER = 36
BUSY_PIDS: set[int] = set()  # --busy's loops: children of this process, but no command's


@dataclass
class Measured:
    wall_s: float = 0.0
    cpu_s: float = 0.0
    peak_rss_mb: dict = field(default_factory=dict)  # kind of process -> MB
    load: list = field(default_factory=list)  # 1-min load averages sampled during the command
    log: str = ""
    lines_at: list = field(default_factory=list)  # (seconds since the start, line) as each line appeared


def kind(proc: psutil.Process) -> str:
    try:
        name, cmd = proc.name(), " ".join(proc.cmdline()[:3])
    except psutil.Error:
        return "gone"
    if name.startswith("ray::") or "default_worker.py" in cmd:
        return "Ray worker"
    if "ffmpeg" in name:
        return "ffmpeg"
    if name in ("raylet", "gcs_server") or "ray/" in cmd or "dashboard" in cmd:
        return "Ray system"
    return "driver"


def tree(roots: list[psutil.Process]) -> list[psutil.Process]:
    procs = []
    for root in roots:
        with contextlib.suppress(psutil.Error):
            procs += [root, *root.children(recursive=True)]
    return procs


def cpu_of(procs: list[psutil.Process]) -> dict[tuple, float]:
    """Each live process's CPU seconds, its own and its reaped children's."""
    out = {}
    for p in procs:
        try:
            t = p.cpu_times()
            out[(p.pid, p.create_time())] = t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            pass
    return out


def children_cpu() -> float:
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def unwaited(procs: list[psutil.Process]) -> list[psutil.Process]:
    """Processes whose CPU time no parent collects: the raylet ignores SIGCHLD, so its
    workers' times (and their ffmpeg children's) vanish when they exit; they are sampled."""
    out = []
    for p in procs:
        with contextlib.suppress(psutil.Error):
            parent = p.parent()
            if parent is not None and parent.name() == "raylet":
                out.append(p)
    return out


def cluster_level(roots) -> list[psutil.Process]:
    """A cluster's own processes (``ray start`` and what it started: GCS, raylet, agents),
    whose times no one collects while they live. Not their children's children: the Ray
    workers are ``unwaited``, and a worker's ffmpeg children are in the worker's own times."""
    out = []
    for root in roots:
        with contextlib.suppress(psutil.Error):
            out += [root, *root.children()]
    return out


def reap_orphans(keep: list[psutil.Process], wait_s: float = 20.0) -> set[int]:
    """Wait for the processes a command left behind (Ray workers outlive its driver by a
    moment); as subreaper this process inherits them, and their CPU time with them.
    Returns the pids reaped."""
    keep_pids, reaped = {p.pid for p in tree(keep)} | BUSY_PIDS, set()
    deadline = time.time() + wait_s
    while time.time() < deadline:
        try:
            pid, _, _ = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid:
            reaped.add(pid)
            continue
        if not [c for c in psutil.Process().children() if c.pid not in keep_pids]:
            break
        time.sleep(0.2)
    return reaped


def measure(cmd: list[str], cwd: Path, env: dict, also: list[psutil.Process] = ()) -> Measured:
    """Run ``cmd`` to its exit; ``also``: long-running processes (a cluster) its work runs on.

    CPU time: what this process collects from its children (it is their subreaper), plus,
    sampled every 0.25 s, that of the processes nobody collects (``unwaited``) and, for a
    cluster, the growth of its processes' times."""
    m = Measured()
    before, cpu0 = cpu_of(cluster_level(also) + unwaited(tree(list(also)))), children_cpu()
    sampled: dict[tuple, float] = {}
    started = time.perf_counter()
    log = cwd / f"log-{time.monotonic_ns()}.txt"
    with open(log, "w") as sink:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=sink, stderr=subprocess.STDOUT)
    root = psutil.Process(proc.pid)
    seen = 0
    while proc.poll() is None:
        m.load.append(os.getloadavg()[0])
        seen = _note_new_lines(log, seen, time.perf_counter() - started, m.lines_at)
        procs = tree([root, *also])
        for p in procs:
            try:
                rss = p.memory_info().rss / 2**20
            except psutil.Error:
                continue
            k = kind(p)
            m.peak_rss_mb[k] = max(m.peak_rss_mb.get(k, 0.0), rss)
        sampled.update(cpu_of(unwaited(procs) + cluster_level(also)))
        time.sleep(0.25)
    m.wall_s = time.perf_counter() - started
    _note_new_lines(log, seen, m.wall_s, m.lines_at)
    m.log = log.read_text(errors="replace")
    sampled.update(cpu_of(cluster_level(also) + unwaited(tree(list(also)))))
    reaped = reap_orphans(list(also))  # these come with children_cpu() now: not counted twice
    m.cpu_s = children_cpu() - cpu0 + sum(v - before.get(k, 0.0) for k, v in sampled.items() if k[0] not in reaped)
    m.peak_rss_mb.pop("gone", None)
    if proc.returncode:
        raise SystemExit(f"{cmd[:4]}... failed ({proc.returncode}):\n{m.log[-3000:]}")
    return m


def _note_new_lines(log: Path, seen: int, at_s: float, lines_at: list) -> int:
    """Stamp the complete lines written to ``log`` since byte ``seen`` with ``at_s`` (the
    poll's 0.25 s is the resolution); returns the new ``seen``."""
    data = log.read_bytes()
    end = data.rfind(b"\n", seen) + 1
    for line in data[seen:end].decode(errors="replace").splitlines():
        lines_at.append((at_s, line))
    return max(seen, end)


def floor_cmd(source: Path, out: Path) -> list[str]:
    """One decode and one encode at the clip stage's settings."""
    c = ClipConfig(work_dir=str(out))
    scale = f"min(1\\,{c.max_side}/max(iw\\,ih))"  # as ClipStage: the longer side to max_side, never up
    graph = (f"[0:v]scale=w=trunc({scale}*iw/2)*2:h=trunc({scale}*ih/2)*2,format=yuv420p[v];"
             f"[0:a]aresample={c.sample_rate},asplit=2[a1][a2]")
    return [binary("ffmpeg"), "-nostdin", "-y", "-loglevel", "error", "-i", str(source), "-filter_complex", graph,
            "-map", "[v]", "-c:v", c.video_codec, "-crf", str(c.crf), "-preset", c.preset,
            "-map", "[a1]", "-c:a", c.audio_codec, "-b:a", c.audio_bitrate, "-movflags", "+faststart",
            str(out / "floor.mp4"), "-map", "[a2]", "-c:a", "flac", str(out / "floor.flac")]


class Cluster:
    """``ray start --head --block`` on 127.0.0.1, in a session and temp dir of its own, so
    that nothing else on the machine joins it and stopping it ends only its processes."""

    def __init__(self, env: dict, tmp: Path):
        self.port, self.temp = free_port(), Path(tempfile.mkdtemp(prefix="tb-ray-", dir="/tmp"))  # short socket paths
        # Token auth is the head's default; the client must say so too (as tests/pipelines/test_submit.py).
        self.env = {**env, "RAY_AUTH_MODE": "token", "RAY_worker_niceness": "0"}
        ray = str(Path(sys.executable).parent / "ray")
        # Fixed default ports clash with other Ray instances on a shared machine.
        ports = [f"--{name}={free_port()}" for name in ("dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                                                        "metrics-export-port", "runtime-env-agent-port",
                                                        "ray-client-server-port")]
        self.proc = subprocess.Popen(
            [ray, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={self.port}",
             f"--num-cpus={os.cpu_count()}", "--include-dashboard=false", "--disable-usage-stats",
             f"--temp-dir={self.temp}", *ports], env=self.env, cwd=tmp, start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.address = f"127.0.0.1:{self.port}"

    def wait_ready(self, timeout_s: float = 300) -> None:
        check = "import ray, sys; ray.init(address=sys.argv[1], log_to_driver=False); ray.shutdown()"
        deadline = time.time() + timeout_s
        while subprocess.run([sys.executable, "-c", check, self.address], env=self.env, timeout=timeout_s,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode:
            if time.time() > deadline or self.proc.poll() is not None:
                raise SystemExit(f"the Ray head on {self.address} did not come up")
            time.sleep(2)

    def stop(self) -> None:
        for sig, grace in ((signal.SIGTERM, 20), (signal.SIGKILL, 5)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            deadline = time.time() + grace
            while time.time() < deadline and any(p.status() != psutil.STATUS_ZOMBIE for p in self.members()):
                time.sleep(0.5)
        reap_orphans([])
        shutil.rmtree(self.temp, ignore_errors=True)

    def members(self) -> list[psutil.Process]:
        out = []
        for p in psutil.process_iter():
            try:
                if os.getsid(p.pid) == self.proc.pid:
                    out.append(p)
            except (OSError, psutil.Error):
                pass
        return out


def stage_busy(out: Path) -> dict:
    return json.loads((out / "stats.json").read_text())


def unit_seconds(log: str) -> float | None:
    found = re.findall(UNIT_LINE, log)
    return sum(float(s) for s in found) if found else None


UNIT_LINE = r"units, \d+/\d+ sources\].*\((\d+\.\d) s\)"


def phases(m: Measured) -> dict[str, float] | None:
    """Where a ``tandem curate`` process's wall clock went, from the times its own log lines
    appeared: before Ray is asked to start (imports, config, preflight, hashing); from then
    to the first unit's start (Ray's start, the MLflow run opening beside it, Ray Data's
    start, the worker's imports and stage set-up); the units (first start to last end,
    each unit's start being its end line's time less its own seconds); the merge, report
    and MLflow logging; and the exit (Ray's shutdown, the interpreter's)."""
    ray = next((t for t, line in m.lines_at if "local Ray instance" in line or "joining Ray cluster" in line), None)
    units = [(t - float(found.group(1)), t) for t, line in m.lines_at if (found := re.search(UNIT_LINE, line))]
    summary = next((t for t, line in m.lines_at if line.startswith("curated ")), None)
    if ray is None or not units or summary is None:
        return None
    first, last = min(u[0] for u in units), max(u[1] for u in units)
    return {"before Ray": ray, "Ray, Ray Data and worker start": first - ray, "units": last - first,
            "merge, report, MLflow": summary - last, "exit": m.wall_s - summary}


def run(source: Path, origins: list[dict], tmp: Path, baseline: Path | None = None, busy: int = 0,
        variants: list[str] = ()) -> list[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0",
           "PATH": f"{Path(binary('ffmpeg')).parent}:{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    scenedetect = str(Path(sys.executable).parent / "scenedetect")
    tandem = [sys.executable, "-m", "pipelines.cli", "curate", str(source)]
    footage = float(ffprobe(source)["format"]["duration"])
    load_start = os.getloadavg()
    results: dict[str, Measured] = {}
    with busy_loops(busy) as pids:
        BUSY_PIDS.update(pids)
        measure_all(source, tmp, env, tandem, scenedetect, baseline, results, variants)
    return report(source, origins, footage, load_start, results, tmp, busy)


def measure_all(source: Path, tmp: Path, env: dict, tandem: list[str], scenedetect: str, baseline: Path | None,
                results: dict[str, Measured], variants: list[str] = ()) -> None:
    (tmp / "floor").mkdir()
    results["floor"] = measure(floor_cmd(source, tmp / "floor"), tmp, env)
    results["detect"] = measure([scenedetect, "-i", str(source), "-o", str(tmp / "detect"),
                                 "detect-adaptive", "list-scenes"], tmp, env)
    results["curate"] = measure([*tandem, "--out", str(tmp / "curate"), SKIP], tmp, env)
    if baseline:  # the same command from another checkout, right after: before/after in one run
        results["baseline"] = measure([*tandem, "--out", str(tmp / "baseline"), SKIP], tmp,
                                      {**env, "PYTHONPATH": str(baseline)})
    for overrides in variants:  # the same command with settings changed: what a setting costs
        results[f"curate {overrides}"] = measure([*tandem, "--out", str(tmp / _folder(overrides)), SKIP,
                                                  *overrides.split()], tmp, env)
    cluster = Cluster(env, tmp)
    try:
        cluster.wait_ready()
        results["cluster"] = measure([*tandem, "--out", str(tmp / "cluster"), SKIP, "--address", cluster.address],
                                     tmp, cluster.env, also=[psutil.Process(cluster.proc.pid)])
    finally:
        cluster.stop()
    results["split"] = measure([scenedetect, "-i", str(source), "-o", str(tmp / "split"),
                                "detect-adaptive", "split-video"], tmp, env)


def _folder(overrides: str) -> str:
    return "curate-" + re.sub(r"[^A-Za-z0-9_.=-]+", "_", overrides)


def report(source: Path, origins: list[dict], footage: float, load_start: tuple, results: dict, tmp: Path,
           busy: int = 0) -> list[str]:
    floor, split = results["floor"].wall_s, results["split"].wall_s
    lines = [f"source: {source} ({footage:.1f} s of real 1280x720 25 fps footage with sound, "
             f"{len(origins)} pieces: list at the end)",
             f"machine: {os.cpu_count()} cores; load average at start {load_start[0]:.1f} / {load_start[1]:.1f} / "
             f"{load_start[2]:.1f} (1/5/15 min), shared with other work"
             + (f"; {busy} busy loops at normal priority through every command" if busy else ""),
             "", f"{'command':<62}{'wall s':>8}{'/floor':>8}{'/split':>8}{'CPU s':>8}{'cores':>7}{'load':>7}"]
    names = {"floor": "ffmpeg: decode + one encode at the clip settings (floor)",
             "detect": "scenedetect detect-adaptive list-scenes",
             "curate": "tandem curate F --out D 'skip=[...]' (local Ray)",
             "baseline": "the same from --baseline (local Ray)",
             **{key: f"the same with {key.removeprefix('curate ')}" for key in results if key.startswith("curate ")},
             "cluster": "tandem curate ... --address (running cluster)",
             "split": "scenedetect detect-adaptive split-video"}
    for key, label in names.items():
        if key not in results:
            continue
        m = results[key]
        load = sum(m.load) / len(m.load) if m.load else 0.0
        lines.append(f"{label:<62}{m.wall_s:8.1f}{m.wall_s / floor:8.2f}{m.wall_s / split:8.2f}"
                     f"{m.cpu_s:8.1f}{m.cpu_s / m.wall_s:7.2f}{load:7.1f}")
    lines.append("targets: curate <= 1.5x floor (aim 1.2x); curate <= 0.5x split")
    for key in names:
        if key not in results or key in ("floor", "detect", "split"):
            continue
        m, stats = results[key], stage_busy(tmp / (_folder(key.removeprefix("curate ")) if " " in key else key))
        unit = unit_seconds(m.log)
        busy = {k: v["seconds"] for k, v in stats["per_stage"].items()}
        lines += ["", f"{key}: {stats['clips_kept']} clips kept, {stats['clips_rejected']} rejected "
                      f"({', '.join(f'{r}={n}' for r, n in stats['reject_reasons'].items()) or 'none'}); "
                      f"process wall {m.wall_s:.1f} s, of which the unit {unit or 0:.1f} s "
                      f"and run_curation {stats['wall_s']:.1f} s",
                  "  busy seconds per stage: " + ", ".join(f"{k} {v:.1f}" for k, v in busy.items() if v >= 0.05)
                  + f" (sum {sum(busy.values()):.1f} = {sum(busy.values()) / unit if unit else 0:.2f} "
                    "cores over the unit)",
                  "  phases of the process wall, s: " + (", ".join(f"{k} {v:.1f}" for k, v in parts.items())
                                                          if (parts := phases(m)) else "(its log lines were not found)"),
                  "  peak RSS per process, MB: " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(m.peak_rss_mb.items()))
                  + f"; the unit's worker (stats.json, with its ffmpeg children) {stats['worker_peak_rss_mb']:.0f}"
                    " (target <= 2048)"]
    lines += ["", "pieces of the source (start s, seconds, origin):"]
    lines += [f"  {r['start_s']:8.2f} {r['seconds']:6.2f}  {r['origin']}" for r in origins]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, help="source length (default: every real piece once, ~4.6 min)")
    parser.add_argument("--source", type=Path, help="your own footage instead of the real pieces")
    parser.add_argument("--results", type=Path, default=RESULTS, help=f"where to write the table ({RESULTS})")
    parser.add_argument("--keep", action="store_true", help="keep the outputs")
    parser.add_argument("--baseline", type=Path, help="another checkout of tandem: its `tandem curate` is timed "
                                                      "right after this one's (before/after in one run)")
    parser.add_argument("--busy", type=int, default=0, help="busy loops at normal priority beside every command")
    parser.add_argument("--variant", action="append", default=[], metavar="'KEY=VALUE ...'",
                        help="also time curate with these overrides (repeatable), e.g. 'sync.scorer=events'")
    args = parser.parse_args()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0):  # orphans of a command (Ray workers) come back here
        print("warning: not a child subreaper: the CPU time of orphaned processes is not counted")
    if args.source:
        source, origins = args.source, [{"start_s": 0.0, "seconds": 0.0, "origin": str(args.source)}]
    else:
        source, origins = build(args.minutes)
    tmp = Path(tempfile.mkdtemp(prefix="tandem-bench-"))
    try:
        lines = run(source, origins, tmp, args.baseline, args.busy, args.variant)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    text = "\n".join(lines) + "\n"
    print(text, end="")
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(f"# {' '.join(['benchmarks/curation_throughput.py', *sys.argv[1:]])}, "
                            f"{time.strftime('%Y-%m-%d %H:%M')}\n" + text)
    if args.keep:
        print(f"outputs kept in {tmp}")


if __name__ == "__main__":
    main()
