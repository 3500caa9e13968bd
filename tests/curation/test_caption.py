"""Caption stage: the metadata captioner says only what was measured; the VLM captioner
runs a tiny random-weight Qwen2-VL (built here, offline) through the real generate path."""

from __future__ import annotations

import re

import numpy as np
import pytest

from curation.caption import CaptionConfig, CaptionStage, sample_frames, split_visual_camera
from curation.sample_media import make_clip

TAGS = re.compile(r"^\[visual\] .+ \[camera\] .+ \[audio\] .+ \[speech\] .+$", re.S)


def _measured(**over) -> dict:
    item = {"key": "k", "start_s": 2.0, "end_s": 5.2, "fps": 25, "width": 640, "height": 272,
            "shot": {"index": 1, "n_shots": 5}, "motion": {"score": 0.21, "static": False, "black_ratio": 0.0},
            "audio": {"has_audio": True, "loudness_lufs": -18.4, "silence_ratio": 0.1, "speech_ratio": 0.8, "tempo_bpm": None},
            "transcript": {"text": "This is Diane in New Jersey.", "words": [
                {"word": "This", "speaker": "A"}, {"word": "Jersey.", "speaker": "B"}]}}
    item.update(over)
    return item


def test_metadata_caption_reports_measurements_and_invents_nothing():
    out = CaptionStage().process(_measured())[0]
    cap = out["caption"]
    assert cap["backend"] == "metadata" and out["txt"] == cap["text"] and TAGS.match(cap["text"])
    assert "not described" in cap["parts"]["visual"] and "3.2 s" in cap["parts"]["visual"]
    assert "shot 2 of 5" in cap["parts"]["visual"] and "moving picture" in cap["parts"]["camera"]
    assert cap["parts"]["audio"] == "speech (2 speakers), -18 LUFS."
    assert cap["parts"]["speech"] == '"This is Diane in New Jersey."'


def test_metadata_caption_of_music_without_speech_and_of_a_bare_item():
    music = _measured(audio={"has_audio": True, "loudness_lufs": -9.6, "silence_ratio": 0.0,
                             "speech_ratio": 0.02, "tempo_bpm": 120.2},
                      transcript={"text": "", "words": []}, motion={"score": 0.0, "static": True, "black_ratio": 0.0})
    parts = CaptionStage().process(music)[0]["caption"]["parts"]
    assert parts["audio"] == "a steady beat at 120 BPM, -10 LUFS."
    assert parts["speech"] == "none." and parts["camera"].startswith("static picture")
    bare = CaptionStage().process({"key": "b"})[0]["caption"]
    assert TAGS.match(bare["text"]) and bare["parts"]["speech"] == "not transcribed."


def test_split_visual_camera():
    assert split_visual_camera("[visual] a dog runs on a beach [camera] wide, tracking left") == (
        "a dog runs on a beach", "wide, tracking left")
    assert split_visual_camera("a dog on a beach") == ("a dog on a beach", "")


def test_configuration_errors():
    with pytest.raises(ValueError, match="caption.backend"):
        CaptionStage(CaptionConfig(backend="blip"))
    with pytest.raises(ValueError, match="caption.model_path"):
        CaptionStage(CaptionConfig(backend="vlm", model_path="/nonexistent"))


@pytest.fixture(scope="module")
def two_shot_clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("cap") / "two.mp4", [1.0, 1.0], size=(160, 120))


def test_sample_frames_spread_over_the_clip(two_shot_clip):
    frames = sample_frames(two_shot_clip.path, 4, 64)
    assert len(frames) == 4 and max(frames[0].size) == 64
    pixels = [np.asarray(f, dtype=np.float32) for f in frames]
    # Frames 1-2 come from the first shot, 3-4 from the second (different test patterns).
    assert np.abs(pixels[1] - pixels[2]).mean() > 5 * np.abs(pixels[2] - pixels[3]).mean()


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory):
    """A random-weight Qwen2-VL a few hundred kB large, with a byte-level tokenizer, the
    ChatML template and the (PIL) image processor, saved like a real checkpoint."""
    torch = pytest.importorskip("torch")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2VLConfig, Qwen2VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    path = tmp_path_factory.mktemp("tiny_qwen2_vl")
    byte_vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    backend = Tokenizer(models.BPE(vocab=byte_vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                "<|image_pad|>", "<|video_pad|>"]
    backend.add_special_tokens(specials)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% for c in m['content'] %}"
        "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>{% else %}{{ c['text'] }}"
        "{% endif %}{% endfor %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    ids = {s: tokenizer.convert_tokens_to_ids(s) for s in specials}
    config = Qwen2VLConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2,
                         rope_parameters={"rope_type": "default", "mrope_section": [2, 1, 1], "rope_theta": 10000.0},
                         bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                         pad_token_id=ids["<|endoftext|>"]),
        vision_config=dict(depth=1, embed_dim=32, hidden_size=32, num_heads=2, mlp_ratio=2),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    torch.manual_seed(0)
    Qwen2VLForConditionalGeneration(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=112 * 112).save_pretrained(path)
    return path


@pytest.mark.timeout(120)
def test_vlm_caption_runs_generate_on_sampled_frames(tiny_vlm, two_shot_clip):
    stage = CaptionStage(CaptionConfig(backend="vlm", model_path=str(tiny_vlm), frames=3, max_new_tokens=12, device="cpu"))
    assert stage.resources.actor
    stage.setup()
    item = _measured(files={"mp4": str(two_shot_clip.path)})
    calls = []
    generate = stage.vlm.model.generate
    stage.vlm.model.generate = lambda **kw: calls.append(kw) or generate(**kw)
    cap = stage.process(item)[0]["caption"]
    (kwargs,) = calls
    # Three frames went in, each as its merged patches, with one placeholder token apiece.
    assert kwargs["image_grid_thw"].shape[0] == 3
    n_placeholders = int((kwargs["input_ids"] == stage.vlm.tokenizer.convert_tokens_to_ids("<|image_pad|>")).sum())
    assert n_placeholders == int(kwargs["image_grid_thw"].prod(dim=1).sum()) // 4
    assert cap["backend"] == "vlm:" + tiny_vlm.name and cap["raw"] != ""
    assert cap["parts"]["visual"] == split_visual_camera(cap["raw"])[0]
    # The model hears nothing: audio and speech still come from the measurements.
    assert cap["parts"]["speech"] == '"This is Diane in New Jersey."' and "LUFS" in cap["parts"]["audio"]
    assert cap["text"].startswith("[visual] ") and "[speech]" in cap["text"]


@pytest.mark.timeout(120)
def test_vlm_captions_a_batch_of_clips_in_one_generate_call(tiny_vlm, two_shot_clip):
    stage = CaptionStage(CaptionConfig(backend="vlm", model_path=str(tiny_vlm), frames=2, max_new_tokens=8,
                                       device="cpu", batch_size=8))
    assert stage.resources.batch_size == 8
    stage.setup()
    calls = []
    generate = stage.vlm.model.generate
    stage.vlm.model.generate = lambda **kw: calls.append(kw) or generate(**kw)
    items = [_measured(key=f"k{i}", files={"mp4": str(two_shot_clip.path)}, start_s=0.0, end_s=1.0 + i)
             for i in range(3)]
    out = stage.process_batch(items)
    (kwargs,) = calls  # three clips, one call
    assert kwargs["input_ids"].shape[0] == 3 and kwargs["image_grid_thw"].shape[0] == 6
    assert (kwargs["attention_mask"][:, -1] == 1).all()  # padded on the left: every row ends with its prompt
    assert [o[0]["key"] for o in out] == ["k0", "k1", "k2"]
    assert all(o[0]["caption"]["raw"] is not None and o[0]["txt"].startswith("[visual] ") for o in out)
