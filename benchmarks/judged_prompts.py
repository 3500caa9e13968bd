"""The prompt sets of the judged loop: each names a colour and a pitch (``benchmarks.judges``).

Training prompts use 4 of the 6 colours and 3 of the 4 pitches, and only 8 of the 12
combinations of those. Evaluation prompts are of two kinds, on subjects never trained on:

- ``heldout_combinations``: the 4 left-out combinations of seen values (compositional: each
  value was seen, never with that partner);
- ``unseen_values``: a colour or a pitch never named in training (purple, teal, shrill).
"""

from __future__ import annotations

from benchmarks.judges import COLOURS, PITCHES

SEEN_COLOURS = ("red", "green", "blue", "yellow")
SEEN_PITCHES = ("low", "middle", "high")
HELDOUT_COMBINATIONS = (("red", "high"), ("green", "low"), ("blue", "middle"), ("yellow", "high"))
UNSEEN_VALUE_COMBINATIONS = (("purple", "low"), ("teal", "high"), ("red", "shrill"), ("blue", "shrill"))
TRAIN_SUBJECTS = ("a kite", "a lantern", "a car", "a tent")
EVAL_SUBJECTS = ("a boat", "a bird")


def prompt(subject: str, colour: str, pitch: str) -> str:
    return f"{subject} in {colour} light with a {pitch} tone"


def train_prompts(subjects: int = 3) -> list[str]:
    combos = [(c, p) for c in SEEN_COLOURS for p in SEEN_PITCHES if (c, p) not in HELDOUT_COMBINATIONS]
    return [prompt(s, c, p) for s in TRAIN_SUBJECTS[:subjects] for c, p in combos]


def eval_prompts(subjects: int = 2, unseen: bool = True) -> dict[str, list[str]]:
    """split name -> prompts."""
    out = {"heldout_combinations": [prompt(s, c, p) for s in EVAL_SUBJECTS[:subjects] for c, p in HELDOUT_COMBINATIONS]}
    if unseen:
        out["unseen_values"] = [prompt(EVAL_SUBJECTS[i % len(EVAL_SUBJECTS)], c, p)
                                for i, (c, p) in enumerate(UNSEEN_VALUE_COMBINATIONS)]
    return out


assert set(SEEN_COLOURS) < set(COLOURS) and set(SEEN_PITCHES) < set(PITCHES)
