"""``tandem annotate``: rollouts -> Label Studio -> rankings.parquet -> a human leaderboard.

    tandem annotate tasks ROLLOUTS... --out DIR [--mode pairwise|rank] [--pairs all|N] [key=value ...]
    tandem annotate serve ROLLOUTS... [--data-dir runs/labelstudio] [--port P] [...]
    tandem annotate push ROLLOUTS... --url URL [...]          (token: LABEL_STUDIO_API_KEY)
    tandem annotate pull --url URL --project ID --out EXPORT.json
    tandem annotate import EXPORT.json... --out RANKINGS_DIR [--rollouts DIR...] [--tasks DIR]
    tandem annotate leaderboard RANKINGS_DIR [--by checkpoint] [--out FILE.csv]

``tasks`` writes the labeling config and the tasks (reward/annotation/labelstudio_tasks.py).
``serve`` starts a Label Studio on 127.0.0.1 (its own venv, installed on first use), creates the
project with the media served from local files, prints the URL and where the login is kept, and runs
until Ctrl-C. ``push``/``pull`` do the same against a team's server. ``import`` validates the
exports (reward/annotation/labelstudio_exports.py) and writes ``rankings.parquet``,
``agreement.json`` and ``import.json``; ``leaderboard`` fits Bradley-Terry-with-ties scores per axis
with bootstrap intervals.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

from pipelines.config_loader import ConfigError, load_config
from reward.annotation.labelstudio_tasks import (
    AnnotationConfig,
    default_media_root,
    label_config,
    make_tasks,
    write_tasks,
)

IMPORT_EXPERIMENT = "tandem-annotate"  # MLflow experiment of `annotate import` runs


def _annotation_config(args) -> AnnotationConfig:
    overrides = list(args.overrides)
    if args.mode:
        overrides.append(f"mode={args.mode}")
    if args.pairs:
        overrides.append(f"pairs='{args.pairs}'")
    if args.axes:
        overrides.append(f"axes=[{args.axes}]")
    cfg = load_config(AnnotationConfig, args.config, overrides)
    cfg.pairs = str(cfg.pairs)
    cfg.check()
    return cfg


def _split(args) -> tuple[list[str], list[str]]:
    """Positionals are rollout directories, then key=value overrides."""
    dirs = [a for a in args.inputs if "=" not in a]
    return dirs, [a for a in args.inputs if "=" in a]


def _tasks_for(args, media_root: Path | None = None):
    from reward.rollouts.rollout_dir import read_rollouts

    dirs, args.overrides = _split(args)
    if not dirs:
        raise ConfigError("name at least one rollouts directory (made by `tandem generate`)")
    cfg = _annotation_config(args)
    rollouts = read_rollouts(*dirs)
    if media_root is not None:
        cfg.media_root = str(media_root)
    return cfg, rollouts, make_tasks(rollouts, cfg)


def cmd_tasks(args) -> int:
    cfg, rollouts, tasks = _tasks_for(args)
    paths = write_tasks(args.out, cfg, tasks)
    print(f"annotate tasks: {len(tasks)} {cfg.mode} tasks over {len(rollouts)} clips, axes "
          f"{', '.join(cfg.resolved_axes())} (config {cfg.digest()})\n"
          f"  label config: {paths['xml']}\n  tasks:        {paths['tasks']}")
    return 0


def _project_request(cfg: AnnotationConfig, tasks: list[dict], title: str | None, media_folder: Path | None) -> dict:
    return {"op": "setup", "title": title or f"tandem {cfg.mode} {cfg.digest()}", "label_config": label_config(cfg),
            "tasks": tasks, "media_folder": str(media_folder) if media_folder else None,
            "description": f"tandem annotation config {cfg.digest()}: axes {', '.join(cfg.resolved_axes())}"}


def cmd_serve(args) -> int:
    import signal
    import time

    from pipelines.labelstudio_server import LabelStudioServer
    from reward.rollouts.rollout_dir import read_rollouts

    dirs, _ = _split(args)
    root = default_media_root(read_rollouts(*dirs)) if dirs else None
    cfg, rollouts, tasks = _tasks_for(args, media_root=root)
    data_dir = Path(args.data_dir)
    write_tasks(data_dir / "tasks", cfg, tasks)
    with LabelStudioServer(data_dir, root, port=args.port) as server:
        from reward.annotation.labelstudio_tasks import common_root

        project = server.op(_project_request(cfg, tasks, args.title, common_root(rollouts)))["project"]
        print(f"Label Studio: {server.url}/projects/{project}/data  ({len(tasks)} tasks, {len(rollouts)} clips)\n"
              f"  log in as {server.creds.username}; password and API token: "
              f"{'LABEL_STUDIO_PASSWORD / LABEL_STUDIO_API_KEY' if server.creds.source == 'environment' else server.creds.source}\n"
              f"  export when done: tandem annotate pull --url {server.url} --project {project} --out export.json\n"
              f"  (LABEL_STUDIO_API_KEY=the token above)  Ctrl-C stops the server; its data stays in {data_dir}",
              flush=True)
        # Ctrl-C or a plain kill stops the server too (it runs in its own session)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        try:
            while server.proc.poll() is None:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
    return 0


def _remote(url: str):
    from pipelines.labelstudio_server import install

    token = os.environ.get("LABEL_STUDIO_API_KEY")
    if not token:
        raise ConfigError("set LABEL_STUDIO_API_KEY to your Label Studio access token (Account & Settings)")
    return install(), token


def cmd_push(args) -> int:
    from pipelines.labelstudio_server import run_op

    cfg, rollouts, tasks = _tasks_for(args)
    venv, token = _remote(args.url)
    local = not cfg.media_url  # media served by that server's local-files route, from below media_root
    from reward.annotation.labelstudio_tasks import common_root

    answer = run_op(venv, args.url, token, _project_request(cfg, tasks, args.title,
                                                            common_root(rollouts) if local else None))
    print(f"pushed {len(tasks)} tasks: {args.url.rstrip('/')}/projects/{answer['project']}/data")
    return 0


def cmd_pull(args) -> int:
    from pipelines.labelstudio_server import run_op

    venv, token = _remote(args.url)
    out = Path(args.out).absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    answer = run_op(venv, args.url, token, {"op": "export", "project": args.project, "out": str(out)})
    print(pull_summary(answer, args.project, out))
    return 0


def pull_summary(answer: dict, project: int, out: Path) -> str:
    """What ``pull`` exported, tasks and annotations counted apart; plain when nothing is annotated yet."""
    n, total = answer["annotated"], answer["total"]
    if not answer["tasks"]:
        return f"no annotations yet: 0 of {total} tasks annotated in project {project} ({out} holds an empty export)"
    skips = f", {answer['cancelled']} skipped" if answer["cancelled"] else ""
    line = (f"exported {answer['tasks']} of {total} tasks of project {project} to {out}: {n} annotated "
            f"({answer['annotations']} annotations{skips})")
    if answer["skipped_only"]:
        line += f", {answer['skipped_only']} only skipped"
    if n == 0:
        line = f"no annotations yet: 0 of {total} tasks annotated ({answer['cancelled']} skipped)\n  " + line
    return line


SKIPPED = {"cancelled": "skipped by the annotator", "empty": "submitted with no answer",
           "unanswered_axis": "axes left unanswered", "order_unchanged": "rankings left in the order shown"}


def cmd_import(args) -> int:
    from reward.annotation.agreement import agreement_report
    from reward.annotation.labelstudio_exports import import_exports, load_export
    from reward.annotation.labelstudio_tasks import read_tasks
    from reward.annotation.rankings import write_rankings
    from reward.rollouts.rollout_dir import read_rollouts

    exports = {str(p): load_export(p) for p in args.exports}
    known = {r.sample_id for r in read_rollouts(*args.rollouts)} if args.rollouts else None
    expected = None
    if args.tasks:
        cfg, tasks = read_tasks(args.tasks)
        expected = cfg.digest()
        if known is None:
            known = {i for t in tasks for i in t["data"]["tandem"]["items"]}
    result = import_exports(exports, known_items=known, expected_config=expected)
    if not result.rows:
        print("tandem annotate import: the exports hold no judgement "
              f"({result.tasks} tasks; skipped: {dict(result.skipped) or 'none'}); nothing written")
        return 1
    out = Path(args.out)
    report = agreement_report(result.rows)
    path = write_rankings(result.rows, out)  # validated again, written atomically
    (out / "agreement.json").write_text(json.dumps(report, indent=1))
    (out / "import.json").write_text(json.dumps({
        "exports": {p: hashlib.sha256(Path(p).read_bytes()).hexdigest()[:16] for p in exports},
        "annotation_config": result.config, "schema": result.schema, "tasks": result.tasks,
        "annotations": result.annotations, "judgements": len(result.rows), "skipped": dict(result.skipped),
        "rollouts": [str(Path(d).absolute()) for d in args.rollouts]}, indent=1))
    run_id = _track_import(args, out, path, result)
    print(f"imported {len(result.rows)} judgements from {result.annotations} annotations of {result.tasks} tasks "
          f"into {path}\n  skipped: " + (", ".join(f"{k}={v} ({SKIPPED.get(k, k)})" for k, v in
                                                  sorted(result.skipped.items())) or "none"))
    print(f"  {'axis':<18} {'judgements':>10} {'pairs 2+':>8} {'agreement':>9} {'alpha':>6}")
    def num(x, width):
        return f"{'-':>{width}}" if x is None else f"{x:>{width}.3f}"

    for axis, r in report.items():
        print(f"  {axis:<18} {r['judgements']:>10} {r['pairs_judged_twice_or_more']:>8} "
              f"{num(r['pairwise_agreement'], 9)} {num(r['krippendorff_alpha'], 6)}")
    print(f"  MLflow: run {run_id} (experiment {IMPORT_EXPERIMENT!r})")
    return 0


def import_rankings(exports: list[str], out: str | Path, *, tasks: str | None = None,
                    rollouts: list[str] = ()) -> int:
    """``tandem annotate import`` called from Python (the pipeline's rankings stage): the same
    checks, outputs, messages and exit code."""
    args = argparse.Namespace(annotate_command="import", exports=list(exports), out=str(out), tasks=tasks,
                              rollouts=list(rollouts))
    return _guard(cmd_import)(args)


def _track_import(args, out: Path, rankings: Path, result) -> str:
    """One MLflow run per import: the exports and rollouts in, the rankings out (lineage)."""
    from pipelines.lineage import Data, file_sha256, record, rollouts_digest
    from pipelines.tracking import describe_run, open_tracker

    with open_tracker(IMPORT_EXPERIMENT, describe_run("annotate import", *args.exports)) as tracker:
        tracker.log_metrics({"judgements": len(result.rows), "tasks": result.tasks, "annotations": result.annotations})
        tracker.log_artifact(out / "import.json")
        tracker.log_artifact(out / "agreement.json")
        inputs = [Data("annotation-export", str(Path(p).absolute()), file_sha256(p)[:16]) for p in args.exports]
        inputs += [Data("rollouts", str(Path(d).absolute()), rollouts_digest(d)) for d in args.rollouts]
        record(tracker, "annotate import", str(result.config or "none"), inputs,
               [Data("rankings", str(out.absolute()), file_sha256(rankings)[:16])])
    return tracker.run_id


def item_values(rollout_dirs: list[str], field: str) -> dict[str, str]:
    """sample id -> the rollout json's ``field`` (dotted for nested fields; ``checkpoint`` is the
    checkpoint's registered name@version, else its path)."""
    from reward.rollouts.rollout_dir import read_rollouts

    out = {}
    for r in read_rollouts(*rollout_dirs):
        if field == "checkpoint" and isinstance(r.meta.get("checkpoint"), dict):
            c = r.meta["checkpoint"]
            out[r.sample_id] = f"{c['model']}@v{c['version']}" if c.get("model") else c.get("path", c.get("digest"))
            continue
        value = r.meta
        for part in field.split("."):
            if not isinstance(value, dict) or part not in value:
                raise ConfigError(f"--by {field}: sample {r.sample_id}'s json has no {field!r}")
            value = value[part]
        out[r.sample_id] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return out


def cmd_leaderboard(args) -> int:
    from reward.annotation.leaderboard import format_table, leaderboard, write_csv
    from reward.annotation.rankings import read_rankings

    rows = read_rankings(args.rankings)
    by = None
    if args.by:
        dirs = args.rollouts
        meta = Path(args.rankings) / "import.json"
        if not dirs and meta.is_file():
            dirs = json.loads(meta.read_text()).get("rollouts") or []
        if not dirs:
            raise ConfigError("--by needs the rollouts the items came from: pass --rollouts DIR...")
        by = item_values(dirs, args.by)
    fits = leaderboard(rows, axes=args.axes.split(",") if args.axes else None, by=by,
                       bootstrap=args.bootstrap, seed=args.seed)
    print(format_table(fits))
    if args.out:
        print(f"written: {write_csv(fits, args.out)}")
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser("annotate", help="human rankings: Label Studio tasks, server, export import, leaderboard")
    cmds = p.add_subparsers(dest="annotate_command", metavar="SUBCOMMAND", required=True)

    def task_options(q, positional_help):
        q.add_argument("inputs", nargs="*", metavar="ROLLOUTS", help=positional_help)
        q.add_argument("--mode", choices=["pairwise", "rank"], help="pairwise (default) or rank")
        q.add_argument("--pairs", help="pairwise: 'all' (default) or N pairs per prompt, every clip shown")
        q.add_argument("--axes", help="comma-separated axes (default: visual_quality,motion,audio_quality,"
                                      "av_sync,prompt_alignment; rank: overall)")
        q.add_argument("--config", help="annotation config YAML (reward/annotation/labelstudio_tasks.py AnnotationConfig)")
        q.set_defaults(overrides=[])

    help_dirs = "rollouts directories (tandem generate --out), then key=value overrides"
    q = cmds.add_parser("tasks", help="write the labeling config and the tasks")
    task_options(q, help_dirs)
    q.add_argument("--out", required=True, help="output directory")
    q.set_defaults(handler=_guard(cmd_tasks))
    q = cmds.add_parser("serve", help="start Label Studio on 127.0.0.1 with a project of these rollouts")
    task_options(q, help_dirs)
    q.add_argument("--data-dir", default="runs/labelstudio", help="Label Studio's data (default runs/labelstudio)")
    q.add_argument("--port", type=int, help="default: a free port")
    q.add_argument("--title", help="project title")
    q.set_defaults(handler=_guard(cmd_serve))
    q = cmds.add_parser("push", help="create the project on an existing server (token: LABEL_STUDIO_API_KEY)")
    task_options(q, help_dirs + " (media_root=/media_url= say how that server reaches the clips)")
    q.add_argument("--url", required=True)
    q.add_argument("--title", help="project title")
    q.set_defaults(handler=_guard(cmd_push))
    q = cmds.add_parser("pull", help="export a project's annotations as JSON (token: LABEL_STUDIO_API_KEY)")
    q.add_argument("--url", required=True)
    q.add_argument("--project", type=int, required=True)
    q.add_argument("--out", required=True, help="EXPORT.json")
    q.set_defaults(handler=_guard(cmd_pull))
    q = cmds.add_parser("import", help="Label Studio JSON exports -> RANKINGS_DIR/rankings.parquet")
    q.add_argument("exports", nargs="+", metavar="EXPORT.json")
    q.add_argument("--out", required=True, metavar="RANKINGS_DIR")
    q.add_argument("--rollouts", nargs="*", default=[], metavar="DIR", help="check item ids against these rollouts")
    q.add_argument("--tasks", help="the `annotate tasks` directory: check the exports were made with its config")
    q.set_defaults(handler=_guard(cmd_import))
    q = cmds.add_parser("leaderboard", help="Bradley-Terry-with-ties scores per axis with bootstrap intervals")
    q.add_argument("rankings", metavar="RANKINGS_DIR")
    q.add_argument("--by", help="rank a rollout json field instead of samples, e.g. checkpoint")
    q.add_argument("--rollouts", nargs="*", default=[], metavar="DIR",
                   help="rollouts for --by (default: those recorded at import)")
    q.add_argument("--out", metavar="FILE.csv", help="write item, axis, score, ci_low, ci_high")
    q.add_argument("--axes", help="comma-separated axes (default: all)")
    q.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples for the intervals (0: none)")
    q.add_argument("--seed", type=int, default=0)
    q.set_defaults(handler=_guard(cmd_leaderboard))


def _guard(fn):
    """Problems with the input exit 2 with the message, no traceback."""
    def run(args) -> int:
        from pipelines.labelstudio_server import LabelStudioError
        from reward.annotation.labelstudio_exports import ExportError
        from reward.annotation.leaderboard import LeaderboardError
        from reward.annotation.rankings import RankingsError
        from reward.rollouts.rollout_dir import RolloutsError

        try:
            return fn(args)
        except (ConfigError, ExportError, RankingsError, RolloutsError, LeaderboardError, LabelStudioError) as exc:
            print(f"tandem annotate {args.annotate_command}: {exc}", file=sys.stderr, flush=True)
            return 2
    return run
