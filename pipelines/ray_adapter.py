"""The one place curation meets Ray Data: an executor of the pipeline ``curation/`` defines.

Each row of the dataset is one work unit (``curation/units.py``), pickled into a
``payload`` column: a unit's items are nested dicts whose keys differ from clip to clip
(Arrow cannot unify them), and between segments the row also carries the unit's clip
media as bytes, through Ray's object store.

``run_units`` maps each segment of the pipeline onto the dataset with the resources its
stages declare: CPU segments as tasks (``num_cpus``), a model stage as an actor pool
whose actors run ``setup()`` once and keep the model loaded (``num_gpus`` when the
cluster has GPUs), taking a unit's clips as one batch. Every worker process holds one
``curation.pipeline.UnitWorker`` (the stages built from the run's config, a scratch
folder on its local disk); what runs on a unit is the library's, not this module's.

Faults: a task that raises an infrastructure error (``OSError``, ``MemoryError``,
``InfrastructureError``) or whose worker dies is retried by Ray, up to
``max_worker_crashes + 1`` times, so a source that keeps killing its worker reaches the
attempt that quarantines it (``curation/units.py``). A unit that stalls ends its
worker the same way. A worker that dies inside a stage's ``setup()`` is named, with its
signal, by ``pipelines/worker_faults.py``. The driver sees one small summary per
finished unit: a log line when there is no terminal, Ray Data's progress bars when there
is; and a line for each stall as it happens.
"""

from __future__ import annotations

import functools
import logging
import pickle
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

from curation.pipeline import CurationConfig, UnitWorker, build_stages
from curation.stage import InfrastructureError
from curation.storage import Store
from curation.units import Segment, segments
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


def _task(row: dict, index: int, cfg: CurationConfig, store: Store) -> dict:
    out = UnitWorker.for_config(cfg).run(index, pickle.loads(row["payload"]), store,
                                         guard=functools.partial(setup_guard, store), stop=end_this_worker)
    return {"payload": pickle.dumps(out)}


class _SegmentActor:
    args: tuple = ()  # (segment index, config, store), set on a subclass per segment

    def __init__(self):
        index, cfg, store = self.args
        self.index, self.cfg, self.store = index, cfg, store
        # Build the stages and load the model once, at actor start.
        UnitWorker.for_config(cfg).set_up(index, guard=functools.partial(setup_guard, store))

    def __call__(self, row: dict) -> dict:
        return _task(row, self.index, self.cfg, self.store)


def run_units(units: list[dict], cfg: CurationConfig, store: Store, on_done: Callable[[dict], None]) -> None:
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
    # The stage list as the driver sees it: resources and segment boundaries only.
    plan: list[Segment] = segments(build_stages(cfg, Path(tempfile.gettempdir()), preflight=False))
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
