"""The judge panel (benchmarks/judges.py): it judges decoded clips by what the prompt names,
its judges disagree and tie on close calls, its win rate is a coin toss between equal clips,
and its annotations are Label Studio exports that `tandem annotate import` reads."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from benchmarks.judges import AXES, COLOUR_JND, Percept, judge_tasks, make_panel, win_rate

RATE = 16000


def clip(rgb, hz: float, frames: int = 4, size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """(video (3, T, H, W) in [-1, 1] of one colour, audio (1, N): a tone of ``hz``)."""
    video = np.broadcast_to((np.asarray(rgb, np.float32) * 2 - 1)[:, None, None, None], (3, frames, size, size))
    audio = 0.5 * np.sin(2 * np.pi * hz * np.arange(RATE // 2) / RATE)[None]
    return np.ascontiguousarray(video), audio


def percept(rgb, hz):
    return Percept.of(*clip(rgb, hz), RATE)


RED_LOW = "a kite in red light with a low tone"
BLUE_HIGH = "a kite in blue light with a high tone"


def outcomes(panel, a, b, prompt, axis, draws=200, seed=0):
    rng = np.random.default_rng(seed)
    ma, mb = a.misfit(prompt), b.misfit(prompt)
    return [Counter(judge.judge(ma, mb, axis, rng) for _ in range(draws)) for judge in panel]


def test_what_the_panel_prefers_depends_on_the_prompt():
    reddish_low, bluish_high = percept((0.6, 0.45, 0.45), 500), percept((0.45, 0.45, 0.6), 4000)
    panel = make_panel(5, seed=0)
    for axis in AXES:
        for votes in outcomes(panel, reddish_low, bluish_high, RED_LOW, axis):
            assert votes["a"] > 0.95 * sum(votes.values()), (axis, votes)
        for votes in outcomes(panel, reddish_low, bluish_high, BLUE_HIGH, axis):
            assert votes["b"] > 0.95 * sum(votes.values()), (axis, votes)


def test_the_panel_hears_the_pitch_and_sees_the_colour_of_decoded_samples():
    p = percept((0.2, 0.7, 0.25), 1500)
    assert p.rgb == pytest.approx((0.2, 0.7, 0.25), abs=1e-6)
    assert p.centroid_hz == pytest.approx(1500, rel=0.02)
    assert p.misfit("a boat in green light with a middle tone") == pytest.approx({"colour": 0, "sound": 0}, abs=0.2)
    with pytest.raises(ValueError, match="cannot read a colour"):
        p.misfit("a boat at dusk")


def test_judges_disagree_and_tie_on_a_close_call():
    a, b = percept((0.5 + COLOUR_JND, 0.5, 0.5), 1000), percept((0.5, 0.5, 0.5), 1000)  # a: one step redder
    votes = outcomes(make_panel(5, seed=0), a, b, RED_LOW, "colour")
    assert all(v["a"] > v["b"] > 0 and v["tie"] > 0 for v in votes), votes  # right more often, never always
    assert len({v["a"] for v in votes}) == len(votes)  # each judge its own way


def test_win_rate_between_the_same_clips_is_a_coin_toss_and_a_better_set_wins():
    rng = np.random.default_rng(1)
    clips = [percept(rng.uniform(0.4, 0.6, 3), rng.uniform(400, 4000)) for _ in range(40)]
    prompts = [RED_LOW, BLUE_HIGH] * 20
    panel = make_panel(5, seed=0)
    same = win_rate(clips, clips, prompts, panel, seed=0)
    assert same.low <= 0.5 <= same.high and same.ties > 0.3
    better = [percept((0.8, 0.2, 0.2), 500) if p == RED_LOW else percept((0.2, 0.3, 0.85), 4000) for p in prompts]
    won = win_rate(better, clips, prompts, panel, seed=0)
    assert won.low > 0.9 and won.judgements == 200


def test_the_panel_annotates_tasks_as_a_label_studio_export_that_imports_as_judged():
    from reward.annotation.labelstudio_exports import import_exports
    from reward.annotation.labelstudio_tasks import AnnotationConfig

    cfg = AnnotationConfig(axes=list(AXES))
    percepts = {"good": percept((0.75, 0.25, 0.25), 500), "grey": percept((0.5, 0.5, 0.5), 3000),
                "close": percept((0.5, 0.5, 0.5), 3000)}
    tasks = [{"data": {"prompt": RED_LOW, "video_a": "", "video_b": "",
                       "tandem": {"config": cfg.digest(), "mode": "pairwise", "prompt_id": "p", "schema": cfg.schema(),
                                  "task": f"{a}~{b}", "items": [a, b]}}} for a, b in (("good", "grey"), ("grey", "close"))]
    panel = make_panel(5, seed=0)
    export = judge_tasks(tasks, percepts, panel, seed=0, judges_per_task=3)
    result = import_exports({"export.json": export}, known_items=set(percepts), expected_config=cfg.digest())
    assert result.tasks == 2 and result.annotations == 6 and len(result.rows) == 18
    assert {r["annotator"] for r in result.rows} <= {j.name for j in panel}
    clear = [r["outcome"] for r in result.rows if r["task_id"] == "good~grey"]
    assert clear == ["a"] * 9  # every judge, every axis: the red, low clip
    same = Counter(r["outcome"] for r in result.rows if r["task_id"] == "grey~close")
    assert same["tie"] >= 3  # equal clips: mostly ties, and noise


def test_colour_shift_tells_a_drift_of_every_clip_from_a_move_toward_each_prompts_colour():
    from benchmarks.judged_loop import colour_shift
    from benchmarks.judges import COLOURS

    prompts = [RED_LOW, RED_LOW, BLUE_HIGH, BLUE_HIGH]
    base = np.full((4, 3), 0.5)
    drift = colour_shift(base + [0.0, 0.0, 0.05], base, prompts)  # every clip bluer, whatever it asked
    assert drift[0] == pytest.approx(0.05) and drift[1] == pytest.approx(0.0, abs=1e-9)
    toward = base + 0.1 * (np.array([COLOURS["red"]] * 2 + [COLOURS["blue"]] * 2) - 0.5)
    common, specific, cos = colour_shift(toward, base, prompts)
    assert specific > common and cos == pytest.approx(1.0)
    assert colour_shift(2 * base - toward, base, prompts)[2] == pytest.approx(-1.0)  # away from them
