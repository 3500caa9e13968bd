"""Lineage: what each stage's MLflow run read and wrote, and which run made what it read.

Every stage's run logs its inputs and outputs as MLflow datasets (``record``): a name
(``footage``, ``clip-shards``, ``latent-shards``, ``checkpoint``, ``rollouts``, ``rankings``,
``reward-model``, ``aligned-model``, ...), the path or URI it lives at, a content digest, and
the context tag ``input`` or ``output``; the MLflow UI lists them on the run's page. The
digests are the ones the stages already keep, so nothing big is hashed twice: the footage's
content ids (``pipelines/fingerprints.py``), the curation manifest's sha256 (which the latent
DAG records as ``source_manifest_sha256``), the latent manifest's sha256, the weights digest
of a checkpoint or model folder (``training.encoders.weights_digest``), and the sha256 of
small tables (rollout jsons, rankings, exports).

An input's producer is the run that logged the same digest as an output; it is found when
the input is logged (or given, where a model URI or a checkpoint's storage names its run)
and kept as the run tag ``lineage.from.<name>``. Each run also keeps its stage
(``lineage.stage``) and config digest (``lineage.config_digest``), and the curation run the
footage's files with their sha256 (the ``lineage/footage.json`` artifact).

``chain(RUN_ID | models:/NAME/VERSION)`` follows the producers down to the raw footage;
``tandem lineage`` prints it (``--json`` for scripts).
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)
CONTEXT = "mlflow.data.context"  # MLflow's own input tag: the UI shows it beside each dataset
PRODUCER = "tandem.producer_run"  # input tag: the run that wrote this input
FROM = "lineage.from."  # run tag prefix: lineage.from.<input name> = producing run id
STAGE, CONFIG = "lineage.stage", "lineage.config_digest"
FOOTAGE_ARTIFACT = "lineage/footage.json"
DIGEST_CHARS = 32  # MLflow keeps at most 36 characters of a dataset digest: a sha256's first 32 hex


@dataclass
class Data:
    """One thing a stage read or wrote."""

    name: str  # what it is: footage, clip-shards, latent-shards, checkpoint, rollouts, ...
    source: str  # where: a path, a URI, or models:/NAME/VERSION
    digest: str  # its content digest (see the module docstring for each kind)
    producer: str | None = None  # the run that made it, where the caller knows it

    def __post_init__(self):
        self.digest = short(self.digest)


def short(digest: str) -> str:
    """A digest as MLflow keeps it (``DIGEST_CHARS``)."""
    return str(digest)[:DIGEST_CHARS]


# ---------------------------------------------------------------------------------- digests


def file_sha256(path: str | Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def weights_digest(path: str | Path) -> str:
    """A checkpoint's digest as ``tandem generate`` records it
    (``training.checkpoint_loader.identify``: a run's latest DeepSpeed tag, or the one safetensors
    file of a folder), else the digest of a model folder's files (a reward model); cached per
    process while the files are unchanged."""
    from training.checkpoint_loader import CheckpointError, identify
    from training.encoders import weights_digest as files_digest

    try:
        return identify(path).digest
    except CheckpointError:
        return files_digest(str(path))


def latents_digest(latent_dir: str | Path) -> str:
    """Latent shards: their ``manifest.jsonl`` (``tandem latents`` writes it), else their names."""
    from training.latent_shards import manifest_path

    latent_dir = Path(latent_dir)
    if manifest_path(latent_dir).is_file():
        return file_sha256(manifest_path(latent_dir))
    names = "\n".join(sorted(p.name for p in latent_dir.glob("*.tar")))
    return "shards:" + hashlib.sha256(names.encode()).hexdigest()[:16]


def rollouts_digest(rollout_dir: str | Path) -> str:
    """The samples' jsons (each names its mp4, checkpoint, prompt and seed), in name order."""
    digest = hashlib.sha256()
    for path in sorted((Path(rollout_dir) / "samples").glob("*.json")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def footage_digest(files: list[dict]) -> str:
    """The footage as a whole: its files' content ids, in path order (``discover``'s rows)."""
    return hashlib.sha256("\n".join(f"{f['content']} {f['path']}" for f in files).encode()).hexdigest()[:16]


def model_data(name: str, uri: str, local: str | Path, *, tracking_uri: str | None = None) -> Data:
    """A registered model read from ``local`` (where the stage fetched ``uri`` to); the run
    that registered its version is the producer."""
    from pipelines.registry import lookup

    mv = lookup(uri, tracking_uri=tracking_uri)
    return Data(name, mv.uri, weights_digest(local), mv.run_id or None)


# ---------------------------------------------------------------------------------- record


def record(tracker, stage: str, config_digest: str, inputs: list[Data], outputs: list[Data],
           footage: list[dict] | None = None) -> None:
    """Log ``inputs`` and ``outputs`` on ``tracker``'s run as MLflow datasets, with each
    input's producing run; nothing for an untracked run (a NullTracker has no run id)."""
    run_id = getattr(tracker, "run_id", None)
    if run_id:
        record_run(tracker.tracking_uri, run_id, stage, config_digest, inputs, outputs, footage)


def record_run(tracking_uri: str, run_id: str, stage: str, config_digest: str, inputs: list[Data],
               outputs: list[Data], footage: list[dict] | None = None) -> None:
    import mlflow
    from mlflow.entities import DatasetInput, InputTag

    client = mlflow.MlflowClient(tracking_uri)
    logged = {(d.dataset.name, d.dataset.digest) for d in client.get_run(run_id).inputs.dataset_inputs}
    tags = {STAGE: stage, CONFIG: config_digest}
    datasets, names = [], set()
    for context, items in (("input", inputs), ("output", outputs)):
        for item in items:
            base, n = item.name, 1
            while item.name in names:  # several of a kind (rollouts of two checkpoints): rollouts, rollouts.2
                n += 1
                item.name = f"{base}.{n}"
            names.add(item.name)
            input_tags = [InputTag(CONTEXT, context)]
            if context == "input":
                item.producer = item.producer or find_producer(client, item.digest, not_run=run_id)
                if item.producer:
                    input_tags.append(InputTag(PRODUCER, item.producer))
                    tags[FROM + item.name] = item.producer
            if (item.name, item.digest) not in logged:  # a re-run into the same run logs once
                datasets.append(DatasetInput(_dataset(item), tags=input_tags))
    if datasets:
        client.log_inputs(run_id, datasets=datasets)
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
    if footage is not None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(FOOTAGE_ARTIFACT).name
            rows = [{"path": f["path"], "sha256": f["content"], "size": f.get("size")} for f in footage]
            path.write_text(json.dumps(rows, indent=1))
            client.log_artifact(run_id, str(path), str(Path(FOOTAGE_ARTIFACT).parent))


def _dataset(item: Data):
    """The MLflow dataset entity of ``item``: mlflow.data's own source for a path or URI it
    knows, else the URI as it is (``models:/...``)."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import Dataset

    try:
        with warnings.catch_warnings():  # "can be interpreted in multiple ways": a local path is local
            warnings.simplefilter("ignore", UserWarning)
            source = resolve_dataset_source(item.source)
        return MetaDataset(source, name=item.name, digest=item.digest)._to_mlflow_entity()
    except Exception:  # noqa: BLE001 - no dataset source of mlflow's takes this URI scheme
        return Dataset(item.name, item.digest, "uri", json.dumps({"uri": item.source}))


def find_producer(client, digest: str, not_run: str | None = None) -> str | None:
    """The latest finished-or-running run that logged ``digest`` as an output."""
    digest = short(digest)
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return None
    runs = client.search_runs(experiments, f"dataset.digest = '{digest}'", order_by=["attributes.start_time DESC"],
                              max_results=50)
    for run in runs:
        if run.info.run_id == not_run:
            continue
        for d in run.inputs.dataset_inputs:
            if d.dataset.digest == digest and _context(d) == "output":
                return run.info.run_id
    return None


def _context(dataset_input) -> str | None:
    return next((t.value for t in dataset_input.tags if t.key == CONTEXT), None)


def logged(client, run_id: str) -> dict[str, tuple[str, str, str | None]]:
    """What run ``run_id`` logged: dataset name -> (context, digest, producing run or None)."""
    return {d.dataset.name: (_context(d), d.dataset.digest, next((t.value for t in d.tags if t.key == PRODUCER), None))
            for d in client.get_run(run_id).inputs.dataset_inputs}


# ---------------------------------------------------------------------------------- chain


def chain(ref: str, *, tracking_uri: str | None = None) -> dict:
    """The run ``ref`` names (a run id, or ``models:/NAME/VERSION`` / ``@ALIAS``) and, under
    each of its inputs, the run that produced it, down to the raw footage. A run reached
    twice (two inputs of one run) is listed once, later references by id."""
    import os

    import mlflow

    from pipelines.registry import is_model_uri, lookup
    from pipelines.tracking import default_tracking_uri

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no bars in the printed chain
    tracking_uri = tracking_uri or default_tracking_uri()
    client = mlflow.MlflowClient(tracking_uri)
    model = None
    if is_model_uri(ref):
        mv = lookup(ref, tracking_uri=tracking_uri)
        model, ref = mv.uri, mv.run_id
    node = _node(client, ref, seen=set())
    return {"model": model, **node} if model else node


def _node(client, run_id: str, seen: set[str]) -> dict:
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        raise LineageError(f"no run {run_id} in {client.tracking_uri}") from exc
    tags = run.data.tags
    node = {"run_id": run_id, "run_name": run.info.run_name, "stage": tags.get(STAGE, "?"),
            "experiment": client.get_experiment(run.info.experiment_id).name, "status": run.info.status,
            "config_digest": tags.get(CONFIG), "inputs": [], "outputs": []}
    if run_id in seen:
        return {"run_id": run_id, "stage": node["stage"], "seen_above": True}
    seen.add(run_id)
    for d in run.inputs.dataset_inputs:
        context = _context(d)
        item = {"name": d.dataset.name, "digest": d.dataset.digest, "source": _source(d.dataset)}
        if context == "output":
            node["outputs"].append(item)
            continue
        producer = next((t.value for t in d.tags if t.key == PRODUCER), None) or tags.get(FROM + d.dataset.name)
        if producer:
            item["produced_by"] = _node(client, producer, seen)
        node["inputs"].append(item)
    if node["stage"] == "curate":
        node["footage"] = _footage(client, run_id)
    return node


def _source(dataset) -> str:
    try:
        spec = json.loads(dataset.source)
    except (TypeError, ValueError):
        return str(dataset.source)
    return str(spec.get("uri") or spec.get("path") or spec) if isinstance(spec, dict) else str(spec)


def _footage(client, run_id: str) -> list[dict]:
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=FOOTAGE_ARTIFACT, dst_path=tmp,
                                                       tracking_uri=client.tracking_uri)
        except Exception:  # noqa: BLE001 - a curation run from before lineage was logged
            return []
        return json.loads(Path(path).read_text())


class LineageError(ValueError):
    """A run or model that is not in the store; the message says which."""


def render(node: dict, indent: int = 0) -> list[str]:
    """The chain as indented lines: each run, its config digest, its inputs and their producers."""
    pad = "  " * indent
    if node.get("seen_above"):
        return [f"{pad}{node['stage']} run {node['run_id']} (listed above)"]
    lines = [f"{pad}{node['model']}" if node.get("model") else None,
             f"{pad}{node['stage']} run {node['run_id']} ({node['run_name']}, {node['experiment']}, {node['status']})"
             f" config {node['config_digest'] or '?'}"]
    lines += [f"{pad}  wrote {o['name']} {o['digest']} {o['source']}" for o in node["outputs"]]
    for i in node["inputs"]:
        lines.append(f"{pad}  read  {i['name']} {i['digest']} {i['source']}"
                     + ("" if "produced_by" in i else "  (no run made it)"))
        if "produced_by" in i:
            lines += render(i["produced_by"], indent + 2)
    lines += [f"{pad}    footage {f['sha256']} {f['path']}" for f in node.get("footage", [])]
    return [line for line in lines if line is not None]


def add_parsers(subparsers) -> None:
    p = subparsers.add_parser("lineage", help="what a run or registered model was made from, down to the raw footage")
    p.add_argument("ref", metavar="RUN_ID|models:/NAME/VERSION", help="an MLflow run id or a registered model URI")
    p.add_argument("--json", action="store_true", help="the chain as JSON")
    p.set_defaults(handler=lineage_handler)


def lineage_handler(args) -> int:
    import sys

    from pipelines.registry import RegistryError

    try:
        tree = chain(args.ref)
    except (LineageError, RegistryError) as exc:
        print(f"tandem lineage: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(tree, indent=1) if args.json else "\n".join(render(tree)))
    return 0
