"""Text encoder: tiny random T5 offline, prompt structure carried into the Conditioning."""

from __future__ import annotations

import math

import pytest
import torch

from model.dit import DualDiT
from model.presets import get_preset
from model.references import Reference
from model.text_encoder import ByteTokenizer, TextEncoder, TextEncoderConfig


@pytest.fixture(scope="module")
def encoder():
    return TextEncoder.tiny_random(dim=64)


def test_byte_tokenizer_offsets_and_padding():
    ids, mask, offsets = ByteTokenizer()(["ab", "é"], max_length=8)
    assert ids.tolist() == [[100, 101, 1], [198, 172, 1]] and mask.all()
    assert offsets[1] == [(0, 1), (0, 1), (0, 0)]  # both bytes of é map to character 0
    ids, mask, _ = ByteTokenizer()(["abcdef", "a"], max_length=4)
    assert ids.shape == (2, 4) and mask.sum(1).tolist() == [4, 2]


def test_encode_carries_shots_and_tags_into_the_conditioning(encoder):
    prompts = ["rain. [0-2s] a cat like @image1", "[1-3s] drums"]
    refs = [Reference("image", 1, torch.zeros(2, 8, 1, 4, 4))]
    cond = encoder.encode(prompts, references=refs, fps=25.0)
    b, length = cond.text_mask.shape
    assert cond.text_emb.shape == (2, length, 64) and b == 2
    assert (cond.text_emb[~cond.text_mask] == 0).all()
    text = prompts[0]
    cat = text.index("cat")
    assert cond.text_spans[0, 0].tolist() == [-math.inf, math.inf]
    assert cond.text_spans[0, cat].tolist() == [0.0, 2.0]
    tag = text.index("@image1")
    assert cond.text_ref_slots[0, tag:tag + 7].tolist() == [1] * 7
    assert cond.text_spans[1, 0].tolist() == [1.0, 3.0]
    with pytest.raises(ValueError, match="@video2"):
        encoder.encode(["like @video2"])
    model = DualDiT(get_preset("debug"))  # the conditioning plugs straight into the DiT
    v, a = model(torch.randn(2, 8, 5, 4, 4), torch.randn(2, 8, 17), torch.rand(2), torch.rand(2),
                 **cond.kwargs())
    assert v.shape == (2, 8, 5, 4, 4)


def test_different_prompts_give_different_embeddings(encoder):
    cond = encoder.encode(["a red car", "a blue sea"])
    assert not torch.allclose(cond.text_emb[0], cond.text_emb[1])


def test_loads_from_a_local_directory(encoder, tmp_path):
    encoder.model.save_pretrained(tmp_path)
    loaded = TextEncoder.from_config(TextEncoderConfig(str(tmp_path), tokenizer="bytes", dtype="float32"))
    assert type(loaded.model).__name__ == "T5EncoderModel" and loaded.dim == 64
    torch.testing.assert_close(loaded.encode(["hello"]).text_emb, encoder.encode(["hello"]).text_emb)
    with pytest.raises(ValueError, match="name_or_path"):
        TextEncoder.from_config(TextEncoderConfig())
