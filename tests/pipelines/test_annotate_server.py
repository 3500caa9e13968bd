"""The round trip through a real Label Studio on 127.0.0.1: generate -> tasks -> server (tandem
annotate serve / push, label-studio-sdk) -> annotations, clicked in the real labeling page by
headless chromium or posted the way the page posts them -> tandem annotate pull -> tandem
annotate import gives back exactly the judgements made.

One server for the whole module: the one `tandem annotate serve` starts (the `server` fixture),
stopped by Ctrl-C in the last test. The first run installs Label Studio into its own venv
(scripts/install_labelstudio.sh, ~3 min once per machine); a server then starts in seconds from
the migrated template database.
"""

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import pytest
import torch

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def rollouts(tmp_path_factory):
    """Two debug checkpoints x one prompt x two samples: four real clips with sound."""
    from model.checkpoint import save
    from model.dit import DualDiT
    from model.presets import get_preset
    from reward.rollouts.rollout_generator import Prompt, RolloutConfig, RolloutGenerator
    from training.checkpoint_loader import identify

    root = tmp_path_factory.mktemp("annotate") / "rollouts"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    dirs = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        ckpt = save(DualDiT(get_preset("debug")), root / f"ckpt{seed}.safetensors")
        ref = identify(ckpt)
        out = root / f"ck{seed}"
        RolloutGenerator(str(ckpt), RolloutConfig(group_size=2, steps=2),
                         {"path": str(ckpt), "digest": ref.digest, "tag": ref.tag}, out
                         ).write_group(Prompt("drums", "a drummer plays a fill"))
        dirs.append(out)
    torch.set_num_threads(threads)
    return dirs


@dataclass
class Served:
    """The Label Studio that `tandem annotate serve` runs, as the tests reach it."""
    proc: subprocess.Popen
    output: str  # what serve printed up to "Ctrl-C stops"
    url: str  # the server's root
    data_dir: Path
    creds: object  # pipelines.labelstudio_server.Credentials

    @property
    def log_path(self) -> Path:
        return self.data_dir / "server.log"


@pytest.fixture(scope="module")
def server(rollouts, tmp_path_factory):
    """`tandem annotate serve` on the rollouts (a project of 2 pairs), shared by every test here:
    a Label Studio start is the expensive part."""
    import time

    from pipelines.labelstudio_server import credentials

    data = tmp_path_factory.mktemp("labelstudio")
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "annotate", "serve", *map(str, rollouts),
                             "--data-dir", str(data), "--pairs", "2"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        deadline = time.monotonic() + 600  # installs Label Studio first where it is missing
        while time.monotonic() < deadline and not any("Ctrl-C stops" in line for line in lines):
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
        started = [line.split()[2] for line in lines if line.startswith("Label Studio:")]
        assert started, "tandem annotate serve did not start:\n" + "".join(lines)[-3000:]
        yield Served(proc, "".join(lines), started[0].split("/projects/")[0], data, credentials(data))
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=120)


def tandem(server, *args):
    """``tandem annotate ARGS`` in this process (a second interpreter would import torch again,
    seconds per call on a busy CI machine); push and pull still run the SDK in Label Studio's venv."""
    from pipelines.cli import main

    out, err = io.StringIO(), io.StringIO()
    with mock.patch.dict(os.environ, LABEL_STUDIO_API_KEY=server.creds.token), \
            contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["annotate", *map(str, args)])
    proc = subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())
    assert server.creds.token not in proc.stdout + proc.stderr and server.creds.password not in proc.stdout + proc.stderr
    return proc


def api(server, method, path, body=None):
    request = urllib.request.Request(server.url + path, method=method, data=json.dumps(body).encode() if body else None,
                                     headers={"Authorization": f"Token {server.creds.token}",
                                              "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as resp:
        return json.loads(resp.read() or b"null")


def submit(server, project, task_id, result, cancelled=False):
    """What the labeling page's Submit (or Skip) button posts."""
    return api(server, "POST", f"/api/tasks/{task_id}/annotations?project={project}", {
        "result": result, "was_cancelled": cancelled, "lead_time": 4.2, "draft_id": 0,
        "parent_prediction": None, "parent_annotation": None, "started_at": "2026-11-29T10:00:00.000Z",
        "project": str(project)})


def push(server, rollouts, *args):
    proc = tandem(server, "push", *rollouts, "--url", server.url, *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    project = int(proc.stdout.strip().rsplit("/projects/", 1)[1].split("/")[0])
    tasks = api(server, "GET", f"/api/tasks?project={project}&page_size=100")["tasks"]
    return project, tasks


def pull_and_import(server, project, tmp_path, rollouts):
    export = tmp_path / f"export{project}.json"
    proc = tandem(server, "pull", "--url", server.url, "--project", project, "--out", export)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return import_(server, export, tmp_path / f"rankings{project}", rollouts)


def import_(server, export, rankings, rollouts):
    proc = tandem(server, "import", export, "--out", rankings, "--rollouts", *rollouts)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    from reward.annotation.rankings import read_rankings

    report = json.loads((rankings / "import.json").read_text())
    for reason, count in report["skipped"].items():  # the import says what it skipped, and why
        assert f"{reason}={count} (" in proc.stdout
    return read_rankings(rankings), report


@pytest.mark.timeout(1500)
def test_pairwise_round_trip_gives_back_exactly_the_submitted_judgements(server, rollouts, tmp_path):
    project, tasks = push(server, rollouts, "--axes", "visual_quality,audio_quality,overall",
                          "pairwise_tag_axis=overall")
    assert len(tasks) == 6  # 4 clips of one prompt
    # the clips are served to the page from local files, seekable
    src = tasks[0]["data"]["video_a"].split('src="')[1].split('"')[0].replace("&amp;", "&")
    request = urllib.request.Request(server.url + src, headers={"Authorization": f"Token {server.creds.token}",
                                                                "Range": "bytes=0-99"})
    with urllib.request.urlopen(request, timeout=60) as resp:
        assert resp.status == 206 and len(resp.read()) == 100

    submitted = set()
    choices = ["A better", "B better", "Tie"]
    for i, task in enumerate(tasks[:5]):
        a, b = task["data"]["tandem"]["items"]
        vq, aq = choices[i % 3], choices[(i + 1) % 3]
        result = [{"id": f"r{i}a", "from_name": "visual_quality", "to_name": "clip_a", "type": "choices",
                   "origin": "manual", "value": {"choices": [vq]}},
                  {"id": f"r{i}b", "from_name": "audio_quality", "to_name": "clip_a", "type": "choices",
                   "origin": "manual", "value": {"choices": [aq]}},
                  {"id": f"r{i}c", "from_name": "overall", "to_name": "overall", "type": "pairwise",
                   "origin": "manual", "value": {"selected": "left" if i % 2 else "right"}}]
        if i == 4:
            submit(server, project, task["id"], [], cancelled=True)  # skipped by the annotator
            continue
        submit(server, project, task["id"], result)
        outcome = {"A better": "a", "B better": "b", "Tie": "tie"}
        submitted |= {(a, b, "visual_quality", outcome[vq]), (a, b, "audio_quality", outcome[aq]),
                      (a, b, "overall", "a" if i % 2 else "b")}

    rows, report = pull_and_import(server, project, tmp_path, rollouts)
    assert {(r["item_a"], r["item_b"], r["axis"], r["outcome"]) for r in rows} == submitted
    assert len(rows) == len(submitted) == 12
    assert report["skipped"] == {"cancelled": 1} and report["annotations"] == 4

    # the leaderboard of checkpoints from these judgements
    board = tmp_path / "board.csv"
    proc = tandem(server, "leaderboard", tmp_path / f"rankings{project}", "--by", "checkpoint", "--out", board,
                  "--bootstrap", "20")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = board.read_text().splitlines()
    assert lines[0] == "item,axis,score,ci_low,ci_high" and len(lines) == 1 + 3 * 2  # 3 axes x 2 checkpoints


def test_credentials_stay_private(server):
    path = server.data_dir / "credentials.json"
    assert path.stat().st_mode & 0o777 == 0o600
    log = Path(server.log_path).read_text(errors="replace")
    assert server.creds.token not in log and server.creds.password not in log


AXIS_OF_TITLE = {"Visual quality": "visual_quality", "Audio quality": "audio_quality", "Audio-video sync": "av_sync",
                 "Prompt alignment": "prompt_alignment"}
CLICKS = [  # per pairwise task in the annotator's stream: every Choices value, both Pairwise sides
    {"Visual quality": "A better", "Audio quality": "Tie", "Audio-video sync": "B better", "Prompt alignment": "Tie",
     "motion": "B"},
    {"Visual quality": "Tie", "Audio quality": "B better", "Audio-video sync": "A better", "Prompt alignment": "A better",
     "motion": "A"},
]


@pytest.mark.timeout(300)
def test_an_annotator_clicks_the_real_pages_and_every_outcome_equals_the_click(server, rollouts, tmp_path, chromium):
    """Headless Debian chromium (the `chromium` fixture) on the pairwise page, all five axes
    (four Choices, one Pairwise tag), and on the rank page; Submit, Skip, pull, import."""
    from pipelines.labelstudio_browser import Annotator, wait_for

    project, tasks = push(server, rollouts, "pairwise_tag_axis=motion")
    task_of = {tuple(t["data"]["tandem"]["items"]): t["id"] for t in tasks}
    proc = tandem(server, "pull", "--url", server.url, "--project", project, "--out", tmp_path / "none.json")
    assert proc.returncode == 0 and "no annotations yet: 0 of 6 tasks annotated" in proc.stdout, proc.stdout
    assert json.loads((tmp_path / "none.json").read_text()) == []

    page = Annotator(chromium, server.url)
    page.login(server.creds.username, server.creds.password)
    page.open(project)  # "Label All Tasks": the stream an annotator works through, with Skip
    shown = page.shown_clips()
    # both clips play with sound, from native controls
    for video in page.play_all():
        assert video["controls"] and not video["muted"] and video["duration"] > 1 and video["audioBytes"] > 0
    # Submit with nothing chosen is refused by the page, naming the axis, and saves nothing
    page.submit()
    assert "Visual quality: choose A better, B better or Tie" in page.warning()
    assert page.saved(task_of[tuple(shown)]) == {"annotations": 0, "cancelled": 0}

    expected = set()
    outcome = {"A better": "a", "B better": "b", "Tie": "tie", "A": "a", "B": "b"}
    for clicks in CLICKS:
        a, b = shown
        for title, value in clicks.items():
            if title == "motion":
                page.pick(value)
                expected.add((a, b, "motion", outcome[value]))
            else:
                page.choose(title, value)
                expected.add((a, b, AXIS_OF_TITLE[title], outcome[value]))
        assert page.picked() == clicks["motion"]  # the chosen clip's panel is visibly marked
        page.submit()
        shown = wait_for(lambda before=shown: (lambda now: now if now != before else None)(page.shown_clips()),
                         30, "the next task")
    page.skip()  # the third task
    skipped = task_of[tuple(shown)]
    wait_for(lambda: page.saved(skipped) == {"annotations": 0, "cancelled": 1}, 30, "the skip to be saved")

    proc = tandem(server, "pull", "--url", server.url, "--project", project, "--out", tmp_path / "pairwise.json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "exported 3 of 6 tasks" in proc.stdout and "2 annotated (2 annotations, 1 skipped), 1 only skipped" in proc.stdout
    rows, report = import_(server, tmp_path / "pairwise.json", tmp_path / "pairwise", rollouts)
    assert {(r["item_a"], r["item_b"], r["axis"], r["outcome"]) for r in rows} == expected
    assert len(rows) == len(expected) == 10
    assert report["skipped"] == {"cancelled": 1} and report["annotations"] == 2 and report["tasks"] == 3

    # the rank page: two axes, the first dragged into order by keyboard, the second left as shown
    rank_project, [rank_task] = push(server, rollouts, "--mode", "rank", "--axes", "overall,audio_quality")
    page.open(rank_project)
    shown = page.shown_clips(8)[:4]  # each axis lists the four clips
    assert shown == rank_task["data"]["tandem"]["items"]
    best_first = [shown[2], shown[0], shown[3], shown[1]]
    page.rank(0, best_first)
    page.submit()
    wait_for(lambda: page.saved(rank_task["id"])["annotations"] == 1, 30, "the ranking to be saved")
    proc = tandem(server, "pull", "--url", server.url, "--project", rank_project, "--out", tmp_path / "rank.json")
    assert "exported 1 of 1 tasks" in proc.stdout and "1 annotated (1 annotations)" in proc.stdout, proc.stdout
    rows, report = import_(server, tmp_path / "rank.json", tmp_path / "rank", rollouts)
    rank = {item: i for i, item in enumerate(best_first)}
    assert len(rows) == 6 and {r["axis"] for r in rows} == {"overall"}
    for r in rows:
        assert r["outcome"] == ("a" if rank[r["item_a"]] < rank[r["item_b"]] else "b")
    assert report["skipped"] == {"order_unchanged": 1}  # the untouched axis is no judgement


@pytest.mark.timeout(300)
def test_rank_tiers_dragged_on_the_page_import_as_ties_within_a_tier(server, rollouts, tmp_path, chromium):
    """The rank page with tiers (``Bucket``s): clips dragged into one tier are tied, tiers are
    ordered best first, and a clip left in the list is no judgement."""
    from pipelines.labelstudio_browser import Annotator, wait_for

    config = tmp_path / "tiers.yaml"
    config.write_text("mode: rank\naxes: [overall]\nrank_tiers: [great, poor]\n")
    project, [task] = push(server, rollouts, "--config", config)
    page = Annotator(chromium, server.url)
    page.login(server.creds.username, server.creds.password)
    page.open(project)
    shown = page.shown_clips(4)[:4]
    great, poor, unsorted = [shown[2], shown[0]], [shown[3]], shown[1]
    page.sort_into_tiers(0, [great, poor])
    assert [sorted(c) for c in page.tier_ids(0)] == [[unsorted], sorted(great), poor]
    page.submit()
    wait_for(lambda: page.saved(task["id"])["annotations"] == 1, 30, "the tiers to be saved")
    rows, _ = pull_and_import(server, project, tmp_path, rollouts)
    level = {**{i: 0 for i in great}, **{i: 1 for i in poor}}
    judged = {frozenset((r["item_a"], r["item_b"])): r for r in rows}
    assert set(judged) == {frozenset(p) for p in [(great[0], great[1]), (great[0], poor[0]), (great[1], poor[0])]}
    for r in rows:
        a, b = level[r["item_a"]], level[r["item_b"]]
        assert r["outcome"] == ("tie" if a == b else "a" if a < b else "b"), r


def test_serve_prints_where_to_log_in(server):
    out = server.output
    assert "(2 tasks, 4 clips)" in out and str(server.data_dir / "credentials.json") in out
    assert server.creds.password not in out and server.creds.token not in out
    project = int(out.split("/projects/")[1].split("/")[0])
    assert len(api(server, "GET", f"/api/tasks?project={project}&page_size=100")["tasks"]) == 2


@pytest.mark.timeout(300)
def test_serve_stops_on_ctrl_c(server):
    """Last in the module: it stops the shared server."""
    server.proc.send_signal(signal.SIGINT)
    assert server.proc.wait(timeout=120) == 0
    with pytest.raises(OSError):
        urllib.request.urlopen(server.url, timeout=10)
