"""What the alignment trainer is made of: the recipe's reward sources, the hacking monitor,
the starting checkpoint's identity and the prompt sets."""

from __future__ import annotations

import pytest
import torch

from model.config import ConfigError
from pipelines.config_loader import load_config, to_dict
from reward.grpo.align import AlignConfig, HackingConfig, HackingMonitor
from reward.grpo.align_inputs import (
    build_sources,
    contrastive_scores,
    metric_heads,
    parse_rewards,
    prompt_texts,
)
from reward.scoring.sources import Clips
from training.checkpoint_loader import CheckpointError, checkpoint_config

TWO_SOURCES = ["rewards={bright: {source: brightness, coefficient: 2.0}, "
               "exposure: {source: brightness, options: {target: 0.5}, optimise: false}}"]


def test_recipe_rewards_become_sources_with_named_heads_and_overrides_reach_them():
    cfg = load_config(AlignConfig, None, TWO_SOURCES + ["rewards.bright.coefficient=3"])
    assert cfg.rewards["bright"].coefficient == 3.0 and not cfg.rewards["exposure"].optimise
    sources = build_sources(cfg.rewards, {})
    heads = [h for _, _, named in sources for _, h in named]
    assert [(h.id, h.coefficient, h.optimised) for h in heads] == [("bright", 3.0, True), ("exposure", 1.0, False)]
    video = torch.full((2, 3, 1, 2, 2), 0.5)  # luma 0.75
    scores = [s.score(Clips(["a", "b"], video=video)) for _, s, _ in sources]
    assert scores[0]["brightness"][0].item() == pytest.approx(0.75)
    assert scores[1]["brightness"][0].item() == pytest.approx(-0.25)  # distance to the 0.5 target
    assert load_config(AlignConfig, None, TWO_SOURCES).rewards["bright"].coefficient == 2.0
    assert to_dict(cfg)["rewards"]["exposure"]["options"] == {"target": 0.5}  # saved with the run


def test_every_metric_head_of_reward_sources_is_usable_by_name():
    assert {"brightness", "loudness"} <= set(metric_heads())


@pytest.mark.parametrize("rewards, match", [
    ({"x": {"source": "sharpness"}}, "not a metric head"),
    ({"x": {"source": ""}}, "source is empty"),
    ({"x": {"source": "brightness", "optimise": False}}, "at least one must be optimised"),
    ({"x": {"source": "brightness", "coef": 1}}, "unknown config key"),
])
def test_bad_reward_entries_say_what_to_fix(rewards, match):
    with pytest.raises(ConfigError, match=match):
        parse_rewards(rewards)


def test_metric_head_options_and_heads_are_checked():
    with pytest.raises(ConfigError, match="options"):
        build_sources(parse_rewards({"x": {"source": "loudness", "options": {"target": 3}}}), {})
    with pytest.raises(ConfigError, match="heads"):
        build_sources(parse_rewards({"x": {"source": "loudness", "heads": ["lufs"]}}), {})


def test_a_trained_reward_model_becomes_a_source_whose_heads_the_recipe_picks(tmp_path):
    from reward.scoring.backbones.latent import LatentBackboneConfig
    from reward.scoring.reward_model import RewardModel, RewardModelConfig

    torch.manual_seed(0)
    model = RewardModel(RewardModelConfig(heads=("visual_quality", "overall"),
                                          latent=LatentBackboneConfig(dim=32, depth=1, heads=2)))
    model.save(tmp_path / "rm")
    rewards = parse_rewards({"rm": {"source": "models:/tandem-reward@prod", "heads": ["overall"], "coefficient": 2}})
    [(key, source, named)] = build_sources(rewards, {"rm": str(tmp_path / "rm")})
    assert source.uses == "latents" and [(name, head.id, head.coefficient) for name, head in named] == [
        ("overall", "rm.overall", 2.0)]
    g = torch.Generator().manual_seed(1)
    clips = Clips(["a", "b"], video_latents=torch.randn(2, 8, 3, 4, 4, generator=g),
                  audio_latents=torch.randn(2, 8, 18, generator=g), text_emb=torch.randn(2, 4, 64, generator=g),
                  text_mask=torch.ones(2, 4, dtype=torch.bool), fps=8.0)
    torch.testing.assert_close(source.score(clips)["overall"], model.score(clips)["overall"])
    with pytest.raises(FileNotFoundError):
        build_sources(rewards, {"rm": str(tmp_path / "nothing")})
    with pytest.raises(ConfigError, match="not resolved"):
        build_sources(rewards, {})

class _ColourAndPrompt:
    """A toy source: a prompt-free term (brightness x 3) plus how well the clip's red matches the
    prompt ("red" wants more red, anything else less)."""

    name, heads, uses = "toy", ("fit",), "media"

    def score(self, clips):
        red = clips.video[:, 0].mean((1, 2, 3))
        sign = torch.tensor([1.0 if "red" in p else -1.0 for p in clips.prompts])
        return {"fit": 3 * clips.video.mean((1, 2, 3, 4)) + sign * red}


def test_contrast_cancels_what_a_source_gives_a_clip_whatever_the_prompt():
    video = torch.zeros(2, 3, 1, 2, 2)
    video[0, 0], video[1] = 0.3, 0.2  # clip 0: red; clip 1: brighter and grey
    clips = Clips(["a red kite", "a blue kite"], video=video)
    contrast_set = ["a red tent", "a blue tent", "a green tent", "a teal tent"]
    out = contrastive_scores(_ColourAndPrompt(), clips, contrast_set)["fit"]
    # own prompt's fit minus the mean fit over the set (one "red" of four: mean sign -1/2)
    torch.testing.assert_close(out, torch.tensor([0.3 * 1.5, 0.2 * -0.5]))
    brightness = metric_heads()["brightness"]()
    assert contrastive_scores(brightness, clips, contrast_set)["brightness"].abs().max() < 1e-6
    assert parse_rewards({"rm": {"source": "brightness", "contrast": True}})["rm"].contrast
    assert not parse_rewards({"rm": {"source": "brightness"}})["rm"].contrast  # off by default


def test_hacking_monitor_flips_when_the_optimised_reward_rises_and_a_held_out_head_falls():
    def evals(reward, exposure):
        return {"eval_reward_mean": reward, "eval_reward.exposure.mean": exposure}

    monitor = HackingMonitor(HackingConfig(threshold=0.1), held_out={"exposure": 0.0})
    assert monitor.check(evals(0.5, 0.0)) == (False, "")
    assert not monitor.check(evals(0.7, -0.05))[0]  # held-out fell less than the threshold
    assert not monitor.check(evals(0.4, -0.3))[0]  # both fell: a bad run, not hacking
    alert, message = monitor.check(evals(0.8, -0.2))
    assert alert and "exposure fell 0.2 below its best" in message
    restored = HackingMonitor(HackingConfig(threshold=0.1), held_out={"exposure": 0.0})
    restored.load_state_dict(monitor.state_dict())  # a resumed run keeps what it saw
    assert restored.check(evals(0.8, -0.2))[0]

    # Both rise together at first; then the held-out one turns down while the optimised one
    # keeps rising: hacking, although the held-out head is still above where it started.
    monitor = HackingMonitor(HackingConfig(threshold=0.1), held_out={"exposure": 0.0})
    assert not monitor.check(evals(0.5, 0.0))[0] and not monitor.check(evals(0.6, 0.3))[0]
    assert monitor.check(evals(0.7, 0.15))[0]

    # Each held-out head falls in its own units: 2 dB of level is not a 0.1 fall.
    monitor = HackingMonitor(HackingConfig(threshold=0.1), held_out={"level": 3.0})
    monitor.check({"eval_reward_mean": 0.5, "eval_reward.level.mean": -1.0})
    assert not monitor.check({"eval_reward_mean": 0.9, "eval_reward.level.mean": -3.0})[0]
    assert monitor.check({"eval_reward_mean": 0.9, "eval_reward.level.mean": -4.5})[0]


def test_starting_checkpoint_identity_from_safetensors_or_a_train_run(tmp_path):
    from model.checkpoint import save
    from model.dit import DualDiT
    from model.presets import get_preset

    cfg = get_preset("debug")
    cfg.depth = 1
    path = save(DualDiT(cfg), tmp_path / "ema.safetensors")
    assert checkpoint_config(path) == cfg and checkpoint_config(tmp_path) == cfg  # a registry download folder
    run = tmp_path / "train"
    (run / "checkpoints" / "step00000010").mkdir(parents=True)
    (run / "checkpoints" / "step00000010" / "mp_rank_00_model_states.pt").write_bytes(b"")
    (run / "checkpoints" / "latest").write_text("step00000010")
    (run / "recipe.yaml").write_text("preset: small\n")
    for where in (run, run / "checkpoints", run / "checkpoints" / "step00000010"):
        assert checkpoint_config(where) == get_preset("small")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="not a DeepSpeed checkpoint"):
        checkpoint_config(tmp_path / "empty")


def test_prompt_files_one_per_line_or_the_built_in_set(tmp_path):
    assert len(prompt_texts("", ["a", "b"])) == 2
    file = tmp_path / "prompts.txt"
    file.write_text("# drums\na drummer on stage\n\n  rain on a roof  \n")
    assert prompt_texts(str(file), []) == ["a drummer on stage", "rain on a roof"]
    with pytest.raises(ConfigError, match="does not exist"):
        prompt_texts(str(tmp_path / "missing.txt"), [])
    # the same file format as `tandem generate --prompts`: JSONL too, but text only
    (tmp_path / "dog.png").write_bytes(b"any picture")
    jsonl = tmp_path / "prompts.jsonl"
    jsonl.write_text('{"prompt": "a drummer on stage", "id": "drums"}\n')
    assert prompt_texts(str(jsonl), []) == ["a drummer on stage"]
    jsonl.write_text('{"prompt": "@image1 runs", "id": "dog", "references": {"image1": "dog.png"}}\n')
    with pytest.raises(ConfigError, match=r"text prompts only; prompts \['dog'\]"):
        prompt_texts(str(jsonl), [])


def test_engine_accumulation_is_the_update_s_not_deepspeed_s():
    with pytest.raises(ConfigError, match="grad_accum_steps"):
        load_config(AlignConfig, None, TWO_SOURCES + ["engine.grad_accum_steps=2"])


def test_prompts_encoded_in_chunks_pad_to_one_length_like_a_single_batch():
    from model.text_encoder import TextEncoder
    from reward.grpo.align_inputs import encode_prompts

    encoder = TextEncoder.tiny_random()
    prompts = ["a dog", "rain on a tin roof at night", "[0-1s] a bell, then [1-2s] silence"]
    whole = encoder.encode(prompts, fps=25.0)
    chunked = encode_prompts(encoder, prompts, 25.0, "cpu", chunk=2)
    assert chunked.text_emb.shape == whole.text_emb.shape
    for name in ("text_mask", "text_spans", "text_ref_slots"):
        assert torch.equal(getattr(chunked, name), getattr(whole, name)), name
    torch.testing.assert_close(chunked.text_emb, whole.text_emb)
