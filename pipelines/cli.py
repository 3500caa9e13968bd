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
RUN_NAME_HELP = "MLflow run name (default: the command, its recipe, inputs and overrides)"
# Overrides that say where a run's outputs and records go, not what it is: left out of its name.
WHERE_KEYS = ("storage", "tracking_dir")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tandem", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Run `tandem COMMAND --help` for a command's options.")
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO (default), WARNING")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser("demo", help="run the main job on embedded defaults (local Ray, local MLflow, sample footage)")
    demo.add_argument("--out", default="runs/demo", help="output directory (default: runs/demo)")
    demo.add_argument("--address", default=None, help="Ray address (default: start a local instance)")
    demo.add_argument("--no-train", action="store_true", help="stop after curation")

    curate = sub.add_parser("curate", help="curate raw footage into clip shards")
    curate.add_argument("inputs", nargs="*", metavar="INPUT",
                        help="files, directories, globs or fsspec URIs; then key=value config overrides "
                             "(e.g. shots.max_clip_s=8 sync.policy=reject)")
    curate.add_argument("--out", help="output directory for shards, manifest, rejects and report")
    curate.add_argument("--config", help="curation config YAML (see pipelines/curate.py CurationConfig)")
    curate.add_argument("--address", help="Ray cluster address (default: start local Ray)")
    curate.add_argument("--run-name", help=RUN_NAME_HELP)

    latents = sub.add_parser("latents", help="encode clip shards into latent shards (VAEs + text encoder)")
    latents.add_argument("clip_dir", metavar="CLIP_SHARDS_DIR",
                         help="clip shards (*.tar): a `tandem curate --out` directory or its shards/")
    latents.add_argument("overrides", nargs="*", metavar="key=value",
                         help="config overrides (e.g. buckets.fps=12 encoder.video=ltx2 "
                              "encoder.video_path=/models/ltx2/vae actors=4)")
    latents.add_argument("--out", required=True, help="output directory for latent shards, manifest, stats")
    latents.add_argument("--config", help="latents recipe (debug, 1b_ltx2, ...: pipelines/recipes/latents_*.yaml) "
                                          "or YAML path (pipelines/latents_cmd.py LatentsConfig)")
    latents.add_argument("--address", help="Ray cluster address (default: start local Ray)")
    latents.add_argument("--run-name", help=RUN_NAME_HELP)

    from pipelines.train_cmd import add_parsers as add_train_and_submit

    add_train_and_submit(sub)
    from pipelines.generate_cmd import add_parsers as add_generate

    add_generate(sub)
    from pipelines.annotate import add_parsers as add_annotate

    add_annotate(sub)
    from pipelines.align_cmd import add_parsers as add_align

    add_align(sub)

    from pipelines.reward_cmd import add_parsers as add_reward

    add_reward(sub)
    from pipelines.ui import add_parsers as add_ui

    add_ui(sub)
    from pipelines.lineage import add_parsers as add_lineage

    add_lineage(sub)
    from pipelines.pipeline_cmd import add_parsers as add_pipeline

    add_pipeline(sub)
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
    if args.command == "demo":
        from pipelines.demo import run_demo

        return run_demo(out=args.out, address=args.address, train=not args.no_train)
    if args.command == "curate":
        from pipelines.curate import main as curate_main

        return curate_main(args)
    if args.command == "latents":
        from pipelines.latents_cmd import main as latents_main

        return latents_main(args)
    if hasattr(args, "handler"):
        return args.handler(args)
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
