"""Ray Train entry: a TorchTrainer whose workers each run the Trainer.

Checkpoints go straight to ``storage`` (a shared filesystem or mount on a cluster); when
a worker is lost, FailureConfig restarts every worker and the loop resumes from the
latest checkpoint there, continuing the same MLflow run (its id is kept in storage).
Only rank 0 talks to MLflow, into the run the driver owns: the driver opens it before Ray
starts and closes it when the workers are done (FAILED when they failed), so the run's
duration is the command's; rank 0 logs into it, with the system metrics of its node. A
storage that holds a run is continued only under the config it was started with
(``check_resume``, before Ray starts), and a finished run's final weights are registered as
a version of ``tandem-dit`` (``register_trained``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from pathlib import Path

import yaml

from pipelines.config_loader import from_dict, save_config, to_dict
from pipelines.ray_local import cluster_address, init_ray
from pipelines.tracking import (
    RUN_ID_FILE,
    MlflowTracker,
    default_tracking_uri,
    describe_run,
    error_tag,
    open_tracker,
    run_id_of,
)
from training.latent_shards import absolute_shards, shard_dirs
from training.resume import checkpoint_dir, refuse_changed_config
from training.tracker import NullTracker
from training.trainer import TrainConfig, Trainer

log = logging.getLogger(__name__)
TRAINED_MODEL = "tandem-dit"


def check_resume(cfg, now: dict | None = None) -> None:
    """Before Ray starts: a storage that holds a run (checkpoints, or an MLflow run its workers
    would continue) is continued only under the config its ``recipe.yaml`` records, else a
    ConfigError names the keys that differ (``training.resume.refuse_changed_config``; train and
    align alike). ``now``: values to compare instead of ``cfg``'s (paths the run makes absolute)."""
    storage = Path(cfg.storage)
    recipe = storage / "recipe.yaml"
    if recipe.is_file() and ((checkpoint_dir(storage) / "latest").exists() or run_id_of(storage)):
        refuse_changed_config(yaml.safe_load(recipe.read_text()) or {}, cfg, f"storage={cfg.storage}",
                              "use another storage= to start a new run", now)


def start_driver_run(cfg, run_name: str, started: float):
    """The command's MLflow run, opened on the driver: the run whose id ``cfg.storage``
    keeps (training resumed there), or a new one, started at ``started``, whose id it
    records, with the recipe as params and ``recipe.yaml``. Returns (tracker, new_run)."""
    run_id_file = Path(cfg.storage) / RUN_ID_FILE
    run_id = run_id_of(cfg.storage)
    tracker = open_tracker(cfg.experiment, run_name, store_dir=cfg.tracking_dir, run_id=run_id or None,
                           start_time=started)
    if not run_id:
        run_id_file.parent.mkdir(parents=True, exist_ok=True)
        run_id_file.write_text(str(tracker.run_id))
        tracker.log_params(to_dict(cfg))
        tracker.log_artifact(save_config(cfg, Path(cfg.storage) / "recipe.yaml"))
    return tracker, not run_id


def start_worker_run(cfg, config: dict):
    """This worker's (tracker, rank): rank 0 logs into the driver's run (``config["run_id"]``)
    and samples its node's system metrics; other ranks get a NullTracker."""
    import ray.train

    rank = ray.train.get_context().get_world_rank()
    if rank != 0:
        return NullTracker(), rank
    return MlflowTracker(cfg.experiment, tracking_uri=config["tracking_uri"], run_id=config["run_id"],
                         system_metrics=True), rank


def worker_loop(config: dict) -> None:
    """Every Ray Train worker of ``tandem train``, ``align`` and ``reward train``: the job's
    config rebuilt from its dict, torch's threads set to the worker's CPUs, its tracker
    (``start_worker_run``), then ``config["job"](cfg, tracker, rank, config)``, whose metrics
    go to Ray Train. The tracker is released, never ended: the driver ends the run."""
    import ray.train
    import torch

    cfg = from_dict(config["config_class"], config["cfg"])
    torch.set_num_threads(max(1, int(cfg.workers.cpus_per_worker)))
    tracker, rank = start_worker_run(cfg, config)
    try:
        metrics = config["job"](cfg, tracker, rank, config)
    finally:
        tracker.release()
    ray.train.report(metrics)


def fit_from_latest(trainer, tracker, rank: int, config: dict, first_tags) -> tuple[list[dict], float]:
    """``trainer`` (training's Trainer, alignment's Aligner) resumed from its latest checkpoint
    and fitted up to ``config["until"]`` (its ``steps`` when None). Rank 0 tags the run:
    ``first_tags()`` when it is new, ``resumed_from_step`` at every start. Returns the history
    and the seconds it took."""
    resumed = trainer.resume()
    if rank == 0:
        if config["new_run"]:
            tracker.set_tags(first_tags())
        tracker.set_tags({"resumed_from_step": str(trainer.step if resumed else 0)})
        log.info("rank 0: %s at step %d of %d", "resumed" if resumed else "starting", trainer.step, trainer.cfg.steps)
    start = time.perf_counter()
    history = trainer.fit(until=config.get("until"))
    return history, time.perf_counter() - start


def _train(cfg: TrainConfig, tracker, rank: int, config: dict) -> dict:
    trainer = Trainer(cfg, tracker=tracker)
    history, seconds = fit_from_latest(trainer, tracker, rank, config, lambda: {
        "data.shards": cfg.data.shards, "data.manifest": data_identity(cfg.data.shards),
        "data.damaged_shards": damaged_tag(trainer.loader.damaged)})
    return {"step": trainer.step, "loss": history[-1]["loss"] if history else float("nan"), "seconds": seconds}


def damaged_tag(damaged: dict[str, str]) -> str:
    """The shards a ``data.skip_damaged`` run left out, by name, within MLflow's tag limit."""
    names = ", ".join(sorted(Path(shard).name for shard in damaged))
    return (names if len(names) <= 4000 else names[:4000] + f"... ({len(damaged)} shards)") or "none"


def data_identity(shards: str) -> str:
    """What the run trained on: the clip manifest's digest that the latent DAG recorded in
    stats.json, else a digest of the latent shard names; for several directories, a digest
    of theirs."""
    dirs = shard_dirs(shards)
    if len(dirs) > 1:
        return "dirs:" + hashlib.sha256("\n".join(map(data_identity, map(str, dirs))).encode()).hexdigest()[:16]
    stats = Path(shards) / "stats.json"
    if stats.exists() and (digest := json.loads(stats.read_text()).get("source_manifest_sha256")):
        return digest
    names = sorted(p.name for p in Path(shards).glob("*.tar"))
    return "shards:" + hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]


def check_resources(cfg: TrainConfig, cluster: dict, local: bool) -> None:
    """A local Ray instance never grows: asking it for more than it has would wait forever,
    so say so now. A cluster's autoscaler may still add nodes: only warn."""
    w = cfg.workers
    need = {"CPU": w.num_workers * w.cpus_per_worker, "GPU": w.num_workers if w.use_gpu else 0}
    short = {k: (v, cluster.get(k, 0)) for k, v in need.items() if v > cluster.get(k, 0)}
    if not short:
        return
    what = ", ".join(f"{v:g} {k} (it has {have:g})" for k, (v, have) in short.items())
    if local:
        raise ValueError(f"the recipe needs {what} on this machine's Ray: lower workers.num_workers / "
                         "workers.cpus_per_worker, set workers.use_gpu=false, or pass --address of a cluster")
    log.warning("the recipe needs %s; waiting for the cluster to provide it", what)


def _in_driver_store(config: dict) -> None:
    """``worker_loop`` with the driver's MLflow settings (store, system metrics interval): a
    worker's own environment (that of the raylet which started it, perhaps long ago) must
    not decide where or how its run is logged."""
    os.environ.update(config["mlflow_env"])
    worker_loop(config)


def ray_for(cfg, address: str | None) -> None:
    """Ray joined (``address``) or started, checked to hold ``cfg.workers``: ConnectionError
    when nothing answers, ValueError when a local instance never could hold them."""
    import ray

    init_ray(address)
    check_resources(cfg, ray.cluster_resources(), local=cluster_address(address) is None)


def fit_on_ray(job, loop_config: dict, cfg, *, name: str):
    """Run ``job(cfg, tracker, rank, loop_config)`` (``worker_loop``) on ``cfg.workers`` Ray Train
    workers of the Ray ``ray_for`` joined, restarting them from their checkpoints up to
    ``workers.max_failures`` times; returns Ray's Result."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    w = cfg.workers
    mlflow_env = {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")}
    mlflow_env["MLFLOW_TRACKING_URI"] = default_tracking_uri(cfg.tracking_dir)
    trainer = TorchTrainer(
        _in_driver_store,
        train_loop_config={"tracking_uri": mlflow_env["MLFLOW_TRACKING_URI"], "mlflow_env": mlflow_env, **loop_config,
                           "job": job, "config_class": type(cfg), "cfg": to_dict(cfg)},
        scaling_config=ScalingConfig(num_workers=w.num_workers, use_gpu=w.use_gpu,
                                     resources_per_worker={"CPU": w.cpus_per_worker}),
        # Ray names a folder after the run: the MLflow name, as a folder name.
        run_config=RunConfig(name=re.sub(r"[^\w.=-]+", "_", name)[:100], storage_path=str(Path(cfg.storage) / "ray"),
                             failure_config=FailureConfig(max_failures=w.max_failures)),
    )
    return trainer.fit()


def fit_in_run(job, loop_config: dict, cfg, *, address: str | None, run_name: str, started: float,
               until: int | None = None):
    """``fit_on_ray`` inside the command's MLflow run (``start_driver_run``), which ends
    FINISHED when the workers are done, FAILED (with an ``error`` tag) when they failed,
    KILLED on Ctrl-C, and stays open when ``until`` stopped them before ``cfg.steps``. A Ray
    that cannot be reached or hold the workers is a setting to change: no run for it."""
    ray_for(cfg, address)
    tracker, new_run = start_driver_run(cfg, run_name, started)
    status = "FAILED"
    try:
        result = fit_on_ray(job, {**loop_config, "run_id": tracker.run_id, "new_run": new_run, "until": until},
                            cfg, name=run_name)
        if result.error is None:
            status = "RUNNING" if until is not None and until < cfg.steps else "FINISHED"
        else:
            tracker.set_tags(error_tag(result.error))
        return result
    except BaseException as exc:
        # Ray Train answers Ctrl-C itself: it aborts its controller and exits (SystemExit).
        interrupted = isinstance(exc, (KeyboardInterrupt, SystemExit))
        tracker.set_tags(error_tag("interrupted (Ctrl-C)" if interrupted else exc))
        status = "KILLED" if interrupted else "FAILED"
        raise
    finally:
        if status != "RUNNING":
            tracker.close(status)


def run_training(cfg: TrainConfig, *, address: str | None = None, run_name: str | None = None,
                 until: int | None = None):
    """Train ``cfg`` on the current Ray cluster (local by default); returns Ray's Result.
    Raises ValueError when a local Ray instance cannot ever hold the workers."""
    started = time.time()
    cfg.storage, cfg.data.shards = str(Path(cfg.storage).absolute()), absolute_shards(cfg.data.shards)
    cfg.tracking_dir = str(Path(cfg.tracking_dir).absolute())
    return fit_in_run(_train, {}, cfg, address=address, started=started, until=until,
                      run_name=run_name or describe_run("train", cfg.preset))


def register_trained(cfg: TrainConfig):
    """Register the final weights of the run in ``cfg.storage`` (``training.export.export_latest``
    into ``storage/final``, logged under ``model/`` of its MLflow run) as a version of tandem-dit
    and point ``cfg.register_alias`` at it; a version of the same run and step is reused, not
    registered twice. Returns the ``pipelines.registry.ModelVersion``."""
    from model.dit import DualDiTConfig
    from pipelines.registry import register
    from training.export import export_latest

    checkpoints = checkpoint_dir(cfg.storage)
    model_cfg = from_dict(DualDiTConfig, json.loads((checkpoints / "model.json").read_text()))
    weights = export_latest(cfg.storage, Path(cfg.storage) / "final", model_cfg)
    tags = {"preset": cfg.preset, "step": (checkpoints / "latest").read_text().strip(),
            "data.manifest": data_identity(cfg.data.shards)}
    version = register(weights.parent, TRAINED_MODEL, alias=cfg.register_alias, run_id=run_id_of(cfg.storage),
                       tracking_uri=default_tracking_uri(cfg.tracking_dir), tags=tags, once=True)
    _record_lineage(cfg, version, weights)
    return version


def _record_lineage(cfg: TrainConfig, version, weights: Path) -> None:
    """Latent shards in (their manifest's sha256; each directory's), the registered checkpoint out."""
    from pipelines.config_loader import output_hash
    from pipelines.lineage import Data, latents_digest, record_run, weights_digest

    inputs = [Data("latent-shards", str(d), latents_digest(d)) for d in shard_dirs(cfg.data.shards)]
    record_run(default_tracking_uri(cfg.tracking_dir), version.run_id, "train", output_hash(cfg), inputs,
               [Data("checkpoint", version.uri, weights_digest(weights))])
