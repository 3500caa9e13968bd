"""Motion stage: how much the picture moves, and how much of it is black.

Reads the per-frame arrays the shot stage measured during its single decode
(``analysis.motion_energy``: mean grey-level change between consecutive blurred
~160 px frames above a noise floor, 0..1; ``analysis.black``), so it decodes nothing.
It records; dropping static or black clips is the filter stage's decision.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from curation.stage import Item, Resources, Stage


@dataclass
class MotionConfig:
    # Clips whose mean motion energy is below this are static. Measured at 160 px:
    # a still picture with heavy grain ~0.00001, a slow zoom ~0.001, handheld sports
    # footage 0.004-0.03, a moving test pattern ~0.008.
    static_threshold: float = 0.0005


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
            "static": score < self.config.static_threshold,
            "black_ratio": round(float(np.mean(analysis["black"])), 4),
        }
        return [{**item, "motion": {**item.get("motion", {}), **motion}}]
