"""The reward model behind one interface: the latent backbone (tandem's latents + the prompt's
text embedding) and the omni backbone (a tiny random Qwen2.5-Omni thinker built at test time,
loaded from its local directory through the real code path, with LoRA through peft); a saved
model scores exactly as before saving; padding never changes a score."""

import numpy as np
import pytest
import torch

from reward.scoring.backbones.latent import LatentBackboneConfig
from reward.scoring.backbones.omni import OmniBackboneConfig, save_random_omni
from reward.scoring.reward_model import (
    RewardModel,
    RewardModelConfig,
    load_reward_model,
    load_reward_source,
)
from reward.scoring.sources import Clips

HEADS = ("visual_quality", "av_sync", "overall")


def latent_clips(b=3, seed=0, text_len=5):
    g = torch.Generator().manual_seed(seed)
    return Clips(prompts=[f"clip {i}" for i in range(b)], video_latents=torch.randn(b, 8, 5, 4, 4, generator=g),
                 audio_latents=torch.randn(b, 8, 26, generator=g), text_emb=torch.randn(b, text_len, 64, generator=g),
                 text_mask=torch.ones(b, text_len, dtype=torch.bool), fps=8.0)


def small_latent_model(seed=0):
    torch.manual_seed(seed)
    return RewardModel(RewardModelConfig(heads=HEADS, latent=LatentBackboneConfig(dim=32, depth=2, heads=2)))


def test_latent_model_scores_each_head_and_is_a_reward_source():
    model = small_latent_model()
    clips = latent_clips()
    scores = model.score(clips)
    assert model.uses == "latents" and model.heads == HEADS
    assert list(scores) == list(HEADS) and all(v.shape == (3,) for v in scores.values())
    # Heads read different query tokens: they are different functions of the same clip.
    assert not torch.allclose(scores["visual_quality"], scores["overall"])
    # A clip's score does not depend on the other clips in its batch.
    alone = model.score(Clips(prompts=clips.prompts[:1], video_latents=clips.video_latents[:1],
                              audio_latents=clips.audio_latents[:1], text_emb=clips.text_emb[:1],
                              text_mask=clips.text_mask[:1], fps=8.0))
    torch.testing.assert_close(alone["overall"], scores["overall"][:1], atol=1e-5, rtol=1e-5)


def test_padded_prompt_tokens_do_not_change_scores():
    model = small_latent_model()
    clips = latent_clips()
    padded = latent_clips()
    padded.text_emb = torch.cat([clips.text_emb, torch.randn(3, 4, 64) * 100], 1)
    padded.text_mask = torch.cat([clips.text_mask, torch.zeros(3, 4, dtype=torch.bool)], 1)
    for head, value in model.score(padded).items():
        torch.testing.assert_close(value, model.score(clips)[head], atol=1e-5, rtol=1e-5)


def test_the_latent_backbone_sees_when_sound_and_picture_happen():
    """Shifting the audio latents in time changes the scores: tokens carry time (RoPE in
    seconds on one axis for both modalities), which an A/V-sync head needs."""
    model = small_latent_model()
    clips = latent_clips()
    shifted = latent_clips()
    shifted.audio_latents = torch.roll(clips.audio_latents, 5, dims=2)
    assert not torch.allclose(model.score(shifted)["av_sync"], model.score(clips)["av_sync"])


def test_saved_latent_model_scores_exactly_as_before(tmp_path):
    model = small_latent_model()
    model.log_theta = 0.7
    clips = latent_clips()
    before = model.score(clips)
    model.save(tmp_path / "model", metrics={"heldout/overall/accuracy_without_ties": 0.9})
    loaded = load_reward_source(tmp_path / "model")
    assert loaded.heads == HEADS and loaded.log_theta == pytest.approx(0.7)
    for head, value in loaded.score(clips).items():
        assert torch.equal(value, before[head])
    with pytest.raises(FileNotFoundError, match="not a saved reward model"):
        load_reward_model(tmp_path)


def test_latent_model_refuses_latents_of_another_vae():
    model = small_latent_model()
    clips = latent_clips()
    clips.video_latents = torch.randn(3, 16, 5, 4, 4)
    with pytest.raises(ValueError, match="16 video / 8 audio channels; this model was built for 8 / 8"):
        model.score(clips)


@pytest.fixture(scope="module")
def tiny_omni(tmp_path_factory):
    return save_random_omni(tmp_path_factory.mktemp("omni") / "qwen2.5-omni-tiny")


def media_clips(b=2, seed=0, frames=9, fps=8.0, samples=18000):
    g = torch.Generator().manual_seed(seed)
    return Clips(prompts=[f"a drum, take {i}" for i in range(b)],
                 video=torch.rand(b, 3, frames, 64, 64, generator=g) * 2 - 1,
                 audio=torch.randn(b, 1, samples, generator=g) * 0.3, fps=fps, sample_rate=16000)


def omni_model(path, use_audio=True, seed=0):
    torch.manual_seed(seed)
    return RewardModel(RewardModelConfig(backbone="omni", heads=HEADS, omni=OmniBackboneConfig(
        model_path=str(path), dtype="float32", lora_rank=4, lora_dropout=0.0, use_audio=use_audio)))


@pytest.mark.parametrize("use_audio", [True, False])
def test_omni_backbone_scores_clips_through_the_thinker(tiny_omni, use_audio):
    model = omni_model(tiny_omni, use_audio)
    assert model.uses == "media"
    inputs = model.backbone.prepare(media_clips())
    ids = inputs["input_ids"]
    cfg = model.backbone.config
    # The picture's tokens are the vision encoder's merged patches: 9 frames at 8 fps shown at
    # 2 fps -> 2 frames (one temporal patch) of 56x56 -> a 4x4 patch grid -> 2x2 merged tokens.
    assert inputs["video_grid_thw"].tolist() == [[1, 4, 4]] * 2
    assert ((ids == cfg.video_token_id).sum(1) == 4).all()
    assert ((ids == cfg.audio_token_id).sum(1) > 0).all() == use_audio
    scores = model.score(media_clips())
    assert all(v.shape == (2,) and torch.isfinite(v).all() for v in scores.values())


def test_only_lora_and_reward_tokens_train_and_a_step_changes_the_scores(tiny_omni):
    model = omni_model(tiny_omni)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n in ("head_weight", "backbone.reward_embeds") for n in trainable)
    assert not any("visual" in n or "audio_tower" in n for n in trainable)  # LoRA sits on the language model
    clips = media_clips()
    before = model.score(clips)["overall"]
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model(clips)[:, 2].sum().backward()
    assert model.backbone.reward_embeds.grad.abs().sum() > 0
    opt.step()
    assert not torch.allclose(model.score(clips)["overall"], before)


def test_saved_omni_model_stores_only_adapters_and_scores_exactly_as_before(tiny_omni, tmp_path):
    model = omni_model(tiny_omni)
    with torch.no_grad():  # as after training: LoRA B no longer zero
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    clips = media_clips()
    before = model.score(clips)
    model.save(tmp_path / "model")
    stored = sum(p.numel() for p in model.trainable_state().values())
    assert stored < 0.2 * sum(p.numel() for p in model.parameters())  # the frozen base is not copied
    loaded = load_reward_model(tmp_path / "model")
    for head, value in loaded.score(clips).items():
        assert torch.equal(value, before[head])


def test_omni_backbone_needs_a_local_model_directory(tmp_path):
    with pytest.raises(ValueError, match="not a local model directory"):
        omni_model(tmp_path / "nowhere")


def test_omni_sequence_follows_the_models_own_interleaving(tiny_omni):
    """Picture and sound alternate in 2 s chunks, as the thinker's get_rope_index expects: the
    3D positions it computes for our sequence rise monotonically in time within each modality."""
    model = omni_model(tiny_omni)
    clips = media_clips(b=1, frames=41, fps=8.0, samples=16000 * 5)  # 5 s: three chunks
    inputs = model.backbone.prepare(clips)
    ids = inputs["input_ids"][0].tolist()
    cfg = model.backbone.config
    kinds = "".join("v" if i == cfg.video_token_id else "a" if i == cfg.audio_token_id else "." for i in ids)
    runs = [k for k in kinds.replace(".", "") if k]
    switches = sum(1 for x, y in zip(runs, runs[1:], strict=False) if x != y)
    assert kinds.index("v") < kinds.index("a") and switches == 5  # v a v a v a
    thinker = model.backbone.thinker.get_base_model()
    positions, _ = thinker.get_rope_index(inputs["input_ids"], None, inputs["video_grid_thw"],
                                          inputs["attention_mask"], True,
                                          inputs["feature_attention_mask"].sum(-1), inputs["video_second_per_grid"])
    t = positions[0, 0].numpy()
    for kind in "va":
        idx = np.array([i for i, k in enumerate(kinds) if k == kind])
        assert (np.diff(t[idx]) >= 0).all()
