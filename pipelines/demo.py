"""The README's main job: everything on embedded defaults, on one machine.

    tandem demo --out runs/demo

Today (foundation) this is a smoke run: it makes a synthetic sample clip with
ffmpeg, starts local Ray, runs a small Ray Data job over the clip's frames, logs the
run (config, metrics, the clip) to the local MLflow store, and prints where it is.
The curation issue replaces the Ray Data job with the real curation DAG.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from pipelines.config import save_config, to_dict

log = logging.getLogger(__name__)


@dataclass
class DemoConfig:
    out: str = "runs/demo"
    shots_s: tuple = (1.0, 1.5, 1.0)
    fps: int = 25


def run_demo(out: str = "runs/demo", address: str | None = None) -> int:
    from curation.sample_media import make_clip
    from pipelines.ray_local import init_ray
    from pipelines.tracking import open_tracker

    cfg = DemoConfig(out=out)
    out_dir = Path(out).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    clip = make_clip(out_dir / "footage" / "sample.mp4", list(cfg.shots_s), fps=cfg.fps)
    log.info("made sample footage %s (cuts at %s s)", clip.path, clip.cut_times_s)

    init_ray(address)
    import ray
    import ray.data  # noqa: F401  (loads the Data library)

    frame_ids = ray.data.range(int(clip.duration_s * cfg.fps))
    seconds = frame_ids.map(lambda row: {"t": row["id"] / cfg.fps}).sum("t")
    ray.shutdown()

    config_path = save_config(cfg, out_dir / "config.yaml")
    with open_tracker("tandem-demo", run_name="smoke", store_dir=out_dir.parent) as tracker:
        tracker.log_params(to_dict(cfg))
        tracker.log_metrics({"frames": clip.duration_s * cfg.fps, "frame_seconds_sum": seconds,
                             "wall_s": time.time() - started})
        tracker.log_artifact(config_path)
        tracker.log_artifact(clip.path, "footage")
    print(f"demo finished in {time.time() - started:.1f}s")
    print(f"  output:     {out_dir}")
    print(f"  MLflow run: {tracker.run_id} in {tracker.tracking_uri}")
    print(f"  browse it:  mlflow ui --backend-store-uri {tracker.tracking_uri}")
    return 0
