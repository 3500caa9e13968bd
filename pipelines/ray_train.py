"""Ray Train entry: a TorchTrainer whose workers each run the Trainer.

Checkpoints go straight to ``storage`` (a shared filesystem or mount on a cluster); when
a worker is lost, FailureConfig restarts every worker and the loop resumes from the
latest checkpoint there, continuing the same MLflow run (its id is kept in storage).
Only rank 0 talks to MLflow. A storage that holds a run is continued only under the config
it was started with (``check_resume``, before Ray starts), and a finished run's final weights
are registered as a version of ``tandem-dit`` (``register_trained``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import time
from pathlib import Path

import yaml

from pipelines.config import from_dict, save_config, to_dict
from pipelines.ray_local import cluster_address, init_ray
from pipelines.tracking import default_tracking_uri, open_tracker
from training.resume import checkpoint_dir, refuse_changed_config
from training.trainer import TrainConfig, Trainer

log = logging.getLogger(__name__)
RUN_ID_FILE = "mlflow_run_id"  # in storage: the MLflow run a restarted or re-run job continues
TRAINED_MODEL = "tandem-dit"


def run_id_of(storage: str | Path) -> str | None:
    """The MLflow run the job in ``storage`` logs to, if it has started one."""
    path = Path(storage) / RUN_ID_FILE
    return (path.read_text().strip() or None) if path.exists() else None


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


def start_worker_run(cfg, config: dict, run_name: str | None):
    """This worker's (tracker, rank, new_run). Rank 0 continues the MLflow run whose id
    ``cfg.storage`` keeps (a restarted worker), or starts one, records its id and logs the
    recipe (``config``) as params and ``recipe.yaml``; other ranks get a NullTracker."""
    import ray.train

    rank = ray.train.get_context().get_world_rank()
    run_id_file = Path(cfg.storage) / RUN_ID_FILE
    run_id = run_id_of(cfg.storage)
    tracker = open_tracker(cfg.experiment, run_name, store_dir=cfg.tracking_dir, enabled=rank == 0, run_id=run_id)
    if rank == 0 and run_id is None:
        run_id_file.parent.mkdir(parents=True, exist_ok=True)
        run_id_file.write_text(str(tracker.run_id or ""))
        tracker.log_params(config)
        tracker.log_artifact(save_config(cfg, Path(cfg.storage) / "recipe.yaml"))
    return tracker, rank, run_id is None


def _train_loop(config: dict) -> None:
    import ray.train
    import torch

    cfg = from_dict(TrainConfig, config["train"])
    torch.set_num_threads(max(1, int(cfg.workers.cpus_per_worker)))
    tracker, rank, new_run = start_worker_run(cfg, config["train"], config.get("run_name"))
    status = "FAILED"
    try:
        trainer = Trainer(cfg, tracker=tracker)
        resumed = trainer.resume()
        if rank == 0:
            if new_run:
                tracker.set_tags({"data.shards": cfg.data.shards, "data.manifest": data_identity(cfg.data.shards),
                                  "data.damaged_shards": damaged_tag(trainer.loader.damaged)})
            tracker.set_tags({"resumed_from_step": str(trainer.step if resumed else 0)})
            log.info("rank 0: %s at step %d of %d", "resumed" if resumed else "starting", trainer.step, cfg.steps)
        start = time.perf_counter()
        history = trainer.fit(until=config.get("until"))
        ray.train.report({"step": trainer.step, "loss": history[-1]["loss"] if history else float("nan"),
                          "seconds": time.perf_counter() - start})
        status = "FINISHED" if trainer.step >= cfg.steps else "RUNNING"  # stopped early by ``until``
    finally:
        if status != "RUNNING":
            tracker.close(status)


def damaged_tag(damaged: dict[str, str]) -> str:
    """The shards a ``data.skip_damaged`` run left out, by name, within MLflow's tag limit."""
    names = ", ".join(sorted(Path(shard).name for shard in damaged))
    return (names if len(names) <= 4000 else names[:4000] + f"... ({len(damaged)} shards)") or "none"


def data_identity(shards: str) -> str:
    """What the run trained on: the clip manifest's digest that the latent DAG recorded in
    stats.json, else a digest of the latent shard names."""
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


def _in_driver_store(loop, config: dict) -> None:
    """Run ``loop`` with the driver's MLflow store: a worker's own environment (that of the
    raylet which started it, perhaps long ago) must not decide where its run is logged."""
    os.environ["MLFLOW_TRACKING_URI"] = config["tracking_uri"]
    loop(config)


def fit_on_ray(loop, loop_config: dict, cfg, *, address: str | None, name: str):
    """Run ``loop(loop_config)`` on ``cfg.workers`` Ray Train workers (local Ray by default),
    restarting them from their checkpoints up to ``workers.max_failures`` times; returns Ray's
    Result. Raises ValueError when a local Ray instance cannot ever hold the workers."""
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    init_ray(address)
    check_resources(cfg, ray.cluster_resources(), local=cluster_address(address) is None)
    w = cfg.workers
    trainer = TorchTrainer(
        functools.partial(_in_driver_store, loop),
        train_loop_config={"tracking_uri": default_tracking_uri(cfg.tracking_dir), **loop_config},
        scaling_config=ScalingConfig(num_workers=w.num_workers, use_gpu=w.use_gpu,
                                     resources_per_worker={"CPU": w.cpus_per_worker}),
        run_config=RunConfig(name=name, storage_path=str(Path(cfg.storage) / "ray"),
                             failure_config=FailureConfig(max_failures=w.max_failures)),
    )
    return trainer.fit()


def run_training(cfg: TrainConfig, *, address: str | None = None, run_name: str | None = None,
                 until: int | None = None):
    """Train ``cfg`` on the current Ray cluster (local by default); returns Ray's Result.
    Raises ValueError when a local Ray instance cannot ever hold the workers."""
    cfg.storage, cfg.data.shards = str(Path(cfg.storage).absolute()), str(Path(cfg.data.shards).absolute())
    cfg.tracking_dir = str(Path(cfg.tracking_dir).absolute())
    return fit_on_ray(_train_loop, {"train": to_dict(cfg), "run_name": run_name, "until": until}, cfg,
                      address=address, name=run_name or "train")


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
    return register(weights.parent, TRAINED_MODEL, alias=cfg.register_alias, run_id=run_id_of(cfg.storage),
                    tracking_uri=default_tracking_uri(cfg.tracking_dir), tags=tags, once=True)
