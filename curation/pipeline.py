"""The curation pipeline, as the library defines it: its config, its stages in order, and
the worker that runs them on one work unit at a time.

probe -> shots (one decode: a source fans out into clips) -> motion -> prefilter -> clip
-> audio -> sync -> transcribe -> caption -> filter. ``build_stages`` lists them;
``curation/units.py`` cuts them into segments (consecutive CPU stages, or one model stage)
and runs a segment on a unit; ``UnitWorker`` holds one process's stages and scratch
folder. An executor only decides where segments run: ``run_here`` runs them in this
process, one unit after another; ``pipelines/ray_adapter.py`` maps them onto Ray Data
(tasks and actor pools), with the same ``UnitWorker`` in every worker process.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from curation.audio import AudioConfig, AudioStage
from curation.caption import CaptionConfig, CaptionStage
from curation.clip import ClipConfig, ClipStage
from curation.filters import FilterConfig, FilterStage
from curation.motion import MotionConfig, MotionStage
from curation.probe import ProbeConfig, ProbeStage
from curation.shards import ShardConfig
from curation.shots import Handoff, ShotConfig, ShotStage
from curation.stage import Stage
from curation.storage import Store
from curation.sync import SyncConfig, SyncStage
from curation.transcribe import TranscribeConfig, TranscribeStage
from curation.units import UnitConfig, run_segment, segments
from model.config import ConfigError, output_hash, run_only

PIPELINE_VERSION = "0.1.0"
REQUIRED_STAGES = ("probe", "shots", "clip")
SCRATCH_PREFIX = "tandem-curate-"


@dataclass
class RayConfig:
    actor_pool_size: int = run_only(1)  # actors per model stage (transcribe, caption); output unchanged


@dataclass
class CurationConfig:
    """Every field changes the shards (and so the resume identity, ``pipeline.config_hash``)
    except those declared ``run_only``: a half-finished job resumes with more actors, under
    another experiment name, or untracked, but not with other thresholds or models."""

    probe: ProbeConfig = field(default_factory=ProbeConfig)
    shots: ShotConfig = field(default_factory=ShotConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    motion: MotionConfig = field(default_factory=MotionConfig)
    sync: SyncConfig = field(default_factory=SyncConfig)
    transcribe: TranscribeConfig = field(default_factory=TranscribeConfig)
    caption: CaptionConfig = field(default_factory=CaptionConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)
    shards: ShardConfig = field(default_factory=ShardConfig)
    units: UnitConfig = field(default_factory=UnitConfig)
    ray: RayConfig = run_only(default_factory=RayConfig)  # output unchanged
    # Stages left out of the DAG, e.g. [transcribe] where no Whisper weights are at hand.
    # probe, shots and clip cannot be skipped: every later stage needs their output.
    skip: list = field(default_factory=list)
    experiment: str = run_only("tandem-curation")  # MLflow experiment; output unchanged
    track: bool = run_only(True)  # log the run to MLflow; output unchanged


class PrefilterStage(FilterStage):
    """The filter's thresholds on what is known before clipping (duration, motion)."""

    name = "prefilter"


def build_stages(cfg: CurationConfig, work_dir: Path, preflight: bool = True) -> list[Stage]:
    """The DAG's stages; ``work_dir`` is the (worker-local) folder clips are made in."""
    stages = [
        ProbeStage(cfg.probe),
        # One decode of the source: shots, per-frame analysis, and each clip's pixels and
        # audio handed to the clip stage at its output size.
        ShotStage(cfg.shots, handoff=Handoff(str(work_dir / "handoff"), cfg.clip.max_side, cfg.clip.sample_rate)),
        # Motion reads the shot stage's arrays, so static and black clips are dropped
        # here, before the clip stage spends an encode on them.
        MotionStage(cfg.motion),
        PrefilterStage(cfg.filter),
        ClipStage(replace(cfg.clip, work_dir=str(work_dir / "clips"))),
        AudioStage(cfg.audio),
        SyncStage(cfg.sync),
        TranscribeStage(cfg.transcribe),
        CaptionStage(cfg.caption),
        FilterStage(cfg.filter),
    ]
    names = [s.name for s in stages]
    unknown = sorted(set(cfg.skip) - set(names))
    if unknown or set(cfg.skip) & set(REQUIRED_STAGES):
        raise ConfigError(f"skip={cfg.skip}: only these stages can be skipped: "
                          f"{[n for n in names if n not in REQUIRED_STAGES]}")
    stages = [s for s in stages if s.name not in cfg.skip]
    if preflight:
        for stage in stages:
            stage.preflight()
    return stages


def pipeline_info(cfg: CurationConfig) -> dict:
    """What every clip's ``json`` records of the pipeline that made it."""
    return {"version": PIPELINE_VERSION, "config_hash": output_hash(cfg)}


class UnitWorker:
    """One process's stages, built from the run's config, and its scratch folder; ``run``
    takes a unit through one segment. ``for_config`` keeps one per config and process."""

    _cache: dict[str, UnitWorker] = {}

    def __init__(self, cfg: CurationConfig):
        _remove_orphaned_scratch()
        self.scratch = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-",
                                             dir=os.environ.get("TANDEM_SCRATCH")))
        atexit.register(shutil.rmtree, self.scratch, ignore_errors=True)
        self.cfg = cfg
        self.segments = segments(build_stages(cfg, self.scratch, preflight=False))
        self._ready: set[int] = set()

    @classmethod
    def for_config(cls, cfg: CurationConfig) -> UnitWorker:
        key = repr(cfg)
        if key not in cls._cache:
            cls._cache[key] = cls(cfg)
        return cls._cache[key]

    def set_up(self, index: int, guard: Callable[[str], contextlib.AbstractContextManager] | None = None) -> None:
        """The segment's stages' ``setup()``, once per process; each under ``guard(stage
        name)`` when given (an executor's way to name a process that dies there)."""
        if index in self._ready:
            return
        for stage in self.segments[index].stages:
            with guard(stage.name) if guard is not None else contextlib.nullcontext():
                stage.setup()
        self._ready.add(index)

    def run(self, index: int, payload: dict, store: Store,
            guard: Callable[[str], contextlib.AbstractContextManager] | None = None,
            stop: Callable[[], None] | None = None) -> dict:
        """Segment ``index`` on ``payload`` (``curation.units.run_segment``); ``stop``: how
        the executor ends this worker when the unit stalls."""
        self.set_up(index, guard)
        try:
            return run_segment(self.segments[index], payload, store, self.scratch, self.cfg.units,
                               finish={"shards": self.cfg.shards, "pipeline_info": pipeline_info(self.cfg)},
                               stop=stop)
        finally:
            for child in self.scratch.iterdir():  # nothing of a unit outlives its segment here
                shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(missing_ok=True)


def _remove_orphaned_scratch() -> None:
    """Scratch folders of worker processes that died mid-unit (killed: no cleanup ran)."""
    root = Path(os.environ.get("TANDEM_SCRATCH") or tempfile.gettempdir())
    for folder in root.glob(f"{SCRATCH_PREFIX}*-*"):
        pid = folder.name.removeprefix(SCRATCH_PREFIX).split("-", 1)[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(folder, ignore_errors=True)


def run_here(units: list[dict], cfg: CurationConfig, store: Store, on_done: Callable[[dict], None]) -> None:
    """Every segment in this process, one unit after another (tests, benchmarks);
    ``on_done(summary)`` as each unit finishes."""
    worker = UnitWorker.for_config(cfg)
    for unit in units:
        payload: dict = {"unit": unit}
        for index in range(len(worker.segments)):
            payload = worker.run(index, payload, store)
        on_done(payload)
