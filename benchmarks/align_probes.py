"""Why alignment against the judged reward model does not win the panel: two probes of one
``benchmarks/align_winrate.py`` work directory (its base checkpoint, prompts and reward model).

    PYTHONPATH=. python benchmarks/align_probes.py --work DIR [--run align-clean]

1. Generator side: can the base model make a clip's colour depend on the prompt at all? Its
   velocity is exactly zero (the output projection starts at zero, ``DualDiT.init_module``), so
   its clips depend on the noise only. What reaches that projection does depend on the prompt
   (text cross-attention is not gated). Printed, per flow time: the share of the projection's
   input variance that is across prompts (the same noises for every prompt), and a ridge
   read-out of the named colour's RGB from its token-mean input (the noise varying), fitted on
   the training prompts and scored (R^2) on the evaluation splits: what one linear layer, the first thing GRPO moves, could
   learn. The colours are the panel's words, used only to score the probe.
2. Reward side: does the reward model prefer a base clip moved 0.01 (one just-noticeable step)
   toward the colour its prompt names? Printed per head and split: the mean change of the score
   (and, with the contrast of ``rewards.<key>.contrast``, of the contrastive score) and the
   share of clips whose score rose, on step 0's evaluation clips of ``--run``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.judged_loop import REWARD_KEY, SEQUENCE  # noqa: E402
from benchmarks.judged_prompts import eval_prompts  # noqa: E402
from benchmarks.judges import COLOURS, prompt_targets  # noqa: E402


def lines(path: Path) -> list[str]:
    return [p for p in path.read_text().splitlines() if p]


def generator_probe(checkpoint: Path, train: list[str], splits: dict[str, list[str]], samples: int = 8,
                    times=(0.9, 0.5, 0.1), ridge: float = 10.0) -> dict:
    """{(t, split): R^2 (R, G, B)} and {t: share of the head input's variance across prompts}."""
    import torch

    from model.dit import DualDiT
    from reward.grpo.align import AlignConfig, model_config
    from reward.grpo.align_inputs import encode_prompts
    from training.checkpoint_loader import load_weights_into
    from training.encoders import load_text

    cfg = AlignConfig(preset="debug")
    model = DualDiT(model_config(cfg))
    load_weights_into(model, str(checkpoint))
    model.eval()
    encoder = load_text(cfg.encoder, "cpu")
    seq = cfg.sequence
    shapes = ((model.cfg.video.latent_channels, *seq.video_latent_shape),
              (model.cfg.audio.latent_channels, seq.audio_latents))
    caught = {}
    model.video_io.proj_out.register_forward_hook(lambda m, i, o: caught.__setitem__("x", i[0].detach()))

    def head_input(prompts, t, seed, shared=False):  # (P, S, tokens, D); shared: the same S noises per prompt
        cond = encode_prompts(encoder, prompts, SEQUENCE["fps"], "cpu")
        g = torch.Generator().manual_seed(seed)
        n = len(prompts) * samples
        idx = torch.arange(len(prompts)).repeat_interleave(samples)
        noise = [torch.randn(samples, *shape, generator=g).repeat(len(prompts), *[1] * len(shape)) if shared
                 else torch.randn(n, *shape, generator=g) for shape in shapes]
        with torch.no_grad():
            model(*noise,
                  torch.full((n,), t), torch.full((n,), t), cond.text_emb[idx], cond.text_mask[idx],
                  cond.text_spans[idx], fps=SEQUENCE["fps"])
        return caught["x"].view(len(prompts), samples, *caught["x"].shape[1:]).numpy()

    def colours(prompts):
        return np.repeat([COLOURS[prompt_targets(p)[0]] for p in prompts], samples, 0)

    share, r2 = {}, {}
    for t in times:
        x = head_input(train, t, seed=0, shared=True)
        share[t] = float(x.mean(1).var(0).sum() / x.var((0, 1)).sum())
        x = head_input(train, t, seed=0)  # the read-out learns with the noise varying too
        feats = x.mean(2).reshape(-1, x.shape[-1])
        mu, sd = feats.mean(0), feats.std(0) + 1e-6
        a, y = (feats - mu) / sd, colours(train)
        w = np.linalg.solve(a.T @ a + ridge * np.eye(a.shape[1]), a.T @ (y - y.mean(0)))
        for split, prompts in splits.items():
            b = (head_input(prompts, t, seed=1).mean(2).reshape(-1, x.shape[-1]) - mu) / sd
            truth = colours(prompts)
            pred = b @ w + y.mean(0)
            r2[(t, split)] = 1 - ((pred - truth) ** 2).sum(0) / ((truth - truth.mean(0)) ** 2).sum(0)
    return {"share": share, "r2": r2}


def reward_probe(work: Path, run: str, train: list[str], prompts: list[str], step: float = 0.01) -> dict:
    """{(kind, head, split): (mean change, share of clips that rose)} for base clips moved ``step``
    of RGB toward their prompt's colour; kind: raw score or contrastive (against ``train``)."""
    import torch

    from reward.grpo.align_inputs import contrastive_scores, load_reward_model
    from reward.scoring.clip_store import decode_media
    from reward.scoring.sources import Clips

    source = load_reward_model(work / f"reward-{REWARD_KEY}" / "model")
    split_of = {p: k for k, ps in eval_prompts().items() for p in ps}
    where = work / run / "eval" / "step00000000"
    changes: dict = {}
    for i, prompt in enumerate(prompts):
        media = [decode_media(f) for f in sorted(where.glob(f"prompt{i:03d}_sample*.mp4"))]
        video, audio = torch.stack([m[0] for m in media]), torch.stack([m[1] for m in media])
        fps, rate = media[0][2], media[0][3]
        rgb = ((video + 1) / 2).clamp(0, 1).flatten(2).mean(2)
        toward = torch.tensor(COLOURS[prompt_targets(prompt)[0]]) - rgb
        moved = (video + 2 * step * (toward / toward.norm(dim=1, keepdim=True))[:, :, None, None, None]).clamp(-1, 1)
        for kind, score in (("raw", source.score), ("contrast", lambda c: contrastive_scores(source, c, train))):
            before = score(Clips([prompt] * len(media), video, audio, fps, rate))
            after = score(Clips([prompt] * len(media), moved, audio, fps, rate))
            for head in before:
                changes.setdefault((kind, head, split_of[prompt]), []).extend((after[head] - before[head]).tolist())
    return {k: (float(np.mean(v)), float(np.mean(np.array(v) > 0))) for k, v in sorted(changes.items())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", required=True, help="a work directory of benchmarks/align_winrate.py")
    ap.add_argument("--run", default="align-clean", help="the align run whose step-0 clips the reward probe moves")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    work = Path(args.work)
    train, prompts = lines(work / "train_prompts.txt"), lines(work / "eval_prompts.txt")
    gen = generator_probe(work / "base.safetensors", train, eval_prompts())
    print(f"== generator side, base checkpoint of {work}")
    for t, share in gen["share"].items():
        fits = "  ".join(f"{split} R^2 (R, G, B) {np.round(r, 2).tolist()}" for (s, split), r in gen["r2"].items()
                         if s == t)
        print(f"  t {t}: head input variance across prompts {100 * share:.1f} %; colour read-out: {fits}")
    print(f"== reward side: base clips of {args.run} moved 0.01 toward the named colour")
    for (kind, head, split), (mean, rose) in reward_probe(work, args.run, train, prompts).items():
        print(f"  {kind:<8} {head:<8} {split:<21} score change {mean:+.3f}  clips whose score rose {100 * rose:.0f} %")


if __name__ == "__main__":
    main()
