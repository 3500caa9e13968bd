"""``tandem curate``: raw footage -> clip shards, the pipeline of ``curation/pipeline.py``
executed on Ray Data and tracked in MLflow.

    tandem curate RAW... --out shards/ [--config curate.yaml] [key=value ...] [--address ADDR]

The driver lists the inputs (names, sizes, content ids), plans work units
(``curation/units.py``: a source, or a batch of small ones) and hands them to Ray
(``pipelines/ray_adapter.py``). Workers fetch, hash and process their units and write
each unit's shards and record to ``--out`` (a directory or an fsspec URI); the driver
never reads a clip. At the end it merges the units' small tables into the manifest, the
rejects table, ``stats.json`` and the report (``curation/tables.py``), and logs the run
to MLflow.

Resume, exactly once: a unit is done once its record exists, and its id names the
content of its sources, so a file only touched is still done and one whose bytes changed
is a new unit (its old unit's shards are removed at the end). A re-run skips finished
units and processes the rest from scratch; keys come from content hashes and frame
ranges and shards from sorted keys, so a run that was killed and resumed ends with
exactly the shards of an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from curation.storage import Store
from curation.units import UNITS
from pipelines.config_loader import ConfigError, add_run_arguments, output_hash, to_dict
from pipelines.discover import discover

if TYPE_CHECKING:  # the stages import scipy, OpenCV and PyAV: not for `tandem --help`
    from curation.pipeline import CurationConfig

log = logging.getLogger(__name__)
CONTENT_IDS = ".work/content_ids.json"  # the inputs' content ids, by stat (pipelines/fingerprints.py)
CONFIG_MARKER = ".work/config_hash"  # output_hash of the config the finished units were made under


@dataclass
class CurationResult:
    out_dir: str  # a local directory or a URI
    manifest: list[dict[str, Any]]
    rejects: list[dict[str, Any]]
    stats: dict[str, Any]
    report: str | None = None
    mlflow_run_id: str | None = None
    tracking_uri: str | None = None


def _claim_output(store: Store, cfg: CurationConfig) -> None:
    """Resume only under the config that produced the finished units: results made with
    other thresholds or models would silently mix into the output."""
    if claimed_by_other_config(store, cfg):
        raise ConfigError(f"{store.uri} holds a run with a different config (see its config.yaml): "
                          "use another --out, or delete it to start over")
    store.write_text(CONFIG_MARKER, output_hash(cfg))


def claimed_by_other_config(store: Store, cfg: CurationConfig) -> bool:
    """Whether ``store`` holds finished units made under another config than ``cfg``."""
    return bool(store.list(UNITS)) and store.exists(CONFIG_MARKER) \
        and store.read_text(CONFIG_MARKER).strip() != output_hash(cfg)


def run_curation(inputs: list[str], out_dir: str | Path, cfg: CurationConfig | None = None,
                 address: str | None = None, in_process: bool = False, run_name: str | None = None) -> CurationResult:
    """Curate ``inputs`` into ``out_dir`` on Ray (``in_process``: in this process, no Ray),
    in one MLflow run (``run_name``, by default ``curate INPUT...``) from start to end."""
    import yaml

    from curation.pipeline import PIPELINE_VERSION, CurationConfig, build_stages
    from curation.tables import merge_units, report
    from curation.units import plan_units
    from pipelines.tracking import describe_run, open_tracker

    cfg = cfg or CurationConfig()
    started = time.time()
    build_stages(cfg, Path("."), preflight=True)  # a misconfigured stage fails here, before any work
    store = Store(out_dir)
    remembered = json.loads(store.read_text(CONTENT_IDS)) if store.exists(CONTENT_IDS) else {}
    files = discover(inputs, remembered)  # an input that matches nothing: nothing is written
    _claim_output(store, cfg)
    store.write_text("config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))
    store.write_text(CONTENT_IDS, json.dumps(remembered))
    units = plan_units(files, cfg.units)  # unit ids name their sources' content
    done = {name.removesuffix(".json") for name in store.list(UNITS)}
    todo = [u for u in units if u["id"] not in done]
    log.info("%d input files in %d work units (%d already done)", len(files), len(units), len(units) - len(todo))
    start_ray = None
    if todo and not in_process:
        from pipelines.ray_local import check_reachable, cluster_address, init_ray

        if cluster_address(address):  # an address nothing answers on is a setting to change: no run for it
            check_reachable(cluster_address(address))
        start_ray = functools.partial(init_ray, address)
    # The run covers the whole command from its start; it ends FAILED if the work raises.
    opened = _open_beside(functools.partial(open_tracker, cfg.experiment, run_name or describe_run("curate", *inputs),
                                            enabled=cfg.track, start_time=started, system_metrics=True), start_ray)
    with opened as tracker:
        tracker.log_params(to_dict(cfg))
        tracker.set_tags({"pipeline.version": PIPELINE_VERSION, "pipeline.config_hash": output_hash(cfg)})
        if todo:
            progress = _Progress(todo, len(files))
            if in_process:
                from curation.pipeline import run_here

                run_here(todo, cfg, store, progress)
            else:
                from pipelines.ray_adapter import run_units

                run_units(todo, cfg, store, progress)
        result = CurationResult(store.uri, *merge_units(store, units, len(files), time.time() - started))
        result.stats["sources_processed"] = sum(len(u["sources"]) for u in todo)  # the rest were done earlier
        store.write_text("stats.json", json.dumps(result.stats, indent=2))
        result.report = report(store, result.manifest, result.rejects, result.stats)
        if cfg.track:
            _track(tracker, result, cfg, store)
            _record_lineage(tracker, files, store, cfg)
    return result


def _record_lineage(tracker, files: list[dict], store: Store, cfg: CurationConfig) -> None:
    """Footage in (each file's content id), clip shards out (the manifest's sha256, the
    identity the latent DAG records as ``source_manifest_sha256``)."""
    import hashlib

    from pipelines.lineage import Data, footage_digest, record

    manifest = next((n for n in ("manifest.parquet", "manifest.csv") if store.exists(n)), None)
    outputs = [Data("clip-shards", store.path("shards"), hashlib.sha256(store.read_bytes(manifest)).hexdigest())] \
        if manifest else []
    footage = Data("footage", ", ".join(sorted({f["path"].rsplit("/", 1)[0] for f in files})), footage_digest(files))
    record(tracker, "curate", output_hash(cfg), [footage], outputs, footage=files)


def _open_beside(open_run: Callable[[], Any], start_ray: Callable[[], Any] | None):
    """``open_run()`` (the MLflow run: its import, store and first writes, seconds) in a
    thread while ``start_ray()`` starts or joins Ray here (seconds too): neither waits for
    the other. Should Ray fail, the run that was opened ends FAILED with the error."""
    if start_ray is None:
        return open_run()
    with ThreadPoolExecutor(1, thread_name_prefix="open-mlflow-run") as pool:
        opening = pool.submit(open_run)
        try:
            start_ray()
        except BaseException as exc:
            with contextlib.suppress(Exception):
                opening.result().__exit__(type(exc), exc, exc.__traceback__)
            raise
        return opening.result()


class _Progress:
    """One log line per finished unit (its sources, what became of their clips)."""

    def __init__(self, units: list[dict], n_files: int):
        self.total, self.count, self.sources = len(units), 0, sum(len(u["sources"]) for u in units)
        self.sources_done = 0

    def __call__(self, summary: dict) -> None:
        self.count += 1
        self.sources_done += len(summary["sources"])
        names = ", ".join(Path(p).name for p in summary["sources"][:3]) + (" ..." if len(summary["sources"]) > 3 else "")
        reasons = ", ".join(f"{r}={n}" for r, n in sorted(summary["reasons"].items()))
        log.info("[%d/%d units, %d/%d sources] %s: %d clips kept, %d rejected%s (%.1f s)", self.count, self.total,
                 self.sources_done, self.sources, names, summary["kept"], summary["rejected"],
                 f" ({reasons})" if reasons else "", summary.get("seconds", 0.0))


def _track(tracker, result: CurationResult, cfg: CurationConfig, store: Store) -> None:
    import tempfile

    stats = result.stats
    local = store.local_dir()
    with tempfile.TemporaryDirectory() as tmp:
        metrics = {k: float(v) for k, v in stats.items() if isinstance(v, int | float)}
        for stage, s in stats["per_stage"].items():
            if s["seconds"] > 0:
                metrics[f"stage.{stage}.items_per_s"] = s["items"] / s["seconds"]
                metrics[f"stage.{stage}.footage_s_per_s"] = s["footage_s"] / s["seconds"]
        for reason, count in stats["reject_reasons"].items():
            metrics[f"rejected.{reason}"] = float(count)
        tracker.log_metrics(metrics)
        for name in ("config.yaml", "stats.json", "manifest.parquet", "manifest.csv", "rejects.parquet",
                     "rejects.csv", "report.html"):
            if store.exists(name):
                path = local / name if local else Path(tmp) / name
                if not local:
                    store.download(name, path)
                tracker.log_artifact(path)
        plots = store.list("report")
        if plots:
            folder = local / "report" if local else Path(tmp) / "report"
            if not local:
                folder.mkdir()
                for name in plots:
                    store.download(f"report/{name}", folder / name)
            tracker.log_artifact(folder, "report")
    result.mlflow_run_id, result.tracking_uri = tracker.run_id, tracker.tracking_uri


def summary(result: CurationResult) -> str:
    s = result.stats
    lines = [
        f"curated {s['inputs']} inputs ({s['sources_unique']} unique) in {s['wall_s']:.1f}s: "
        f"{s['clips_kept']} clips kept ({s['hours_out'] * 3600:.1f}s of {s['hours_in'] * 3600:.1f}s footage)",
        "rejected: " + (", ".join(f"{r}={n}" for r, n in s["reject_reasons"].items()) or "none"),
        f"  shards:   {result.out_dir}/shards ({len(s['shards'])} files)",
        f"  manifest: {result.out_dir}/manifest.parquet",
        f"  rejects:  {result.out_dir}/rejects.csv",
    ]
    if result.report:
        lines.append(f"  report:   {result.report}")
    if result.mlflow_run_id:
        lines.append(f"  MLflow:   run {result.mlflow_run_id} in {result.tracking_uri}")
    return "\n".join(lines)


def split_args(positionals: list[str]) -> tuple[list[str], list[str]]:
    """``tandem curate a.mp4 dir/ shots.min_clip_s=2``: inputs and ``key=value`` overrides."""
    inputs, overrides = [], []
    for arg in positionals:
        key = arg.partition("=")[0]
        is_override = "=" in arg and key.replace(".", "").replace("_", "").isalnum() and not Path(arg).exists()
        (overrides if is_override else inputs).append(arg)
    return inputs, overrides


def add_parsers(subparsers) -> None:
    curate = subparsers.add_parser("curate", help="curate raw footage into clip shards")
    curate.add_argument("inputs", nargs="*", metavar="INPUT",
                        help="files, directories, globs or fsspec URIs; then key=value config overrides "
                             "(e.g. shots.max_clip_s=8 sync.policy=reject)")
    curate.add_argument("--out", help="output directory for shards, manifest, rejects and report")
    curate.add_argument("--config", help="curation config YAML (curation/pipeline.py CurationConfig)")
    add_run_arguments(curate)
    curate.set_defaults(handler=main)


def main(args) -> int:
    """``tandem curate`` (arguments parsed by ``add_parsers``)."""
    from curation.pipeline import CurationConfig
    from pipelines.config_loader import load_config
    from pipelines.discover import InputError

    inputs, overrides = split_args(args.inputs)
    if not inputs or not args.out:
        print("tandem curate: give at least one INPUT and --out DIR", flush=True)
        return 2
    try:
        cfg = load_config(CurationConfig, args.config, overrides)
        result = run_curation(inputs, args.out, cfg, address=args.address, run_name=args.run_name)
    except (ValueError, InputError) as exc:  # ConfigError and stage config checks
        print(f"tandem curate: {exc}", flush=True)
        return 2
    except Exception as exc:  # a fault of the machine or the cluster that outlasted Ray's retries
        log.debug("run failed", exc_info=True)
        from pipelines.worker_faults import SetupCrashed

        if isinstance(exc, SetupCrashed):
            print(f"tandem curate: the run stopped: {exc}", flush=True)
            return 1
        print(f"tandem curate: the run stopped on a fault outside the input ({type(exc).__name__}: "
              f"{str(exc).strip()[-1500:]}). Finished units are kept: fix the cause and run the same "
              "command again to resume.", flush=True)
        return 1
    print(summary(result), flush=True)
    return 0
