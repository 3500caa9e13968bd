"""The ``tandem`` command line.

    tandem demo   [--out runs/demo]            the README's main job on embedded defaults
    tandem curate INPUT... --out DIR [...]     raw footage -> clip shards (Ray Data)
    tandem latents CLIPS --out DIR [...]       clip shards -> latent shards (Ray Data, VAE actors)
    tandem train  --config RECIPE [...]        DeepSpeed ZeRO training on Ray Train
    tandem submit {train,curate,...} [...]     the same, as a Ray Job on a cluster
    tandem generate CHECKPOINT --prompts F --out DIR   rollouts: K audio-video samples per prompt
    tandem annotate {tasks,serve,push,pull,import,leaderboard}   human rankings with Label Studio
    tandem reward train|score [...]            the reward model: train on rankings, score clips
    tandem align  --config RECIPE [...]        DanceGRPO alignment against reward sources
    tandem ui     [--port 5000]                the MLflow UI on the runs of every command
    tandem lineage RUN_ID|models:/NAME/VERSION [--json]   what a run or model was made from
    tandem pipeline run|status|ui PIPELINE.yaml   the stages as a Dagster asset graph (unchanged: skipped)

Every command that makes an MLflow run logs it to one store, ``runs/mlruns.db`` of the
working directory (or ``MLFLOW_TRACKING_URI``), named for what it is unless ``--run-name``.

Exit codes: 0 done; 1 the work failed (or left inputs for a re-run); 2 a setting, input or
address to change: a one-line message says which (never a traceback), before any cluster
work starts where it can be checked. A Ray address nothing answers on is such a setting (2).
"""

from __future__ import annotations

import argparse
import sys

from curation.jit_cache import use_project_cache
from model.config import ConfigError
from pipelines.ray_local import cluster_address

TRAILING = ("inputs", "overrides", "args")  # a command's list of trailing positionals
# Overrides that say where a run's outputs and records go, not what it is: left out of its name.
WHERE_KEYS = ("storage", "tracking_dir")


def build_parser() -> argparse.ArgumentParser:
    """Every command registers itself the same way: its module's ``add_parsers(subparsers)``
    adds its parser(s), each with a ``handler`` default that takes the parsed args and
    returns the exit code."""
    from pipelines import (
        align_cmd,
        annotate,
        curate,
        demo,
        generate_cmd,
        latents_cmd,
        lineage,
        pipeline_cmd,
        reward_cmd,
        submit,
        train_cmd,
        ui,
    )

    parser = argparse.ArgumentParser(prog="tandem", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Run `tandem COMMAND --help` for a command's options.")
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO (default), WARNING")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in (demo, curate, latents_cmd, train_cmd, submit, generate_cmd, annotate, align_cmd, reward_cmd, ui,
                    lineage, pipeline_cmd):
        command.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from pipelines.logs import setup_logging

    parser = build_parser()
    # parse_known_args: positionals given after an option (``--out DIR a=1``) come back
    # as extras; they belong to the command's trailing list (inputs / overrides / args).
    args, extra = parser.parse_known_args(argv)
    trailing = next((getattr(args, d) for d in TRAILING if isinstance(getattr(args, d, None), list)), None)
    if extra and (trailing is None or any(e.startswith("-") for e in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        trailing += extra
    if hasattr(args, "run_name") and not args.run_name:
        args.run_name = default_run_name(args)
    setup_logging(args.log_level)
    use_project_cache()  # before anything imports librosa, here or in the processes this one starts
    try:
        return _dispatch(parser, args)
    except ConfigError as exc:  # a setting or input to change: its message says which
        print(f"tandem {args.command}: {exc}", file=sys.stderr)
        return 2
    except ConnectionError as exc:  # an --address (or RAY_ADDRESS) nothing answers on
        address = cluster_address(getattr(args, "address", None))
        print(f"tandem {args.command}: {unreachable(address, exc)}", file=sys.stderr)
        return 2 if address else 1


def default_run_name(args) -> str:
    """What the run is, as typed: ``curate footage/ shots.max_clip_s=4``, ``train debug_cpu
    engine.lr=1e-3``, ``latents 1b_ltx2 curated/shards actors=4`` (pipelines.tracking.describe_run)."""
    from pipelines.tracking import describe_run

    words = [getattr(args, "reward_command", None), getattr(args, "config", None)]
    for name in ("clip_dir", "checkpoint", "inputs", "overrides"):
        value = getattr(args, name, None)
        words += value if isinstance(value, list) else [value]
    return describe_run(args.command, *(w for w in words if not (w and w.partition("=")[0] in WHERE_KEYS)))


def unreachable(address: str | None, exc: Exception) -> str:
    """One line for a connection that failed: naming the Ray address when there is one."""
    first = (str(exc).strip() or type(exc).__name__).splitlines()[0]
    if not address:
        return f"a connection failed ({first})"
    why = first if address in first else f"{address}: {first}"
    return f"cannot reach the Ray cluster, {why}: check the address and that the cluster is up (`ray status` on its head)"


def _dispatch(parser: argparse.ArgumentParser, args) -> int:
    if args.command is None:
        parser.print_help()
        return 2
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
