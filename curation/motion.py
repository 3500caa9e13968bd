"""Motion stage: how much the picture moves, where, and how much of it is black.

Reads the per-frame arrays the shot stage measured during its single decode, so it
decodes nothing: ``analysis.motion_energy`` (mean grey-level change between
consecutive blurred ~160 px frames above a noise floor, 0..1), ``analysis.local_motion``
(the same change in the most active of 12 x 12 blocks) and ``analysis.black``.

"Static" means nothing moves anywhere: both the whole-frame mean and the most active
block stay still. A talking head to camera moves a few percent of the frame (mouth,
eyes, a hand): its whole-frame mean is as low as a still image's (~0.0002), its local
motion is not (0.01-0.03 against 0.0002 for a still with heavy grain). It records;
dropping static or black clips is the filter stage's decision.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from curation.stage import Item, Resources, Stage


@dataclass
class MotionConfig:
    # Clips whose mean motion energy is below this move little overall. Measured at 160 px:
    # a still picture with heavy grain ~0.00001, a slow zoom ~0.001, handheld sports
    # footage 0.004-0.03, a moving test pattern ~0.008, a talking head 0.0002-0.0005.
    static_threshold: float = 0.0005
    # ...and if their mean local motion is below this too, nothing moves anywhere: static.
    # Measured: still, black and slate 0, heavy grain 0.0002, a talking head with a still
    # camera 0.02, carphone (ITU talking-head test sequence) 0.035.
    local_static_threshold: float = 0.003


class MotionStage(Stage):
    name = "motion"
    resources: ClassVar[Resources] = Resources(cpus=0.25)

    def __init__(self, config: MotionConfig | None = None):
        super().__init__(config or MotionConfig())

    def process(self, item: Item) -> list[Item]:
        analysis = item.get("analysis")
        if not analysis or not analysis.get("motion_energy"):
            raise ValueError("no analysis.motion_energy: the shot stage must run before motion")
        # Element 0 is the change into the clip's first frame (zeroed, not motion).
        energy = np.asarray(analysis["motion_energy"][1:] or [0.0], dtype=np.float64)
        score = float(energy.mean())
        motion = {
            "score": round(score, 6),
            "p95": round(float(np.percentile(energy, 95)), 6),
            "black_ratio": round(float(np.mean(analysis["black"])), 4),
        }
        local = analysis.get("local_motion")
        still_overall = score < self.config.static_threshold
        if local is None:  # analysis from before local motion was measured
            motion["static"] = still_overall
        else:
            local_score = float(np.mean(local[1:] or [0.0]))
            motion["local_score"] = round(local_score, 6)
            motion["static"] = still_overall and local_score < self.config.local_static_threshold
        return [{**item, "motion": {**item.get("motion", {}), **motion}}]
