"""``tandem pipeline run|status|ui PIPELINE.yaml``: the stages as one Dagster asset graph.

    tandem pipeline run pipeline.yaml [--address ADDR]   materialise what is stale, in process
    tandem pipeline run pipeline.yaml --submit http://HEAD:8265
                                     ... curate, latents, train, align as Ray Jobs on that cluster
    tandem pipeline status pipeline.yaml                 each asset (each batch's): fresh, stale, missing, waiting
    tandem pipeline ui pipeline.yaml [--port 3000]       Dagster's web UI on 127.0.0.1

The Dagster store (runs, materialisations, data versions, the footage batches as partitions)
lives under ``<out>/.dagster``, so the UI shows what ``run`` did. The graph and its skipping: ``pipelines/pipeline_assets.py``; the
file: ``pipelines/pipeline_spec.py``. A bad file exits 2 naming what is wrong.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from model.config import ConfigError
from pipelines.pipeline_spec import STAGES, PipelineSpec, load_spec


def open_instance(spec: PipelineSpec):
    """The pipeline's own Dagster instance (SQLite under ``spec.store``), as the UI opens it."""
    import dagster as dg

    spec.store.mkdir(parents=True, exist_ok=True)
    (spec.store / "dagster.yaml").touch()
    return dg.DagsterInstance.from_config(str(spec.store))


def register_batches(instance, spec: PipelineSpec) -> list[str]:
    """Make the footage's batches the ``footage_batches`` partitions (new ones added, gone ones
    removed), as the sensor does for Dagster's daemon; returns them, by name."""
    from pipelines.pipeline_assets import BATCHES
    from pipelines.pipeline_batches import footage_batches

    found = sorted(footage_batches(spec.footage))
    known = set(instance.get_dynamic_partitions(BATCHES.name))
    if new := [b for b in found if b not in known]:
        instance.add_dynamic_partitions(BATCHES.name, new)
    for gone in sorted(known - set(found)):
        instance.delete_dynamic_partition(BATCHES.name, gone)
    return found


def run_pipeline(spec: PipelineSpec) -> dict[str, str]:
    """Materialise every asset (unchanged ones are skipped): each footage batch's partitions
    (a Dagster run each), then the rest once, on every batch. Returns asset (``asset[batch]``
    for a partition) -> ran | skipped | waiting (for rankings, or below them) | failed | not run
    (a failed upstream stops it, a failed batch everything below the batches)."""
    import dagster as dg

    from pipelines.pipeline_assets import ASSETS, PARTITIONED, build_definitions

    defs = build_definitions(spec)
    assets = list(defs.assets)
    stages = [s for s in STAGES if s in spec.stages]
    per_batch = [dg.AssetKey(ASSETS[s][0]) for s in stages if s in PARTITIONED]
    rest = [dg.AssetKey(ASSETS[s][0]) for s in stages if s not in PARTITIONED]
    tags = {"tandem/pipeline": str(spec.path)}
    states: dict[str, str] = {}
    with open_instance(spec) as instance:
        for batch in register_batches(instance, spec):
            result = dg.materialize(assets, selection=per_batch, partition_key=batch, instance=instance,
                                    raise_on_error=False, tags=tags)
            states |= _states(result, [s for s in stages if s in PARTITIONED], f"[{batch}]", states)
        if rest and any(s.startswith("failed") or s == "not run" for s in states.values()):
            states |= {ASSETS[s][0]: "not run" for s in stages if s not in PARTITIONED}
        elif rest:
            result = dg.materialize(assets, selection=rest, instance=instance, raise_on_error=False, tags=tags)
            states |= _states(result, [s for s in stages if s not in PARTITIONED], "", states)
    return states


def _states(result, stages: list[str], batch: str, before: dict[str, str]) -> dict[str, str]:
    """What one Dagster run did to the assets of ``stages`` (named with ``batch``'s suffix)."""
    import dagster as dg

    from pipelines.pipeline_assets import ASSETS

    states = {}
    for stage in stages:
        asset = ASSETS[stage][0]
        events = [e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(asset)]
        step = next((e for e in result.all_node_events if e.step_key == asset and e.is_step_failure), None)
        if events:
            meta = events[-1].materialization.metadata
            state = "skipped" if meta["skipped"].value else "ran"
        elif step is not None:
            error = step.event_specific_data.error
            why = ((error.cause or error).message.strip().splitlines() or ["?"])[-1] if error else "?"
            state = f"failed: {why}"
        elif stage == "rankings" or any({**before, **states}.get(r) == "waiting" for r in ASSETS[stage][1]):
            state = "waiting"
        else:
            state = "not run"
        states[asset + batch] = state
    return states


def pipeline_status(spec: PipelineSpec) -> dict[str, dict]:
    """Each asset's last materialisation (each footage batch's, for clip and latent shards),
    and whether the config or inputs changed since: fresh, stale (and why), missing, or
    waiting (rankings without an export). The batches are the footage's, as a run would find them."""
    from pipelines.pipeline_assets import (
        ASSETS,
        PARTITIONED,
        all_batches,
        curate_upstream,
        last_value,
    )
    from pipelines.pipeline_batches import footage_batches

    batches = sorted(footage_batches(spec.footage))
    rows: dict[str, dict] = {}
    with open_instance(spec) as instance:
        values: dict[str, dict | None] = {}
        for stage in (s for s in STAGES if s in spec.stages):
            asset, reads = ASSETS[stage]
            for batch in batches if stage in PARTITIONED else [None]:
                key = f"{asset}[{batch}]" if batch else asset
                last = values[key] = last_value(instance, asset, batch)
                why = "upstream not materialised"
                if stage == "curate":
                    upstream = curate_upstream(spec, batch)
                elif stage == "train":
                    latents = {b: values[f"{reads[0]}[{b}]"] for b in batches}
                    missing = [b for b, v in latents.items() if v is None]
                    upstream = None if missing else {reads[0]: all_batches(latents)}
                    why = f"no latent shards yet of footage batch {', '.join(missing)}"
                else:
                    upstream = {r: values[f"{r}[{batch}]" if batch else r] for r in reads}
                    upstream = None if None in upstream.values() else upstream
                rows[key] = _status_row(spec, stage, last, upstream, why)
    return rows


def _status_row(spec: PipelineSpec, stage: str, last: dict | None, upstream: dict | None, why: str) -> dict:
    from pipelines.config_loader import output_hash
    from pipelines.pipeline_assets import data_version, exports_of, input_digests

    waiting = stage == "rankings" and not exports_of(spec)
    if upstream is None:
        return {"state": ("waiting" if waiting else "missing") if last is None else "stale", "why": why}
    now = data_version(stage, output_hash(spec.config(stage)), input_digests(spec, stage, upstream))
    if last is None:
        return {"state": "waiting" if waiting else "missing"}
    if last["data_version"] != now:
        return {"state": "stale", "why": "its config or inputs changed", "data_version": last["data_version"]}
    return {"state": "fresh", "data_version": now, "path": last["path"], "mlflow_run_id": last.get("run_id")}


def add_parsers(subparsers) -> None:
    p = subparsers.add_parser("pipeline", help="every stage as one Dagster asset graph: run what is stale, status, UI")
    sub = p.add_subparsers(dest="pipeline_command", metavar="SUBCOMMAND")
    run = sub.add_parser("run", help="materialise the stale assets of PIPELINE.yaml (unchanged ones are skipped)")
    run.add_argument("file", metavar="PIPELINE.yaml")
    where = run.add_mutually_exclusive_group()
    where.add_argument("--address", help="Ray cluster address for every stage (default: local Ray)")
    where.add_argument("--submit", metavar="DASHBOARD", help="run curate, latents, train and align as Ray Jobs "
                       "(tandem submit) on this dashboard, e.g. http://HEAD:8265; `out` must be a folder the "
                       "cluster shares")
    run.set_defaults(handler=_guard(run_handler))
    status = sub.add_parser("status", help="each asset's state (each footage batch's): fresh, stale, missing, waiting")
    status.add_argument("file", metavar="PIPELINE.yaml")
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=_guard(status_handler))
    ui = sub.add_parser("ui", help="Dagster's web UI on 127.0.0.1, on the pipeline's store")
    ui.add_argument("file", metavar="PIPELINE.yaml")
    ui.add_argument("--port", type=int, default=3000)
    ui.set_defaults(handler=_guard(ui_handler))
    p.set_defaults(handler=lambda args: (p.print_help(), 2)[1])


def _guard(fn):
    def handler(args) -> int:
        try:
            return fn(args, load_spec(args.file))
        except ConfigError as exc:
            print(f"tandem pipeline {args.pipeline_command}: {exc}", file=sys.stderr)
            return 2
    return handler


def run_handler(args, spec: PipelineSpec) -> int:
    spec.address, spec.submit = args.address, args.submit
    states = run_pipeline(spec)
    for asset, state in states.items():
        print(f"  {asset:<26} {state}")  # (a failed asset: its error's last line)
    print(f"Dagster store: {spec.store} (`tandem pipeline ui {args.file}`)")
    failed = any(s.startswith("failed") or s == "not run" for s in states.values())
    if failed:
        print("a failed stage stopped what is below it; fix the cause and run again: what is done is skipped")
    return 1 if failed else 0


def status_handler(args, spec: PipelineSpec) -> int:
    rows = pipeline_status(spec)
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        for asset, row in rows.items():
            print(f"  {asset:<26} {row['state']:<8} {row.get('why', row.get('path', ''))}")
    return 0


def ui_command(spec: PipelineSpec, port: int) -> tuple[list[str], dict[str, str]]:
    """The webserver's command line and environment: 127.0.0.1 only, the pipeline's store."""
    exe = Path(sys.executable).parent / "dagster-webserver"
    env = dict(os.environ, DAGSTER_HOME=str(spec.store), TANDEM_PIPELINE=str(spec.path.absolute()))
    return [str(exe), "-h", "127.0.0.1", "-p", str(port), "-m", "pipelines.dagster_defs"], env


def ui_handler(args, spec: PipelineSpec) -> int:
    open_instance(spec).dispose()
    cmd, env = ui_command(spec, args.port)
    print(f"Dagster UI: http://127.0.0.1:{args.port} (store {spec.store}); Ctrl-C stops it", flush=True)
    try:
        return subprocess.run(cmd, env=env, cwd=Path(__file__).resolve().parents[1]).returncode
    except KeyboardInterrupt:
        return 0
