"""Why the latent reward model does not learn the judge panel's rule: what its inputs carry.

    PYTHONPATH=. python benchmarks/judged_learnability.py --work DIR [--seeds 0,1,2]

``DIR`` is a work directory of ``benchmarks/reward_accuracy.py`` (``DIR/seed<N>``: the base
model's rollouts of the training and evaluation prompts and the panel's rankings of both); a
seed missing there is made first, the same way. The panel (``benchmarks.judges``) prefers the
clip whose decoded mean colour and spectral centroid are closer to what the prompt names. A
reward model has to learn two things from the rankings: what a clip looks and sounds like (clip
side) and what the prompt asks for (text side). Each is measured here with the other given:

1. Clip side: can what the panel perceives be read from the latents the reward model scores?
   The *true* percepts (mean R, G, B; log2 centroid) are regressed on the training clips'
   latents (all of them flattened; a ridge regression, strength chosen on the training clips
   by leave-one-prompt-out, and a one-hidden-layer MLP). Printed: R^2 on the evaluation clips.
   Regression on the percepts themselves is far more than a few hundred rankings teach.
2. Text side: given the exact percepts, can a head learn from the training rankings which
   percept each prompt asks for? Bradley-Terry on the non-tied training judgements (as
   ``tandem reward train``, per axis), score = <g(prompt), p> + <u, p> + <v, p^2> (p: the
   percepts, standardised; the squares let a head prefer a percept near a target), with
   g a linear map of the prompt's text embedding (the generator's own, stored with every
   rollout) mean-pooled over its tokens, or attention-pooled (4 learned queries per axis);
   and, for reference, of a bag of the training prompts' words (word identity, no encoder).
   Printed: accuracy without ties on the held-out rankings, per evaluation split.

The percepts are the panel's: this is a diagnosis, never a reward model (``reward/`` may not
import ``benchmarks/``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.judged_loop import LoopConfig, Timer, reward_model  # noqa: E402
from benchmarks.judged_prompts import eval_prompts  # noqa: E402
from benchmarks.judges import AXES, percepts_of_rollouts  # noqa: E402

PERCEPTS = ("R", "G", "B", "log2 centroid")


def load(work: Path) -> dict:
    """Per clip: flattened video and audio latents, the prompt's token embeddings, the percepts;
    the training and held-out judgements as index arrays."""
    import torch

    from reward.annotation.rankings import read_rankings
    from reward.scoring.clip_store import ClipStore, find_clips

    dirs = [work / "rollouts", work / "rollouts-eval"]
    clips = find_clips(dirs)
    percepts = percepts_of_rollouts(*dirs)
    rows = [ClipStore(clips, "latents").inputs(i) for i in range(len(clips))]
    length = max(r["text_emb"].shape[0] for r in rows)
    text = torch.zeros(len(rows), length, rows[0]["text_emb"].shape[1])
    mask = torch.zeros(len(rows), length, dtype=torch.bool)
    for i, r in enumerate(rows):
        text[i, : len(r["text_emb"])], mask[i, : len(r["text_emb"])] = r["text_emb"], True
    index = {c.id: i for i, c in enumerate(clips)}
    trained_on = {c.id for c in find_clips(dirs[:1])}

    def judgements(path: Path) -> dict:
        kept = [r for r in read_rankings(path) if r["outcome"] != "tie"]
        return {"a": np.array([index[r["item_a"]] for r in kept]), "b": np.array([index[r["item_b"]] for r in kept]),
                "axis": np.array([AXES.index(r["axis"]) for r in kept]),
                "a_won": np.array([r["outcome"] == "a" for r in kept], np.float32)}

    return {"video": np.stack([r["video_latents"].flatten().numpy() for r in rows]),
            "audio": np.stack([r["audio_latents"].flatten().numpy() for r in rows]),
            "text": text / text[mask].std(), "mask": mask, "prompt": np.array([c.prompt for c in clips]),
            "percept": np.array([[*percepts[c.id].rgb, np.log2(percepts[c.id].centroid_hz)] for c in clips]),
            "train_clip": np.array([c.id in trained_on for c in clips]),
            "train": judgements(work / "judged-train" / "rankings"),
            "heldout": judgements(work / "judged-eval" / "rankings")}


def bag_of_words(d: dict) -> tuple:
    """The prompts as bags of the words the training prompts use (one token each): word identity
    without the text encoder, a text side as good as the training prompts allow."""
    import re

    import torch

    words = [re.findall(r"[a-z]+", p) for p in d["prompt"]]
    vocab = sorted({w for ws, train in zip(words, d["train_clip"], strict=True) if train for w in ws})
    bags = torch.zeros(len(words), 1, len(vocab))
    for i, ws in enumerate(words):
        for w in set(ws) & set(vocab):
            bags[i, 0, vocab.index(w)] = 1
    return bags, torch.ones(len(words), 1, dtype=torch.bool)


def r2(pred: np.ndarray, y: np.ndarray) -> np.ndarray:
    return 1 - ((y - pred) ** 2).mean(0) / y.var(0)


def ridge(x: np.ndarray, y: np.ndarray, groups: np.ndarray, x_test: np.ndarray) -> np.ndarray:
    """Ridge regression with its strength chosen by leave-one-prompt-out on (x, y)."""
    mu, sd = x.mean(0), x.std(0) + 1e-8
    x, x_test = (x - mu) / sd, (x_test - mu) / sd

    def fit(xs, ys, lam):
        w = np.linalg.solve(xs.T @ xs + lam * np.eye(xs.shape[1]), xs.T @ (ys - ys.mean(0)))
        return lambda z: z @ w + ys.mean(0)

    def cv_error(lam):
        return sum(((fit(x[groups != g], y[groups != g], lam)(x[groups == g]) - y[groups == g]) ** 2).sum()
                   for g in np.unique(groups))

    best = min(10.0 ** np.arange(-1, 5), key=cv_error)
    return fit(x, y, best)(x_test)


def mlp(x: np.ndarray, y: np.ndarray, x_test: np.ndarray, steps: int = 2000) -> np.ndarray:
    import torch

    torch.manual_seed(0)
    mu, sd, ym, ys = x.mean(0), x.std(0) + 1e-8, y.mean(0), y.std(0)
    xt, yt = torch.tensor((x - mu) / sd, dtype=torch.float32), torch.tensor((y - ym) / ys, dtype=torch.float32)
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], 64), torch.nn.GELU(), torch.nn.Linear(64, y.shape[1]))
    opt = torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=0.05)
    for _ in range(steps):
        loss = ((net(xt) - yt) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return net(torch.tensor((x_test - mu) / sd, dtype=torch.float32)).numpy() * ys + ym


def clip_side(d: dict) -> dict[str, np.ndarray]:
    """model -> R^2 per percept on the evaluation clips, regressed on the training clips' latents."""
    tr, te = d["train_clip"], ~d["train_clip"]
    out = {}
    for name, x, cols in (("video", d["video"], slice(0, 3)), ("audio", d["audio"], slice(3, 4))):
        y = d["percept"][:, cols]
        out[f"ridge on {name} latents"] = r2(ridge(x[tr], y[tr], d["prompt"][tr], x[te]), y[te])
        out[f"MLP on {name} latents"] = r2(mlp(x[tr], y[tr], x[te]), y[te])
    return out


def text_side(d: dict, pooling: str, seed: int, steps: int = 800) -> dict[str, dict[str, float]]:
    """split -> axis -> held-out accuracy without ties of a text-conditioned head on the exact percepts."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    p = d["percept"]
    percept = torch.tensor((p - p[d["train_clip"]].mean(0)) / p[d["train_clip"]].std(0), dtype=torch.float32)
    text, mask = bag_of_words(d) if pooling == "words" else (d["text"], d["mask"])
    dim, queries = text.shape[-1], 4 if pooling == "attention" else 1
    q = torch.nn.Parameter(torch.randn(len(AXES), queries, dim) * 0.1)
    g = torch.nn.Parameter(torch.randn(len(AXES), queries, dim, percept.shape[1]) * 0.05)
    u = torch.nn.Parameter(torch.zeros(len(AXES), percept.shape[1]))
    v = torch.nn.Parameter(torch.zeros(len(AXES), percept.shape[1]))
    opt = torch.optim.Adam([q, g, u, v], lr=1e-2, weight_decay=1e-3)

    def score(idx, axis):
        t, m = text[idx], mask[idx]
        if pooling == "attention":
            w = torch.einsum("nld,nkd->nkl", t, q[axis]).masked_fill(~m[:, None], -1e9).softmax(-1)
        else:
            w = (m[:, None].float() / m.sum(1)[:, None, None]).expand(-1, queries, -1)
        asked = torch.einsum("nkl,nld,nkde->ne", w, t, g[axis])  # the percept the prompt asks for
        x = percept[idx]  # the squares let a head prefer a percept near a target, not only more of it
        return ((asked + u[axis]) * x).sum(1) + (v[axis] * x**2).sum(1)

    def margin(j):
        a, b, axis = (torch.from_numpy(j[k]) for k in ("a", "b", "axis"))
        return score(a, axis) - score(b, axis)

    for _ in range(steps):
        loss = F.binary_cross_entropy_with_logits(margin(d["train"]), torch.from_numpy(d["train"]["a_won"]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    h = d["heldout"]
    with torch.no_grad():
        hit = ((margin(h) > 0).numpy() == (h["a_won"] > 0))
    prompts = d["prompt"][h["a"]]
    return {split: {axis: float(hit[(h["axis"] == k) & np.isin(prompts, members)].mean()) for k, axis in enumerate(AXES)}
            for split, members in eval_prompts().items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", required=True, help="benchmarks/reward_accuracy.py's work directory")
    ap.add_argument("--seeds", default="0,1,2")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    for seed in map(int, args.seeds.split(",")):
        work = Path(args.work) / f"seed{seed}"
        if not (work / "judged-eval" / "rankings").is_dir():
            reward_model(LoopConfig(work=str(work), seed=seed), Timer())
        d = load(work)
        print(f"\n== seed {seed} ({work}): {int(d['train_clip'].sum())} training clips, "
              f"{int((~d['train_clip']).sum())} evaluation clips")
        print("1. clip side: the panel's percepts regressed on the latents; R^2 on the evaluation clips")
        for name, values in clip_side(d).items():
            cols = PERCEPTS[:3] if "video" in name else PERCEPTS[3:]
            print(f"   {name:<22} " + "  ".join(f"{c} {v:+.2f}" for c, v in zip(cols, values, strict=True)))
        print("2. text side: a text-conditioned head on the exact percepts; held-out accuracy without ties")
        for pooling in ("mean", "attention", "words"):
            name = "bag of training words" if pooling == "words" else f"{pooling}-pooled prompt"
            for split, per_axis in text_side(d, pooling, seed).items():
                print(f"   {name:<24} {split:<21} "
                      + "  ".join(f"{axis} {100 * v:5.1f} %" for axis, v in per_axis.items()))


if __name__ == "__main__":
    main()
