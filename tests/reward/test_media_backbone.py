"""The media backbone: a net trained from scratch on decoded frames, the waveform and the
prompt's words. It scores as a reward source, saves and loads exactly, and learns a
preference that depends on the prompt from pairwise judgements alone (synthetic clips:
plumbing, not a figure; benchmarks/reward_accuracy.py --recipe media_cpu measures it against
the judge panel on generated clips)."""

import pytest
import torch
import torch.nn.functional as F

from reward.scoring.backbones.media_stats import MediaBackboneConfig, mel_filterbank, word_buckets
from reward.scoring.reward_model import RewardModel, RewardModelConfig, load_reward_model
from reward.scoring.sources import Clips

HEADS = ("colour", "overall")
RATE = 16000
SUBJECTS = ("kite", "tent", "car", "boat")
TINTS = {"red": torch.tensor([1.0, -0.5, -0.5]), "blue": torch.tensor([-0.5, -0.5, 1.0])}


def clips_of(tints: torch.Tensor, prompts: list[str], seed: int = 0) -> Clips:
    """Grey noisy clips, each shifted by a few hundredths of full scale along its tint."""
    g = torch.Generator().manual_seed(seed)
    b = len(prompts)
    video = 0.1 * torch.randn(b, 3, 6, 24, 24, generator=g) + 0.05 * tints[:, :, None, None, None]
    t = torch.arange(RATE // 2) / RATE
    audio = 0.3 * torch.sin(2 * torch.pi * 440 * t).expand(b, 1, -1) + 0.01 * torch.randn(b, 1, len(t), generator=g)
    return Clips(prompts=prompts, video=video.clamp(-1, 1), audio=audio, fps=8.0, sample_rate=RATE)


RICH = dict(channels=(8, 16), spread=True, clip_mlp=True)  # conv features, spreads, an MLP


def model(seed=0, **variant) -> RewardModel:
    torch.manual_seed(seed)
    return RewardModel(RewardModelConfig(backbone="media", heads=HEADS,
                                         media=MediaBackboneConfig(frames=4, size=16, **variant)))


def random_tints(n: int, g: torch.Generator) -> torch.Tensor:
    """Mixes of the red and blue directions: how red and how blue each clip looks."""
    w = torch.rand(n, 2, generator=g)
    return w[:, :1] * TINTS["red"] + w[:, 1:] * TINTS["blue"]


def redness(tints: torch.Tensor) -> torch.Tensor:
    return tints @ (TINTS["red"] - TINTS["blue"])


@pytest.mark.parametrize("variant", [{}, RICH], ids=["default", "rich"])
def test_scores_every_head_as_a_media_reward_source_independent_of_the_batch_and_survive_saving(tmp_path, variant):
    m = model(**variant)
    clips = clips_of(random_tints(4, torch.Generator().manual_seed(1)), ["a kite in red light"] * 4)
    scores = m.score(clips)
    assert m.uses == "media" and list(scores) == list(HEADS) and all(v.shape == (4,) for v in scores.values())
    alone = m.score(Clips(prompts=clips.prompts[:1], video=clips.video[:1], audio=clips.audio[:1], fps=8.0,
                          sample_rate=RATE))
    torch.testing.assert_close(alone["overall"], scores["overall"][:1], atol=1e-5, rtol=1e-5)
    loaded = load_reward_model(m.save(tmp_path / "model"))
    for head in HEADS:
        torch.testing.assert_close(loaded.score(clips)[head], scores[head])


@pytest.mark.parametrize("variant", [{}, RICH], ids=["default", "rich"])
def test_learns_from_judgements_alone_which_clip_the_prompt_prefers(variant):
    """Annotators prefer the redder clip under "red light" prompts and the bluer one under "blue
    light": the same two clips rank oppositely depending on the words."""
    m, g = model(**variant), torch.Generator().manual_seed(0)
    optimiser = torch.optim.AdamW(m.parameters(), lr=3e-3)

    def judged_pairs(n: int, seed: int):
        tints = random_tints(2 * n, g)
        words = ["red" if i % 2 else "blue" for i in range(n)]
        prompts = [f"a {SUBJECTS[i % len(SUBJECTS)]} in {w} light" for i, w in enumerate(words)]
        clips = clips_of(tints, [p for p in prompts for _ in (0, 1)], seed=seed)
        sign = torch.tensor([1.0 if w == "red" else -1.0 for w in words])
        first_wins = (sign * (redness(tints[0::2]) - redness(tints[1::2]))) > 0
        return clips, first_wins

    m.train()
    for step in range(150):
        clips, first_wins = judged_pairs(16, seed=step)
        scores = m(clips)[:, 0]
        margin = (scores[0::2] - scores[1::2]) * (2 * first_wins.float() - 1)
        loss = -F.logsigmoid(margin).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    clips, first_wins = judged_pairs(200, seed=10_000)
    colour = m.score(clips)["colour"]
    accuracy = ((colour[0::2] > colour[1::2]) == first_wins).float().mean().item()
    assert accuracy >= 0.85, accuracy


def test_mel_filters_cover_the_spectrum_and_words_hash_alike_in_every_process():
    bank = mel_filterbank(16, 512, RATE)
    assert bank.shape == (16, 257) and (bank >= 0).all() and (bank.sum(1) > 0).all()
    assert word_buckets("A Kite in RED light", 4096) == word_buckets("a kite in red light", 4096)
    assert word_buckets("red light", 4096) == [3983, 3319]  # crc32, not Python's per-process hash


def test_a_bound_keeps_clips_far_outside_the_rankings_from_scoring_without_limit():
    """Where an aligned policy drifts off what the rankings showed, the bounded model's score
    levels off; the unbounded one's keeps growing with the drift."""
    red = TINTS["red"][None]

    def scores(m):
        m.train()  # the normalisation's running statistics from in-range clips, as training leaves them
        for seed in range(100):
            m(clips_of(random_tints(16, torch.Generator().manual_seed(seed)), ["a kite in red light"] * 16))
        far = [m.score(clips_of(red * scale, ["a kite in red light"], seed=0))["colour"].item() for scale in (10, 20)]
        return abs(far[1] - far[0])

    assert scores(model(bound=2.0)) < 1e-3 < scores(model())
