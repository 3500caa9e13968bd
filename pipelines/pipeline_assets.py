"""The pipeline as a Dagster asset graph: clip shards -> latent shards -> checkpoint -> rollouts
-> annotation tasks -> rankings -> reward model -> aligned model.

Materialising an asset runs the stage's own code, the functions the CLI calls (``run_curation``,
``run_latents_job``, ``run_training``, ...), or with ``--submit`` the stage's own command as a
Ray Job (``pipelines/pipeline_jobs.py``): the stages do not know about Dagster. Each asset's
value is small: where its output lies, the output's content digest (the one ``pipelines.lineage``
logs), the MLflow run that made it. Its **data version** is a digest of its stage, its config
digest and its inputs' digests; an asset whose data version equals that of its last
materialisation, with its output still there, is *skipped*: recorded again (metadata
``skipped: true``) without running the stage. So a second ``tandem pipeline run`` does no work,
and a changed curation knob re-runs curation, then whatever its new output changes below it.

Footage batches are partitions (``pipelines/pipeline_batches.py``): clip shards and latent
shards have one partition per batch (dynamic partitions ``footage_batches``), each curated and
encoded to folders of its own; the checkpoint and everything below it are one, trained on the
latent shards of every materialised batch. A new batch materialises its own clip and latent
shards; the checkpoint's data version (the digests of all batches' latents) then changes and
training runs again. ``tandem pipeline run`` registers the batches it finds; the sensor
``new_footage`` does so for Dagster's daemon, with a run of the new batch's partition.

Rankings are external: the asset imports the annotators' exports that ``pipeline.yaml`` names
once they exist, and until then materialises nothing, so reward and align wait for it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from collections.abc import Callable
from pathlib import Path

import dagster as dg

from pipelines.config_loader import output_hash
from pipelines.pipeline_batches import batch_footage, folder_name, footage_batches
from pipelines.pipeline_spec import STAGES, THIS_REWARD_URI, PipelineSpec

log = logging.getLogger(__name__)
# stage -> (asset name, the assets it reads)
ASSETS = {"curate": ("clip_shards", []), "latents": ("latent_shards", ["clip_shards"]),
          "train": ("checkpoint", ["latent_shards"]), "generate": ("rollouts", ["checkpoint"]),
          "tasks": ("annotation_tasks", ["rollouts"]), "rankings": ("rankings", ["annotation_tasks", "rollouts"]),
          "reward": ("reward_model", ["rankings", "rollouts"]), "align": ("aligned_model", ["checkpoint", "reward_model"])}
BATCHES = dg.DynamicPartitionsDefinition(name="footage_batches")
PARTITIONED = ("curate", "latents")  # one partition per footage batch; training reads them all


def data_version(stage: str, config_digest: str, inputs: dict[str, str]) -> str:
    key = json.dumps([stage, config_digest, sorted(inputs.items())])
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def input_digests(spec: PipelineSpec, stage: str, upstream: dict[str, dict]) -> dict[str, str]:
    """What a stage reads, by digest: its upstream's (for curation the batch's footage:
    ``curate_upstream``; for training all batches' latents: ``all_batches``)."""
    digests = {k: v["digest"] for k, v in upstream.items()}
    if stage == "rankings":
        from pipelines.lineage import file_sha256

        digests["exports"] = hashlib.sha256("".join(file_sha256(e) for e in exports_of(spec)).encode()).hexdigest()
    return digests


def last_value(instance, asset: str, batch: str | None = None) -> dict | None:
    """The value an asset's last materialisation recorded (its ``value`` metadata): of the
    footage batch ``batch`` (a partition), or without one the latest of any."""
    if batch is None:
        event = instance.get_latest_materialization_event(dg.AssetKey(asset))
        done = event.asset_materialization if event else None
    else:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[batch]), limit=1).records
        done = records[0].asset_materialization if records else None
    if done is None:
        return None
    return json.loads(done.metadata["value"].value) if "value" in done.metadata else None


def curate_upstream(spec: PipelineSpec, batch: str) -> dict[str, dict]:
    """What curating ``batch`` reads: its footage (inputs and their content digest)."""
    inputs = footage_batches(spec.footage).get(batch)
    if inputs is None:
        raise FileNotFoundError(f"footage batch {batch!r} is no longer under {spec.footage}")
    return {"footage": batch_footage(spec.store, batch, inputs)}


def all_batches(latents: dict[str, dict]) -> dict:
    """The latent shards of the batches ``latents`` holds (batch -> value) as training's one
    input: their folders as ``data.shards`` (comma-separated), their digests as one."""
    if not latents:
        raise FileNotFoundError("no footage batch has latent shards yet: materialise a batch's clip_shards and "
                                "latent_shards first")
    batches = sorted(latents)
    digest = hashlib.sha256(json.dumps({b: latents[b]["digest"] for b in batches}).encode()).hexdigest()
    return {"path": ",".join(latents[b]["path"] for b in batches), "digest": digest, "batches": batches}


def materialised_batches(instance, asset: str = "latent_shards") -> dict[str, dict]:
    """batch -> the last value of ``asset``'s partition, for each registered batch that has one."""
    values = {b: last_value(instance, asset, b) for b in instance.get_dynamic_partitions(BATCHES.name)}
    return {b: v for b, v in values.items() if v is not None}


def _materialise(context, spec: PipelineSpec, stage: str, upstream: dict[str, dict], run: Callable) -> dg.Output:
    asset = ASSETS[stage][0]
    batch = context.partition_key if stage in PARTITIONED else None
    cfg = spec.config(stage)
    version = data_version(stage, output_hash(cfg), input_digests(spec, stage, upstream))
    last = last_value(context.instance, asset, batch)
    skipped = bool(last and last.get("data_version") == version and Path(last["path"]).exists())
    if skipped:
        value = last
        context.log.info(f"{asset}{f'[{batch}]' if batch else ''}: data version {version} unchanged, skipped")
    else:
        out = spec.out / stage / (folder_name(batch) if batch else "") / version
        value = {**run(spec, cfg, upstream, out), "data_version": version}
    metadata = {"data_version": version, "skipped": skipped, "digest": value["digest"], "path": value["path"],
                "mlflow_run_id": value.get("run_id") or "", "ray_job_id": value.get("ray_job_id") or "",
                "value": json.dumps(value)}
    with warnings.catch_warnings():  # Output's data_version is "beta" in Dagster 1.13: said once, here
        warnings.simplefilter("ignore", dg.BetaWarning)
        return dg.Output(value, data_version=dg.DataVersion(version), metadata=metadata)


def _run_id_of(digest: str) -> str | None:
    import mlflow

    from pipelines.lineage import find_producer
    from pipelines.tracking import default_tracking_uri

    return find_producer(mlflow.MlflowClient(default_tracking_uri()), digest)


# ---------------------------------------------------------------------------------- stages
# Each: (spec, resolved config, upstream values, output folder) -> {"path", "digest", "run_id", ...}


def run_curate(spec, cfg, upstream, out):
    from pipelines.curate import run_curation
    from pipelines.lineage import file_sha256

    out = out.parent / output_hash(cfg)  # the batch's, per config: new files of the batch add to it
    if spec.submit:
        job, run_id = _job(spec, "curate", out, upstream), None
    else:
        job = None
        run_id = run_curation(upstream["footage"]["inputs"], out, cfg, address=spec.address,
                              run_name="pipeline curate").mlflow_run_id
    digest = file_sha256(out / "manifest.parquet")
    return {"path": str(out), "digest": digest, "run_id": run_id or _run_id_of(digest), "ray_job_id": job}


def run_latents(spec, cfg, upstream, out):
    from pipelines.latents_cmd import run_latents_job
    from pipelines.lineage import latents_digest

    job = None
    if spec.submit:
        job = _job(spec, "latents", out, upstream)
    else:
        result = run_latents_job(Path(upstream["clip_shards"]["path"]) / "shards", out, cfg, address=spec.address,
                                 run_name="pipeline latents")
        if result.shards_failed:
            raise RuntimeError(f"latents: {len(result.shards_failed)} clip shard(s) not encoded: {result.shards_failed}")
    digest = latents_digest(out)
    return {"path": str(out), "digest": digest, "run_id": _run_id_of(digest), "ray_job_id": job}


def run_train(spec, cfg, upstream, out):
    from pipelines.lineage import weights_digest
    from pipelines.pipeline_jobs import model_of_run
    from pipelines.ray_train import TRAINED_MODEL, register_trained, run_training

    if spec.submit:
        job = _job(spec, "train", out, upstream)  # the command registers the final weights itself
        run_id = _run_id_of(weights_digest(out / "final"))
        model = model_of_run(TRAINED_MODEL, run_id)
    else:
        job = None
        cfg.data.shards, cfg.storage = upstream["latent_shards"]["path"], str(out)
        result = run_training(cfg, address=spec.address, run_name="pipeline train")
        if result.error:
            raise RuntimeError(f"training failed: {result.error}")
        version = register_trained(cfg)
        run_id, model = version.run_id, version.uri
    return {"path": str(out / "final"), "digest": weights_digest(out / "final"), "run_id": run_id, "model": model,
            "ray_job_id": job}


def run_generate(spec, cfg, upstream, out):
    from pipelines.generate_cmd import run_generate as generate
    from pipelines.lineage import rollouts_digest

    ckpt = upstream["checkpoint"]
    generate(ckpt.get("model") or ckpt["path"], spec.stages["generate"].prompts, out, cfg, address=spec.address,
             run_name="pipeline generate")
    digest = rollouts_digest(out)
    return {"path": str(out), "digest": digest, "run_id": _run_id_of(digest)}


def run_tasks(spec, cfg, upstream, out):
    from pipelines.lineage import file_sha256
    from reward.annotation.labelstudio_tasks import make_tasks, write_tasks
    from reward.rollouts.rollout_dir import read_rollouts

    paths = write_tasks(out, cfg, make_tasks(read_rollouts(upstream["rollouts"]["path"]), cfg))
    return {"path": str(out), "digest": file_sha256(paths["tasks"])[:16], "run_id": None}


def exports_of(spec: PipelineSpec) -> list[str]:
    """The Label Studio exports ``stages.rankings.exports`` names that exist: files, or the
    ``*.json`` of folders."""
    found = []
    for entry in map(Path, spec.stages["rankings"].exports):
        found += sorted(map(str, entry.glob("*.json"))) if entry.is_dir() else [str(entry)] if entry.is_file() else []
    return found


def run_rankings(spec, cfg, upstream, out):
    from pipelines.annotate import import_rankings
    from pipelines.lineage import file_sha256

    code = import_rankings(exports_of(spec), out, tasks=upstream["annotation_tasks"]["path"],
                           rollouts=[upstream["rollouts"]["path"]])
    if code:
        raise RuntimeError(f"annotate import exited {code} (its message is above)")
    digest = file_sha256(out / "rankings.parquet")[:16]
    return {"path": str(out), "digest": digest, "run_id": _run_id_of(digest)}


def run_reward(spec, cfg, upstream, out):
    from pipelines.lineage import weights_digest
    from pipelines.reward_cmd import run_reward_training

    cfg.storage = str(out)
    done = run_reward_training(cfg, upstream["rankings"]["path"], [upstream["rollouts"]["path"]],
                               address=spec.address, run_name="pipeline reward")
    return {"path": done["model_dir"], "digest": weights_digest(done["model_dir"]), "run_id": done["run_id"],
            "model": f"models:/tandem-reward/{done['version']}"}


def run_align(spec, cfg, upstream, out):
    """Aligns the trained checkpoint; a reward whose source is ``$reward`` is the reward model."""
    from pipelines.align_cmd import ALIGNED_MODEL, preflight, register_aligned, run_alignment
    from pipelines.lineage import weights_digest
    from pipelines.pipeline_jobs import model_of_run

    weights = out / "aligned"
    if spec.submit:
        job = _job(spec, "align", out, upstream)  # the command registers the aligned weights itself
        run_id = _run_id_of(weights_digest(weights))
        return {"path": str(weights), "digest": weights_digest(weights), "run_id": run_id,
                "model": model_of_run(ALIGNED_MODEL, run_id), "ray_job_id": job}
    cfg.storage, cfg.init = str(out), upstream["checkpoint"]["model"]
    for source in cfg.rewards.values():
        if source.source == THIS_REWARD_URI:
            source.source = upstream["reward_model"]["model"]
    result = run_alignment(cfg, preflight(cfg), address=spec.address, run_name="pipeline align")
    if result.error:
        raise RuntimeError(f"alignment failed: {result.error}")
    version = register_aligned(cfg)
    return {"path": str(weights), "digest": weights_digest(weights), "run_id": version.run_id, "model": version.uri}


def _job(spec, stage: str, out: Path, upstream: dict) -> str:
    """The stage's own command as a Ray Job on ``spec.submit`` (pipelines/pipeline_jobs.py)."""
    from dagster import get_dagster_logger

    from pipelines.pipeline_jobs import run_job, stage_argv

    return run_job(spec, stage, stage_argv(spec, stage, out, upstream), log=get_dagster_logger().info)


RUNNERS = {"curate": run_curate, "latents": run_latents, "train": run_train, "generate": run_generate,
           "tasks": run_tasks, "rankings": run_rankings, "reward": run_reward, "align": run_align}


# ---------------------------------------------------------------------------------- graph


def _asset(spec: PipelineSpec, stage: str) -> dg.AssetsDefinition:
    name, reads = ASSETS[stage]
    external = stage == "rankings"
    # training reads every materialised batch: a dependency, its value built from their records
    ins = {} if stage == "train" else {r: dg.AssetIn(r) for r in reads}

    @dg.asset(name=name, ins=ins, deps=reads if stage == "train" else None, output_required=not external,
              partitions_def=BATCHES if stage in PARTITIONED else None, group_name="tandem",
              description=(RUNNERS[stage].__doc__ or f"tandem {stage}").strip().splitlines()[0],
              metadata={"stage": stage})
    def materialise(context, **upstream):  # unannotated: Dagster rejects a postponed (string) annotation
        if external and not exports_of(spec):
            context.log.info("rankings: no annotators' export yet (stages.rankings.exports): waiting for them")
            return
        if stage == "curate":
            upstream = curate_upstream(spec, context.partition_key)
        if stage == "train":
            upstream = {"latent_shards": all_batches(materialised_batches(context.instance))}
        yield _materialise(context, spec, stage, upstream, RUNNERS[stage])

    return materialise


def build_definitions(spec: PipelineSpec) -> dg.Definitions:
    assets = [_asset(spec, s) for s in STAGES if s in spec.stages]
    everything = dg.define_asset_job("tandem_pipeline", selection=dg.AssetSelection.all())

    @dg.sensor(job=everything, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING)
    def new_footage(context):
        """A new batch folder (or bucket prefix) under the footage: its partition, and a run of it."""
        found = set(footage_batches(spec.footage))
        known = set(context.instance.get_dynamic_partitions(BATCHES.name))
        new, gone = sorted(found - known), sorted(known - found)
        return dg.SensorResult(
            run_requests=[dg.RunRequest(partition_key=b, tags={"tandem/new_batch": b}) for b in new],
            dynamic_partitions_requests=[*([BATCHES.build_add_request(new)] if new else []),
                                         *([BATCHES.build_delete_request(gone)] if gone else [])])

    return dg.Definitions(assets=assets, jobs=[everything], sensors=[new_footage])
