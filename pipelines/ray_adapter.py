"""The one place curation meets Ray Data.

Each row of the dataset is one work unit (``pipelines/units.py``), pickled into a
``payload`` column: a unit's items are nested dicts whose keys differ from clip to clip
(Arrow cannot unify them), and between segments the row also carries the unit's clip
media as bytes, through Ray's object store.

``run_units`` maps each segment of the DAG onto the dataset with the resources its
stages declare: CPU segments as tasks (``num_cpus``), a model stage as an actor pool
whose actors run ``setup()`` once and keep the model loaded (``num_gpus`` when the
cluster has GPUs), taking a unit's clips as one batch. Every worker process builds
the stages from the run's config once and keeps a scratch folder on its local disk.

Faults: a task that raises an infrastructure error (``OSError``, ``MemoryError``,
``InfrastructureError``) or whose worker dies is retried by Ray, up to
``max_worker_crashes + 1`` times, so a source that keeps killing its worker reaches the
attempt that quarantines it (``pipelines/units.py``). A unit that stalls ends its
worker the same way. A worker that dies inside a stage's ``setup()`` is named, with its
signal, by ``pipelines/worker_faults.py``. The driver sees one small summary per
finished unit: a log line when there is no terminal, Ray Data's progress bars when there
is; and a line for each stall as it happens.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import pickle
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from curation.stage import InfrastructureError
from curation.storage import Store
from pipelines.units import Segment, run_segment, segments
from pipelines.worker_faults import (
    SetupCrashed,
    StallReporter,
    clear,
    dead_setups,
    describe_setup_deaths,
    end_this_worker,
    setup_guard,
)

log = logging.getLogger(__name__)
RETRIED = [OSError, MemoryError, InfrastructureError]


class Worker:
    """Per process: the stages built from the run's config, and a scratch folder."""

    _cache: dict[str, Worker] = {}

    def __init__(self, cfg: Any):
        from pipelines.curate import build_stages

        _remove_orphaned_scratch()
        self.scratch = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-",
                                             dir=os.environ.get("TANDEM_SCRATCH")))
        atexit.register(shutil.rmtree, self.scratch, ignore_errors=True)
        self.cfg = cfg
        self.segments = segments(build_stages(cfg, self.scratch, preflight=False))
        self._ready: set[int] = set()

    @classmethod
    def get(cls, cfg: Any) -> Worker:
        key = repr(cfg)
        if key not in cls._cache:
            cls._cache[key] = cls(cfg)
        return cls._cache[key]

    def set_up(self, index: int, store: Store | None = None) -> None:
        """The segment's stages' ``setup()``, once per process; on a Ray worker (``store``
        given) under ``setup_guard``, so a death there is named."""
        if index in self._ready:
            return
        for stage in self.segments[index].stages:
            with setup_guard(store, stage.name) if store is not None else contextlib.nullcontext():
                stage.setup()
        self._ready.add(index)

    def run(self, index: int, payload: dict, store: Store, on_ray: bool = False) -> dict:
        self.set_up(index, store if on_ray else None)
        try:
            return run_segment(self.segments[index], payload, store, self.scratch, self.cfg.units,
                               finish={"shards": self.cfg.shards, "pipeline_info": pipeline_info(self.cfg)},
                               stop=end_this_worker if on_ray else None)
        finally:
            for child in self.scratch.iterdir():  # nothing of a unit outlives its segment here
                shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(missing_ok=True)


SCRATCH_PREFIX = "tandem-curate-"


def _remove_orphaned_scratch() -> None:
    """Scratch folders of worker processes that died mid-unit (killed: no cleanup ran)."""
    root = Path(os.environ.get("TANDEM_SCRATCH") or tempfile.gettempdir())
    for folder in root.glob(f"{SCRATCH_PREFIX}*-*"):
        pid = folder.name.removeprefix(SCRATCH_PREFIX).split("-", 1)[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(folder, ignore_errors=True)


def pipeline_info(cfg: Any) -> dict:
    from pipelines.config_loader import output_hash
    from pipelines.curate import PIPELINE_VERSION

    return {"version": PIPELINE_VERSION, "config_hash": output_hash(cfg)}


def _task(row: dict, index: int, cfg: Any, store: Store) -> dict:
    out = Worker.get(cfg).run(index, pickle.loads(row["payload"]), store, on_ray=True)
    return {"payload": pickle.dumps(out)}


class _SegmentActor:
    args: tuple = ()  # (segment index, config, store), set on a subclass per segment

    def __init__(self):
        index, cfg, store = self.args
        self.index, self.cfg, self.store = index, cfg, store
        Worker.get(cfg).set_up(index, store)  # build the stages and load the model once, at actor start

    def __call__(self, row: dict) -> dict:
        return _task(row, self.index, self.cfg, self.store)


def run_units(units: list[dict], cfg: Any, store: Store, on_done: Callable[[dict], None]) -> None:
    """Process ``units`` through every segment on the Ray cluster; ``on_done(summary)``
    as each unit finishes."""
    import ray
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = sys.stderr.isatty()
    context.print_on_execution_start = False
    context.enable_auto_log_stats = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "bars disabled" notice

    gpus = ray.cluster_resources().get("GPU", 0.0)
    plan: list[Segment] = segments(_stages_for_resources(cfg))
    ds = ray.data.from_items([{"payload": pickle.dumps({"unit": u})} for u in units],
                             override_num_blocks=len(units))
    retries = cfg.units.max_worker_crashes + 2  # enough to reach the attempt that quarantines
    for index, segment in enumerate(plan):
        res = [s.resources for s in segment.stages]
        cpus = max(r.cpus for r in res)
        want_gpus = max(r.gpus for r in res)
        num_gpus = want_gpus if gpus >= want_gpus > 0 else 0.0
        if segment.actor:
            # The arguments travel inside the class: Ray warns about actors whose constructor
            # arguments sit in the object store, as fn_constructor_args would.
            actor = type(f"Segment{index}Actor", (_SegmentActor,), {"args": (index, cfg, store)})
            ds = ds.map(actor, num_cpus=cpus, num_gpus=num_gpus,
                        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=cfg.ray.actor_pool_size))
        else:
            with warnings.catch_warnings():  # Ray 2.60 takes retry settings only as ray_remote_args
                warnings.simplefilter("ignore", DeprecationWarning)
                ds = ds.map(_task, fn_args=(index, cfg, store), num_cpus=cpus, num_gpus=num_gpus,
                            max_retries=retries, retry_exceptions=RETRIED)
    clear(store)
    with StallReporter(store):
        try:
            for row in ds.iter_rows():
                on_done(pickle.loads(row["payload"]))
        except Exception as exc:
            deaths = dead_setups(store)
            if deaths:  # whatever Ray says, the cause was a stage that kills its workers as it loads
                raise SetupCrashed(describe_setup_deaths(deaths)) from exc
            raise


def _stages_for_resources(cfg: Any):
    """The stage list as the driver sees it (resources and segment boundaries only)."""
    from pipelines.curate import build_stages

    return build_stages(cfg, Path(tempfile.gettempdir()), preflight=False)


def run_units_here(units: list[dict], cfg: Any, store: Store, on_done: Callable[[dict], None]) -> None:
    """The same segments in this process, one unit after another (tests, benchmarks)."""
    worker = Worker.get(cfg)
    for unit in units:
        payload: dict = {"unit": unit}
        for index in range(len(worker.segments)):
            payload = worker.run(index, payload, store)
        on_done(payload)
